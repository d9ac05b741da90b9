"""Hutchinson probes, in output space (Sun 2025) and in parameter space (AdaHessian, curvlinops)
(THEORY §13).

**Output space.** With L_mL_mᵀ = Σ_m (the family's :meth:`sigma_factor`; the softmax's
L = (I − p𝟙ᵀ)diag(√p), else the Cholesky factor) and probes ε with E εεᵀ = I, s_m = u_mᵀL_mε_m has
E s_m² = I_m.  Per input, Var s² = E s⁴ − I² is

    Gaussian ε:    2I_m²,
    Rademacher ε:  2I_m² − 2‖L_mᵀu_m‖₄⁴  (= 2Σ_{a≠b}(Lᵀu)_a²(Lᵀu)_b²; 0 for C = 1),

and the softmax gives ‖Lᵀu‖₄⁴ = Σ_a p_a²(u_a − ū)⁴, ū = pᵀu.  ``output_hutchinson_*`` sums the
squares per input; ``batched_output_hutchinson_*`` squares the summed probed scores, which adds the
cross term 2[(Σ_m I_m)² − Σ_m I_m²] exactly as for the batched squared gradient.

**Parameter space.** z_i (F z)_i with Rademacher z and F = Σ_m J_mᵀΣ_mJ_m (one probe for the whole
batch): E = F_ii, Var = Σ_{j≠i} F_ij² = (F²)_ii − F_ii².  For one input, (F_m²)_ii =
u_iᵀΣ(JJᵀ)Σu_i needs only the C × C Gram JJᵀ.  Over M' inputs drawn i.i.d. from the data,
E_x Σ_{j≠i}(Σ_m F_m,ij)² = M'·D₁ + M'(M'−1)·D₂ with D₁ = E_q Σ_{j≠i} F_m,ij² and D₂ = Σ_{j≠i} F̄_ij².
"""
from __future__ import annotations

from typing_extensions import override

from .base import Estimator, pairs_per_input, register
from .sampling import add_into, square_sum


class OutputHutchinson(Estimator):
    """Output-space Hutchinson with ``probe`` ("gaussian" or "rademacher") probes, per input or
    ``batched``."""
    labels = "probes"

    def __init__(self, probe: str, batched: bool) -> None:
        self.probe, self.batched = probe, batched
        self.batch_squares = batched
        self.name = f"{'batched_' if batched else ''}output_hutchinson_{probe}"
        one = "(u_mᵀL_mε_m)²"
        self.formula = ("(1/N) Σ_k (Σ_m u_mᵀL_mε_mk)²" if batched else f"Σ_m (1/N) Σ_k {one}") + f", {probe} ε"
        e = "2I_m²" if probe == "gaussian" else "2I_m² − 2‖L_mᵀu_m‖₄⁴"
        cross = " + 2((Σ_m I_m)² − Σ_m I_m²)" if batched else ""
        self.variance_formula = f"[Σ_m {e}{cross}] / N"
        self.used_by = "Sun 2025 (arXiv 2505.13614), output-space probes" + (", batched" if batched else "")
        self.needs = ("fisher",) if probe == "gaussian" else ("fisher", "q4")

    def _per_input_sum(self, mom):
        if self.probe == "gaussian":
            return {n: 2 * v for n, v in mom.I_sq_sum.items()}
        return dict(mom.rad_sum)

    @override
    def label_var_sum(self, mom):
        e = self._per_input_sum(mom)
        if not self.batched:
            return e
        return {n: e[n] + 2 * mom.I_cross[n] for n in mom.names}

    @override
    def label_var_iid(self, mom, m_inputs, batch=None):
        e = self._per_input_sum(mom)
        if not self.batched:
            return {n: v / mom.M for n, v in e.items()}
        pp = pairs_per_input(m_inputs, batch)
        return {n: e[n] / mom.M + 2 * pp * (mom.I_sum[n] / mom.M) ** 2 for n in mom.names}

    @override
    def draw(self, ctx, n_samples, generator):
        acc = None
        for _ in range(n_samples):
            eps = ctx.probes(self.probe, (1, ctx.B, ctx.C), generator)
            xi = ctx.family.sigma_factor_apply(ctx.h, eps)[0].detach()     # (B, C), Cov ξ_m = Σ_m

            def probed(h1, xi1):
                return (h1 * xi1).sum()
            if self.batched:
                g = ctx.batch_grad(probed, xi)
                d = {n: v * v for n, v in g.items()}
            else:
                d = square_sum(ctx.per_input_grad_with(probed, xi))
            acc = add_into(acc, d, 1.0 / n_samples)
        return acc


class ParamHutchinson(Estimator):
    """``param_hutchinson``: z ⊙ (F z) with Rademacher probes z over all parameters, variance Σ_{j≠i} F_ij² / N."""
    name = "param_hutchinson"
    formula = "(1/N) Σ_k z_k ⊙ (F z_k), Rademacher z_k over all parameters, F = Σ_m J_mᵀΣ_mJ_m"
    variance_formula = "[(F²)_ii − F_ii²] / N = Σ_{j≠i} F_ij² / N"
    used_by = "AdaHessian; curvlinops hutchinson_diag on the GGN/Fisher"
    labels = "probes"
    global_probe = True
    needs = ("fisher", "F", "gram")

    @override
    def label_var_sum(self, mom):
        return dict(mom.F_off)

    @override
    def label_var_iid(self, mom, m_inputs, batch=None):
        M = mom.M
        out = {}
        for n in mom.names:
            d1 = mom.gram_off_sum[n] / M                                 # E_q Σ_{j≠i} F_m,ij²
            d2 = mom.F_off[n] / M ** 2                                   # Σ_{j≠i} F̄_ij²
            out[n] = d1 + (m_inputs - 1) * d2
        return out

    @override
    def cost(self, C, n_samples=1):
        return 2.0 * n_samples          # a Jacobian-vector and a vector-Jacobian product per probe

    @override
    def draw(self, ctx, n_samples, generator):
        acc = None
        for _ in range(n_samples):
            z = {n: ctx.probes("rademacher", tuple(p.shape), generator) for n, p in ctx.params.items()}
            fz = ctx.ggn_vector(z)
            acc = add_into(acc, {n: z[n] * fz[n] for n in z}, 1.0 / n_samples)
        return acc


for _probe in ("gaussian", "rademacher"):
    register(OutputHutchinson(_probe, batched=False))
for _probe in ("gaussian", "rademacher"):
    register(OutputHutchinson(_probe, batched=True))
register(ParamHutchinson())
