"""Property-based verification toolkit: the paper's inequalities as checks anyone can run.

* :mod:`.strategies` — hypothesis strategies (families, MLP architectures,
  parameter values, inputs, N, whole test cases);
* :mod:`.properties` — ``check_*`` functions raising a counterexample report;
* :func:`check_model` — all applicable properties on a user's model, with a report;
* :mod:`.brute` — the label-space brute-force oracle the exact checks use.

In your own test suite::

    from fishersym.testing import check_model

    def test_fisher_properties_of_my_net():
        check_model(MyNet(), "categorical", input_shape=(8,)).raise_on_failure()
"""
from . import strategies
from .brute import brute_force
from .check import Report, check_model, resolve_factory
from .properties import (PROPERTIES, NotApplicable, PropertyViolation, check_bounds, check_closed_forms,
                         check_fast_generic, check_monte_carlo, check_n_scaling, check_nonnegative,
                         check_rescaling, check_shift_invariance, check_structural, check_symbolic_numeric,
                         check_unbiased_exact)

__all__ = ["strategies", "brute_force", "check_model", "Report", "resolve_factory", "PROPERTIES",
           "NotApplicable", "PropertyViolation", "check_bounds", "check_closed_forms", "check_fast_generic",
           "check_monte_carlo", "check_n_scaling", "check_nonnegative", "check_rescaling",
           "check_shift_invariance", "check_structural", "check_symbolic_numeric", "check_unbiased_exact"]
