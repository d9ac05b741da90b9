"""The paper's properties as check functions (THEORY §2–§7).

Each ``check_*`` raises :class:`PropertyViolation` (an ``AssertionError``)
with a counterexample report — property, parameter, entry, input, both
sides of the (in)equality and the tolerance — and returns quietly when the
property holds.  They take a model, a family, a batch of inputs and N, so a
user can call them on any architecture the generic path handles; those that
need a structure (an MLP, a shift-invariant family, a small model) raise
:class:`NotApplicable` otherwise.

Tolerances: exact comparisons use a normwise relative tolerance ``rtol``
(|a − b| ≤ rtol·max|b| over the key, float64) with a floor at the key's
natural scale (rtol·max fisher_upper for I, rtol·max fisher_upper²/N for V₁,
rtol·max(var2_upper, fisher_upper²/N) for V₂: a quantity that is exactly 0, such as V₁ of a
Bernoulli at p = ½, otherwise has no scale of its own); Monte Carlo comparisons use a
CLT tolerance z·sd with sd from the *exact* variance (and exact fourth
moment, for sample variances) and z from a stated false-alarm probability
``alpha`` (default 1e-6 per check, Bonferroni over the comparisons made).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from statistics import NormalDist

import torch
from torch import nn
from torch.func import functional_call

from .. import activations as _act

from ..bounds.theorem41 import STAT_KEYS, bound_pairs, bound_violated
from ..families.base import ExponentialFamily
from ..families.links import Identity, Scale
from .brute import BRUTE_MAX_PARAMS, brute_force

__all__ = ["PropertyViolation", "NotApplicable", "check_closed_forms", "check_unbiased_exact",
           "check_monte_carlo", "check_bounds", "check_structural", "check_rescaling", "check_n_scaling",
           "check_nonnegative", "check_shift_invariance", "check_fast_generic", "check_symbolic_numeric",
           "z_value", "PROPERTIES"]


class PropertyViolation(AssertionError):
    """A property of the paper failed; the message is the counterexample report."""


class NotApplicable(Exception):
    """The property does not apply to this model/family (the reason is the message)."""


def z_value(alpha: float, comparisons: int = 1) -> float:
    """Two-sided normal quantile for a false-alarm probability ``alpha`` over ``comparisons`` (Bonferroni)."""
    return NormalDist().inv_cdf(1 - alpha / (2 * max(comparisons, 1)))


def _stats(model, x, family, n_samples=1, **kw):
    from ..numeric import conditional_stats
    return conditional_stats(model, x, family, n_samples, **kw)


def _sample_kw(v2_sample: int | None) -> dict:
    """conditional_stats options of a cross-path call: every w (None) or ``v2_sample`` entries per tensor."""
    return {} if v2_sample is None else {"v2": "sample", "v2_sample": v2_sample, "seed": 0}


def _where_exact(rs, key: str, name: str, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``values`` with the entries zeroed where ``rs`` (a v2='sample' result) has no exact V₂ (keys that
    read w: var2 and its bounds), so that a comparison covers exactly the sampled entries."""
    mask = rs.v2_mask
    if mask is None or not key.startswith("var2") or name not in mask:
        return values
    return {n: torch.where(mask[name].to(v.device), v, torch.zeros((), dtype=v.dtype)) for n, v in values.items()}


def _fmt_index(shape, flat: int) -> str:
    if not shape:
        return ""
    idx = []
    for s in reversed(shape):
        idx.append(flat % s)
        flat //= s
    return "[" + ", ".join(map(str, reversed(idx))) + "]"


def _violation(prop: str, model, x, name: str, shape, flat: int, b: int | None, lhs: tuple[str, float],
               rhs: tuple[str, float], tol: float, note: str = "") -> PropertyViolation:
    where = f"parameter {name}{_fmt_index(tuple(shape), flat)}"
    inp = f" at input #{b} = {x[b].flatten().tolist()}" if b is not None else ""
    msg = (f"[{prop}] {where}{inp}:\n    {lhs[0]} = {lhs[1]:.17g}\n    {rhs[0]} = {rhs[1]:.17g}\n"
           f"    |difference| = {abs(lhs[1] - rhs[1]):.3g}, tolerance {tol:.3g}"
           + (f"\n    {note}" if note else "") + f"\n  model: {model}" + _param_values(model))
    return PropertyViolation(msg)


