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
from ..families.constants import MAX_C_EIG, FamilyConstants, family_constants
from .checks import GENERIC_MAX_PARAMS, check_inputs, check_model, check_params
from .core import EngineOutput
from .generic import generic_engine
from .mlp import mlp_engine, plan_mlp
from .parts import Part
from .stats import StatsResult, add_derived, cancellation_ratio, per_input_keys, resolve_groups

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
            max_params=GENERIC_MAX_PARAMS) -> EngineOutput:
        if self.path == "fast":
            eng = mlp_engine(model, x, family, self.plan, self.params, grams=grams, pneg_samples=pneg_samples)
        else:
            eng = generic_engine(model, x, family, self.params, grams=grams, pneg_samples=pneg_samples,
                                 chunk_size=chunk_size, max_params=max_params)
        eng.info["path_reason"] = self.reason
        return eng


def select_engine(model: nn.Module, family: ExponentialFamily, path: str = "auto") -> Engine:
    """Validate the model and choose "fast" (THEORY §7) or "generic"; ``path`` forces one."""
    if path not in ("auto", "fast", "generic"):
        raise ValueError(f"path must be 'auto', 'fast' or 'generic', got {path!r}")
    check_model(model)
    params = check_params(model)
    if path == "generic":
        return Engine("generic", None, "forced by path='generic'", params)
    plan, reason = plan_mlp(model, family)
    if plan is None:
        if path == "fast":
            raise ValueError(f"the fast path cannot handle this model: {reason}")
        return Engine("generic", None, f"fast path unsupported: {reason}", params)
    return Engine("fast", plan, "nn.Sequential MLP with an elementwise link", params)


@dataclass
class BatchAnalysis:
    eng: EngineOutput
    keys: dict[str, dict[str, Part]]
    consts: FamilyConstants
    sharp: FamilyConstants | None


def analyse_batch(engine: Engine, model: nn.Module, x: torch.Tensor, family: ExponentialFamily, n_samples: int,
                  *, optimised: bool = False, use_eig: bool | None = None, grams: bool = False,
                  pneg: bool = False, chunk_size: int | None = None,
                  max_params: int = GENERIC_MAX_PARAMS, sharpened: bool = True) -> BatchAnalysis:
    """Base quantities, family constants and per-input keys for one batch (THEORY §3, §5)."""
    dtype = next(iter(engine.params.values())).dtype
    x = check_inputs(x, dtype)
    eng = engine.run(model, x, family, grams=grams, pneg_samples=n_samples if pneg else None,
                     chunk_size=chunk_size, max_params=max_params)
    h = eng.h.detach()
    eig = use_eig if use_eig is not None else family.C <= MAX_C_EIG
    moments = family.moment_tensors(h) if eig else None  # shared by both calls (the costly part)
    consts = family_constants(family, h, restricted=False, optimise=optimised, use_eig=use_eig, moments=moments)
    sharp = (family_constants(family, h, restricted=True, optimise=optimised, use_eig=use_eig, moments=moments)
             if family.shift_invariant and sharpened else None)
    return BatchAnalysis(eng, per_input_keys(eng, consts, sharp, n_samples), consts, sharp)


def _check_n(n_samples: int) -> int:
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    return n_samples


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
        out.update(theorem_d1(JJ, UU, WW, family.sigma(h), mbar, n_samples))
    return out


def conditional_stats(model: nn.Module, inputs: torch.Tensor, family: str | ExponentialFamily,
                      n_samples: int = 1, *, path: str = "auto", optimised: bool = False,
                      use_eig: bool | None = None, groups: Mapping[str, Iterable[str] | str] | None = None,
                      group_bounds: bool = False, prob_negative: bool = True,
                      chunk_size: int | None = None, max_params: int = GENERIC_MAX_PARAMS,
                      sharpened: bool = True) -> StatsResult:
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
    and Corollary 4.6 per group (``result.groups``).  Use float64 to verify:
    ``result.precision_lost`` flags V₁'s cancellation (THEORY §3).
    """
    family = resolve_family(family)
    n_samples = _check_n(n_samples)
    engine = select_engine(model, family, path)
    ba = analyse_batch(engine, model, inputs, family, n_samples, optimised=optimised, use_eig=use_eig,
                       grams=group_bounds, pneg=prob_negative, chunk_size=chunk_size, max_params=max_params,
                       sharpened=sharpened)
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
        d["rel_sd1"], d["rel_sd2"] = d["var1"].sqrt() / d["fisher"], d["var2"].sqrt() / d["fisher"]
        if group_bounds:
            d.update(group_trace_bounds(ba, family, names, n_samples, optimised))
        gsum[g] = d
    dtype = ba.eng.h.dtype
    from .core import mquad_cancels
    canc = cancellation_ratio(ba.eng) if mquad_cancels(family) else 1.0
    return StatsResult(values, kind="conditional", path=ba.eng.path, n_samples=n_samples, dtype=dtype,
                       cancellation=canc, groups=gsum, group_members=members,
                       info={"path_reason": ba.eng.info.get("path_reason", ""), "h": ba.eng.h,
                             "constants": ba.consts, "constants_sharp": ba.sharp})
