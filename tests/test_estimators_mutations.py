"""Mutation tests for the estimator checks (issue 10, "Correctness"): the comparison functions of
tests/test_estimators.py (``compare_exact`` against the enumeration oracle, ``mc_check`` against
Monte Carlo draws) report a failure when a variance formula loses its cross term or a factor of 2,
or when the sampler draws labels from the wrong distribution.  Each mutation is a monkeypatch of one
estimator method, undone after the test; each test also checks the unmutated code passes, so a
failure here is caused by the mutation and nothing else."""
from __future__ import annotations

import pytest
import torch

import fishersym.estimators as fe
from fishersym.estimators.hutchinson import OutputHutchinson
from fishersym.estimators.score import BatchedSquaredGradient
from _estimator_oracle import compare_exact, gaussian_probe_draws, make_case, mc_check, support_check


def _var_failures(case: str, est: str, scheme: str = "all", m_inputs: int | None = None) -> list[str]:
    """The check of test_all_scheme_exact / test_iid_scheme_exact for one estimator (fresh analysis,
    so a monkeypatched method is used)."""
    c = make_case(case)
    o = c.oracle
    a = fe.analyse(c.model, c.data, c.family, [est])
    r = o.moments(est) if scheme == "all" else o.iid_moments(est, m_inputs)
    got = a.variance(est) if scheme == "all" else a.variance(est, scheme="iid", m_inputs=m_inputs)
    return compare_exact(o.flat(got), r["var"], f"{est} {scheme}", scale=float(r["mean"].abs().max()) ** 2)


@pytest.mark.parametrize("est", ["batched_squared_gradient", "batched_output_hutchinson_rademacher",
                                 "batched_output_hutchinson_gaussian"])
def test_missing_cross_term_is_caught(monkeypatch, est):
    assert not _var_failures("cat3", est)
    cls = BatchedSquaredGradient if est == "batched_squared_gradient" else OutputHutchinson
    orig = cls.label_var_sum

    def no_cross(self, mom):          # drop 2[(Σ_m I_m)² − Σ_m I_m²]
        full = orig(self, mom)
        return {n: full[n] - 2 * mom.I_cross[n] for n in full} if self.name == est else full
    monkeypatch.setattr(cls, "label_var_sum", no_cross)
    assert _var_failures("cat3", est)


def test_missing_cross_term_iid_is_caught(monkeypatch):
    est = "batched_squared_gradient"
    assert not _var_failures("cat3", est, "iid", 2)

    def no_cross(self, mom, m_inputs, batch=None):   # the 2(M′−1)Ī² term dropped
        return {n: mom.v1_sum[n] / mom.M for n in mom.names}
    monkeypatch.setattr(BatchedSquaredGradient, "label_var_iid", no_cross)
    assert _var_failures("cat3", est, "iid", 2)


def test_cross_term_factor_two_is_caught(monkeypatch):
    est = "batched_squared_gradient"

    def half_cross(self, mom):           # 2·Σ_{m≠n} I_mI_n → 1·Σ_{m≠n} I_mI_n
        return {n: mom.v1_sum[n] + mom.I_cross[n] for n in mom.names}
    monkeypatch.setattr(BatchedSquaredGradient, "label_var_sum", half_cross)
    assert _var_failures("cat3", est)


@pytest.mark.parametrize("est", ["output_hutchinson_gaussian", "batched_output_hutchinson_gaussian"])
def test_gaussian_hutchinson_factor_two_is_caught(monkeypatch, est):
    assert not _var_failures("cat3", est)
    orig = OutputHutchinson._per_input_sum

    def no_two(self, mom):               # 2I_m² → I_m²
        if self.probe == "gaussian":
            return dict(mom.I_sq_sum)
        return orig(self, mom)
    monkeypatch.setattr(OutputHutchinson, "_per_input_sum", no_two)
    assert _var_failures("cat3", est)
    assert _var_failures("gaussian", est)


def test_monte_carlo_catches_factor_two(monkeypatch):
    """The Monte Carlo path has the power to see a missing factor 2: draws of Gaussian probes pass
    mc_check against the package's variance and fail it against the mutated variance."""
    est = "output_hutchinson_gaussian"
    c = make_case("cat3", k_nodes=5)
    o = c.oracle
    idx = [0, 1]
    r = o.moments(est, idx)
    draws = gaussian_probe_draws(o, idx, 20000, 5, batched=False)

    def pkg_var():
        return o.flat(fe.variance(c.model, (c.x[idx], c.y[idx]), c.family, est))
    assert not mc_check(draws, r["mean"], pkg_var(), r["mu4"], "unmutated")
    monkeypatch.setattr(OutputHutchinson, "_per_input_sum",
                        lambda self, mom: dict(mom.I_sq_sum))
    assert mc_check(draws, r["mean"], pkg_var(), r["mu4"], "mutated")


def test_unfaithful_sampler_is_caught():
    """fe.sample with a family whose sampler ignores p (always class 0) gives draws that the
    faithfulness check (mc_check against the exact distribution) rejects."""
    from fishersym import families
    c = make_case("cat3")
    o = c.oracle
    r = o.moments("squared_score")
    fam = families.get("categorical", C=3)

    def draws(family, R=100):
        return torch.stack([o.flat(fe.sample(c.model, c.x, family, "squared_score",
                                             generator=torch.Generator().manual_seed(k))) for k in range(R)])
    assert not mc_check(draws(fam), r["mean"], r["var"], r["mu4"], "faithful")

    def class0(h, n, generator=None):
        t = torch.zeros(n, *h.shape, dtype=h.dtype)
        t[..., 0] = 1.0
        return t
    fam.sample = class0
    assert mc_check(draws(fam), r["mean"], r["var"], r["mu4"], "class 0 only")


def test_transposed_cholesky_factor_is_caught():
    """Probes built with Lᵀε instead of Lε (the factor's orientation; Cov Lᵀε = LᵀL ≠ Σ) give draws off
    the enumerated support, which the support check of test_sample_lies_on_support rejects."""
    from fishersym import families
    c = make_case("meanvar")
    o = c.oracle
    values = o.moments("output_hutchinson_rademacher")["values"]
    fam = families.get("gaussian_meanvar")

    def draw(k):
        return o.flat(fe.sample(c.model, c.x, fam, "output_hutchinson_rademacher",
                                generator=torch.Generator().manual_seed(k)))
    assert not support_check(draw(0), values, "faithful")
    fam.sigma_factor_apply = lambda h, eps: torch.einsum("...ac,n...a->n...c", fam.sigma_factor(h), eps)
    assert all(support_check(draw(k), values, "transposed") for k in range(3))
