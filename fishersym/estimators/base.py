"""The estimator protocol and its registry (THEORY §8, §13).

Every estimator targets the data-set Fisher diagonal Σ_m I(θ_i|x_m) (scheme "all": every input once)
or, drawn on M' inputs i.i.d. from the data (scheme "iid"), its mean Ī(θ_i) = (1/M)Σ_m I(θ_i|x_m)
through (1/M')·(the same sum over the drawn inputs).  A subclass states, from the
:class:`~fishersym.estimators.moments.DataMoments` of the data set:

* :meth:`Estimator.mean_all` — the exact mean of one draw (Σ_m I_m, or with its exact bias);
* :meth:`Estimator.var_all` — its exact variance with ``n_samples`` labels (or probes) per input;
* :meth:`Estimator.mean_iid`, :meth:`Estimator.var_iid` — the same for M' inputs drawn i.i.d. (law of
  total variance: an input term Var_q I/M' common to all, plus the label term);
* :meth:`Estimator.cost` — backward passes per input (one backward of a batch of B inputs counts B);
* :meth:`Estimator.draw` — one Monte Carlo draw computed as a user would, by autograd of log p.

A new estimator is one subclass registered with :func:`register`.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .moments import DataMoments

__all__ = ["Estimator", "register", "get", "names", "CATALOGUE", "catalogue_markdown", "batch_split",
           "pairs_per_input"]

Values = dict[str, torch.Tensor]

CATALOGUE: dict[str, Estimator] = {}


def register(est: Estimator) -> Estimator:
    """Add ``est`` to :data:`CATALOGUE` under its name (a name registered twice is an error)."""
    if est.name in CATALOGUE:
        raise ValueError(f"an estimator named {est.name!r} is already registered")
    CATALOGUE[est.name] = est
    return est


def names() -> list[str]:
    """The catalogue's estimator names, in registration order."""
    return list(CATALOGUE)


def get(name: str) -> Estimator:
    """The estimator called ``name``; an unknown name is an error listing the catalogue.

    >>> import fishersym.estimators as fe
    >>> fe.get("batched_squared_gradient").variance_formula
    '[Σ_m v₁(θ_i|x_m) + 2((Σ_m I_m)² − Σ_m I_m²)] / N'
    >>> fe.get("exact_over_labels").cost(C=10)
    10.0
    >>> fe.get("fisher_mc")
    Traceback (most recent call last):
    ...
    ValueError: unknown estimator 'fisher_mc'; the catalogue has: squared_score, batched_squared_gradient, ...
    """
    if isinstance(name, Estimator):
        return name
    if not isinstance(name, str) or name not in CATALOGUE:
        raise ValueError(f"unknown estimator {name!r}; the catalogue has: {', '.join(CATALOGUE)}")
    return CATALOGUE[name]


