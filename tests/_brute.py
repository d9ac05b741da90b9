"""Brute-force moments for the family tests, written from the definitions only.

Discrete families: the pmf is written out here (not taken from the package)
and moments are exact sums over the (truncated) support.  Gaussian families:
Gauss–Hermite quadrature, exact for the polynomials involved.
"""
from __future__ import annotations

import itertools
import math

import numpy as np


def pmf_support(name: str, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t values (S, C), probabilities (S,)) for a discrete family at h (C,)."""
    if name == "bernoulli":
        p = 1.0 / (1.0 + math.exp(-h[0]))
        return np.array([[0.0], [1.0]]), np.array([1 - p, p])
    if name == "categorical":
        e = np.exp(h - h.max())
        return np.eye(len(h)), e / e.sum()
    if name == "poisson":
        lam = np.exp(h)
        ymax = int(lam.max() + 30 * math.sqrt(lam.max()) + 40)
        ys = np.arange(ymax)
        logp1 = [ys * math.log(l) - l - np.array([math.lgamma(y + 1) for y in ys]) for l in lam]
        pts = np.array(list(itertools.product(ys, repeat=len(h))), dtype=float)
        logp = sum(logp1[c][pts[:, c].astype(int)] for c in range(len(h)))
        return pts, np.exp(logp)
    raise ValueError(name)


def gaussian_support(name: str, h: np.ndarray, sigma2: float = 1.0, n: int = 40):
    """Quadrature nodes as a weighted 'support' (t values, weights)."""
    z, wz = np.polynomial.hermite_e.hermegauss(n)
    wz = wz / wz.sum()
    if name == "gaussian":
        C = len(h)
        mu = sigma2 * h
        grids = [mu[c] + math.sqrt(sigma2) * z for c in range(C)]
        pts = np.array(list(itertools.product(*grids)))
        w = np.prod(np.array(list(itertools.product(*([wz] * C)))), axis=1)
        return pts, w
    if name == "gaussian_meanvar":
        var = -0.5 / h[1]
        mu = h[0] * var
        y = mu + math.sqrt(var) * z
        return np.stack([y, y * y], axis=1), wz
    raise ValueError(name)


def support_for(fam, h: np.ndarray):
    if fam.name in ("gaussian", "gaussian_meanvar"):
        return gaussian_support(fam.name, h, getattr(fam, "sigma2", 1.0))
    return pmf_support(fam.name, h)


def moments(fam, h: np.ndarray, u: np.ndarray) -> dict[str, float | np.ndarray]:
    """E[t], Σ, uᵀΣu, M₄(u⁴) = E(uᵀr)⁴, κ₄(u⁴) and E(uᵀr)⁸ by brute force."""
    t, w = support_for(fam, h)
    assert abs(w.sum() - 1) < 1e-13
    eta = w @ t
    r = t - eta
    Sigma = (r * w[:, None]).T @ r
    ur = r @ u
    s = float(w @ ur ** 2)
    m4 = float(w @ ur ** 4)
    return {"eta": eta, "Sigma": Sigma, "sq": s, "m4": m4, "kappa4": m4 - 3 * s * s,
            "mquad": m4 - s * s, "m8": float(w @ ur ** 8), "r4": float(w @ (r * r).sum(1) ** 2)}
