"""Guards around every public analysis: the user's state is left as it was, and memory is bounded.

* :func:`preserve_user_state` — a context manager that snapshots what an
  analysis must never change (the model's parameters, their ``requires_grad``,
  ``.grad`` and ``nn.Parameter`` identity, buffers, train/eval modes, hooks and
  submodules; torch's global flags: default dtype, grad/inference/anomaly mode,
  the MHA fast path, the SDPA backend flags, TF32/cuDNN/determinism flags,
  ``torch.nn.functional``'s functions; and the global RNG states of torch,
  ``random`` and numpy) and restores it on exit, also when the analysis raises;
* :func:`state_fingerprint` — the same state as a comparable value (tests
  compare it before and after a call);
* :func:`check_budget` — refuse an allocation larger than the memory budget
  (default 2 GiB; environment variable ``FISHERSYM_MEMORY_BUDGET``, or a
  keyword of the entry point) with the estimated size and the alternatives.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import os
import random
import re
from typing import Any
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["preserve_user_state", "state_fingerprint", "check_budget", "memory_budget", "MemoryBudgetError",
           "DEFAULT_MEMORY_BUDGET", "guarded", "format_bytes"]

#: default memory budget for one allocation checked by :func:`check_budget` (bytes)
DEFAULT_MEMORY_BUDGET = 2 * 1024 ** 3

_ENV = "FISHERSYM_MEMORY_BUDGET"
_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1000, "KIB": 1024, "M": 1024 ** 2, "MB": 1000 ** 2,
          "MIB": 1024 ** 2, "G": 1024 ** 3, "GB": 1000 ** 3, "GIB": 1024 ** 3, "T": 1024 ** 4,
          "TB": 1000 ** 4, "TIB": 1024 ** 4}


class MemoryBudgetError(ValueError):
    """An analysis would allocate more than the memory budget (a ValueError: the request is too large)."""


def format_bytes(n: float) -> str:
    """Human-readable size with binary units (1 KiB = 1024 bytes)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def _parse_budget(value: Any, source: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{source} must be a number of bytes (int) or a size such as '4GiB', got {value!r}")
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if m is None or m.group(2).upper() not in _UNITS:
            raise ValueError(f"{source}={value!r} is not a size: give bytes (e.g. 2147483648) or a number with "
                             f"a unit (e.g. '2GiB', '512MiB', '4G'; units {', '.join(u for u in _UNITS if u)})")
        nbytes = float(m.group(1)) * _UNITS[m.group(2).upper()]
    else:
        try:
            nbytes = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{source} must be a number of bytes or a size string such as '4GiB', "
                            f"got {type(value).__name__}") from None
    if not nbytes > 0 or nbytes == float("inf"):
        raise ValueError(f"{source} must be a positive, finite number of bytes, got {value!r}")
    return int(nbytes)


def memory_budget(budget: int | float | str | None = None) -> int:
    """The budget in bytes: ``budget`` if given, else ``$FISHERSYM_MEMORY_BUDGET``, else 2 GiB."""
    if budget is not None:
        return _parse_budget(budget, "memory_budget")
    env = os.environ.get(_ENV)
    if env is not None and env.strip():
        return _parse_budget(env, _ENV)
    return DEFAULT_MEMORY_BUDGET


def check_budget(nbytes: int | float, what: str, alternatives: Iterable[str] = (),
                 budget: int | float | str | None = None) -> None:
    """Raise :class:`MemoryBudgetError` when ``nbytes`` (an estimate made *before* allocating) exceeds the
    budget (:func:`memory_budget`).  The message states the estimate, the budget, how to raise it, and
    the ``alternatives`` (phrases such as "group_bounds=False")."""
    limit = memory_budget(budget)
    if nbytes <= limit:
        return
    alts = list(alternatives)
    alt = (" Alternatives: " + "; ".join(alts) + ".") if alts else ""
    raise MemoryBudgetError(
        f"{what} would need about {format_bytes(nbytes)} ({int(nbytes)} bytes), more than the memory budget of "
        f"{format_bytes(limit)}.{alt} To allow it, raise the budget with memory_budget= (where the function "
        f"takes it) or the environment variable {_ENV} (e.g. {_ENV}=16GiB).")


