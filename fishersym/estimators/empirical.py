"""The empirical Fisher with the *observed* labels (THEORY §9; paper §6, Lemma 6.1, Corollaries
G.1–G.2), per sample and batched (optax's ``fisher_diag``).

With s_m = u_mᵀ(t(y_m) − η_m) at the observed label y_m:

* ``empirical``: Σ_m s_m².  Its bias per input is u_mᵀ(r_mr_mᵀ − Σ_m)u_m = s_m² − I_m.  On the given
  data it is deterministic (variance 0, bias Σ_m (s_m² − I_m)): biased without variance.  On M'
  (x, y) pairs drawn i.i.d. from the data (Corollary G.2), (1/M')Σ s² has mean E_q s² (bias
  E_q s² − Ī) and variance Var_q(s²)/M'.
* ``batched_empirical``: (Σ_m s_m)², the square of the batch gradient.  On the given data it is
  deterministic with bias Σ_b (Σ_{m∈b} s_m)² − Σ_m I_m (one batch unless the data came in batches).
  On M' pairs drawn i.i.d. in batches of B (default one batch of M'), with k₁..k₄ the cumulants of s
  over the data and K_j = Bk_j those of S_b = Σ_{m∈b} s_m: E S_b² = K₂ + K₁²,
  Var S_b² = K₄ + 4K₃K₁ + 2K₂² + 4K₂K₁², summed over the independent batches, over M' and M'².
"""
from __future__ import annotations

from typing_extensions import override

from .base import Estimator, register
from .base import batch_split
from .moments import unflatten
from .sampling import square_sum


def _unflat(mom, flat):
    return unflatten(flat, mom.names, mom.shapes)


class _Observed(Estimator):
    """Shared by the two empirical estimators: the observed labels, one backward pass per input, no
    label randomness on the given data (the base class's zero label term: variance 0)."""
    labels = "observed"
    random_labels = False
    biased = True
    needs = ("fisher", "score")

    def cost(self, C, n_samples=1):
        return 1.0


class Empirical(_Observed):
    """``empirical``: Σ_m s_m², the squared scores at the observed labels (THEORY §9)."""
    name = "empirical"
    formula = "Σ_m (∂ log p(y_m|x_m)/∂θ_i)² with the observed labels y_m"
    variance_formula = "0 on the given data (bias Σ_m (s_m² − I_m)); Var_q(s²)/M' on M' pairs drawn i.i.d."
    used_by = "the empirical Fisher (Kunstner et al. 2019; many EWC and pruning codes)"

    @override
    def mean_all(self, mom):
        mom.require(self.needs, self.name)
        return {n: v * mom.M for n, v in _unflat(mom, mom.score_sq.mean).items()}

    @override
    def mean_iid(self, mom, m_inputs, batch=None):
        mom.require(self.needs, self.name)
        return _unflat(mom, mom.score_sq.mean)

    @override
    def var_iid(self, mom, m_inputs, n_samples=1, batch=None):
        mom.require(self.needs, self.name)
        return {n: v / mom.M / m_inputs for n, v in _unflat(mom, mom.score_sq.m2).items()}

    @override
    def draw(self, ctx, n_samples, generator):
        return square_sum(ctx.per_input_grad_with(ctx.log_lik, ctx.observed()))


class BatchedEmpirical(_Observed):
    """``batched_empirical``: (Σ_m s_m)², the squared batch gradient at the observed labels (THEORY §9)."""
    name = "batched_empirical"
    formula = "(Σ_m ∂ log p(y_m|x_m)/∂θ_i)² with the observed labels y_m"
    variance_formula = ("0 on the given data (bias (Σ_m s_m)² − Σ_m I_m); on M' pairs drawn i.i.d. "
                        "(K₄ + 4K₃K₁ + 2K₂² + 4K₂K₁²)/M'², K_j = M'k_j")
    used_by = "optax.second_order.fisher_diag (the squared gradient of the batch loss)"
    batch_squares = True

    @override
    def mean_all(self, mom):
        mom.require(self.needs, self.name)
        return dict(mom.score_batch_sq)

    @override
    def mean_iid(self, mom, m_inputs, batch=None):
        mom.require(self.needs, self.name)
        k1, k2, _, _ = mom.score.cumulants()
        tot = sum(B * k2 + (B * k1) ** 2 for B in batch_split(m_inputs, batch))      # Σ_b E S_b²
        return _unflat(mom, tot / m_inputs)

    @override
    def var_iid(self, mom, m_inputs, n_samples=1, batch=None):
        mom.require(self.needs, self.name)
        k1, k2, k3, k4 = mom.score.cumulants()
        tot = 0
        for B in batch_split(m_inputs, batch):       # independent batches: Var S_b², K_j = B·k_j
            K1, K2, K3, K4 = B * k1, B * k2, B * k3, B * k4
            tot = tot + K4 + 4 * K3 * K1 + 2 * K2 * K2 + 4 * K2 * K1 * K1
        return _unflat(mom, tot / m_inputs ** 2)

    @override
    def draw(self, ctx, n_samples, generator):
        g = ctx.batch_grad(ctx.log_lik, ctx.observed())
        return {n: v * v for n, v in g.items()}


register(Empirical())
register(BatchedEmpirical())
