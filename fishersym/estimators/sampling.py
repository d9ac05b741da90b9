"""Monte Carlo draws of the estimators, computed as a user computes them: by autograd of the
log-likelihood log p(y|x;θ) = log π(y) + t(y)ᵀh − F(h) (THEORY §1–§2, §13), never through the closed
forms of the variances.  These are the reference the closed forms are checked against (with
enumeration over labels and probes in the tests), and what :func:`fishersym.estimators.sample` returns.
"""
from __future__ import annotations

import functools

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from ..families.base import ExponentialFamily
from ..numeric.attention import math_attention
from ..numeric.estimators import statistic
from ..numeric.safe_ad import preserved_attributes

__all__ = ["Context"]

Values = dict[str, torch.Tensor]


class Context:
    """A batch of inputs (and observed labels) with the model held as a function of its trainable
    parameters.  Methods return dicts {name: tensor} of per-input values (B, *shape) or sums (*shape)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, family: ExponentialFamily,
                 y: torch.Tensor | None = None) -> None:
        self.model, self.x, self.family, self.y = model, x, family, y
        self.params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        self.fixed = {n: v.detach() for n, v in model.named_parameters() if not v.requires_grad}
        self.fixed.update({n: v.detach() for n, v in model.named_buffers()})
        with torch.no_grad(), math_attention(), preserved_attributes(model):
            self.h = family.natural(model(x))
        self.B, self.C = self.h.shape

    def observed(self) -> torch.Tensor:
        """t(y_m) (B, C) of the observed labels (:func:`fishersym.numeric.estimators.statistic`)."""
        if self.y is None:
            raise ValueError("the empirical estimators need observed labels: pass data as (x, y) or (x, y) batches")
        return statistic(self.family, self.y, self.h.dtype)

    # -- the model as a function ---------------------------------------------------------------------
    def h_of(self, values: Values, x: torch.Tensor) -> torch.Tensor:
        """The natural parameters h(x) of the model with the parameters ``values`` (the others fixed)."""
        out = functional_call(self.model, {**self.fixed, **values}, (x,), tie_weights=True, strict=False)
        return self.family.link(out)

    def _run(self, f):
        with math_attention(), preserved_attributes(self.model):
            return f()

    # -- gradients ---------------------------------------------------------------------------------------
    def per_input_grad_with(self, loss, extra: torch.Tensor) -> Values:
        """{name: (B, *shape)}: ∂/∂θ loss(h(x_m), extra_m) per input m."""
        def one(values, x1, e1):
            return loss(self.h_of(values, x1.unsqueeze(0))[0], e1)
        return self._run(lambda: vmap(grad(one), in_dims=(None, 0, 0))(self.params, self.x, extra))

    def batch_grad(self, loss, extra: torch.Tensor) -> Values:
        """{name: (*shape)}: ∂/∂θ Σ_m loss(h(x_m), extra_m), one backward of the whole batch."""
        def total(values):
            h = self.h_of(values, self.x)
            return vmap(loss)(h, extra).sum()
        return self._run(lambda: grad(total)(self.params))

    def log_lik(self, h1: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        """log p(y|x) for one input's natural parameters h1 (C,) and statistic t1 (C,)."""
        return self.family.log_prob(t1, h1)

    def ggn_vector(self, z: Values) -> Values:
        """F z = Σ_m J_mᵀ Σ_m J_m z (the Fisher–vector product: a Jacobian-vector product, Σ, a
        vector-Jacobian product), the way curvlinops and AdaHessian apply F to a probe."""
        def hfun(values):
            return self.h_of(values, self.x)

        def fz():
            _, Jz = jvp(hfun, (self.params,), (z,))                   # (B, C)
            S = self.family.sigma(self.h)
            coeff = torch.einsum("bcd,bd->bc", S, Jz).detach()
            return grad(lambda v: (hfun(v) * coeff).sum())(self.params)
        return self._run(fz)

    def hessian_diag(self, t: torch.Tensor, chunk: int = 256) -> Values:
        """diag of ∂²/∂θ² Σ_m log p(y_m|x_m) for statistics t (B, C), by forward-over-reverse along
        every unit vector e_i (one Hessian-vector product per entry, vmapped in chunks): exact,
        meant for the small models of tests and experiments."""
        def total(values):
            return vmap(self.log_lik)(self.h_of(values, self.x), t).sum()

        g = grad(total)
        out: Values = {}

        def entries(name, idx):
            p0 = self.params[name]

            def hvp_i(i):
                e = torch.zeros(p0.numel(), dtype=p0.dtype, device=p0.device).index_fill(0, i.reshape(1), 1.0)
                tan = {n: (e.reshape(p0.shape) if n == name else torch.zeros_like(v)) for n, v in self.params.items()}
                return jvp(g, (self.params,), (tan,))[1][name].reshape(-1)[i]
            return vmap(hvp_i)(idx)

        for name, p0 in self.params.items():
            n = p0.numel()
            vals = [self._run(functools.partial(entries, name, torch.arange(s, min(n, s + chunk), device=p0.device)))
                    for s in range(0, n, chunk)]
            out[name] = torch.cat(vals).reshape(p0.shape)
        return out

    # -- probes --------------------------------------------------------------------------------------------
    def probes(self, kind: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """Gaussian N(0, 1) or Rademacher ±1 entries of the given shape."""
        dt, dev = self.h.dtype, self.h.device
        if kind == "gaussian":
            return torch.randn(shape, dtype=dt, device=dev, generator=generator)
        if kind == "rademacher":
            return torch.randint(0, 2, shape, device=dev, generator=generator).to(dt) * 2 - 1
        raise ValueError(f"probe kind must be 'gaussian' or 'rademacher', got {kind!r}")


def square_sum(g: Values) -> Values:
    """Σ_m g_m² for per-input gradients {name: (B, *shape)}."""
    return {n: (v * v).sum(0) for n, v in g.items()}


def add_into(acc: Values | None, v: Values, scale: float = 1.0) -> Values:
    if acc is None:
        return {n: t * scale for n, t in v.items()}
    return {n: acc[n] + t * scale for n, t in v.items()}


def label_average(ctx: Context, n_samples: int, generator: torch.Generator, per_label, scale: float = 1.0) -> Values:
    """scale·(1/N) Σ_k per_label(t_k) over N label draws t_k ~ p(y|x_m) (one per input each, (B, C))."""
    acc: Values | None = None
    for _ in range(n_samples):
        t = ctx.family.sample(ctx.h, 1, generator)[0]
        acc = add_into(acc, per_label(t), scale / n_samples)
    assert acc is not None      # n_samples ≥ 1 (Estimator.check_n)
    return acc
