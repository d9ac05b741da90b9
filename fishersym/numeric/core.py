"""Per-input quantities shared by both exact paths (THEORY.md §2–§5).

Both engines reduce a model to, for each input b and parameter θ_i, the two
vectors u_i = ∂h/∂θ_i and w_i = ∂²h/∂θ_i² (THEORY §1); everything else is a
function of (h, u_i, w_i):

    I(θ_i|x) = u_iᵀΣu_i,   N·V₁ = M(u_i,u_i,u_i,u_i),   N·V₂ = w_iᵀΣw_i      (THEORY §2–§3)

and the squared norms ‖u_i‖², ‖w_i‖² (and of their projections onto 𝟙^⊥ for
shift-invariant families) that enter the bounds of Theorem 4.1 (THEORY §5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations_with_replacement

import torch

from ..families.base import ExponentialFamily
from .parts import Part

__all__ = ["EngineOutput", "BASE_POWER", "base_quantities", "prob_negative", "mquad_cancels",
           "MAX_PNEG_OUTCOMES"]

#: power of the input factor a_k in each base quantity of a weight (THEORY §7)
BASE_POWER = {"fisher": 2, "nv1": 4, "nv2": 4, "u2": 2, "w2": 4, "u2s": 2, "w2s": 4, "m4": 4}

#: largest number of outcomes (multisets of N labels) enumerated for the exact P(Î₂ < 0)
MAX_PNEG_OUTCOMES = 5000


@dataclass
class EngineOutput:
    """What an engine (generic or fast) computes for one batch of inputs."""

    h: torch.Tensor                                   # (B, C) natural parameters
    parts: dict[str, dict[str, Part]]                 # parameter → base key → Part
    path: str
    grams: dict[str, dict[str, torch.Tensor]] | None = None  # parameter → {"JJ","UU","WW"} (B, ·, ·)
    pneg: dict[str, Part] | None = None               # parameter → exact P(Î₂ < 0) (discrete families)
    info: dict = field(default_factory=dict)


def mquad_cancels(family: ExponentialFamily) -> bool:
    """Whether the family's N·V₁ is a moment minus a square (precision loss in float32, THEORY §3)."""
    flag = getattr(family, "mquad_cancels", None)
    if flag is not None:
        return bool(flag)
    return bool(family.shift_invariant or type(family).mquad is ExponentialFamily.mquad)


def _is_softmax(family: ExponentialFamily) -> bool:
    return type(family).__name__ == "Categorical" and family.name == "categorical"


def base_quantities(family: ExponentialFamily, h: torch.Tensor, u: torch.Tensor,
                    w: torch.Tensor | None, cdim: int = -1) -> dict[str, torch.Tensor]:
    """Base quantities for directions u, w of shape (B, K, C) at h (B, C); each (B, K).

    fisher = uᵀΣu, nv1 = M(u,u,u,u) = N·V₁, nv2 = wᵀΣw = N·V₂ (THEORY §3), u2 = ‖u‖²,
    w2 = ‖w‖², and for shift-invariant families u2s, w2s = squared norms of the
    projections onto 𝟙^⊥ (THEORY §5 [beyond]).  ``w = None`` means w ≡ 0.
    ``cdim=1`` takes u, w in the layout (B, C, K) instead (the fast path's G, D),
    reducing over the outcome axis without a transposed copy.
    """
    if cdim not in (-1, 1):
        raise ValueError(f"cdim must be -1 or 1, got {cdim}")
    if _is_softmax(family):
        return _softmax_quantities(h, u, w, cdim)
    if cdim == 1:
        u = u.transpose(1, 2)
        w = None if w is None else w.transpose(1, 2)
    out = {"fisher": family.sigma_quad(h, u), "nv1": family.mquad(h, u), "u2": (u * u).sum(-1)}
    if w is None:
        zero = torch.zeros_like(out["u2"])
        out.update(nv2=zero, w2=zero)
    else:
        out.update(nv2=family.sigma_quad(h, w), w2=(w * w).sum(-1))
    if family.shift_invariant:
        uc = u - u.mean(-1, keepdim=True)
        out["u2s"] = (uc * uc).sum(-1)
        if w is None:
            out["w2s"] = torch.zeros_like(out["u2"])
        else:
            wc = w - w.mean(-1, keepdim=True)
            out["w2s"] = (wc * wc).sum(-1)
    return out