def natural_floor(result, key: str, rtol: float) -> float:
    """rtol × the natural scale of ``key`` in a result (see the module docstring)."""
    def mx(k):
        if k not in result:
            return 0.0
        return max((float(v.abs().max()) for v in result[k].values() if v.numel()), default=0.0)
    if key.startswith("fisher"):
        return rtol * mx("fisher_upper")
    if key.startswith("var1"):
        return rtol * mx("fisher_upper") ** 2 / result.n_samples
    if key.startswith("var2"):  # Var(Î₂) of an estimator of I: I² is its absolute scale too
        return rtol * max(mx("var2_upper"), mx("fisher_upper") ** 2 / result.n_samples)
    return 0.0


def _param_values(model, limit: int = 60) -> str:
    """The parameter values, when the model is small enough to print them."""
    ps = [(n, p) for n, p in model.named_parameters()]
    if sum(p.numel() for _, p in ps) > limit:
        return ""
    return "\n  parameters: " + ", ".join(f"{n}={p.detach().tolist()}" for n, p in ps)


def _oracle_floor(bf, key: str, rtol: float, n_samples: int) -> float:
    """The natural-scale floor taken from the oracle's own values (not from the result under
    test): rtol·max I for I, rtol·(max I)²/N for the variances."""
    fmax = max((float(v.abs().max()) for v in bf.fisher.values() if v.numel()), default=0.0)
    return rtol * (fmax if key == "fisher" else fmax ** 2 / n_samples)


def _compare(prop: str, model, x, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
             labels: tuple[str, str], rtol: float, batched: bool = True, atol: float = 0.0) -> None:
    """|a − b| ≤ rtol·max|b| (over all parameters and inputs) + atol, entrywise."""
    scale = max((float(v.abs().max()) for v in b.values() if v.numel()), default=0.0)
    tol = rtol * scale + atol
    for name, bv in b.items():
        av = a[name]
        diff = (av - bv).abs()
        if bool((diff > tol).any()):
            flat = int(diff.reshape(-1).argmax())
            if batched:
                per = bv[0].numel()
                bi, fi = flat // per, flat % per
                shape = bv.shape[1:]
            else:
                bi, fi, shape = None, flat, bv.shape
            raise _violation(prop, model, x, name, shape, fi, bi,
                             (labels[0], float(av.reshape(-1)[flat])), (labels[1], float(bv.reshape(-1)[flat])), tol)


# --------------------------------------------------------------------------- exact
def check_closed_forms(model: nn.Module, family: ExponentialFamily, x: torch.Tensor, n_samples: int = 1,
                       rtol: float = 1e-9, result=None) -> None:
    """I, V₁, V₂ (Lemma 3.1 closed forms, THEORY §3) equal their definitions, and the exact
    P(Î₂ < 0) for discrete families with N = 1: label enumeration / quadrature (``brute``)."""
    _small(model)                       # before any computation: not applicable above the oracle's size
    r = result or _stats(model, x, family, n_samples)
    for b in range(x.shape[0]):
        bf = brute_force(model, x[b:b + 1], family, n_samples)
        for key in STAT_KEYS:
            _compare(f"{key} = definition", model, x[b:b + 1], {n: v[b:b + 1] for n, v in r[key].items()},
                     {n: v.unsqueeze(0) for n, v in getattr(bf, key).items()},
                     (f"{key} (closed form)", f"{key} (enumeration/quadrature)"), rtol,
                     atol=_oracle_floor(bf, key, rtol, n_samples))
        if bf.prob_neg2 is not None and "prob_neg2" in r and n_samples == 1:
            _compare("P(I2 < 0) = definition", model, x[b:b + 1], {n: v[b:b + 1] for n, v in r["prob_neg2"].items()},
                     {n: v.unsqueeze(0) for n, v in bf.prob_neg2.items()}, ("prob_neg2", "enumeration"), 1e-12,
                     atol=1e-12)


