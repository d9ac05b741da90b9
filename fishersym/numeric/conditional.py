"""Per-input (conditional) statistics and bounds: ``conditional_stats`` (THEORY.md §2–§6).

Pipeline for one batch of inputs: validate (:mod:`.checks`), pick the exact
path (fast factored MLP path of THEORY §7 when the model is supported, else
the generic ``torch.func`` path), compute the per-input base quantities,
the family constants of THEORY §5 (certified always; optimised λ̃ only with
``optimised=True``, it runs SS-HOPM), and assemble the keys of
:mod:`.stats`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import nn

from .. import families as _families
from ..bounds.trace import corollary46, theorem_d1
from ..families.base import ExponentialFamily
from ..families.constants import (MAX_C_EIG, FamilyConstants, check_moment_size, family_constants, has_gram_form,
                                  moment_tensor_bytes)
from .checks import GENERIC_MAX_PARAMS, check_count, check_inputs, check_model, check_output_shape, check_params
from .core import EngineOutput
from .generic import generic_engine
from .guard import check_budget, guarded
from .mlp import mlp_engine, plan_mlp
from .parts import Part
from .precision import check_inputs_count, measured_v1_error
from .proofs import prove_w_zero
from .reverse import _Fn as _ReverseFn
from .reverse import reverse_engine
from .attention import math_attention
from .stats import StatsResult, add_derived, cancellation_ratio, per_input_keys, rel_sd, resolve_groups

__all__ = ["conditional_stats", "BatchAnalysis", "analyse_batch", "resolve_family", "Engine"]


def resolve_family(family: str | ExponentialFamily) -> ExponentialFamily:
    return _families.get(family)


@dataclass
class Engine:
    """The chosen exact path for a model and family."""

    path: str
    plan: object | None
    reason: str
    params: dict[str, torch.Tensor]

    def run(self, model, x, family, *, grams=False, pneg_samples=None, chunk_size=None,
            max_params=GENERIC_MAX_PARAMS, progress: bool | None = None) -> EngineOutput:
        if self.path == "fast":
            eng = mlp_engine(model, x, family, self.plan, self.params, grams=grams, pneg_samples=pneg_samples)
        elif self.path == "reverse":
            check_reverse_w_cost(model, x, family, self.params, max_params)
            eng = reverse_engine(model, x, family, self.params, grams=grams, pneg_samples=pneg_samples,
                                 chunk_inputs=chunk_size, w_mode="exact", progress=bool(progress))
        else:
            eng = generic_engine(model, x, family, self.params, grams=grams, pneg_samples=pneg_samples,
                                 chunk_size=chunk_size, max_params=max_params)
        eng.info["path_reason"] = self.reason
        return eng


def check_reverse_w_cost(model: nn.Module, x: torch.Tensor, family: ExponentialFamily,
                         params: dict[str, torch.Tensor], max_params: int) -> None:
    """The reverse path computes w exactly (nested forward mode, about three forward passes per
    entry) for the tensors where V₂ ≡ 0 is not proved (:mod:`.proofs`); refuse before any work when
    those tensors hold more than ``max_params`` entries, with the count and the options."""
    fn = _ReverseFn(model, family)
    values = {k: fn.fixed[k] for k in params}
    with math_attention():
        proofs = prove_w_zero(lambda: fn.batch(values, x[:1]), values)
    todo = {k: values[k].numel() for k, p in proofs.items() if not p.proved}
    n = sum(todo.values())
    if n > max_params:
        worst = sorted(todo, key=todo.get, reverse=True)[:3]
        why = "; ".join(f"{k} ({todo[k]} entries): {proofs[k].reason}" for k in worst)
        raise ValueError(
            f"V₂ needs w = ∂²h/∂θ_i² exactly for {n} parameter entries where V₂ ≡ 0 could not be proved "
            f"(largest: {why}); at about three forward passes per entry and input that is more than "
            f"max_params={max_params}. Options: raise max_params= if you accept the cost; analyse fewer "
            "parameters (requires_grad_(False) on the others); or compute I and V₁ only for the smooth "
            "layers' parameters by excluding them.")


def select_engine(model: nn.Module, family: ExponentialFamily, path: str = "auto",
                  max_params: int = GENERIC_MAX_PARAMS) -> Engine:
    """Validate the model and choose the exact path; ``path`` forces one.

    "fast" (THEORY §7: ``nn.Sequential`` MLPs), "generic" (nested forward mode per parameter entry,
    at most ``max_params`` entries) or "reverse" (:mod:`.reverse`: u from C backward passes per input
    whatever P; w ≡ 0 proved per tensor from the executed ops, exact w elsewhere).  "auto" takes the
    fast path when it applies, else the generic path up to ``max_params`` parameters, else the
    reverse path."""
    if path not in ("auto", "fast", "generic", "reverse"):
        raise ValueError(f"path must be 'auto', 'fast', 'generic' or 'reverse', got {path!r}")
    check_model(model)
    params = check_params(model)
    if path == "generic":
        return Engine("generic", None, "forced by path='generic'", params)
    if path == "reverse":
        return Engine("reverse", None, "forced by path='reverse'", params)
    plan, reason = plan_mlp(model, family)
    if plan is None:
        if path == "fast":
            raise ValueError(f"the fast path cannot handle this model: {reason}")
        total = sum(p.numel() for p in params.values())
        if total > max_params:
            return Engine("reverse", None, f"fast path unsupported: {reason}; {total} parameters exceed the "
                          f"generic path's limit of {max_params}, so u comes from reverse mode (C backward "
                          "passes per input) and V₂ ≡ 0 is proved per tensor where it holds", params)
        return Engine("generic", None, f"fast path unsupported: {reason}", params)
    return Engine("fast", plan, "nn.Sequential MLP with an elementwise link", params)


@dataclass
class BatchAnalysis:
    eng: EngineOutput
    keys: dict[str, dict[str, Part]]
    consts: FamilyConstants
    sharp: FamilyConstants | None


def probe_outputs(model: nn.Module, x: torch.Tensor) -> None:
    """One forward pass to check the output shape (batch, C) before an engine unpacks it
    (:func:`.checks.check_output_shape`).  A model that raises on these inputs is reported as a
    ValueError naming the inputs' shape and the (batch, features...) convention (the model's own
    exception is chained as the cause)."""
    with torch.no_grad():
        try:
            out = model(x)
        except Exception as exc:  # the user's model raised on these inputs
            if x.dim() == 1:
                raise ValueError(
                    f"the model fails on inputs of shape {tuple(x.shape)} ({type(exc).__name__}: {exc}). "
                    "fishersym reads the first dimension as the batch: inputs are (batch, features), so one "
                    f"input of {x.shape[0]} features is x.reshape(1, -1) and {x.shape[0]} scalar inputs are "
                    "x.reshape(-1, 1).") from exc
            raise ValueError(
                f"the model raised {type(exc).__name__} on inputs of shape {tuple(x.shape)} and dtype {x.dtype}: "
                f"{exc}. The inputs must be (batch, ...) as the model expects them (the cause is chained "
                "below).") from exc
    check_output_shape(out, x)


def check_fast_inputs(engine: Engine, x: torch.Tensor) -> None:
    """Inputs (batch, features) for the fast path: floating point with the first Linear's in_features."""
    lin = engine.plan.linears[0][1]
    if not x.is_floating_point():
        raise TypeError(f"the inputs are {x.dtype}, but the model starts with a Linear layer: pass floating-point "
                        "inputs (x.to(torch.float64) or the parameters' dtype)")
    if x.shape[1] != lin.in_features:
        raise ValueError(f"the inputs have shape {tuple(x.shape)}, i.e. {x.shape[1]} features per input, but the "
                         f"first Linear layer takes {lin.in_features}: pass inputs of shape "
                         f"(batch, {lin.in_features})")


