"""Measured precision of V₁ in float32 (issue 13 items 6, 23; THEORY §3).

:attr:`.stats.StatsResult.v1_rel_error` bounds the rounding of the family's forms *given* the
Jacobians u.  In float32 the Jacobians themselves carry rounding errors from the forward and
backward passes, and V₁ = M(u,u,u,u) amplifies them wherever V₁ is small against I² (THEORY §3):
on a trained digits MLP, float32 V₁ entries were off by up to 100 % while the bound stayed
below 1e-3.  No cheap a-priori bound covers that, so float32 results are *measured*: the same
analysis runs in float64 on a float64 copy of the model for a few inputs (chosen by a private
generator; never the global RNG), and the largest relative error of V₁ over their entries is
reported as ``result.v1_rel_error_measured``.  ``precision_lost`` fires when either number
exceeds 1e-3.  Float64 results need no measurement (their u are accurate to a few ε relative to
the terms that form them) and report ``None``.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..families.base import ExponentialFamily
from .core import EngineOutput
from .parts import Part

__all__ = ["measured_v1_error", "check_inputs_count"]


def check_inputs_count(precision_check: int | None, default: int) -> int:
    """``precision_check``: None (the default count), or a non-negative int (0 turns it off)."""
    if precision_check is None:
        return default
    if isinstance(precision_check, bool) or not isinstance(precision_check, int) or precision_check < 0:
        raise ValueError(f"precision_check must be None or an integer >= 0 (inputs re-analysed in float64 to "
                         f"measure float32 precision; 0 turns it off), got {precision_check!r}")
    return precision_check


def measured_v1_error(engine, model: nn.Module, x: torch.Tensor, family: ExponentialFamily,
                      eng: EngineOutput, k: int, seed: int = 0, max_params: int | None = None) -> float | None:
    """Largest relative error of the float32 N·V₁ entries of ``eng`` against a float64 re-analysis of
    ``k`` of the inputs ``x`` (None when the parameters are float64, ``k`` is 0, V₁ was not computed or the
    model cannot be deep-copied; then only the a-priori bound ``v1_rel_error`` backs ``precision_lost``).

    The relative error is taken over the entries whose float64 V₁ is positive; an entry with a float64
    V₁ of exactly 0 and a non-zero float32 value counts as a relative error of 1."""
    if eng.h.dtype == torch.float64 or k <= 0 or x.shape[0] == 0:
        return None
    if not all("nv1" in b for b in eng.parts.values()):   # V₁ not computed (keys= without it)
        return None
    from .conditional import select_engine  # local import: conditional imports this module
    from .checks import GENERIC_MAX_PARAMS
    B = x.shape[0]
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(B, generator=gen)[: min(k, B)].sort().values
    try:
        m64 = copy.deepcopy(model).double()
    except Exception:  # noqa: BLE001 - a model that cannot be copied: the measurement is unavailable (reported as None)
        return None
    x64 = x[idx].double() if x.is_floating_point() else x[idx]
    if engine.path == "reverse":   # only V₁ is compared: u alone, no w (however V₂ was obtained)
        from .reverse import reverse_engine
        params: dict[str, torch.Tensor] = {k: p for k, p in m64.named_parameters() if k in engine.params}
        out = reverse_engine(m64, x64, family, params, w_mode="skip", progress=False,
                             base_keys=("fisher", "nv1", "nv1_err"))
    else:
        e64 = select_engine(m64, family, engine.path, max_params or GENERIC_MAX_PARAMS)
        out = e64.run(m64, x64, family, max_params=max_params or GENERIC_MAX_PARAMS,
                      base_keys=("fisher", "nv1", "nv1_err"))
    index = idx.to(out.h.device)
    vals, zeros = [], []
    for name, base in out.parts.items():
        e, z = _relative_error(eng.parts[name]["nv1"].take(index), base["nv1"])
        vals.append(e)
        zeros.append(z)
    if not vals:
        return 0.0
    # one host synchronisation; a NaN maximum (a NaN entry) leaves a parameter out, as max(worst, nan) did
    e = torch.stack(vals)
    worst = max(0.0, float(torch.where(torch.isnan(e), 0.0, e).amax()))
    return max(worst, 1.0) if bool(torch.stack(zeros).any()) else worst


def _relative_error(got: Part, ref: Part) -> tuple[torch.Tensor, torch.Tensor]:
    """(max over entries with ref > 0 of |got − ref|/ref (−∞ when there is none, NaN when one is NaN),
    whether some entry has ref = 0 and got ≠ 0), as 0-d tensors (no host synchronisation).

    Factored parts (f·a^p of the fast path, THEORY §7) are compared without materialising: with
    r_bj = g_bj/F_bj and s_bk = G_bk/A_bk (g, G the float32 factors f and a^p, F, A the float64 ones;
    r, s ≥ 0 when N·V₁ ≥ 0 and p is even), the relative error of entry (j, k) of input b is
    |r_bj s_bk − 1|, whose maximum over j, k is attained at a corner (r_max or r_min) × (s_max or
    s_min), as r·s is bilinear (so it holds for any signs); ref = F·A = 0
    exactly when F = 0 or A = 0, and got = g·G ≠ 0 when g ≠ 0 and G ≠ 0.  This is the error of the
    float32 factors; the float32 product g·G's own rounding (≤ 2⁻²⁴ relative) is not included."""
    if got.a is None or ref.a is None or got.f.dim() != 2 or got.p != ref.p or got.p % 2:
        r = ref.materialize()
        g = got.materialize().to(r.dtype)
        pos = r > 0
        e = torch.where(pos, (g - r).abs_().div_(r), -math.inf).amax() if r.numel() else r.new_tensor(-math.inf)
        return e, ((r == 0) & (g != 0)).any()
    F, g = ref.f, got.f.to(ref.f.dtype)
    A, G = ref._ap(), got._ap().to(ref.f.dtype)
    pF, pA = F > 0, A > 0
    r, s = g / torch.where(pF, F, 1.0), G / torch.where(pA, A, 1.0)
    inf = math.inf
    rmax, rmin = torch.where(pF, r, -inf).amax(1), torch.where(pF, r, inf).amin(1)
    smax, smin = torch.where(pA, s, -inf).amax(1), torch.where(pA, s, inf).amin(1)
    some = pF.any(1) & pA.any(1)
    # r·s is bilinear in (r, s), so |r·s − 1| is largest at a corner of [r_min, r_max] × [s_min, s_max],
    # whatever the signs (a negative float32 factor included)
    corners = torch.stack([rmax * smax, rmax * smin, rmin * smax, rmin * smin]).sub_(1).abs_().amax(0)
    e = torch.where(some, corners, -inf).amax()
    gz, Gz = g != 0, G != 0
    z = (((F == 0) & gz).any(1) & Gz.any(1)) | (((A == 0) & Gz).any(1) & gz.any(1))
    return e, z.any()
