"""The diagonal Fisher estimators practitioners use, each with its exact mean and variance
(THEORY §8, §9, §13).

Catalogue (:func:`names`): ``squared_score`` (Î₁), ``neg_hessian`` (Î₂), ``batched_squared_gradient``,
``output_hutchinson_gaussian``/``_rademacher`` and their ``batched_`` forms, ``param_hutchinson``,
``exact_over_labels``, ``empirical``, ``batched_empirical``.  Entry points: :func:`variance`,
:func:`mean`, :func:`bias`, :func:`sample`, :func:`analyse`; :func:`error_bars` for the diagonal
Fishers of BackPACK, curvlinops, optax and EWC codes.  A new estimator is one
:class:`Estimator` subclass registered with :func:`register` (one file).
"""
from .. import families
# registration order is the catalogue's order
from . import score, hessian, hutchinson, exact, empirical  # noqa: F401
from .api import SCHEMES, Analysis, analyse, bias, mean, sample, table, variance
from .base import CATALOGUE, Estimator, catalogue_markdown, get, names, register
from .moments import NEEDS, DataMoments, data_moments
from .peers import CONVENTIONS, ErrorBars, error_bars
from .planner import Plan, plan

__all__ = ["variance", "mean", "bias", "sample", "analyse", "Analysis", "table", "SCHEMES", "Estimator",
           "register", "get", "names", "CATALOGUE", "catalogue_markdown", "DataMoments", "data_moments", "NEEDS",
           "families", "error_bars", "ErrorBars", "CONVENTIONS", "plan", "Plan"]
