"""Gaussian output with fixed variance σ² (regression), THEORY §4 row 1.

h = μ/σ², t(y) = y ∈ ℝ^C, F(h) = σ²‖h‖²/2, Σ = σ²I, κ₄ = 0, so
N·V₁ = M(u,u,u,u) = 2σ⁴‖u‖⁴ and N·V₂ = σ²‖w‖² (u, w the derivatives of h).
Proposition 5.1: every constant of Theorem 4.1 is exact (λ(Σ) = σ², λ̃(M) = 2σ⁴,
λ̃(K) = 3σ⁴).

Link (what the network outputs)
-------------------------------
By default the network outputs the **mean** μ, as a network trained with a squared
error does: the link is ``Scale(1/σ²)``, h = μ/σ².  Then, for u_μ = ∂μ/∂θ_i,

    I(θ_i|x) = ‖u_μ‖²/σ²,   N·V₁ = 2‖u_μ‖⁴/σ⁴,   N·V₂ = ‖∂²μ/∂θ_i²‖²/σ².

``link="natural"`` (or ``"identity"``) makes the network output h = μ/σ² itself (the
default before issue 13); ``link="mean"`` names the default explicitly.  With σ² = 1 both
links give the same numbers.

Mapping to torch's losses (per input x with C outputs, constants dropped; the
negative log-likelihood here is ‖y − μ‖²/(2σ²)):

* ``MSELoss(reduction="sum")`` = ‖y − μ‖² is the NLL of ``sigma2=0.5``: its Hessian in μ
  (the Gauss–Newton matrix 2JᵀJ that BackPACK and curvlinops use for this loss) is the
  Fisher of ``gaussian(sigma2=0.5)``; ``sigma2=1`` gives half of it.
* ``MSELoss(reduction="mean")`` divides by B·C: per input ‖y − μ‖²/C, the NLL of
  ``sigma2=C/2`` (the 1/B is the average over inputs).
* ``GaussianNLLLoss(mu, y, var)`` = ½(log var + (y − μ)²/var) with a *fixed* var is
  ``gaussian(sigma2=var)`` (mean link).  With a *learned* variance use
  ``gaussian_meanvar``, whose network outputs (μ, log σ²): pass ``var = exp(s)`` to
  GaussianNLLLoss for fishersym's second output s (GaussianNLLLoss also clamps var at
  its ``eps``, fishersym does not).

Numerics: uᵀΣu is evaluated as Σ_c (σu_c)², a sum of non-negative terms, and N·V₁ as
2(uᵀΣu)², so both have small relative error and overflow only when the true value is
not representable, in which case a ValueError names the quantity (issue 13 item 20).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import sympy as sp
import torch
from typing_extensions import override

from .base import ExponentialFamily, batch_shape
from .links import Identity, Link, Scale, get_link, positive_count, require_finite

__all__ = ["Gaussian"]


class Gaussian(ExponentialFamily):
    """Gaussian output with fixed variance σ² (regression), THEORY §4 row 1.

    F(h) = σ²‖h‖²/2, Σ = σ²I, κ₄ = 0 (module docstring).

    Args:
        C: the output dimension (a positive integer).
        sigma2: the fixed variance σ² (a finite number > 0).
        link: ``"mean"`` (the default: the network outputs μ, h = μ/σ²), ``"natural"`` or ``"identity"``
            (the network outputs h = μ/σ²), or a :class:`~fishersym.families.links.Link` instance.
    """

    name = "gaussian"
    discrete = False
    sigma2: float
    _s2: sp.Symbol

    fuzz_output_cap = 50.0   # the mean is linear in the output

    @classmethod
    def param_strategy(cls, max_classes: int = 5):
        """C ∈ {1, 2} (the oracle's quadrature grid grows as 12^C), σ² ∈ {0.5, 1, 2}."""
        from hypothesis import strategies as st
        return st.fixed_dictionaries({"C": st.integers(1, 2), "sigma2": st.sampled_from([0.5, 1.0, 2.0])})

    @classmethod
    def fuzz_param_strategy(cls, max_classes: int = 6):
        """C ∈ {1, 2}, σ² = e^t with t ∈ [−3, 3] (σ² ∈ [0.05, 20]), the default link or "mean" named."""
        from hypothesis import strategies as st
        sigma2 = st.floats(-3.0, 3.0).map(lambda t: float(math.exp(t)))
        return st.fixed_dictionaries({"C": st.integers(1, 2), "sigma2": sigma2}, optional={"link": st.just("mean")})

    def label_nodes(self, h1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y = μ + σz on the product Gauss–Hermite grid (12^C nodes; exact for the polynomial moments
        of the oracle)."""
        z, wz = self._gauss_hermite(h1.dtype)
        n = z.shape[0]
        grid = torch.cartesian_prod(*([torch.arange(n)] * self.C)).reshape(-1, self.C)
        return self.mean(h1) + math.sqrt(self.sigma2) * z[grid], wz[grid].prod(-1)

    def symbolic_theorems(self) -> dict:
        """``gaussian_v1``: SymPy proves V₁ = 2σ⁴‖u‖⁴/N for every parameter (Proposition 5.1)."""
        from ..symbolic.theorems import gaussian_v1_identity
        return {"gaussian_v1": gaussian_v1_identity}

    def __init__(self, C: int = 1, sigma2: float = 1.0, link: str | Link | None = None):
        C = positive_count(C, "C", "gaussian")
        if (isinstance(sigma2, bool) or not isinstance(sigma2, numbers.Real)
                or not math.isfinite(float(sigma2)) or float(sigma2) <= 0):
            raise ValueError(f"gaussian: the variance sigma2 must be a finite number > 0, got {sigma2!r}")
        self.sigma2 = float(sigma2)
        if not math.isfinite(1.0 / self.sigma2):
            raise ValueError(f"gaussian: sigma2 = {sigma2!r} is so small that 1/sigma2 overflows float64; "
                             "rescale the targets")
        self._s2 = sp.Symbol("sigma^2", positive=True)
        if link is None or link == "mean":  # the network outputs μ; h = μ/σ² (issue 13 item 27)
            link = Scale(1.0 / self.sigma2, 1 / self._s2)
        elif link == "natural":
            link = Identity()
        elif isinstance(link, str) and link != "identity":
            raise ValueError(f"gaussian: unknown link {link!r}; available: 'mean' (the default: the network "
                             "outputs μ, h = μ/σ²), 'natural' or 'identity' (the network outputs h = μ/σ²), "
                             "or a Link instance")
        super().__init__(C, get_link(link, None))

    @property
    def sym_params(self) -> dict[sp.Symbol, float]:
        """{σ²: sigma2}: the fixed variance's symbol and value."""
        return {self._s2: self.sigma2}

    @override
    def log_partition_sym(self, h: Sequence[sp.Expr]) -> sp.Expr:
        return self._s2 * sp.Add(*[hi ** 2 for hi in h]) / 2

    # numeric closed forms (THEORY §4)
    @override
    def log_partition(self, h: torch.Tensor) -> torch.Tensor:
        return 0.5 * (math.sqrt(self.sigma2) * h).square().sum(-1)

    @override
    def mean(self, h: torch.Tensor) -> torch.Tensor:
        return self.sigma2 * h

    @override
    def sigma(self, h: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(self.C, dtype=h.dtype, device=h.device)
        return (self.sigma2 * eye).expand(*h.shape[:-1], self.C, self.C).clone()

    def sigma_quad(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """uᵀΣu = Σ_c (σu_c)² (no intermediate u², so no spurious overflow)."""
        return (math.sqrt(self.sigma2) * u).square().sum(-1).expand(batch_shape(h, u))

    @override
    def kappa4(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return torch.zeros(batch_shape(h, u), dtype=h.dtype, device=h.device)

    def m4(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """M₄(u,u,u,u) = 3(uᵀΣu)² (κ₄ = 0)."""
        return 3 * self.sigma_quad(h, u).square()

    def mquad(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """N·V₁ = 2(uᵀΣu)² = 2σ⁴‖u‖⁴ (THEORY §4)."""
        return 2 * self.sigma_quad(h, u).square()

    def kappa4_tensor(self, h: torch.Tensor) -> torch.Tensor:
        """κ₄ = ∇⁴F ≡ 0, shape (..., C, C, C, C): F = σ²‖h‖²/2 is quadratic (THEORY §4 row 1).
        Closed form instead of the base class's nested jacfwd (issue 13 fuzz speed)."""
        return h.new_zeros((*h.shape[:-1],) + (self.C,) * 4)

    def quad_forms(self, h: torch.Tensor, u: torch.Tensor, cdim: int = -1, moments: bool = True,
                   error: bool = False):
        """(uᵀΣu, N·V₁ = 2(uᵀΣu)²[, err]) in one pass (THEORY §3, §4).

        ``error=True`` adds a first-order bound on the absolute rounding error of the
        computed N·V₁: uᵀΣu is a sum of C non-negative rounded terms (σ rounded, the
        product, the square: relative error ≤ (C + 3)ε), so 2(uᵀΣu)² is within
        (2C + 8)·ε·N·V₁ of its exact value.  Raises a ValueError when N·V₁ overflows.
        """
        if cdim == 1:
            u = u.transpose(-1, -2)
        fi = self.sigma_quad(h, u)
        if not moments:
            return (fi, None, None) if error else (fi, None)
        nv1 = 2 * fi.square()
        require_finite(nv1, "N·V₁ = 2σ⁴‖u‖⁴", self.name,
                       "Rescale the targets (a smaller sigma2 in the same units) or compute in float64.")
        if not error:
            return fi, nv1
        eps = torch.finfo(nv1.dtype).eps
        return fi, nv1, (2 * self.C + 8) * eps * nv1

    @override
    def sample(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        h = self.check_h(h)
        eps = torch.randn((n, *h.shape), dtype=h.dtype, device=h.device, generator=generator)
        return self.mean(h) + math.sqrt(self.sigma2) * eps

    @override
    def log_base_measure(self, t: torch.Tensor) -> torch.Tensor:
        return -(t * t).sum(-1) / (2 * self.sigma2) - 0.5 * self.C * math.log(2 * math.pi * self.sigma2)

    def log_prob(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """log p(y|h) = −‖y − σ²h‖²/(2σ²) − (C/2)log(2πσ²): the same function of (y, h) as
        log π(y) + yᵀh − F(h), without the cancellation of its three terms of size ‖y‖²/σ²
        when y ≈ μ is large."""
        r = t - self.sigma2 * h
        return -(r / math.sqrt(2 * self.sigma2)).square().sum(-1) - 0.5 * self.C * math.log(2 * math.pi * self.sigma2)

    @override
    def closed_form_constants(self, h: torch.Tensor, restricted: bool = False,
                              sigma_max: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if restricted:
            return {}
        one = torch.ones(h.shape[:-1], dtype=h.dtype, device=h.device)
        s2 = self.sigma2
        require_finite(torch.tensor(3 * s2 * s2, dtype=h.dtype), "λ̃(K) = 3σ⁴", self.name,
                       "Rescale the targets so that sigma2 is smaller, or compute in float64.")
        return {"sigma_min": s2 * one, "sigma_max": s2 * one,
                "M_min": 2 * s2 ** 2 * one, "M_max": 2 * s2 ** 2 * one,
                "K_min": 3 * s2 ** 2 * one, "K_max": 3 * s2 ** 2 * one}
