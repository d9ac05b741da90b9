"""Shared helpers of the numeric tests: small models and brute-force label enumeration."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, hessian

from fishersym import families

FAMILIES = {
    "gaussian": dict(C=2, sigma2=0.7),
    "bernoulli": {},
    "categorical": dict(C=3),
    "poisson": dict(C=1),
    "gaussian_meanvar": {},
}


def make_family(name):
    return families.get(name, **FAMILIES[name])


def small_mlp(out_dim, seed=0, act=nn.Tanh, widths=(3, 4), d_in=2, scale=0.7):
    g = torch.Generator().manual_seed(seed)
    layers, d = [], d_in
    for w in widths:
        layers += [nn.Linear(d, w), act()]
        d = w
    layers.append(nn.Linear(d, out_dim))
    model = nn.Sequential(*layers).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return model


def label_nodes(family, h, n_gh=10):
    """Labels with probabilities per input: (t (B,S,C), p (B,S)).  Discrete: the enumerated support;
    Gaussians: Gauss–Hermite nodes (exact for the polynomial moments needed, degree ≤ 8 in y)."""
    B = h.shape[0]
    if family.discrete:
        sup = family.support(h)
        return sup.t.unsqueeze(0).expand(B, -1, -1), sup.prob
    z, w = np.polynomial.hermite_e.hermegauss(n_gh)
    z, w = torch.tensor(z), torch.tensor(w / w.sum())
    if family.name == "gaussian":
        C, s = family.C, family.sigma2 ** 0.5
        grid = torch.cartesian_prod(*([torch.arange(n_gh)] * C)).reshape(-1, C)
        zz, ww = z[grid], w[grid].prod(-1)
        mu = family.mean(h)
        return mu.unsqueeze(1) + s * zz.unsqueeze(0), ww.expand(B, -1)
    if family.name == "gaussian_meanvar":
        m = family.mean(h)
        mu, var = m[:, 0], m[:, 1] - m[:, 0] ** 2
        y = mu.unsqueeze(1) + var.sqrt().unsqueeze(1) * z.unsqueeze(0)
        return torch.stack([y, y * y], -1), w.expand(B, -1)
    raise NotImplementedError(family.name)


def brute_force(model, x, family, n_samples=1):
    """I, V₁, V₂ per parameter from the definitions: per-label score² and −∂²ℓ/∂θ_i² by autograd of
    log_prob, then E and Var over the enumerated/quadrature label distribution (THEORY §2)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    names = list(params)
    shapes = [params[n].shape for n in names]
    flat0 = torch.cat([params[n].reshape(-1) for n in names])

    def unflat(v):
        out, i = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            out[n] = v[i:i + k].reshape(s)
            i += k
        return out

    with torch.no_grad():
        h = family.natural(model(x))
    T, Pw = label_nodes(family, h)
    res = {k: [] for k in ("fisher", "var1", "var2")}
    for b in range(x.shape[0]):
        def ell(v, t, b=b):
            hb = family.link(functional_call(model, unflat(v), (x[b:b + 1],)))[0]
            return family.log_prob(t, hb)
        s2, hd = [], []
        for s in range(T.shape[1]):
            g = grad(ell)(flat0, T[b, s])
            H = hessian(ell)(flat0, T[b, s])
            s2.append(g * g)
            hd.append(-torch.diagonal(H))
        s2, hd, p = torch.stack(s2), torch.stack(hd), Pw[b].unsqueeze(1)
        I = (p * s2).sum(0)
        res["fisher"].append(I)
        res["var1"].append(((p * (s2 - I) ** 2).sum(0)) / n_samples)
        m2 = (p * hd).sum(0)
        res["var2"].append(((p * (hd - m2) ** 2).sum(0)) / n_samples)
        assert torch.allclose(m2, I, rtol=1e-8, atol=1e-12), "E[−∂²ℓ] ≠ E[(∂ℓ)²]: quadrature too coarse"
    out = {}
    for k, v in res.items():
        v = torch.stack(v)
        parts = torch.split(v, [int(np.prod(s)) for s in shapes], 1)
        out[k] = {n: t.reshape(x.shape[0], *s) for n, s, t in zip(names, shapes, parts)}
    return out


def assert_close_maps(a, b, rtol, atol_rel=1e-13, label=""):
    scale = max(max(float(v.abs().max()) for v in b.values()), 1e-300)  # per key, over all parameters
    for n in b:
        x, y = a[n], b[n]
        err = (x - y).abs() - rtol * y.abs() - atol_rel * scale
        assert float(err.max()) <= 0, f"{label} {n}: max |diff| {float((x - y).abs().max()):.3e}, scale {scale:.3e}"