def check_unbiased_exact(model: nn.Module, family: ExponentialFamily, x: torch.Tensor, n_samples: int = 1,
                         rtol: float = 1e-9, result=None) -> None:
    """E[Î₁] = E[Î₂] = I(θ|x) = uᵀΣu, exactly (enumeration / quadrature of the labels; THEORY §2)."""
    _small(model)                       # before any computation: not applicable above the oracle's size
    r = result or _stats(model, x, family, n_samples)
    for b in range(x.shape[0]):
        bf = brute_force(model, x[b:b + 1], family, n_samples)
        closed = {n: v[b:b + 1] for n, v in r["fisher"].items()}
        fl = _oracle_floor(bf, "fisher", rtol, n_samples)
        _compare("E[I1] = I", model, x[b:b + 1], {n: v.unsqueeze(0) for n, v in bf.fisher.items()}, closed,
                 ("E[squared score]", "u^T Sigma u"), rtol, atol=fl)
        _compare("E[I2] = I", model, x[b:b + 1], {n: v.unsqueeze(0) for n, v in bf.fisher_hessian.items()}, closed,
                 ("E[negative Hessian]", "u^T Sigma u"), rtol, atol=fl)


def _small(model, why: str = "") -> None:
    """NotApplicable above BRUTE_MAX_PARAMS parameters: the label-space oracle forms full Hessians."""
    P = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if P > BRUTE_MAX_PARAMS:
        raise NotApplicable(f"{P} parameters: the exact label-space oracle needs full Hessians "
                            f"(at most {BRUTE_MAX_PARAMS}){why}; the cross-path properties (rescaling, "
                            "shift_invariance, fast_generic) check the engines against each other instead")