# ---------------------------------------------------------------------------------------- global flags
def _flag_getters() -> dict[str, Callable[[], Any]]:
    b = torch.backends
    g: dict[str, Callable[[], Any]] = {
        "default_dtype": torch.get_default_dtype,
        "grad_enabled": torch.is_grad_enabled,
        "inference_mode": torch.is_inference_mode_enabled,
        "anomaly": torch.is_anomaly_enabled,
        "deterministic": torch.are_deterministic_algorithms_enabled,
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled,
        "float32_matmul_precision": torch.get_float32_matmul_precision,
        "num_threads": torch.get_num_threads,
        "cudnn_enabled": lambda: b.cudnn.enabled,
        "cudnn_benchmark": lambda: b.cudnn.benchmark,
        "cudnn_deterministic": lambda: b.cudnn.deterministic,
        "cudnn_allow_tf32": lambda: b.cudnn.allow_tf32,
        "cuda_matmul_allow_tf32": lambda: b.cuda.matmul.allow_tf32,
    }
    if hasattr(b, "mha") and hasattr(b.mha, "get_fastpath_enabled"):
        g["mha_fastpath"] = b.mha.get_fastpath_enabled
    for name in ("flash_sdp_enabled", "mem_efficient_sdp_enabled", "math_sdp_enabled", "cudnn_sdp_enabled"):
        if hasattr(b.cuda, name):
            g[name] = getattr(b.cuda, name)
    return g


def _set_flag(name: str, value: Any) -> None:
    b = torch.backends
    setters: dict[str, Callable[[Any], Any]] = {
        "default_dtype": torch.set_default_dtype,
        "grad_enabled": torch.set_grad_enabled,
        "anomaly": lambda v: torch.set_anomaly_enabled(v),
        "float32_matmul_precision": torch.set_float32_matmul_precision,
        "num_threads": torch.set_num_threads,
        "cudnn_enabled": lambda v: setattr(b.cudnn, "enabled", v),
        "cudnn_benchmark": lambda v: setattr(b.cudnn, "benchmark", v),
        "cudnn_deterministic": lambda v: setattr(b.cudnn, "deterministic", v),
        "cudnn_allow_tf32": lambda v: setattr(b.cudnn, "allow_tf32", v),
        "cuda_matmul_allow_tf32": lambda v: setattr(b.cuda.matmul, "allow_tf32", v),
        "mha_fastpath": lambda v: b.mha.set_fastpath_enabled(v),
        "flash_sdp_enabled": lambda v: b.cuda.enable_flash_sdp(v),
        "mem_efficient_sdp_enabled": lambda v: b.cuda.enable_mem_efficient_sdp(v),
        "math_sdp_enabled": lambda v: b.cuda.enable_math_sdp(v),
        "cudnn_sdp_enabled": lambda v: b.cuda.enable_cudnn_sdp(v),
    }
    setter = setters.get(name)
    if setter is not None:
        setter(value)


def _flags() -> dict[str, Any]:
    return {k: f() for k, f in _flag_getters().items()}


def _restore_flags(saved: dict[str, Any]) -> None:
    det_changed = (torch.are_deterministic_algorithms_enabled() != saved["deterministic"]
                   or torch.is_deterministic_algorithms_warn_only_enabled() != saved["deterministic_warn_only"])
    if det_changed:
        torch.use_deterministic_algorithms(saved["deterministic"], warn_only=saved["deterministic_warn_only"])
    for k, v in saved.items():
        if k in ("deterministic", "deterministic_warn_only", "inference_mode"):
            continue  # inference mode is scoped by its own context manager; it cannot leak past a call
        if _flag_getters()[k]() != v:
            _set_flag(k, v)


