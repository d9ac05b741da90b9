"""Trace-variance bounds per parameter group (THEORY §5: Theorem D.1, Corollary 4.6).

For a group of parameters with Jacobian J = ∂h/∂θ (C × P), columns u_i, and
diagonal second derivatives w_i:

    tr I = Σ_i u_iᵀΣu_i = tr(Σ JJᵀ),
    N·Σ_i V₁ = Σ_i (u_i⊗u_i)ᵀ M̄ (u_i⊗u_i) = tr(M̄ UUᵀ),   U = [vec(u_i u_iᵀ)]_i (C² × P),
    N·Σ_i V₂ = tr(Σ WWᵀ),   W = [w_i]_i.

**Theorem D.1** (Ruhe's trace inequality: for symmetric A, B with eigenvalues
α, β in decreasing order, Σ_t α_t β_{n−t+1} ≤ tr(AB) ≤ Σ_t α_t β_t) applied to
each pair.  UUᵀ lives on the symmetric subspace Sym² of ℝ^C⊗ℝ^C, so M̄ and
UUᵀ are compressed to Sym² (dimension C(C+1)/2) first; this is the same
inequality on a smaller space and only tightens the lower bound.

**Corollary 4.6** (our derivation; the printed form in our copy of the paper is
garbled, THEORY §5).  Only the Frobenius norms ‖J‖_F² = Σ_i‖u_i‖² and
Σ_i‖w_i‖² are needed:

    λ_min(Σ)‖J‖_F² ≤ tr I ≤ λ_max(Σ)‖J‖_F²,
    λ̃_min(M)‖J‖_F⁴ / P ≤ N·Σ_i V₁ ≤ λ̃_max(M)‖J‖_F⁴,
    λ_min(Σ)Σ_i‖w_i‖² ≤ N·Σ_i V₂ ≤ λ_max(Σ)Σ_i‖w_i‖².

Proof: sum Theorem 4.1 over i, then (Σ_i‖u_i‖²)²/P ≤ Σ_i‖u_i‖⁴ ≤ (Σ_i‖u_i‖²)²
(Cauchy–Schwarz, and non-negative cross terms).  The tests check every
inequality on random models against the exact traces.

**Floating-point soundness** (issue 13 items 2, 16, 22).  Every bound is widened outward so that it
holds for the *computed* statistics (ε: unit roundoff ×2 of the inputs' dtype, ``finfo.eps``):

* Theorem D.1.  (i) The Sym² compression SᵀAS uses S̃ = S·D with D diagonal, |D − 1| ≤ ε (the rounded
  1/√2), so λ(S̃ᵀAS̃) = θλ(SᵀAS) with θ ∈ [(1−ε)², (1+ε)²] (Ostrowski); the two products have ≤ 2
  non-zero terms per inner sum, entrywise error ≤ γ₄·(|S|ᵀ|A||S|), Frobenius ≤ γ₄‖A‖_F (S has orthonormal
  columns): together ≤ 16ε‖A‖_F per eigenvalue (Weyl), added to :func:`eig_margin`.  (ii) A Gram input
  B̂ = Σ_i v̂_i v̂_iᵀ summed over ``n_terms`` = P rank-one terms (entries of v̂ rounded products) differs
  from the exact one by ‖Δ‖_F ≤ γ_{P+4}·tr B̂ (entrywise ≤ γ·Σ|v_i||v_i|ᵀ, whose Frobenius norm is
  ≤ Σ‖v_i‖²); Ruhe's sums are Lipschitz in the spectrum, |Σα_t(β_t − β'_t)| ≤ max|α|·‖Δ‖_* ≤
  max|α|·√n‖Δ‖_F (Lidskii), which is added to the slack (``n_terms=None``: B̂ is taken as exact).
  (iii) The sums Σ_t α_tβ_t of n products: error ≤ γ_{n+1}Σ_t|α_tβ_t|.  (iv) The slack is an
  over-estimate by a factor ≥ 8 (eig_margin), so its own rounding is covered; the final subtraction,
  addition and the division by N add ≤ 3 roundings: widened by 4ε relative.
* Corollary 4.6.  ‖J‖_F² and Σ‖w_i‖² are sums of P non-negative rounded terms (relative error ≤
  γ_{P+2}); the bounds are products of ≤ 4 rounded factors: every bound is widened by (P + 8)ε relative,
  the V₁ forms (‖J‖_F⁴) by (2P + 16)ε.
* Theorem D.1, the compared statistic.  The statistic compared with the bound is itself rounded
  (per-parameter terms with relative error ≤ (C + 8)ε, constants.py): every D.1 bound is widened by
  ``INPUT_ROUNDING``·(C + 8)ε relative (a lower bound lo ≥ 0 then satisfies lo·(1 − kε) ≤ V(1 − kε) ≤ V̂;
  an upper bound likewise).  The inputs M̄ and Σ must be accurate to that order: families give them in
  stable forms (e.g. ``Bernoulli.mbar`` = σ(h)σ(−h)tanh²(h/2), issue 13 item 16).  (Corollary 4.6's
  certified constants carry this widening already.)
"""
from __future__ import annotations

import torch

from ..families.constants import INPUT_ROUNDING, FamilyConstants, eig_margin, sym_basis

__all__ = ["ruhe_bounds", "theorem_d1", "corollary46", "TRACE_KEYS"]

TRACE_KEYS = ("trace_fisher", "trace_var1", "trace_var2")


def _eps(t: torch.Tensor) -> float:
    return torch.finfo(t.dtype).eps


