"""Cost estimate (dry run) of an exact analysis before it starts (issue 9 items 2d, 5).

:func:`cost_estimate` says, per parameter tensor, which path computes u = ∂h/∂θ and how w = ∂²h/∂θ²
(needed for V₂, THEORY §1, §3) is obtained: proved zero (with the proof's reason, :mod:`.proofs`,
THEORY §12), exact for every entry, exact on a random sample of entries, or as part of the fast
path's factored computation (THEORY §7).  It counts the passes per input and estimates the bytes
and the time:

* fast path (THEORY §7): one forward and the backward of the C-column output Jacobian per input,
  about (t_f + C·t_b) per input;
* reverse path (:mod:`.reverse`): u from C backward passes per input and group of tensors
  differentiated together (≈ t_f + C·t_b per input and group; memory :func:`.reverse.estimate_bytes`);
* exact w per entry (nested forward mode, verified by reverse-over-reverse: :func:`.generic.directions`;
  also the generic path's route for u): about three forward passes per entry and input plus the
  check (about the same again), costed by a **timed calibration** of that very routine on a few
  entries of one input, ``w_entry_seconds`` per entry and input.

t_f and t_b are timed on one input (the fastest of three runs after a warm-up).  The times are
rough: vmap batches entries and inputs, so the real time per entry usually falls as chunks grow
(the estimate is then pessimistic); caches and other processes make any single timing noisy.

>>> import torch
>>> from torch import nn
>>> from fishersym.numeric.cost import cost_estimate
>>> m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)).double().eval()
>>> from fishersym import families
>>> est = cost_estimate(m, torch.randn(2, 1, 4, 4, dtype=torch.float64), families.get("categorical", C=3),
...                     path="reverse", calibrate=False)
>>> [t.w.split(":")[0] for t in est.tensors]
['proved zero', 'proved zero', 'proved zero', 'proved zero']
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..families.base import ExponentialFamily
from .attention import math_attention
from .checks import GENERIC_MAX_PARAMS, check_params
from .safe_ad import preserved_attributes

__all__ = ["cost_estimate", "CostEstimate", "TensorCost", "sample_size", "V2_MODES", "W_FORWARD_PASSES"]

#: how V₂'s w is obtained on the reverse path (the public ``v2=`` option)
V2_MODES = ("exact", "sample", "prove")
#: forward passes per entry and input of exact w (nested forward mode: ~3) and its check (about the same)
W_FORWARD_PASSES = 6
#: bytes per value of a result key, keys held per entry (I, V₁, V₂, bounds, spreads, …; about 20)
_RESULT_KEYS = 20


def sample_size(n_entries: int, v2_sample: int | float) -> int:
    """Entries of a tensor of ``n_entries`` whose w is computed with ``v2_sample`` (an int count or a
    fraction in (0, 1]): the count (or ⌈fraction·P⌉), at least 2 (for a standard error), at most P.
    The same rule as the sample drawn by :func:`.reverse.reverse_engine`."""
    n = v2_sample if isinstance(v2_sample, int) else math.ceil(v2_sample * n_entries)
    return min(n_entries, max(n, min(2, n_entries)))


@dataclass
class TensorCost:
    """One parameter tensor's route and cost (per the whole analysis unless stated)."""

    name: str
    numel: int
    u: str                      # how u is computed
    w: str                      # how w is obtained ("proved zero: <reason>", "exact", "sampled", …)
    w_entries: int              # entries whose w is computed by nested forward mode (per input)
    backward_passes: float      # per input
    forward_passes: float       # per input
    bytes: int                  # peak working set while this tensor is processed
    seconds: float              # estimated time for all inputs


