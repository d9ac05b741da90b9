"""Result classes and the assembly of per-input keys (THEORY.md §3, §5, §6, §8).

Keys of a result (shared names of :mod:`fishersym.bounds.theorem41`):

* ``fisher``, ``var1``, ``var2``: I, V₁, V₂ (THEORY §2–§3);
* the certified Theorem 4.1 bounds ``fisher_lower`` … ``var2_upper``; the
  optimised ``var1_lower_opt``/``var1_upper_opt`` (only with ``optimised=True``);
  for shift-invariant families the sharpened ``*_sharp`` keys (THEORY §5 [beyond]);
* ``rel_sd1``, ``rel_sd2``: the relative spread √V_k / I (THEORY §10);
* ``prob_neg2``: exact P(Î₂ < 0) (discrete families, conditional results);
  ``prob_neg2_upper``: Cantelli's bound V₂/(V₂ + I²) ≥ P(Î₂ < 0) (any family);
* dataset results add ``input_var`` (Var_q I(θ_i|x)) and ``input_var_upper``
  (Lemma 4.8: E_q[‖u_i‖⁴ λ_max(Σ)²]) (THEORY §8).
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch
from torch import nn

from ..bounds.theorem41 import theorem41_bounds
from ..families.constants import FamilyConstants
from .core import EngineOutput
from .parts import Part

__all__ = ["StatsResult", "per_input_keys", "cancellation_ratio", "v1_relative_error", "resolve_groups",
           "add_derived", "PRECISION_THRESHOLD"]

#: the precision flag fires when the bound on V₁'s relative rounding error exceeds this
PRECISION_THRESHOLD = 1e-3


def _key_power(key: str) -> int:
    return 2 if key.startswith("fisher") else 4


def per_input_keys(eng: EngineOutput, consts: FamilyConstants, sharp: FamilyConstants | None,
                   n_samples: int) -> dict[str, dict[str, Part]]:
    """parameter → key → Part of the per-input statistics and Theorem 4.1 bounds (THEORY §3, §5).

    Parameters whose base parts share per-row factors (the weight and bias of one Linear layer on
    the fast path) share the per-row factors of every key, computed once."""
    N = float(n_samples)
    out: dict[str, dict[str, Part]] = {}
    memo: dict[tuple, dict[str, torch.Tensor]] = {}
    for name, base in eng.parts.items():
        sig = tuple(id(base[k].f) for k in sorted(base))
        fs = memo.get(sig)
        if fs is None:
            fs = {"fisher": base["fisher"].f, "var1": base["nv1"].f / N, "var2": base["nv2"].f / N}
            fs.update(theorem41_bounds(base["u2"].f, base["w2"].f, consts, n_samples))
            if sharp is not None:
                fs.update(theorem41_bounds(base["u2s"].f, base["w2s"].f, sharp, n_samples, "_sharp"))
            memo[sig] = fs
        u2 = base["u2"]
        d = {"fisher": base["fisher"], "var1": base["nv1"].with_f(fs["var1"]),
             "var2": base["nv2"].with_f(fs["var2"])}
        for k, v in fs.items():
            if k not in d:
                d[k] = u2.with_f(v, _key_power(k))
        out[name] = d
    return out


def v1_relative_error(eng: EngineOutput) -> float:
    """max over parameters, inputs and entries of err/N·V₁, the bound on the relative rounding error
    of the computed V₁ (``nv1_err`` of :func:`~fishersym.numeric.core.base_quantities`).

    Entries with N·V₁ = 0 and err = 0 are exact (0); N·V₁ ≤ 0 with err > 0, or a NaN, count as ∞.
    The factored parts share the input factor a_k⁴ between nv1 and nv1_err, so the ratio is taken
    on the per-row factors (once per distinct factor)."""
    worst = 0.0
    seen = set()
    for base in eng.parts.values():
        if "nv1_err" not in base:
            raise KeyError("engine output without 'nv1_err' (numeric.core.base_quantities provides it)")
        nv1, err = base["nv1"].f, base["nv1_err"].f
        if (id(nv1), id(err)) in seen or nv1.numel() == 0:
            continue
        seen.add((id(nv1), id(err)))
        pos = nv1 > 0
        r = torch.where(pos, err / torch.where(pos, nv1, torch.ones_like(nv1)),
                        torch.where((err == 0) & (nv1 == 0), torch.zeros_like(nv1), torch.full_like(nv1, math.inf)))
        r = torch.where(torch.isnan(r) | torch.isnan(err), torch.full_like(r, math.inf), r)
        worst = max(worst, float(r.max()))
    return worst


def cancellation_ratio(eng: EngineOutput) -> float:
    """The V₁ error bound expressed as an amplification of the dtype's ε: max(1, v1_relative_error/ε).

    Kept for the callers that pass it to :class:`StatsResult` as ``cancellation`` (which turns it
    back into ``v1_rel_error`` = ε·ratio); ε ≥ any bound a computed value can beat, so the floor at
    1 loses nothing the flag uses."""
    dtype = next((b["nv1"].f.dtype for b in eng.parts.values()), torch.float64)
    rel = v1_relative_error(eng)
    return max(1.0, rel / torch.finfo(dtype).eps)


def resolve_groups(model: nn.Module, names: Iterable[str],
                   groups: Mapping[str, Iterable[str] | str] | None = None) -> dict[str, list[str]]:
    """Parameter groups: every module with direct parameters, plus user groups.

    A user group is a list of parameter names or name prefixes (a module name
    selects all its parameters), or one such string.
    """
    names = list(names)
    out: dict[str, list[str]] = {}
    for mname, m in model.named_modules():
        own = [f"{mname}.{p}" if mname else p for p, _ in m.named_parameters(recurse=False)]
        own = [p for p in own if p in names]
        if own:
            out[mname or "(root)"] = own
    for gname, sel in (groups or {}).items():
        sel = [sel] if isinstance(sel, str) else list(sel)
        members = [n for n in names if any(n == s or n.startswith(s + ".") or (s.endswith(".") and n.startswith(s))
                                             for s in sel)]
        if not members:
            raise ValueError(f"group {gname!r} selects no parameter (selectors {sel}); "
                             f"parameters are {names}")
        out[gname] = members
    return out


def rel_sd(v: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """√V / I with the 0/0 case defined: 0 where V = 0 and I = 0 (THEORY §10).

    I = uᵀΣu = 0 means Σ^½u = 0, hence (for V₁) uᵀr = 0 almost surely and N·V₁ = Var[(uᵀr)²] = 0,
    and (for V₂) the estimator's noise wᵀr can still be non-zero: V₂ > 0 = I gives +∞ (a spread
    infinitely larger than the value), never NaN.  A negative V (impossible for the exact value; the
    stable family forms never produce one) is read as 0 in the square root."""
    num = v.clamp_min(0).sqrt()
    zero = (i == 0) & (num == 0)
    out = torch.where(zero, torch.zeros_like(num), num / torch.where(zero, torch.ones_like(i), i))
    return out


def add_derived(values: dict[str, dict[str, torch.Tensor]]) -> None:
    """Relative spreads √V/I (0/0 defined as 0, :func:`rel_sd`) and Cantelli's bound on
    P(Î₂ < 0) (THEORY §6 item 5, §10)."""
    fisher = values["fisher"]
    for k in ("1", "2"):
        values[f"rel_sd{k}"] = {n: rel_sd(values[f"var{k}"][n], fisher[n]) for n in fisher}
    values["prob_neg2_upper"] = {n: _cantelli(values["var2"][n], fisher[n]) for n in fisher}


def _cantelli(v: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """P(X ≤ E X − I) ≤ V/(V + I²) (one-sided Chebyshev); 0 when V = 0 and I > 0."""
    den = (i * i).add_(v)
    pos = den > 0
    return torch.div(v, den.masked_fill_(~pos, 1.0), out=den).masked_fill_(~pos, 1.0)


class StatsResult(Mapping):
    """Per-parameter results: ``result.fisher[name]``, ``result["var1"][name]``, …

    ``kind`` is "conditional" (tensors (batch, *param.shape)) or "dataset"
    (tensors param.shape).  ``groups`` maps group name → key → per-group sum
    ((batch,) or scalar), with ``n_params`` and group-level bounds.
    **Precision flag** (issue 13 items 6, 23).  ``v1_rel_error`` is the largest, over parameters,
    inputs and entries, of a first-order bound on the relative rounding error of the computed
    N·V₁ against its exact value at the computed h and u (each family's ``quad_forms(error=True)``;
    for the softmax it covers p = softmax(h), the centring d = u − ū and the stable form
    Σ_a p_a(d_a² − s)²).  ``precision_lost`` is True exactly when ``v1_rel_error`` > 1e-3
    (``PRECISION_THRESHOLD``).  What it promises: when it is False, every conditional V₁ entry is
    within relative 1e-3 (to first order in ε) of the exact V₁ for the computed Jacobians u; a
    dataset V₁ (a mean of non-negative per-input values) inherits the same relative bound up to
    the summation's own rounding.  When it is True at least one entry *may* be that far off (a
    bound, not a measurement: it can fire on entries that happen to be accurate).  It does not
    cover errors in u itself (the Jacobians, which autodiff computes to working accuracy), nor I
    and V₂ (sums of non-negative terms, accurate to a few ε).  ``cancellation`` (= v1_rel_error/ε,
    at least 1) and ``lost_digits`` = log₁₀ of it are kept for compatibility.

    **float32** (:mod:`.precision`): the errors of float32 Jacobians are not covered by that bound,
    and they dominate (measured on a trained digits MLP: `benchmarks/precision_flag.py`).  Float32
    results therefore also carry ``v1_rel_error_measured``: the largest relative V₁ error of a
    float64 re-analysis of some inputs (``precision_check=``; all inputs up to 64 in
    :func:`conditional_stats`, 8 per batch in :func:`dataset_stats`), and ``precision_lost`` is True
    when either number exceeds 1e-3.  It is None in float64 or with ``precision_check=0``.
    """

    def __init__(self, values: dict[str, dict[str, torch.Tensor]], *, kind: str, path: str, n_samples: int,
                 dtype: torch.dtype, cancellation: float, groups: dict[str, dict[str, torch.Tensor]],
                 group_members: dict[str, list[str]], info: dict | None = None,
                 v1_rel_error_measured: float | None = None):
        self._values = values
        self.kind, self.path, self.n_samples, self.dtype = kind, path, n_samples, dtype
        self.cancellation = cancellation
        eps = torch.finfo(dtype).eps
        self.lost_digits = math.log10(cancellation) if cancellation < math.inf else math.inf
        self.v1_rel_error = float(eps * cancellation)
        self.v1_rel_error_measured = v1_rel_error_measured
        self.precision_lost = bool(not (self.v1_rel_error <= PRECISION_THRESHOLD)
                                   or (v1_rel_error_measured is not None
                                       and not (v1_rel_error_measured <= PRECISION_THRESHOLD)))
        self.groups, self.group_members = groups, group_members
        self.info = info or {}

    # Mapping protocol over keys
    def __getitem__(self, key: str) -> dict[str, torch.Tensor]:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, key: str):
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"no key {key!r} in this result; available: {', '.join(self._values)}") from None

    @property
    def parameters(self) -> list[str]:
        return list(self._values["fisher"])

    def rows(self, keys: Iterable[str] = ("fisher", "var1", "var2"), by: str = "parameter",
             reduce: str = "mean") -> list[dict]:
        """Table rows: one per parameter (values reduced by ``reduce`` = mean/sum/max over entries and
        inputs) or, with ``by="group"``, one per group (group sums, averaged over inputs)."""
        keys = list(keys)
        known = set(self._values) | {k for d in self.groups.values() for k in d}
        unknown = [k for k in keys if k not in known]
        if unknown:
            raise KeyError(f"unknown keys {unknown}; available: {', '.join(sorted(known))}")
        rows = []
        if by == "group":
            for g, d in self.groups.items():
                row = {"name": g, "n_params": int(d["n_params"])}
                for k in keys:
                    if k in d:
                        row[k] = float(d[k].float().mean()) if d[k].numel() else float("nan")
                rows.append(row)
            return rows
        red = {"mean": torch.mean, "sum": torch.sum, "max": torch.amax}[reduce]
        for n in self.parameters:
            row = {"name": n, "shape": tuple(self._values["fisher"][n].shape[1 if self.kind == "conditional" else 0:])}
            for k in keys:
                row[k] = float(red(self._values[k][n].double()))
            rows.append(row)
        return rows

    def table(self, keys: Iterable[str] = ("fisher", "var1", "var2"), by: str = "parameter",
              reduce: str = "mean") -> str:
        """A plain-text table of :meth:`rows` (no pandas needed)."""
        rows = self.rows(keys, by, reduce)
        if not rows:
            return "(empty)"
        cols = list(dict.fromkeys(c for r in rows for c in r))
        fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
        cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        line = lambda xs: "  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(xs, widths)))  # noqa: E731
        head = f"{self.kind} stats, path={self.path}, N={self.n_samples}, dtype={self.dtype}" + (
            ", PRECISION LOST in V1 (use float64)" if self.precision_lost else "")
        return "\n".join([head, line(cols), line(["-" * w for w in widths])] + [line(c) for c in cells])

    def __repr__(self) -> str:
        return (f"StatsResult(kind={self.kind!r}, path={self.path!r}, n_samples={self.n_samples}, "
                f"parameters={len(self.parameters)}, keys={list(self._values)})")
