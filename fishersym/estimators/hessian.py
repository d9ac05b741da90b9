"""The negative-Hessian estimator Î₂ (THEORY §2–§3): Σ_m [u_mᵀΣ_mu_m − (1/N) Σ_k w_mᵀ r_{m,k}].

Unbiased; Var = Σ_m v₂(θ_i|x_m)/N with v₂ = w_iᵀΣw_i (Lemma 3.1), 0 wherever w ≡ 0 (the last layer,
piecewise-linear networks; THEORY §6, §12).  Cost, counted as C + N backward passes per input: the
uᵀΣu term is the exact Fisher (C backward passes) and each label adds the diagonal of wᵀr.  That is
one factored pass on MLPs (THEORY §7); a generic diagonal-Hessian backward (BackPACK's DiagHessian)
costs more, so C + N is a lower bound there, and the planner never prefers Î₂ over
``exact_over_labels`` (cost C, no label noise) on this count anyway.
"""
from __future__ import annotations

from typing_extensions import override

from .base import Estimator, register
from .sampling import label_average


class NegHessian(Estimator):
    """``neg_hessian`` (Î₂): minus the Hessian diagonal of the log-likelihood at N sampled labels per input."""
    name = "neg_hessian"
    formula = "−Σ_m (1/N) Σ_k ∂² log p(y_mk|x_m)/∂θ_i²"
    variance_formula = "Σ_m v₂(θ_i|x_m) / N,  v₂ = wᵀΣw"
    used_by = "Î₂ of the paper; BackPACK DiagHessian with sampled labels"
    needs = ("fisher", "v2")

    @override
    def label_var_sum(self, mom):
        return dict(mom.v2_sum)

    @override
    def cost(self, C, n_samples=1):
        return float(C + n_samples)

    @override
    def draw(self, ctx, n_samples, generator):
        return label_average(ctx, n_samples, generator, ctx.hessian_diag, scale=-1.0)


register(NegHessian())
