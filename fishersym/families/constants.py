"""Family constants of the bounds (THEORY.md §5).

For natural parameters h (batch, C) this computes, per input:

* the spectrum of Σ (λ_min, λ_max), on ℝ^C or on 𝟙^⊥ (``restricted``);
* the variational eigenvalues λ̃_min/λ̃_max of K = M₄ and of M = K − Σ⊗Σ
  (λ̃_min(𝒯) = inf_{‖v‖=1} 𝒯(v,v,v,v), λ̃_max likewise), twice:

  - *optimised*: multi-start shifted symmetric higher-order power iteration
    (SS-HOPM, Kolda & Mayo 2011) on the unit sphere.  With the shift
    α = 3·K̄ (K̄ a certified upper bound of λ̃_max(K), which bounds
    |𝒯(v,v,x,x)| for 𝒯 ∈ {K, M}) every iteration increases the objective,
    but a local optimum can still *under*-state λ̃_max (THEORY §5);
  - *certified*: a value that provably bounds λ̃ from outside: the closed
    forms of the family (Proposition 5.1, Theorem 5.2, Corollary R.1, the
    Poisson forms), Corollary 4.2, Proposition 4.3, λ̃_min(K) ≥ λ_min(Σ)²,
    M ≥ 0, and the extreme eigenvalues of M̄ (or mat(K)) restricted to the
    symmetric subspace (u⊗u lies there, THEORY §3).  Where several apply
    the tightest is kept, and ``sources`` names it.

``restricted=True`` (shift-invariant families only) gives the sharpened
constants over unit vectors of 𝟙^⊥ ([beyond] in THEORY §5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .base import ExponentialFamily

__all__ = ["FamilyConstants", "family_constants", "sigma_spectrum", "ones_perp_basis", "eig_margin",
           "formation_margin",
           "sym_basis", "restricted_extremes", "lambda_tilde_opt", "MAX_C_EIG"]

#: above this C the C²×C² matrix M̄ is not formed (closed forms must certify)
MAX_C_EIG = 24


def ones_perp_basis(C: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """Orthonormal basis Q (C × (C−1)) of 𝟙^⊥ (Helmert-type, deterministic)."""
    A = torch.eye(C, dtype=dtype, device=device) - 1.0 / C
    Q, _ = torch.linalg.qr(A[:, : C - 1])
    return Q


def sym_basis(d: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """Orthonormal basis (d² × d(d+1)/2) of the symmetric subspace of ℝ^d ⊗ ℝ^d."""
    cols = []
    for a in range(d):
        for b in range(a, d):
            v = torch.zeros(d, d, dtype=dtype, device=device)
            if a == b:
                v[a, a] = 1.0
            else:
                v[a, b] = v[b, a] = 1.0 / math.sqrt(2.0)
            cols.append(v.reshape(-1))
    return torch.stack(cols, dim=1)


def _basis(family: ExponentialFamily, restricted: bool, dtype, device) -> torch.Tensor | None:
    if not restricted:
        return None
    if not family.shift_invariant:
        raise ValueError(f"{family.name}: the sharpened (𝟙^⊥) constants apply to shift-invariant "
                         "families (the softmax) only")
    return ones_perp_basis(family.C, dtype, device)


def _sigma_matrix(family: ExponentialFamily, h: torch.Tensor, restricted: bool) -> torch.Tensor:
    S = family.sigma(h)
    Q = _basis(family, restricted, h.dtype, h.device)
    return S if Q is None else Q.T @ S @ Q


def sigma_spectrum(family: ExponentialFamily, h: torch.Tensor, restricted: bool = False) -> torch.Tensor:
    """Eigenvalues of Σ(h) in increasing order, (..., C); on 𝟙^⊥ those of QᵀΣQ, (..., C−1)."""
    return torch.linalg.eigvalsh(_sigma_matrix(family, h, restricted))


def restricted_extremes(family: ExponentialFamily, h: torch.Tensor, tensor: str = "M",
                        restricted: bool = False, moments: tuple | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(λ_min, λ_max) of M̄ (tensor "M") or mat(K) (tensor "K") on Sym²(ℝ^d).

    For a unit vector v, v⊗v is a unit vector of the symmetric subspace and
    𝒯(v,v,v,v) = (v⊗v)ᵀ mat(𝒯) (v⊗v), so these enclose [λ̃_min, λ̃_max].
    ``moments``: ``family.moment_tensors(h)`` when the caller already has them.
    """
    C = family.C
    if C > MAX_C_EIG:
        raise ValueError(f"{family.name}: C = {C} > {MAX_C_EIG}; the C²×C² matrix is not formed")
    S, k4, m4 = moments if moments is not None else family.moment_tensors(h)
    mat = family.mbar_from(S, m4) if tensor == "M" else m4.reshape(*h.shape[:-1], C * C, C * C)
    Q = _basis(family, restricted, h.dtype, h.device)
    if Q is None:
        W = sym_basis(C, h.dtype, h.device)
    else:
        W = torch.kron(Q, Q) @ sym_basis(C - 1, h.dtype, h.device)
    A = W.T @ mat @ W
    ev = torch.linalg.eigvalsh(A)
    delta = eig_margin(A) + formation_margin(S, k4)
    return ev[..., 0] - delta, ev[..., -1] + delta


