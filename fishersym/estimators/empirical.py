"""The empirical Fisher with the *observed* labels (THEORY §9; paper §6, Lemma 6.1, Corollaries
G.1–G.2), per sample and batched (optax's ``fisher_diag``).

With s_m = u_mᵀ(t(y_m) − η_m) at the observed label y_m:

* ``empirical``: Σ_m s_m².  Its bias per input is u_mᵀ(r_mr_mᵀ − Σ_m)u_m = s_m² − I_m.  On the given
  data it is deterministic (variance 0, bias Σ_m (s_m² − I_m)): biased without variance.  On M'
  (x, y) pairs drawn i.i.d. from the data (Corollary G.2), (1/M')Σ s² has mean E_q s² (bias
  E_q s² − Ī) and variance Var_q(s²)/M'.
* ``batched_empirical``: (Σ_m s_m)², the square of the batch gradient.  On the given data it is
  deterministic with bias (Σ_m s_m)² − Σ_m I_m.  On M' pairs drawn i.i.d., with k₁..k₄ the
  cumulants of s over the data and K_j = M'k_j those of S = Σ_m s_m:
  E S² = K₂ + K₁², Var S² = K₄ + 4K₃K₁ + 2K₂² + 4K₂K₁²; (1/M')S² has these over M' and M'².
"""
from __future__ import annotations

from .base import Estimator, register
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
    name = "empirical"
    formula = "Σ_m (∂ log p(y_m|x_m)/∂θ_i)² with the observed labels y_m"
    variance_formula = "0 on the given data (bias Σ_m (s_m² − I_m)); Var_q(s²)/M' on M' pairs drawn i.i.d."
    used_by = "the empirical Fisher (Kunstner et al. 2019; many EWC and pruning codes)"

    def mean_all(self, mom):
        mom.require(self.needs, self.name)
        return {n: v * mom.M for n, v in _unflat(mom, mom.score_sq.mean).items()}

    def mean_iid(self, mom, m_inputs):
        mom.require(self.needs, self.name)
        return _unflat(mom, mom.score_sq.mean)

    def var_iid(self, mom, m_inputs, n_samples=1):
        mom.require(self.needs, self.name)
        return {n: v / mom.M / m_inputs for n, v in _unflat(mom, mom.score_sq.m2).items()}

    def draw(self, ctx, n_samples, generator):
        return square_sum(ctx.per_input_grad_with(ctx.log_lik, ctx.observed()))


class BatchedEmpirical(_Observed):
    name = "batched_empirical"
    formula = "(Σ_m ∂ log p(y_m|x_m)/∂θ_i)² with the observed labels y_m"
    variance_formula = ("0 on the given data (bias (Σ_m s_m)² − Σ_m I_m); on M' pairs drawn i.i.d. "
                        "(K₄ + 4K₃K₁ + 2K₂² + 4K₂K₁²)/M'², K_j = M'k_j")
    used_by = "optax.second_order.fisher_diag (the squared gradient of the batch loss)"

    def mean_all(self, mom):
        mom.require(self.needs, self.name)
        return {n: v * v for n, v in mom.score_sum.items()}

    def _cumulants(self, mom, m_inputs):
        mom.require(self.needs, self.name)
        return [m_inputs * k for k in mom.score.cumulants()]

    def mean_iid(self, mom, m_inputs):
        K1, K2, _, _ = self._cumulants(mom, m_inputs)
        return _unflat(mom, (K2 + K1 * K1) / m_inputs)

    def var_iid(self, mom, m_inputs, n_samples=1):
        K1, K2, K3, K4 = self._cumulants(mom, m_inputs)
        v = (K4 + 4 * K3 * K1 + 2 * K2 * K2 + 4 * K2 * K1 * K1) / m_inputs ** 2
        return _unflat(mom, v)

    def draw(self, ctx, n_samples, generator):
        g = ctx.batch_grad(ctx.log_lik, ctx.observed())
        return {n: v * v for n, v in g.items()}


register(Empirical())
register(BatchedEmpirical())
