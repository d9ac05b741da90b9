"""Result classes and the assembly of per-input keys (THEORY §3, §5, §6, §8).

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

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from statistics import NormalDist

import torch
from torch import nn

from ..bounds.lemma48 import lemma48_bound
from ..bounds.theorem41 import theorem41_bounds
from ..families.constants import FamilyConstants
from .core import EngineOutput
from .parts import Part, batch_sums_many

__all__ = ["DATASET_KEYS", "StatsResult", "per_input_keys", "needed_keys", "zero_constants", "dataset_batch_sums",
           "FISHER_SQ", "RESULT_KEYS", "check_keys", "base_keys_for", "cancellation_ratio", "v1_relative_error",
           "resolve_groups", "conditional_group_sums", "rel_sd", "add_derived", "PRECISION_THRESHOLD", "Estimate",
           "SampledV2", "srs_estimate", "estimate_total", "apply_sampling", "W_KEYS", "SAMPLED_TOTAL_KEYS",
           "DEFAULT_LEVEL", "skew_ok"]

#: the precision flag fires when the bound on V₁'s relative rounding error exceeds this
PRECISION_THRESHOLD = 1e-3


def _key_power(key: str) -> int:
    return 2 if key.startswith("fisher") else 4


#: every key a per-input result can hold (``keys=`` of :func:`~fishersym.numeric.conditional_stats`)
RESULT_KEYS = (("fisher", "var1", "var2")
               + tuple(f"{q}_{side}{sfx}" for sfx in ("", "_sharp") for q in ("fisher", "var1", "var2")
                       for side in ("lower", "upper"))
               + tuple(f"var1_{side}{sfx}_opt" for sfx in ("", "_sharp") for side in ("lower", "upper"))
               + ("rel_sd1", "rel_sd2", "prob_neg2", "prob_neg2_upper"))


#: every key a data-set result can hold (``keys=`` of :func:`~fishersym.numeric.dataset_stats`): the
#: per-input keys except the exact ``prob_neg2``, plus Var_q I and Lemma 4.8's bound on it (THEORY §8)
DATASET_KEYS = tuple(k for k in RESULT_KEYS if k != "prob_neg2") + ("input_var", "input_var_upper")


def check_keys(keys, allowed: tuple[str, ...] = RESULT_KEYS) -> frozenset[str] | None:
    """``keys=``: None (every key) or an iterable of ``allowed`` keys (:data:`RESULT_KEYS`, or
    :data:`DATASET_KEYS` for a data-set result); ``fisher`` is always added (the groups count entries
    from it)."""
    if keys is None:
        return None
    if isinstance(keys, str):
        keys = [keys]
    try:
        ks = frozenset(keys)
    except TypeError:
        raise TypeError(f"keys must be None or an iterable of key names, got {keys!r}") from None
    bad = sorted(k for k in ks if k not in allowed)
    if bad:
        raise ValueError(f"unknown result keys {bad}; choose from {list(allowed)}")
    return ks | {"fisher"}


def base_keys_for(keys: frozenset[str] | None, shift_invariant: bool) -> tuple[str, ...] | None:
    """The base quantities (:data:`~fishersym.numeric.core.BASE_KEYS`) that the result keys need:
    var1/rel_sd1 → nv1 (and its rounding bound nv1_err); var2/rel_sd2/prob_neg2_upper → nv2; a
    Theorem 4.1 bound → u2, w2 (u2s, w2s for the ``_sharp`` ones); the data-set key input_var_upper
    → u2 (input_var needs fisher only)."""
    if keys is None:
        return None
    need = {"fisher"}
    if keys & {"var1", "rel_sd1"}:
        need |= {"nv1", "nv1_err"}
    if keys & {"var2", "rel_sd2", "prob_neg2_upper"}:
        need.add("nv2")
    if "input_var_upper" in keys:            # Lemma 4.8: ‖u‖⁴·λ̄_max(Σ)² (a data-set key)
        need.add("u2")
    bounds = [k for k in keys if ("_lower" in k or "_upper" in k) and k not in ("input_var_upper", "prob_neg2_upper")]
    if any("_sharp" not in k for k in bounds):
        need |= {"u2", "w2"}
    if shift_invariant and any("_sharp" in k for k in bounds):
        need |= {"u2s", "w2s"}
    return tuple(sorted(need))


def needed_keys(keys: frozenset[str] | None) -> frozenset[str] | None:
    """The per-input keys :func:`per_input_keys` must produce for the result keys ``keys`` (None: all):
    the keys themselves and the variances that ``rel_sd1``/``rel_sd2``/``prob_neg2_upper`` derive from."""
    if keys is None:
        return None
    need = set(keys) | {"fisher"}
    if "rel_sd1" in keys:
        need.add("var1")
    if keys & {"rel_sd2", "prob_neg2_upper"}:
        need.add("var2")
    return frozenset(need)


def zero_constants(*consts: FamilyConstants | None) -> list[set[str]]:
    """For each constants object, the names of :data:`~fishersym.bounds.theorem41.BOUND_CONSTANTS` that are
    exactly 0 for every input (e.g. λ_min(Σ) = 0 for the softmax): one host synchronisation for all."""
    from ..bounds.theorem41 import BOUND_CONSTANTS
    names = sorted(set(BOUND_CONSTANTS.values()))
    flags, where = [], []
    for i, c in enumerate(consts):
        for n in names:
            t = getattr(c, n, None) if c is not None else None
            if isinstance(t, torch.Tensor) and t.numel():
                flags.append((t == 0).all())
                where.append((i, n))
    out: list[set[str]] = [set() for _ in consts]
    if flags:
        for (i, n), z in zip(where, torch.stack(flags).tolist()):
            if z:
                out[i].add(n)
    return out


def per_input_keys(eng: EngineOutput, consts: FamilyConstants, sharp: FamilyConstants | None,
                   n_samples: int, keys: frozenset[str] | None = None) -> dict[str, dict[str, Part]]:
    """parameter → key → Part of the per-input statistics and Theorem 4.1 bounds (THEORY §3, §5).

    Parameters whose base parts share per-row factors (the weight and bias of one Linear layer on
    the fast path) share the per-row factors of every key, computed once.  Keys whose base
    quantities the engine did not compute (``base_keys=``) are left out, and so are those not needed
    for the result keys ``keys`` (:func:`needed_keys`; default all).  A bound whose constant is 0 for
    every input (:func:`zero_constants`) is flagged :attr:`~.parts.Part.zero`: its sums over inputs
    need no product (:func:`.parts.batch_sums_many`)."""
    from ..bounds.theorem41 import BOUND_CONSTANTS, bound_name
    N = float(n_samples)
    need = needed_keys(keys)
    want = (lambda k: True) if need is None else need.__contains__
    zero, zero_s = zero_constants(consts, sharp)
    bound_keys = [k for k in BOUND_CONSTANTS if want(k)]
    sharp_keys = [k for k in BOUND_CONSTANTS if want(bound_name(k, "_sharp"))]
    # result key → whether its constant is 0 for every input
    is_zero = {**{bound_name(k, "_sharp"): BOUND_CONSTANTS[k] in zero_s for k in sharp_keys},
               **{k: BOUND_CONSTANTS[k] in zero for k in bound_keys}}
    out: dict[str, dict[str, Part]] = {}
    memo: dict[tuple, dict[str, torch.Tensor]] = {}
    for name, base in eng.parts.items():
        sig = tuple(id(base[k].f) for k in sorted(base))
        fs = memo.get(sig)
        if fs is None:
            fs = {"fisher": base["fisher"].f}
            if "nv1" in base and want("var1"):
                fs["var1"] = base["nv1"].f / N
            if "nv2" in base and want("var2"):
                fs["var2"] = base["nv2"].f / N
            if "u2" in base and "w2" in base and bound_keys:
                fs.update(theorem41_bounds(base["u2"].f, base["w2"].f, consts, n_samples, keys=bound_keys))
            if sharp is not None and "u2s" in base and "w2s" in base and sharp_keys:
                fs.update(theorem41_bounds(base["u2s"].f, base["w2s"].f, sharp, n_samples, "_sharp", keys=sharp_keys))
            memo[sig] = fs
        ref = base.get("u2", base["fisher"])
        d = {"fisher": base["fisher"]}
        if "var1" in fs:
            d["var1"] = base["nv1"].with_f(fs["var1"])
        if "var2" in fs:
            d["var2"] = base["nv2"].with_f(fs["var2"])
        for k, v in fs.items():
            if k not in d:
                d[k] = Part(v, ref.a, _key_power(k), zero=is_zero.get(k, False))
        out[name] = d
    return out


#: key of Σ_b I(θ_i|x_b)² in :func:`dataset_batch_sums` (with Σ_b I, the raw sums of the centred moments)
FISHER_SQ = "fisher_sq"


def dataset_batch_sums(eng: EngineOutput, keys: dict[str, dict[str, Part]], consts: FamilyConstants,
                       input_var_upper: bool = True, fisher_sq: bool = True) -> dict[str, dict[str, torch.Tensor]]:
    """parameter → key → Σ_b over one batch of every per-input key of ``keys`` (:func:`per_input_keys`),
    all parameters' products at once (:func:`.parts.batch_sums_many`: one matrix product per layer and
    input power, the biases' sums from the same stacked factors), plus two sums of THEORY §8.

    * ``input_var_upper``: Σ_b ‖u‖⁴·λ̄_max(Σ)² (Lemma 4.8; ‖u‖⁴ = (‖u‖²)², λ̄_max = ``sigma_max_cert``);
    * ``fisher_sq`` (:data:`FISHER_SQ`): Σ_b I(θ_i|x_b)², which with Σ_b I (``fisher``) gives the centred
      moments of I over the batch (:class:`~.dataset.CentredMoments`).

    No host synchronisation.  The tensors of one layer are views of one result."""
    memo: dict[tuple, torch.Tensor] = {}   # weight and bias of a layer share their rows
    todo: dict[str, dict[str, Part]] = {}
    for name, d in keys.items():
        d = dict(d)
        if input_var_upper:
            u2 = eng.parts[name]["u2"]
            f = memo.get(("iv", id(u2.f)))
            if f is None:
                # (f·a^p)²·λ̄² = (f²·λ̄²)·a^{2p}: Lemma 4.8's integrand of the per-row factor (bounds.lemma48)
                f = memo[("iv", id(u2.f))] = lemma48_bound(u2.f, consts.sigma_max_cert)
            d["input_var_upper"] = u2.with_f(f, 2 * u2.p)
        if fisher_sq:
            fi = d["fisher"]
            f = memo.get(("sq", id(fi.f)))
            if f is None:
                f = memo[("sq", id(fi.f))] = fi.f * fi.f
            d[FISHER_SQ] = fi.with_f(f, 2 * fi.p)
        todo[name] = d
    return batch_sums_many(todo)


def v1_relative_error(eng: EngineOutput) -> float:
    """max over parameters, inputs and entries of err/N·V₁, the bound on the relative rounding error
    of the computed V₁ (``nv1_err`` of :func:`~fishersym.numeric.core.base_quantities`).

    Entries with N·V₁ = 0 and err = 0 are exact (0); N·V₁ ≤ 0 with err > 0, or a NaN, count as ∞.
    The factored parts share the input factor a_k⁴ between nv1 and nv1_err, so the ratio is taken
    on the per-row factors (once per distinct factor)."""
    maxima = []
    seen = set()
    for base in eng.parts.values():
        if "nv1_err" not in base:
            raise KeyError("engine output without 'nv1_err' (numeric.core.base_quantities provides it)")
        nv1, err = base["nv1"].f, base["nv1_err"].f
        if (id(nv1), id(err)) in seen or nv1.numel() == 0:
            continue
        seen.add((id(nv1), id(err)))
        pos = nv1 > 0
        r = torch.where(pos, err / nv1, 0.0)                 # 0 where N·V₁ ≤ 0: those are exact or ∞ below
        bad = (pos | ((nv1 == 0) & (err == 0))).logical_not_().logical_or_(torch.isnan(err))
        maxima.append(torch.where(bad.any(), math.inf, r.amax()))
    # one host synchronisation for all parameters
    return max(0.0, float(torch.stack(maxima).amax())) if maxima else 0.0


def cancellation_ratio(eng: EngineOutput) -> float:
    """The V₁ error bound expressed as an amplification of the dtype's ε: max(1, v1_relative_error/ε).

    Kept for the callers that pass it to :class:`StatsResult` as ``cancellation`` (which turns it
    back into ``v1_rel_error`` = ε·ratio); ε ≥ any bound a computed value can beat, so the floor at
    1 loses nothing the flag uses.  1 when the engine did not compute V₁ (``keys=`` without it)."""
    if not all("nv1_err" in b for b in eng.parts.values()):   # V₁ not computed (keys=): nothing to bound
        return 1.0
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


def conditional_group_sums(values: Mapping[str, Mapping[str, torch.Tensor]],
                           members: Mapping[str, list[str]]) -> dict[str, dict[str, torch.Tensor]]:
    """group → key → Σ over the group's entries, per input (batch,), of a conditional result's values
    (tensors (batch, *param.shape)), plus ``n_params`` and the group's relative spreads √V_k/I
    (:func:`rel_sd` of the sums; THEORY §10).  The per-entry ``rel_sd*`` and ``prob_neg*`` keys are not
    additive and are left out.  One definition for :func:`~fishersym.numeric.conditional_stats` and
    :meth:`fishersym.symbolic.Derivation.evaluate`.

    >>> v = {"fisher": {"w": torch.ones(2, 3)}, "var1": {"w": torch.full((2, 3), 3.0)}}
    >>> g = conditional_group_sums(v, {"layer": ["w"]})["layer"]
    >>> int(g["n_params"]), g["fisher"].tolist(), g["rel_sd1"].tolist()      # √9 / 3 = 1
    (3, [3.0, 3.0], [1.0, 1.0])
    """
    out: dict[str, dict[str, torch.Tensor]] = {}
    fisher = values["fisher"]
    for g, names in members.items():
        d = {"n_params": torch.tensor(sum(fisher[n][0].numel() for n in names))}
        for k, per in values.items():
            if k.startswith(("rel_sd", "prob_neg")):
                continue
            parts = [per[n].reshape(per[n].shape[0], -1).sum(1) for n in names]
            total = parts[0]
            for t in parts[1:]:
                total = total + t
            d[k] = total
        for q in ("1", "2"):
            if f"var{q}" in d:
                d[f"rel_sd{q}"] = rel_sd(d[f"var{q}"], d["fisher"])
        out[g] = d
    return out


def rel_sd(v: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """√V / I with the 0/0 case defined: 0 where V = 0 and I = 0 (THEORY §10).

    I = uᵀΣu = 0 means Σ^½u = 0, hence (for V₁) uᵀr = 0 almost surely and N·V₁ = Var[(uᵀr)²] = 0,
    and (for V₂) the estimator's noise wᵀr can still be non-zero: V₂ > 0 = I gives +∞ (a spread
    infinitely larger than the value), never NaN.  A negative V (impossible for the exact value; the
    stable family forms never produce one) is read as 0 in the square root.

    >>> rel_sd(torch.tensor([4.0, 0.0, 1.0, -1.0]), torch.tensor([1.0, 0.0, 0.0, 2.0])).tolist()
    [2.0, 0.0, inf, 0.0]
    """
    if (torch.is_grad_enabled() and (v.requires_grad or i.requires_grad)) or v.shape != i.shape or v.dtype != i.dtype:
        num = v.clamp_min(0).sqrt()
        zero = (i == 0) & (num == 0)
        return torch.where(zero, torch.zeros_like(num), num / torch.where(zero, torch.ones_like(i), i))
    num = v.clamp_min(0).sqrt_()                     # the same values with fresh temporaries updated in place
    zero = (num == 0).logical_and_(i == 0)
    return num.div_(i).masked_fill_(zero, 0.0)


def add_derived(values: dict[str, dict[str, torch.Tensor]], keys: frozenset[str] | None = None) -> None:
    """Relative spreads √V/I (0/0 defined as 0, :func:`rel_sd`) and Cantelli's bound on
    P(Î₂ < 0) (THEORY §6 item 5, §10), for the variances present (and in ``keys`` when given)."""
    fisher = values["fisher"]
    for k in ("1", "2"):
        if f"var{k}" in values and (keys is None or f"rel_sd{k}" in keys):
            values[f"rel_sd{k}"] = {n: rel_sd(values[f"var{k}"][n], fisher[n]) for n in fisher}
    if "var2" in values and (keys is None or "prob_neg2_upper" in keys):
        values["prob_neg2_upper"] = {n: _cantelli(values["var2"][n], fisher[n]) for n in fisher}


def _cantelli(v: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """P(X ≤ E X − I) ≤ V/(V + I²) (one-sided Chebyshev); 0 when V = 0 and I > 0; NaN where V is NaN
    (an entry whose V₂ was not sampled, :func:`apply_sampling`)."""
    den = (i * i).add_(v)
    pos = den > 0
    out = torch.div(v, den.masked_fill_(~pos, 1.0), out=den).masked_fill_(~pos, 1.0)
    return out.masked_fill_(torch.isnan(v), math.nan)


# ---------------------------------------------------------------------------------------------------
# Sampled V₂ (issue 9 item 2c): exact values on a simple random sample of entries, estimated totals
# ---------------------------------------------------------------------------------------------------

#: per-entry keys that depend on w = ∂²h/∂θ² (THEORY §3, §5, §10): with a sampled V₂ they are exact
#: at the sampled entries and NaN at the others
W_KEYS = ("var2", "var2_lower", "var2_upper", "var2_lower_sharp", "var2_upper_sharp", "rel_sd2",
          "prob_neg2", "prob_neg2_upper")
#: keys whose group value is the sum of per-entry values: estimated from the sample (expansion estimator)
SAMPLED_TOTAL_KEYS = ("var2", "var2_lower", "var2_upper", "var2_lower_sharp", "var2_upper_sharp")
#: confidence level of the intervals reported by default (normal, with finite-population correction)
DEFAULT_LEVEL = 0.95
_NOT_CERTIFIED = ("a certified bound cannot be built from a sampled estimate of Σ‖w_i‖² (it would hold only "
                  "with the interval's probability); use v2='exact' for the group trace bounds of V₂")


def normal_quantile(level: float) -> float:
    """z with P(|Z| ≤ z) = level for a standard normal Z (two-sided)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"a confidence level must lie in (0, 1), got {level!r}")
    return NormalDist().inv_cdf(0.5 + level / 2)


