"""Device benchmark (issue 12 item 5): the data-set table and the architectures table on whatever
device is present, as markdown.

Runs as ONE command with nothing installed beyond torch, sympy, numpy, tqdm and the package on
``PYTHONPATH`` (no BackPACK, curvlinops, pytest, hypothesis, scipy, matplotlib or scikit-learn):

    PYTHONPATH=. python benchmarks/bench_gpu.py                   # CUDA if present (full: ≈ 3–6 min on an H100)
    PYTHONPATH=. python benchmarks/bench_gpu.py --quick           # 256/1,024 inputs, B = 2 only
    PYTHONPATH=. python benchmarks/bench_gpu.py --device cpu --quick --sizes 16,32 --arch lenet5 \\
        --lenet-input-size 8 --repeats 1                          # the test's smoke run (tests/test_bench_gpu.py)

Prepared one-shot device command (everything under ``$OUT`` comes back; stdout is the markdown,
stderr the progress; the JSON is rewritten after every section, so a run cut short keeps what it
measured, and ``--budget-seconds`` makes the script skip, not start, cells that would end past it):

    PYTHONPATH=. timeout 420 python benchmarks/bench_gpu.py --json $OUT/gpu.json 2>$OUT/gpu.log | tee $OUT/gpu.md

(device tool ``timeout_s`` 480).  Estimated run time on an H100 with the issue's figures (65,536-input
default 76 s, hence skipped by the 30 s per-call limit): about 4 minutes, at most the 330 s budget
plus one call.

**Table 1** (issue 12 "Why"): the 784-128-64-32-10 sigmoid MLP (``bench_mlp.make_model``), categorical
C = 10, float64, seeded random inputs (256 / 4,096 / 65,536; ``--sizes``): one cross-entropy
forward+backward (summed loss, ``backward()``) over the same inputs; ``dataset_stats(use_eig=False,
sharpened=False)`` (paper scope); ``dataset_stats()`` (default); and both with ``batch_size="auto"``
where this version of ``dataset_stats`` accepts it ("n/a (not supported by this version)"
otherwise).  Each as seconds, × the CE forward+backward over the same inputs and × a 256-input CE
step (timed in the same rounds), with the peak device memory of the call.  Then the largest relative
difference of the device results from CPU results on the 256-input case (``--check-size``), per
tensor max|Δ| / max|CPU value|, over every key and tensor but input_var (the engine must agree to
~1e-13 in float64) and, apart, for input_var (Var_q I), whose stated relative rounding bound is √ε
(``CentredMoments.add_part``: S₂ − S₁²/B); with ``--device cpu`` that compares the CPU with itself
(a determinism check only).

**Table 2** (issue 9 "Real architectures", README): the per-sample Jacobian alone, ``vmap(jacrev)``
(``bench_architectures.per_sample_jacobian_fn``), against ``conditional_stats(keys=("fisher",
"var1", "var2"), precision_check=0)`` (path auto) and the same on ``path="reverse"``, for CIFAR
ResNet-18 (float32, B = 2 and 8: exact V₂, proved ≡ 0 per tensor), LeNet-5 (tanh, float64, B = 8:
auto = the fast per-layer path with exact V₂; the reverse row samples V₂ on ``--fraction`` of the
entries, since its exact nested-forward-mode w takes minutes) and the small transformer (float64,
B = 2; auto resolves to the reverse path, with V₂ sampled on ``--fraction``, because exact V₂ takes
about 170 s per input on the CPU).  Ratios to the Jacobian's time; peak memory is
``torch.cuda.max_memory_allocated`` above the allocation before the call (reset before every row)
and its ratio to the Jacobian's size B·C·P·(bytes per number); on the CPU no memory is measured here
(``bench_architectures.py`` measures the resident peak in subprocesses).

**Timing**: every call is bracketed by ``torch.cuda.synchronize()`` (wall time, host work included);
one untimed warm-up call per method (which also gives its peak memory), then rounds in which the
methods alternate (the order reversed every other round), medians.  A method gets
min(``--repeats``, ⌊``--max-seconds`` / warm-up time⌋) timed calls (at least 1); a warm-up over
``--max-seconds`` is reported as that single call.  A method whose predicted time at the next
(larger) size exceeds ``--max-seconds`` (a power law fitted to its last two sizes; linear from one)
or whose call exceeded it is not run there: "skipped (> N s)".  Anything that would end past
``--budget-seconds`` of total run time is skipped the same way.  Errors (e.g. out of memory) are
caught, reported in the table and the run goes on.
"""
from __future__ import annotations

