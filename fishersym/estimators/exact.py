"""The exact Fisher over labels on a set of inputs (THEORY §8, §13): Σ_m u_mᵀΣ_mu_m, the "EXACT"
Fisher of EWC studies, computed with C backward passes per input (the columns of L_m, L_mL_mᵀ = Σ_m).

No label noise: on all M inputs it is exact (variance 0).  On M' inputs drawn i.i.d. from the data
only the input term remains: Var = Var_q I / M'.
"""
from __future__ import annotations

from typing_extensions import override

from .base import Estimator, register
from .sampling import add_into, square_sum


class ExactOverLabels(Estimator):
    """``exact_over_labels``: Σ_m u_mᵀΣ_mu_m, the expectation over labels (C backward passes per input)."""
    name = "exact_over_labels"
    formula = "Σ_m u_mᵀΣ_mu_m (the expectation over labels, C backward passes per input)"
    variance_formula = "0 on the given inputs; Var_q I / M' on M' inputs drawn i.i.d."
    used_by = "the 'EXACT' Fisher of EWC (van de Ven 2025); BackPACK DiagGGNExact; curvlinops GGN diagonal"
    labels = "exact"
    random_labels = False

    @override
    def cost(self, C, n_samples=1):
        return float(C)

    @override
    def draw(self, ctx, n_samples, generator):
        L = ctx.family.sigma_factor(ctx.h)                  # (B, C, C)
        acc = None
        for c in range(ctx.C):
            col = L[:, :, c].detach()                       # (L_m e_c)ᵀh_m: Σ_c ((L_m e_c)ᵀu)² = uᵀΣ_mu

            def probed(h1, v1):
                return (h1 * v1).sum()
            acc = add_into(acc, square_sum(ctx.per_input_grad_with(probed, col)))
        return acc


register(ExactOverLabels())
