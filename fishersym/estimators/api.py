"""Public entry points of the estimator catalogue (THEORY §8, §9, §13).

* :func:`variance` — the exact variance of one draw of a named estimator;
* :func:`mean` and :func:`bias` — its exact mean and bias;
* :func:`sample` — one Monte Carlo draw, computed by autograd of log p as a user would;
* :func:`analyse` — one pass over the data for several estimators, an :class:`Analysis` answering
  both schemes ("all": every given input once, the target Σ_m I(θ_i|x_m); "iid": M' inputs drawn
  i.i.d. from the data, the target Ī(θ_i) = (1/M)Σ_m I(θ_i|x_m) estimated by (1/M')·draw).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from ..families.base import ExponentialFamily
from ..numeric.checks import check_deterministic, check_inputs
from ..numeric.conditional import probe_outputs, resolve_family
from ..numeric.dataset import iter_data
from ..numeric.guard import check_budget, guarded
from ..numeric.stats import rel_sd
from .base import Estimator, get, names
from .moments import DataMoments, data_moments
from .sampling import Context

__all__ = ["variance", "mean", "bias", "sample", "analyse", "Analysis", "SCHEMES"]

SCHEMES = ("all", "iid")
Values = dict[str, torch.Tensor]


def _estimators(estimators) -> list[Estimator]:
    if estimators is None:
        return [get(n) for n in names()]
    if isinstance(estimators, (str, Estimator)):
        estimators = [estimators]
    out = [get(e) for e in estimators]
    if not out:
        raise ValueError(f"no estimators given; choose from: {', '.join(names())}")
    return out


def _check_scheme(scheme: str, m_inputs, M: int) -> int:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if scheme == "all":
        if m_inputs is not None:
            raise ValueError("m_inputs applies to scheme='iid' only (scheme 'all' uses every given input once)")
        return M
    if m_inputs is None:
        return M
    if isinstance(m_inputs, bool) or not isinstance(m_inputs, int) or m_inputs < 1:
        raise ValueError(f"m_inputs must be a positive integer, got {m_inputs!r}")
    return m_inputs


@dataclass
class Analysis:
    """The exact moments of every requested estimator over one data set (see :mod:`.api`).

    ``moments`` is the :class:`~.moments.DataMoments`; ``estimators`` the analysed names; ``C`` the
    family dimension (for costs); ``notes`` what the user should know (e.g. which factor L of Σ the
    output-space Rademacher probes use).  All returned values are exact (no sampling), per parameter."""
    moments: DataMoments
    estimators: list[str]
    C: int
    notes: list[str] = field(default_factory=list)

    def _est(self, estimator) -> Estimator:
        e = get(estimator)
        if e.name not in self.estimators:
            raise ValueError(f"{e.name} was not analysed; analysed: {', '.join(self.estimators)}")
        return e

    @property
    def M(self) -> int:
        """The number M of inputs the moments were computed on."""
        return self.moments.M

    def target(self, scheme: str = "all") -> Values:
        """Σ_m I_m ("all") or Ī ("iid")."""
        _check_scheme(scheme, None, self.M)
        mom = self.moments
        return dict(mom.I_sum) if scheme == "all" else {n: v / mom.M for n, v in mom.I_sum.items()}

    def _iid(self, scheme: str, batch) -> None:
        if batch is not None and scheme != "iid":
            raise ValueError("batch= applies to scheme='iid' only: with scheme 'all' the batches are those of the "
                             "data (a list of batches or a loader; a tensor or an (x, y) tuple is one batch)")

    def mean(self, estimator, scheme: str = "all", m_inputs: int | None = None, batch: int | None = None) -> Values:
        """Exact mean of one draw; ``batch`` (scheme "iid"): the batch size the batched estimators square
        (None: one batch of all M' inputs)."""
        e, m = self._est(estimator), _check_scheme(scheme, m_inputs, self.M)
        self._iid(scheme, batch)
        return e.mean_all(self.moments) if scheme == "all" else e.mean_iid(self.moments, m, batch)

    def bias(self, estimator, scheme: str = "all", m_inputs: int | None = None, batch: int | None = None) -> Values:
        """Bias E[estimate] − target of ``estimator`` per parameter (``scheme`` as in :meth:`variance`)."""
        e, m = self._est(estimator), _check_scheme(scheme, m_inputs, self.M)
        self._iid(scheme, batch)
        return e.bias_all(self.moments) if scheme == "all" else e.bias_iid(self.moments, m, batch)

    def variance(self, estimator, n_samples: int = 1, scheme: str = "all", m_inputs: int | None = None,
                 batch: int | None = None) -> Values:
        """Variance of ``estimator`` per parameter with N = ``n_samples`` labels per input: over all M inputs
        ("all") or M' i.i.d. inputs ("iid", THEORY §8)."""
        e, m = self._est(estimator), _check_scheme(scheme, m_inputs, self.M)
        self._iid(scheme, batch)
        n = e.check_n(n_samples)
        return e.var_all(self.moments, n) if scheme == "all" else e.var_iid(self.moments, m, n, batch)

    def rel_se(self, estimator, n_samples: int = 1, scheme: str = "all", m_inputs: int | None = None,
               batch: int | None = None) -> Values:
        """√(Var + bias²)/target per parameter (the relative root-mean-square error; the relative
        standard error for the unbiased estimators), 0/0 read as 0 (:func:`~fishersym.numeric.stats.rel_sd`)."""
        var = self.variance(estimator, n_samples, scheme, m_inputs, batch)
        b = self.bias(estimator, scheme, m_inputs, batch)
        t = self.target(scheme)
        return {n: rel_sd(var[n] + b[n] * b[n], t[n]) for n in var}

    def cost(self, estimator, n_samples: int = 1, scheme: str = "all", m_inputs: int | None = None) -> float:
        """Backward passes for one estimate: (inputs used) × (passes per input)."""
        e, m = self._est(estimator), _check_scheme(scheme, m_inputs, self.M)
        return m * e.cost(self.C, e.check_n(n_samples))


@guarded
def analyse(model: nn.Module, data, family: str | ExponentialFamily, estimators: Iterable[str] | str | None = None,
            *, batch_size: int | None = None, memory_budget: int | str | None = None,
            progress: bool | None = None, process_group=None,
            family_params: dict | None = None) -> Analysis:
    r"""One pass over ``data`` computing the exact moments every estimator in ``estimators`` needs.

    The default is the whole catalogue; see :class:`Analysis`, which answers both schemes
    (THEORY §8, §13).  Every estimator targets the sum over the inputs of the conditional Fisher
    diagonal, I_m = u_mᵀ Σ_m u_m; for example the per-sample squares of the score s_m = u_mᵀ r_m
    (N labels per input, v₁ = N·V₁) have

    .. math::

        T(\theta_i) = \sum_{m=1}^{M} I(\theta_i \mid x_m), \qquad
        \Var\Bigl[\frac{1}{N} \sum_{m=1}^{M} \sum_{k=1}^{N} s_{mk}^2\Bigr]
        = \frac{1}{N} \sum_{m=1}^{M} v_1(\theta_i \mid x_m).

    Args:
        model: the network; its output h (batch, C) is the family's natural parameter.
        data: every form of :data:`fishersym.numeric.dataset.DATA_FORMS`; the empirical estimators
            need labels.
        family: a family name or :class:`~fishersym.families.ExponentialFamily` (by name, a free size
            C is taken from the model's outputs).
        estimators: names from the catalogue, one name, or None (default: the whole catalogue).
        batch_size: inputs per batch for tensor or (x, y) data (None: the largest batch ≤ 64 whose
            Jacobians fit the memory budget, :func:`~.moments.data_moments`).
        memory_budget: bytes (or "2GiB") that the moment tensors may take.
        progress: a tqdm bar on stderr (None: when stderr is a terminal).
        process_group: under ``torch.distributed`` every rank passes its own shard and gets the
            analysis of the concatenated shards (:func:`~.moments.data_moments`; None: the WORLD
            group when initialised, False: local).
        family_params: parameters of a family given by name (e.g. ``{"C": 10}``).

    Returns:
        Analysis: the exact moments, with the exact mean, bias, variance, relative s.e. and cost of
        each analysed estimator per parameter (no sampling).

    Raises:
        ValueError: for an unknown estimator name (listing the catalogue), an empty list of
            estimators, the empirical estimators without observed labels, empty data, or a model
            without trainable parameters.

    Examples:
        >>> import torch, fishersym.estimators as fe
        >>> g = torch.Generator().manual_seed(0)
        >>> net = torch.nn.Linear(3, 4).double()
        >>> x = torch.randn(5, 3, dtype=torch.float64, generator=g)
        >>> a = fe.analyse(net, x, fe.families.get("categorical", C=4), ["squared_score", "exact_over_labels"])
        >>> float(a.variance("exact_over_labels")["weight"].abs().max())
        0.0
        >>> bool((a.variance("squared_score")["weight"] > 0).all())
        True
    """
    fam = resolve_family(family, family_params, model=model, data=data)
    ests = _estimators(estimators)
    needs = set()
    for e in ests:
        needs |= set(e.needs)
    mom = data_moments(model, data, fam, needs, batch_size=batch_size, memory_budget=memory_budget,
                       progress=progress, process_group=process_group)
    return Analysis(mom, [e.name for e in ests], fam.C, _factor_notes(ests, fam))


def _factor_notes(ests: list[Estimator], fam: ExponentialFamily) -> list[str]:
    """Which factor L of Σ the output-space Rademacher probes use; a warning where it is the Cholesky
    factor (a continuous family without a closed-form L), since the variance depends on the choice."""
    if not any(getattr(e, "probe", None) == "rademacher" for e in ests):
        return []
    note = (f"output-space Rademacher probes use ξ = Lε with L = {fam.sigma_factor_name}; their variance "
            "depends on the factor through ‖Lᵀu‖₄⁴ (THEORY §13)")
    if "Cholesky" in fam.sigma_factor_name and fam.C > 1:     # C = 1: L = √Σ is unique up to sign
        warnings.warn(f"{fam.name}: {note}", stacklevel=4)
    return [note]


def variance(model: nn.Module, inputs, family: str | ExponentialFamily, estimator: str, n_samples: int = 1, *,
             scheme: str = "all", m_inputs: int | None = None, batch_size: int | None = None,
             memory_budget: int | str | None = None, process_group=None,
             family_params: dict | None = None) -> Values:
    r"""Exact variance of one draw of ``estimator`` per parameter: {name: tensor of param.shape}.

    Scheme "all" (default): the estimator of Σ_m I(θ_i|x_m) over the given inputs, each used once,
    with ``n_samples`` labels (or probes) per input (THEORY §13's table).  Scheme "iid": the estimator
    (1/M')·draw of Ī(θ_i) from M' = ``m_inputs`` inputs drawn i.i.d. from the given ones (THEORY §8).
    For the squared score, with v₁ = N·V₁ (:func:`fishersym.numeric.conditional_stats`):

    .. math::

        \Var_{\text{all}} = \frac{1}{N} \sum_{m=1}^{M} v_1(\theta_i \mid x_m), \qquad
        \Var_{\text{iid}} = \frac{1}{M'} \Bigl[\Var_q I(\theta_i \mid x)
        + \frac{1}{N}\, \mathbb{E}_q\, v_1(\theta_i \mid x)\Bigr].

    Args:
        model: the network; its output h (batch, C) is the family's natural parameter.
        inputs: the data, in any form :func:`analyse` takes.
        family: a family name or :class:`~fishersym.families.ExponentialFamily`.
        estimator: a name from the catalogue (:func:`fishersym.estimators.names`).
        n_samples: N, labels (or probes) per input (default 1; must be 1 for the estimators without
            sampled labels).
        scheme: "all" (default) or "iid".
        m_inputs: M' of scheme "iid" (default: the number of given inputs); refused with "all".
        batch_size: inputs per batch, as in :func:`analyse`.
        memory_budget: as in :func:`analyse`.
        process_group: as in :func:`analyse`.
        family_params: parameters of a family given by name.

    Returns:
        dict[str, torch.Tensor]: parameter name → exact variance, a tensor of the parameter's shape.

    Raises:
        ValueError: for an unknown estimator, an invalid ``n_samples``, ``scheme`` or ``m_inputs``, or
            the errors of :func:`analyse`.

    Examples:
        >>> import torch, fishersym.estimators as fe
        >>> from fishersym.numeric import conditional_stats
        >>> net = torch.nn.Linear(3, 2).double()
        >>> x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> fam = fe.families.get("categorical", C=2)
        >>> v = fe.variance(net, x, fam, "squared_score", n_samples=2)
        >>> torch.allclose(v["weight"], conditional_stats(net, x, fam, n_samples=2)["var1"]["weight"].sum(0))
        True
    """
    e = get(estimator)
    e.check_n(n_samples)
    a = analyse(model, inputs, family, [e.name], batch_size=batch_size, memory_budget=memory_budget,
                process_group=process_group, family_params=family_params)
    return a.variance(e.name, n_samples, scheme, m_inputs)


def mean(model: nn.Module, inputs, family: str | ExponentialFamily, estimator: str, *, scheme: str = "all",
         m_inputs: int | None = None, batch_size: int | None = None, process_group=None,
         family_params: dict | None = None) -> Values:
    """Exact mean of one draw (scheme as in :func:`variance`; ``process_group`` as in :func:`analyse`)."""
    a = analyse(model, inputs, family, [get(estimator).name], batch_size=batch_size, process_group=process_group,
                family_params=family_params)
    return a.mean(estimator, scheme, m_inputs)


def bias(model: nn.Module, inputs, family: str | ExponentialFamily, estimator: str, *, scheme: str = "all",
         m_inputs: int | None = None, batch_size: int | None = None, process_group=None,
         family_params: dict | None = None) -> Values:
    """Exact bias of one draw: mean − target (0 for the unbiased estimators; scheme as in :func:`variance`;
    ``process_group`` as in :func:`analyse`)."""
    a = analyse(model, inputs, family, [get(estimator).name], batch_size=batch_size, process_group=process_group,
                family_params=family_params)
    return a.bias(estimator, scheme, m_inputs)


def _gather(inputs) -> tuple[torch.Tensor, torch.Tensor | None]:
    batches, _ = iter_data(inputs, 1 << 30)
    xs, ys = [], []
    for xb, yb in batches:
        xs.append(xb)
        ys.append(yb)
    if not xs:
        raise ValueError("the data contained no inputs")
    y = None if any(v is None for v in ys) else torch.cat([v for v in ys if v is not None])
    return torch.cat(xs), y


@guarded
def sample(model: nn.Module, inputs, family: str | ExponentialFamily, estimator: str, n_samples: int = 1, *,
           generator: torch.Generator | None = None, memory_budget: int | str | None = None,
           family_params: dict | None = None) -> Values:
    """One draw of ``estimator`` of Σ_m I(θ_i|x_m) over the given inputs (scheme "all"), computed by
    autograd of log p(y|x;θ) as a user computes it (:mod:`.sampling`): {name: tensor of param.shape}.
    The batched estimators square the gradient of each batch of a list or loader (a tensor or an
    (x, y) tuple is one batch), as :func:`analyse` assumes.  Meant for verification: the per-input
    gradients of all inputs of a batch are held at once.

    Without ``generator`` a private generator with a fresh seed is used (the global RNG is left alone).
    """
    e = get(estimator)
    n = e.check_n(n_samples)
    fam = resolve_family(family, family_params, model=model, data=inputs)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (requires_grad=True)")
    _factor_notes([e], fam)
    if generator is None:
        generator = torch.Generator(device=params[0].device)
        generator.seed()
    elif not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    parts: Iterable[tuple[torch.Tensor, torch.Tensor | None]]
    if not e.global_probe and not isinstance(inputs, (torch.Tensor, tuple)):
        # the data's own batches, one at a time: the batched estimators square each batch's gradient, the
        # others' draws add up over batches (param_hutchinson's one probe spans all the data)
        parts = iter_data(inputs, 1 << 30)[0]
    else:
        parts = [_gather(inputs)]
    out: Values | None = None
    for x, y in parts:
        x = check_inputs(x, params[0].dtype)
        check_deterministic(model)            # eval mode: dropout / batch-norm statistics would make h random
        probe_outputs(model, x)         # (batch, C) outputs, with the input-shape convention in the error
        P = sum(p.numel() for p in params)
        check_budget(3 * x.shape[0] * P * (torch.finfo(params[0].dtype).bits // 8),
                     f"fe.sample's per-input gradients of a batch of {x.shape[0]} inputs × {P} parameters",
                     ["pass fewer inputs, or a list of smaller batches for the per-input estimators"], memory_budget)
        d = e.draw(Context(model, x, fam, y), n, generator)
        out = d if out is None else {k: out[k] + v for k, v in d.items()}
    if out is None:
        raise ValueError("the data contained no inputs")
    return out


def table(analysis: Analysis, n_samples: int = 1, scheme: str = "all",
          m_inputs: int | None = None, groups: Mapping[str, Sequence[str]] | None = None) -> list[dict]:
    """Rows per (group, estimator): median relative s.e. over the group's entries, cost, bias flag.
    ``groups`` maps group names to parameter names (default: one group per tensor)."""
    mom = analysis.moments
    groups = groups or {n: [n] for n in mom.names}
    rows = []
    for est in analysis.estimators:
        e = get(est)
        if not e.random_labels and n_samples != 1:
            continue
        rs = analysis.rel_se(est, n_samples, scheme, m_inputs)
        for g, members in groups.items():
            vals = torch.cat([rs[n].reshape(-1) for n in members])
            rows.append({"group": g, "estimator": est, "n_samples": n_samples, "scheme": scheme,
                         "m_inputs": analysis.M if m_inputs is None else m_inputs,
                         "median_rel_se": float(vals.median()) if vals.numel() else math.nan,
                         "cost": analysis.cost(est, n_samples, scheme, m_inputs), "biased": e.biased})
    return rows
