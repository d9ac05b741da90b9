"""Composite normalisation layers for nested forward-mode AD.

The generic path (THEORY §2–§3) gets w_i = ∂²h/∂θ_i² by nested forward-mode
differentiation.  In torch 2.13 the hand-written second-order forward rules
of several normalisation ops are wrong (pytorch/pytorch#196700 for
``layer_norm``, #196699 for ``batch_norm``; umbrella #198017): first
derivatives are right, nested JVPs silently are not.  fishersym's property
suite found this on a residual MLP with LayerNorm (V₂ off by a factor 1.6
against the label-space oracle and finite differences).

Inside :func:`composite_norms` the functional forms used by ``nn.LayerNorm``,
``nn.GroupNorm``, ``nn.RMSNorm`` and ``nn.BatchNorm*`` (eval mode, running
statistics) are replaced by their decompositions into elementary ops, whose
forward rules compose correctly to any order.  Values agree with torch's
kernels to rounding.  The replacement is process-global while the context is
active (not thread-safe).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

__all__ = ["composite_norms", "layer_norm", "group_norm", "rms_norm", "batch_norm"]

_lock = threading.RLock()


def layer_norm(input, normalized_shape: Sequence[int], weight=None, bias=None, eps: float = 1e-5):
    dims = tuple(range(-len(tuple(normalized_shape)), 0))
    mean = input.mean(dims, keepdim=True)
    xc = input - mean
    out = xc * torch.rsqrt((xc * xc).mean(dims, keepdim=True) + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def group_norm(input, num_groups: int, weight=None, bias=None, eps: float = 1e-5):
    B, Cch = input.shape[:2]
    xg = input.reshape(B, num_groups, -1)
    mean = xg.mean(-1, keepdim=True)
    xc = xg - mean
    out = (xc * torch.rsqrt((xc * xc).mean(-1, keepdim=True) + eps)).reshape(input.shape)
    shape = (1, Cch) + (1,) * (input.dim() - 2)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


def rms_norm(input, normalized_shape: Sequence[int], weight=None, eps: float | None = None):
    dims = tuple(range(-len(tuple(normalized_shape)), 0))
    if eps is None:
        eps = torch.finfo(input.dtype).eps
    out = input * torch.rsqrt((input * input).mean(dims, keepdim=True) + eps)
    return out * weight if weight is not None else out


_orig_batch_norm = F.batch_norm


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5):
    if training or running_mean is None or running_var is None:  # refused earlier by checks; keep torch's
        return _orig_batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    shape = (1, -1) + (1,) * (input.dim() - 2)
    out = (input - running_mean.reshape(shape)) * torch.rsqrt(running_var.reshape(shape) + eps)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


_REPLACEMENTS = {"layer_norm": layer_norm, "group_norm": group_norm, "rms_norm": rms_norm, "batch_norm": batch_norm}


@contextlib.contextmanager
def composite_norms() -> Iterator[None]:
    """Use the composite normalisation ops inside the block (see module docstring)."""
    with _lock:
        saved = {k: getattr(F, k) for k in _REPLACEMENTS if hasattr(F, k)}
        try:
            for k in saved:
                setattr(F, k, _REPLACEMENTS[k])
            yield
        finally:
            for k, v in saved.items():
                setattr(F, k, v)