# ---------------------------------------------------------------------------------------- RNG states
def _rng_states() -> dict[str, Any]:
    out: dict[str, Any] = {"torch": torch.get_rng_state(), "random": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
        out["numpy"] = np.random.get_state()
    except ImportError:  # pragma: no cover
        pass
    return out


def _restore_rng(saved: dict[str, Any]) -> None:
    torch.set_rng_state(saved["torch"])
    random.setstate(saved["random"])
    if "cuda" in saved:
        torch.cuda.set_rng_state_all(saved["cuda"])
    if "numpy" in saved:
        import numpy as np
        np.random.set_state(saved["numpy"])


def _rng_digest(states: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(states["torch"].numpy().tobytes())
    h.update(repr(states["random"]).encode())
    for s in states.get("cuda", []):
        h.update(s.numpy().tobytes())
    if "numpy" in states:
        st = states["numpy"]
        h.update(repr((st[0], st[2], st[3], st[4])).encode())
        h.update(st[1].tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------- model state
_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks",
               "_backward_pre_hooks", "_state_dict_hooks", "_state_dict_pre_hooks",
               "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_hooks_always_called", "_global_forward_pre_hooks",
                 "_global_backward_hooks", "_global_backward_pre_hooks", "_global_module_registration_hooks",
                 "_global_parameter_registration_hooks", "_global_buffer_registration_hooks")


def _module_snapshot(model: nn.Module) -> list[tuple[nn.Module, dict[str, Any]]]:
    snap = []
    for m in model.modules():  # every module object once (shared modules included)
        d: dict[str, Any] = {
            "training": m.training,
            "parameters": dict(m._parameters),
            "buffers": dict(m._buffers),
            "non_persistent": set(getattr(m, "_non_persistent_buffers_set", set())),
            "modules": dict(m._modules),
            "hooks": {k: dict(getattr(m, k)) for k in _HOOK_DICTS if isinstance(getattr(m, k, None), dict)},
        }
        snap.append((m, d))
    return snap


def _tensor_state(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, bool, Any]]:
    """(tensor, copy of its values, requires_grad, .grad object) for every parameter and buffer object."""
    out, seen = [], set()
    for m in model.modules():
        for t in list(m._parameters.values()) + list(m._buffers.values()):
            if t is None or id(t) in seen:
                continue
            seen.add(id(t))
            out.append((t, t.detach().clone(), t.requires_grad, t.grad if t.is_leaf else None))
    return out


def _restore_model(snap, tensors) -> None:
    for m, d in snap:
        if m.training != d["training"]:
            m.training = d["training"]
        for attr in ("_parameters", "_buffers", "_modules"):
            cur, old = getattr(m, attr), d[attr[1:]]
            if cur.keys() != old.keys() or any(cur[k] is not v for k, v in old.items()):
                cur.clear()
                cur.update(old)
        if hasattr(m, "_non_persistent_buffers_set") and m._non_persistent_buffers_set != d["non_persistent"]:
            m._non_persistent_buffers_set.clear()
            m._non_persistent_buffers_set.update(d["non_persistent"])
        for k, old in d["hooks"].items():
            cur = getattr(m, k)
            if cur.keys() != old.keys() or any(cur[i] is not v for i, v in old.items()):
                cur.clear()
                cur.update(old)
    with torch.no_grad():
        for t, saved, rg, grad in tensors:
            if not torch.equal(t, saved) or t.dtype != saved.dtype:
                if t.shape == saved.shape and t.dtype == saved.dtype and t.device == saved.device:
                    t.data.copy_(saved)
                else:
                    t.data = saved
            if t.is_leaf and t.requires_grad != rg:
                t.requires_grad_(rg)
            if t.is_leaf and t.grad is not grad:
                t.grad = grad


def _global_hooks() -> dict[str, dict]:
    mod = torch.nn.modules.module
    return {k: dict(getattr(mod, k)) for k in _GLOBAL_HOOKS if isinstance(getattr(mod, k, None), dict)}


def _restore_global_hooks(saved: dict[str, dict]) -> None:
    mod = torch.nn.modules.module
    for k, old in saved.items():
        cur = getattr(mod, k)
        if cur.keys() != old.keys() or any(cur[i] is not v for i, v in old.items()):
            cur.clear()
            cur.update(old)


def _functional_namespace() -> dict[str, int]:
    return {k: id(v) for k, v in vars(F).items() if callable(v)}


@contextlib.contextmanager
def preserve_user_state(model: nn.Module | None = None) -> Iterator[None]:
    """Run a block and leave the user's model and torch's global state as they were (issue 13 item 7).

    Snapshots (see the module docstring) the model's parameter/buffer objects and values,
    ``requires_grad``, ``.grad``, submodules, train/eval modes and hooks, torch's global flags
    and hooks, ``torch.nn.functional``'s functions and the global RNG states; on exit (normal or
    by an exception) restores every item that differs.  A non-Module ``model`` is ignored (the
    entry point's own check reports it)."""
    flags = _flags()
    rng = _rng_states()
    ghooks = _global_hooks()
    fns = dict(vars(F))
    is_mod = isinstance(model, nn.Module)
    snap = _module_snapshot(model) if isinstance(model, nn.Module) else []
    tensors = _tensor_state(model) if isinstance(model, nn.Module) else []
    try:
        yield
    finally:
        _restore_flags(flags)
        _restore_rng(rng)
        _restore_global_hooks(ghooks)
        for k, v in fns.items():
            if callable(v) and vars(F).get(k) is not v:
                setattr(F, k, v)
        if is_mod:
            _restore_model(snap, tensors)


def state_fingerprint(model: nn.Module | None = None) -> dict[str, Any]:
    """A comparable snapshot of everything :func:`preserve_user_state` protects (for tests).

    Parameters and buffers are recorded by object identity, dtype, shape, ``requires_grad``,
    ``.grad`` identity and a SHA-256 of their bytes; modules by identity, mode, children and
    hook ids; globals by value; RNG states by a digest."""
    fp: dict[str, Any] = {"flags": _flags(), "rng": _rng_digest(_rng_states()),
                          "global_hooks": {k: list(v) for k, v in _global_hooks().items()},
                          "functional": _functional_namespace()}
    if isinstance(model, nn.Module):
        mods = []
        for name, m in model.named_modules(remove_duplicate=False):
            hooks = {k: [(i, id(f)) for i, f in getattr(m, k).items()] for k in _HOOK_DICTS
                     if isinstance(getattr(m, k, None), dict)}
            mods.append((name, id(m), m.training, [(k, id(c)) for k, c in m._modules.items()], hooks))
        fp["modules"] = mods
        tens: list[tuple] = []
        for name, m in model.named_modules(remove_duplicate=False):
            for kind, d in (("param", m._parameters), ("buffer", m._buffers)):
                for k, t in d.items():
                    if t is None:
                        tens.append((name, kind, k, None))
                        continue
                    arr = t.detach().cpu().contiguous().reshape(-1)
                    digest = hashlib.sha256(arr.view(torch.uint8).numpy().tobytes() if arr.numel() else b"")
                    tens.append((name, kind, k, id(t), type(t).__name__, str(t.dtype), tuple(t.shape),
                                 t.requires_grad, id(t.grad) if t.is_leaf and t.grad is not None else None,
                                 digest.hexdigest()))
        fp["tensors"] = tens
    return fp


def guarded(fn: Callable) -> Callable:
    """Decorator: run a public entry point ``fn(model, ...)`` inside :func:`preserve_user_state`."""
    sig = inspect.signature(fn)
    first = next(iter(sig.parameters))

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        model = args[0] if args else kwargs.get(first)
        if isinstance(model, torch.nn.Module):
            # forward pre-hooks of old-style weight_norm/prune rewrite module.weight on every call
            from .safe_ad import preserved_attributes
            with preserve_user_state(model), preserved_attributes(model):
                return fn(*args, **kwargs)
        with preserve_user_state(model):
            return fn(*args, **kwargs)

    return wrapper
