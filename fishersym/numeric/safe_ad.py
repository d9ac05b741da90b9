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
from typing import Any
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

__all__ = ["composite_norms", "swapped", "stateless_call", "preserved_attributes", "layer_norm", "group_norm",
           "rms_norm", "batch_norm"]

_lock = threading.RLock()


def layer_norm(input, normalized_shape: Sequence[int], weight=None, bias=None, eps: float = 1e-5):
    """``F.layer_norm`` composed of elementary ops (whose nested forward-mode rules are right)."""
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
    """``F.group_norm`` composed of elementary ops (whose nested forward-mode rules are right)."""
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
    """``F.rms_norm`` composed of elementary ops (whose nested forward-mode rules are right)."""
    dims = tuple(range(-len(tuple(normalized_shape)), 0))
    if eps is None:
        eps = torch.finfo(input.dtype).eps
    out = input * torch.rsqrt((input * input).mean(dims, keepdim=True) + eps)
    return out * weight if weight is not None else out


_orig_batch_norm = F.batch_norm


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5):
    """``F.batch_norm`` in eval mode composed of elementary ops; training mode goes to torch's own."""
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


@contextlib.contextmanager
def swapped(model: torch.nn.Module, values: dict[str, torch.Tensor]) -> Iterator[None]:
    """Run the block with the named parameters/buffers of ``model`` replaced by ``values``, then
    put every original object back (issue 13 item 7).

    Unlike ``torch.func.functional_call`` (torch 2.13), this is exact for a module registered
    twice or a Parameter shared by several modules (tied weights): each *object* is replaced at
    every place it is registered (tied stays tied) and restored by identity, so the user's
    ``nn.Parameter`` objects are never replaced by the tensors of the call.  Tensors that forward
    pre-hooks store as plain attributes (old-style ``weight_norm``, ``prune``: ``module.weight``)
    are restored too.  Not thread-safe (the model is shared while the block runs).
    """
    named: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    named.update(model.named_buffers(remove_duplicate=False))
    by_id: dict[int, torch.Tensor] = {}
    for n, v in values.items():
        if n not in named:
            raise KeyError(f"{n!r} is not a parameter or buffer of the model")
        old = by_id.setdefault(id(named[n]), v)
        if old is not v:
            raise ValueError(f"two different values given for the tied tensor {n!r}")
    mods = list(model.modules())                      # each module object once
    saved: list[tuple[dict, str, torch.Tensor]] = []
    with preserved_attributes(model):
        try:
            for m in mods:
                stores: tuple[dict[str, Any], ...] = (m._parameters, m._buffers)
                for store in stores:
                    for k, t in list(store.items()):
                        if t is not None and id(t) in by_id:
                            saved.append((store, k, t))
                            store[k] = by_id[id(t)]
            yield
        finally:
            for store, k, v in reversed(saved):
                store[k] = v


@contextlib.contextmanager
def preserved_attributes(model: torch.nn.Module) -> Iterator[None]:
    """Restore every module's plain tensor attributes after the block: forward pre-hooks of
    old-style ``weight_norm`` and ``prune`` store the weight they compute as ``module.weight``
    on each call, so a forward run by the analysis would otherwise leave its own tensor there."""
    attrs = [(m, {k: v for k, v in vars(m).items() if isinstance(v, torch.Tensor)}) for m in model.modules()]
    try:
        yield
    finally:
        for m, before in attrs:
            d = vars(m)
            for k in [k for k, v in d.items() if isinstance(v, torch.Tensor) and before.get(k) is not v]:
                if k in before:
                    d[k] = before[k]
                else:
                    del d[k]
            for k, v in before.items():
                d.setdefault(k, v)


def stateless_call(model: torch.nn.Module, values: dict[str, torch.Tensor], *args):
    """``model(*args)`` with the tensors ``values`` in place of its parameters (see :func:`swapped`)."""
    with swapped(model, values):
        return model(*args)
