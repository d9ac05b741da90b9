"""Bounds of THEORY.md §5: Theorem 4.1 per parameter (one definition used by both engines)."""
from .theorem41 import BOUND_KEYS, OPT_KEYS, SHARP_KEYS, STAT_KEYS, check_bounds, theorem41_bounds

__all__ = ["STAT_KEYS", "BOUND_KEYS", "OPT_KEYS", "SHARP_KEYS", "theorem41_bounds", "check_bounds"]