def gram_bytes(engine: Engine, B: int, C: int, dtype: torch.dtype, chunk_size: int | None = None) -> int:
    """Estimated bytes of Theorem D.1's Gram matrices for one batch: one (B, C², C²) matrix per
    parameter tensor plus two more for the group sums and the bounds, and the (B, K, C²) products
    of the outer products u uᵀ (K rows of a layer, or a chunk of entries on the generic path)."""
    item = torch.finfo(dtype).bits // 8
    if engine.path == "fast":
        K = max(lin.weight.shape[0] for _, lin in engine.plan.linears)
    else:
        K = max(min(p.numel(), chunk_size or 1024) for p in engine.params.values())
    return item * B * (C ** 4 * (len(engine.params) + 2) + 2 * K * C ** 2)


def check_group_bounds(group_bounds) -> tuple[bool, bool]:
    """``group_bounds``: False, True (Theorem D.1 and Corollary 4.6) or "corollary46" (Corollary 4.6 only,
    no Gram matrices); returns (group bounds wanted, Gram matrices needed)."""
    if group_bounds is True or group_bounds is False:
        return group_bounds, group_bounds
    if isinstance(group_bounds, str) and group_bounds == "corollary46":
        return True, False
    raise ValueError(f"group_bounds must be False, True (Theorem D.1 and Corollary 4.6) or 'corollary46' "
                     f"(Corollary 4.6 only, no (B, C², C²) matrices), got {group_bounds!r}")