def _softmax_quantities(h: torch.Tensor, u: torch.Tensor, w: torch.Tensor | None,
                        cdim: int) -> dict[str, torch.Tensor]:
    """The closed forms of Categorical.sigma_quad / .mquad (THEORY §4 row 3) for all K directions
    at once: softmax p computed once, d = u − ū shared, p·d² and p·d⁴ as one batched product each:

        I = Σ_a p_a d_a²,   N·V₁ = Σ_a p_a d_a⁴ − I²,   N·V₂ = Σ_a p_a (w_a − w̄)²,

    and the squared norms of u, w and of their projections onto 𝟙^⊥ (THEORY §5 [beyond])."""
    if u.dim() != 3:
        return _softmax_quantities_nd(h, u, w, cdim)
    if cdim == -1:                                   # (B, K, C) → the (B, C, K) layout, as a view
        u = u.transpose(1, 2)
        w = None if w is None else w.transpose(1, 2)
    pr = torch.softmax(h, dim=-1).unsqueeze(1)       # (B, 1, C): Σ_a p_a x_a as a batched product
    d = u - pr @ u
    d2 = d.square_()
    fi = (pr @ d2).squeeze(1)
    out = {"fisher": fi, "nv1": (pr @ d2.square_()).squeeze(1).sub_(fi * fi), "u2": (u * u).sum(1)}
    out["u2s"] = (u - u.mean(1, keepdim=True)).square_().sum(1)
    if w is None:
        zero = torch.zeros_like(fi)
        out.update(nv2=zero, w2=zero, w2s=zero)
    else:
        out["nv2"] = (pr @ (w - pr @ w).square_()).squeeze(1)
        out["w2"] = (w * w).sum(1)
        out["w2s"] = (w - w.mean(1, keepdim=True)).square_().sum(1)
    return out


def _softmax_quantities_nd(h: torch.Tensor, u: torch.Tensor, w: torch.Tensor | None,
                           cdim: int) -> dict[str, torch.Tensor]:
    """:func:`_softmax_quantities` for directions of any rank (elementwise form)."""
    p = torch.softmax(h, dim=-1)
    p = p.unsqueeze(-1) if cdim == 1 else p.unsqueeze(-2)       # broadcast against u
    d = u - (p * u).sum(cdim, keepdim=True)
    d2 = d * d
    pd2 = p * d2
    fi = pd2.sum(cdim)
    out = {"fisher": fi, "nv1": (pd2 * d2).sum(cdim) - fi * fi, "u2": (u * u).sum(cdim)}
    uc = u - u.mean(cdim, keepdim=True)
    out["u2s"] = (uc * uc).sum(cdim)
    if w is None:
        zero = torch.zeros_like(fi)
        out.update(nv2=zero, w2=zero, w2s=zero)
    else:
        dw = w - (p * w).sum(cdim, keepdim=True)
        out["nv2"] = (p * dw * dw).sum(cdim)
        out["w2"] = (w * w).sum(cdim)
        wc = w - w.mean(cdim, keepdim=True)
        out["w2s"] = (wc * wc).sum(cdim)
    return out


def _count_vectors(S: int, N: int) -> torch.Tensor:
    """All count vectors n ∈ ℕ^S with Σn = N (multisets of N labels), shape (n_outcomes, S)."""
    rows = []
    for combo in combinations_with_replacement(range(S), N):
        row = [0] * S
        for s in combo:
            row[s] += 1
        rows.append(row)
    return torch.tensor(rows)


def prob_negative(family: ExponentialFamily, h: torch.Tensor, fisher: torch.Tensor, w: torch.Tensor | None,
                  n_samples: int) -> torch.Tensor | None:
    """Exact P(Î₂(θ_i|x) < 0) for a discrete family (THEORY §6 item 5, [beyond]); (B, K) or None.

    Î₂ = I − (1/N)Σ_k wᵀ(t(y_k) − η); with the support enumerated (S values)
    its law is that of Σ_s (n_s/N)(I − wᵀ(t_s − η)) for multinomial counts n,
    summed exactly over all C(N+S−1, N) count vectors.  None when the
    family is continuous or the enumeration would be too large.
    """
    if not family.discrete:
        return None
    if w is None or not bool((w != 0).any()):
        return torch.zeros_like(fisher)  # Î₂ = I ≥ 0 surely
    try:
        sup = family.support(h)
    except (TypeError, ValueError):
        return None
    S = sup.t.shape[0]
    n_out = math.comb(n_samples + S - 1, n_samples)
    if n_out > MAX_PNEG_OUTCOMES:
        return None
    eta = family.mean(h)                                   # (B, C)
    r = sup.t.unsqueeze(0) - eta.unsqueeze(1)              # (B, S, C)
    wr = torch.einsum("bkc,bsc->bks", w, r)                # (B, K, S)
    vals = fisher.unsqueeze(-1) - wr                       # Î₂ for one label s
    scale = fisher.abs().unsqueeze(-1) + wr.abs().amax(-1, keepdim=True)
    if n_samples == 1:
        neg = (vals < -1e-12 * scale).to(h.dtype)
        return (neg * sup.prob.unsqueeze(1)).sum(-1)
    counts = _count_vectors(S, n_samples).to(h.dtype)      # (O, S)
    logpmf = ((torch.lgamma(torch.tensor(n_samples + 1.0, dtype=h.dtype))
               - torch.lgamma(counts + 1).sum(-1)).unsqueeze(0)    # (1, O)
              + sup.logp @ counts.T)                              # (B, O)
    est = vals @ counts.T / n_samples                      # (B, K, O)
    neg = (est < -1e-12 * scale).to(h.dtype)
    return (neg * logpmf.exp().unsqueeze(1)).sum(-1)
