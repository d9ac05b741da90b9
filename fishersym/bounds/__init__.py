"""Bounds of THEORY §5: Theorem 4.1 per parameter (one definition used by both engines),
group-level trace bounds (Theorem D.1, Corollary 4.6), off-diagonal bounds (Theorem C.1,
Corollary C.3) and Lemma 4.8."""
from .lemma48 import lemma48_bound
from .offdiag import offdiag_bounds
from .theorem41 import (BOUND_KEYS, OPT_KEYS, SHARP_KEYS, STAT_KEYS, bound_violated, bound_violations,
                        theorem41_bound, theorem41_bounds, theorem41_expressions, violated_bounds)
from .trace import TRACE_KEYS, corollary46, ruhe_bounds, theorem_d1

__all__ = ["STAT_KEYS", "BOUND_KEYS", "OPT_KEYS", "SHARP_KEYS", "theorem41_bound", "theorem41_bounds",
           "theorem41_expressions", "bound_violated", "bound_violations", "violated_bounds",
           "TRACE_KEYS", "theorem_d1", "corollary46", "ruhe_bounds", "offdiag_bounds", "lemma48_bound"]
