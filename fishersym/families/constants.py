"""Family constants of the bounds (THEORY §5).

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

Floating-point soundness (issue 13 items 2, 11, 22).  A certificate must bound the true constant
of the *exact* h given, in any input dtype:

* every certificate is computed in float64 (h is cast up exactly); the results are returned in
  the input dtype rounded *outward* (upper bounds up, lower bounds down, with ``nextafter``), so
  casting cannot break a bound; ``sources["arithmetic"]`` says so;
* no certificate is formed by a cancelling difference: the categorical's 1 − ‖p‖² is Σ_a p_a q_a
  and diag Σ is p_a q_a with the stable complement q (``Categorical.probs_and_complements``), its
  Sym² eigen-extremes come from C × C Gram matrices of stable entries
  (``Categorical.sym2_extremes``), the Bernoulli uses σ(h)σ(−h) and tanh(h/2);
* computed eigenvalues are widened by :func:`eig_margin` (backward stability + Weyl), matrices
  formed with cancellation by an entrywise rounding bound (:func:`formation_margin`, the Gram
  bound of ``sym2_extremes``), closed forms by ``CLOSED_FORM_ROUNDING``·(C + 8 + max|h|)·ε₆₄
  relative (a closed form of a few stable operations on p = softmax(h), σ(h), e^h, whose relative
  errors are ≤ ε·(|h| + C + 8));
* finally every certified constant is widened by ``INPUT_ROUNDING``·(C + 8)·ε relative in the
  *input* dtype, so that the Theorem 4.1 products ‖u‖²·c and the statistics, computed in the input
  dtype with relative rounding ≤ (C + 8)ε, keep the computed statistic inside the computed bound
  even where the bound is attained (C = 1, the Gaussian: "exact" constants are widened too).
  The cancellation of V₁ itself is not covered by this: it is bounded and flagged separately
  (``quad_forms(error=True)``, ``StatsResult.precision_lost``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .base import ExponentialFamily

__all__ = ["FamilyConstants", "family_constants", "sigma_spectrum", "sigma_extremes", "default_use_eig",
           "certificate_policy",
           "MAX_C_GRAM", "ones_perp_basis", "eig_margin",
           "formation_margin", "has_gram_form", "check_moment_size", "moment_tensor_bytes",
           "CLOSED_FORM_ROUNDING", "INPUT_ROUNDING",
           "sym_basis", "restricted_extremes", "lambda_tilde_opt", "MAX_C_EIG"]

#: above this C the C²×C² matrix M̄ is not formed (closed forms must certify) for families that need
#: the C⁴ moment tensors; families with a Gram form (``sym2_extremes``, the categorical) have no limit
MAX_C_EIG = 24
#: above this C the default (``use_eig=None``) certifies by closed forms also for families with a Gram form:
#: the C × C Gram eigenproblem costs O(C³) per input, the closed forms (Theorem 5.2, Corollary R.1) O(C).
#: Measured (benchmarks/bench_large_c.py, one CPU thread, 256 inputs, the 784-64-C sigmoid MLP, float32,
#: single runs): ``dataset_stats(use_eig=True)`` took 1.3× the ``use_eig=False`` time at C = 24, 2.4× at
#: C = 32, 7.7× at C = 64 and 8.8× at C = 100; the limit keeps the default within the issue's 1.5×.
#: ``use_eig=True`` still computes the Gram extremes at any C, chunked over inputs.
MAX_C_GRAM = 24
#: relative widening of closed-form certificates, in units of (C + 8 + max|h|)·ε (float64)
CLOSED_FORM_ROUNDING = 16
#: relative widening of every certificate in the input dtype, in units of (C + 8)·ε
INPUT_ROUNDING = 4


def _gram_hook(family: ExponentialFamily) -> Callable[..., tuple[torch.Tensor, torch.Tensor]] | None:
    """The family's optional ``sym2_extremes(h, tensor, restricted)`` hook, None when it has none."""
    hook = getattr(family, "sym2_extremes", None)
    return hook if callable(hook) else None


def has_gram_form(family: ExponentialFamily) -> bool:
    """Whether the family certifies its Sym² eigen-extremes without C⁴ tensors (``sym2_extremes``)."""
    return _gram_hook(family) is not None


