"""Categorical output with softmax logits, THEORY.md §4 row 3.

h = logits ∈ ℝ^C, t(y) = one-hot, F(h) = log Σ_a e^{h_a}, p = softmax(h),
Σ = diag(p) − ppᵀ.  With ū = Σ_a p_a u_a and d = u − ū:

    uᵀΣu = Σ_a p_a d_a²,   M₄(u,u,u,u) = Σ_a p_a d_a⁴,
    N·V₁ = Σ_a p_a d_a⁴ − (Σ_a p_a d_a²)²,   N·V₂ = Σ_a p_a (w_a − w̄)².

Constants (THEORY §5): Theorem 5.2 with m = min(max_k p_k, 1 − ‖p‖²):
λ_max(Σ) ≤ m and λ̃_max(M) ≤ 2m; Corollary R.1: λ̃_max(K) ≤ 2λ_max(Σ).
Σ𝟙 = 0, so λ_min(Σ) = λ̃_min(M) = λ̃_min(K) = 0 (direction 𝟙/√C), and
everything is invariant to u ↦ u + c𝟙: the sharpened bounds work on 𝟙^⊥.
"""
from __future__ import annotations

from typing import Sequence

import sympy as sp
import torch

from .base import ExponentialFamily, Support, batch_shape
from .links import Link, get_link

__all__ = ["Categorical"]


class Categorical(ExponentialFamily):
    name = "categorical"
    discrete = True
    shift_invariant = True

    def __init__(self, C: int = 10, link: str | Link | None = None):
        if not isinstance(C, int) or C < 2:
            raise ValueError(f"categorical: needs C >= 2 classes (an integer), got {C!r}; "
                             "for two classes with one logit use 'bernoulli'")
        super().__init__(C, get_link(link, None) if link is not None else None)

    def log_partition_sym(self, h: Sequence[sp.Expr]) -> sp.Expr:
        return sp.log(sp.Add(*[sp.exp(hi) for hi in h]))

    def mean_params_sym(self) -> dict[sp.Expr, sp.Expr]:
        # h_a = log p_a (a representative of the shift class); Σ_a p_a = 1 is
        # used by ``display`` to simplify.
        return {ha: sp.log(pa) for ha, pa in zip(self.h_sym, self.p_sym)}

    @property
    def p_sym(self) -> tuple[sp.Symbol, ...]:
        return tuple(sp.Symbol(f"p_{a + 1}", positive=True) for a in range(self.C))

    def display(self, expr):
        """Rewrite in p_a (Σ_a p_a = 1 substituted for the normaliser)."""
        subs = self.mean_params_sym()
        total = sp.Add(*self.p_sym)

        def f(e):
            e = sp.factor(sp.cancel(sp.expand_log(e.subs(subs), force=True)))
            return sp.factor(e.subs(total, 1))
        if isinstance(expr, (sp.MatrixBase, sp.NDimArray)):
            return expr.applyfunc(f)
        return f(expr)

    # numeric closed forms
    def log_partition(self, h: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(h, dim=-1)

    def mean(self, h: torch.Tensor) -> torch.Tensor:
        return torch.softmax(h, dim=-1)

    def sigma(self, h: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(h, dim=-1)
        return torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)

    def quad_forms(self, h: torch.Tensor, u: torch.Tensor, cdim: int = -1,
                   moments: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The one definition of the softmax's directional forms (THEORY §4 row 3): with
        d = u − ū, ū = Σ_a p_a u_a,

            uᵀΣu = Σ_a p_a d_a²,    M(u,u,u,u) = Σ_a p_a d_a⁴ − (Σ_a p_a d_a²)²,

        evaluated for all K directions at once as batched products p·(d²), p·(d⁴) in the
        (…, C, K) layout (``cdim=1``; (…, K, C) is transposed as a view).  Temporaries are
        squared in place unless autograd needs them."""
        single = u.dim() == h.dim()
        if single:
            u = u.unsqueeze(-1 if cdim == 1 else -2)
        if cdim != 1:
            u = u.transpose(-1, -2)
        pr = torch.softmax(h, dim=-1).unsqueeze(-2)          # (…, 1, C)
        inplace = not (torch.is_grad_enabled() and (u.requires_grad or h.requires_grad))
        d = u - pr @ u
        d2 = d.square_() if inplace else d * d
        sq = (pr @ d2).squeeze(-2)
        mq = None
        if moments:
            d4 = d2.square_() if inplace else d2 * d2
            mq = (pr @ d4).squeeze(-2) - sq * sq
        if single:
            sq = sq.squeeze(-1)
            mq = None if mq is None else mq.squeeze(-1)
        return sq, mq

    def sigma_quad(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.quad_forms(h, u, moments=False)[0].expand(batch_shape(h, u))

    def mquad(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.quad_forms(h, u)[1].expand(batch_shape(h, u))

    def m4(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """M₄(u,u,u,u) = Σ_a p_a d_a⁴ = M(u,u,u,u) + (uᵀΣu)²."""
        sq, mq = self.quad_forms(h, u)
        return (mq + sq * sq).expand(batch_shape(h, u))

    def kappa4(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """κ₄(u,u,u,u) = M(u,u,u,u) − 2(uᵀΣu)²."""
        sq, mq = self.quad_forms(h, u)
        return (mq - 2 * sq * sq).expand(batch_shape(h, u))

    def sample(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        h = self.check_h(h)
        p = torch.softmax(h, dim=-1).reshape(-1, self.C)
        idx = torch.multinomial(p, n, replacement=True, generator=generator)  # (B, n)
        onehot = torch.nn.functional.one_hot(idx.T, self.C).to(h.dtype)  # (n, B, C)
        return onehot.reshape(n, *h.shape)

    def log_base_measure(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros(t.shape[:-1], dtype=t.dtype, device=t.device)

    def support(self, h: torch.Tensor, tail: float = 0.0) -> Support:
        t = torch.eye(self.C, dtype=h.dtype, device=h.device)
        return Support(t, torch.log_softmax(h, dim=-1), 0.0)

    def support_radius_sq(self, h: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(h, dim=-1)
        return 1 - 2 * p.min(-1).values + (p * p).sum(-1)

    def theorem52_m(self, h: torch.Tensor) -> torch.Tensor:
        """m(x) = min(max_k p_k, 1 − ‖p‖²) of Theorem 5.2."""
        p = torch.softmax(h, dim=-1)
        return torch.minimum(p.max(-1).values, 1 - (p * p).sum(-1))

    def closed_form_constants(self, h: torch.Tensor, restricted: bool = False,
                              sigma_max: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        m = self.theorem52_m(h)
        if sigma_max is None:  # λ_max(Σ), widened by the eigensolver's error bound
            from .constants import eig_margin
            S = self.sigma(h)
            sigma_max = torch.linalg.eigvalsh(S)[..., -1] + eig_margin(S)
        lam_max = sigma_max
        out = {"M_max_upper": 2 * m, "sigma_max_upper": m, "K_max_upper": 2 * lam_max}
        if not restricted:
            zero = torch.zeros_like(m)
            out.update({"sigma_min": zero, "M_min": zero, "K_min": zero})
        return out
