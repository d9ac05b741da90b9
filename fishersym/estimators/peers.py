"""Drop-in error bars for diagonal Fishers computed by other libraries (issue 10 item 3; THEORY §13).

Each library call below returns c·(one draw of a catalogue estimator) on the inputs it is given,
with c the loss reduction's scale (``"mean"``: 1/B per sum over B inputs, squared for the squared
batch gradients; ``"sum"``: 1).  :func:`error_bars` maps the call onto the catalogue and returns the
exact mean, bias and variance of what the call returns.

==============================  ===============================================  ==============================
library call                     what it computes                                  catalogue estimator, scale
==============================  ===============================================  ==============================
``backpack_diag_ggn_mc``         BackPACK ``DiagGGNMC(mc_samples=N)`` on a loss      ``squared_score``, c
                                 with the given reduction: per-sample squared
                                 gradients of N sampled labels, averaged
``backpack_diag_ggn_exact``      BackPACK ``DiagGGNExact``: the GGN diagonal         ``exact_over_labels``, c
``curvlinops_mc``                curvlinops ``FisherMCLinearOperator(mc_samples=N)``  ``squared_score``, c
                                 diagonal (per-datum outer products of sampled
                                 label gradients)
``curvlinops_hutchinson``        curvlinops ``hutchinson_diag(GGNLinearOperator,     ``param_hutchinson``, c
                                 num_matvecs=N)``, Rademacher
``optax_fisher_diag``            optax ``second_order.fisher_diag``: the square of   ``batched_empirical``, c²
                                 the gradient of the batch NLL, observed labels
``ewc_batched``                  EWC's batched Fisher: the square of the gradient    ``batched_squared_gradient``, c²
                                 of the batch NLL with labels sampled from the
                                 model, averaged over N draws
``ewc_empirical``                EWC's empirical Fisher: per-sample squared          ``empirical``, c
                                 gradients with the observed labels
==============================  ===============================================  ==============================

With ``reduction="mean"`` c = 1/B for B inputs (BackPACK, curvlinops: the loss's own
``reduction``; optax/EWC: the user's NLL averaged over the batch), else c = 1.  The family must be the
one the library's loss implies, with the loss's own per-input normalisation (the mapping of
:mod:`fishersym.families.gaussian`): ``CrossEntropyLoss`` is ``categorical`` with C classes;
``MSELoss(reduction="sum")`` is ``gaussian(C=D, sigma2=0.5)``; ``MSELoss(reduction="mean")`` divides by
B·D, which is ``gaussian(C=D, sigma2=D/2)`` with c = 1/B.

The calls that square a batch gradient (c² above) with ``reduction="mean"`` return (1/B²)(Σ_m s_m)²,
whose mean is c·(Σ_m I_m)/B = Ī/B, not the mean Fisher Ī: :class:`ErrorBars` ``target`` is c²·Σ_m I_m
(what the call estimates, B times smaller than Ī), and ``info["note"]`` says so.  For batched calls the
draw is per batch of the data as given (a list or a loader): Σ_b (Σ_{m∈b} s_m)² (see
:mod:`.moments`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..families.base import ExponentialFamily
from .api import analyse

__all__ = ["error_bars", "ErrorBars", "CONVENTIONS"]

#: library call → (catalogue estimator, power of c in the scale, the settings it takes)
CONVENTIONS: dict[str, tuple[str, int, tuple[str, ...]]] = {
    "backpack_diag_ggn_mc": ("squared_score", 1, ("mc_samples", "reduction")),
    "backpack_diag_ggn_exact": ("exact_over_labels", 1, ("reduction",)),
    "curvlinops_mc": ("squared_score", 1, ("mc_samples", "reduction")),
    "curvlinops_hutchinson": ("param_hutchinson", 1, ("num_matvecs", "reduction")),
    "optax_fisher_diag": ("batched_empirical", 2, ("reduction",)),
    "ewc_batched": ("batched_squared_gradient", 2, ("n_samples", "reduction")),
    "ewc_empirical": ("empirical", 1, ("reduction",)),
}

_N_KEYS = ("mc_samples", "num_matvecs", "n_samples")


@dataclass
class ErrorBars:
    """Exact moments of what a library call returns, per parameter ({name: tensor of param.shape}).

    ``mean``: E of the returned diagonal; ``target``: ``scale``·Σ_m I(θ_i|x_m), the scaled Fisher the
    call estimates (``scale`` = c for the per-sample calls, c² for the squared batch gradients);
    ``bias`` = mean − target; ``variance`` and ``std`` of one call; ``estimator`` the catalogue entry.
    All values are exact (no sampling)."""
    library_call: str
    estimator: str
    scale: float
    n_samples: int
    mean: dict[str, torch.Tensor]
    target: dict[str, torch.Tensor]
    bias: dict[str, torch.Tensor]
    variance: dict[str, torch.Tensor]
    info: dict = field(default_factory=dict)

    @property
    def std(self) -> dict[str, torch.Tensor]:
        """The standard deviation per entry, √variance."""
        return {n: v.sqrt() for n, v in self.variance.items()}


def error_bars(model: nn.Module, data, family: str | ExponentialFamily, estimator: str = "backpack_diag_ggn_mc",
               *, reduction: str = "mean", batch_size: int | None = None, process_group=None,
               **settings) -> ErrorBars:
    """The exact mean, bias and variance of a peer library's diagonal Fisher (see the module's table).

    ``data`` is what the call sees (every form of :data:`fishersym.numeric.dataset.DATA_FORMS`;
    ``optax_fisher_diag`` and ``ewc_empirical`` need labels): one batch (a tensor or an (x, y) tuple), or
    a list or loader of batches of one size, one call per batch, summed (for curvlinops, whose
    operators span the whole loader, pass one batch or reduction="sum"); ``reduction`` the loss's
    ("mean" or "sum"), and ``settings`` the call's own (``mc_samples``, ``num_matvecs``, ``n_samples``).
    Unknown calls or settings are errors naming the accepted ones.  ``process_group``: as in
    :func:`fishersym.numeric.dataset_stats` (each rank passes its own shard of the data).

    >>> import torch, fishersym
    >>> from fishersym import families
    >>> g = torch.Generator().manual_seed(0)
    >>> net = torch.nn.Linear(3, 4).double()
    >>> x = torch.randn(8, 3, dtype=torch.float64, generator=g)
    >>> eb = fishersym.error_bars(net, x, families.get("categorical", C=4), "backpack_diag_ggn_mc", mc_samples=2)
    >>> eb.estimator, eb.scale                     # squared_score with N = 2, scaled by 1/B
    ('squared_score', 0.125)
    >>> bool((eb.std["weight"] > 0).all()) and float(eb.bias["weight"].abs().max()) == 0.0
    True
    """
    if estimator not in CONVENTIONS:
        raise ValueError(f"unknown library call {estimator!r}; error_bars knows: {', '.join(CONVENTIONS)}")
    name, power, accepted = CONVENTIONS[estimator]
    bad = sorted(set(settings) - set(accepted))
    if bad:
        raise ValueError(f"{estimator} takes the settings {list(accepted)}, not {bad}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    n = 1
    for k in _N_KEYS:
        if k in settings:
            n = settings[k]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{estimator}: the number of samples must be a positive integer, got {n!r}")
    a = analyse(model, data, family, [name], batch_size=batch_size, process_group=process_group)
    sizes = a.moments.batch_sizes
    if reduction == "mean" and len(set(sizes)) > 1:
        raise ValueError(f"reduction='mean' divides each call by its own batch size, and the data's batches have "
                         f"sizes {sorted(set(sizes))}: pass batches of one size, or one batch (a tensor or an (x, y) "
                         "tuple), or use error_bars once per batch")
    c = 1.0 / sizes[0] if reduction == "mean" else 1.0     # one call per batch, summed over the batches
    s = c ** power
    mean = {k: v * s for k, v in a.mean(name).items()}
    target = {k: v * s for k, v in a.target().items()}
    var = {k: v * s * s for k, v in a.variance(name, n).items()}
    bias = {k: mean[k] - target[k] for k in mean}
    info = {"reduction": reduction, "n_inputs": a.M, "scale_power": power, "batch_sizes": a.moments.batch_sizes}
    if power == 2 and reduction == "mean":
        info["note"] = ("with reduction='mean' this call squares the gradient of a batch-averaged loss: "
                        "(1/B²)(Σ_m s_m)² has mean Ī/B per batch of B, not the mean Fisher Ī; multiply by B "
                        "(and average over batches) to estimate Ī")
    return ErrorBars(estimator, name, s, n, mean, target, bias, var, info=info)