import argparse
import copy
import inspect
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_architectures import n_params, per_sample_jacobian_fn, table
from bench_mlp import make_model

from fishersym import families
from fishersym.experiments.architectures import lenet5, resnet18, small_transformer
from fishersym.numeric import conditional_stats, dataset_stats

MIB = 1 << 20
ARCH_KEYS = ("fisher", "var1", "var2")
CPU_CHECK_BATCH = 256          # dataset_stats' fixed default: the CPU reference of the device check
ARCHS = ("resnet18", "lenet5", "transformer")
ANALYSES = {  # name → (label, dataset_stats keyword arguments)
    "paper": ("dataset_stats(use_eig=False, sharpened=False) (paper scope)", {"use_eig": False, "sharpened": False}),
    "default": ("dataset_stats() (default)", {}),
    "paper_auto": ('paper scope, batch_size="auto"', {"use_eig": False, "sharpened": False, "batch_size": "auto"}),
    "default_auto": ('default, batch_size="auto"', {"batch_size": "auto"}),
}


# ----------------------------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Cell:
    """One method at one size: its measurements or why it was not measured."""
    seconds: float | None = None            # median of the timed calls (or the single warm-up call)
    times: list[float] = field(default_factory=list)
    warmup_s: float | None = None
    peak_bytes: int | None = None           # device peak above the allocation before the warm-up call
    calls: int = 0                          # timed calls behind ``seconds`` (0: the warm-up call alone)
    skipped: str | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)

    def text(self, digits: int = 4) -> str:
        if self.skipped:
            return self.skipped
        if self.error:
            return f"error: {self.error}"
        return f"{self.seconds:.{digits}f}" + ("" if self.calls else " (1 call)")


def call_once(fn: Callable[[], Any], device: torch.device) -> tuple[float, int | None, Any]:
    """Seconds of one synchronised call, the device peak memory it added (None on the CPU), its value."""
    sync(device)
    base = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    t = time.perf_counter() - t0
    peak = None if base is None else torch.cuda.max_memory_allocated(device) - base
    return t, peak, out


def describe_error(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg[:300]}"


def predict_seconds(history: list[tuple[float, float]], n: float) -> float | None:
    """Predicted seconds at size ``n`` from [(size, seconds), …] measured at smaller sizes: a power law
    t ∝ n^α through the last two points (α clipped to [0, 2]), linear (α = 1) from one point.

    >>> predict_seconds([(256, 1.0)], 1024)
    4.0
    >>> round(predict_seconds([(256, 1.0), (1024, 2.0)], 4096), 6)
    4.0
    >>> predict_seconds([], 10) is None
    True
    """
    if not history:
        return None
    n1, t1 = history[-1]
    alpha = 1.0
    if len(history) >= 2:
        n0, t0 = history[-2]
        if t0 > 0 and t1 > 0 and n1 != n0:
            alpha = min(2.0, max(0.0, math.log(t1 / t0) / math.log(n1 / n0)))
    return t1 * (n / n1) ** alpha