# --------------------------------------------------------------------------- Monte Carlo
def check_monte_carlo(model: nn.Module, family: ExponentialFamily, x: torch.Tensor, n_samples: int = 1,
                      reps: int = 4000, seed: int = 0, alpha: float = 1e-6, result=None) -> None:
    """The estimators as implemented (``fishersym.numeric.estimate``), replicated ``reps`` times
    on one input: sample mean of Î_k vs I (sd √(V_k/reps)), sample variance vs V_k (sd from the
    exact fourth central moment of Î_k, via the oracle), and Î₁ ≥ 0 surely.  False-alarm
    probability ≤ ``alpha`` (asymptotic normal, Bonferroni over all comparisons; for heavy-tailed
    Î_k, kurtosis above R/100, the variance comparison uses Chebyshev's bound instead, valid for
    any law)."""
    from ..numeric import estimate
    _small(model, ", and this check's tolerance needs its exact fourth moments")
    x1 = x[:1]
    r = result or _stats(model, x1, family, n_samples)
    bf = brute_force(model, x1, family, 1)
    P = sum(v.numel() for v in bf.fisher.values())
    z = z_value(alpha, 4 * P)
    cheb = math.sqrt(4 * P / alpha)
    N, R = n_samples, reps
    xs = x1.expand(R, *x1.shape[1:]).contiguous()
    g = torch.Generator().manual_seed(seed)
    for k, (est, mu4) in enumerate((("I1", bf.mu4_1), ("I2", bf.mu4_2)), start=1):
        assert mu4 is not None  # brute_force always fills mu4_1 and mu4_2
        draws = estimate(model, xs, family, est, n_samples=N, generator=g, per_input=True, progress=False)
        for name, d in draws.items():
            if est == "I1" and bool((d < 0).any()):
                flat = int((d < 0).reshape(-1).nonzero()[0])
                raise _violation("I1 >= 0", model, x1, name, d.shape[1:], flat % d[0].numel(), 0,
                                 ("I1 draw", float(d.reshape(-1)[flat])), ("0", 0.0), 0.0)
            I = r["fisher"][name][0]
            V = r[f"var{k}"][name][0]
            mean, var = d.mean(0), d.var(0)
            # mean of R draws: sd = sqrt(V/R)
            tol_m = z * (V / R).sqrt() + natural_floor(r, "fisher", 1e-10)
            bad = (mean - I).abs() > tol_m
            if bool(bad.any()):
                f = int(bad.reshape(-1).nonzero()[0])
                raise _violation(f"E[{est}] = I (Monte Carlo, alpha={alpha:g})", model, x1, name, I.shape, f, 0,
                                 (f"mean of {R} draws", float(mean.reshape(-1)[f])), ("I", float(I.reshape(-1)[f])),
                                 float(tol_m.reshape(-1)[f]))
            # sample variance of R draws (sd from μ₄(Î), below); for a mean of N i.i.d. terms
            # with per-label variance σ² = N·V and fourth central moment m4: μ₄(Î) = m4/N³ + 3(N−1)σ⁴/N³
            s2 = N * V
            mu4_hat = mu4[name] / N ** 3 + 3 * (N - 1) * s2 ** 2 / N ** 3
            # exact variance of the unbiased sample variance of R draws: μ₄/R − σ⁴(R−3)/(R(R−1))
            # (the leading (μ₄ − σ⁴)/R vanishes for symmetric two-point laws; the O(1/R²) term stays)
            var_sv = mu4_hat / R - V ** 2 * (R - 3) / (R * (R - 1))
            # heavy tails (kurtosis μ₄/V² above R/100: a handful of draws dominate the sample variance,
            # e.g. a Poisson output with a small rate) make the normal approximation unsafe: there the
            # tolerance is Chebyshev's, valid for any law, P(|s² − V| ≥ k·sd) ≤ 1/k² = alpha/(4P)
            heavy = mu4_hat > (R / 100.0) * V ** 2
            zz = torch.where(heavy, torch.full_like(V, cheb), torch.full_like(V, z))
            tol_v = zz * var_sv.clamp_min(0).sqrt() + natural_floor(r, f"var{k}", 1e-10)
            bad = (var - V).abs() > tol_v
            if bool(bad.any()):
                f = int(bad.reshape(-1).nonzero()[0])
                raise _violation(f"Var[{est}] = V{k} (Monte Carlo, alpha={alpha:g})", model, x1, name, V.shape, f, 0,
                                 (f"variance of {R} draws", float(var.reshape(-1)[f])),
                                 (f"V{k}", float(V.reshape(-1)[f])), float(tol_v.reshape(-1)[f]))


# --------------------------------------------------------------------------- bounds and structure
def check_bounds(model: nn.Module, family: ExponentialFamily, x: torch.Tensor, n_samples: int = 1,
                 rtol: float = 1e-9, result=None, optimised: bool = True) -> list[str]:
    """Every certified bound of THEORY §5 holds (lower ≤ value ≤ upper; paper-style and
    sharpened; :func:`fishersym.bounds.bound_violated` with tolerance rtol·max|·| plus the key's
    natural floor).  Returns a list of *reported* (not raised) violations of the optimised-λ̃
    bounds, which a local optimum may understate (THEORY §5)."""
    r = result or _stats(model, x, family, n_samples, optimised=optimised)
    reports = []
    for key, bk, side in bound_pairs(("", "_sharp", "_opt", "_sharp_opt")):
        if bk not in r:
            continue
        opt = bk.endswith("_opt")
        for name, val in r[key].items():
            bnd = r[bk][name]
            scale = float(max(val.abs().max(), bnd.abs().max()))
            tol = rtol * scale + natural_floor(r, key, rtol)
            bad = bound_violated(val, bnd, side, rtol=0.0, atol=tol)
            if bool(bad.any()):
                flat = int(bad.reshape(-1).nonzero()[0])
                per = val[0].numel()
                err = _violation(f"{bk} holds", model, x, name, val.shape[1:], flat % per, flat // per,
                                 (key, float(val.reshape(-1)[flat])), (bk, float(bnd.reshape(-1)[flat])), tol,
                                 "optimised lambda-tilde (may be a local optimum)" if opt else "")
                if opt:
                    reports.append(str(err))
                else:
                    raise err
    return reports