def catalogue_markdown() -> str:
    """The catalogue as a Markdown table (README's "How noisy is my Fisher?" is this text): name,
    one draw, its variance, backward passes per input and who uses it.  Costs are read from each
    estimator's :meth:`Estimator.cost` at C = 10, N = 1 and N = 2, and written symbolically."""
    rows = ["| estimator | one draw | variance of one draw (scheme \"all\") | backward passes per input | used by |",
            "|---|---|---|---|---|"]
    for est in CATALOGUE.values():
        c1, c2 = est.cost(10, 1), est.cost(10, 2) if est.random_labels else est.cost(10, 1)
        slope, base = c2 - c1, c1 - (c2 - c1)
        if slope == 0:
            cost = "C" if base == 10 else f"{base:g}"
        else:
            n = "N" if slope == 1 else f"{slope:g}N"
            cost = n if base == 0 else (f"C + {n}" if base == 10 else f"{base:g} + {n}")
        cells = [f"`{est.name}`", est.formula, est.variance_formula, cost, est.used_by]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def batch_split(m_inputs: int, batch: int | None) -> list[int]:
    """The batch sizes of M' inputs cut into batches of ``batch`` (the last one smaller; None: one batch)."""
    if batch is None or batch >= m_inputs:
        return [m_inputs]
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer or None (one batch of all M' inputs), got {batch!r}")
    return [batch] * (m_inputs // batch) + ([m_inputs % batch] if m_inputs % batch else [])


def pairs_per_input(m_inputs: int, batch: int | None) -> float:
    """(1/M') Σ_b B_b(B_b − 1): the ordered pairs of distinct inputs sharing a batch, per input."""
    return sum(B * (B - 1) for B in batch_split(m_inputs, batch)) / m_inputs


def _map(f: Callable[[str], torch.Tensor], mom: DataMoments) -> Values:
    return {n: f(n) for n in mom.names}


class Estimator:
    """Base class; see the module docstring.  Attributes: ``name``, ``formula`` (one draw, plain text),
    ``variance_formula``, ``used_by``, ``labels`` ("sampled", "probes", "observed" or "exact"),
    ``needs`` (the :data:`~fishersym.estimators.moments.NEEDS` its variance reads), ``biased``."""

    name: str = ""
    formula: str = ""
    variance_formula: str = ""
    used_by: str = ""
    labels: str = "sampled"
    needs: tuple[str, ...] = ("fisher",)
    biased: bool = False
    #: True when one draw's randomness comes from labels or probes (n_samples applies)
    random_labels: bool = True
    #: True for the estimators that square the gradient of a batch (their draw depends on the batching)
    batch_squares: bool = False
    #: True when one probe spans all the data (param_hutchinson's z for the data-set F)
    global_probe: bool = False

    # -- exact moments ---------------------------------------------------------------------------------
    def label_var_sum(self, mom: DataMoments) -> Values:
        """Σ over inputs of the one-label variance terms, plus any cross-input terms: the "all"
        variance times N.  Subclasses with random labels override it."""
        return _map(lambda n: torch.zeros_like(mom.I_sum[n]), mom)

    def mean_all(self, mom: DataMoments) -> Values:
        """E of one draw over all M inputs: Σ_m I_m for the unbiased estimators."""
        return dict(mom.I_sum)

    def var_all(self, mom: DataMoments, n_samples: int = 1) -> Values:
        """Var of one draw over all M inputs with N = ``n_samples`` labels (probes) per input."""
        mom.require(self.needs, self.name)
        return {n: v / n_samples for n, v in self.label_var_sum(mom).items()}

    def label_var_iid(self, mom: DataMoments, m_inputs: int, batch: int | None = None) -> Values:
        """The label term L with Var_iid = (Var_q I + L/N)/M' (E_x of the conditional variance of one
        draw, per input).  Default: the per-input average of :meth:`label_var_sum`.  ``batch``: the
        batch size of the batched estimators (None: one batch of M')."""
        return {n: v / mom.M for n, v in self.label_var_sum(mom).items()}

    def mean_iid(self, mom: DataMoments, m_inputs: int, batch: int | None = None) -> Values:
        """E of (1/M')·(one draw over M' inputs drawn i.i.d. from the data): Ī for the unbiased ones."""
        return {n: v / mom.M for n, v in mom.I_sum.items()}

    def var_iid(self, mom: DataMoments, m_inputs: int, n_samples: int = 1, batch: int | None = None) -> Values:
        """Var of (1/M')·(one draw over M' i.i.d. inputs), N labels per input (THEORY §8):
        (1/M')[Var_q I + label term / N]."""
        mom.require(self.needs, self.name)
        lab = self.label_var_iid(mom, m_inputs, batch)
        return {n: (mom.I_var[n] + lab[n] / n_samples) / m_inputs for n in mom.names}

    def bias_all(self, mom: DataMoments) -> Values:
        """E of one draw over all M inputs minus Σ_m I_m."""
        mean = self.mean_all(mom)
        return {n: mean[n] - mom.I_sum[n] for n in mom.names}

    def bias_iid(self, mom: DataMoments, m_inputs: int, batch: int | None = None) -> Values:
        """E of (1/M')·(one draw over M' i.i.d. inputs) minus Ī."""
        mean = self.mean_iid(mom, m_inputs, batch)
        return {n: mean[n] - mom.I_sum[n] / mom.M for n in mom.names}

    # -- cost and sampling ------------------------------------------------------------------------------
    def cost(self, C: int, n_samples: int = 1) -> float:
        """Backward passes per input for one estimate with N = ``n_samples``."""
        return float(n_samples)

    def draw(self, ctx, n_samples: int, generator: torch.Generator) -> Values:  # pragma: no cover
        """One draw of the sum estimator over the inputs of ``ctx`` (:class:`.sampling.Context`)."""
        raise NotImplementedError

    def check_n(self, n_samples: int) -> int:
        """``n_samples`` validated: a positive int, and 1 for the estimators without sampled labels."""
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        if not self.random_labels and n_samples != 1:
            raise ValueError(f"{self.name} has no sampled labels or probes ({self.labels} labels), so "
                             f"n_samples does not apply: pass n_samples=1 (got {n_samples})")
        return n_samples

    def __repr__(self) -> str:
        return f"<estimator {self.name}: {self.formula}>"
