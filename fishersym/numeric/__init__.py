"""Numeric engine: exact per-parameter Fisher diagonals, estimator variances and bounds.

THEORY §2–§9.  Public API:

* :func:`conditional_stats` — per input x: I(θ_i|x), V₁, V₂, Theorem 4.1 bounds (§2–§5);
* :func:`dataset_stats` — many inputs, schemes "all" and "iid" (§8), streamed;
* :func:`estimate` — the Monte Carlo estimators Î₁, Î₂ and the empirical Fisher (§2, §9);
* :func:`offdiag_stats` — exact off-diagonal variances and Theorem C.1 / Corollary C.3;
* :mod:`.distributed` — the data-set passes across processes (``process_group=``, :func:`shard`,
  :func:`init_from_env`; launched with torchrun).

Exact paths: "fast" (the factored MLP algorithm of §7, for ``nn.Sequential``
stacks of ``Linear`` and elementwise activations), "generic" (any per-input
module via ``torch.func``; at most ``GENERIC_MAX_PARAMS`` parameters) and
"reverse" (u from C backward passes per input whatever P; V₂ ≡ 0 proved per
tensor, exact or sampled w elsewhere).  ``path="auto"`` picks the fast one
when it applies; :func:`cost_estimate` says what each tensor would take.  Use
float64 for verification; results flag float32 precision loss in V₁.

Every entry point leaves the model and torch's global state unchanged
(:func:`preserve_user_state`), reads ``data`` one way (:func:`iter_data`) and
sizes large allocations against a memory budget (:func:`check_budget`).
"""
from .checks import GENERIC_MAX_PARAMS
from .conditional import conditional_stats
from .cost import CostEstimate, cost_estimate
from . import distributed
from .dataset import CentredMoments, dataset_stats, iter_data
from .distributed import init_from_env, shard
from .estimators import estimate
from .guard import MemoryBudgetError, check_budget, preserve_user_state, state_fingerprint
from .offdiag import offdiag_stats
from .stats import StatsResult

__all__ = ["conditional_stats", "dataset_stats", "cost_estimate", "CostEstimate", "estimate", "offdiag_stats",
           "StatsResult", "GENERIC_MAX_PARAMS", "iter_data", "CentredMoments", "preserve_user_state",
           "state_fingerprint", "check_budget", "MemoryBudgetError", "distributed", "shard", "init_from_env"]
