"""Per-input (conditional) statistics and bounds: ``conditional_stats`` (THEORY §2–§6).

Pipeline for one batch of inputs: validate (:mod:`.checks`), pick the exact
path (fast factored MLP path of THEORY §7 when the model is supported, else
the generic ``torch.func`` path, or the reverse-mode path of :mod:`.reverse` for large
models), compute the per-input base quantities,
the family constants of THEORY §5 (certified always; optimised λ̃ only with
``optimised=True``, it runs SS-HOPM), and assemble the keys of
:mod:`.stats`.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from .. import families as _families
from ..bounds.trace import corollary46, theorem_d1
from ..families.base import ExponentialFamily
from ..families.constants import (MAX_C_EIG, FamilyConstants, certificate_policy, check_moment_size, family_constants,
                                  has_gram_form, moment_tensor_bytes)
from .checks import GENERIC_MAX_PARAMS, check_count, check_deterministic, check_inputs, check_output_shape, check_params
from .core import BASE_KEYS, EngineOutput
from .generic import generic_engine
from .guard import check_budget, guarded
from .layers.engine import LayerPlan, layer_engine, plan_layers
from .parts import Part
from .precision import check_inputs_count, measured_v1_error
from .proofs import prove_w_zero
from .reverse import _Fn as _ReverseFn
from .reverse import reverse_engine
from .attention import math_attention
from .stats import (DEFAULT_LEVEL, StatsResult, add_derived, apply_sampling, base_keys_for, cancellation_ratio,
                    check_keys, conditional_group_sums, per_input_keys, resolve_groups)
from .cost import V2_MODES, sample_size
from .._checks import as_count

if TYPE_CHECKING:
    from .mlp import MLPPlan

__all__ = ["conditional_stats", "AnalysisOptions", "BatchAnalysis", "analyse_batch", "resolve_family", "Engine",
           "check_v2"]


def check_v2(v2: str, v2_sample: int | float | None, seed: int | None) -> tuple[str, int | float | None, int]:
    """The public sampled-V₂ options (issue 9 item 2c), validated: (v2, v2_sample, seed).

    ``v2`` says how the reverse path obtains w = ∂²h/∂θ_i² for the tensors where V₂ ≡ 0 is not proved:
    "exact" (every entry), "sample" (``v2_sample`` entries per tensor, an int >= 2, or a fraction in
    (0, 1]; drawn by a private generator seeded ``seed``, default 0) or "prove" (refuse unless proved)."""
    if v2 not in V2_MODES:
        raise ValueError(f"v2 must be one of {V2_MODES}, got {v2!r}")
    if v2 != "sample":
        if v2_sample is not None or seed is not None:
            raise ValueError(f"v2_sample= and seed= choose the sampled entries of v2='sample' (got v2={v2!r}); "
                             "pass v2='sample' or drop them")
        return v2, None, 0
    if v2_sample is None:
        raise ValueError("v2='sample' needs v2_sample=: the entries per parameter tensor whose w is computed "
                         "exactly (an int >= 2) or a fraction of each tensor's entries in (0, 1]")
    if isinstance(v2_sample, bool) or not isinstance(v2_sample, (int, float)):
        raise TypeError(f"v2_sample must be an int (entries per tensor, >= 2) or a float fraction in (0, 1], "
                        f"got {v2_sample!r}")
    if isinstance(v2_sample, int) and v2_sample < 2:
        raise ValueError(f"v2_sample={v2_sample}: at least 2 entries per tensor are needed for a standard error")
    if isinstance(v2_sample, float) and not 0.0 < v2_sample <= 1.0:
        raise ValueError(f"v2_sample={v2_sample}: a fraction must lie in (0, 1] (or pass an int count)")
    seed = 0 if seed is None else as_count(seed, "seed", minimum=0)
    return v2, v2_sample, seed


#: modules whose models "auto" sends to the reverse path rather than the generic one (fused kernels,
#: and models large enough that u by reverse mode and the per-tensor proofs pay off)
ATTENTION_TYPES = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.Transformer)


def check_keys_available(want: frozenset[str], family: ExponentialFamily, *, optimised: bool, prob_negative: bool,
                         sharpened: bool) -> None:
    """Every key of ``keys=`` must be one these options produce: a ValueError names the option a key needs
    (the result never drops a requested key silently)."""
    need = []
    for k in sorted(want):
        if k.endswith("_opt") and not optimised:
            need.append(f"{k!r} needs optimised=True")
        if "_sharp" in k and not family.shift_invariant:
            need.append(f"{k!r} exists for shift-invariant families only (the softmax), not {family.name!r}")
        elif "_sharp" in k and not sharpened:
            need.append(f"{k!r} needs sharpened=True")
        if k == "prob_neg2" and not prob_negative:
            need.append(f"{k!r} needs prob_negative=True")
        if k == "prob_neg2" and not family.discrete:
            need.append(f"{k!r} (the exact P(Î₂ < 0)) exists for discrete families only, not {family.name!r}; "
                        "'prob_neg2_upper' (Cantelli's bound) exists for every family")
    if need:
        raise ValueError("keys=: " + "; ".join(need))


def reverse_precision_inputs(B: int) -> int:
    """Default number of inputs re-analysed in float64 on the reverse path and on the per-layer
    (non-MLP) fast path (:mod:`.precision`): ⌈B/16⌉, at most 64.  A float64 input costs about twice
    a float32 one there (CNNs, ResNets, transformers), so the measurement adds about 1/8 of the
    analysis on large batches; MLPs and the generic path's small models keep 64."""
    return min(64, max(1, -(-B // 16)))


def resolve_family(family: str | ExponentialFamily, family_params: dict | None = None, *,
                   model: nn.Module | None = None, data=None) -> ExponentialFamily:
    """The family of an analysis of ``model`` on ``data`` (:func:`.families.resolve`, issue 11 item 6):
    a family given by name whose size C is a free parameter (categorical, gaussian, poisson) takes
    C = the model's number of outputs, read from one forward pass on the first input of ``data``
    (any form of :func:`.dataset.iter_data`; a one-shot iterator is refused, since peeking would
    consume it).  Explicit ``family_params`` win, and a size that differs from the model's is refused
    naming both sizes and the fix.  A family object is returned unchanged (the engines check its size)."""
    out_dim = None
    explicit_size = isinstance(family_params, dict) and "C" in family_params
    if isinstance(family, str) and model is not None and data is not None and _families.takes_size(family):
        from .dataset import peek_input
        check_deterministic(model)      # the engines' refusal of batch-coupled / random layers, before any forward pass
        x1 = peek_input(data)
        if x1 is None and explicit_size:    # a one-shot iterator: the engines check the size on the way
            return _families.resolve(family, family_params)
        if x1 is None:
            raise ValueError(f"the family {family!r} by name takes its size C from the model's outputs, read on the "
                             "first input, but the data is a one-shot iterator that peeking would consume: pass "
                             f"the family with its size, families.get({family!r}, C=...), or re-iterable data "
                             "(a tensor, a list of batches or a DataLoader)")
        out_dim = output_size(model, x1)
    return _families.resolve(family, family_params, out_dim=out_dim)


def output_size(model: nn.Module, x: torch.Tensor) -> int:
    """C, the number of outputs of ``model`` per input: one forward pass on ``x`` (batch, ...), checked by
    :func:`probe_outputs` (shape (batch, C), the input convention named in the errors)."""
    p = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
    if p is not None and isinstance(x, torch.Tensor):     # the engines' device and dtype for the inputs
        x = x.to(device=p.device, dtype=p.dtype if x.is_floating_point() and p.is_floating_point() else x.dtype)
    return int(probe_outputs(model, x).shape[1])


@dataclass(frozen=True)
class AnalysisOptions:
    """The options of one exact analysis, passed as one object from :func:`conditional_stats` and
    :func:`~fishersym.numeric.dataset_stats` through :func:`analyse_batch` to :meth:`Engine.run`
    (validated by the public functions; the meaning of each is theirs).

    * ``optimised``: also the optimised λ̃ of the ``*_opt`` bounds (SS-HOPM, THEORY §5);
    * ``use_eig``: the Sym² eigenvalue certificates (None: :func:`.families.constants.default_use_eig`);
    * ``grams``: Theorem D.1's (B, C², C²) Gram matrices (``group_bounds=True``);
    * ``prob_negative``: the exact P(Î₂ < 0) of discrete families (``prob_neg2``);
    * ``chunk_size``, ``max_params``: the generic and reverse paths' chunking and size limit;
    * ``sharpened``: the 𝟙^⊥ ``*_sharp`` bounds of shift-invariant families;
    * ``memory_budget``: bytes (or "2GiB") that the Gram and moment tensors may take (:mod:`.guard`);
    * ``keys``: the result keys wanted (:func:`.stats.check_keys`; None: all);
    * ``progress``: a progress bar on the reverse path (None: when stderr is a terminal).

    >>> replace(AnalysisOptions(), optimised=True).optimised
    True
    """

    optimised: bool = False
    use_eig: bool | None = None
    grams: bool = False
    prob_negative: bool = False
    chunk_size: int | None = None
    max_params: int = GENERIC_MAX_PARAMS
    sharpened: bool = True
    memory_budget: int | str | None = None
    keys: frozenset[str] | None = None
    progress: bool | None = None

    def updated(self, **changes) -> AnalysisOptions:
        """A copy with ``changes`` (field names; an unknown one is a TypeError naming it)."""
        return replace(self, **changes) if changes else self


def _options(options: AnalysisOptions | None, changes: dict) -> AnalysisOptions:
    if options is None:
        return AnalysisOptions(**changes)
    if not isinstance(options, AnalysisOptions):
        raise TypeError(f"options must be an AnalysisOptions, got {type(options).__name__}")
    return options.updated(**changes)


#: the base quantities (:data:`.core.BASE_KEYS`) that read w (THEORY §3, §5)
W_BASE_KEYS = frozenset({"nv2", "w2", "w2s"})


@dataclass
class Engine:
    """The chosen exact path for a model and family."""

    path: str
    #: the fast path's plan (:func:`.layers.engine.plan_layers`); None on the generic and reverse paths
    plan: LayerPlan | None
    reason: str
    params: dict[str, torch.Tensor]
    #: how the reverse path obtains w (:func:`check_v2`); the fast and generic paths compute every w
    v2: str = "exact"
    v2_sample: int | float | None = None
    seed: int = 0

    @property
    def mlp_plan(self) -> MLPPlan | None:
        """The MLP plan (THEORY §7's factored recursion: inputs (batch, features), a Linear first) when
        the fast path runs a Linear/elementwise MLP, else None (a graph of per-layer rules)."""
        if self.path != "fast":
            return None
        assert self.plan is not None            # select_engine gives the fast path its plan
        return self.plan.mlp

    def run(self, model, x, family, options: AnalysisOptions | None = None, *, pneg_samples: int | None = None,
            base_keys=None, **changes) -> EngineOutput:
        """The base quantities of :mod:`.core` for inputs ``x`` on this path, with ``options``
        (:class:`AnalysisOptions`; keyword ``changes`` update them: ``grams``, ``chunk_size``,
        ``max_params``, ``progress``).  ``pneg_samples``: N for the exact P(Î₂ < 0) (None: not
        computed); ``base_keys``: the base quantities needed (None: all)."""
        opts = _options(options, changes)
        grams, chunk_size, max_params, progress = opts.grams, opts.chunk_size, opts.max_params, opts.progress
        if self.path == "fast":
            assert self.plan is not None        # select_engine gives the fast path its plan
            eng = layer_engine(model, x, family, self.plan, self.params, grams=grams, pneg_samples=pneg_samples,
                               base_keys=base_keys)
        elif self.path == "reverse":
            # w only where a requested key reads it (keys=): else the reverse path computes u alone
            w_needed = (base_keys is None or bool(set(base_keys) & W_BASE_KEYS) or pneg_samples is not None
                        or grams)
            w_mode = self.v2 if w_needed else "skip"
            if w_mode not in ("prove", "skip"):
                check_reverse_w_cost(model, x, family, self.params, max_params, v2=self.v2, v2_sample=self.v2_sample)
            # a fresh generator per call: every batch of dataset_stats samples the same entries
            gen = torch.Generator().manual_seed(self.seed) if w_mode == "sample" else None
            eng = reverse_engine(model, x, family, self.params, grams=grams, pneg_samples=pneg_samples,
                                 chunk_inputs=chunk_size, w_mode=w_mode, w_sample=self.v2_sample, generator=gen,
                                 progress=progress, base_keys=base_keys)
        else:
            total = sum(p.numel() for p in self.params.values())
            if GENERIC_MAX_PARAMS < total <= max_params:   # the full generic computation on request (item 2d)
                announce_cost(model, x, family, "generic", "exact", None, max_params)
            with math_attention():   # fused attention kernels have no forward-mode rule (attention.py)
                eng = generic_engine(model, x, family, self.params, grams=grams, pneg_samples=pneg_samples,
                                     chunk_size=chunk_size, max_params=max_params)
        eng.info["path_reason"] = self.reason
        return eng


def announce_cost(model, x, family, path: str, v2: str, v2_sample, max_params: int) -> None:
    """Print :func:`.cost.cost_estimate`'s table to stderr before a long exact computation starts
    (issue 9 item 2d: the full generic w computation on a large tensor set, allowed by raising
    max_params above the default)."""
    from .cost import cost_estimate
    try:
        est = cost_estimate(model, x, family, path=path, v2=v2, v2_sample=v2_sample, max_params=max_params)
    except Exception as err:  # noqa: BLE001 - the estimate is advisory; say why it is missing
        print(f"fishersym: cost estimate unavailable ({type(err).__name__}: {err}); starting the exact "
              "computation", file=sys.stderr)
        return
    print(f"fishersym: starting a long exact computation (max_params={max_params} raised above the default "
          f"{GENERIC_MAX_PARAMS}).\n{est}", file=sys.stderr)


def check_reverse_w_cost(model: nn.Module, x: torch.Tensor, family: ExponentialFamily,
                         params: dict[str, torch.Tensor], max_params: int, *, v2: str = "exact",
                         v2_sample: int | float | None = None) -> None:
    """The reverse path computes w exactly (nested forward mode, about three forward passes per
    entry) for the tensors where V₂ ≡ 0 is not proved (:mod:`.proofs`): every entry with
    ``v2="exact"``, a sample of :func:`.cost.sample_size` entries per tensor with ``v2="sample"``.
    Refuse before the computation when those entries exceed ``max_params``, with the count, the
    estimated cost (:func:`.cost.cost_estimate`, a short timed calibration) and the options; when
    they exceed the default limit but not a raised ``max_params``, print the estimate to stderr."""
    fn = _ReverseFn(model, family)
    values = {k: fn.fixed[k] for k in params}
    with math_attention():
        proofs = prove_w_zero(lambda: fn.batch(values, x[:1]), values)
    todo = {k: values[k].numel() for k, p in proofs.items() if not p.proved}
    if v2 == "exact":
        need = todo
    else:
        assert v2_sample is not None            # check_v2: v2="sample" has its size (run() passes no other mode)
        need = {k: sample_size(n, v2_sample) for k, n in todo.items()}
    n = sum(need.values())
    if n > max_params:
        from .cost import cost_estimate
        worst = sorted(todo, key=todo.__getitem__, reverse=True)[:3]
        why = "; ".join(f"{k} ({todo[k]} entries): {proofs[k].reason}" for k in worst)
        try:
            est = cost_estimate(model, x, family, path="reverse", v2=v2, v2_sample=v2_sample,
                                max_params=max(max_params, n))
            cost = f"Estimated cost: {est.summary()}."
        except Exception as err:  # noqa: BLE001 - the refusal must not hide behind a failed estimate
            cost = f"(cost estimate unavailable: {type(err).__name__}: {err})."
        what = "exactly" if v2 == "exact" else f"on a sample (v2_sample={v2_sample})"
        raise ValueError(
            f"V₂ needs w = ∂²h/∂θ_i² {what} for {n} parameter entries where V₂ ≡ 0 could not be proved "
            f"(largest: {why}); at about three forward passes per entry and input that is more than "
            f"max_params={max_params}. {cost} Options: v2='sample' with v2_sample= (exact w on a random "
            "sample of entries per tensor, e.g. v2_sample=0.01; group totals of V₂ then come with standard "
            "errors and confidence intervals); chunk_size= (fewer inputs per chunk: bounds the memory, not the "
            "time); float32 (model.float(), inputs.float(): about half the time and memory, precision "
            "measured); a GPU (model.cuda(), inputs.cuda()); raise max_params= if you accept the cost (the "
            "estimate is printed before it starts); or analyse fewer parameters (requires_grad_(False) on "
            "the others).")
    if n > GENERIC_MAX_PARAMS:
        announce_cost(model, x, family, "reverse", v2, v2_sample, max_params)


def select_engine(model: nn.Module, family: ExponentialFamily, path: str = "auto",
                  max_params: int = GENERIC_MAX_PARAMS, *, v2: str = "exact", v2_sample: int | float | None = None,
                  seed: int = 0) -> Engine:
    """Validate the model and choose the exact path; ``path`` forces one.

    "fast" (THEORY §7: ``nn.Sequential`` MLPs), "generic" (nested forward mode per parameter entry,
    at most ``max_params`` entries) or "reverse" (:mod:`.reverse`: u from C backward passes per input
    whatever P; w ≡ 0 proved per tensor from the executed ops, w elsewhere as ``v2`` says).  "auto"
    takes the fast path when it applies (per-layer rules, :mod:`.layers`), else the generic path up to
    ``max_params`` parameters unless the model has attention modules, else the reverse path.  ``v2``
    other than "exact" (:func:`check_v2`) applies to the reverse path: with "auto" it replaces the
    generic path (which computes every w), the fast path stays (its w is exact for every entry at no
    extra cost); with path="fast" or "generic" it is refused."""
    if path not in ("auto", "fast", "generic", "reverse"):
        raise ValueError(f"path must be 'auto', 'fast', 'generic' or 'reverse', got {path!r}")
    check_deterministic(model)
    params = check_params(model)
    if v2 != "exact" and path in ("fast", "generic"):
        raise ValueError(f"v2={v2!r} applies to the reverse path (path='reverse' or 'auto'); the {path} path "
                         "computes w exactly for every entry. Pass v2='exact' or path='reverse'.")
    if path == "generic":
        return Engine("generic", None, "forced by path='generic'", params)
    if path == "reverse":
        return Engine("reverse", None, "forced by path='reverse'", params, v2=v2, v2_sample=v2_sample, seed=seed)
    plan, reason = plan_layers(model, family)
    if plan is None:
        if path == "fast":
            raise ValueError(f"the fast path cannot handle this model: {reason}")
        total = sum(p.numel() for p in params.values())
        if v2 != "exact":
            return Engine("reverse", None, f"fast path unsupported: {reason}; v2={v2!r} selects the reverse path "
                          "(u from C backward passes per input, V₂ ≡ 0 proved per tensor where it holds)",
                          params, v2=v2, v2_sample=v2_sample, seed=seed)
        if total > max_params:
            return Engine("reverse", None, f"fast path unsupported: {reason}; {total} parameters exceed the "
                          f"generic path's limit of {max_params}, so u comes from reverse mode (C backward "
                          "passes per input) and V₂ ≡ 0 is proved per tensor where it holds", params)
        attn = [n for n, m in model.named_modules() if isinstance(m, ATTENTION_TYPES)]
        if attn:
            return Engine("reverse", None, f"fast path unsupported: {reason}; attention ({attn[0]!r}) goes to the "
                          "reverse path (math SDPA kernel; u from C backward passes per input, V₂ ≡ 0 proved "
                          "per tensor where it holds, and v2='sample' available)", params)
        return Engine("generic", None, f"fast path unsupported: {reason}", params)
    extra = (f"; v2={v2!r} not needed: the fast path computes w exactly for every entry" if v2 != "exact" else "")
    what = ("nn.Sequential MLP with an elementwise link (THEORY §7)" if plan.mlp is not None
            else f"per-layer rules: {plan.source}")
    return Engine("fast", plan, what + extra, params)


def check_sampled_grams(engine: Engine, grams: bool) -> None:
    """Theorem D.1's W Wᵀ sums over every entry's w: refused with a sampled V₂."""
    if grams and engine.path == "reverse" and engine.v2 == "sample":
        raise ValueError("group_bounds=True needs w for every entry (Theorem D.1's Gram matrix W Wᵀ sums over all "
                         "entries), but v2='sample' computes w on a sample only. Use group_bounds='corollary46' "
                         "(its V₂ trace bounds are then NaN, with the reason in result.info['not_estimated']) "
                         "or v2='exact'.")


def sampling_description(engine: Engine) -> str:
    """How the sampled entries were chosen (for ``result.info`` and tables)."""
    return (f"v2='sample', v2_sample={engine.v2_sample}, seed={engine.seed}: w exact on a simple random sample "
            "of entries (without replacement, drawn by a private generator) of each tensor where V₂ ≡ 0 is not "
            "proved")


def v2_info(engine: Engine, eng: EngineOutput) -> dict:
    """``result.info["v2"]``: the mode and, per tensor, how its w was obtained."""
    out: dict[str, Any] = {"mode": engine.v2 if engine.path == "reverse" else f"exact ({engine.path} path)"}
    if engine.path == "reverse":
        out["w_exact"] = list(eng.info.get("w_exact", []))
        out["w_proved_zero"] = list(eng.info.get("var2_zero_reason", {}))
        out["w_sampled"] = {k: (int(d["index"].numel()), int(d["population"]))
                            for k, d in eng.info.get("w_sample", {}).items()}
        if engine.v2 == "sample":
            out["seed"], out["v2_sample"] = engine.seed, engine.v2_sample
    return out


@dataclass
class BatchAnalysis:
    """One analysed batch (:func:`analyse_batch`): the engine's base quantities, the per-input keys and
    the family constants (certified and, for shift-invariant families, the 𝟙^⊥ ones)."""

    eng: EngineOutput
    keys: dict[str, dict[str, Part]]
    consts: FamilyConstants
    sharp: FamilyConstants | None


def probe_outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One forward pass to check the output shape (batch, C) before an engine unpacks it
    (:func:`.checks.check_output_shape`).  A model that raises on these inputs is reported as a
    ValueError naming the inputs' shape and the (batch, features...) convention (the model's own
    exception is chained as the cause).  Returns the outputs (batch, C)."""
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
    return out


def check_fast_inputs(engine: Engine, x: torch.Tensor) -> None:
    """Inputs (batch, features) for the fast path: floating point with the first Linear's in_features."""
    plan = engine.mlp_plan
    assert plan is not None                     # called for an MLP plan only (analyse_batch, estimators)
    lin = plan.linears[0][1]
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
    if engine.mlp_plan is not None:
        K = max(lin.weight.shape[0] for _, lin in engine.mlp_plan.linears)
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
                  options: AnalysisOptions | None = None, **changes) -> BatchAnalysis:
    """Base quantities, family constants and per-input keys for one batch (THEORY §3, §5).

    ``options``: an :class:`AnalysisOptions` (default: its defaults); keyword ``changes`` update it
    (``analyse_batch(..., grams=True)``).  Before the engine runs: the inputs are validated
    (:func:`.checks.check_inputs`), the output shape is probed on the generic path (and for inputs that
    are not (batch, features)), and the Gram matrices of ``grams=True`` are sized against the memory
    budget (:func:`.guard.check_budget`)."""
    opts = _options(options, changes)
    optimised, use_eig, grams, pneg = opts.optimised, opts.use_eig, opts.grams, opts.prob_negative
    chunk_size, sharpened, memory_budget, keys = opts.chunk_size, opts.sharpened, opts.memory_budget, opts.keys
    dtype = next(iter(engine.params.values())).dtype
    x = check_inputs(x, dtype)
    if engine.mlp_plan is None or x.dim() != 2:
        probe_outputs(model, x)
    if engine.mlp_plan is not None and x.dim() == 2:
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
    if keys is not None and "prob_neg2" not in keys:
        pneg = False
    sharp_wanted = family.shift_invariant and sharpened
    base_keys = base_keys_for(keys, sharp_wanted)
    if base_keys is None and not sharp_wanted:     # no _sharp key: the 𝟙^⊥ norms are not needed
        base_keys = tuple(k for k in BASE_KEYS if k not in ("u2s", "w2s"))
    eng = engine.run(model, x, family, opts, pneg_samples=n_samples if pneg else None, base_keys=base_keys)
    h = eng.h.detach()
    gram_form = has_gram_form(family)
    eig, eng.info["certificates"] = certificate_policy(family, use_eig)   # one policy (families.constants)
    moments = None
    if eig and not gram_form:  # the C⁴ moment tensors, shared by both calls (the costly part)
        check_moment_size(family, h.shape[0])
        check_budget(moment_tensor_bytes(family, h.shape[0]),
                     f"use_eig=True (C⁴ moment tensors for the Sym² certificates; B={h.shape[0]} inputs, "
                     f"C={family.C})",
                     ["use_eig=False (closed-form certificates, no C⁴ tensors)",
                      "fewer inputs per batch (batch_size= in dataset_stats, or split the inputs)"], memory_budget)
        moments = family.moment_tensors(h)
    consts = family_constants(family, h, restricted=False, optimised=optimised, use_eig=eig, moments=moments)
    sharp = (family_constants(family, h, restricted=True, optimised=optimised, use_eig=eig, moments=moments)
             if family.shift_invariant and sharpened else None)
    return BatchAnalysis(eng, per_input_keys(eng, consts, sharp, n_samples, keys), consts, sharp)


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
    # a group has members (resolve_groups refuses an empty one): each sum() is a tensor, never sum()'s 0
    frob = cast(torch.Tensor, sum(eng.parts[n]["u2"].entry_sum() for n in members))
    w2 = cast(torch.Tensor, sum(eng.parts[n]["w2"].entry_sum() for n in members))
    P = 0
    for n in members:
        u2 = eng.parts[n]["u2"]
        P += int(u2.materialize()[0].numel()) if u2.a is None else u2.f.shape[1] * u2.a.shape[1]
    out = corollary46(frob, w2, P, ba.consts, n_samples, opt=optimised)
    if eng.grams is not None:
        JJ = cast(torch.Tensor, sum(eng.grams[n]["JJ"] for n in members))
        UU = cast(torch.Tensor, sum(eng.grams[n]["UU"] for n in members))
        WW = cast(torch.Tensor, sum(eng.grams[n]["WW"] for n in members))
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
                      precision_check: int | None = None, v2: str = "exact", v2_sample: int | float | None = None,
                      seed: int | None = None, keys: Iterable[str] | None = None,
                      progress: bool | None = None,
                      family_params: dict | None = None) -> StatsResult:
    r"""Exact I(θ_i|x), V₁, V₂ and the bounds of THEORY §5 for every parameter and input.

    For one input x and parameter θ_i, with u_i = ∂h/∂θ_i, w_i = ∂²h/∂θ_i², Σ the covariance and
    M₄ the fourth moment of the family's sufficient statistic and N = ``n_samples`` labels, the
    Fisher diagonal, the variances of the squared-score estimator Î₁ and of the negative-Hessian
    estimator Î₂ (THEORY §3) and the certified Theorem 4.1 bounds (THEORY §5) are

    .. math::

        I(\theta_i \mid x) = u_i^\top \Sigma u_i, \qquad
        V_1(\theta_i \mid x) = \frac{1}{N}\bigl[M_4(u_i, u_i, u_i, u_i) - (u_i^\top \Sigma u_i)^2\bigr], \qquad
        V_2(\theta_i \mid x) = \frac{1}{N}\, w_i^\top \Sigma w_i,

        \|u_i\|^2 \lambda_{\min}(\Sigma) \le I(\theta_i \mid x) \le \|u_i\|^2 \lambda_{\max}(\Sigma), \qquad
        \|u_i\|^4 \tilde\lambda_{\min}(M) \le N V_1(\theta_i \mid x) \le \|u_i\|^4 \tilde\lambda_{\max}(M).

    The result's mappings (``fisher``, ``var1``, ``var2``, the certified bounds
    ``*_lower``/``*_upper``, ``*_sharp`` for the softmax, ``*_opt`` with ``optimised=True``,
    ``rel_sd1``/``rel_sd2``, ``prob_neg2`` (exact, discrete families), ``prob_neg2_upper``) hold
    tensors of shape ``(batch, *param.shape)``.  ``result.path`` says which exact path ran and
    ``result.info["path_reason"]`` why.  Use float64 to verify: ``result.precision_lost`` flags V₁'s
    cancellation (THEORY §3).  The model, its parameters, modes and hooks, torch's global flags and
    RNG are left unchanged (:func:`.guard.preserve_user_state`).

    **V₂ on the reverse path** (issue 9 item 2; :func:`check_v2`): ``v2="exact"`` (default) computes
    w for every entry where V₂ ≡ 0 is not proved (refused above ``max_params`` such entries, with the
    estimated cost; above the default limit the estimate is printed before it starts);
    ``v2="prove"`` refuses unless V₂ ≡ 0 is proved for every tensor; ``v2="sample"`` computes w
    exactly on ``v2_sample`` random entries per unproved tensor (an int, or a fraction), drawn with a
    private generator seeded ``seed``.  Then the per-entry V₂ keys (:data:`.stats.W_KEYS`) are exact
    where ``result.v2_mask[name]`` is True and NaN elsewhere, and their group values are estimates
    with standard errors (``result.standard_errors``) and 95 % normal intervals with the
    finite-population correction (``result.ci()``); ``result.info["estimated"]`` lists them key by
    key.  Every input shares the same sampled entries, so per-input estimates are correlated across
    inputs.  ``cost_estimate`` (:mod:`.cost`) gives the route and cost per tensor without running.

    Args:
        model: the network; its output h (batch, C) is the family's natural parameter.
        inputs: a tensor (batch, features...) (detached; float32 or float64).
        family: a family name or :class:`~fishersym.families.ExponentialFamily`; by name, a size C
            that is a free parameter is taken from the model's outputs (:func:`resolve_family`).
        n_samples: N, the number of label samples per input of the estimators (default 1).
        path: the exact path (:func:`select_engine`): "auto" (default), "fast", "generic" or "reverse".
        optimised: also the ``*_opt`` bounds with the optimised λ̃ (SS-HOPM, THEORY §5).
        use_eig: False certifies the constants by closed forms only (Theorem 5.2 for the softmax:
            faster, looser); the default (None) uses the tightest available, which adds a batched
            C(C+1)/2-dimensional eigendecomposition per input; see :func:`dataset_stats` for the
            measured trade-off.
        groups: user parameter groups {name: [parameter names or module-name prefixes]} (or one such
            string), summed in ``result.groups`` besides every module with parameters.
        group_bounds: True adds Theorem D.1 and Corollary 4.6 per group (``result.groups``);
            ``"corollary46"``: Corollary 4.6 only, without the (B, C², C²) matrices of Theorem D.1,
            whose size is checked against ``memory_budget``.
        prob_negative: also the exact P(Î₂ < 0) of discrete families (``prob_neg2``).
        chunk_size: parameter entries per chunk on the generic and reverse paths (None: the engine's default).
        max_params: the size limit of the generic path, and of the entries whose w the reverse path
            computes with ``v2="exact"``.
        sharpened: the 𝟙^⊥ ``*_sharp`` bounds of shift-invariant families (THEORY §5).
        memory_budget: bytes (or "2GiB") that the Gram and moment tensors may take (default 2 GiB or
            ``$FISHERSYM_MEMORY_BUDGET``).
        precision_check: inputs re-analysed in float64 to measure the float32 precision of V₁ (None:
            the default count, :func:`reverse_precision_inputs` on the reverse path; 0 turns it off).
        v2: "exact", "prove" or "sample": how the reverse path obtains w (above).
        v2_sample: with ``v2="sample"``, the entries sampled per tensor (an int >= 2, or a fraction
            in (0, 1]).
        seed: with ``v2="sample"``, the seed of the private generator (default 0).
        keys: the result keys wanted (default: all of :data:`.stats.RESULT_KEYS`), plus ``fisher``;
            on the reverse path only the base quantities they need are computed, which saves time
            and memory on large models (e.g. ``keys=("fisher", "var1", "var2")``).  Without ``var1``
            there is nothing for the precision flag to bound (``v1_rel_error`` = ε, nothing measured).
        progress: a tqdm bar on stderr for the reverse path (None: when stderr is a terminal).
        family_params: parameters of a family given by name (e.g. ``{"C": 10}``); they win over the
            size read from the model, and a size that differs from the model's is refused.

    Returns:
        StatsResult: per key, {parameter name: tensor ``(batch, *param.shape)``}, with ``groups``,
        ``path``, ``info``, ``precision_lost`` and, for a sampled V₂, ``v2_mask``,
        ``standard_errors`` and ``ci()``.

    Raises:
        ValueError: for an invalid option (``path``, ``v2`` and its ``v2_sample``/``seed``,
            ``n_samples``, ``chunk_size``, ``max_params``, ``precision_check``, ``group_bounds``), a key
            no option produces, ``keys=`` together with ``group_bounds=``, a model the chosen path
            cannot analyse, a family size that differs from the model's, or a sampled V₂ with the
            Gram matrices of Theorem D.1; each message names the fix.
        TypeError: ``v2_sample`` that is neither an int nor a float.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
        >>> from fishersym import families
        >>> r = conditional_stats(m, torch.randn(2, 3, dtype=torch.float64), families.get("categorical", C=2),
        ...                       path="reverse", v2="sample", v2_sample=4, seed=1)
        >>> int(r.v2_mask["0.weight"].sum()), r.v2_mask["2.weight"].all().item()   # 4 of 12 exact; head: all
        (4, True)
        >>> lo, hi = r.ci()["0"]["var2"]; g = r.groups["0"]["var2"]
        >>> bool((lo <= g).all() and (g <= hi).all())
        True
    """
    family = resolve_family(family, family_params, model=model, data=inputs)
    n_samples = _check_n(n_samples)
    chunk_size, max_params = check_sizes(chunk_size, max_params)
    group_bounds, grams = check_group_bounds(group_bounds)
    n_check = check_inputs_count(precision_check, 64)
    v2, v2_sample, seed = check_v2(v2, v2_sample, seed)
    want = check_keys(keys)
    if want is not None:
        check_keys_available(want, family, optimised=optimised, prob_negative=prob_negative, sharpened=sharpened)
    if want is not None and group_bounds:
        raise ValueError("group_bounds= needs every key (the group bounds use the norms and the Gram matrices); "
                         "drop keys= or group_bounds=")
    engine = select_engine(model, family, path, max_params, v2=v2, v2_sample=v2_sample, seed=seed)
    check_sampled_grams(engine, grams)
    if precision_check is None and (engine.path == "reverse" or (engine.path == "fast" and engine.mlp_plan is None)):
        n_check = reverse_precision_inputs(len(inputs))
    opts = AnalysisOptions(optimised=optimised, use_eig=use_eig, grams=grams, prob_negative=prob_negative,
                           chunk_size=chunk_size, max_params=max_params, sharpened=sharpened,
                           memory_budget=memory_budget, keys=want, progress=progress)
    ba = analyse_batch(engine, model, inputs, family, n_samples, opts)
    values: dict[str, dict[str, torch.Tensor]] = {}
    for name, d in ba.keys.items():
        for k, part in d.items():
            values.setdefault(k, {})[name] = part.materialize()
    add_derived(values, want)
    if ba.eng.pneg is not None:
        values["prob_neg2"] = {n: p.materialize() for n, p in ba.eng.pneg.items()}
    members = resolve_groups(model, values["fisher"], groups)
    gsum = conditional_group_sums(values, members)
    if group_bounds:
        for g, names in members.items():
            gsum[g].update(group_trace_bounds(ba, family, names, n_samples, optimised))
    dtype = ba.eng.h.dtype
    from .core import mquad_cancels
    has_v1 = all("nv1_err" in b for b in ba.eng.parts.values())
    canc = cancellation_ratio(ba.eng) if has_v1 and mquad_cancels(family) else 1.0
    measured = (measured_v1_error(engine, model, check_inputs(inputs, dtype), family, ba.eng, n_check,
                                  max_params=max_params) if has_v1 else None)
    info = {"path_reason": ba.eng.info.get("path_reason", ""), "h": ba.eng.h,
            **{k: ba.eng.info[k] for k in ("var2_zero_reason", "proofs", "certificates") if k in ba.eng.info},
            "constants": ba.consts, "constants_sharp": ba.sharp, "v2": v2_info(engine, ba.eng)}
    sampling = None
    index = {k: d["index"] for k, d in ba.eng.info.get("w_sample", {}).items()}
    if index:
        sampling, estimated = apply_sampling(values, gsum, members, index, "conditional",
                                             sampling_description(engine), DEFAULT_LEVEL)
        info["estimated"], info["not_estimated"] = estimated, sampling.not_estimated
    if want is not None:   # only now: the group values of rel_sd and the sampled estimates need the variances
        values = {k: v for k, v in values.items() if k in want}
        gsum = {g: {k: v for k, v in d.items() if k in want or k == "n_params"} for g, d in gsum.items()}
        if sampling is not None:
            for per in (sampling.groups, sampling.tensors):
                for ests in per.values():
                    for k in [k for k in ests if k not in want]:
                        del ests[k]
        if not has_v1:
            info["v1_precision"] = "not computed: var1 is not among keys= (v1_rel_error is then ε, not a measurement)"
    return StatsResult(values, kind="conditional", path=ba.eng.path, n_samples=n_samples, dtype=dtype,
                       cancellation=canc, groups=gsum, group_members=members, v1_rel_error_measured=measured,
                       info=info, sampling=sampling)