def last_layer_names(model: nn.Module) -> list[str]:
    """Parameters on which h is affine: the last Linear of an nn.Sequential (THEORY §6.1)."""
    if isinstance(model, nn.Sequential) and len(model) and isinstance(model[-1], nn.Linear):
        idx = str(len(model) - 1)
        return [f"{idx}.{n}" for n, p in model[-1].named_parameters() if p.requires_grad]
    return []


def _piecewise_linear(model: nn.Module) -> bool:
    """A Sequential of Linear/Flatten layers and piecewise-linear activations (the registry's flag)."""
    def pl(m: nn.Module) -> bool:
        if isinstance(m, (nn.Linear, nn.Flatten)):
            return True
        spec = _act.lookup(m)
        return spec is not None and _act.module_spec(m) is not None and spec.piecewise_linear
    return isinstance(model, nn.Sequential) and all(pl(m) for m in model)


def check_structural(model: nn.Module, family: ExponentialFamily, x: torch.Tensor, n_samples: int = 1,
                     result=None) -> None:
    """V₂ = 0 ≤ V₁ where THEORY §6 says so: the last layer (Remark 4.4), GLMs (one Linear) and
    piecewise-linear networks (§6.3, a.e.) — for a link that is linear in the raw output."""
    if not isinstance(family.link, (Identity, Scale)):
        raise NotApplicable(f"the link {family.link!r} is curved, so w ≠ 0 even in the last layer (THEORY §1)")
    names = last_layer_names(model)
    if _piecewise_linear(model):
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        why = "piecewise-linear network (THEORY §6.2-6.3)"
    else:
        why = "last layer (Remark 4.4)"
    if not names:
        raise NotApplicable("no parameter on which h is affine was identified "
                            "(needs an nn.Sequential ending in Linear)")
    r = result or _stats(model, x, family, n_samples)
    for name in names:
        v2, v1 = r["var2"][name], r["var1"][name]
        if bool((v2 != 0).any()):
            flat = int((v2 != 0).reshape(-1).nonzero()[0])
            per = v2[0].numel()
            raise _violation(f"V2 = 0 for the {why}", model, x, name, v2.shape[1:], flat % per, flat // per,
                             ("V2", float(v2.reshape(-1)[flat])), ("0", 0.0), 0.0)
        if bool((v1 < 0).any()):
            raise PropertyViolation(f"[V1 >= 0] parameter {name}: negative V1 {float(v1.min())}")


class _Rescaled(nn.Module):
    """θ_name = c·φ: the model with one parameter reparametrised (THEORY §6.4)."""

    def __init__(self, model: nn.Module, name: str, c: float):
        super().__init__()
        # the model is held outside the module tree: φ is this module's only parameter, so the
        # analysis differentiates with respect to φ alone (the others are constants here)
        object.__setattr__(self, "inner", model)
        self.name, self.c = name, c
        self.phi = nn.Parameter(dict(model.named_parameters())[name].detach().clone() / c)

    def forward(self, x):
        params = {k: v.detach() for k, v in self.inner.named_parameters()}
        params[self.name] = self.c * self.phi
        return functional_call(self.inner, params, (x,))


def check_rescaling(model: nn.Module, family: ExponentialFamily, x: torch.Tensor, n_samples: int = 1,
                    c: float = 2.5, rtol: float = 1e-9, result=None, v2_sample: int | None = None) -> None:
    """θ_i = c·φ_i multiplies I by c² and V₁, V₂ by c⁴, so V₂/V₁ and √V/I are invariant (THEORY §6.4).
    ``v2_sample``: V₂ of φ compared on that many sampled entries per tensor (exact there)."""
    r = result or _stats(model, x, family, n_samples)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # the reverse path (u by reverse mode, w proved zero or exact): independent of the fast path of r
        rs = _stats(_Rescaled(model, name, c), x, family, n_samples, path="reverse", prob_negative=False,
                    **_sample_kw(v2_sample))
        for key, power in (("fisher", 2), ("var1", 4), ("var2", 4)):
            a = _where_exact(rs, key, "phi", {name: rs[key]["phi"]})
            b = _where_exact(rs, key, "phi", {name: c ** power * r[key][name]})
            _compare(f"rescaling: {key}(phi) = c^{power} {key}(theta), c = {c}", model, x, a, b,
                     (f"{key}(phi)", f"c^{power} * {key}(theta)"), rtol, atol=c ** power * natural_floor(r, key, rtol))


