"""Poisson output with log link, one independent Poisson per output; THEORY §4 row 4.

h = log λ, t(y) = y ∈ ℕ^C, F(h) = Σ_c e^{h_c}, Σ = diag(λ); all cumulants of
a Poisson equal λ, so κ₄(u,u,u,u) = Σ_c λ_c u_c⁴ and

    N·V₁ = Σ_c λ_c u_c⁴ + 2(Σ_c λ_c u_c²)²      ((λ + 2λ²)u⁴ for C = 1),
    N·V₂ = Σ_c λ_c w_c².

Constants (derived here, checked by the tests): with x_c = v_c² on the simplex,
λ̃_max(M) = λ_max + 2λ_max² and λ̃_max(K) = λ_max + 3λ_max² (attained on the
axis of the largest rate); λ̃_min(M) ≥ λ_min/C + 2λ_min², λ̃_min(K) ≥ λ_min/C + 3λ_min².

Numerics (issue 13 items 16, 18, 20).  λu² and λu⁴ are evaluated as (e^{h/2}u)² and
(e^{h/4}u)⁴: sums of non-negative terms with small relative error, and no intermediate
overflows unless the true value does.  Where a result is not representable in the dtype
(λ = e^h beyond the largest float: h > 709.78 in float64, h > 88.72 in float32; λ² in the
constants: h > 354.9 / 44.4) a ValueError names the quantity, the overflow and the fix;
nothing returns inf or NaN from finite input.  The support enumeration solves its Chernoff
bounds by bisection (bounded work for any rate) and refuses grids that are too large
before allocating them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import sympy as sp
import torch
from typing_extensions import override

from .base import ExponentialFamily, Support, batch_shape
from .links import Link, get_link, positive_count, require_finite

__all__ = ["Poisson", "chernoff_window", "MAX_SUPPORT_POINTS"]

#: largest joint support grid the enumeration builds
MAX_SUPPORT_POINTS = 2_000_000

_HINT_RATE = ("Keep the log-rates smaller (e.g. rescale the counts or add a bias to the output layer), "
              "or compute in float64 (model.double()) if you are in float32.")


def _phi(d: float) -> float:
    """φ(δ) = (1+δ)log(1+δ) − δ ≥ 0 for δ ≥ −1 (λφ(k/λ − 1) is the Poisson Chernoff exponent);
    a series near 0 avoids the cancellation."""
    if d <= -1.0:
        return 1.0
    if abs(d) < 1e-3:
        return d * d * (0.5 - d / 6 + d * d / 12 - d ** 3 / 20 + d ** 4 / 30)
    return (1 + d) * math.log1p(d) - d


def _solve_phi(target: float, upper: bool) -> float:
    """δ with φ(δ) ≥ target (δ > 0 when ``upper``, else δ ∈ (−1, 0) and target < 1), by bisection:
    the returned end of the bracket always satisfies φ(δ) ≥ target.  At most ~2200 steps."""
    if upper:
        lo, hi = 0.0, 1.0
        while _phi(hi) < target:  # φ(δ) ≥ δ + 2 for δ ≥ e² − 1: at most ~1030 doublings (target finite)
            hi *= 2.0
    else:
        lo, hi = -1.0, 0.0      # φ decreasing on (−1, 0): the answer lies near −1 … 0
    for _ in range(2200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        ok = _phi(mid) >= target
        if upper:
            lo, hi = (lo, mid) if ok else (mid, hi)
        else:
            lo, hi = (mid, hi) if ok else (lo, mid)
    return hi if upper else lo


def chernoff_window(lam: float, log_share: float) -> tuple[int, int]:
    """Integers (lo, hi) with P(Y < lo) ≤ e^{log_share} and P(Y > hi) ≤ e^{log_share} for
    Y ~ Poisson(λ), from the Chernoff bounds P(Y ≥ k) ≤ e^{−λφ(k/λ−1)} (k > λ) and
    P(Y ≤ k) ≤ e^{−λφ(k/λ−1)} (k < λ), solved by bisection in δ = k/λ − 1 (bounded work
    for every λ: no loop over k).  ``log_share`` < 0."""
    if not (lam >= 0 and math.isfinite(lam)):
        raise ValueError(f"poisson: rate λ = {lam!r} must be finite and ≥ 0")
    if lam <= math.exp(log_share):              # P(Y ≥ 1) = 1 − e^{−λ} ≤ λ ≤ share
        return 0, 0
    target = -log_share / lam                   # need λφ(δ) ≥ −log_share
    d_hi = _solve_phi(target, upper=True)
    slack = 4 * 2.0 ** -52 * lam + 1.0          # covers the rounding of λ ± λ|δ| (float64)
    K = math.ceil(lam + lam * d_hi + slack)     # P(Y ≥ K) ≤ share (the bound decreases beyond λ)
    hi = K - 1
    if target >= 1.0:                           # e^{−λ} > share: the lower tail cannot be cut
        return 0, hi
    d_lo = _solve_phi(target, upper=False)
    k = math.floor(lam + lam * d_lo - slack)    # P(Y ≤ k) ≤ share (the bound increases below λ)
    return max(0, k + 1), hi


def _rate_hint(h: torch.Tensor) -> str:
    return f"The largest log-rate is {float(h.max()):.6g}; {_HINT_RATE}"


class Poisson(ExponentialFamily):
    """Poisson output with log link, one independent Poisson per output; THEORY §4 row 4.

    h = log λ, F(h) = Σ_c e^{h_c}, Σ = diag(λ) (module docstring).

    Args:
        C: the number of outputs (a positive integer).
        link: the link from the network's outputs o to h = log λ (default: the identity, h = o).
    """

    name = "poisson"
    discrete = True

    @classmethod
    def param_strategy(cls, max_classes: int = 5):
        """C ∈ {1, 2} (the oracle enumerates a joint grid of counts)."""
        from hypothesis import strategies as st
        return st.fixed_dictionaries({"C": st.integers(1, 2)})

    def __init__(self, C: int = 1, link: str | Link | None = None):
        C = positive_count(C, "C", "poisson")
        super().__init__(C, get_link(link, None) if link is not None else None)

    @override
    def log_partition_sym(self, h: Sequence[sp.Expr]) -> sp.Expr:
        return sp.Add(*[sp.exp(hi) for hi in h])

    @override
    def mean_params_sym(self) -> dict[sp.Expr, sp.Expr]:
        if self.C == 1:
            return {self.h_sym[0]: sp.log(sp.Symbol("lambda", positive=True))}
        return {ha: sp.log(sp.Symbol(f"lambda_{a + 1}", positive=True)) for a, ha in enumerate(self.h_sym)}

    # numeric closed forms
    def rate(self, h: torch.Tensor) -> torch.Tensor:
        """λ = e^h, with a ValueError (not inf) where e^h overflows the dtype."""
        return require_finite(torch.exp(h), "the rate λ = e^h", self.name,
                              lambda: _rate_hint(h))

    @override
    def log_partition(self, h: torch.Tensor) -> torch.Tensor:
        return torch.exp(h).sum(-1)

    @override
    def mean(self, h: torch.Tensor) -> torch.Tensor:
        return self.rate(h)

    @override
    def sigma(self, h: torch.Tensor) -> torch.Tensor:
        return torch.diag_embed(self.rate(h))

    @staticmethod
    def _h(h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return h.unsqueeze(-2) if u.dim() == h.dim() + 1 else h

    def sigma_quad(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """uᵀΣu = Σ_c (e^{h_c/2}u_c)² (THEORY §4)."""
        return (torch.exp(0.5 * self._h(h, u)) * u).square().sum(-1).expand(batch_shape(h, u))

    def kappa4(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """κ₄(u,u,u,u) = Σ_c (e^{h_c/4}u_c)⁴."""
        return (torch.exp(0.25 * self._h(h, u)) * u).square().square().sum(-1).expand(batch_shape(h, u))

    @override
    def m4(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.kappa4(h, u) + 3 * self.sigma_quad(h, u).square()

    @override
    def mquad(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.kappa4(h, u) + 2 * self.sigma_quad(h, u).square()

    def quad_forms(self, h: torch.Tensor, u: torch.Tensor, cdim: int = -1, moments: bool = True,
                   error: bool = False):
        """(uᵀΣu, N·V₁ = Σλu⁴ + 2(Σλu²)²[, err]) in one pass (THEORY §3, §4).

        Every term is non-negative: λu² = (e^{h/2}u)² has relative error ≤ 7ε (exp ≤ 2 ulp,
        the product, the square), λu⁴ = (e^{h/4}u)⁴ ≤ 15ε, a sum of C terms adds (C − 1)ε,
        so ``error=True`` returns err = (2C + 16)·ε·N·V₁, a first-order bound on
        |computed − exact N·V₁| (gradual underflow aside).  A ValueError
        names the value where N·V₁ overflows the dtype.
        """
        if cdim == 1:
            u = u.transpose(-1, -2)
        hh = self._h(h, u)
        fi = (torch.exp(0.5 * hh) * u).square().sum(-1).expand(batch_shape(h, u))
        if not moments:
            return (fi, None, None) if error else (fi, None)
        k4 = (torch.exp(0.25 * hh) * u).square().square().sum(-1).expand(batch_shape(h, u))
        nv1 = k4 + 2 * fi.square()
        require_finite(nv1, "N·V₁ = Σλu⁴ + 2(Σλu²)²", self.name,
                       lambda: _rate_hint(h))
        if not error:
            return fi, nv1
        return fi, nv1, (2 * self.C + 16) * torch.finfo(nv1.dtype).eps * nv1

    @override
    def sample(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        h = self.check_h(h)
        lam = self.rate(h)
        if bool((lam > 2.0 ** 62).any()):
            raise ValueError(f"poisson: cannot sample rates above 2^62 ≈ 4.6e18 (largest λ = {float(lam.max()):.3g}): "
                             "torch.poisson counts in int64 and returns garbage there. " + _HINT_RATE)
        return torch.poisson(lam.expand(n, *h.shape).contiguous(), generator=generator)

    def check_statistic(self, t: torch.Tensor) -> torch.Tensor:
        """Observed counts must be non-negative integers (t(y) = y)."""
        t = super().check_statistic(t)
        bad = (t < 0) | (t != t.round())
        if bad.any():
            raise ValueError(f"poisson: observed labels must be counts (non-negative integers), got "
                             f"{t[bad].reshape(-1)[:3].tolist()}")
        return t

    @override
    def log_base_measure(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.lgamma(t + 1).sum(-1)

    def log_prob(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """log p(y|h) = Σ_c [y_c h_c − λ_c − log y_c!] in Loader's saddle-point form (the form of
        R's dpois).

        For y ≥ 1,

            log p = −λφ(δ) − stirlerr(y) − ½log(2πy),   δ = (y − λ)/λ,     log p(0) = −λ,

        with φ(δ) = (1+δ)log1p(δ) − δ and stirlerr(y) = log y! − (y+½)log y + y − ½log 2π (its
        asymptotic series for y > 30).  The naive form subtracts terms of size y·h and loses
        ~log₁₀(y·h) digits at large rates; in this one the cancellation in φ costs an absolute
        error of only a few ε·|y − λ| (tested against mpmath).  Twice differentiable in h (the
        brute-force oracle differentiates it by autograd)."""
        lam = torch.exp(h)
        k = t if t.is_floating_point() else t.to(lam.dtype)
        pos = k > 0
        ks = torch.where(pos, k, torch.ones_like(k))        # y = 0 handled at the end
        d = (ks - lam) / lam                                 # > −1 since ks ≥ 1
        phi = (1 + d) * torch.log1p(d) - d
        big = ks > 30
        kb = torch.where(big, ks, torch.full_like(ks, 31.0))
        r2 = (kb * kb).reciprocal()
        st_big = (1 / 12 - r2 * (1 / 360 - r2 * (1 / 1260 - r2 / 1680))) / kb
        kl = torch.where(big, torch.ones_like(ks), ks)
        st_small = torch.lgamma(kl + 1) - (kl + 0.5) * torch.log(kl) + kl
        stir = torch.where(big, st_big, st_small - 0.5 * math.log(2 * math.pi))
        lp_pos = -lam * phi - stir - 0.5 * torch.log(2 * math.pi * ks)
        return torch.where(pos, lp_pos, -lam).sum(-1)

    def support(self, h: torch.Tensor, tail: float = 1e-15) -> Support:
        """Joint grid ∏_c {lo_c..hi_c} with P(y outside) ≤ ``tail`` for every input.

        Per coordinate, a mass of at most tail/(2C) is cut on each side, at the Chernoff
        quantiles of :func:`chernoff_window` for the smallest (lower end) and the largest
        (upper end) rate over the batch (both quantiles grow with λ).  Bounded work for every
        rate; a ValueError, before anything is allocated, when the grid would exceed
        ``MAX_SUPPORT_POINTS`` or when counts are not exact integers in the dtype.
        """
        if not (0 < tail < 1):
            raise ValueError(f"poisson: the truncation mass tail must lie in (0, 1), got {tail!r}")
        h = self.check_h(h)
        hf = h.detach().to(torch.float64).reshape(-1, self.C)
        if hf.shape[0] == 0:
            raise ValueError("poisson: cannot enumerate the support of an empty batch")
        log_share = math.log(tail / (2 * self.C))
        mant = round(-math.log2(torch.finfo(h.dtype).eps)) + 1   # 53 (float64), 24 (float32)
        exact_int = 2.0 ** mant
        ranges, n_points = [], 1
        for c in range(self.C):
            hmin, hmax = float(hf[:, c].min()), float(hf[:, c].max())
            if hmax > 700.0:
                raise ValueError(f"poisson: rate λ = e^{hmax:.6g} is too large for its support to be enumerated "
                                 f"(a window of about 2·sqrt(2λ·{-log_share:.0f}) counts); use smaller rates")
            lo = chernoff_window(math.exp(hmin), log_share)[0]
            hi = chernoff_window(math.exp(hmax), log_share)[1]
            ranges.append((lo, hi))
            n_points *= hi - lo + 1
        if n_points > MAX_SUPPORT_POINTS:
            sizes = " × ".join(f"{b - a + 1:.3g}" for a, b in ranges)
            raise ValueError(f"poisson: the support grid ({sizes} = {n_points:.3g} points for mass ≤ {tail:g} "
                             f"outside) exceeds {MAX_SUPPORT_POINTS} points; use fewer outputs or smaller rates")
        top = max(b for _, b in ranges)
        if top >= exact_int:
            raise ValueError(f"poisson: the support reaches count {top}, beyond 2^{mant} where {h.dtype} no "
                             "longer holds every integer; compute in float64 (model.double()) or use smaller rates")
        grids = [torch.arange(a, b + 1, dtype=h.dtype, device=h.device) for a, b in ranges]
        t = torch.cartesian_prod(*grids).reshape(-1, self.C)
        logp = self.log_prob(t, h.unsqueeze(-2))
        return Support(t, logp, tail)

    def moment_tensors(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Σ, κ₄, M₄) in closed form: κ₄ = λ on the diagonal a=b=c=d; M₄ as in the base class.
        A ValueError where λ or λ² overflows (the Σ⊗Σ pairings of M₄)."""
        k4 = self.kappa4_tensor(h)
        S = torch.diag_embed(self.rate(h))
        m4 = (k4 + torch.einsum("...ab,...cd->...abcd", S, S)
              + torch.einsum("...ac,...bd->...abcd", S, S)
              + torch.einsum("...ad,...bc->...abcd", S, S))
        require_finite(m4, "the fourth central moment M₄ (it contains λ²)", self.name,
                       lambda: _rate_hint(h))
        return S, k4, m4

    def kappa4_tensor(self, h: torch.Tensor) -> torch.Tensor:
        """κ₄ = ∇⁴F = diag4(λ): κ₄_abcd = λ_a if a = b = c = d, else 0 (F = Σ_c e^{h_c}, THEORY §4
        row 4), shape (..., C, C, C, C).  Closed form (no nested jacfwd); needs only λ = e^h
        representable (a ValueError otherwise), not λ² as M₄ does."""
        lam = self.rate(h)
        C = self.C
        k4 = h.new_zeros((*h.shape[:-1], C, C, C, C))
        idx = torch.arange(C, device=h.device)
        k4[..., idx, idx, idx, idx] = lam
        return k4

    @override
    def closed_form_constants(self, h: torch.Tensor, restricted: bool = False,
                              sigma_max: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if restricted:
            return {}
        lam = self.rate(h)
        lmax, lmin = lam.max(-1).values, lam.min(-1).values
        out = {"sigma_min": lmin, "sigma_max": lmax,
               "M_max": lmax + 2 * lmax.square(), "K_max": lmax + 3 * lmax.square(),
               "M_min_lower": lmin / self.C + 2 * lmin.square(),
               "K_min_lower": lmin / self.C + 3 * lmin.square()}
        require_finite(out["K_max"], "λ̃_max(K) = λ_max + 3λ_max²", self.name,
                       lambda: _rate_hint(h))
        return out
