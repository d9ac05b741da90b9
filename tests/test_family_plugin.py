"""Adding a family is one file (issue 11 item 4, acceptance "A new family is one file, shown by the test").

This file defines a family the package has never seen — the Gamma distribution with a fixed integer shape
k, with a link of its own (h = −softplus(o)) — and nothing outside this file knows about it.  The class
statement registers it (``ExponentialFamily.__init_subclass__``), so ``families.get(name)`` builds it, and
it gets, with no change anywhere else:

* every numeric engine: ``conditional_stats`` on the fast MLP path (THEORY §7) and on ``path="reverse"``,
  and ``dataset_stats`` (THEORY §8), each checked against the label-space oracle
  (``fishersym.testing.brute``: Gauss–Laguerre quadrature of the labels and reverse-over-reverse autograd
  of log p(y|x; θ), never the closed forms);
* the symbolic side: ``fishersym.symbolic.derive`` of a small network gives I, V₁, V₂ that evaluate to the
  numeric values, and the family's forms SymPy derives from F agree with the Gamma's known cumulants;
* the property suite: ``check_model(profile="quick")``, every applicable property passing;
* the CLI: its summary line, example parameters and sample point, ``fishersym derive --family NAME``.
  (``fishersym families NAME`` works too but is not run here: for a family with no closed-form constants
  its optimised λ̃ take minutes, see families/constants.py's lambda_tilde_opt.)

The Gamma(k, rate β) with t(y) = y has natural parameter h = −β < 0, F(h) = −k log(−h),
π(y) = y^{k−1}/Γ(k): mean k/β, variance k/β², κ₄ = 6k/β⁴ (cumulants (n−1)!·k/βⁿ), so
N·V₁ = κ₄u⁴ + 2(uᵀΣu)² = (6k + 2k²)u⁴/β⁴.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import sympy as sp
import torch
import torch.nn.functional as Fn
from torch import nn

from fishersym import families
from fishersym.families.base import ExponentialFamily
from fishersym.families.links import Link

NAME = "gamma_fixed_shape_plugin"


def _define_family():
    """The whole new family: a link and an ExponentialFamily subclass (registered by its class statement)."""

    class NegSoftplus(Link):
        """h = −softplus(o) = −log(1 + eᵒ) < 0: the rate β = softplus(o) of the raw output o."""

        name = "negsoftplus"

        def __call__(self, o: torch.Tensor) -> torch.Tensor:
            return -Fn.softplus(o)

        def sym(self, o: Sequence[sp.Expr]) -> list[sp.Expr]:
            return [-sp.log(1 + sp.exp(oi)) for oi in o]

        def g1(self, o: torch.Tensor) -> torch.Tensor:
            return -torch.sigmoid(o)

        def g2(self, o: torch.Tensor) -> torch.Tensor:
            return -torch.sigmoid(o) * torch.sigmoid(-o)

    class GammaFixedShape(ExponentialFamily):
        """Gamma output with fixed integer shape k and rate β = −h (t(y) = y > 0, F(h) = −k log(−h))."""

        name = NAME
        discrete = False

        def __init__(self, k: int = 3, link: Link | None = None):
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ValueError(f"{NAME}: the shape k must be a positive integer, got {k!r}")
            self.k = k
            super().__init__(1, NegSoftplus() if link is None else link)

        def log_partition_sym(self, h):
            return -self.k * sp.log(-h[0])

        def mean_params_sym(self):
            return {self.h_sym[0]: -self.k / sp.Symbol("m", positive=True)}   # display the mean m = k/β

        def log_partition(self, h):
            return (-self.k * torch.log(-h)).sum(-1)

        def _check_domain(self, h):
            if not bool((h < 0).all()):
                raise ValueError(f"{NAME}: h = −β must be < 0")

        def sample_point(self, seed=0, dtype=torch.float64):
            g = torch.Generator().manual_seed(seed)
            return self.check_h(-0.5 - torch.rand(1, generator=g, dtype=dtype))

        def log_base_measure(self, t):
            return ((self.k - 1) * torch.log(t) - math.lgamma(self.k)).sum(-1)

        def sample(self, h, n, generator=None):
            """A sum of k exponentials −log U/β (integer k), seeded by ``generator``."""
            h = self.check_h(h)
            u = torch.rand((n, *h.shape, self.k), dtype=h.dtype, device=h.device, generator=generator)
            return -torch.log1p(-u).sum(-1) / (-h)

        def check_statistic(self, t):
            t = super().check_statistic(t)
            if not bool((t > 0).all()):
                raise ValueError(f"{NAME}: observed labels must be > 0")
            return t

        def label_nodes(self, h1):
            """y = x/β at the Gauss–Laguerre nodes, weights ∝ w_i x_i^{k−1} (exact for polynomial
            moments of y up to degree 2·12 − k)."""
            x, w = np.polynomial.laguerre.laggauss(12)
            w = w * x ** (self.k - 1)
            x, w = torch.tensor(x, dtype=h1.dtype), torch.tensor(w / w.sum(), dtype=h1.dtype)
            return (x / (-h1[0])).unsqueeze(-1), w

    return GammaFixedShape


@pytest.fixture(scope="module")
def gamma_cls():
    """Defined (and so registered) for this module's tests only; unregistered afterwards so that other
    tests that list every family do not see it."""
    assert NAME not in families.available()
    cls = _define_family()
    yield cls
    families.unregister(NAME)


def _model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).double()


X = torch.tensor([[0.3, -0.7], [1.1, 0.4], [-0.5, 0.9]], dtype=torch.float64)


def _oracle(model, fam, x):
    """Per input, the label-space oracle's I, V₁, V₂ (N = 1) for every parameter."""
    from fishersym.testing.brute import brute_force
    return [brute_force(model, x[b:b + 1], fam) for b in range(x.shape[0])]