def analyse_batch(engine: Engine, model: nn.Module, x: torch.Tensor, family: ExponentialFamily, n_samples: int,
                  *, optimised: bool = False, use_eig: bool | None = None, grams: bool = False,
                  pneg: bool = False, chunk_size: int | None = None,
                  max_params: int = GENERIC_MAX_PARAMS, sharpened: bool = True,
                  memory_budget: int | str | None = None) -> BatchAnalysis:
    """Base quantities, family constants and per-input keys for one batch (THEORY §3, §5).

    Before the engine runs: the inputs are validated (:func:`.checks.check_inputs`), the output shape
    is probed on the generic path (and for inputs that are not (batch, features)), and the Gram
    matrices of ``grams=True`` are sized against the memory budget (:func:`.guard.check_budget`)."""
    dtype = next(iter(engine.params.values())).dtype
    x = check_inputs(x, dtype)
    if engine.path != "fast" or x.dim() != 2:
        probe_outputs(model, x)
    if engine.path == "fast" and x.dim() == 2:
        check_fast_inputs(engine, x)
    if grams:
        B, C = x.shape[0], family.C
        check_budget(gram_bytes(engine, B, C, dtype, chunk_size),
                     f"group_bounds=True (Theorem D.1: (B, C², C²) Gram matrices, one per parameter tensor; "
                     f"B={B} inputs, C={C}, {len(engine.params)} parameter tensors)",
                     ["group_bounds=False (the per-parameter bounds do not need them)",
                      "group_bounds='corollary46' (Corollary 4.6 only: group bounds from norms, no C⁴ matrices)",
                      "fewer inputs per batch (batch_size= in dataset_stats, or split the inputs)"],
                     memory_budget)
    eng = engine.run(model, x, family, grams=grams, pneg_samples=n_samples if pneg else None,
                     chunk_size=chunk_size, max_params=max_params)
    h = eng.h.detach()
    gram_form = has_gram_form(family)
    eig = use_eig if use_eig is not None else (gram_form or family.C <= MAX_C_EIG)
    moments = None
    if eig and not gram_form:  # the C⁴ moment tensors, shared by both calls (the costly part)
        check_moment_size(family, h.shape[0])
        check_budget(moment_tensor_bytes(family, h.shape[0]),
                     f"use_eig=True (C⁴ moment tensors for the Sym² certificates; B={h.shape[0]} inputs, "
                     f"C={family.C})",
                     ["use_eig=False (closed-form certificates, no C⁴ tensors)",
                      "fewer inputs per batch (batch_size= in dataset_stats, or split the inputs)"], memory_budget)
        moments = family.moment_tensors(h)
    consts = family_constants(family, h, restricted=False, optimise=optimised, use_eig=use_eig, moments=moments)
    sharp = (family_constants(family, h, restricted=True, optimise=optimised, use_eig=use_eig, moments=moments)
             if family.shift_invariant and sharpened else None)
    return BatchAnalysis(eng, per_input_keys(eng, consts, sharp, n_samples), consts, sharp)


def _check_n(n_samples: int) -> int:
    """n_samples: a positive integer (numpy integers accepted, bools refused), at most 2⁵³."""
    return check_count(n_samples, "n_samples")


def check_sizes(chunk_size, max_params) -> tuple[int | None, int]:
    """chunk_size (None or a positive integer) and max_params (a positive integer), as Python ints."""
    return (None if chunk_size is None else check_count(chunk_size, "chunk_size"),
            check_count(max_params, "max_params"))


def group_trace_bounds(ba: BatchAnalysis, family: ExponentialFamily, members: list[str], n_samples: int,
                       optimised: bool) -> dict[str, torch.Tensor]:
    """Theorem D.1 and Corollary 4.6 for one group, per input (B,) (THEORY §5)."""
    eng, h = ba.eng, ba.eng.h
    frob = sum(eng.parts[n]["u2"].entry_sum() for n in members)
    w2 = sum(eng.parts[n]["w2"].entry_sum() for n in members)
    P = sum(int(eng.parts[n]["u2"].materialize()[0].numel()) if eng.parts[n]["u2"].a is None
            else eng.parts[n]["u2"].f.shape[1] * eng.parts[n]["u2"].a.shape[1] for n in members)
    out = corollary46(frob, w2, P, ba.consts, n_samples, opt=optimised)
    if eng.grams is not None:
        JJ = sum(eng.grams[n]["JJ"] for n in members)
        UU = sum(eng.grams[n]["UU"] for n in members)
        WW = sum(eng.grams[n]["WW"] for n in members)
        mbar = family.mbar(h) if family.C <= MAX_C_EIG else None
        out.update(theorem_d1(JJ, UU, WW, family.sigma(h), mbar, n_samples, n_terms=P))
    return out


