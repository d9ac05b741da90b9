"""Certified eigenvalues of the softmax covariance Σ = diag(p) − ppᵀ in O(C) per input (THEORY §14).

The proofs are in ``docs/math/certificates.md`` (§2); in short, with p = softmax(h) (every p_a > 0,
Σ_a p_a = 1) and ν_1 ≤ … ≤ ν_C the eigenvalues of Σ:

* **Inertia count.**  For λ > 0 different from every p_a, the number of eigenvalues of Σ below λ is

      N(λ) = #{a : p_a < λ} + [φ(λ) > 0],     φ(λ) = Σ_a p_a / (p_a − λ)

  (Haynsworth inertia additivity on the bordered matrix [[diag(p) − λI, p], [pᵀ, 1]], and
  1 − Σ_a p_a²/(p_a − λ) = −λ φ(λ) because Σ_a p_a = 1).  So φ(λ) = 0 is the secular equation
  Σ_a p_a²/(p_a − λ) = 1 with the root λ = 0 divided out, and the count needs no sorting, no
  deflation of ties and no special case for tiny p_a.
* **Interlacing.**  Σ is diag(p) less a rank-one positive semi-definite matrix, so
  p_(k−1) ≤ ν_k ≤ p_(k) for the order statistics p_(1) ≤ … ≤ p_(C); ν_1 = 0 (Σ𝟙 = 0).  The
  spectrum on 𝟙^⊥ is ν_2 … ν_C (Σ is symmetric with Σ𝟙 = 0, so it maps 𝟙^⊥ to itself).
* **Certification.**  Any a with N(a) ≤ k − 1 and b with N(b) ≥ k bracket ν_k ∈ [a, b].  The
  interlacing bracket [p_(k−1), p_(k)] is one; a tighter one is found around an approximate root
  of φ (safeguarded Newton, uncertified) and kept only where both counts are certified.

**Floating point.**  The exact p is enclosed entrywise, lo_a ≤ p_a ≤ hi_a, from the computed
p' = softmax(h) and the relative error bound η of
:meth:`~fishersym.families.categorical.Categorical.softmax_rel_error` (plus an absolute term for
subnormal or underflowed p'_a).  A count N(λ) is *certified* only when every p_a is on a known side of λ
(λ ∉ [lo_a, hi_a]) and the sign of φ(λ) is certain: φ = P₊ − P₋ with P₊ = Σ_{p_a>λ} p_a/(p_a − λ)
and P₋ = Σ_{p_a<λ} p_a/(λ − p_a), each a sum of positive terms that are monotone in p_a, bounded
from the endpoints lo_a, hi_a and widened by the rounding of one subtraction, one division and a
C-term sum (relative ≤ (C + 2)ε, taken as 2(C + 2)ε).  An uncertain count leaves the bracket as it
is; the initial brackets are the interlacing bounds evaluated on lo and hi (the k-th smallest lo_a
≤ p_(k) ≤ the k-th smallest hi_a), so the returned [a, b] always encloses ν_k of the exact h.

Memory: (..., K, C) temporaries for K targets (K ≤ 2 here), no C × C matrix.
"""
from __future__ import annotations

import torch

__all__ = ["softmax_enclosure", "secular_count", "softmax_sigma_brackets"]



