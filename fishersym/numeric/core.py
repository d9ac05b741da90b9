"""Per-input quantities shared by both exact paths (THEORY §2–§5).

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

__all__ = ["EngineOutput", "BASE_POWER", "BASE_KEYS", "base_quantities", "base_quantities_chunked", "prob_negative",
           "mquad_cancels", "MAX_PNEG_OUTCOMES"]

#: power of the input factor a_k in each base quantity of a weight (THEORY §7)
BASE_POWER = {"fisher": 2, "nv1": 4, "nv1_err": 4, "nv2": 4, "u2": 2, "w2": 4, "u2s": 2, "w2s": 4, "m4": 4}

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
    """Whether the precision of N·V₁ must be measured for this family: always True now.

    Kept for compatibility (callers gate :func:`~fishersym.numeric.stats.cancellation_ratio` on
    it).  Every family returns a rounding-error bound with its N·V₁ (``quad_forms(error=True)``,
    key ``nv1_err`` of :func:`base_quantities`), and the precision flag reads that bound, so it
    applies to every family: a family without cancellation simply has a bound of a few ε."""
    return True


#: bytes of u per slice in :func:`base_quantities_chunked` on CPU (cache-sized)
CHUNK_BYTES = 1 << 20

#: every key :func:`base_quantities` can compute
BASE_KEYS = ("fisher", "nv1", "nv1_err", "u2", "nv2", "w2", "u2s", "w2s")


def base_quantities(family: ExponentialFamily, h: torch.Tensor, u: torch.Tensor,
                    w: torch.Tensor | None, cdim: int = -1, keys=None) -> dict[str, torch.Tensor]:
    """Base quantities for directions u, w of shape (B, K, C) at h (B, C); each (B, K).

    fisher = uᵀΣu, nv1 = M(u,u,u,u) = N·V₁, nv2 = wᵀΣw = N·V₂ (THEORY §3; the family's
    ``quad_forms``), nv1_err = the family's first-order bound on the absolute rounding error of the
    computed nv1 (``quad_forms(error=True)``; same layout and input power 4 as nv1, so the fast
    path factors it like nv1), u2 = ‖u‖², w2 = ‖w‖², and for shift-invariant families u2s, w2s =
    squared norms of the projections onto 𝟙^⊥ (THEORY §5 [beyond]).  ``w = None`` means
    w ≡ 0.  ``cdim=1`` takes u, w in the layout (B, C, K) instead (the fast path's G, D),
    reducing over the outcome axis without a transposed copy.  ``keys`` (a subset of
    :data:`BASE_KEYS`, default all) restricts the work to those keys (fisher is always computed;
    nv1 and nv1_err come together).

    >>> from fishersym import families
    >>> fam = families.get("categorical", C=3)
    >>> q = base_quantities(fam, torch.zeros(1, 3), torch.tensor([[[1.0, 0.0, 0.0]]]), None)
    >>> round(float(q["fisher"]), 6), round(float(q["u2"]), 6), sorted(q)[:3]
    (0.222222, 1.0, ['fisher', 'nv1', 'nv1_err'])
    """
    if cdim not in (-1, 1):
        raise ValueError(f"cdim must be -1 or 1, got {cdim}")
    want = set(BASE_KEYS) if keys is None else set(keys) | {"fisher"}
    bad = want - set(BASE_KEYS)
    if bad:
        raise ValueError(f"unknown base keys {sorted(bad)}; choose from {BASE_KEYS}")
    moments = bool(want & {"nv1", "nv1_err"})
    fi, nv1, err = family.quad_forms(h, u, cdim, moments=moments, error=moments) if moments else \
        (family.quad_forms(h, u, cdim, moments=False)[0], None, None)
    out = {"fisher": fi}
    if moments:
        out.update(nv1=nv1, nv1_err=err)
    if "u2" in want:
        out["u2"] = u.square().sum(cdim)
    if w is None:
        for k in ("nv2", "w2"):
            if k in want:
                out[k] = torch.zeros_like(fi)
    else:
        if "nv2" in want:
            out["nv2"] = family.quad_forms(h, w, cdim, moments=False)[0]
        if "w2" in want:
            out["w2"] = w.square().sum(cdim)
    if family.shift_invariant:
        if "u2s" in want:
            out["u2s"] = (u - u.mean(cdim, keepdim=True)).square_().sum(cdim)
        if "w2s" in want:
            out["w2s"] = torch.zeros_like(fi) if w is None else (w - w.mean(cdim, keepdim=True)).square_().sum(cdim)
    return out


def base_quantities_chunked(family: ExponentialFamily, h: torch.Tensor, U: torch.Tensor, W: torch.Tensor | None,
                            keys, write) -> None:
    """:func:`base_quantities` of U, W in the (B, C, K) layout, in slices of the K entries small enough
    to stay in cache (about 1 MiB of U per slice on CPU: measured 1.2–1.5× faster than one pass over
    a large tensor; one slice on a GPU), each slice's values handed to ``write(key, lo, hi, value)``."""
    K = U.shape[-1]
    C = U.shape[1]
    step = K if U.is_cuda else max(1, CHUNK_BYTES // max(1, C * U.element_size()))
    for lo in range(0, K, step):
        hi = min(K, lo + step)
        q = base_quantities(family, h, U[:, :, lo:hi], None if W is None else W[:, :, lo:hi], cdim=1, keys=keys)
        for key, val in q.items():
            write(key, lo, hi, val)


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
