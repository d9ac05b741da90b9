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

__all__ = ["StatsResult", "per_input_keys", "cancellation_ratio", "resolve_groups", "add_derived"]


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


def cancellation_ratio(eng: EngineOutput) -> float:
    """max over parameters and inputs of M₄(u,u,u,u) / (N·V₁) = 1 + I²/(N·V₁) (THEORY §3).

    The moment form N·V₁ = M₄ − I² loses about log₁₀ of this ratio in
    significant digits; the factored parts share the input factor a_k⁴, so
    the ratio is computed on the per-row factors (once per distinct factor).
    """
    worst = 1.0
    seen = set()
    for base in eng.parts.values():
        nv1, fi = base["nv1"].f, base["fisher"].f
        if (id(nv1), id(fi)) in seen or fi.numel() == 0:
            continue
        seen.add((id(nv1), id(fi)))
        live = fi != 0
        r = (nv1.clamp_min(0) + fi * fi) / nv1.clamp_min(torch.finfo(nv1.dtype).tiny)
        # entries with I = 0 do not count (as 1, the floor); a NaN among the others drops the part
        worst = max(worst, float(torch.where(live, r, torch.ones_like(r)).max()))
    return worst


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


def add_derived(values: dict[str, dict[str, torch.Tensor]]) -> None:
    """Relative spreads √V/I and Cantelli's bound on P(Î₂ < 0) (THEORY §6 item 5, §10)."""
    fisher = values["fisher"]
    for k in ("1", "2"):
        values[f"rel_sd{k}"] = {n: values[f"var{k}"][n].sqrt().div_(fisher[n]) for n in fisher}
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
    ``precision_lost`` is True when the moment-minus-square form of V₁ lost
    more than about 3 of the dtype's significant digits (THEORY §3); use
    float64 for verification.
    """

    def __init__(self, values: dict[str, dict[str, torch.Tensor]], *, kind: str, path: str, n_samples: int,
                 dtype: torch.dtype, cancellation: float, groups: dict[str, dict[str, torch.Tensor]],
                 group_members: dict[str, list[str]], info: dict | None = None):
        self._values = values
        self.kind, self.path, self.n_samples, self.dtype = kind, path, n_samples, dtype
        self.cancellation = cancellation
        eps = torch.finfo(dtype).eps
        self.lost_digits = math.log10(cancellation) if cancellation < math.inf else math.inf
        self.precision_lost = bool(eps * cancellation > 1e-3)
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