@dataclass
class CostEstimate:
    """The result of :func:`cost_estimate`; ``str(est)`` is a readable table."""

    path: str
    reason: str
    v2: str
    n_inputs: int
    n_outputs: int
    dtype: torch.dtype
    tensors: list[TensorCost]
    forward_seconds: float                # one forward pass of one input (timed; NaN if not calibrated)
    backward_seconds: float               # one backward pass of one input (timed; NaN if not calibrated)
    w_entry_seconds: float | None         # exact w per entry and input (timed on a few entries; None: no w)
    activation_bytes: int                 # activations of one input's forward pass (traced)
    result_bytes: int                     # the result's per-entry tensors
    notes: list[str] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        """The predicted time, summed over the tensors (seconds)."""
        return float(sum(t.seconds for t in self.tensors))

    @property
    def peak_bytes(self) -> int:
        """The predicted peak memory: the largest tensor's working memory plus the results (bytes)."""
        return max((t.bytes for t in self.tensors), default=0) + self.result_bytes

    @property
    def w_entries(self) -> int:
        """The number of entries whose w is computed, over all tensors."""
        return sum(t.w_entries for t in self.tensors)

    def summary(self) -> str:
        """One line: passes, time and memory."""
        fwd = sum(t.forward_passes for t in self.tensors if t.w_entries)
        return (f"about {_fmt_s(self.total_seconds)} and {_fmt_b(self.peak_bytes)} for {self.n_inputs} input(s) on "
                f"the {self.path} path (exact w for {self.w_entries} entries: ~{fwd:.3g} forward passes per input"
                + (f", {_fmt_s(self.w_entry_seconds)} per entry and input measured" if self.w_entry_seconds else "")
                + ")")

    def __str__(self) -> str:
        head = [f"fishersym cost estimate: path={self.path} ({self.reason}); v2={self.v2}; "
                f"{self.n_inputs} input(s), C={self.n_outputs}, {self.dtype}",
                f"calibration (one input): forward {_fmt_s(self.forward_seconds)}, backward "
                f"{_fmt_s(self.backward_seconds)}"
                + (f", exact w {_fmt_s(self.w_entry_seconds)} per entry" if self.w_entry_seconds else "")]
        cols = ["tensor", "entries", "u", "w", "w entries", "bwd/input", "fwd/input", "memory", "time"]
        rows = [[t.name, str(t.numel), t.u, _short(t.w), str(t.w_entries), f"{t.backward_passes:.3g}",
                 f"{t.forward_passes:.3g}", _fmt_b(t.bytes), _fmt_s(t.seconds)] for t in self.tensors]
        widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
        line = lambda xs: "  ".join(x.ljust(w) if i < 4 else x.rjust(w) for i, (x, w) in enumerate(zip(xs, widths)))  # noqa: E731
        out = head + [line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows]
        out.append(f"total: {self.summary()}; results {_fmt_b(self.result_bytes)}")
        reasons = [f"  {t.name}: {t.w}" for t in self.tensors if len(t.w) > len(_short(t.w))]
        if reasons:
            out += ["w per tensor:"] + reasons
        out += self.notes
        return "\n".join(out)


def _short(w: str) -> str:
    return w.split(":")[0]


def _fmt_s(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "n/a"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    if s < 120:
        return f"{s:.3g} s"
    if s < 7200:
        return f"{s / 60:.3g} min"
    return f"{s / 3600:.3g} h"


def _fmt_b(b: int | float) -> str:
    for unit, f in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= f:
            return f"{b / f:.3g} {unit}"
    return f"{int(b)} B"


def _best_of(fn, repeats: int = 3) -> float:
    fn()                                     # warm-up
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _calibrate(fn, values: dict[str, torch.Tensor], x1: torch.Tensor) -> tuple[float, float]:
    """(t_f, t_b): one forward of one input, and one backward (of Σh) on top of it."""
    def fwd():
        with torch.no_grad():
            fn.batch(values, x1)

    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in values.items()}

    def fwd_bwd():
        with torch.enable_grad():
            h = fn.batch(leaves, x1)
            torch.autograd.grad(h.sum(), list(leaves.values()), allow_unused=True)

    tf = _best_of(fwd)
    tfb = _best_of(fwd_bwd)
    return tf, max(tfb - tf, tf * 1e-3)


def _calibrate_w(model, x1, family, name: str, numel: int) -> float:
    """Seconds per entry and input of exact w (:func:`.generic.directions`, the engines' routine) on
    up to 16 entries of ``name`` for one input (after a warm-up on one entry)."""
    from .generic import directions
    k = min(16, numel)
    idx = torch.arange(k)
    directions(model, x1, family, name, idx[:1])
    t = time.perf_counter()
    directions(model, x1, family, name, idx)
    return (time.perf_counter() - t) / k