@guarded
def conditional_stats(model: nn.Module, inputs: torch.Tensor, family: str | ExponentialFamily,
                      n_samples: int = 1, *, path: str = "auto", optimised: bool = False,
                      use_eig: bool | None = None, groups: Mapping[str, Iterable[str] | str] | None = None,
                      group_bounds: bool | str = False, prob_negative: bool = True,
                      chunk_size: int | None = None, max_params: int = GENERIC_MAX_PARAMS,
                      sharpened: bool = True, memory_budget: int | str | None = None,
                      precision_check: int | None = None) -> StatsResult:
    """Exact I(θ_i|x), V₁, V₂ and the bounds of THEORY §5 for every parameter and input.

    Returns a :class:`StatsResult` whose mappings (``fisher``, ``var1``, ``var2``,
    the certified bounds ``*_lower``/``*_upper``, ``*_sharp`` for the softmax,
    ``*_opt`` with ``optimised=True``, ``rel_sd1``/``rel_sd2``, ``prob_neg2``
    (exact, discrete families), ``prob_neg2_upper``) hold tensors of shape
    (batch, *param.shape).  ``result.path`` says which exact path ran and
    ``result.info["path_reason"]`` why.  ``use_eig=False`` certifies the
    constants by closed forms only (Theorem 5.2 for the softmax: faster, looser;
    default: the tightest available, which adds a batched C(C+1)/2-dimensional
    eigendecomposition per input; see :func:`dataset_stats` for the measured trade-off).  ``group_bounds=True`` adds Theorem D.1
    and Corollary 4.6 per group (``result.groups``; ``"corollary46"``: Corollary 4.6 only, without
    the (B, C², C²) matrices of Theorem D.1, whose size is checked against ``memory_budget``, default
    2 GiB or ``$FISHERSYM_MEMORY_BUDGET``).  Use float64 to verify:
    ``result.precision_lost`` flags V₁'s cancellation (THEORY §3).

    ``inputs``: a tensor (batch, features...) (detached; float32 or float64).  The model, its
    parameters, modes and hooks, torch's global flags and RNG are left unchanged
    (:func:`.guard.preserve_user_state`).
    """
    family = resolve_family(family)
    n_samples = _check_n(n_samples)
    chunk_size, max_params = check_sizes(chunk_size, max_params)
    group_bounds, grams = check_group_bounds(group_bounds)
    n_check = check_inputs_count(precision_check, 64)
    engine = select_engine(model, family, path, max_params)
    ba = analyse_batch(engine, model, inputs, family, n_samples, optimised=optimised, use_eig=use_eig,
                       grams=grams, pneg=prob_negative, chunk_size=chunk_size, max_params=max_params,
                       sharpened=sharpened, memory_budget=memory_budget)
    values: dict[str, dict[str, torch.Tensor]] = {}
    for name, d in ba.keys.items():
        for k, part in d.items():
            values.setdefault(k, {})[name] = part.materialize()
    add_derived(values)
    if ba.eng.pneg is not None:
        values["prob_neg2"] = {n: p.materialize() for n, p in ba.eng.pneg.items()}
    members = resolve_groups(model, values["fisher"], groups)
    gsum = {}
    for g, names in members.items():
        d = {"n_params": torch.tensor(sum(values["fisher"][n][0].numel() for n in names))}
        for k, per in values.items():
            if k.startswith(("rel_sd", "prob_neg")):
                continue
            d[k] = sum(per[n].reshape(per[n].shape[0], -1).sum(1) for n in names)
        d["rel_sd1"], d["rel_sd2"] = rel_sd(d["var1"], d["fisher"]), rel_sd(d["var2"], d["fisher"])
        if group_bounds:
            d.update(group_trace_bounds(ba, family, names, n_samples, optimised))
        gsum[g] = d
    dtype = ba.eng.h.dtype
    from .core import mquad_cancels
    canc = cancellation_ratio(ba.eng) if mquad_cancels(family) else 1.0
    measured = measured_v1_error(engine, model, check_inputs(inputs, dtype), family, ba.eng, n_check,
                                 max_params=max_params)
    return StatsResult(values, kind="conditional", path=ba.eng.path, n_samples=n_samples, dtype=dtype,
                       cancellation=canc, groups=gsum, group_members=members, v1_rel_error_measured=measured,
                       info={"path_reason": ba.eng.info.get("path_reason", ""), "h": ba.eng.h,
                             **{k: ba.eng.info[k] for k in ("var2_zero_reason", "proofs") if k in ba.eng.info},
                             "constants": ba.consts, "constants_sharp": ba.sharp})