def timed_calls(warmup_s: float, repeats: int, max_seconds: float, time_left: float) -> int:
    """Timed calls for a method whose warm-up took ``warmup_s``: min(repeats, ⌊max_seconds / warmup_s⌋,
    ⌊time_left / warmup_s⌋), at least 1; 0 (the warm-up call stands alone) when the warm-up itself took
    more than ``max_seconds`` or more than the time left.

    >>> timed_calls(0.1, 5, 30, 1e9), timed_calls(10, 5, 30, 1e9), timed_calls(40, 5, 30, 1e9)
    (5, 3, 0)
    >>> timed_calls(10, 5, 30, 15)
    1
    """
    if warmup_s > max_seconds or warmup_s > time_left:
        return 0
    w = max(warmup_s, 1e-9)
    return max(1, min(repeats, int(max_seconds // w), int(time_left // w)))


class Runner:
    """Runs groups of methods (round-robin), with the per-call and whole-run time limits."""

    def __init__(self, device: torch.device, repeats: int, max_seconds: float, budget_seconds: float):
        self.device, self.repeats, self.max_seconds, self.budget = device, repeats, max_seconds, budget_seconds
        self.t_start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def time_left(self) -> float:
        return self.budget - self.elapsed()

    def run(self, fns: dict[str, Callable[[], Any]], predicted: dict[str, float | None] | None = None,
            keep: tuple[str, ...] = (), tag: str = "") -> tuple[dict[str, Cell], dict[str, Any]]:
        """Warm-up call of each method (peak memory), then round-robin timed calls; returns the cells and
        the last value of each method named in ``keep``.  A method predicted to take more than
        ``max_seconds`` (or longer than the time left) is skipped."""
        predicted = predicted or {}
        cells = {k: Cell() for k in fns}
        kept: dict[str, Any] = {}
        reps: dict[str, int] = {}
        for k, fn in fns.items():
            p = predicted.get(k)
            if p is not None and p > self.max_seconds:
                cells[k].skipped = f"skipped (> {self.max_seconds:g} s: predicted {p:.3g} s)"
                continue
            if p is not None and p > self.time_left():
                cells[k].skipped = f"skipped (time budget: predicted {p:.3g} s, {max(self.time_left(), 0):.0f} s left)"
                continue
            if self.time_left() <= 0:
                cells[k].skipped = f"skipped (time budget of {self.budget:g} s spent)"
                continue
            try:
                t, peak, out = call_once(fn, self.device)
            except Exception as exc:  # noqa: BLE001 - reported in the table (e.g. out of memory)
                cells[k].error = describe_error(exc)
                print(f"  {tag} {k}: {cells[k].error}", file=sys.stderr, flush=True)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            cells[k].warmup_s, cells[k].peak_bytes = t, peak
            if hasattr(out, "info") and "batch_size" in getattr(out, "info", {}):
                cells[k].extra["batch_size"] = out.info["batch_size"]
            if k in keep:
                kept[k] = out
            del out
            print(f"  {tag} {k}: warm-up {t:.4f} s" + ("" if peak is None else f", peak {peak / MIB:,.0f} MiB"),
                  file=sys.stderr, flush=True)
            reps[k] = timed_calls(t, self.repeats, self.max_seconds, self.time_left())
            if reps[k] == 0:
                cells[k].seconds, cells[k].calls = t, 0
        names = [k for k in fns if reps.get(k, 0) > 0]
        for r in range(max((reps[k] for k in names), default=0)):
            order = names if r % 2 == 0 else names[::-1]
            for k in order:
                if reps[k] <= r or cells[k].error:
                    continue
                try:
                    t, _, out = call_once(fns[k], self.device)
                except Exception as exc:  # noqa: BLE001
                    cells[k].error = describe_error(exc)
                    continue
                cells[k].times.append(t)
                if k in keep:
                    kept[k] = out
                del out
        for k in names:
            c = cells[k]
            if c.times and not c.error:
                c.seconds, c.calls = statistics.median(c.times), len(c.times)
            print(f"  {tag} {k}: {c.text()} s over {c.calls} call(s) (elapsed {self.elapsed():.0f} s)",
                  file=sys.stderr, flush=True)
        return cells, kept


# ----------------------------------------------------------------------------------------------- checks
def auto_supported(fn: Callable = dataset_stats) -> tuple[bool, str]:
    """Whether ``fn`` (``dataset_stats``) documents ``batch_size="auto"``: its ``batch_size`` annotation
    names ``str`` (or it has none, and the call decides).

    >>> def old(model, data, family, *, batch_size: int = 256): ...
    >>> auto_supported(old)
    (False, 'n/a (not supported by this version)')
    >>> def new(model, data, family, *, batch_size: 'int | str' = 256): ...
    >>> auto_supported(new)[0]
    True
    """
    p = inspect.signature(fn).parameters.get("batch_size")
    if p is None:
        return False, "n/a (not supported by this version: no batch_size)"
    ann = p.annotation
    if ann is inspect.Parameter.empty:
        return True, ""
    text = ann if isinstance(ann, str) else repr(ann)
    if "str" in text or "Literal" in text:
        return True, ""
    return False, "n/a (not supported by this version)"


#: the relative rounding bound of Var_q I (input_var) in float64: √ε (``CentredMoments.add_part``)
INPUT_VAR_TOL = math.sqrt(torch.finfo(torch.float64).eps)


def max_rel_diff(got, ref, keys=None) -> tuple[float, str]:
    """Largest per-tensor relative difference max|got − ref| / max|ref| over every key (or those of
    ``keys``) and tensor of two results (mappings key → {name: tensor}); non-finite entries must
    coincide exactly (else inf).  Returns (difference, where it occurs).

    >>> a = {"fisher": {"w": torch.tensor([1.0, 2.0], dtype=torch.float64)}}
    >>> b = {"fisher": {"w": torch.tensor([1.0, 2.0 + 2e-12], dtype=torch.float64)}}
    >>> f"{max_rel_diff(b, a)[0]:.2e}"
    '1.00e-12'
    """
    worst, where = 0.0, ""
    for key in ref:
        if keys is not None and key not in keys:
            continue
        if key not in got:
            return math.inf, f"key {key!r} missing"
        for name, r in ref[key].items():
            if name not in got[key]:
                return math.inf, f"{key}[{name}] missing"
            g = got[key][name]
            if not (isinstance(r, torch.Tensor) and isinstance(g, torch.Tensor)):
                continue
            r = r.detach().to("cpu", torch.float64)
            g = g.detach().to("cpu", torch.float64)
            if g.shape != r.shape:
                return math.inf, f"{key}[{name}] shape {tuple(g.shape)} vs {tuple(r.shape)}"
            fin = torch.isfinite(r)
            if not torch.equal(fin, torch.isfinite(g)):
                return math.inf, f"{key}[{name}] non-finite entries differ"
            nf = ~fin
            if nf.any() and not torch.equal(torch.nan_to_num(g[nf], nan=0.5), torch.nan_to_num(r[nf], nan=0.5)):
                return math.inf, f"{key}[{name}] non-finite values differ"
            if not fin.any():
                continue
            diff = float((g[fin] - r[fin]).abs().max())
            scale = float(r[fin].abs().max())
            d = diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)
            if d > worst:
                worst, where = d, f"{key}[{name}]"
    return worst, where


# ----------------------------------------------------------------------------------------------- MLP table
def bench_mlp_table(args, runner: Runner, device: torch.device) -> dict:
    fam = families.get("categorical", C=10)
    model = make_model(torch.float64).to(device)
    sizes = args.sizes
    n_all = max(max(sizes), 256)
    gen = torch.Generator().manual_seed(args.seed)
    x_all = torch.randn(n_all, 784, dtype=torch.float64, generator=gen)
    y_all = torch.randint(0, 10, (n_all,), generator=gen)
    x_dev, y_dev = x_all.to(device), y_all.to(device)
    ok_auto, why_auto = auto_supported()
    analyses = [a for a in ANALYSES if ok_auto or not a.endswith("_auto")]
    check_n = args.check_size if args.check_size in sizes else min(sizes)

    def ce_fn(n):
        x, y = x_dev[:n], y_dev[:n]

        def f():
            model.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
        return f

    def ds_fn(n, kw):
        x = x_dev[:n]
        return lambda: dataset_stats(model, x, fam, progress=False, **kw)

    history: dict[str, list[tuple[float, float]]] = {a: [] for a in analyses}
    exceeded: dict[str, float] = {}
    rows, res = [], {"sizes": {}, "auto_supported": ok_auto, "auto_note": why_auto, "check_size": check_n}
    for n in sizes:
        print(f"== MLP, {n:,} inputs (elapsed {runner.elapsed():.0f} s)", file=sys.stderr, flush=True)
        fns = {"ce": ce_fn(n), "ce256": ce_fn(256)}
        predicted: dict[str, float | None] = {}
        for a in analyses:
            fns[a] = ds_fn(n, ANALYSES[a][1])
            predicted[a] = predict_seconds(history[a], n)
        pre_skipped = {a: f"skipped (> {args.max_seconds:g} s at {exceeded[a]:,} inputs)"
                       for a in analyses if a in exceeded}
        for a in pre_skipped:
            fns.pop(a)
        keep = tuple(a for a in analyses if n == check_n)
        cells, kept = runner.run(fns, predicted, keep=keep, tag=f"[{n}]")
        for a, why in pre_skipped.items():
            cells[a] = Cell(skipped=why)
        for a in analyses:
            c = cells[a]
            if c.seconds is not None:
                history[a].append((n, c.seconds))
            if (c.warmup_s or 0) > args.max_seconds:      # a measured call over the limit: no larger size
                exceeded.setdefault(a, n)
        t_ce, t_256 = cells["ce"].seconds, cells["ce256"].seconds
        size_res = {"cells": {k: vars(c) for k, c in cells.items()}}
        for k in ["ce"] + list(analyses):
            c = cells[k]
            label = "cross-entropy forward+backward" if k == "ce" else ANALYSES[k][0]
            t = c.seconds
            rows.append([f"{n:,}", label, c.text(),
                         "—" if t is None or not t_ce else f"{t / t_ce:,.1f}",
                         "—" if t is None or not t_256 else f"{t / t_256:,.1f}",
                         "—" if c.peak_bytes is None else f"{c.peak_bytes / MIB:,.1f}",
                         str(c.extra.get("batch_size", "")) if k != "ce" else ""])
        if not ok_auto:
            for k in ("paper_auto", "default_auto"):
                rows.append([f"{n:,}", ANALYSES[k][0], why_auto, "—", "—", "—", ""])
        if n == check_n:
            size_res["cpu_check"] = cpu_check(args, model, x_all[:n], fam, kept, device)
        res["sizes"][n] = size_res
    res["table"] = table(["inputs", "what", "median s", "× CE fwd+bwd (same inputs)", "× CE fwd+bwd (256 inputs)",
                          "peak device MiB", "batch size used"], rows)
    res["summary_table"] = summary_table(res, analyses, ok_auto, why_auto)
    return res


def cpu_check(args, model, x_cpu, fam, kept: dict, device: torch.device) -> dict:
    """Max relative difference of the device results (the last timed call) from a CPU run of the same
    analysis on the same inputs; the auto-batched results are compared with the fixed-batch CPU ones."""
    out = {"reference": "cpu" if device.type != "cpu" else "cpu (same device: determinism only)"}
    model_cpu = copy.deepcopy(model).to("cpu")
    refs: dict[str, Any] = {}
    for a, got in kept.items():
        base = a.replace("_auto", "")
        try:
            if base not in refs:
                refs[base] = dataset_stats(model_cpu, x_cpu, fam, progress=False, batch_size=CPU_CHECK_BATCH,
                                           **ANALYSES[base][1])
            others = [k for k in refs[base] if k != "input_var"]
            d, where = max_rel_diff(got, refs[base], keys=others)
            d_iv, where_iv = max_rel_diff(got, refs[base], keys=["input_var"])
            d_main, where_main = max_rel_diff(got, refs[base], keys=ARCH_KEYS)
            out[a] = {"max_rel_diff": d, "where": where, "max_rel_diff_input_var": d_iv, "where_input_var": where_iv,
                      "max_rel_diff_fisher_var1_var2": d_main,
                      "where_fisher_var1_var2": where_main, "keys": len(list(refs[base])),
                      "against": f"CPU {ANALYSES[base][0]}, batch_size={CPU_CHECK_BATCH}"}
        except Exception as exc:  # noqa: BLE001 - reported
            out[a] = {"error": describe_error(exc)}
    return out


def summary_table(res: dict, analyses, ok_auto: bool, why_auto: str) -> str:
    """The issue's layout: one row per input count, 'time (× CE same inputs; × CE 256)' per analysis."""
    def fmt(c: dict, t_ce, t_256) -> str:
        if c.get("skipped"):
            return c["skipped"]
        if c.get("error"):
            return "error"
        t = c["seconds"]
        s = f"{t * 1e3:,.1f} ms" if t < 1 else f"{t:,.2f} s"
        return f"{s} ({t / t_ce:,.1f}×; {t / t_256:,.1f}× CE₂₅₆)" if t_ce and t_256 else s

    heads = ["paper", "default", "paper_auto", "default_auto"]
    rows = []
    for n, sr in res["sizes"].items():
        cells = sr["cells"]
        t_ce, t_256 = cells["ce"]["seconds"], cells["ce256"]["seconds"]
        row = [f"{n:,}", "—" if t_ce is None else f"{t_ce * 1e3:,.2f} ms"]
        for h in heads:
            row.append(fmt(cells[h], t_ce, t_256) if h in cells else why_auto)
        rows.append(row)
    return table(["inputs", "CE fwd+bwd", "`dataset_stats(use_eig=False, sharpened=False)`",
                  "`dataset_stats()` default", 'paper scope, `batch_size="auto"`', 'default, `batch_size="auto"`'],
                 rows)


# ----------------------------------------------------------------------------------------------- architectures
def arch_cases(args) -> list[dict]:
    """(name, dtype, B, model factory, input factory, methods) for the architectures table."""
    cases = []
    for arch in args.arch:
        if arch == "resnet18":
            for B in args.resnet_batches:
                cases.append({"arch": "resnet18", "label": f"ResNet-18 (width {args.resnet_width})",
                              "dtype": torch.float32, "B": B, "model": lambda: resnet18(width=args.resnet_width),
                              "input": (3, 32, 32), "v2": {}, "reverse_v2": {}})
        elif arch == "lenet5":
            s = args.lenet_input_size
            cases.append({"arch": "lenet5", "label": f"LeNet-5 tanh {s}×{s}", "dtype": torch.float64,
                          "B": args.lenet_batch, "model": lambda s=s: lenet5(input_size=s), "input": (1, s, s),
                          "v2": {}, "reverse_v2": {"v2": "sample", "v2_sample": args.fraction}})
        elif arch == "transformer":
            cases.append({"arch": "transformer", "label": "small transformer (2 layers, d = 64)",
                          "dtype": torch.float64, "B": args.transformer_batch, "model": small_transformer,
                          "input": (8, 8), "v2": {"v2": "sample", "v2_sample": args.fraction}, "reverse_v2": None})
    return cases


def bench_arch_table(args, runner: Runner, device: torch.device) -> dict:
    rows, res = [], {}
    history: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for case in arch_cases(args):
        name, B, dtype = case["arch"], case["B"], case["dtype"]
        tag = f"{name} B={B}"
        print(f"== {tag} (elapsed {runner.elapsed():.0f} s)", file=sys.stderr, flush=True)
        old_dtype = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = case["model"]().to(device=device, dtype=dtype)
            gen = torch.Generator().manual_seed(args.seed + 1)
            x = torch.randn((B,) + case["input"], dtype=dtype, generator=gen).to(device)
            P, C = n_params(model), 10
            jac_bytes = B * C * P * torch.finfo(dtype).bits // 8
            fns: dict[str, Callable[[], Any]] = {"jacobian": per_sample_jacobian_fn(model, x)}
            # model and x bound as defaults: the loop rebinds them and `del`s them at the end of each case
            fns["ours"] = (lambda kw=case["v2"], model=model, x=x: conditional_stats(
                model, x, "categorical", keys=ARCH_KEYS, precision_check=0, progress=False, **kw))
            if case["reverse_v2"] is not None:
                fns["reverse"] = (lambda kw=case["reverse_v2"], model=model, x=x: conditional_stats(
                    model, x, "categorical", path="reverse", keys=ARCH_KEYS, precision_check=0, progress=False, **kw))
            predicted = {k: predict_seconds(history.get((name, k), []), B) for k in fns}
            cells, kept = runner.run(fns, predicted, keep=("ours",), tag=f"[{tag}]")
            info = {}
            if "ours" in kept:
                r = kept.pop("ours")
                info = {"path": r.path, "path_reason": str(r.info.get("path_reason", ""))[:200],
                        "var2_zero_proved_tensors": len(r.info.get("var2_zero_reason", {}) or {}),
                        "tensors": len(list(model.parameters())), "estimated": bool(getattr(r, "estimated", False))}
                del r
        finally:
            torch.set_default_dtype(old_dtype)
        for k, c in cells.items():
            if c.seconds is not None:
                history.setdefault((name, k), []).append((B, c.seconds))
        t_j = cells["jacobian"].seconds
        sampled = f"V₂ sampled on {args.fraction:g} of the entries not proved 0"
        v2_note = sampled if "v2" in case["v2"] else "V₂ exact"
        rev_note = "" if case["reverse_v2"] is None else sampled if case["reverse_v2"] else "V₂ exact"
        labels = {"jacobian": "vmap(jacrev) per-sample Jacobian alone",
                  "ours": f"conditional_stats(keys=(fisher, var1, var2), precision_check=0), path auto → "
                          f"{info.get('path', '?')}; {v2_note}"
                          + (f" (V₂ ≡ 0 proved for {info['var2_zero_proved_tensors']}/{info['tensors']} tensors)"
                             if info else ""),
                  "reverse": f"the same, path='reverse'; {rev_note}"}
        for k, c in cells.items():
            t, m = c.seconds, c.peak_bytes
            rows.append([case["label"], str(dtype).replace("torch.", ""), B, labels[k], c.text(),
                         "—" if t is None or not t_j else f"{t / t_j:.2f}",
                         "—" if m is None else f"{m / MIB:,.1f}", "—" if m is None else f"{m / jac_bytes:.2f}"])
        res[tag] = {"P": P, "B": B, "C": C, "dtype": str(dtype), "jacobian_bytes": jac_bytes, "info": info,
                    "cells": {k: vars(c) for k, c in cells.items()}}
        del model, x, fns
        if device.type == "cuda":
            torch.cuda.empty_cache()
    res["table"] = table(["architecture", "dtype", "B", "what", "median s", "× Jacobian time", "peak device MiB",
                          "peak / Jacobian size (B·C·P·bytes)"], rows)
    return res


# ----------------------------------------------------------------------------------------------- main
def device_meta(device: torch.device) -> dict:
    meta = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
            "time_start": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    try:
        meta["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        meta["git"] = None
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        props = torch.cuda.get_device_properties(device)
        meta.update(name=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    capability=f"{props.major}.{props.minor}", free_bytes=free, total_bytes=total,
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    else:
        meta["name"] = platform.processor() or platform.machine()
    return meta


def meta_line(meta: dict) -> str:
    s = f"device: **{meta['name']}** ({meta['device']}), torch {meta['torch']}, Python {meta['python']}"
    if "cuda" in meta:
        s += (f", CUDA {meta['cuda']}, compute capability {meta['capability']}, free memory "
              f"{meta['free_bytes'] / (1 << 30):.1f} / {meta['total_bytes'] / (1 << 30):.1f} GiB at start; "
              f"TF32 matmul {meta['tf32_matmul']}, cuDNN TF32 {meta['tf32_cudnn']}")
    s += f"; {meta['threads']} CPU thread(s) of {meta['cpus']}; git {meta.get('git') or '?'}"
    return s


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available, else cpu)")
    ap.add_argument("--quick", action="store_true",
                    help="256/1,024 inputs, ResNet-18 B = 2 only, LeNet-5 B = 2, 3 repeats, --max-seconds 10")
    ap.add_argument("--sizes", default=None, help="MLP input counts, comma-separated (default 256,4096,65536; "
                                                  "quick 256,1024); 'none' skips the MLP table")
    ap.add_argument("--check-size", type=int, default=256,
                    help="input count of the device-vs-CPU check (the smallest size when not among --sizes)")
    ap.add_argument("--arch", default=",".join(ARCHS), help=f"comma-separated subset of {','.join(ARCHS)}, or none")
    ap.add_argument("--resnet-batches", default=None, help="ResNet-18 B values (default 2,8; quick 2)")
    ap.add_argument("--resnet-width", type=int, default=64, help="ResNet-18 width (64: the real one)")
    ap.add_argument("--lenet-batch", type=int, default=None, help="LeNet-5 B (default 8; quick 2)")
    ap.add_argument("--lenet-input-size", type=int, default=28, help="LeNet-5 input side (28; 8 for a smoke run)")
    ap.add_argument("--transformer-batch", type=int, default=2)
    ap.add_argument("--fraction", type=float, default=0.01, help="sampled fraction of V₂ entries where sampled")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per method at most (default 5; quick 3)")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="per-call limit: larger sizes of a method are skipped once a call exceeds it or is "
                         "predicted to (default 30; quick 10)")
    ap.add_argument("--budget-seconds", type=float, default=330.0,
                    help="whole-run limit: no call starts that is predicted to end past it (default 330)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--json", metavar="PATH", help="also write the numbers as JSON (rewritten after every section)")
    args = ap.parse_args(argv)
    q = args.quick
    args.sizes = ([] if args.sizes == "none" else
                  [int(s) for s in (args.sizes or ("256,1024" if q else "256,4096,65536")).split(",") if s])
    args.arch = [] if args.arch == "none" else [a for a in args.arch.split(",") if a]
    bad = [a for a in args.arch if a not in ARCHS]
    if bad:
        ap.error(f"--arch: unknown {bad}; choose from {', '.join(ARCHS)} or none")
    if any(n < 1 for n in args.sizes):
        ap.error("--sizes: input counts must be positive integers")
    args.resnet_batches = [int(b) for b in (args.resnet_batches or ("2" if q else "2,8")).split(",") if b]
    args.lenet_batch = args.lenet_batch or (2 if q else 8)
    args.repeats = args.repeats or (3 if q else 5)
    args.max_seconds = args.max_seconds or (10.0 if q else 30.0)
    return args


def write_json(path: str | None, payload: dict) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(payload, fh, indent=2, default=str)
    os.replace(tmp, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch.cuda.is_available() is False; pass --device cpu")
        torch.zeros(1, device=device).sum().item()          # context start-up, outside every timing
    meta = device_meta(device)
    meta["args"] = {k: v for k, v in vars(args).items()}
    print(f"# fishersym device benchmark\n\n{meta_line(meta)}\n\n`{meta['command']}`\n", flush=True)
    runner = Runner(device, args.repeats, args.max_seconds, args.budget_seconds)
    payload: dict = {"meta": meta}
    if args.sizes:
        mlp = bench_mlp_table(args, runner, device)
        payload["mlp"] = mlp
        print("## 784-128-64-32-10 sigmoid MLP, categorical C = 10, float64 (issue 12)\n")
        print(mlp["summary_table"] + "\n")
        print(mlp["table"] + "\n")
        chk = mlp["sizes"][mlp["check_size"]].get("cpu_check", {})
        for a, v in chk.items():
            if a == "reference":
                continue
            print(f"- device vs {chk['reference']}, {mlp['check_size']:,} inputs, {ANALYSES[a][0]} against "
                  f"{v.get('against', '')}: " +
                  (f"max relative difference over fisher/var1/var2 {v['max_rel_diff_fisher_var1_var2']:.2e}, "
                   f"over the {v['keys'] - 1} keys other than input_var {v['max_rel_diff']:.2e} "
                   f"(at {v['where'] or '—'}); "
                   f"target ≤ 1e-13: {'met' if v['max_rel_diff'] <= 1e-13 else 'NOT met'}; input_var "
                   f"{v['max_rel_diff_input_var']:.2e} (at {v['where_input_var'] or '—'}), within its stated rounding "
                   f"bound √ε = {INPUT_VAR_TOL:.1e} (CentredMoments.add_part: S₂ − S₁²/B, recomputed two-pass where "
                   f"the bound exceeds √ε): {'yes' if v['max_rel_diff_input_var'] <= INPUT_VAR_TOL else 'NO'}"
                   if "error" not in v
                   else f"error: {v['error']}"))
        print(flush=True)
        write_json(args.json, payload)
    if args.arch:
        arch = bench_arch_table(args, runner, device)
        payload["architectures"] = arch
        print("## Architectures (issue 9 table)\n")
        print(arch["table"] + "\n", flush=True)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        payload["meta"]["free_bytes_end"] = free
        print(f"free memory at end {free / (1 << 30):.1f} GiB; ", end="")
    payload["meta"]["elapsed_s"] = runner.elapsed()
    print(f"total {runner.elapsed():.0f} s (budget {args.budget_seconds:g} s, per call {args.max_seconds:g} s)")
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
