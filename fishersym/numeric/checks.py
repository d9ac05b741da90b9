"""Validation of models, parameters and inputs before any computation.

The closed forms of THEORY §2–§3 hold per input: the model must map each
input to its own output, deterministically.  Layers that couple the inputs
of a batch (BatchNorm using batch statistics) or draw randomness (Dropout in
training mode) break that and are refused with an explanation.
"""
from __future__ import annotations


import torch

from .._checks import MAX_COUNT, as_count
from torch import nn

__all__ = ["check_deterministic", "check_params", "check_inputs", "check_batch_independent", "check_output_shape",
           "check_count", "GENERIC_MAX_PARAMS", "MAX_COUNT", "UNSUPPORTED_DTYPES"]

#: counts (n_samples, batch_size, …): one validator for the whole package
check_count = as_count

#: half-precision dtypes are refused up front (THEORY §3: V₁'s moment form loses every digit there)
UNSUPPORTED_DTYPES = (torch.float16, torch.bfloat16)

#: seed of the batch-independence probe's own generator (the global RNG is never touched)
_PROBE_SEED = 0x13_26


def _check_dtype(dtype: torch.dtype, what: str) -> None:
    if dtype in UNSUPPORTED_DTYPES:
        raise TypeError(f"{what} are {dtype}: use float32 or float64; fishersym computes in the parameters' "
                        "dtype, and half precision loses every digit of the variances "
                        "(convert with model.double() / x.double())")

#: the generic path materialises u_i, w_i for every parameter and input
#: (one nested forward-mode pass per parameter); above this count it refuses.
GENERIC_MAX_PARAMS = 200_000


def check_deterministic(model: nn.Module) -> None:
    """Refuse batch-coupled or random layers: THEORY §2 needs p(y|x;θ) per input, i.e. h_θ(x) a
    deterministic function of the one input x (not :func:`fishersym.testing.check_model`, which runs
    the paper's properties on a model)."""
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



def all_finite(t: torch.Tensor) -> torch.Tensor:
    """Whether every entry of a floating tensor is finite, as a 0-d bool tensor (no host synchronisation).

    From the extremes (one reduction pass, no temporary): min and max propagate NaN, and a tensor
    is finite exactly when its smallest and largest entries are (about 6× faster than
    ``isfinite(t).all()`` on a 256 × 784 float64 batch).

    >>> bool(all_finite(torch.tensor([1.0, -2.0]))), bool(all_finite(torch.tensor([1.0, float("nan")])))
    (True, False)
    """
    if t.numel() == 0:
        return torch.ones((), dtype=torch.bool, device=t.device)
    return torch.isfinite(torch.stack(torch.aminmax(t.reshape(-1)))).all()


def check_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters analysed (those with requires_grad), checked to be finite floating tensors."""
    params: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if not p.is_floating_point():
            raise TypeError(f"parameter {name!r} is not floating point ({p.dtype})")
        _check_dtype(p.dtype, f"the model's parameters ({name!r})")
        params[name] = p
    if not params:
        raise ValueError("the model has no trainable parameters (requires_grad=True) to analyse")
    # one host synchronisation for all parameters (devices may differ: the flags are gathered on one)
    dev = next(iter(params.values())).device
    finite = torch.stack([all_finite(p.detach()).to(dev) for p in params.values()])
    if not bool(finite.all()):
        name = next(n for n, ok in zip(params, finite.tolist()) if not ok)
        raise ValueError(f"parameter {name!r} contains non-finite values (NaN or inf)")
    dtypes = {p.dtype for p in params.values()}
    if len(dtypes) > 1:
        raise TypeError(f"the model's parameters mix dtypes {sorted(map(str, dtypes))}; use one dtype")
    return params


def check_inputs(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Inputs: a finite, non-empty tensor (batch, ...), detached from any autograd graph (the analysis
    differentiates with respect to the parameters only) and cast to the parameters' dtype."""
    if not isinstance(x, torch.Tensor):
        hint = " (convert with torch.as_tensor(x))" if hasattr(x, "__array__") else ""
        raise TypeError(f"inputs must be a torch.Tensor (batch, ...), got {type(x).__name__}{hint}")
    if x.dim() == 0:
        raise ValueError("inputs need a leading batch dimension: shape (batch, features); "
                         "a single input x is x.reshape(1, -1)")
    if x.shape[0] == 0:
        raise ValueError(f"the batch of inputs is empty (shape {tuple(x.shape)}); pass at least one input")
    if x.is_complex():
        raise TypeError(f"inputs are complex ({x.dtype}); the engines analyse real-valued models — "
                        "pass real inputs (e.g. torch.view_as_real(x) with a model built for it)")
    x = x.detach()
    if x.is_floating_point():
        _check_dtype(x.dtype, "the inputs")
        if not bool(all_finite(x)):
            raise ValueError(f"the inputs contain non-finite values (NaN or inf), shape {tuple(x.shape)}")
        x = x.to(dtype)
    return x