def srs_estimate(vals: torch.Tensor, population: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Total over a population of ``population`` entries from the values ``vals`` (rows, n) at a simple
    random sample of n entries drawn without replacement (per row): the expansion estimator
    T̂ = P·v̄ and its standard error P·√((1 − n/P)·s²/n), s² the sample variance (n − 1 divisor);
    unbiased, and exact (s.e. 0) when n = P.  The one definition is
    :func:`fishersym.numeric.reverse._sample_estimate`'s (its ``sum`` and ``sum_stderr``)."""
    from .reverse import _sample_estimate
    if vals.shape[1] < 2 and vals.shape[1] < population:
        raise ValueError(f"a standard error needs at least 2 sampled entries, got {vals.shape[1]} of {population}")
    est = _sample_estimate(vals, population)
    return est["sum"], est["sum_stderr"]


@dataclass(frozen=True)
class Estimate:
    """A number estimated from a simple random sample of parameter entries (sampled V₂, issue 9 item 2c).

    ``value`` and ``stderr`` are tensors ((batch,) for conditional results, 0-d for data-set results).
    The interval at ``level`` is the normal one, value ± z·stderr (z the two-sided normal quantile);
    the standard error includes the finite-population correction (:func:`srs_estimate`).  For a
    quantity derived from a total by a monotone non-decreasing map g (``rel_sd2`` = √V₂/I), the
    interval is g applied to the total's interval (same coverage), and ``stderr`` is the delta method's
    g′·s.e. (NaN where g′ is undefined).  ``n_sampled`` entries of ``population`` were computed exactly
    (entries of tensors whose w was exact or proved zero count as sampled: they add no error).

    The normal interval is a large-sample approximation: for a skewed population of per-entry values
    it under-covers when the sample is small (measured on a tanh CNN with 36- and 144-entry weights,
    skewness ≈ 3.3, half of the entries sampled: 83–85 % coverage for a nominal 95 %).  ``normal_ok``
    is Cochran's rule generalised to a sum of independently sampled tensors (:func:`skew_ok`): the
    estimated skewness of the estimator is at most 1/5 (for one tensor: n ≥ 25·g₁², g₁ the
    population skewness).  When it is False the interval may cover less often than ``level`` says —
    sample more entries (``v2_sample``) or use v2="exact"."""

    value: torch.Tensor
    stderr: torch.Tensor
    n_sampled: int
    population: int
    level: float = DEFAULT_LEVEL
    base: Estimate | None = None
    transform: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    normal_ok: bool = True
    #: the estimated quantity is a sum of non-negative entries: the interval's lower end is clamped at 0
    nonnegative: bool = False

    def interval(self, level: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(lower, upper) of the normal confidence interval at ``level`` (default ``self.level``)."""
        level = self.level if level is None else level
        if self.base is not None:
            assert self.transform is not None       # a derived estimate has its map (apply_sampling)
            lo, hi = self.base.interval(level)
            return self.transform(lo), self.transform(hi)
        z = normal_quantile(level)
        lo = self.value - z * self.stderr
        if self.nonnegative:        # a total of non-negative entries (V₂ and its bounds) is ≥ 0
            lo = lo.clamp_min(0)
        return lo, self.value + z * self.stderr

    @property
    def lower(self) -> torch.Tensor:
        """The lower end of :meth:`interval` at ``self.level``."""
        return self.interval()[0]

    @property
    def upper(self) -> torch.Tensor:
        """The upper end of :meth:`interval` at ``self.level``."""
        return self.interval()[1]

    @property
    def mean(self) -> Estimate:
        """The mean over the ``population`` entries (total / population), with its standard error."""
        if self.base is not None:
            raise ValueError("the mean over entries is defined for estimated totals, not derived ratios")
        return Estimate(self.value / self.population, self.stderr / self.population, self.n_sampled,
                        self.population, self.level, normal_ok=self.normal_ok)

    def __repr__(self) -> str:
        v, se = self.value.double(), self.stderr.double()
        show = (f"{float(v):.6g} ± {float(se):.3g}" if v.numel() == 1
                else f"mean over inputs {float(v.mean()):.6g}, s.e. up to {float(se.max()):.3g}")
        return (f"Estimate({show} (s.e.), {self.level:.0%} normal interval, {self.n_sampled} of {self.population} "
                "entries exact" + ("" if self.normal_ok else "; normal interval not trusted (a tensor with fewer than "
                                                f"{MIN_SAMPLE_FOR_NORMAL} sampled entries or no spread, or Cochran's "
                                                "rule fails): it may under-cover")
                + ")")


def _cumulants(sample: torch.Tensor, population: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(κ₂, κ₃) of the expansion estimator P·v̄ of one tensor's total, per row, to leading order and
    without the finite-population factors (conservative): P²m₂/n and P³m₃/n² (m_k the sample's
    central moments)."""
    n = sample.shape[1]
    d = sample - sample.mean(1, keepdim=True)
    return population ** 2 * d.square().mean(1) / n, population ** 3 * d.pow(3).mean(1) / n ** 2


#: fewest sampled entries of a tensor for which the normal interval is trusted (``Estimate.normal_ok``);
#: below it the sample skewness that Cochran's rule reads is meaningless (n = 2 always gives m₃ = 0)
MIN_SAMPLE_FOR_NORMAL = 10


def skew_ok(k2: torch.Tensor, k3: torch.Tensor) -> bool:
    """Cochran's rule for the normal interval (Cochran 1977 §2.15): the skewness κ₃/κ₂^{3/2} of the
    estimator at most 1/5 in every row (for one simple random sample: n ≥ 25·g₁²).  Independent
    samples of several tensors add their cumulants, so a small or nearly constant tensor with few
    sampled entries does not spoil a total dominated by a well-sampled one."""
    pos = k2 > 0
    g = torch.where(pos, k3.abs() / k2.clamp_min(torch.finfo(k2.dtype).tiny).pow(1.5), torch.zeros_like(k2))
    return bool((g <= 0.2).all())


def estimate_total(parts: list[tuple[torch.Tensor, torch.Tensor | None]], level: float = DEFAULT_LEVEL) -> Estimate:
    """Total over the entries of several parameter tensors, each given as (values (rows, P_t), index):
    index None means every entry is exact (summed exactly, no error); otherwise the values are read at
    the flat entries ``index`` (a simple random sample, drawn independently per tensor) and the
    tensor's total is estimated by :func:`srs_estimate`.  Independent samples: the variances add."""
    total: torch.Tensor | None = None
    var: torch.Tensor | None = None
    n, pop = 0, 0
    # the estimator's cumulants, summed over the sampled tensors (0.0 while no tensor is sampled)
    k2: torch.Tensor | float = 0.0
    k3: torch.Tensor | float = 0.0
    small = False
    for vals, idx in parts:
        P = vals.shape[1]
        pop += P
        if idx is None:
            t, v = vals.sum(1), torch.zeros(vals.shape[0], dtype=vals.dtype, device=vals.device)
            n += P
        else:
            sample = vals.index_select(1, idx.to(vals.device))
            t, se = srs_estimate(sample, P)
            v = se * se
            if idx.numel() < P:
                c2, c3 = _cumulants(sample, P)
                k2, k3 = k2 + c2, k3 + c3
                # a sample too small to judge its skewness (two points always have m₃ = 0), or one
                # with no spread (s² = 0: a constant sample says nothing about the unsampled entries,
                # e.g. zeros from dead units beside a few large values): the interval is not trusted
                if idx.numel() < MIN_SAMPLE_FOR_NORMAL or bool((c2 == 0).any()):
                    small = True
            n += idx.numel()
        total = t if total is None else total + t
        var = v if var is None else var + v
    # k2 and k3 are updated together: both floats (nothing sampled) or both tensors
    ok = True if isinstance(k2, float) or isinstance(k3, float) else (skew_ok(k2, k3) and not small)
    assert total is not None and var is not None    # parts is non-empty (one tensor, or a group's members)
    return Estimate(total, var.sqrt(), n, pop, level, normal_ok=ok)


@dataclass
class SampledV2:
    """Where V₂ was sampled (issue 9 item 2c) and what was estimated from the sample.

    ``index``: parameter → flat indices of the entries whose w (hence every key of :data:`W_KEYS`) is
    exact; ``mask``: parameter → bool tensor of the parameter's shape, True where those keys are exact
    (all True for tensors whose w was proved zero or computed for every entry); ``tensors``: parameter
    → key → :class:`Estimate` of the key's sum over the tensor's entries (``.mean`` for the mean);
    ``groups``: group → key → :class:`Estimate` of the value in ``result.groups``; ``not_estimated``:
    "groups[g].key" → why that value is NaN."""

    index: dict[str, torch.Tensor]
    mask: dict[str, torch.Tensor]
    tensors: dict[str, dict[str, Estimate]]
    groups: dict[str, dict[str, Estimate]]
    not_estimated: dict[str, str]
    level: float = DEFAULT_LEVEL
    how: str = ""


def _flat(v: torch.Tensor, kind: str) -> torch.Tensor:
    return v.reshape(v.shape[0], -1) if kind == "conditional" else v.reshape(1, -1)


def _unrow(t: torch.Tensor, kind: str) -> torch.Tensor:
    return t if kind == "conditional" else t.reshape(())


def _rescale(e: Estimate, kind: str) -> Estimate:
    return Estimate(_unrow(e.value, kind), _unrow(e.stderr, kind), e.n_sampled, e.population, e.level,
                    normal_ok=e.normal_ok, nonnegative=True)   # V₂ and its bounds: sums of entries ≥ 0


def _rel_sd_of_total(t: torch.Tensor, fis: torch.Tensor) -> torch.Tensor:
    """``rel_sd2`` = √V₂/I of a V₂ group total ``t`` (read as ≥ 0) and the exact Fisher total ``fis``."""
    return rel_sd(t.clamp_min(0), fis)


def apply_sampling(values: dict[str, dict[str, torch.Tensor]], groups: dict[str, dict[str, torch.Tensor]],
                   members: dict[str, list[str]], index: dict[str, torch.Tensor], kind: str, how: str,
                   level: float = DEFAULT_LEVEL) -> tuple[SampledV2, dict[str, str]]:
    """Turn the NaN-holed group sums of a sampled-V₂ result into estimates (in place on ``groups``).

    ``values`` hold, for the sampled parameters (``index``), the keys of :data:`W_KEYS` exact at the
    sampled entries and NaN elsewhere.  For every group containing a sampled tensor: the keys of
    :data:`SAMPLED_TOTAL_KEYS` become :func:`estimate_total` estimates (exact tensors summed exactly);
    ``rel_sd2`` = √(Σ V₂)/Σ I becomes the monotone transform of the V₂ total's estimate (the Fisher
    total is exact); Corollary 4.6's ``trace_var2_*`` bounds become NaN (:data:`_NOT_CERTIFIED`).
    Returns the :class:`SampledV2` record and ``info["estimated"]`` ({where: description})."""
    z_desc = (f"{level:.0%} normal interval with finite-population correction, value ± "
              f"{normal_quantile(level):.4f}·s.e.")
    first = values["fisher"]
    masks = {}
    for n, v in first.items():
        shape = v.shape[1:] if kind == "conditional" else v.shape
        m = torch.ones(shape, dtype=torch.bool, device=v.device)
        if n in index:
            flat = torch.zeros(m.numel(), dtype=torch.bool, device=v.device)
            flat[index[n].to(v.device)] = True
            m = flat.reshape(shape)
        masks[n] = m
    tens: dict[str, dict[str, Estimate]] = {}
    for n, idx in index.items():
        tens[n] = {k: _rescale(estimate_total([(_flat(values[k][n], kind), idx)], level), kind)
                   for k in SAMPLED_TOTAL_KEYS if k in values}
    gest: dict[str, dict[str, Estimate]] = {}
    not_est: dict[str, str] = {}
    estimated: dict[str, str] = {}
    sampled_names = ", ".join(index)
    for k in W_KEYS:
        if k in values:
            estimated[k] = (f"per-entry values exact where result.v2_mask[name] is True; NaN at the entries "
                            f"not sampled of {sampled_names} (result.sampling.how says how they were drawn)")
    for g, names in members.items():
        if not any(n in index for n in names):
            continue
        d = groups[g]
        ge: dict[str, Estimate] = {}
        for k in SAMPLED_TOTAL_KEYS:
            if k in values and k in d:
                e = _rescale(estimate_total([(_flat(values[k][n], kind), index.get(n)) for n in names], level), kind)
                ge[k] = e
                d[k] = e.value
                estimated[f"groups[{g!r}].{k}"] = (
                    f"estimated sum over the group's {e.population} entries from {e.n_sampled} exact ones "
                    f"(simple random sample per tensor, expansion estimator); s.e. in "
                    f"result.standard_errors[{g!r}][{k!r}], {z_desc}: result.ci()[{g!r}][{k!r}]"
                    + ("" if e.normal_ok else
                       f"; normal interval not trusted (a tensor with fewer than {MIN_SAMPLE_FOR_NORMAL} "
                       "sampled entries or no spread, or estimated skewness of the estimator > 1/5, Cochran's "
                       "rule): the interval may cover less often than stated (sample more entries)"))
        if "var2" in ge and "rel_sd2" in d:
            fis = d["fisher"]
            base = ge["var2"]
            v = base.value
            val = rel_sd(v.clamp_min(0), fis)
            pos = (v > 0) & (fis > 0)
            se = torch.where(pos, base.stderr / (2 * v.clamp_min(0).sqrt() * fis).where(pos, torch.ones_like(v)),
                             torch.full_like(v, math.nan))
            ge["rel_sd2"] = Estimate(val, se, base.n_sampled, base.population, level, base=base,
                                     transform=functools.partial(_rel_sd_of_total, fis=fis),
                                     normal_ok=base.normal_ok)
            d["rel_sd2"] = val
            estimated[f"groups[{g!r}].rel_sd2"] = (
                "√(estimated Σ V₂)/Σ I (Σ I exact); interval = the same map applied to the V₂ total's interval "
                "(its lower end read as ≥ 0); s.e. by the delta method (NaN where Σ V₂ ≤ 0 or Σ I = 0)")
        for k in list(d):
            if k.startswith("trace_var2"):
                d[k] = torch.full_like(d[k], math.nan)
                not_est[f"groups[{g!r}].{k}"] = _NOT_CERTIFIED
        gest[g] = ge
    rec = SampledV2(index=dict(index), mask=masks, tensors=tens, groups=gest, not_estimated=not_est, level=level,
                    how=how)
    return rec, estimated


class StatsResult(Mapping):
    """Per-parameter results: ``result.fisher[name]``, ``result["var1"][name]``, … (a mapping of keys).

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
    :func:`conditional_stats` (⌈B/16⌉ on its reverse path), 8 per batch in :func:`dataset_stats`), and
    ``precision_lost`` is True when either number exceeds 1e-3.  It is None in float64 or with ``precision_check=0``.

    **Sampled V₂** (``v2="sample"`` on the reverse path, issue 9 item 2c).  ``sampling`` is a
    :class:`SampledV2` (None when every number is exact).  Then the per-entry keys of :data:`W_KEYS`
    are exact where ``v2_mask[name]`` is True and NaN elsewhere; the group values of those keys in
    ``groups`` are estimates with ``standard_errors[g][k]`` and ``ci(level)[g][k]`` (normal, with the
    finite-population correction); ``tensor_estimates[name][k]`` estimates each sampled tensor's sum
    (``.mean`` for the mean); ``info["estimated"]`` says key by key what is estimated and how, and
    ``info["not_estimated"]`` which values are NaN and why.  Every other number is exact.
    """

    def __init__(self, values: dict[str, dict[str, torch.Tensor]], *, kind: str, path: str, n_samples: int,
                 dtype: torch.dtype, cancellation: float, groups: dict[str, dict[str, torch.Tensor]],
                 group_members: dict[str, list[str]], info: dict | None = None,
                 v1_rel_error_measured: float | None = None, sampling: SampledV2 | None = None):
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
        self.sampling = sampling

    # sampled V₂ (issue 9 item 2c)
    @property
    def estimated(self) -> bool:
        """True when some numbers of this result are estimates (sampled V₂); see ``info["estimated"]``."""
        return self.sampling is not None

    @property
    def v2_mask(self) -> dict[str, torch.Tensor] | None:
        """parameter → bool tensor (param.shape): True where the keys of :data:`W_KEYS` are exact (None
        when every entry is exact)."""
        return None if self.sampling is None else self.sampling.mask

    @property
    def tensor_estimates(self) -> dict[str, dict[str, Estimate]]:
        """sampled parameter → key → :class:`Estimate` of the key's sum over the tensor's entries."""
        return {} if self.sampling is None else self.sampling.tensors

    @property
    def group_estimates(self) -> dict[str, dict[str, Estimate]]:
        """group → key → :class:`Estimate` of ``groups[g][k]`` (only the estimated values)."""
        return {} if self.sampling is None else self.sampling.groups

    @property
    def standard_errors(self) -> dict[str, dict[str, torch.Tensor]]:
        """group → key → standard error of the estimated ``groups[g][k]`` (absent keys are exact)."""
        return {g: {k: e.stderr for k, e in d.items()} for g, d in self.group_estimates.items()}

    def ci(self, level: float = DEFAULT_LEVEL) -> dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """group → key → (lower, upper) confidence interval at ``level`` of the estimated ``groups[g][k]``
        (normal, with the finite-population correction; :class:`Estimate`)."""
        return {g: {k: e.interval(level) for k, e in d.items()} for g, d in self.group_estimates.items()}

    def _sampled_reduce(self, key: str, name: str, reduce: str) -> tuple[float, float] | None:
        """(estimate, s.e.) of the mean or sum over a sampled tensor's entries (and the inputs) of a key
        of :data:`W_KEYS`, from the input-averaged per-entry values at the sampled entries (a simple
        random sample of any per-entry quantity estimates its mean); None when the key is exact here."""
        if self.sampling is None or key not in W_KEYS or name not in self.sampling.index:
            return None
        if reduce == "max":
            return math.nan, math.nan
        v = self._values[key][name].double()
        if self.kind == "conditional":   # rows reduce over the inputs too: sum or mean them first
            z = v.sum(0) if reduce == "sum" else v.mean(0)
        else:
            z = v
        e = estimate_total([(z.reshape(1, -1), self.sampling.index[name])])
        if reduce == "mean":
            e = e.mean
        return float(e.value[0]), float(e.stderr[0])

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
        """The analysed parameters' names (those of ``fisher``, in the model's order)."""
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
                        row[k] = float(d[k].double().mean()) if d[k].numel() else float("nan")
                        est = self.group_estimates.get(g, {}).get(k)
                        if est is not None:
                            row[f"{k}_se"] = self._group_row_se(g, k, est)
                rows.append(row)
            return rows
        reducers: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"mean": torch.mean, "sum": torch.sum,
                                                                        "max": torch.amax}
        red = reducers[reduce]
        for n in self.parameters:
            row = {"name": n, "shape": tuple(self._values["fisher"][n].shape[1 if self.kind == "conditional" else 0:])}
            for k in keys:
                sampled = self._sampled_reduce(k, n, reduce)
                if sampled is None:
                    row[k] = float(red(self._values[k][n].double()))
                else:
                    row[k], row[f"{k}_se"] = sampled
            rows.append(row)
        return rows

    def _group_row_se(self, g: str, k: str, est: Estimate) -> float:
        """s.e. of the input-averaged group value of a table row: the estimate's own s.e. for one input
        or a data-set result; for several inputs, a total key is re-estimated from the input-averaged
        per-entry values (the inputs share the sample, so their errors are correlated) and a derived
        key (rel_sd2, a non-linear map per input) has no s.e. (NaN)."""
        if est.value.numel() == 1:
            return float(est.stderr.reshape(-1)[0])
        if k not in SAMPLED_TOTAL_KEYS:
            return math.nan
        assert self.sampling is not None            # est is one of group_estimates: the result is sampled
        parts = [(self._values[k][n].double().mean(0).reshape(1, -1), self.sampling.index.get(n))
                 for n in self.group_members[g]]
        return float(estimate_total(parts).stderr[0])

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
            ", PRECISION LOST in V1 (use float64)" if self.precision_lost else "") + (
            f"; V2 SAMPLED: columns *_se are standard errors of estimates ({self.sampling.how})"
            if self.sampling is not None and any(c.endswith("_se") for c in cols) else "")
        return "\n".join([head, line(cols), line(["-" * w for w in widths])] + [line(c) for c in cells])

    def __repr__(self) -> str:
        return (f"StatsResult(kind={self.kind!r}, path={self.path!r}, n_samples={self.n_samples}, "
                f"parameters={len(self.parameters)}, keys={list(self._values)})")
