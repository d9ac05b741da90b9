"""Squared-score estimators with labels sampled from the model (THEORY §2, §8, §13).

* ``squared_score`` (Î₁): Σ_m (1/N) Σ_k s_{m,k}², s_{m,k} = u_mᵀ(t(y_{m,k}) − η_m), the per-sample
  squares of BackPACK's DiagGGNMC and curvlinops' MC Fisher.  Var = Σ_m v_m / N (Lemma 3.1).
* ``batched_squared_gradient``: (1/N) Σ_k (Σ_m s_{m,k})², the square of one mini-batch gradient with
  sampled labels (EWC "batched", Sophia's Gauss–Newton–Bartlett).  Unbiased, since the s_m are
  independent with mean 0; Var = (1/N)[Σ_m v_m + 2((Σ_m I_m)² − Σ_m I_m²)] (THEORY §13) for one batch;
  over batches (data given as a list or a loader) the cross term is summed within each batch.  For M
  identical inputs this is (M v + 2M(M−1)I²)/N, so the relative s.d. √Var/(MI) → √(2/N) as M grows:
  the batch does not average the noise away.
"""
from __future__ import annotations

from typing_extensions import override

from .base import Estimator, pairs_per_input, register
from .sampling import label_average, square_sum


class SquaredScore(Estimator):
    """``squared_score`` (Î₁): the squared score at N sampled labels per input, variance Σ_m v₁/N."""
    name = "squared_score"
    formula = "Σ_m (1/N) Σ_k (∂ log p(y_mk|x_m)/∂θ_i)²"
    variance_formula = "Σ_m v₁(θ_i|x_m) / N"
    used_by = "Î₁ of the paper; BackPACK DiagGGNMC, curvlinops MC Fisher (per-sample squares)"
    needs = ("fisher", "v1")

    @override
    def label_var_sum(self, mom):
        return dict(mom.v1_sum)

    @override
    def draw(self, ctx, n_samples, generator):
        return label_average(ctx, n_samples, generator, lambda t: square_sum(ctx.per_input_grad_with(ctx.log_lik, t)))


class BatchedSquaredGradient(Estimator):
    """``batched_squared_gradient``: the squared gradient of the batch log-likelihood at sampled labels."""
    name = "batched_squared_gradient"
    formula = "(1/N) Σ_k (Σ_m ∂ log p(y_mk|x_m)/∂θ_i)²"
    variance_formula = "[Σ_m v₁(θ_i|x_m) + 2((Σ_m I_m)² − Σ_m I_m²)] / N"
    used_by = "EWC with a batched Fisher; Sophia's Gauss–Newton–Bartlett estimator"
    batch_squares = True
    needs = ("fisher", "v1")

    @override
    def label_var_sum(self, mom):
        return {n: mom.v1_sum[n] + 2 * mom.I_cross[n] for n in mom.names}

    @override
    def label_var_iid(self, mom, m_inputs, batch=None):
        # E_x over M' i.i.d. inputs: M'·E v + 2·Σ_b B_b(B_b − 1)·Ī², divided by M' (THEORY §8's label term)
        pp = pairs_per_input(m_inputs, batch)
        return {n: mom.v1_sum[n] / mom.M + 2 * pp * (mom.I_sum[n] / mom.M) ** 2 for n in mom.names}

    @override
    def draw(self, ctx, n_samples, generator):
        def squared(t):
            return {n: v * v for n, v in ctx.batch_grad(ctx.log_lik, t).items()}
        return label_average(ctx, n_samples, generator, squared)


register(SquaredScore())
register(BatchedSquaredGradient())