def formation_margin(S: torch.Tensor, k4: torch.Tensor) -> torch.Tensor:
    """Rounding in forming mat(M₄) or M̄ = mat(M₄) − vec(Σ)vec(Σ)ᵀ: terms of size ‖κ₄‖ + 4‖Σ‖²
    cancel, so entries (and hence eigenvalues) may be off by 16·C²·ε·(‖κ₄‖_F + 4‖Σ‖_F²)."""
    C = S.shape[-1]
    scale = torch.linalg.vector_norm(k4.flatten(-4), dim=-1) + 4 * torch.linalg.matrix_norm(S) ** 2
    return 16 * C * C * torch.finfo(S.dtype).eps * scale


def eig_margin(A: torch.Tensor) -> torch.Tensor:
    """Rounding margin of a computed symmetric eigenvalue: |λ̂ − λ| ≤ c·d·ε·‖A‖₂ (backward
    stability of the symmetric eigensolver + Weyl); we take 8·d·ε·‖A‖_F ≥ that, so that
    eigenvalue-based certificates also hold in floating point."""
    d = A.shape[-1]
    return 8 * d * torch.finfo(A.dtype).eps * torch.linalg.matrix_norm(A)


def lambda_tilde_opt(family: ExponentialFamily, h: torch.Tensor, tensor: str, which: str,
                     shift: torch.Tensor, restricted: bool = False, n_starts: int = 16,
                     n_iter: int = 300, generator: torch.Generator | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimised λ̃_min or λ̃_max of K or M by multi-start SS-HOPM.

    Returns (values (...,), maximisers v (..., C), unit vectors).  ``shift``
    (...,) must bound |𝒯(v,v,x,x)| for unit v, x; ``3·shift`` is used as α.
    """
    if tensor not in ("M", "K") or which not in ("min", "max"):
        raise ValueError("tensor must be 'M' or 'K' and which 'min' or 'max'")
    Q = _basis(family, restricted, h.dtype, h.device)
    d = family.C if Q is None else family.C - 1
    batch = h.shape[:-1]
    x0 = torch.randn((*batch, n_starts, d), dtype=h.dtype, device=h.device, generator=generator)
    if d <= 32:  # also start on every axis
        eye = torch.eye(d, dtype=h.dtype, device=h.device).expand(*batch, d, d)
        x0 = torch.cat([x0, eye], dim=-2)
    x = x0 / x0.norm(dim=-1, keepdim=True)
    sign = 1.0 if which == "max" else -1.0
    alpha = (3.0 * shift + 1e-12).unsqueeze(-1).unsqueeze(-1)
    fn = family.mquad if tensor == "M" else family.m4

    def objective(x):
        v = x if Q is None else x @ Q.T
        return fn(h, v)

    for _ in range(n_iter):
        x = x.detach().requires_grad_(True)
        val = objective(x)
        (g,) = torch.autograd.grad(val.sum(), x)
        x = sign * g / 4 + alpha * x
        x = x / x.norm(dim=-1, keepdim=True)
    with torch.no_grad():
        val = objective(x)
        best = val.argmax(-1) if which == "max" else val.argmin(-1)
        vbest = torch.gather(val, -1, best.unsqueeze(-1)).squeeze(-1)
        xbest = torch.gather(x, -2, best[..., None, None].expand(*batch, 1, d)).squeeze(-2)
        vecs = xbest if Q is None else xbest @ Q.T
    return vbest.detach(), vecs.detach()


@dataclass
class FamilyConstants:
    """Constants of Theorem 4.1 per input (THEORY §5); every tensor has shape h.shape[:-1].

    ``*_opt`` are optimised values (None when not computed); ``*_cert`` the
    certified outer values: ``sigma_min_cert`` ≤ λ_min(Σ), ``sigma_max_cert``
    ≥ λ_max(Σ), ``M_min_cert`` ≤ λ̃_min(M), ``M_max_cert`` ≥ λ̃_max(M), and
    the same for K.  ``sources`` says which result certified each value.
    """

    restricted: bool
    sigma_min: torch.Tensor
    sigma_max: torch.Tensor
    sigma_min_cert: torch.Tensor
    sigma_max_cert: torch.Tensor
    M_min_cert: torch.Tensor
    M_max_cert: torch.Tensor
    K_min_cert: torch.Tensor
    K_max_cert: torch.Tensor
    M_min_opt: torch.Tensor | None = None
    M_max_opt: torch.Tensor | None = None
    K_min_opt: torch.Tensor | None = None
    K_max_opt: torch.Tensor | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.__dict__.items() if isinstance(v, torch.Tensor)}


def _tightest(cands: list[tuple[str, torch.Tensor]], upper: bool) -> tuple[torch.Tensor, str]:
    names = [n for n, _ in cands]
    vals = torch.stack([v for _, v in cands], dim=0)
    best = vals.min(0) if upper else vals.max(0)
    idx = torch.unique(best.indices)
    return best.values, "/".join(sorted({names[int(i)] for i in idx}))


def family_constants(family: ExponentialFamily, h: torch.Tensor, restricted: bool = False,
                     optimise: bool = True, use_eig: bool | None = None, n_starts: int = 16,
                     n_iter: int = 300, seed: int = 0, moments: tuple | None = None) -> FamilyConstants:
    """All constants of THEORY §5 for natural parameters h (..., C).

    ``moments``: ``family.moment_tensors(h)`` when the caller already has them (the restricted
    and unrestricted constants of one batch share them; they are the costly part of use_eig)."""
    h = family.check_h(h)
    S = _sigma_matrix(family, h, restricted)
    spec = torch.linalg.eigvalsh(S)
    s_min, s_max = spec[..., 0], spec[..., -1]
    s_margin = eig_margin(S)  # the certified Σ constants widen the computed eigenvalues by it
    # closed forms that need λ_max(Σ) (Corollary R.1) get the certified, widened value
    closed = family.closed_form_constants(h, restricted=restricted, sigma_max=s_max + s_margin)
    src: dict[str, str] = {}

    def cands(key: str, upper: bool, extra: list[tuple[str, torch.Tensor]]):
        lst = list(extra)
        full = f"{key}_{'max' if upper else 'min'}"
        if full in closed:
            lst.append(("exact", closed[full]))
        bound = closed.get(f"{full}_upper" if upper else f"{full}_lower")
        if bound is not None:
            lst.append(("closed form", bound))
        val, name = _tightest(lst, upper)
        src[f"{key}_{'max' if upper else 'min'}"] = name
        return val

    # Σ: computed eigenvalues widened by their rounding margin; closed forms, where exact, as given.
    sigma_min_cert = closed.get("sigma_min", (s_min - s_margin).clamp_min(0))
    sigma_max_cert = cands("sigma", True, [("eigvalsh", s_max + s_margin)])

    if use_eig is None:
        use_eig = family.C <= MAX_C_EIG
    if use_eig and moments is None:
        moments = family.moment_tensors(h)
    eigM = restricted_extremes(family, h, "M", restricted, moments) if use_eig else None
    eigK = restricted_extremes(family, h, "K", restricted, moments) if use_eig else None
    zero = torch.zeros_like(s_min)

    # K = M₄
    kmax_extra = [("Sym² eig", eigK[1])] if eigK else []
    B = family.support_radius_sq(h)
    if B is not None:
        kmax_extra.append(("Prop. 4.3", B * sigma_max_cert))
    if not kmax_extra and "K_max" not in closed and "K_max_upper" not in closed:
        raise ValueError(f"{family.name}: no certified bound for λ̃_max(K) at C = {family.C}")
    K_max_cert = cands("K", True, kmax_extra)
    kmin_extra = [("λ_min(Σ)²", sigma_min_cert.clamp_min(0) ** 2)]
    if eigK:
        kmin_extra.append(("Sym² eig", eigK[0]))
    K_min_cert = cands("K", False, kmin_extra)
    # M = K − Σ⊗Σ
    mmax_extra = [("Cor. 4.2", K_max_cert - sigma_min_cert.clamp_min(0) ** 2)]
    if eigM:
        mmax_extra.append(("Sym² eig", eigM[1]))
    M_max_cert = cands("M", True, mmax_extra)
    mmin_extra = [("M ⪰ 0", zero), ("Cor. 4.2", K_min_cert - sigma_max_cert ** 2)]
    if eigM:
        mmin_extra.append(("Sym² eig", eigM[0]))
    M_min_cert = cands("M", False, mmin_extra)

    out = FamilyConstants(restricted, s_min, s_max, sigma_min_cert, sigma_max_cert,
                          M_min_cert, M_max_cert, K_min_cert, K_max_cert, sources=src)
    if optimise:
        gen = torch.Generator(device=h.device).manual_seed(seed)
        for t in ("M", "K"):
            for w in ("min", "max"):
                exact = closed.get(f"{t}_{w}")
                if exact is not None:
                    val = exact
                else:
                    val, _ = lambda_tilde_opt(family, h, t, w, K_max_cert, restricted, n_starts, n_iter, gen)
                setattr(out, f"{t}_{w}_opt", val)
    return out