def check_n_scaling(model: nn.Module, family: ExponentialFamily, x: torch.Tensor, n_samples: int = 7,
                    rtol: float = 1e-12, result=None) -> None:
    """V₁, V₂ scale as 1/N; I does not depend on N (THEORY §6.5)."""
    r1 = _stats(model, x, family, 1, prob_negative=False)
    rn = result if result is not None and result.n_samples == n_samples else _stats(model, x, family, n_samples,
                                                                                     prob_negative=False)
    for key in ("var1", "var2"):
        _compare(f"{key}(N) = {key}(1)/N, N = {n_samples}", model, x, {n: v * n_samples for n, v in rn[key].items()},
                 r1[key], (f"N * {key}(N)", f"{key}(1)"), rtol, atol=natural_floor(r1, key, rtol))
    _compare("I independent of N", model, x, rn["fisher"], r1["fisher"], ("I(N)", "I(1)"), rtol,
             atol=natural_floor(r1, "fisher", rtol))


def check_nonnegative(model: nn.Module, family: ExponentialFamily, x: torch.Tensor, n_samples: int = 1,
                      result=None) -> None:
    """I ≥ 0, V₁ ≥ 0, V₂ ≥ 0 (THEORY §6.5)."""
    r = result or _stats(model, x, family, n_samples)
    for key in STAT_KEYS:
        for name, v in r[key].items():
            if bool((v < 0).any()):
                flat = int((v < 0).reshape(-1).nonzero()[0])
                per = v[0].numel()
                raise _violation(f"{key} >= 0", model, x, name, v.shape[1:], flat % per, flat // per,
                                 (key, float(v.reshape(-1)[flat])), ("0", 0.0), 0.0)


class _Shifted(nn.Module):
    def __init__(self, model: nn.Module, c: float):
        super().__init__()
        self.inner, self.c = model, c

    def forward(self, x):
        return self.inner(x) + self.c


def check_shift_invariance(model: nn.Module, family: ExponentialFamily, x: torch.Tensor, n_samples: int = 1,
                           c: float = 3.0, rtol: float = 1e-9, result=None, v2_sample: int | None = None) -> None:
    """Adding a constant to all softmax logits changes nothing (THEORY §6.6).  The shifted model runs
    on the generic path, or with ``v2_sample`` on the reverse path with V₂ exact on that many sampled
    entries per tensor (compared there; I and V₁ everywhere)."""
    if not family.shift_invariant:
        raise NotApplicable(f"{family.name} is not shift-invariant (softmax only)")
    r = result or _stats(model, x, family, n_samples)
    rs = _stats(_Shifted(model, c), x, family, n_samples, path="generic" if v2_sample is None else "reverse",
                **_sample_kw(v2_sample))
    for key in STAT_KEYS + ("var1_upper", "var2_upper"):
        a, b = {f"inner.{n}": v for n, v in r[key].items()}, dict(rs[key].items())
        for n in list(a):
            a.update(_where_exact(rs, key, n, {n: a[n]}))
            b.update(_where_exact(rs, key, n, {n: b[n]}))
        _compare(f"softmax shift by {c}: {key}", model, x, a, b, (f"{key}(h)", f"{key}(h + c)"), rtol,
                 atol=natural_floor(r, key, rtol))


