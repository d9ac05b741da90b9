"""Output distributions: exponential families defined by their log-partition F(h).

THEORY.md §1 (setting), §3 (cumulants), §4 (closed forms), §5 (constants).

>>> import torch
>>> from fishersym import families
>>> fam = families.get("categorical", C=3)
>>> fam.sigma_sym.shape               # Σ = ∇²F, derived by SymPy
(3, 3)
>>> h, u = torch.zeros(3, dtype=torch.float64), torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
>>> round(float(fam.mquad(h, u)), 6)  # N·V₁ = Σ_a p_a (d_a² − s)² with p = ⅓, d = (⅔, −⅓, −⅓): 6/243
0.024691
"""
from __future__ import annotations

from typing import Callable

from .base import ExponentialFamily, Support
from .bernoulli import Bernoulli
from .categorical import Categorical
from .gaussian import Gaussian
from .gaussian_meanvar import GaussianMeanVar
from .links import Identity, Link, MeanLogVar, Scale
from .poisson import Poisson

__all__ = ["ExponentialFamily", "Support", "Gaussian", "Bernoulli", "Categorical", "Poisson",
           "GaussianMeanVar", "Link", "Identity", "Scale", "MeanLogVar", "get", "available", "REGISTRY"]

REGISTRY: dict[str, Callable[..., ExponentialFamily]] = {
    "gaussian": Gaussian,
    "bernoulli": Bernoulli,
    "categorical": Categorical,
    "poisson": Poisson,
    "gaussian_meanvar": GaussianMeanVar,
}


def available() -> list[str]:
    """Names accepted by :func:`get`."""
    return sorted(REGISTRY)


def get(name: str | ExponentialFamily, **params) -> ExponentialFamily:
    """Build a family by name, e.g. ``get("categorical", C=10)``, ``get("gaussian", sigma2=0.5)``.

    An :class:`ExponentialFamily` instance is returned unchanged (params must then be empty).
    Anything else (a list, a class, None, …) is refused with a TypeError naming its type.
    """
    if isinstance(name, ExponentialFamily):
        if params:
            raise ValueError("parameters given together with a family instance; pass one or the other")
        return name
    if not isinstance(name, str):
        raise TypeError(f"family must be a name (str) or an ExponentialFamily instance, got "
                        f"{type(name).__name__} ({name!r:.80}); available names: {', '.join(available())}")
    if name not in REGISTRY:
        raise ValueError(f"unknown family {name!r}; available: {', '.join(available())}")
    try:
        return REGISTRY[name](**params)
    except TypeError as exc:
        if "keyword argument" not in str(exc):  # a parameter of the wrong type: the family's own message
            raise
        raise ValueError(f"invalid parameters {params} for family {name!r}: {exc}") from None
