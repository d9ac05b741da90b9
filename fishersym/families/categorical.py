"""Categorical output with softmax logits, THEORY §4 row 3.

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

from collections.abc import Sequence

import sympy as sp
import torch
from typing_extensions import override

from .base import ExponentialFamily, Support, batch_shape
from .._checks import as_count
from .links import Link, get_link

__all__ = ["Categorical"]


class Categorical(ExponentialFamily):
    """Categorical output with softmax logits, THEORY §4 row 3.

    F(h) = log Σ_a e^{h_a}, p = softmax(h), Σ = diag(p) − ppᵀ (module docstring).

    Args:
        C: the number of classes (an integer ≥ 2; one logit for two classes is the Bernoulli).
        link: the link from the network's outputs o to the logits h (default: the identity, h = o).
    """

    name = "categorical"
    discrete = True
    shift_invariant = True
    display_probabilities = True

    @override
    def latex_constants_note(self) -> str:
        return (" Theorem 5.2 gives $\\lambda_{\\max}(\\Sigma) \\le m(x)$ and "
                "$\\tilde\\lambda_{\\max}(M) \\le 2m(x)$ with $m(x) = \\min(\\max_k p_k, 1 - \\|p\\|^2)$; "
                "$\\lambda_{\\min}(\\Sigma) = \\tilde\\lambda_{\\min}(M) = 0$ along $\\mathbf 1$, so the "
                "sharpened bounds below work on $\\mathbf 1^\\perp$ with the projections "
                "$u^\\perp = u - \\tfrac1C\\mathbf 1\\mathbf 1^\\top u$.")

    example_params = {"C": 3}
    fuzz_output_cap = 50.0   # the stable complements keep saturated softmaxes accurate (issue 13 item 2)

    @classmethod
    def param_strategy(cls, max_classes: int = 5):
        """C ∈ 2..max_classes."""
        from hypothesis import strategies as st
        return st.fixed_dictionaries({"C": st.integers(2, max_classes)})

    def class_prediction(self, o: torch.Tensor) -> torch.Tensor:
        """argmax of the logits."""
        return o.argmax(-1)

    def display_domain(self) -> dict[sp.Symbol, sp.Set]:
        """Each p_a ∈ (0, 1) (the simplex's coordinate ranges)."""
        return {pa: sp.Interval.open(0, 1) for pa in self.p_sym}

    def display_positivity_subs(self) -> dict[sp.Symbol, sp.Expr]:
        """p_a = t_a / Σ_b t_b with t_a > 0: the simplex, so that 1 − p_a is visibly positive."""
        ts = [sp.Symbol(f"t_pos{a}", positive=True) for a in range(self.C)]
        tot = sp.Add(*ts)
        return {pa: t / tot for pa, t in zip(self.p_sym, ts)}

    def display_sigma(self) -> sp.Matrix:
        """Σ = diag(p) − ppᵀ (``symbolic.estimators.prove_softmax_factor`` proves it equal to ∇²F on the
        simplex), which avoids simplifying ∇²F for large C."""
        p = sp.Matrix(self.p_sym)
        return sp.diag(*p) - p * p.T

    def sigma_factor_sym(self) -> sp.Matrix:
        """L = (I − p𝟙ᵀ) diag(√p), exact for the singular Σ = diag(p) − ppᵀ (THEORY §13)."""
        p = self.p_sym
        C = len(p)
        return (sp.eye(C) - sp.Matrix(p) * sp.ones(1, C)) * sp.diag(*[sp.sqrt(pa) for pa in p])

    def output_probe_forms_sym(self, u) -> tuple[sp.Expr, sp.Expr]:
        """Centred forms (Σ_a p_a d_a², Σ_a p_a² d_a⁴), d = u − ū, ū = Σ_a p_a u_a: equal to uᵀΣu and
        ‖Lᵀu‖₄⁴ on the simplex (``symbolic.estimators.prove_softmax_factor``)."""
        p = self.p_sym
        ubar = sp.Add(*[pa * ua for pa, ua in zip(p, u)])
        return (sp.Add(*[pa * (ua - ubar) ** 2 for pa, ua in zip(p, u)]),
                sp.Add(*[pa ** 2 * (ua - ubar) ** 4 for pa, ua in zip(p, u)]))

    def readable_forms_sym(self, U, W, derived):
        """Centred forms with d = u − ū, ū = Σ_a p_a u_a (THEORY §4 row 3): uᵀΣu = Σ_a p_a d_a²,
        N·V₁ = Σ_a p_a d_a⁴ − (Σ_a p_a d_a²)², N·V₂ = Σ_a p_a (w_a − w̄)², each proven equal to the
        derived form on the simplex (p_C = 1 − Σ_{a<C} p_a, expanded); an AssertionError otherwise."""
        ps = self.p_sym
        ubar = sp.Add(*[p * u for p, u in zip(ps, U)])
        wbar = sp.Add(*[p * w for p, w in zip(ps, W)])
        d = [u - ubar for u in U]
        I_c = sp.Add(*[p * di ** 2 for p, di in zip(ps, d)])
        V1_c = sp.Add(*[p * di ** 4 for p, di in zip(ps, d)]) - I_c ** 2
        V2_c = sp.Add(*[p * (w - wbar) ** 2 for p, w in zip(ps, W)])
        simplex = {ps[-1]: 1 - sp.Add(*ps[:-1])}
        out = {"fisher": I_c, "var1": V1_c, "var2": V2_c}
        for key, mine in out.items():
            if sp.expand((mine - derived[key]).xreplace(simplex)) != 0:  # pragma: no cover - would be a bug
                raise AssertionError(f"centred softmax form of {key} differs from the derived one")
        return out

    def __init__(self, C: int = 10, link: str | Link | None = None):
        try:
            C = as_count(C, "C", minimum=2, prefix="categorical: ", non_integer=ValueError)  # numpy ints too
        except ValueError:
            raise ValueError(f"categorical: needs C >= 2 classes (an integer), got {C!r}; "
                             "for two classes with one logit use 'bernoulli'") from None
        super().__init__(C, get_link(link, None) if link is not None else None)

    @override
    def log_partition_sym(self, h: Sequence[sp.Expr]) -> sp.Expr:
        return sp.log(sp.Add(*[sp.exp(hi) for hi in h]))

    @override
    def mean_params_sym(self) -> dict[sp.Expr, sp.Expr]:
        # h_a = log p_a (a representative of the shift class); Σ_a p_a = 1 is
        # used by ``display`` to simplify.
        return {ha: sp.log(pa) for ha, pa in zip(self.h_sym, self.p_sym)}

    @property
    def p_sym(self) -> tuple[sp.Symbol, ...]:
        """The display coordinates p_1..p_C = softmax(h) (positive symbols)."""
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
    @override
    def log_partition(self, h: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(h, dim=-1)

    @override
    def mean(self, h: torch.Tensor) -> torch.Tensor:
        return torch.softmax(h, dim=-1)

    # ------------------------------------------------------------------ stable pieces (issue 13 items 2, 16)
    @staticmethod
    def probs_and_complements(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(p, q) with p = softmax(h) and q_a = 1 − p_a computed without cancellation.

        For a class a other than the arg-max, p_a ≤ ½, so 1 − p_a ∈ [½, 1] has relative error ≤ ε;
        for the arg-max class a*, q_{a*} = Σ_{b≠a*} p_b, a sum of non-negative terms (relative error
        ≤ (C−1)ε beyond the p_b's own), never 1 − p_{a*}, which rounds to 0 at a saturated softmax."""
        p = torch.softmax(h, dim=-1)
        top = torch.nn.functional.one_hot(p.argmax(-1), h.shape[-1]).to(torch.bool)
        others = p.masked_fill(top, 0.0).sum(-1, keepdim=True)
        return p, torch.where(top, others, 1 - p)

    @staticmethod
    def softmax_rel_error(h: torch.Tensor) -> torch.Tensor:
        """η (..., 1): a bound on the relative error of every computed p_a = softmax(h)_a:
        η = ε·(spread + C + 8), spread = max h − min h (the rounding of h_a − max h becomes a relative
        error ε·|h_a − max h| after exp; exp itself ≤ 4 ulp; the sum of C terms; the division).
        Valid while p_a is a normal number; subnormal p_a are handled by absolute terms where used."""
        eps = torch.finfo(h.dtype).eps
        spread = h.amax(-1, keepdim=True) - h.amin(-1, keepdim=True)
        return eps * (spread + h.shape[-1] + 8)

    def sigma(self, h: torch.Tensor) -> torch.Tensor:
        """Σ = diag(p) − ppᵀ with the diagonal formed as p_a·q_a (q the stable complement), not p − p²."""
        p, q = self.probs_and_complements(h)
        S = -(p.unsqueeze(-1) * p.unsqueeze(-2))
        return torch.diagonal_scatter(S, p * q, dim1=-2, dim2=-1)

    def quad_forms(self, h: torch.Tensor, u: torch.Tensor, cdim: int = -1, moments: bool = True,
                   error: bool = False):
        """The one definition of the softmax's directional forms uᵀΣu and M(u,u,u,u) = N·V₁ (THEORY §4 row 3).

        With d = u − ū, ū = Σ_a p_a u_a, s = Σ_a p_a d_a²,

            uᵀΣu = s,    M(u,u,u,u) = N·V₁ = Σ_a p_a (d_a² − s)²

        (a sum of non-negative terms; mathematically Σ_a p_a d_a⁴ − s², the moment form that cancels),
        evaluated for all K directions at once as batched products p·(d²), p·(e²), e = d² − s, in the
        (…, C, K) layout (``cdim=1``; (…, K, C) is transposed as a view).  Temporaries are updated in
        place unless autograd needs them.

        ``error=True`` returns a third tensor: a bound on the absolute rounding error of the computed
        N·V₁ (u taken as exact, p = softmax(h) computed).  Derivation (ε = the dtype's machine epsilon,
        γ = η + Cε with η = :meth:`softmax_rel_error`, the error of a p-weighted sum of C terms):
        |ū' − ū| ≤ E_ū = γ(|ū| + √s) (Σp|u| ≤ |ū| + √s); |d'² − d²| ≤ D_a = 2|d_a|E_ū + 3εd_a² with
        ‖D‖_p = (Σ p D²)^½ ≤ 2E_ū√s + 3ε(Σ p d⁴)^½, Σ p d⁴ = N·V₁ + s²; |s' − s| ≤ E_s = 2E_ū√s + (3ε + γ)s;
        |e'_a − e_a| ≤ D_a + E_s + ε|e'_a|.  With A = (N·V₁')^½ = ‖e'‖_p and Δ = ‖D‖_p + E_s + εA ≥ ‖e' − e‖_p,
        Minkowski gives |‖e‖_p − A| ≤ Δ, so |N·V₁ − N·V₁'| ≤ Δ(2A + Δ) + (γ + 2ε)A² (the last term: the final
        weighted sum and squaring).  Where some computed p_a is subnormal or zero (logit gaps beyond
        ≈ 87 in float32, 708 in float64) each p_a also carries an absolute error τ = 4·tiny·ε, adding
        Cτ·max|u|, 4Cτ·max u² and Cτ(4max u² + s)² to E_ū, E_s and the bound.  Gradual underflow adds
        at most half the smallest subnormal per operation (about 3C + 4 of them) for a non-zero u: a
        V₁ that underflows to 0 while u ≠ 0 is then flagged, an exactly-zero u is not.  First order in ε: the
        neglected terms are below 1e-3 of the bound whenever the bound is below 1e-3 relative, which
        is where it is used (the precision flag)."""
        single = u.dim() == h.dim()
        if single:
            u = u.unsqueeze(-1 if cdim == 1 else -2)
        if cdim != 1:
            u = u.transpose(-1, -2)
        pr = torch.softmax(h, dim=-1).unsqueeze(-2)          # (…, 1, C)
        inplace = not (torch.is_grad_enabled() and (u.requires_grad or h.requires_grad))
        ubar = pr @ u                                        # (…, 1, K)
        d = u - ubar
        d2 = d.square_() if inplace else d * d
        sq = pr @ d2                                         # (…, 1, K)
        mq: torch.Tensor | None = None
        if moments:
            e = d2.sub_(sq) if inplace else d2 - sq
            e2 = e.square_() if inplace else e * e
            mq = (pr @ e2).squeeze(-2)
        sq = sq.squeeze(-2)
        err = self._nv1_error(h, pr, u, ubar.squeeze(-2), sq, mq) if (error and mq is not None) else None
        if single:
            sq = sq.squeeze(-1)
            mq = None if mq is None else mq.squeeze(-1)
            err = None if err is None else err.squeeze(-1)
        return (sq, mq, err) if error else (sq, mq)

    def axis_forms(self, h: torch.Tensor, s: torch.Tensor, error: bool = False):
        """:meth:`quad_forms` for the C axis directions u_c = s_c·e_c at once, in O(C) per input (the
        last Linear layer's u, G^L = diag(s), THEORY §7, needs no (…, C, C) matrix).

        With p the softmax and q the stable complement (:meth:`probs_and_complements`), for u = s·e_c:
        ū = s p_c, d = s(e_c − p_c𝟙), so

            uᵀΣu = s² p_c q_c,    N·V₁ = M(u,u,u,u) = s⁴ p_c q_c (q_c − p_c)²

        (the Bernoulli forms of the event {y = c}).  h, s (…, C); returns (fisher, nv1) or, with
        ``error=True``, (fisher, nv1, err), each (…, C), err a first-order bound on the absolute
        rounding error of the computed nv1 (s taken as exact): with γ = 2η + (C + 2)ε ≥ the relative
        error of p_c and q_c (η = :meth:`softmax_rel_error`), |(q − p)' − (q − p)| ≤ γ(p + q) + ε|q − p|,
        so err = s⁴[p q (2γ|q − p| + 2γ²) + (2γ + 8ε)·p q (q − p)²] plus an absolute 8·tiny·s⁴ for
        subnormal p.

        >>> import torch
        >>> fam = Categorical(4)
        >>> h = torch.tensor([[0.3, -1.0, 2.0, 0.0]], dtype=torch.float64)
        >>> s = torch.tensor([[1.0, 2.0, 0.5, -1.0]], dtype=torch.float64)
        >>> fi, nv1 = fam.axis_forms(h, s)
        >>> fi2, nv12 = fam.quad_forms(h, torch.diag_embed(s), cdim=1)
        >>> bool(torch.allclose(fi, fi2) and torch.allclose(nv1, nv12))
        True
        """
        p, q = self.probs_and_complements(h)
        s2 = s * s
        pq = p * q
        dq = q - p
        fisher = s2 * pq
        nv1 = s2 * s2 * pq * dq * dq
        if not error:
            return fisher, nv1
        with torch.no_grad():
            eps = torch.finfo(h.dtype).eps
            gam = 2 * self.softmax_rel_error(h) + (self.C + 2) * eps
            s4 = s2 * s2
            err = s4 * pq * (2 * gam * dq.abs() + 2 * gam * gam) + (2 * gam + 8 * eps) * nv1.abs() \
                + 8 * torch.finfo(h.dtype).tiny * s4
        return fisher, nv1, err

    def _nv1_error(self, h: torch.Tensor, pr: torch.Tensor, u: torch.Tensor, ubar: torch.Tensor,
                   s: torch.Tensor, nv1: torch.Tensor) -> torch.Tensor:
        """The rounding bound of :meth:`quad_forms` (u in the (…, C, K) layout; ubar, s, nv1 (…, K))."""
        with torch.no_grad():
            eps = torch.finfo(s.dtype).eps
            gam = self.softmax_rel_error(h) + h.shape[-1] * eps          # (…, 1)
            s = s.clamp_min(0)
            rs, A = s.sqrt(), nv1.clamp_min(0).sqrt()
            E_u = gam * (ubar.abs() + rs)
            E_s = 2 * E_u * rs + (3 * eps + gam) * s
            extra = None
            pmin = pr.squeeze(-2).amin(-1, keepdim=True)                  # (…, 1)
            tiny = torch.finfo(s.dtype).tiny
            umax = torch.maximum(u.amax(-2), u.amin(-2).neg())            # (…, K) max_a |u_a|
            if bool((pmin < 2 * tiny).any()):
                tau = torch.where(pmin < 2 * tiny, 4 * tiny * eps * h.shape[-1], 0.0)   # C·τ per row
                E_u = E_u + tau * umax
                E_s = E_s + tau * 4 * umax * umax
                extra = tau * (4 * umax * umax + s) ** 2
            Dn = 2 * E_u * rs + 3 * eps * (nv1.clamp_min(0) + s * s).sqrt()
            delta = Dn + E_s + eps * A
            err = delta * (2 * A + delta) + (gam + 2 * eps) * A * A
            # gradual underflow: each of the ~3C + 4 operations adds at most half the smallest subnormal
            # in absolute terms (d², e² and their weighted sums underflow for |u| below ≈ 1e-77 in float64,
            # 1e-10 in float32); only for a non-zero direction, so an exactly-zero u stays exact
            err = err + torch.where(umax > 0, 2.0 * (3 * h.shape[-1] + 4) * tiny * eps,
                                    0.0)
            return err if extra is None else err + extra

    @override
    def sigma_quad(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.quad_forms(h, u, moments=False)[0].expand(batch_shape(h, u))

    @override
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

    #: Σ = diag(p) − ppᵀ is singular (Σ𝟙 = 0), so there is no Cholesky factor; this one is exact
    sigma_factor_name = "L = (I − p𝟙ᵀ)·diag(√p)"

    def sigma_factor(self, h: torch.Tensor) -> torch.Tensor:
        """L = (I − p𝟙ᵀ)diag(√p), so LLᵀ = diag(p) − 2ppᵀ + p(𝟙ᵀdiag(p)𝟙)pᵀ = diag(p) − ppᵀ = Σ
        (THEORY §13).  Materialises (..., C, C); :meth:`sigma_factor_t` and
        :meth:`sigma_factor_apply` never do."""
        p = torch.softmax(self.check_h(h), dim=-1)
        eye = torch.eye(self.C, dtype=p.dtype, device=p.device)
        return (eye - p.unsqueeze(-1)) * p.sqrt().unsqueeze(-2)

    def sigma_factor_t(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """(Lᵀu)_a = √p_a (u_a − ū), ū = pᵀu, in O(C) per direction: ‖Lᵀu‖₄⁴ = Σ_a p_a²(u_a − ū)⁴."""
        p = torch.softmax(self.check_h(h), dim=-1).unsqueeze(-2)          # (..., 1, C)
        ubar = (p * u).sum(-1, keepdim=True)
        return p.sqrt() * (u - ubar)

    def sigma_factor_apply(self, h: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """ξ_a = √p_a ε_a − p_a Σ_b √p_b ε_b, in O(C) per probe."""
        p = torch.softmax(self.check_h(h), dim=-1)
        se = p.sqrt() * eps
        return se - p * se.sum(-1, keepdim=True)

    @override
    def sample(self, h: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        h = self.check_h(h)
        p = torch.softmax(h, dim=-1).reshape(-1, self.C)
        idx = torch.multinomial(p, n, replacement=True, generator=generator)  # (B, n)
        onehot = torch.nn.functional.one_hot(idx.T, self.C).to(h.dtype)  # (n, B, C)
        return onehot.reshape(n, *h.shape)

    def statistic(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Class indices (B,) → one-hot t(y); floating labels are read as one-hot (B, C) already."""
        if y.is_floating_point():
            return super().statistic(y, dtype)
        if y.dim() != 1 or (y < 0).any() or (y >= self.C).any():
            raise ValueError(f"categorical labels must be class indices in [0, {self.C}) of shape (batch,)")
        return torch.nn.functional.one_hot(y, self.C).to(dtype)

    @override
    def log_base_measure(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros(t.shape[:-1], dtype=t.dtype, device=t.device)

    @override
    def support(self, h: torch.Tensor, tail: float = 0.0) -> Support:
        t = torch.eye(self.C, dtype=h.dtype, device=h.device)
        return Support(t, torch.log_softmax(h, dim=-1), 0.0)

    def _gram_pieces(self, h: torch.Tensor):
        """Stable inner products t_yz = r_y·r_z of the centred statistics r_y = e_y − p (..., C, C) and an
        entrywise bound on their rounding error.

        With a* the arg-max, p²' the squares with the a* entry set to 0, n₂ = Σ_{b≠a*} p_b² and P = p_{a*}²:

            t_yy = q_y² + Σ_{b≠y} p_b² = q_y² + n₂ + P·[y≠a*] − p²'_y,
            t_yz = −p_y q_y − p_z q_z + Σ_{b∉{y,z}} p_b²,   Σ_{b∉{y,z}} p_b² = n₂ + P·[y,z≠a*] − p²'_y − p²'_z.

        Every quantity is formed from p and the stable complements q (no 1 − ‖p‖²); the sums subtract
        only terms they contain, so each is accurate to ρ·(sum of the absolute values of its terms),
        ρ = 3(η + (C + 8)ε) (η the relative error of p, :meth:`softmax_rel_error`)."""
        p, q = self.probs_and_complements(h)
        eps = torch.finfo(h.dtype).eps
        rho = 3 * (self.softmax_rel_error(h) + (self.C + 8) * eps)           # (..., 1)
        top = torch.nn.functional.one_hot(p.argmax(-1), self.C).to(torch.bool)
        nt = (~top).to(p.dtype)
        p2 = p * p
        p2m = p2.masked_fill(top, 0.0)
        n2 = p2m.sum(-1, keepdim=True)
        P = (p2 * top).sum(-1, keepdim=True)
        pq = p * q
        both = nt.unsqueeze(-1) * nt.unsqueeze(-2)
        rest = n2.unsqueeze(-1) + P.unsqueeze(-1) * both - p2m.unsqueeze(-1) - p2m.unsqueeze(-2)
        T = rest - pq.unsqueeze(-1) - pq.unsqueeze(-2)
        mag = (n2.unsqueeze(-1) + P.unsqueeze(-1) * both + p2m.unsqueeze(-1) + p2m.unsqueeze(-2)
               + pq.unsqueeze(-1) + pq.unsqueeze(-2))
        diag = q * q + n2 + P * nt - p2m
        T = torch.diagonal_scatter(T, diag, dim1=-2, dim2=-1)
        mag = torch.diagonal_scatter(mag, q * q + n2 + P * nt + p2m, dim1=-2, dim2=-1)
        return p, T, rho.unsqueeze(-1) * mag

    def support_radius_sq(self, h: torch.Tensor) -> torch.Tensor:
        """B(h) = max_y ‖e_y − p‖² = max_y t_yy (Proposition 4.3), from the stable diagonal of
        :meth:`_gram_pieces` (no 1 − 2p_min + ‖p‖²)."""
        p, q = self.probs_and_complements(h)
        top = torch.nn.functional.one_hot(p.argmax(-1), self.C).to(torch.bool)
        p2 = p * p
        p2m = p2.masked_fill(top, 0.0)
        n2 = p2m.sum(-1, keepdim=True)
        P = (p2 * top).sum(-1, keepdim=True)
        return (q * q + n2 + P * (~top).to(p.dtype) - p2m).amax(-1)

    def theorem52_m(self, h: torch.Tensor) -> torch.Tensor:
        """m(x) = min(max_k p_k, 1 − ‖p‖²) of Theorem 5.2, with 1 − ‖p‖² = Σ_a p_a q_a (q the stable
        complement): a sum of non-negative terms, never rounded to 0 at a saturated softmax."""
        p, q = self.probs_and_complements(h)
        return torch.minimum(p.amax(-1), (p * q).sum(-1))

    def sym2_extremes(self, h: torch.Tensor, tensor: str = "M", restricted: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Certified (λ_min, λ_max) of mat(K) or M̄ on Sym²(ℝ^C) (or Sym²(𝟙^⊥)) from C × C Gram matrices.

        Identity (THEORY §3, §5).  M₄ = E[r⊗r⊗r⊗r] = Σ_y p_y r_y^{⊗4} with r_y = e_y − p, so
        mat(K) = Σ_y p_y x_y x_yᵀ = A Aᵀ with x_y = vec(r_y r_yᵀ) and A = [√p_y x_y]_y (C² × C).  The
        columns lie in Sym² (and in Sym²(𝟙^⊥): Σ_a r_ya = 1 − Σp = 0).  A Aᵀ and AᵀA have the same
        non-zero eigenvalues, and (AᵀA)_yz = √(p_y p_z) x_y·x_z = √(p_y p_z) t_yz², t_yz = r_y·r_z.
        M̄ = Cov[vec(r rᵀ)] = Σ_y p_y (x_y − x̄)(x_y − x̄)ᵀ with x̄ = vec(Σ) has the Gram matrix
        √(p_y p_z)[t_yz² − r_yᵀΣr_y − r_zᵀΣr_z + ‖Σ‖_F²], with r_yᵀΣr_y = Σ_z p_z t_yz² = v_y and
        ‖Σ‖_F² = Σ_y p_y v_y (Σ = Σ_z p_z r_z r_zᵀ); its columns satisfy Σ_y √p_y·(√p_y(x_y − x̄)) = 0,
        so its rank is ≤ C − 1.  On the D-dimensional symmetric space (D = C(C+1)/2, or C(C−1)/2 on
        𝟙^⊥) the restricted matrix has the non-zero Gram eigenvalues and D − rank zeros, so with r the
        rank bound (C for K, C − 1 for M̄): λ_max = λ_max(Gram); λ_min = 0 exactly when D > r (every
        unrestricted case, and C ≥ 4 on 𝟙^⊥; also M̄ at C = 3); otherwise (C ≤ 3 on 𝟙^⊥) the
        restricted spectrum is the top D Gram eigenvalues, so λ_min = the (C − D + 1)-th smallest.

        Floating point: the entries are built from the stable t_yz (:meth:`_gram_pieces`) and widened
        by the Frobenius norm of an entrywise first-order rounding bound E (Weyl: |λ(G + E) − λ(G)| ≤
        ‖E‖₂ ≤ ‖E‖_F) plus the eigensolver margin (:func:`~fishersym.families.constants.eig_margin`).
        Cost O(C³) per input, no C⁴ tensor, no limit on C beyond that; computed in chunks of inputs
        (:attr:`GRAM_CHUNK_ELEMENTS`), so the memory is O(C²) per chunk whatever the batch."""
        if tensor not in ("M", "K"):
            raise ValueError(f"tensor must be 'M' or 'K', got {tensor!r}")
        batch = h.shape[:-1]
        flat = h.reshape(-1, self.C)
        # chunk over inputs: about GRAM_CHUNK_ELEMENTS entries per (chunk, C, C) temporary (a dozen live at once)
        n = max(1, self.GRAM_CHUNK_ELEMENTS // (self.C * self.C))
        if flat.shape[0] <= n:
            lo, hi = self._sym2_extremes_chunk(flat, tensor, restricted)
        else:
            parts = [self._sym2_extremes_chunk(c, tensor, restricted) for c in flat.split(n)]
            lo, hi = torch.cat([q[0] for q in parts]), torch.cat([q[1] for q in parts])
        return lo.reshape(batch), hi.reshape(batch)

    #: entries of one (chunk, C, C) temporary of :meth:`sym2_extremes` (2²¹: 16 MiB in float64; at C = 1000
    #: two inputs per chunk, so the peak is about a dozen such temporaries whatever the batch)
    GRAM_CHUNK_ELEMENTS = 1 << 21

    def _sym2_extremes_chunk(self, h: torch.Tensor, tensor: str, restricted: bool
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`sym2_extremes` for one chunk of inputs h (n, C)."""
        from .constants import eig_margin
        C = self.C
        p, T, dT = self._gram_pieces(h)
        eps = torch.finfo(h.dtype).eps
        eta = (self.softmax_rel_error(h) + 2 * eps).unsqueeze(-1)           # (..., 1, 1)
        sp_ = p.sqrt()
        w = sp_.unsqueeze(-1) * sp_.unsqueeze(-2)
        T2 = T * T
        e2 = 2 * T.abs() * dT + dT * dT + 3 * eps * T2                     # |(t')² − t²|
        if tensor == "K":
            G = w * T2
            E = w * (e2 + eta * T2)
            rank = C
        else:
            pc = p.unsqueeze(-1)
            v = (T2 @ pc).squeeze(-1)                                      # v_y = r_yᵀΣr_y
            F = (p * v).sum(-1, keepdim=True)                              # ‖Σ‖_F²
            dv = (e2 @ pc).squeeze(-1) + (C * eps + eta[..., 0]) * v
            dF = (p * dv).sum(-1, keepdim=True) + (C * eps + eta[..., 0]) * F
            vy, vz = v.unsqueeze(-1), v.unsqueeze(-2)
            Fm = F.unsqueeze(-1)
            G = w * (T2 - vy - vz + Fm)
            E = w * (e2 + dv.unsqueeze(-1) + dv.unsqueeze(-2) + dF.unsqueeze(-1)
                     + (4 * eps + eta) * (T2 + vy + vz + Fm))
            rank = C - 1
        ev = torch.linalg.eigvalsh(G)
        margin = torch.linalg.matrix_norm(E) + eig_margin(G)
        D = C * (C - 1) // 2 if restricted else C * (C + 1) // 2
        hi = ev[..., -1] + margin
        lo = torch.zeros_like(hi) if D > rank else ev[..., C - D] - margin
        return lo, hi

    def sigma_extremes(self, h: torch.Tensor, restricted: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(λ_min, λ_max, certified lower bound of λ_min, certified upper bound of λ_max) of Σ on ℝ^C, or
        on 𝟙^⊥ (``restricted``), in O(C) per input with no C × C matrix (THEORY §14; proof in
        docs/math/certificates.md §2): Σ𝟙 = 0, so λ_min = 0 exactly on ℝ^C and, on 𝟙^⊥, λ_min is the
        second-smallest eigenvalue ν₂ of Σ; ν₂ and λ_max = ν_C are bracketed by the certified inertia
        count of the secular equation (:func:`fishersym.families.secular.softmax_sigma_brackets`),
        which encloses the eigenvalues of the exact softmax(h) (rounding of p included).  The first
        two values are the bracket midpoints (uncertified estimates; exact 0 for λ_min on ℝ^C)."""
        from .secular import softmax_sigma_brackets
        C = self.C
        ks = [2, C] if restricted else [C]
        a, b = softmax_sigma_brackets(h, ks, self.softmax_rel_error(h))
        mid = 0.5 * (a + b)
        if restricted:
            return mid[..., 0], mid[..., -1], a[..., 0], b[..., -1]
        zero = torch.zeros_like(mid[..., 0])
        return zero, mid[..., 0], zero, b[..., 0]

    @override
    def closed_form_constants(self, h: torch.Tensor, restricted: bool = False,
                              sigma_max: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        m = self.theorem52_m(h)
        if sigma_max is None:  # a certified upper bound of λ_max(Σ) (secular equation, O(C) per input)
            sigma_max = self.sigma_extremes(h)[3]
        lam_max = sigma_max
        out = {"M_max_upper": 2 * m, "sigma_max_upper": m, "K_max_upper": 2 * lam_max}
        if not restricted:
            zero = torch.zeros_like(m)
            out.update({"sigma_min": zero, "M_min": zero, "K_min": zero})
        return out