def _widen(lo: torch.Tensor, hi: torch.Tensor, rel: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo − rel·|lo|, hi + rel·|hi|): outward by ``rel`` relative."""
    return lo - rel * lo.abs(), hi + rel * hi.abs()


def ruhe_bounds(A: torch.Tensor, B: torch.Tensor, margin_a: torch.Tensor | float = 0.0,
                margin_b: torch.Tensor | float = 0.0, gram_terms: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower, upper) of tr(AB) for symmetric A, B (..., n, n) by Ruhe's inequality, widened so that
    they hold in floating point (module docstring, items (ii)–(iv)): the computed eigenvalues' error
    bounds δa = eig_margin(A) + ``margin_a``, δb likewise (slack n·(δa·max|b| + max|a|·δb)), the
    Gram formation error of B over ``gram_terms`` rank-one terms (None: B exact), the rounding of
    the two sums, and 4ε relative for the final operations."""
    eps = _eps(A)
    a = torch.linalg.eigvalsh(A).flip(-1)   # decreasing
    b = torch.linalg.eigvalsh(B)            # increasing
    n = A.shape[-1]
    amax, bmax = a.abs().amax(-1), b.abs().amax(-1)
    slack = n * ((eig_margin(A) + margin_a) * bmax + amax * (eig_margin(B) + margin_b))
    if gram_terms is not None:
        trB = torch.diagonal(B, dim1=-2, dim2=-1).abs().sum(-1)
        slack = slack + amax * n ** 0.5 * (gram_terms + 4) * eps * trB * (1 + 4 * eps)
    prod_lo, prod_hi = a * b, a * b.flip(-1)
    lo = prod_lo.sum(-1) - slack - (n + 1) * eps * prod_lo.abs().sum(-1)
    hi = prod_hi.sum(-1) + slack + (n + 1) * eps * prod_hi.abs().sum(-1)
    return _widen(lo, hi, 4 * eps)


def _compress(M: torch.Tensor, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(SᵀMS, 16ε‖M‖_F): the Sym² compression and its eigenvalue error bound (module docstring (i))."""
    return S.T @ M @ S, 16 * _eps(M) * torch.linalg.matrix_norm(M)


def theorem_d1(JJ: torch.Tensor, UU: torch.Tensor | None, WW: torch.Tensor, sigma: torch.Tensor,
               mbar: torch.Tensor | None, n_samples: int = 1, *, n_terms: int | None = None
               ) -> dict[str, torch.Tensor]:
    """Theorem D.1 bounds per input (B,): keys trace_{fisher,var1,var2}_{lower,upper}_d1, widened for
    floating point (module docstring).

    JJ, WW, sigma: (B, C, C); UU, mbar: (B, C², C²) (omitted V₁ keys when None).  ``n_terms``: the
    number P of rank-one terms summed into the Gram matrices JJ, UU, WW (the group's parameter count),
    to cover their rounding; None takes them as exact.
    """
    N = float(n_samples)
    C = sigma.shape[-1]
    rel = INPUT_ROUNDING * (C + 8) * _eps(sigma)
    out = {}

    def put(key: str, lo: torch.Tensor, hi: torch.Tensor, div: float = N) -> None:
        lo, hi = _widen(lo / div, hi / div, rel)
        out[f"trace_{key}_lower_d1"], out[f"trace_{key}_upper_d1"] = lo, hi

    put("fisher", *ruhe_bounds(sigma, JJ, gram_terms=n_terms), div=1.0)
    put("var2", *ruhe_bounds(sigma, WW, gram_terms=n_terms))
    if UU is not None and mbar is not None:
        S = sym_basis(C, sigma.dtype, sigma.device)
        (Mc, dm), (Uc, du) = _compress(mbar, S), _compress(UU, S)
        lo, hi = ruhe_bounds(Mc, Uc, dm, du, gram_terms=n_terms)
        put("var1", lo.clamp_min(0), hi)
    return out


def corollary46(frob_u2: torch.Tensor, sum_w2: torch.Tensor, n_params: int, consts: FamilyConstants,
                n_samples: int = 1, opt: bool = False) -> dict[str, torch.Tensor]:
    """Corollary 4.6 (derived form, see module docstring) per input (B,), certified constants, widened
    by the rounding of ‖J‖_F², Σ‖w_i‖² (sums of P = ``n_params`` terms), of the products and of the
    compared statistics (module docstring)."""
    N = float(n_samples)
    P = int(n_params)
    eps = _eps(frob_u2)
    # the certified constants already cover the per-parameter products and statistics (constants.py)
    r1, r2 = (P + 8) * eps, (2 * P + 16) * eps
    out = {}

    def put(key: str, lo: torch.Tensor, hi: torch.Tensor, r: float) -> None:
        out[f"{key.replace('@', 'lower')}"], out[f"{key.replace('@', 'upper')}"] = _widen(lo, hi, r)

    put("trace_fisher_@_c46", consts.sigma_min_cert * frob_u2, consts.sigma_max_cert * frob_u2, r1)
    put("trace_var1_@_c46", consts.M_min_cert * frob_u2 ** 2 / P / N, consts.M_max_cert * frob_u2 ** 2 / N, r2)
    put("trace_var2_@_c46", consts.sigma_min_cert * sum_w2 / N, consts.sigma_max_cert * sum_w2 / N, r1)
    if opt and (consts.M_min_opt is None) != (consts.M_max_opt is None):
        raise ValueError("corollary46(opt=True): the constants carry only one of M_min_opt and M_max_opt; compute "
                         "both with family_constants(..., optimised=True), or pass opt=False")
    if opt and consts.M_min_opt is not None and consts.M_max_opt is not None:
        # optimised constants are estimates, not certificates: not widened
        out["trace_var1_lower_c46_opt"] = consts.M_min_opt * frob_u2 ** 2 / P / N
        out["trace_var1_upper_c46_opt"] = consts.M_max_opt * frob_u2 ** 2 / N
    return out
