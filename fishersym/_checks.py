"""Validation shared by every layer of the package (families, numeric engines): integer counts.

One definition for C, n_samples, batch_size, m_inputs, chunk sizes (issue 13 item 22): any integer
type (``operator.index``: Python and numpy integers, 0-d integer tensors), never a bool, within
[minimum, maximum], returned as a Python int.
"""
from __future__ import annotations

import operator

import torch

__all__ = ["as_count", "MAX_COUNT"]

#: largest count accepted: every count enters the formulas as a float (1/N, 1/M), and 2⁵³ is the
#: largest integer range float64 represents exactly (float32 holds it to 2⁻²⁴ relative)
MAX_COUNT = 2 ** 53


def as_count(value, name: str, *, minimum: int = 1, maximum: int = MAX_COUNT, prefix: str = "",
             non_integer: type[Exception] = TypeError) -> int:
    """``value`` as a Python int in [minimum, maximum]; bools raise TypeError, other non-integers
    ``non_integer`` (the families report parameter values as ValueError), out-of-range values
    ValueError.  ``prefix`` names the caller (e.g. "poisson: ")."""
    words = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        raise TypeError(f"{prefix}{name} must be {words}, got the bool {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise non_integer(f"{prefix}{name} must be {words} (int or numpy integer), got {value!r} "
                          f"({type(value).__name__})") from None
    if n < minimum:
        raise ValueError(f"{prefix}{name} must be {words}, got {n}")
    if n > maximum:
        raise ValueError(f"{prefix}{name}={n} is too large: the maximum is {maximum} (2**53, the largest integer "
                         f"range that converts to floating point exactly; {name} enters the formulas as a float)")
    return n
