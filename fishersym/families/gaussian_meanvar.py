"""Gaussian output with learned mean and variance, THEORY §4 row 5.

The network outputs o = (μ, s = log σ²); the link maps them to the natural
parameters h = (μ/σ², −1/(2σ²)) (``MeanLogVar``), t(y) = (y, y²) and

    F(h) = −h₁²/(4h₂) − ½ log(−2h₂),
    Σ = [[σ², 2μσ²], [2μσ², 2σ²(2μ² + σ²)]].

Directional cumulants (derived here; THEORY gives κ₄ only "via κ₄"): with
y = μ + σz, uᵀt = const + a z + b z² where a = σ(u₁ + 2μu₂), b = σ²u₂, and
the cumulant generating function of a Gaussian quadratic gives

    uᵀΣu = a² + 2b²,   κ₄(u,u,u,u) = 48 b²(a² + b²).

so N·V₁ = κ₄ + 2(uᵀΣu)² = 2a⁴ + 56a²b² + 56b⁴, a sum of non-negative terms.
The tests check these against nested forward-mode derivatives of F, SymPy's
∇⁴F, quadrature and mpmath at 50 digits on extreme (μ, σ²).

Numerics (issue 13 items 16, 20): every form is ordered so that no intermediate
(h₁², μ², −2h₂) overflows unless the value itself does; the ``MeanLogVar`` link raises a
ValueError where e^{−s} over- or underflows (|s| beyond ~88 in float32, ~709 in float64),
and the family raises one naming the quantity where a result is not representable.

The constants of Theorem 4.1 are certified by the eigenvalues of M̄ on the symmetric
subspace and, without them (``use_eig=False``), by the closed-form bound
λ̃_max(K) ≤ (√3σ² + B²)² of :meth:`GaussianMeanVar.closed_form_constants`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import sympy as sp
import torch
from typing_extensions import override

from .base import ExponentialFamily
from .links import Link, MeanLogVar, get_link, require_finite

__all__ = ["GaussianMeanVar"]


class GaussianMeanVar(ExponentialFamily):
    """Gaussian output with learned mean and variance, THEORY §4 row 5.

    t(y) = (y, y²), h = (μ/σ², −1/(2σ²)), F(h) = −h₁²/(4h₂) − ½log(−2h₂) (module docstring).

    Args:
        link: the link from the network's outputs o to h (default: :class:`~fishersym.families.links.MeanLogVar`,
            o = (μ, log σ²)).
    """

    name = "gaussian_meanvar"
    discrete = False

    def __init__(self, link: str | Link | None = None):
        super().__init__(2, get_link(link, MeanLogVar()), out_dim=2)

    @override
    def log_partition_sym(self, h: Sequence[sp.Expr]) -> sp.Expr:
        h1, h2 = h
        return -h1 ** 2 / (4 * h2) - sp.log(-2 * h2) / 2

    @override
    def mean_params_sym(self) -> dict[sp.Expr, sp.Expr]:
        mu, s = sp.Symbol("mu", real=True), sp.Symbol("sigma", positive=True)
        return {self.h_sym[0]: mu / s ** 2, self.h_sym[1]: -1 / (2 * s ** 2)}

    def display_coordinates(self) -> list[tuple[sp.Symbol, sp.Expr]]:
        """(μ, σ) with μ = η₁ and σ = √(η₂ − η₁²) (η = (E y, E y²))."""
        subs = self.mean_params_sym()
        mu, sig = sorted({s for e in subs.values() for s in e.free_symbols}, key=lambda s: s.name)
        eta = self.eta_sym
        return [(mu, eta[0]), (sig, sp.sqrt(eta[1] - eta[0] ** 2))]

    def sample_point(self, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Standard normal h₁ and h₂ = −½ − |z| < 0."""
        g = torch.Generator().manual_seed(seed)
        h = torch.randn(2, generator=g, dtype=dtype)
        h[1] = -0.5 - h[1].abs()
        return self.check_h(h)

    def label_nodes(self, h1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t = (y, y²) at y = μ + σz on the Gauss–Hermite nodes (exact for the oracle's polynomial moments)."""
        z, wz = self._gauss_hermite(h1.dtype)
        var = -0.5 / h1[1]
        mu = h1[0] * var
        y = mu + var.sqrt() * z
        return torch.stack([y, y * y], -1), wz

    def _check_domain(self, h: torch.Tensor) -> None:
        if not (h[..., 1] < 0).all():
            raise ValueError("gaussian_meanvar: the second natural parameter h_2 = −1/(2σ²) must be < 0; "
                             "with the identity link the network must output a negative h_2 "
                             "(use the default 'meanlogvar' link to output (μ, log σ²))")
        fin = torch.finfo(h.dtype)
        if bool((h[..., 1] > -fin.tiny).any()):
            raise ValueError(f"gaussian_meanvar: h_2 = −1/(2σ²) = {float(h[..., 1].max()):.3g} is below the "
                             f"smallest normal {h.dtype} number in magnitude, so σ² = −1/(2h_2) overflows or "
                             "has lost its digits; compute in float64 or keep the variance smaller")
        mu, _ = self._mu_var(h)
        require_finite(mu, "the mean μ = −h_1/(2h_2)", self.name, "Rescale the targets or compute in float64.")

    def _mu_var(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        var = -0.5 / h[..., 1]
        return h[..., 0] * var, var

    def log_partition(self, h: torch.Tensor) -> torch.Tensor:
        """F = −h₁²/(4h₂) − ½log(−2h₂), evaluated as (h₁/(2√(−h₂)))² − ½(log(−h₂) + log 2):
        no intermediate h₁² or −2h₂ that could overflow when F does not."""
        h1, h2 = h[..., 0], h[..., 1]
        return (0.5 * h1 / torch.sqrt(-h2)).square() - 0.5 * (torch.log(-h2) + math.log(2.0))

    @override
    def mean(self, h: torch.Tensor) -> torch.Tensor:
        mu, var = self._mu_var(h)
        return torch.stack([mu, mu.square() + var], dim=-1)

    def sigma(self, h: torch.Tensor) -> torch.Tensor:
        """Σ = [[σ², 2μσ²], [2μσ², 4(μσ)² + 2σ⁴]] (THEORY §4 row 5), products ordered so that
        nothing overflows before the entry itself does."""
        mu, var = self._mu_var(h)
        sd = var.sqrt()
        off = 2 * mu * var
        row0 = torch.stack([var, off], -1)
        row1 = torch.stack([off, 4 * (mu * sd).square() + 2 * var.square()], -1)
        out = torch.stack([row0, row1], -2)
        return require_finite(out, "Σ (it contains 2σ²(2μ² + σ²))", self.name,
                              "Rescale the targets or compute in float64.")

    def _ab(self, h: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a, b, ā): uᵀt = const + a z + b z² with a = σ(u₁ + 2μu₂), b = σ²u₂, and
        ā = σ(|u₁| + 2|μ||u₂|) ≥ |a| (the scale of a's rounding error)."""
        mu, var = self._mu_var(h)
        if u.dim() == h.dim() + 1:
            mu, var = mu.unsqueeze(-1), var.unsqueeze(-1)
        sd = var.sqrt()
        musd2 = 2 * mu * sd
        a = sd * u[..., 0] + musd2 * u[..., 1]
        abar = (sd * u[..., 0]).abs() + (musd2 * u[..., 1]).abs()
        b = var * u[..., 1]
        return a, b, abar

    def sigma_quad(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """uᵀΣu = a² + 2b²."""
        a, b, _ = self._ab(h, u)
        return a.square() + 2 * b.square()

    def kappa4(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """κ₄(u,u,u,u) = 48b²(a² + b²)."""
        a, b, _ = self._ab(h, u)
        b2 = b.square()
        return 48 * b2 * (a.square() + b2)

    def mquad(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """N·V₁ = κ₄ + 2(uᵀΣu)² = 2a⁴ + 56a²b² + 56b⁴, a sum of non-negative terms."""
        return self.quad_forms(h, u)[1]

    def quad_forms(self, h: torch.Tensor, u: torch.Tensor, cdim: int = -1, moments: bool = True,
                   error: bool = False):
        """(uᵀΣu = a² + 2b², N·V₁ = 2a⁴ + 56a²b² + 56b⁴[, err]) in one pass.

        Rounding (first order, ε the unit roundoff): σ² = −1/(2h₂) (1 rounding), μ = h₁σ² (2),
        σ = √σ² (≤ 2), so |â − a| ≤ 6ε·ā with ā = σ(|u₁| + 2|μ||u₂|) (the sum u₁ + 2μu₂ may
        cancel) and |b̂ − b| ≤ 3ε|b|; then â² has absolute error ≤ dA = 13ε|a|ā + 37ε²ā² (the
        second-order term matters when a cancels, e.g. |μ|/σ ≳ 10³ in float32) and b̂² ≤ 7ε b².
        With f(A, B) = 2A² + 56AB + 56B² in A = a², B = b² (f(A + δ, B) − f(A, B) =
        (4A + 56B)δ + 2δ² exactly: the 2δ² term keeps the bound valid when Â is 0 by cancellation
        while A is not) and 4 roundings in forming f,

            err = 2·[ (4A + 56B)·dA + 2dA² + (56A + 112B)·7ε·B + 4ε·f ]

        (a factor 2 of safety) bounds |computed − exact N·V₁|, also under cancellation in a; it
        scales like N·V₁ (as u⁴) and is 0 only for u = 0.
        A ValueError names N·V₁ where it overflows the dtype.
        """
        if cdim == 1:
            u = u.transpose(-1, -2)
        a, b, abar = self._ab(h, u)
        A, B = a.square(), b.square()
        fi = A + 2 * B
        if not moments:
            return (fi, None, None) if error else (fi, None)
        nv1 = 2 * A.square() + 56 * A * B + 56 * B.square()
        require_finite(nv1, "N·V₁ = 2a⁴ + 56a²b² + 56b⁴ (a = σ(u₁ + 2μu₂), b = σ²u₂)", self.name,
                       "Rescale the targets (smaller μ and σ²) or compute in float64.")
        if not error:
            return fi, nv1
        eps = torch.finfo(nv1.dtype).eps
        dA = eps * abar * (13 * a.abs() + 37 * eps * abar)
        err = 2 * ((4 * A + 56 * B) * dA + 2 * dA.square() + eps * ((56 * A + 112 * B) * 7 * B + 4 * nv1))
        return fi, nv1, err

    def statistic(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Scalar labels (B,) or (B, 1) → t(y) = (y, y²)."""
        if y.dim() > 2 or (y.dim() == 2 and y.shape[1] != 1):
            raise ValueError(f"gaussian_meanvar: observed labels are scalars, shape (batch,) or (batch, 1); got "
                             f"{tuple(y.shape)} (t(y) = (y, y²) is formed from them)")
        y = y.to(dtype).reshape(-1)
        return torch.stack([y, y * y], -1)

    @override
    def sample(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        h = self.check_h(h)
        mu, var = self._mu_var(h)
        eps = torch.randn((n, *mu.shape), dtype=h.dtype, device=h.device, generator=generator)
        y = mu + var.sqrt() * eps
        t = torch.stack([y, y * y], dim=-1)
        return require_finite(t, "a sampled statistic (y, y²)", self.name,
                              "Rescale the targets or compute in float64.")

    def kappa4_tensor(self, h: torch.Tensor) -> torch.Tensor:
        """κ₄ = ∇⁴F (..., 2, 2, 2, 2) in closed form (issue 13: replaces the base class's nested
        jacfwd, ~100× slower).

        Polarising κ₄(u,u,u,u) = 48b²(a² + b²) (module docstring) gives the symmetric tensor with
        (0-based indices, σ² = −1/(2h₂), μ = h₁σ²)

            κ₄_0000 = κ₄_0001 = 0,  κ₄_0011 = 8σ⁶,  κ₄_0111 = 48μσ⁶,  κ₄_1111 = 48σ⁶(4μ² + σ²)

        and their permutations (κ₄_1111 is the 4th cumulant 48σ⁸(1 + 4μ²/σ²) of y², a scaled
        noncentral χ²₁).  Evaluated as 8(σ²)³, 48(μσ²)σ²σ², 192(μσ²σ)² + 48((σ²)²)²: products
        of non-negative powers (relative error ≤ ~10ε per entry, no cancellation) ordered so that
        no intermediate overflows unless the entry does; a ValueError where an entry overflows.
        Tested entrywise against SymPy's ∇⁴F (``kappa4_sym``) in mpmath at 50 digits."""
        h = self.check_h(h)
        mu, var = self._mu_var(h)
        sd = var.sqrt()
        v3 = var * var * var
        t0011 = 8 * v3
        t0111 = 48 * (mu * var) * var * var
        t1111 = 192 * (mu * var * sd).square() + 48 * var.square().square()
        k4 = h.new_zeros((*h.shape[:-1], 2, 2, 2, 2))
        for idx in ((0, 0, 1, 1), (0, 1, 0, 1), (0, 1, 1, 0), (1, 0, 0, 1), (1, 0, 1, 0), (1, 1, 0, 0)):
            k4[(...,) + idx] = t0011
        for idx in ((0, 1, 1, 1), (1, 0, 1, 1), (1, 1, 0, 1), (1, 1, 1, 0)):
            k4[(...,) + idx] = t0111
        k4[..., 1, 1, 1, 1] = t1111
        return require_finite(k4, "κ₄ = ∇⁴F (entries up to 48σ⁶(4μ² + σ²))", self.name,
                              "Rescale the targets or compute in float64.")

    #: relative rounding bound of :meth:`closed_form_constants`' K_max_upper (units of ε)
    K_UPPER_ROUNDING = 128

    def closed_form_constants(self, h: torch.Tensor, restricted: bool = False,
                              sigma_max: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """A certified closed-form upper bound ``K_max_upper`` ≥ λ̃_max(K) (THEORY §5), so that
        Theorem 4.1's bounds exist without the Sym² eigenvalues (``use_eig=False``; issue 13).

        **Claim.**  With y ~ N(μ, σ²), r = t(y) − E t = (X, Y), X = y − μ, Y = y² − E y²,

            A⁴ = E X⁴ = 3σ⁴,   B⁴ = E Y⁴ = 3α⁴ + 60α²β² + 60β⁴   (α = 2|μ|σ, β = σ²),

        every symmetric 2×2 matrix Q with ‖Q‖_F = 1 has E(rᵀQr)² ≤ (A² + B²)², hence both
        λ̃_max(K) = max_{‖v‖=1} E(vᵀr)⁴ (Q = vvᵀ) and the largest Sym² eigenvalue of mat(K)
        are ≤ K_up = (A² + B²)² = (√3σ² + B²)².

        **Proof.**  Y = σ²(z + μ/σ)² − σ² − μ² = αs z + β(z² − 1) with z ~ N(0, 1), s = sign μ; the
        odd moments of z vanish and E z⁴ = 3, E z²(z² − 1)² = 15 − 6 + 1 = 10,
        E(z² − 1)⁴ = 105 − 60 + 18 − 4 + 1 = 60, so E Y⁴ = 3α⁴ + 6·10α²β² + 60β⁴.  By
        Minkowski in L²: ‖rᵀQr‖₂ ≤ |Q₁₁|‖X²‖₂ + 2|Q₁₂|‖XY‖₂ + |Q₂₂|‖Y²‖₂ with ‖X²‖₂ = A²,
        ‖Y²‖₂ = B² and, by Cauchy–Schwarz, ‖XY‖₂ ≤ AB; so ‖rᵀQr‖₂ ≤ ⟨|Q|, ggᵀ⟩ for g = (A, B),
        and by Cauchy–Schwarz in the Frobenius product ⟨|Q|, ggᵀ⟩ ≤ ‖Q‖_F‖ggᵀ‖_F = A² + B². □
        The bound is within a factor 4 of λ̃_max(K): (A² + B²)² ≤ 2(A⁴ + B⁴) = 2(K₀₀₀₀ + K₁₁₁₁).

        **Rounding.**  B² = s·(s·√(3ρ_α⁴ + 60ρ_α²ρ_β² + 60ρ_β⁴)) with s = max(α, β),
        ρ = (α, β)/s (no intermediate over/underflows unless B² does): every step multiplies,
        divides, adds non-negative numbers or takes a square root, so the relative error is a
        sum of per-operation contributions: σ² (1ε), μ (2ε), σ (1.5ε), α (4.5ε), ρ (≤ 10ε),
        the sum of quartic terms (≤ 45ε), its root (≤ 23.5ε), B² (≤ 35ε), A² (3ε), A² + B²
        (≤ 36ε) and its square (≤ 73ε).  The result is multiplied by 1 + 128ε
        (``K_UPPER_ROUNDING``, a margin for second-order terms and the product itself) and
        4·tiny·ε (4 units of the smallest subnormal) is added for gradual underflow (σ² ≲ 1e-154
        in float64: the square is subnormal, with absolute error ≤ ½ such unit; the absolute
        errors of subnormal parts of B² enter multiplied by 2(A² + B²) < 1), so it bounds the
        exact value at the given h; ``family_constants`` widens it again by its
        closed-form factor.  A ValueError names K_up where it overflows the dtype (only within
        a factor 4 of λ̃_max(K) itself overflowing).  ``restricted`` (𝟙^⊥) does not apply to
        this family: {} is returned for it, as for the fixed-variance Gaussian.
        """
        if restricted:
            return {}
        mu, var = self._mu_var(h)
        sd = var.sqrt()
        alpha = 2 * mu.abs() * sd
        beta = var
        s = torch.maximum(alpha, beta)
        ra, rb = alpha / s, beta / s
        ra2, rb2 = ra.square(), rb.square()
        B2 = s * (s * torch.sqrt(3 * ra2.square() + 60 * ra2 * rb2 + 60 * rb2.square()))
        A2 = math.sqrt(3.0) * var
        eps = torch.finfo(h.dtype).eps
        tiny = torch.finfo(h.dtype).tiny
        k_up = (A2 + B2).square() * (1 + self.K_UPPER_ROUNDING * eps) + 4 * tiny * eps
        require_finite(k_up, "the bound K_max_upper = (√3σ² + (E(y² − Ey²)⁴)^{1/2})² on λ̃_max(K)", self.name,
                       "Rescale the targets (smaller μ and σ²) or compute in float64.")
        return {"K_max_upper": k_up}

    def moment_tensors(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Σ, κ₄, M₄) as in the base class, with a ValueError where M₄ (terms up to σ⁴(μ⁴ + σ⁴))
        overflows the dtype."""
        S, k4, m4 = super().moment_tensors(h)
        require_finite(m4, "the fourth central moment M₄ (terms up to σ⁴(μ⁴ + σ⁴))", self.name,
                       "Rescale the targets or compute in float64.")
        return S, k4, m4

    def log_prob(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """log p(y|h) = −(y − μ)²/(2σ²) − ½log(2πσ²) for t = (y, y²): equal to log π + tᵀh − F(h)
        on valid statistics, without the cancellation of terms of size y²/σ² when y ≈ μ is large.
        μ, σ² are functions of h, so autograd in h gives the same score and Hessian."""
        mu, var = self._mu_var(h)
        y = t[..., 0]
        return -(y - mu).square() / (2 * var) - 0.5 * (torch.log(var) + math.log(2 * math.pi))

    @override
    def log_base_measure(self, t: torch.Tensor) -> torch.Tensor:
        return torch.full(t.shape[:-1], -0.5 * math.log(2 * math.pi), dtype=t.dtype, device=t.device)
