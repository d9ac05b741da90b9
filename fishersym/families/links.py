"""Links between a network's raw output o and the natural parameters h.

THEORY §1: a link may sit between the raw output o and h; the analysis
always uses the composite map θ ↦ h, so the link's own curvature enters
∂²h/∂θ_i².  A link is defined twice, once in SymPy (``sym``) and once in torch
(``__call__``); the tests check the two against each other.

Elementwise links (h_c = g(o_c)) can be folded into the fast MLP recursion of
THEORY §7 as one more activation; they expose ``g1``/``g2`` (g' and g'').
A link that mixes outputs (``MeanLogVar``) is handled by the generic engine.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import sympy as sp
import torch
from typing_extensions import override

from .._checks import as_count

__all__ = ["Link", "Identity", "Scale", "MeanLogVar", "get_link", "LINKS", "positive_count", "require_finite"]


def _concrete(x: torch.Tensor) -> bool:
    """True for a plain tensor; False inside torch.func transforms (vmap, jvp, grad), where a
    data-dependent Python check is not allowed (the values are checked outside them)."""
    return not torch._C._functorch.is_functorch_wrapped_tensor(x)


class Link:
    """Map raw network outputs o ∈ ℝ^{out_dim} to natural parameters h ∈ ℝ^C."""

    name: str = "link"
    elementwise: bool = True

    def __call__(self, o: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """h = link(o): raw outputs (..., out_dim) → natural parameters (..., C)."""
        raise NotImplementedError

    def sym(self, o: Sequence[sp.Expr]) -> list[sp.Expr]:  # pragma: no cover - abstract
        """The same map in SymPy: the C natural parameters as expressions of the output symbols ``o``."""
        raise NotImplementedError

    def g1(self, o: torch.Tensor) -> torch.Tensor:
        """Elementwise first derivative g'(o) (elementwise links only)."""
        raise TypeError(f"link {self.name!r} is not elementwise")

    def g2(self, o: torch.Tensor) -> torch.Tensor:
        """Elementwise second derivative g''(o) (elementwise links only)."""
        raise TypeError(f"link {self.name!r} is not elementwise")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Identity(Link):
    """h = o (the default)."""

    name = "identity"

    @override
    def __call__(self, o: torch.Tensor) -> torch.Tensor:
        return o

    @override
    def sym(self, o: Sequence[sp.Expr]) -> list[sp.Expr]:
        return list(o)

    @override
    def g1(self, o: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(o)

    @override
    def g2(self, o: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(o)


class Scale(Link):
    """h = c·o, e.g. c = 1/σ² for a Gaussian network that outputs its mean μ."""

    name = "scale"

    def __init__(self, c: float, c_sym: sp.Expr | None = None):
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not (0 < c < float("inf")):
            raise ValueError(f"Scale link needs a finite positive float, got {c!r}")
        self.c = float(c)
        self.c_sym = sp.nsimplify(c) if c_sym is None else c_sym

    @override
    def __call__(self, o: torch.Tensor) -> torch.Tensor:
        return self.c * o

    @override
    def sym(self, o: Sequence[sp.Expr]) -> list[sp.Expr]:
        return [self.c_sym * oi for oi in o]

    @override
    def g1(self, o: torch.Tensor) -> torch.Tensor:
        return torch.full_like(o, self.c)

    @override
    def g2(self, o: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(o)

    def __repr__(self) -> str:
        return f"Scale({self.c!r})"


class MeanLogVar(Link):
    """Gaussian with learned variance: o = (μ, s = log σ²) ↦ h = (μ e^{−s}, −e^{−s}/2).

    THEORY §4 (last row of the table): h = (μ/σ², −1/(2σ²)).  The map mixes
    the two outputs, so it is not elementwise.
    """

    name = "meanlogvar"
    elementwise = False

    def __call__(self, o: torch.Tensor) -> torch.Tensor:
        """h = (μe^{−s}, −e^{−s}/2).  Raises a ValueError (instead of returning inf, 0 or a
        subnormal h₂ that has lost its digits) where the precision 1/σ² = e^{−s} or μ/σ² is not
        a normal number of the dtype (issue 13 item 20)."""
        mu, s = o[..., 0], o[..., 1]
        prec = torch.exp(-s)
        h1 = mu * prec
        if not _concrete(o):  # inside torch.func transforms: no data-dependent checks
            return torch.stack([h1, -0.5 * prec], dim=-1)
        fin = torch.finfo(o.dtype)
        if not bool(torch.isfinite(o).all()):
            raise ValueError("meanlogvar link: the model's outputs (μ, log σ²) contain non-finite values")
        if not bool(torch.isfinite(prec).all()):
            raise ValueError(f"meanlogvar link: the precision 1/σ² = e^(−s) overflows {o.dtype} for the "
                             f"log-variance s = {float(s.min()):.6g} (it needs s > {-math.log(fin.max):.4g}); "
                             "compute in float64 or keep log σ² larger (e.g. clamp it in the model)")
        if bool((prec < fin.tiny).any()):
            raise ValueError(f"meanlogvar link: the precision 1/σ² = e^(−s) underflows {o.dtype} (it would lose "
                             f"its digits) for the log-variance s = {float(s.max()):.6g} (it needs s < "
                             f"{-math.log(fin.tiny):.4g}); compute in float64 or keep log σ² smaller")
        if not bool(torch.isfinite(h1).all()):
            raise ValueError(f"meanlogvar link: the natural parameter h₁ = μ/σ² overflows {o.dtype} (largest "
                             f"|μ| = {float(mu.abs().max()):.3g}); rescale the targets or compute in float64")
        return torch.stack([h1, -0.5 * prec], dim=-1)

    @override
    def sym(self, o: Sequence[sp.Expr]) -> list[sp.Expr]:
        mu, s = o
        return [mu * sp.exp(-s), -sp.exp(-s) / 2]


LINKS = {"identity": Identity, "scale": Scale, "meanlogvar": MeanLogVar}


def get_link(link: str | Link | None, default: Link | None) -> Link | None:
    """Resolve a link given by name or instance (None → the family's default; a family's default
    None means the identity, see :class:`~fishersym.families.base.ExponentialFamily`)."""
    if link is None:
        return default
    if isinstance(link, Link):
        return link
    if isinstance(link, str) and link in ("identity",):
        return Identity()
    if isinstance(link, str) and link == "meanlogvar":
        return MeanLogVar()
    raise ValueError(
        f"unknown link {link!r}; available: 'identity', 'meanlogvar', or a Link instance "
        "(e.g. fishersym.families.links.Scale(c))"
    )


# ---------------------------------------------------------------- validation helpers of the families
def positive_count(value, what: str, family: str) -> int:
    """``value`` as a positive Python int (numpy integers accepted, bools and floats refused): the
    package's one count validator (:func:`fishersym._checks.as_count`), with the family's name."""
    return as_count(value, what, prefix=f"{family}: ", non_integer=ValueError)


def require_finite(x: torch.Tensor, what: str, family: str, hint) -> torch.Tensor:
    """Raise a ValueError naming ``what`` when x overflowed (finite input, true value too large).
    ``hint`` (the fix) is a string or a callable returning one, called only on failure.
    Inside torch.func transforms (no data-dependent checks there) it returns x unchecked."""
    if _concrete(x) and not bool(torch.isfinite(x).all()):
        hint = hint() if callable(hint) else hint
        fmax = torch.finfo(x.dtype).max
        raise ValueError(f"{family}: {what} overflows {x.dtype} (largest finite value {fmax:.3g}); "
                         f"the true value is not representable in this dtype. {hint}")
    return x