def check_output_shape(out, x: torch.Tensor) -> None:
    """The model's output for inputs x (batch, ...) must be a tensor (batch, C) (THEORY §1: one
    categorical/exponential-family output per input).  Refuses per-position outputs (batch, T, C)
    with the ways to analyse them."""
    B = x.shape[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model must return a tensor of shape (batch, C), got {type(out).__name__}; "
                        "wrap it to return the output tensor (e.g. lambda x: model(x).logits)")
    if out.dim() == 3 and out.shape[0] == B:
        T = out.shape[1]
        raise ValueError(
            f"the model returns shape {tuple(out.shape)}: one distribution per position (batch, T={T}, C), "
            "but fishersym analyses one distribution per input, shape (batch, C). Analyse one position t "
            "by wrapping the model, e.g. a module whose forward is `return model(x)[:, t]`; or, only when "
            "the positions are independent given the input, flatten them into the batch "
            "(inputs (batch·T, features) and outputs (batch·T, C)).")
    if out.dim() != 2 or out.shape[0] != B:
        conv = (" The inputs have shape " + str(tuple(x.shape)) + ": fishersym reads the first dimension as "
                "the batch, so one input of F features is x.reshape(1, F) and a batch is (batch, F).")
        raise ValueError(f"the model's output has shape {tuple(out.shape)}, expected (batch={B}, C): one row "
                         f"of outputs per input.{conv}")


def check_batch_independent(model: nn.Module, x: torch.Tensor, out: torch.Tensor) -> None:
    """Refuse models whose output for one input changes with the rest of the batch (THEORY §2).

    Two cheap probes: the whole batch in a pseudo-random order (un-permuted, it must give ``out``),
    which catches any coupling that is not symmetric in the inputs; and a pseudo-random input and
    the last one evaluated alone, which catches symmetric couplings (batch statistics).  The order
    and index come from a private ``torch.Generator`` with a fixed seed (the global RNG is untouched)."""
    B = x.shape[0]
    if B < 2:
        return
    g = torch.Generator().manual_seed(_PROBE_SEED)
    perm = torch.randperm(B, generator=g)
    if bool((perm == torch.arange(B)).all()):
        perm = perm.roll(1)
    r = int(torch.randint(B, (1,), generator=g))
    perm = perm.to(x.device)
    tol = 1e-4 if out.dtype == torch.float32 else 1e-9
    atol = tol * max(1.0, float(out.detach().abs().max()) if out.numel() else 1.0)

    def differs(a, b):
        return (not isinstance(a, torch.Tensor) or a.shape != b.shape
                or not torch.allclose(a, b, rtol=tol, atol=atol))

    msg = ("the model's output for an input depends on the other inputs of the batch (a batch-coupled "
           "layer?); the per-input quantities of THEORY §2 are undefined")
    with torch.no_grad():
        permuted = model(x[perm])
        if not isinstance(permuted, torch.Tensor) or permuted.shape != out.shape:
            raise ValueError(msg + ": the same inputs in another order gave an output of another shape")
        if differs(permuted[torch.argsort(perm)], out):
            raise ValueError(msg + ": the same inputs in another order gave other outputs")
        for i in sorted({r, B - 1}):
            if differs(model(x[i:i + 1]), out[i:i + 1]):
                raise ValueError(msg + f": input {i} alone gave another output than within the batch")