def check_fast_generic(model: nn.Module, family: ExponentialFamily, x: torch.Tensor, n_samples: int = 1,
                       rtol: float = 1e-10, result=None, v2_sample: int | None = None) -> None:
    """The factored MLP path (THEORY §7) equals the generic torch.func path; with ``v2_sample``, the
    reverse path with w exact on that many sampled entries per tensor (V₂ compared there)."""
    from ..numeric.mlp import plan_mlp
    plan, reason = plan_mlp(model, family)
    if plan is None:
        raise NotApplicable(f"fast path not applicable: {reason}")
    other = "generic" if v2_sample is None else "reverse"
    rf = _stats(model, x, family, n_samples, path="fast")
    rg = _stats(model, x, family, n_samples, path=other, **_sample_kw(v2_sample))
    for key in STAT_KEYS + ("var1_upper", "var2_upper", "fisher_upper"):
        a, b = dict(rf[key].items()), dict(rg[key].items())
        for n in list(a):
            a.update(_where_exact(rg, key, n, {n: a[n]}))
            b.update(_where_exact(rg, key, n, {n: b[n]}))
        _compare(f"fast path = {other} path: {key}", model, x, a, b, ("fast", other), rtol,
                 atol=natural_floor(rg, key, rtol))


def symbolic_spec(model: nn.Module) -> tuple[list[int], list] | None:
    """(widths, activation specs) when ``model`` is a Sequential MLP the symbolic engine can express."""
    if not isinstance(model, nn.Sequential) or not isinstance(model[0], nn.Linear):
        return None
    widths, acts = [model[0].in_features], []
    expect_linear = True
    for m in model:
        if expect_linear:
            if not isinstance(m, nn.Linear) or m.bias is None:
                return None
            widths.append(m.out_features)
        else:
            ms, entry = _act.module_spec(m), _act.lookup(m)
            if ms is None or entry is None or type(m) in entry.eval_types:
                return None
            name, params = ms
            spec = _act.get(name)
            if spec.sympy_refuses is not None and spec.sympy_refuses(**params):
                return None
            acts.append((name, *params.values()) if params else name)
        expect_linear = not expect_linear
    if expect_linear:  # ends in an activation
        return None
    return widths, acts


def check_symbolic_numeric(model: nn.Module, family: ExponentialFamily, x: torch.Tensor, n_samples: int = 1,
                           rtol: float = 1e-10, result=None, max_params: int = 40) -> None:
    """SymPy's closed forms (fishersym.symbolic) evaluated at the model equal the numeric engine.

    :class:`NotApplicable` when the model is no Sequential MLP the engine expresses, is too large,
    or is refused by :func:`fishersym.symbolic.evaluate.check_architecture` (a Linear used twice,
    tied weights, hooks, parametrizations: the per-layer derivation does not model them)."""
    spec = symbolic_spec(model)
    if spec is None:
        raise NotApplicable("the symbolic engine expresses nn.Sequential MLPs of Linear and supported activations")
    P = sum(p.numel() for p in model.parameters())
    if P > max_params:
        raise NotApplicable(f"{P} parameters > {max_params}: symbolic derivation skipped (size)")
    from .. import symbolic
    from ..symbolic.evaluate import check_architecture
    widths, acts = spec
    net = symbolic.mlp(widths, acts if acts else "identity")
    try:  # before deriving: a shared/tied Linear, hooks or parametrizations pass symbolic_spec (issue 13)
        check_architecture(net, model)
    except ValueError as exc:
        raise NotApplicable(f"the symbolic derivation does not model this network: {exc}") from exc
    D = symbolic.derive(net, family, n_samples=n_samples)
    sym = D.evaluate(model, x, n_samples=n_samples, optimised=False)
    r = result or _stats(model, x, family, n_samples)
    for key in STAT_KEYS + ("fisher_upper", "var1_upper", "var2_upper"):
        _compare(f"symbolic = numeric: {key}", model, x, sym[key], r[key], ("symbolic", "numeric"), rtol,
                 atol=natural_floor(r, key, rtol))


#: name → (check, needs a float64 model) in the order check_model runs them
PROPERTIES: dict[str, Callable] = {
    "closed_forms": check_closed_forms,
    "unbiased": check_unbiased_exact,
    "monte_carlo": check_monte_carlo,
    "bounds": check_bounds,
    "structural": check_structural,
    "rescaling": check_rescaling,
    "n_scaling": check_n_scaling,
    "nonnegative": check_nonnegative,
    "shift_invariance": check_shift_invariance,
    "fast_generic": check_fast_generic,
    "symbolic_numeric": check_symbolic_numeric,
}