def _close(a, b, rtol=1e-9):
    torch.testing.assert_close(a, b.to(a.dtype), rtol=rtol, atol=1e-12)


def test_registered_by_its_class_statement(gamma_cls):
    fam = families.get(NAME, k=3)
    assert isinstance(fam, gamma_cls) and NAME in families.available()
    assert families.resolve(NAME, out_dim=1) is not None and not families.takes_size(NAME)
    with pytest.raises(ValueError, match="already registered"):
        type("Other", (ExponentialFamily,), {"name": NAME, "__module__": "elsewhere"})
    # its hypothesis strategy (the default: its example parameters) builds valid instances
    from hypothesis import find
    assert isinstance(families.get(NAME, **find(gamma_cls.param_strategy(), lambda p: True)), gamma_cls)
    # the oracle's quadrature is a Gamma: E y = k/β, Var y = k/β², E(y − m)⁴ = 3k(k + 2)/β⁴
    h1 = torch.tensor([-0.8], dtype=torch.float64)
    t, w = fam.label_nodes(h1)
    m = w @ t[:, 0]
    assert math.isclose(float(m), 3 / 0.8, rel_tol=1e-12)
    assert math.isclose(float(w @ (t[:, 0] - m) ** 2), 3 / 0.8 ** 2, rel_tol=1e-12)
    assert math.isclose(float(w @ (t[:, 0] - m) ** 4), 3 * 3 * 5 / 0.8 ** 4, rel_tol=1e-10)


def test_registry_rules():
    """A variant that inherits its parent's name is not registered; ``register=False`` opts out and
    :func:`families.register` registers later; names must be identifiers; unregister names what is known."""
    before = dict(families.REGISTRY)

    class Variant(families.Bernoulli):
        pass

    class Quiet(families.Poisson, register=False):
        name = "quiet_poisson_plugin"

    assert families.REGISTRY == before
    try:
        families.register(Quiet)
        assert families.get("quiet_poisson_plugin", C=2).C == 2
        families.register(Quiet)                       # the same class again: idempotent
    finally:
        families.unregister("quiet_poisson_plugin")
    assert families.REGISTRY == before
    with pytest.raises(ValueError, match="Python identifier"):
        type("Bad", (ExponentialFamily,), {"name": "not a name"})
    with pytest.raises(KeyError, match="registered: bernoulli"):
        families.unregister("nosuch")
    with pytest.raises(TypeError, match="ExponentialFamily subclass"):
        families.register(int)