def default_use_eig(family: ExponentialFamily) -> tuple[bool, str]:
    """The one policy for ``use_eig=None``: whether the Sym² eigenvalue certificates are computed, and
    the sentence that says how the constants are certified (for ``result.info["certificates"]``).

    * families with a Gram form (:func:`has_gram_form`, the categorical): the C × C Gram eigenproblem
      (O(C³) per input, no C⁴ tensor) while C ≤ :data:`MAX_C_GRAM`, closed forms above;
    * other families: the C²×C² Sym² eigenproblem from C⁴ moment tensors while C ≤ :data:`MAX_C_EIG`,
      closed forms above.

    >>> from fishersym import families
    >>> default_use_eig(families.get("categorical", C=10))[0], default_use_eig(families.get("categorical", C=1000))
    (True, (False, 'closed forms (C = 1000 > MAX_C_GRAM = 24: the C × C Gram eigenproblem costs O(C³) per input)'))
    """
    C = family.C
    if has_gram_form(family):
        if C <= MAX_C_GRAM:
            return True, (f"Sym² eigenvalues of C × C Gram matrices (C = {C} ≤ MAX_C_GRAM = {MAX_C_GRAM}) and "
                          "closed forms")
        return False, (f"closed forms (C = {C} > MAX_C_GRAM = {MAX_C_GRAM}: the C × C Gram eigenproblem costs "
                       "O(C³) per input)")
    if C <= MAX_C_EIG:
        return True, f"Sym² eigenvalues from C⁴ moment tensors (C = {C} ≤ MAX_C_EIG = {MAX_C_EIG}) and closed forms"
    return False, f"closed forms (C = {C} > MAX_C_EIG = {MAX_C_EIG}: the C²×C² matrix M̄ is not formed)"


def certificate_policy(family: ExponentialFamily, use_eig: bool | None) -> tuple[bool, str]:
    """``use_eig`` resolved (None: :func:`default_use_eig`) and the sentence for
    ``result.info["certificates"]`` saying how the constants are certified.

    >>> from fishersym import families
    >>> certificate_policy(families.get("categorical", C=10), False)
    (False, 'closed forms (use_eig=False)')
    """
    if use_eig is None:
        return default_use_eig(family)
    if use_eig:
        how = "C × C Gram matrices" if has_gram_form(family) else "C⁴ moment tensors"
        return True, f"Sym² eigenvalues of {how} and closed forms (use_eig=True)"
    return False, "closed forms (use_eig=False)"