def cost_estimate(model: nn.Module, inputs: torch.Tensor, family: str | ExponentialFamily, *,
                  path: str = "auto", v2: str = "exact", v2_sample: int | float | None = None,
                  max_params: int = GENERIC_MAX_PARAMS, max_bytes: int | None = None,
                  calibrate: bool = True,
                  family_params: dict | None = None) -> CostEstimate:
    """Which path each parameter tensor takes, the passes per input, and the estimated bytes and time
    of :func:`~fishersym.numeric.conditional_stats` on ``inputs`` (module docstring), without running it.

    ``path``, ``v2`` and ``v2_sample`` as in ``conditional_stats`` (the path is chosen by the same
    :func:`.conditional.select_engine`); ``max_bytes`` the reverse path's memory budget (default
    :data:`.reverse.DEFAULT_MAX_BYTES`).  ``calibrate=False`` skips the timings (times are then NaN).
    The proofs of w ≡ 0 come from :func:`.proofs.prove_w_zero` on the first input (the engine traces
    every input; data-dependent control flow could change a verdict)."""
    from .conditional import check_v2, resolve_family, select_engine
    from .reverse import DEFAULT_MAX_BYTES, _Fn, estimate_bytes
    from .proofs import trace_taints, _verdicts

    family = resolve_family(family, family_params, model=model, data=inputs)
    v2, v2_sample = check_v2(v2, v2_sample, None)[:2]
    engine = select_engine(model, family, path, max_params, v2=v2)
    params = check_params(model)
    x = inputs
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[0] == 0:
        raise ValueError("inputs must be a tensor (batch, ...) with at least one input")
    B = x.shape[0]
    x1 = x[:1]
    max_bytes = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    fn = _Fn(model, family)
    values = {k: fn.fixed[k] for k in params}
    with preserved_attributes(model), math_attention():
        with torch.no_grad():
            C = int(fn.batch({}, x1).shape[-1])
        taint, act = trace_taints(lambda: fn.batch(values, x1), values)
        proofs = _verdicts(taint, values)
        act = max(int(act), 1)
        tf = tb = math.nan
        if calibrate:
            tf, tb = _calibrate(fn, values, x1)
        sizes = {k: v.numel() for k, v in values.items()}
        s = next(iter(values.values())).element_size()
        P = sum(sizes.values())
        w_need: dict[str, int] = {}
        if engine.path == "generic":
            w_need = dict(sizes)
        elif engine.path == "reverse":
            for k, p in proofs.items():
                if not p.proved:
                    if v2 == "exact":
                        w_need[k] = sizes[k]
                    elif v2 == "sample":
                        assert v2_sample is not None              # check_v2: v2="sample" has its size
                        w_need[k] = sample_size(sizes[k], v2_sample)
        tw = None
        if w_need and calibrate:
            big = max(w_need, key=lambda k: w_need[k])
            tw = _calibrate_w(model, x1, family, big, sizes[big])
    tensors: list[TensorCost] = []
    notes: list[str] = []
    fast_zero: dict[str, str] = {}
    fast_mlp = False
    if engine.path == "fast":
        from .layers.graph import proved_zero
        assert engine.plan is not None                     # select_engine gives the fast path its plan
        fast_zero = proved_zero(engine.plan.graph)
        fast_mlp = engine.plan.mlp is not None
    if engine.path == "reverse":
        n_groups = max(1, math.ceil(estimate_bytes(C, P, act, s) / max_bytes))
        notes.append(f"reverse path: about {n_groups} group(s) of tensors, each C={C} backward passes per input "
                     f"(budget {_fmt_b(max_bytes)})")
        t_u = n_groups * B * (tf + C * tb)
    for k, n in sizes.items():
        pr = proofs[k]
        nw = w_need.get(k, 0)
        per_entry = 4 * act + 2 * n * s                           # exact w, one entry (reverse._w_entries)
        kchunk = max(1, min(max(nw, 1), 1024, max_bytes // per_entry))
        w_sec = (tw if tw is not None else W_FORWARD_PASSES * tf) * nw * B
        if engine.path == "fast":
            u = ("fast (factored MLP recursion, THEORY §7)" if fast_mlp
                 else "fast (per-layer rules, THEORY §12)")
            w = (f"proved zero: {fast_zero[k]}" if k in fast_zero
                 else "exact: every entry, from the per-layer second-order factors (no extra pass)")
            bwd, fwd = float(C), 1.0
            by = (1 + C) * act
            sec = B * (tf + C * tb) * n / P
        elif engine.path == "generic":
            u = "generic (nested forward)"
            w = f"exact: every entry ({n}), with u by nested forward mode"
            bwd, fwd = 0.0, float(W_FORWARD_PASSES * n)
            by = kchunk * B * per_entry
            sec = w_sec
        else:
            u = f"reverse ({C} backward passes)"
            bwd, fwd = float(C), 1.0 + W_FORWARD_PASSES * nw
            by = estimate_bytes(C, n, act, s)
            if pr.proved:
                w = f"proved zero: {pr.reason}"
            elif v2 == "sample":
                w = f"sampled: {nw} of {n} entries exact (nested forward), totals estimated with a s.e.; {pr.reason}"
            elif v2 == "prove":
                w = f"not proved (v2='prove' will refuse): {pr.reason}"
            else:
                w = f"exact: every entry ({n}) by nested forward mode; {pr.reason}"
            if nw:
                by = max(by, kchunk * per_entry)
            sec = t_u * n / P + (w_sec if nw else 0.0)
        tensors.append(TensorCost(k, n, u, w, nw, bwd, fwd, int(by), float(sec)))
    if w_need and not calibrate:
        notes.append("not calibrated: times are NaN (calibrate=True times one forward/backward and a few w entries)")
    return CostEstimate(path=engine.path, reason=engine.reason, v2=v2, n_inputs=B, n_outputs=C,
                        dtype=next(iter(values.values())).dtype, tensors=tensors,
                        forward_seconds=tf, backward_seconds=tb, w_entry_seconds=tw, activation_bytes=act,
                        result_bytes=_RESULT_KEYS * B * P * s, notes=notes)