def softmax_enclosure(h: torch.Tensor, rel_error: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(p', lo, hi): the computed p' = softmax(h) and an entrywise enclosure lo ≤ softmax(h) ≤ hi of
    the exact softmax.  ``rel_error`` (..., 1) bounds |p'_a − p_a| ≤ η·p_a for normal p_a; the
    enclosure uses 2η·p'_a (≥ η·p_a/(1 − η) plus the rounding of p' ± err, as η ≥ 10ε) and an
    absolute (C + 8)·tiny for subnormal or underflowed p'_a.  lo is clamped at 0 (p_a > 0)."""
    p = torch.softmax(h, dim=-1)
    tiny = torch.finfo(h.dtype).tiny
    err = 2 * rel_error * p + (h.shape[-1] + 8) * tiny
    return p, (p - err).clamp_min(0), p + err


def secular_count(lo: torch.Tensor, hi: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Certified N(λ) = #{eigenvalues of Σ below λ} for the exact p ∈ [lo, hi] (module docstring).

    lo, hi (..., C); lam (..., K) with λ > 0.  Returns (count (..., K) int64, certain (..., K) bool);
    the count is meaningful only where ``certain``."""
    eps = torch.finfo(lo.dtype).eps
    gamma = 2 * (lo.shape[-1] + 2) * eps
    L = lam.unsqueeze(-1)                                   # (..., K, 1)
    lo_, hi_ = lo.unsqueeze(-2), hi.unsqueeze(-2)           # (..., 1, C)
    above = lo_ > L                                         # p_a > λ for sure
    below = hi_ < L                                         # p_a < λ for sure
    sided = (above | below).all(-1)
    zero = lo.new_zeros(())
    # P₊: x/(x − λ) decreases in x > λ;  P₋: x/(λ − x) increases in x < λ
    pos_lo = torch.where(above, hi_ / (hi_ - L), zero).sum(-1)
    pos_hi = torch.where(above, lo_ / (lo_ - L), zero).sum(-1)
    neg_lo = torch.where(below, lo_ / (L - lo_), zero).sum(-1)
    neg_hi = torch.where(below, hi_ / (L - hi_), zero).sum(-1)
    positive = pos_lo * (1 - gamma) > neg_hi * (1 + gamma)
    negative = pos_hi * (1 + gamma) < neg_lo * (1 - gamma)
    count = below.sum(-1) + positive.long()
    return count, sided & (positive | negative)


def _approx_roots(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, steps: int = 40) -> torch.Tensor:
    """Uncertified roots of φ(λ) = Σ_a p_a/(p_a − λ) in (a, b) (..., K), for the computed p (..., C):
    safeguarded Newton (φ increases from −∞ to +∞ between consecutive poles; a Newton step leaving
    the bracket is replaced by the geometric or arithmetic midpoint).  Only a starting point for the
    certification of :func:`softmax_sigma_brackets`, which does not rely on its accuracy."""
    P = p.unsqueeze(-2)
    eps = torch.finfo(p.dtype).eps
    x = torch.where(a > 0, a.sqrt() * b.sqrt(), 0.5 * (a + b))
    done = ~(b > a)                                   # ties: the bracket is the root
    for i in range(steps):
        d = P - x.unsqueeze(-1)
        t = P / d
        f = t.sum(-1)
        step = f / (t / d).sum(-1)
        done = done | (step.abs() <= 2 * eps * x.abs()) | (f == 0)
        a = torch.where(f < 0, torch.maximum(a, x), a)
        b = torch.where(f > 0, torch.minimum(b, x), b)
        nx = x - step
        mid = torch.where(a > 0, a.sqrt() * b.sqrt(), 0.5 * (a + b))
        nx = torch.where((nx >= a) & (nx <= b) & torch.isfinite(nx), nx, mid)
        x = torch.where(done, x, nx)
        if i % 8 == 7 and bool(done.all()):   # converged entries are frozen: test only every 8 steps
            break                             # (few host synchronisations on an accelerator)
    return x


def softmax_sigma_brackets(h: torch.Tensor, ks: list[int], rel_error: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Certified brackets [a, b] ∋ ν_k (k-th smallest eigenvalue of Σ = diag(p) − ppᵀ, 1-based,
    2 ≤ k ≤ C) for each k in ``ks``, p = softmax(h) of the exact h (module docstring).

    h (..., C) (float64 recommended), ``rel_error`` (..., 1) as in :func:`softmax_enclosure`.
    Returns (a, b), each (..., len(ks)), with 0 ≤ a ≤ ν_k ≤ b.  The interlacing bracket is always
    valid; an approximate root x (:func:`_approx_roots`, safeguarded Newton on the computed p) is
    then certified from both sides: x − δ is adopted as a when the certified count says N(x − δ) ≤ k − 1,
    x + δ as b when N(x + δ) ≥ k, with δ = 4η·x growing 16-fold over at most 4 rounds.

    >>> import torch
    >>> from fishersym.families.categorical import Categorical
    >>> h = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64)
    >>> a, b = softmax_sigma_brackets(h, [2, 3], Categorical.softmax_rel_error(h))
    >>> ev = torch.linalg.eigvalsh(Categorical(3).sigma(h))[0, 1:]
    >>> bool(torch.all(a[0] <= ev) and torch.all(ev <= b[0]) and torch.all(b - a <= 1e-12 * b))
    True
    """
    C = h.shape[-1]
    if any(not 2 <= k <= C for k in ks):
        raise ValueError(f"secular brackets: eigenvalue indices must lie in [2, C = {C}], got {ks}")
    p, lo, hi = softmax_enclosure(h, rel_error)
    # interlacing p_(k−1) ≤ ν_k ≤ p_(k), with the order statistics of p enclosed by those of lo and hi
    a = torch.stack([lo.kthvalue(k - 1, dim=-1).values for k in ks], -1).clamp_min(0)
    b = torch.stack([hi.kthvalue(k, dim=-1).values for k in ks], -1)
    pa = torch.stack([p.kthvalue(k - 1, dim=-1).values for k in ks], -1)
    pb = torch.stack([p.kthvalue(k, dim=-1).values for k in ks], -1)
    x = _approx_roots(p, pa, pb)
    target = torch.tensor(ks, device=h.device)
    delta = 4 * rel_error * x
    K = len(ks)
    for _ in range(4):
        lam = torch.cat([x - delta, x + delta], -1)
        use = torch.cat([(lam[..., :K] > a) & (lam[..., :K] > 0), lam[..., K:] < b], -1)
        count, certain = secular_count(lo, hi, torch.where(use, lam, torch.ones_like(lam)))
        ok = use & certain
        ok_lo = ok[..., :K] & (count[..., :K] <= target - 1)     # fewer than k eigenvalues below: ν_k ≥ x − δ
        ok_hi = ok[..., K:] & (count[..., K:] >= target)         # at least k below: ν_k < x + δ
        a = torch.where(ok_lo, lam[..., :K], a)
        b = torch.where(ok_hi, lam[..., K:], b)
        delta = 16 * delta
    return a, b
