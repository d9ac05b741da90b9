"""Validation of models, parameters and inputs before any computation.

The closed forms of THEORY.md §2–§3 hold per input: the model must map each
input to its own output, deterministically.  Layers that couple the inputs
of a batch (BatchNorm using batch statistics) or draw randomness (Dropout in
training mode) break that and are refused with an explanation.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["check_model", "check_params", "check_inputs", "check_batch_independent", "GENERIC_MAX_PARAMS"]

#: the generic path materialises u_i, w_i for every parameter and input
#: (one nested forward-mode pass per parameter); above this count it refuses.
GENERIC_MAX_PARAMS = 200_000


def check_model(model: nn.Module) -> None:
    """Refuse batch-coupled or random layers (THEORY §2 needs p(y|x;θ) per input)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, m in model.named_modules():
        label = name or type(model).__name__
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.training or not m.track_running_stats:
                raise ValueError(
                    f"module {label!r} ({type(m).__name__}) normalises with the statistics of the current batch "
                    "(training mode or track_running_stats=False): the output for one input then depends on the "
                    "other inputs, so the per-input Fisher and variances of THEORY §2–§3 are undefined. "
                    "Call model.eval() (with running statistics) first.")
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
            raise ValueError(
                f"module {label!r} ({type(m).__name__}) is in training mode and makes the model random; "
                "the closed forms need a deterministic h_θ(x). Call model.eval() first.")


def check_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters analysed (those with requires_grad), checked to be finite floating tensors."""
    params = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if not p.is_floating_point():
            raise TypeError(f"parameter {name!r} is not floating point ({p.dtype})")
        if not torch.isfinite(p).all():
            raise ValueError(f"parameter {name!r} contains non-finite values (NaN or inf)")
        params[name] = p
    if not params:
        raise ValueError("the model has no trainable parameters (requires_grad=True) to analyse")
    dtypes = {p.dtype for p in params.values()}
    if len(dtypes) > 1:
        raise TypeError(f"the model's parameters mix dtypes {sorted(map(str, dtypes))}; use one dtype")
    return params


def check_inputs(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Inputs: a finite tensor with a batch dimension, cast to the parameters' dtype."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor (batch, ...), got {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError("inputs need a leading batch dimension")
    if x.is_complex():
        raise TypeError(f"inputs are complex ({x.dtype}); the engines analyse real-valued models — "
                        "pass real inputs (e.g. torch.view_as_real(x) with a model built for it)")
    if x.is_floating_point():
        if not torch.isfinite(x).all():
            raise ValueError(f"the inputs contain non-finite values (NaN or inf), shape {tuple(x.shape)}")
        x = x.to(dtype)
    return x


def check_batch_independent(model: nn.Module, x: torch.Tensor, out: torch.Tensor) -> None:
    """Refuse models whose output for one input changes with the rest of the batch."""
    if x.shape[0] < 2:
        return
    with torch.no_grad():
        single = model(x[:1])
    tol = 1e-4 if out.dtype == torch.float32 else 1e-9
    if single.shape != out[:1].shape or not torch.allclose(single, out[:1], rtol=tol, atol=tol):
        raise ValueError("the model's output for an input depends on the other inputs of the batch "
                         "(a batch-coupled layer?); the per-input quantities of THEORY §2 are undefined")