def test_every_numeric_engine_matches_the_oracle(gamma_cls):
    from fishersym.numeric import conditional_stats, dataset_stats
    fam = families.get(NAME, k=3)
    model = _model()
    bf = _oracle(model, fam, X)
    for path in ("fast", "reverse"):
        r = conditional_stats(model, X, fam, 1, path=path)
        assert r.path == path
        for name, _ in model.named_parameters():
            for key, ref in (("fisher", "fisher"), ("var1", "var1"), ("var2", "var2")):
                _close(r[key][name], torch.stack([getattr(b, ref)[name] for b in bf]))
            assert bool((r["var1_lower"][name] <= r["var1"][name] * (1 + 1e-12)).all())
            assert bool((r["var1"][name] <= r["var1_upper"][name] * (1 + 1e-12)).all())
    d = dataset_stats(model, X, fam, 1, progress=False)
    M = X.shape[0]
    for name, _ in model.named_parameters():
        _close(d["fisher"][name], sum(b.fisher[name] for b in bf) / M)
        _close(d["var1"][name], sum(b.var1[name] for b in bf) / M ** 2)
        _close(d["var2"][name], sum(b.var2[name] for b in bf) / M ** 2)


def test_symbolic_side(gamma_cls):
    from fishersym import symbolic
    from fishersym.numeric import conditional_stats
    from fishersym.symbolic.familyforms import family_forms
    fam = families.get(NAME, k=3)
    # the forms SymPy derives from F, in the display coordinate m = k/β: Σ = m²/k, κ₄ = 6m⁴/k³
    F = family_forms(fam)
    (msym, _), = F.coords
    (u,) = F.U
    assert sp.simplify(F.fisher - msym ** 2 * u ** 2 / 3) == 0
    assert sp.simplify(F.kappa4 - 6 * msym ** 4 * u ** 4 / 27) == 0
    assert sp.simplify(F.var1 - (6 * 3 + 2 * 9) * msym ** 4 * u ** 4 / 81) == 0
    model = _model(1)
    D = symbolic.derive(symbolic.mlp([2, 3, 1], "tanh"), fam, n_samples=1)
    sym = D.evaluate(model, X, optimised=False)
    num = conditional_stats(model, X, fam, 1)
    for name, _ in model.named_parameters():
        for key in ("fisher", "var1", "var2"):
            _close(sym[key][name], num[key][name], rtol=1e-10)
    assert "\\begin{document}" in D.to_latex()


def test_property_suite(gamma_cls):
    """check_model's quick profile: the label oracle (closed_forms, unbiased), the estimators as implemented
    against seeded Monte Carlo draws of the family's ``sample`` (false-alarm probability set by
    check_monte_carlo's alpha = 1e-6), the certified bounds, the scalings.  (fast_generic and
    symbolic_numeric are what the two tests above check directly.)"""
    from fishersym.testing import check_model
    fam = families.get(NAME, k=3)
    rep = check_model(_model(2), fam, X[:2], profile="quick", progress=False, seed=1,
                      properties=["closed_forms", "unbiased", "monte_carlo", "bounds", "structural", "rescaling",
                                  "n_scaling", "nonnegative", "shift_invariance"])
    assert rep.ok, str(rep)
    status = {r.name: r.status for r in rep.results}
    # the curved link makes the last layer's V₂ non-zero: the structural property does not apply; nor does
    # shift invariance (not a softmax)
    assert status.pop("structural") == status.pop("shift_invariance") == "not applicable"
    assert set(status.values()) == {"passed"}, status


def test_cli_sees_the_family(gamma_cls, capsys):
    """The CLI's family texts come from the family: its summary line (the class docstring), its example
    parameters and sample point, its name in ``--family``'s help; ``fishersym derive`` builds it."""
    from fishersym.cli import main
    from fishersym.commands.families import DEFAULT_PARAMS, sample_point
    assert gamma_cls.summary() == ("Gamma output with fixed integer shape k and rate β = −h "
                                   "(t(y) = y > 0, F(h) = −k log(−h)).")
    assert DEFAULT_PARAMS[NAME] == {} and NAME in DEFAULT_PARAMS
    h = sample_point(families.get(NAME), seed=3)
    assert h.shape == (1,) and float(h) < 0
    with pytest.raises(SystemExit):
        main(["derive", "--help"])
    assert NAME in capsys.readouterr().out.replace("\n", "").replace(" ", "")
    assert main(["derive", "--widths", "2", "1", "--family", NAME]) == 0
    assert "\\section{Summary" in capsys.readouterr().out
    assert main(["derive", "--widths", "2", "1", "--family", NAME, "--classes", "1"]) == 2
    assert "--classes does not apply to the gamma_fixed_shape_plugin family" in capsys.readouterr().err