def moment_tensor_bytes(family: ExponentialFamily, batch: int) -> int:
    """Estimated peak bytes of the C⁴ moment tensors (κ₄, M₄, mat(M̄) and the Sym² compression) in
    float64 for ``batch`` inputs."""
    C = family.C
    return int(8 * batch * (4 * C ** 4 + 2 * (C * (C + 1) // 2) ** 2))


def check_moment_size(family: ExponentialFamily, batch: int) -> None:
    """Refuse, before anything is allocated, to build C⁴/C²×C² tensors beyond ``MAX_C_EIG``."""
    if family.C > MAX_C_EIG:
        gib = moment_tensor_bytes(family, batch) / 2 ** 30
        raise ValueError(f"{family.name}: use_eig=True needs C⁴ moment tensors and C²×C² matrices "
                         f"(C = {family.C} > MAX_C_EIG = {MAX_C_EIG}; about {gib:.3g} GiB for {batch} "
                         "inputs); use use_eig=False (closed-form certificates) instead")


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


def _basis_check(family: ExponentialFamily, restricted: bool) -> None:
    if restricted and not family.shift_invariant:
        raise ValueError(f"{family.name}: the sharpened (𝟙^⊥) constants apply to shift-invariant "
                         "families (the softmax) only")


def _basis(family: ExponentialFamily, restricted: bool, dtype, device) -> torch.Tensor | None:
    _basis_check(family, restricted)
    return ones_perp_basis(family.C, dtype, device) if restricted else None


def _sigma_matrix(family: ExponentialFamily, h: torch.Tensor, restricted: bool) -> torch.Tensor:
    S = family.sigma(h)
    Q = _basis(family, restricted, h.dtype, h.device)
    return S if Q is None else Q.T @ S @ Q


def sigma_spectrum(family: ExponentialFamily, h: torch.Tensor, restricted: bool = False) -> torch.Tensor:
    """Eigenvalues of Σ(h) in increasing order, (..., C); on 𝟙^⊥ (..., C−1): Σ𝟙 = 0 and Σ maps 𝟙^⊥ to
    itself, so its spectrum there is Σ's less one zero (THEORY §14), the smallest computed eigenvalue
    of the positive semi-definite Σ is dropped (no basis of 𝟙^⊥ is formed).  Dense, O(C³) per input:
    the constants use :func:`sigma_extremes`."""
    _basis_check(family, restricted)
    ev = torch.linalg.eigvalsh(family.sigma(h))
    return ev[..., 1:] if restricted else ev


def sigma_extremes(family: ExponentialFamily, h: torch.Tensor, restricted: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """(λ_min, λ_max, certified lower bound of λ_min, certified upper bound of λ_max, source) of Σ(h) on
    ℝ^C or on 𝟙^⊥.  A family's own ``sigma_extremes`` hook (the categorical: the secular equation,
    O(C) per input, THEORY §14) is used where it exists; otherwise the dense ``eigvalsh`` of Σ (or
    QᵀΣQ on 𝟙^⊥), widened by :func:`eig_margin`."""
    hook = getattr(family, "sigma_extremes", None)
    if callable(hook):
        _basis_check(family, restricted)
        return (*hook(h, restricted), "secular equation")
    S = _sigma_matrix(family, h, restricted)
    spec = torch.linalg.eigvalsh(S)
    margin = eig_margin(S)
    return spec[..., 0], spec[..., -1], spec[..., 0] - margin, spec[..., -1] + margin, "eigvalsh"


def restricted_extremes(family: ExponentialFamily, h: torch.Tensor, tensor: str = "M",
                        restricted: bool = False, moments: tuple | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(λ_min, λ_max) of M̄ (tensor "M") or mat(K) (tensor "K") on Sym²(ℝ^d), certified (widened).

    For a unit vector v, v⊗v is a unit vector of the symmetric subspace and
    𝒯(v,v,v,v) = (v⊗v)ᵀ mat(𝒯) (v⊗v), so these enclose [λ̃_min, λ̃_max].
    Families with a Gram form (``sym2_extremes``: the categorical) use it, at any C and without
    C⁴ tensors (``moments`` is then ignored); others build the C²×C² matrix from
    ``moments`` = ``family.moment_tensors(h)`` (computed when None), refusing C > MAX_C_EIG
    before allocating.
    """
    _basis_check(family, restricted)
    gram = _gram_hook(family)
    if gram is not None:
        return gram(h, tensor, restricted)
    C = family.C
    if moments is None:
        check_moment_size(family, int(math.prod(h.shape[:-1])))
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


def _structured_starts(family: ExponentialFamily, h: torch.Tensor, restricted: bool,
                       signs: bool = True) -> torch.Tensor:
    """Deterministic starting directions (..., S, C): the axes e_a, the differences (e_a − e_b)/√2
    (C ≤ 12), sign patterns (``signs``; all for C ≤ 10), the eigenvectors of Σ(h), and for d ≤ 64 the axes of
    the optimisation space (d = C, or C − 1 on 𝟙^⊥: the columns of :func:`ones_perp_basis`); on 𝟙^⊥
    (``restricted``) every direction is centred (projected onto 𝟙^⊥; no basis is formed for d > 64)."""
    C = family.C
    batch = h.shape[:-1]
    eye = torch.eye(C, dtype=h.dtype, device=h.device)
    rows = [eye]
    if C <= 12:
        a, b = torch.triu_indices(C, C, 1)
        rows.append((eye[a] - eye[b]) / math.sqrt(2.0))
    # sign patterns σ ∈ {±1}^C (σ_0 = +1): at the softmax M(σ) = Var_p(d²) vanishes when Σ_a p_a σ_a = 0,
    # so λ̃_min(M) is a number-partitioning problem whose near-solutions are narrow basins that random
    # starts miss; all 2^(C−1) patterns for C ≤ 10, 256 seeded random ones beyond (minimisation only)
    if signs and C >= 2:
        if C <= 10:
            bits = (torch.arange(2 ** (C - 1)).unsqueeze(-1) >> torch.arange(C - 1)) & 1
        else:
            bits = torch.randint(0, 2, (256, C - 1), generator=torch.Generator().manual_seed(C))
        sg = torch.cat([torch.ones(bits.shape[0], 1, dtype=torch.long), 1 - 2 * bits], -1)
        rows.append(sg.to(dtype=h.dtype, device=h.device) / math.sqrt(C))
    vecs = torch.cat(rows, 0).expand(*batch, -1, C)
    try:
        ev = torch.linalg.eigh(family.sigma(h))[1].transpose(-1, -2)   # (..., C, C), rows = eigenvectors
        vecs = torch.cat([vecs, ev], -2)
    except (RuntimeError, NotImplementedError):  # pragma: no cover - a family without Σ in closed form
        pass
    if restricted:   # centre; a direction (nearly) along 𝟙 has no part in 𝟙^⊥: exact 0 (the fallback start)
        x = vecs - vecs.mean(-1, keepdim=True)
        x = torch.where(x.norm(dim=-1, keepdim=True) > 1e-6 * vecs.norm(dim=-1, keepdim=True), x, 0.0)
    else:
        x = vecs
    d = C - 1 if restricted else C
    if d <= 64:
        axes = ones_perp_basis(C, h.dtype, h.device).T if restricted else torch.eye(C, dtype=h.dtype, device=h.device)
        x = torch.cat([x, axes.expand(*batch, d, C)], -2)
    return x


def lambda_tilde_opt(family: ExponentialFamily, h: torch.Tensor, tensor: str, which: str,
                     shift: torch.Tensor, restricted: bool = False, n_starts: int = 16,
                     n_iter: int = 300, generator: torch.Generator | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimised λ̃_min or λ̃_max of K or M: multi-start SS-HOPM with an adaptive shift.

    Returns (values (...,), optimisers v (..., C), unit vectors).  ``shift`` (...,) must bound
    |𝒯(v,v,x,x)| for unit v, x (a certified λ̃_max(K) does).  Each step is the shifted power
    step x ← normalise(±∇𝒯(x)/4 + αx) (Kolda & Mayo 2011); α starts at |𝒯(x₀)| and is halved
    after an improving step and quadrupled (up to 3·shift, where the step provably improves)
    after a rejected one, so the objective is monotone and the iteration is not slowed by a
    worst-case shift (GEAP, Kolda & Mayo 2014).  Starts: ``n_starts`` random directions plus the
    structured ones of :func:`_structured_starts` (axes, pairwise differences, sign patterns for
    minimisation, eigenvectors of Σ); after n_iter/10 steps only the max(8, n_starts) best starts
    per input are continued.
    The value is attained at the returned unit vector, so it is an inner bound (≤ λ̃_max,
    ≥ λ̃_min); :func:`family_constants` checks it against the certified outer bound.
    """
    if tensor not in ("M", "K") or which not in ("min", "max"):
        raise ValueError("tensor must be 'M' or 'K' and which 'min' or 'max'")
    _basis_check(family, restricted)
    # the iterates live in ℝ^C; on 𝟙^⊥ (``restricted``) they are kept centred (no basis of 𝟙^⊥ is formed:
    # the objective is shift-invariant, so its gradient lies in 𝟙^⊥ and the centring only removes rounding)
    C = d = family.C
    batch = h.shape[:-1]

    def centre(v):
        return v - v.mean(-1, keepdim=True) if restricted else v

    x0 = centre(torch.randn((*batch, n_starts, d), dtype=h.dtype, device=h.device, generator=generator))
    x0 = torch.cat([x0, _structured_starts(family, h, restricted, signs=which == "min")], dim=-2)
    nrm = x0.norm(dim=-1, keepdim=True)
    fallback = torch.zeros(C, dtype=h.dtype, device=h.device)
    if restricted:   # a unit vector of 𝟙^⊥ for directions that centre to 0
        fallback[0], fallback[1] = 1.0 / math.sqrt(2.0), -1.0 / math.sqrt(2.0)
    else:
        fallback += 1.0 / math.sqrt(C)
    x = torch.where(nrm > 0, x0 / nrm.clamp_min(torch.finfo(h.dtype).tiny), fallback)
    sign = 1.0 if which == "max" else -1.0
    fn = family.mquad if tensor == "M" else family.m4
    tiny = torch.finfo(h.dtype).tiny

    def objective(x):
        return fn(h, x)

    amax = (3.0 * shift.abs()).unsqueeze(-1) * (1 + 1e-6) + tiny                    # (..., 1)

    def value_grad(x):
        x = x.detach().requires_grad_(True)
        v = objective(x)
        (g,) = torch.autograd.grad(v.sum(), x)
        return v.detach(), g

    val, g = value_grad(x)
    alpha = torch.minimum(val.abs() + tiny, amax.expand_as(val))
    prune_at, keep = max(1, n_iter // 10), max(8, n_starts)
    for it in range(n_iter):
        if it == prune_at and x.shape[-2] > keep:
            # after a short phase from every start, continue only the ``keep`` best per input
            idx = (sign * val).topk(keep, dim=-1).indices
            ix = idx.unsqueeze(-1).expand(*idx.shape, d)
            x, g = torch.gather(x, -2, ix), torch.gather(g, -2, ix)
            val, alpha = torch.gather(val, -1, idx), torch.gather(alpha, -1, idx)
        with torch.no_grad():
            y = centre(sign * g / 4 + alpha.unsqueeze(-1) * x)
            yn = y.norm(dim=-1, keepdim=True)
            y = torch.where(yn > 0, y / yn.clamp_min(tiny), x)
        fy, gy = value_grad(y)       # the candidate's gradient is the next step's when it is accepted
        with torch.no_grad():
            ok = sign * fy >= sign * val
            okx = ok.unsqueeze(-1)
            x, g = torch.where(okx, y, x), torch.where(okx, gy, g)
            val = torch.where(ok, fy, val)
            alpha = torch.where(ok, alpha / 2, torch.minimum(4 * alpha, amax.expand_as(alpha))).clamp_min(tiny)
    with torch.no_grad():
        x = x.detach()
        val = objective(x)
        best = val.argmax(-1) if which == "max" else val.argmin(-1)
        vbest = torch.gather(val, -1, best.unsqueeze(-1)).squeeze(-1)
        vecs = torch.gather(x, -2, best[..., None, None].expand(*batch, 1, d)).squeeze(-2)
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
        """The fields that are tensors, by name (the ``*_opt`` fields only when computed)."""
        return {k: v for k, v in self.__dict__.items() if isinstance(v, torch.Tensor)}


def _tightest(cands: list[tuple[str, torch.Tensor]], upper: bool) -> tuple[torch.Tensor, str]:
    names = [n for n, _ in cands]
    vals = torch.stack([v for _, v in cands], dim=0)
    best = vals.min(0) if upper else vals.max(0)
    idx = torch.unique(best.indices)
    return best.values, "/".join(sorted({names[int(i)] for i in idx}))


def _round_out(v: torch.Tensor, dtype: torch.dtype, up: bool) -> torch.Tensor:
    """float64 → ``dtype`` rounded toward +∞ (``up``) or −∞, so a bound stays a bound after the cast."""
    if v.dtype == dtype:
        return v
    r = v.to(dtype)
    back = r.to(v.dtype)
    bad = (back < v) if up else (back > v)
    if bool(bad.any()):
        r = torch.where(bad, torch.nextafter(r, torch.full_like(r, math.inf if up else -math.inf)), r)
    return r


def resolve_optimised(optimised: bool, optimise: bool | None, where: str) -> bool:
    """``optimised=``, the one spelling of the option across the package (``conditional_stats``,
    ``dataset_stats``, :func:`family_constants`, ``Derivation.evaluate``).  The old keyword
    ``optimise=`` is accepted for one release with a DeprecationWarning; both at once is refused."""
    if optimise is None:
        return bool(optimised)
    import warnings
    warnings.warn(f"{where}(optimise=...) is deprecated: use optimised=... (one spelling across fishersym)",
                  DeprecationWarning, stacklevel=3)
    if optimise != optimised and optimised is not True:   # True is the default: only an explicit clash is refused
        raise ValueError(f"{where}: optimise={optimise!r} (deprecated) and optimised={optimised!r} disagree; "
                         "pass optimised= only")
    return bool(optimise)


def family_constants(family: ExponentialFamily, h: torch.Tensor, restricted: bool = False,
                     optimised: bool = True, use_eig: bool | None = None, n_starts: int = 16,
                     n_iter: int = 300, seed: int = 0, moments: tuple | None = None, *,
                     optimise: bool | None = None) -> FamilyConstants:
    """All constants of THEORY §5 for natural parameters h (..., C).

    ``optimised`` adds the optimised λ̃ (``*_opt``, SS-HOPM or closed forms where exact); the
    certificates are always computed.  ``optimise=`` is the deprecated spelling of ``optimised=``.

    Computed in float64 whatever the input dtype, and returned in the input dtype with the
    certificates rounded outward (module docstring; ``sources["arithmetic"]``).  ``use_eig``
    (default: :func:`default_use_eig`) adds the Sym² eigen-extremes;
    for families that need C⁴ tensors, ``use_eig=True`` at C > MAX_C_EIG is refused before
    anything is allocated.  ``moments``: ``family.moment_tensors(h)`` when the caller already has
    them (ignored by families with a Gram form).  The optimised ``*_opt`` values are checked
    against the certificates: an optimised λ̃_max above the certified upper bound (or λ̃_min below
    the lower bound) beyond rounding raises RuntimeError (it would mean a wrong certificate)."""
    optimised = resolve_optimised(optimised, optimise, "family_constants")
    h = family.check_h(h)
    in_dtype = h.dtype
    work = torch.float64
    h = h.to(work)
    if moments is not None and (has_gram_form(family) or moments[0].dtype != work):
        moments = None if has_gram_form(family) else tuple(m.to(work) for m in moments)
    gram = has_gram_form(family)
    if use_eig is None:
        use_eig = default_use_eig(family)[0]
    if use_eig and not gram and moments is None:
        check_moment_size(family, int(math.prod(h.shape[:-1])))   # before any C⁴ allocation
    eps64 = torch.finfo(work).eps
    C = family.C
    hmax = h.abs().amax(-1) if h.numel() else h.new_zeros(h.shape[:-1])
    cf = CLOSED_FORM_ROUNDING * (C + 8 + hmax) * eps64           # relative widening of closed forms
    # Σ's extremes: computed values and certified bounds (secular equation for the softmax, else eigvalsh)
    s_min, s_max, s_min_c, s_max_c, s_src = sigma_extremes(family, h, restricted)
    # closed forms that need λ_max(Σ) (Corollary R.1) get the certified value
    closed = family.closed_form_constants(h, restricted=restricted, sigma_max=s_max_c)
    closed = {k: (v * (1 - cf) if k.endswith("_lower") else v * (1 + cf) if k.endswith("_upper") else v)
              for k, v in closed.items()}
    src: dict[str, str] = {}

    def cands(key: str, upper: bool, extra: list[tuple[str, torch.Tensor]]):
        lst = list(extra)
        full = f"{key}_{'max' if upper else 'min'}"
        if full in closed:  # an exact value, widened by its rounding bound (issue 13 item 22)
            v = closed[full]
            lst.append(("exact", v + cf * v.abs() if upper else v - cf * v.abs()))
        bound = closed.get(f"{full}_upper" if upper else f"{full}_lower")
        if bound is not None:
            lst.append(("closed form", bound))
        val, name = _tightest(lst, upper)
        src[f"{key}_{'max' if upper else 'min'}"] = name
        return val

    # Σ: computed eigenvalues widened by their rounding margin; exact closed forms widened by cf.
    if "sigma_min" in closed:
        sigma_min_cert = cands("sigma", False, [])
    else:
        sigma_min_cert = s_min_c.clamp_min(0)       # Σ ⪰ 0
        src["sigma_min"] = s_src
    sigma_max_cert = cands("sigma", True, [(s_src, s_max_c)])

    if use_eig and moments is None and not gram:
        moments = family.moment_tensors(h)
    eigM = restricted_extremes(family, h, "M", restricted, moments) if use_eig else None
    eigK = restricted_extremes(family, h, "K", restricted, moments) if use_eig else None
    zero = torch.zeros_like(s_min)

    # K = M₄
    kmax_extra = [("Sym² eig", eigK[1])] if eigK else []
    B = family.support_radius_sq(h)
    if B is not None:
        kmax_extra.append(("Prop. 4.3", B * sigma_max_cert * (1 + cf)))
    if not kmax_extra and "K_max" not in closed and "K_max_upper" not in closed:
        raise ValueError(f"{family.name}: no certified bound for λ̃_max(K) at C = {family.C}")
    K_max_cert = cands("K", True, kmax_extra)
    kmin_extra = [("λ_min(Σ)²", sigma_min_cert.clamp_min(0) ** 2 * (1 - cf))]
    if eigK:
        kmin_extra.append(("Sym² eig", eigK[0]))
    K_min_cert = cands("K", False, kmin_extra)
    # M = K − Σ⊗Σ (differences of certificates, widened by the rounding of the difference)
    cor_max = K_max_cert - sigma_min_cert.clamp_min(0) ** 2
    mmax_extra = [("Cor. 4.2", cor_max + cf * (K_max_cert + sigma_min_cert.clamp_min(0) ** 2))]
    if eigM:
        mmax_extra.append(("Sym² eig", eigM[1]))
    M_max_cert = cands("M", True, mmax_extra)
    cor_min = K_min_cert - sigma_max_cert ** 2
    mmin_extra = [("M ⪰ 0", zero), ("Cor. 4.2", cor_min - cf * (K_min_cert.abs() + sigma_max_cert ** 2))]
    if eigM:
        mmin_extra.append(("Sym² eig", eigM[0]))
    M_min_cert = cands("M", False, mmin_extra)

    # widen in the input dtype (module docstring) and round outward
    w_in = INPUT_ROUNDING * (C + 8) * torch.finfo(in_dtype).eps

    def lo(v):
        return _round_out(v - w_in * v.abs(), in_dtype, up=False)

    def hi(v):
        return _round_out(v + w_in * v.abs(), in_dtype, up=True)

    src["arithmetic"] = ("float64" if in_dtype == work else
                         f"float64 internally; certificates rounded outward to {str(in_dtype).replace('torch.', '')}")
    out = FamilyConstants(restricted, s_min.to(in_dtype), s_max.to(in_dtype), lo(sigma_min_cert),
                          hi(sigma_max_cert), lo(M_min_cert), hi(M_max_cert), lo(K_min_cert), hi(K_max_cert),
                          sources=src)
    if optimised:
        gen = torch.Generator(device=h.device).manual_seed(seed)
        certs = {"M_min": M_min_cert, "M_max": M_max_cert, "K_min": K_min_cert, "K_max": K_max_cert}
        for t in ("M", "K"):
            for w in ("min", "max"):
                exact = closed.get(f"{t}_{w}")
                if exact is None and C == 1 and not restricted:
                    # the unit sphere of ℝ¹ is {±1} and the forms are quartic: λ̃_min = λ̃_max = 𝒯(1,1,1,1)
                    one = torch.ones((*h.shape[:-1], 1), dtype=h.dtype, device=h.device)
                    exact = (family.mquad if t == "M" else family.m4)(h, one)
                if exact is not None:
                    val = exact
                else:
                    val, _ = lambda_tilde_opt(family, h, t, w, K_max_cert, restricted, n_starts, n_iter, gen)
                    cert = certs[f"{t}_{w}"]
                    tol = 1e-9 * K_max_cert.abs() + 64 * eps64 * val.abs()
                    bad = (val > cert + tol) if w == "max" else (val < cert - tol)
                    if bool(bad.any()):
                        raise RuntimeError(
                            f"{family.name}: optimised λ̃_{w}({t}) = {float(val[bad].flatten()[0]):.6g} lies outside "
                            f"its certified bound {float(cert[bad].flatten()[0]):.6g}: an internal inconsistency "
                            "(please report it); the certified bounds are the ones to use")
                setattr(out, f"{t}_{w}_opt", val.to(in_dtype))
    return out
