"""Benchmarks of fishersym on real architectures (issue 9, "Speed and memory").  Not timed tests.

Subcommands (each prints a markdown table and writes JSON, with the command line, to ``--out``,
default ``out/bench_architectures.json``):

* ``resnet18``: CIFAR ResNet-18 (11,173,962 parameters), float32, B inputs (``--batch``, 2–8):
  exact I, V₁, V₂ for every parameter by
  ``conditional_stats(model, x, "categorical", path="reverse", precision_check=0)`` (V₂ ≡ 0 must be
  proved for every tensor: ``result.info["var2_zero_reason"]`` is checked and reported) against the
  per-sample Jacobian alone, ``vmap(jacrev(f))`` with f = ``functional_call`` of the model on one
  input.  ``reverse_engine`` alone (``w_mode="prove"``, the engine without the bounds and key
  assembly of ``conditional_stats``) is timed too, to split the cost.  ``--precision-check`` adds
  a row with ``conditional_stats``'s default float32 precision measurement (a float64 re-analysis
  of min(B, 64) inputs).  Targets: time ≤ 3×, peak memory ≤ 2× the Jacobian's size B·C·P·4 bytes.
* ``lenet5``: LeNet-5 with tanh, float64 (``--input-size`` 28 or 32): exact V₂ for every entry by
  ``conditional_stats`` with ``path="auto"`` and with ``path="reverse"`` (exact w by nested forward
  mode for the tensors not proved), against BackPACK.  BackPACK's ``DiagHessian`` gives the
  diagonal of the Hessian of the *summed* loss, which is not V₂; the BackPACK computation of the
  same quantity is one ``BatchDiagHessian`` pass per label y plus one ``BatchDiagGGNExact`` pass:
  N·V₂(θ_i|x) = Σ_y p_y (∂²ℓ_y/∂θ_i² − GGN_ii)² (THEORY §3: ∂²ℓ_y/∂θ_i² − GGN_ii = −(e_y − p)ᵀw_i),
  checked against ours.  Both BackPACK routes are run (the single ``DiagHessian`` pass as the
  cheapest BackPACK second-order pass, the label loop as the equivalent computation).  Every
  BackPACK run is in a subprocess whose address space is capped (``--mem-cap-gib``,
  ``resource.setrlimit(RLIMIT_AS)``); an out-of-memory or other failure is reported with its message.
* ``transformer``: ``small_transformer`` (2 encoder layers, d = 64), float64: exact I and V₁ for every
  entry, V₂ exact on a random ``--fraction`` (default 1 %) of the entries of each tensor where
  V₂ ≡ 0 is not proved, with the sampled means' standard errors; time per input.
  Uses ``conditional_stats(..., v2=...)`` when that option exists, else
  ``fishersym.numeric.reverse.reverse_engine(..., w_mode="sample", w_sample=fraction)``.
* ``mlp``: prints how to get the before/after ratio of issue 3's MLP benchmark with
  ``benchmarks/compare_versions.py`` (not duplicated here).
* ``all``: resnet18, lenet5 and transformer in turn (one JSON with all three).

Where the ResNet-18 time and memory go beyond the Jacobian: ``benchmarks/profile_reverse.py``.

Timing: every ratio is taken side by side in one process, the methods alternating in order from
round to round (one untimed warm-up round, ``--warmup``), median of ``--repeats`` rounds.
Peak memory: each measurement runs once in a fresh subprocess; peak = VmHWM (the kernel's
high-water mark of resident memory, reset through ``/proc/self/clear_refs`` after the model and
inputs are built) minus VmRSS at that reset, i.e. the memory the call added on top of the imports,
model and inputs.  The machine may be shared: the load average is recorded with the numbers.

    .venv/bin/python benchmarks/bench_architectures.py resnet18 --batch 2 --repeats 3
    .venv/bin/python benchmarks/bench_architectures.py lenet5 --batch 2
    .venv/bin/python benchmarks/bench_architectures.py transformer --batch 2
    .venv/bin/python benchmarks/bench_architectures.py mlp
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
import traceback

import torch
from torch.func import functional_call, jacrev, vmap

from fishersym import families
from fishersym.experiments.architectures import lenet5, resnet18, small_transformer
from fishersym.numeric import conditional_stats
from fishersym.numeric.reverse import reverse_engine

GIB = 1 << 30
MIB = 1 << 20

MLP_HOWTO = """\
The 784-128-64-32-10 sigmoid MLP benchmark of issue 3 (categorical, 256 inputs, float64, one thread,
dataset_stats at the paper's scope and with the defaults) is compared before/after side by side in
one process by benchmarks/compare_versions.py.  Export the old package under another name (git
archive does not touch the repository's state), then run from the repository root:

    OLD=88df7bf                       # the commit before the change (88df7bf: main before issue 9)
    rm -rf /tmp/oldver && mkdir -p /tmp/oldver
    git archive $OLD fishersym | tar -x -C /tmp/oldver && mv /tmp/oldver/fishersym /tmp/oldver/fishersym_old
    .venv/bin/python benchmarks/compare_versions.py --old-path /tmp/oldver --old-name fishersym_old

(fishersym.numeric and fishersym.families import themselves relatively, so the renamed copy runs as
is.)  It prints, per setting, the new and old medians, new/old (> 1 means slower) and the range of
the per-round ratios; benchmarks/bench_mlp.py gives the working tree's absolute figures."""


# ----------------------------------------------------------------------------------------------- helpers
def load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> int:
    """Reset the kernel's resident high-water mark (VmHWM) to the current RSS; returns that RSS in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:  # pragma: no cover - then the peak also counts the setup (stated in the result)
        pass
    return _status_kib("VmRSS") * 1024


def peak_bytes() -> int:
    return _status_kib("VmHWM") * 1024


def cap_memory(gib: float | None) -> None:
    if gib:
        lim = int(gib * GIB)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))


def timed_rounds(fns: dict, repeats: int, warmup: int) -> dict:
    """Median seconds of each function, one call of each per round, the order reversed every other
    round; ``warmup`` untimed rounds first.  A function that raises is recorded with its error and
    dropped from later rounds."""
    ts: dict[str, list[float]] = {k: [] for k in fns}
    errors: dict[str, str] = {}
    names = list(fns)
    for r in range(warmup + repeats):
        order = names if r % 2 == 0 else names[::-1]
        for k in order:
            if k in errors:
                continue
            t0 = time.perf_counter()
            try:
                fns[k]()
            except Exception as exc:  # noqa: BLE001 - reported, e.g. out of memory
                errors[k] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                continue
            if r >= warmup:
                ts[k].append(time.perf_counter() - t0)
            print(f"  round {r}{' (warm-up)' if r < warmup else ''}: {k} {time.perf_counter() - t0:.2f} s "
                  f"(load {load()})", file=sys.stderr, flush=True)
    out = {}
    for k in fns:
        out[k] = {"median_s": statistics.median(ts[k]) if ts[k] else None, "times_s": ts[k],
                  "error": errors.get(k)}
    return out


def run_child(args: argparse.Namespace, what: str, cap_gib: float | None) -> dict:
    """One measurement in a fresh interpreter: {"peak_bytes", "seconds", "error", ...}."""
    cmd = [sys.executable, os.path.abspath(__file__), args.cmd, "--child", what, "--batch", str(args.batch),
           "--threads", str(args.threads or 0), "--input-size", str(args.input_size),
           "--fraction", str(args.fraction)]
    if cap_gib:
        cmd += ["--mem-cap-gib", str(cap_gib)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"peak_bytes": None, "seconds": None,
                "error": f"child exited with code {p.returncode} "
                         f"({'killed by signal ' + str(-p.returncode) if p.returncode < 0 else tail})"}
    return json.loads(lines[-1])


def child_measure(fn, extra=None) -> None:
    """Run ``fn`` once after resetting the peak; print one JSON line."""
    base = reset_peak()
    t0 = time.perf_counter()
    res = {"error": None}
    try:
        out = fn()
        if extra is not None:
            res.update(extra(out))
    except Exception as exc:  # noqa: BLE001 - reported (e.g. the address-space cap was hit)
        res["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
        traceback.print_exc(file=sys.stderr)
    res["seconds"] = time.perf_counter() - t0
    res["peak_bytes"] = peak_bytes() - base
    res["baseline_rss_bytes"] = base
    print(json.dumps(res), flush=True)


def fmt_b(n) -> str:
    return "—" if n is None else f"{n / MIB:,.0f} MiB"


def fmt_s(t) -> str:
    return "—" if t is None else f"{t:.3f}"


def per_sample_jacobian_fn(model, x):
    """vmap(jacrev(f)) over the inputs, f(θ, x₁) = functional_call(model, θ, x₁[None])[0]."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def f(p, xi):
        return functional_call(model, {**p, **buffers}, (xi.unsqueeze(0),))[0]

    return lambda: vmap(jacrev(f), in_dims=(None, 0))(params, x)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------- resnet18
def resnet_setup(args):
    model = resnet18()
    torch.manual_seed(1)
    x = torch.randn(args.batch, 3, 32, 32)
    fam = families.get("categorical", C=10)
    params = {k: v.detach() for k, v in model.named_parameters()}
    keys = ("fisher", "var1", "var2")
    fns = {
        "jacobian": per_sample_jacobian_fn(model, x),
        # the figure: exact I, V₁, V₂ for every parameter, path "auto" = the per-layer fast engine
        "ours": lambda: conditional_stats(model, x, "categorical", keys=keys, precision_check=0, progress=False),
        "reverse": lambda: conditional_stats(model, x, "categorical", path="reverse", keys=keys, precision_check=0,
                                             progress=False),
        "all_keys": lambda: conditional_stats(model, x, "categorical", precision_check=0, progress=False),
        "engine": lambda: reverse_engine(model, x, fam, params, w_mode="prove", progress=False),
        "ours_default": lambda: conditional_stats(model, x, "categorical", keys=keys, progress=False),
    }
    return model, x, fns


def bench_resnet(args) -> dict:
    model, x, fns = resnet_setup(args)
    B, C, P = args.batch, 10, n_params(model)
    jac_bytes = B * C * P * 4
    print(f"ResNet-18: P = {P:,}, B = {B}, C = {C}; Jacobian B·C·P·4 = {jac_bytes / MIB:,.0f} MiB", file=sys.stderr)
    # correctness/proof first (untimed): V₂ ≡ 0 proved for every tensor
    r = fns["ours"]()
    reasons = r.info.get("var2_zero_reason", {})
    names = [k for k, _ in model.named_parameters()]
    missing = [k for k in names if k not in reasons]
    v2_max = max(float(v.abs().max()) for v in r["var2"].values())
    proof = {"proved_tensors": len(names) - len(missing), "tensors": len(names), "not_proved": missing,
             "var2_max_abs": v2_max, "reasons": sorted(set(reasons.values())), "path": r.path}
    del r
    timed = {k: fns[k] for k in ("jacobian", "ours", "reverse", "all_keys")}
    if args.precision_check:
        timed["ours_default"] = fns["ours_default"]
    times = timed_rounds(timed, args.repeats, args.warmup)
    mem = {k: run_child(args, k, args.mem_cap_gib) for k in timed}
    res = {"P": P, "B": B, "C": C, "dtype": "float32", "jacobian_bytes": jac_bytes, "v2_proof": proof,
           "times": times, "memory": mem}
    tj = times["jacobian"]["median_s"]
    labels = {"jacobian": "vmap(jacrev) per-sample Jacobian alone",
              "ours": "conditional_stats(keys=(fisher, var1, var2), precision_check=0): exact I, V₁, V₂, "
                      "fast per-layer path",
              "reverse": "the same on path='reverse' (vmap(jacrev) u, aten-level V₂ ≡ 0 proofs)",
              "all_keys": "conditional_stats(precision_check=0): all 19 keys (bounds, √V/I, P(Î₂<0))",
              "engine": "reverse_engine(w_mode='prove') alone (u → I, V₁; V₂ ≡ 0 proved)",
              "ours_default": "conditional_stats(keys=…) with the default float32 precision check "
                              "(⌈B/16⌉ inputs re-analysed in float64)"}
    rows = []
    for k in timed:
        t, m = times[k]["median_s"], mem[k]["peak_bytes"]
        rows.append([labels[k], fmt_s(t), "—" if t is None or tj is None else f"{t / tj:.2f}",
                     fmt_b(m), "—" if m is None else f"{m / jac_bytes:.2f}",
                     times[k]["error"] or mem[k]["error"] or ""])
    res["table"] = table(["what", "median s", "× Jacobian time", "peak (above baseline)", "peak / (B·C·P·4)",
                          "error"], rows)
    to, mo = times["ours"]["median_s"], mem["ours"]["peak_bytes"]
    res["targets"] = {
        "time_ratio": None if to is None else to / tj, "time_target_met": None if to is None else to / tj <= 3,
        "peak_over_jacobian_bytes": None if mo is None else mo / jac_bytes,
        "memory_target_met": None if mo is None else mo / jac_bytes <= 2,
        "v2_zero_proved_for_all": not missing}
    res["summary"] = (f"ResNet-18 B={B}: time {res['targets']['time_ratio']:.2f}× the Jacobian (target ≤ 3), "
                      f"peak {res['targets']['peak_over_jacobian_bytes']:.2f}× B·C·P·4 = {jac_bytes / MIB:.0f} MiB "
                      f"(target ≤ 2); V₂ ≡ 0 proved for {proof['proved_tensors']}/{proof['tensors']} tensors "
                      f"(max |V₂| = {v2_max:g}); reasons: {'; '.join(proof['reasons'])}"
                      if to is not None and mo is not None else "ResNet-18: a measurement failed (see table)")
    return res


# ----------------------------------------------------------------------------------------------- lenet5
def lenet_setup(args):
    torch.set_default_dtype(torch.float64)
    model = lenet5(input_size=args.input_size).double()
    torch.manual_seed(1)
    x = torch.randn(args.batch, 1, args.input_size, args.input_size, dtype=torch.float64)
    return model, x


def backpack_fns(model, x):
    """(diag_hessian, v2_route) closures on a BackPACK-extended copy of ``model``; raises ImportError."""
    import copy

    from backpack import backpack, extend
    from backpack.extensions import BatchDiagGGNExact, BatchDiagHessian, DiagHessian
    from torch import nn

    bmodel = extend(copy.deepcopy(model))
    lossf = extend(nn.CrossEntropyLoss(reduction="sum"))
    B, C = x.shape[0], 10
    y = torch.randint(0, C, (B,), generator=torch.Generator().manual_seed(2))

    def diag_hessian():
        bmodel.zero_grad()
        with backpack(DiagHessian()):
            lossf(bmodel(x), y).backward()
        return [p.diag_h for p in bmodel.parameters()]

    def v2_route():
        # N·V₂(θ_i|x) = Σ_y p_y (∂²ℓ_y/∂θ_i² − GGN_ii)², per input (THEORY §3)
        bmodel.zero_grad()
        with backpack(BatchDiagGGNExact()):
            out = bmodel(x)
            lossf(out, y).backward()
        g = {k: p.diag_ggn_exact_batch.clone() for k, p in bmodel.named_parameters()}
        prob = torch.softmax(out.detach(), -1)
        acc = {k: torch.zeros_like(t) for k, t in g.items()}
        for c in range(C):
            bmodel.zero_grad()
            with backpack(BatchDiagHessian()):
                lossf(bmodel(x), torch.full((B,), c, dtype=torch.long)).backward()
            for k, p in bmodel.named_parameters():
                d = p.diag_h_batch - g[k]
                acc[k] += prob[:, c].reshape((B,) + (1,) * (d.dim() - 1)) * d * d
        return acc

    return diag_hessian, v2_route


def bench_lenet(args) -> dict:
    """Runs in a memory-capped child (the BackPACK calls may exhaust memory).  The timed calls keep
    their last result, and the checks compare those (no extra untimed runs)."""
    model, x = lenet_setup(args)
    P = n_params(model)
    last: dict = {}

    def keep(name, fn):
        def run():
            last[name] = fn()
            return last[name]
        return run

    fns = {"ours_auto": keep("ours_auto", lambda: conditional_stats(model, x, "categorical"))}
    if args.lenet_reverse:
        fns["ours_reverse"] = keep("ours_reverse", lambda: conditional_stats(model, x, "categorical", path="reverse"))
    res: dict = {"P": P, "B": args.batch, "C": 10, "dtype": "float64", "input_size": args.input_size}
    try:
        dh, v2r = backpack_fns(model, x)
        fns["backpack_diag_hessian"] = dh
        fns["backpack_v2_route"] = keep("backpack_v2_route", v2r)
        res["backpack"] = "imported"
    except Exception as exc:  # noqa: BLE001 - reported
        res["backpack"] = f"not usable: {type(exc).__name__}: {exc}"
    res["times"] = timed_rounds(fns, args.repeats, args.warmup)
    checks = {}
    ref = last.get("ours_auto")
    if ref is not None:
        res["auto_path"] = ref.path
        res["auto_path_reason"] = ref.info.get("path_reason", "")
        for other, key in (("ours_reverse", "reverse_vs_auto_var2_max_rel"),
                           ("backpack_v2_route", "backpack_v2_vs_ours_max_rel")):
            got = last.get(other)
            if got is None:
                continue
            got = got["var2"] if other == "ours_reverse" else got
            checks[key] = max(float((got[k] - ref["var2"][k]).abs().max()
                                    / ref["var2"][k].abs().max().clamp_min(1e-300)) for k in ref["var2"])
        if "ours_reverse" in last:
            res["reverse_proved"] = sorted(last["ours_reverse"].info.get("var2_zero_reason", {}))
    else:
        res["auto_path"] = "failed"
    res["checks"] = checks
    return res


def bench_lenet_parent(args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "lenet5", "--child", "lenet_timing", "--batch", str(args.batch),
           "--threads", str(args.threads or 0), "--input-size", str(args.input_size), "--repeats", str(args.repeats),
           "--warmup", str(args.warmup), "--mem-cap-gib", str(args.mem_cap_gib)] + (
               ["--lenet-reverse"] if args.lenet_reverse else [])
    p = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = "\n".join(p.stderr.strip().splitlines()[-5:])
        res = {"error": f"timing child exited with code {p.returncode}: {tail}"}
        res["summary"] = "LeNet-5: " + res["error"]
        res["table"] = ""
        return res
    res = json.loads(lines[-1])
    names = list(res["times"])
    res["memory"] = {k: run_child(args, k, args.mem_cap_gib) for k in names}
    tref = res["times"]["ours_auto"]["median_s"]
    labels = {"ours_auto": f"conditional_stats (path auto → {res['auto_path']}): exact I, V₁, V₂ + bounds",
              "ours_reverse": "conditional_stats(path='reverse'): exact w by nested forward mode",
              "backpack_diag_hessian": "BackPACK DiagHessian, summed CE loss (one pass; not V₂)",
              "backpack_v2_route": "BackPACK V₂ route: C × BatchDiagHessian + BatchDiagGGNExact"}
    rows = []
    for k in names:
        t, m = res["times"][k]["median_s"], res["memory"][k]["peak_bytes"]
        rows.append([labels[k], fmt_s(t), "—" if t is None or tref is None else f"{t / tref:.2f}", fmt_b(m),
                     res["times"][k]["error"] or res["memory"][k]["error"] or ""])
    res["table"] = table(["what", "median s", f"× ours ({res['auto_path']})", "peak (above baseline)", "error"],
                         rows)
    tb = res["times"].get("backpack_v2_route", {}).get("median_s")
    res["summary"] = (f"LeNet-5 tanh float64 input {args.input_size}, B={args.batch}, P={res['P']:,}: ours "
                      f"({res['auto_path']}) {fmt_s(tref)} s; BackPACK V₂ route "
                      + (f"{tb:.3f} s = {tb / tref:.2f}× ours" if tb and tref else
                         f"failed: {res['times'].get('backpack_v2_route', {}).get('error') or res.get('backpack')}")
                      + f"; checks {res['checks']}")
    return res


# ----------------------------------------------------------------------------------------------- transformer
def transformer_setup(args):
    torch.set_default_dtype(torch.float64)
    model = small_transformer().double()
    torch.manual_seed(1)
    x = torch.randn(args.batch, 8, 8, dtype=torch.float64)
    fam = families.get("categorical", C=10)
    params = {k: v.detach() for k, v in model.named_parameters()}
    engine = lambda: reverse_engine(model, x, fam, params, w_mode="sample", w_sample=args.fraction,  # noqa: E731
                                    progress=False)
    fns = {"engine": engine, "jacobian": per_sample_jacobian_fn(model, x)}
    if "v2_sample" in inspect.signature(conditional_stats).parameters:
        fns["ours"] = lambda: conditional_stats(model, x, "categorical", path="reverse", v2="sample",
                                                v2_sample=args.fraction)
    return model, x, fns, f"w_sample={args.fraction!r}"


def bench_transformer(args) -> dict:
    model, x, fns, route = transformer_setup(args)
    P, B = n_params(model), args.batch
    out = fns["engine"]()
    info = out.info
    ws = info.get("w_sample", {})
    proved = info.get("var2_zero_reason", {})
    n_sampled = sum(int(v["index"].numel()) for v in ws.values()) if isinstance(ws, dict) else None
    pop = sum(int(v["population"]) for v in ws.values()) if isinstance(ws, dict) else None
    est = {}
    # per-input sum of N·V₂ over all sampled tensors, with its standard error
    if isinstance(ws, dict) and any("nv2" in v.get("estimates", {}) for v in ws.values()):
        tot = sum(v["estimates"]["nv2"]["sum"] for v in ws.values() if "nv2" in v["estimates"])
        se = sum(v["estimates"]["nv2"]["sum_stderr"] ** 2 for v in ws.values() if "nv2" in v["estimates"]) ** 0.5
        est = {"nv2_sum_per_input": [float(t) for t in tot], "stderr": [float(s) for s in se]}
    times = timed_rounds(fns, args.repeats, args.warmup)
    mem = {k: run_child(args, k, args.mem_cap_gib) for k in fns}
    key = "ours" if "ours" in fns else "engine"
    to, tj = times[key]["median_s"], times["jacobian"]["median_s"]
    res = {"P": P, "B": B, "C": 10, "dtype": "float64", "route": route, "proved_tensors": sorted(proved),
           "sampled_entries": n_sampled, "sampled_population": pop, "nv2_estimate": est,
           "times": times, "memory": mem, "time_per_input_s": None if to is None else to / B}
    labels = {"ours": f"conditional_stats(path='reverse', v2='sample', v2_sample={args.fraction!r}): exact I, V₁ "
                      "all entries, exact V₂ on the sample, bounds",
              "engine": f"reverse_engine(w_mode='sample', w_sample={args.fraction!r}) alone: exact I, V₁ all "
                        "entries, exact V₂ on the sample",
              "jacobian": "vmap(jacrev) per-sample Jacobian alone (reference)"}
    rows = [[labels[k], fmt_s(times[k]["median_s"]),
             "—" if times[k]["median_s"] is None else f"{times[k]['median_s'] / B:.3f}",
             "—" if times[k]["median_s"] is None or tj is None else f"{times[k]['median_s'] / tj:.2f}",
             fmt_b(mem[k]["peak_bytes"]), times[k]["error"] or mem[k]["error"] or ""] for k in fns]
    res["table"] = table(["what", "median s", "s per input", "× Jacobian", "peak (above baseline)", "error"], rows)
    res["summary"] = (f"small transformer float64, B={B}, P={P:,}: {fmt_s(res['time_per_input_s'])} s per input "
                      f"({labels[key].split(':')[0]}; "
                      f"exact I, V₁ for all; exact V₂ on {n_sampled} of {pop} entries not proved; "
                      f"{len(proved)} tensors proved V₂ ≡ 0)")
    return res


# ----------------------------------------------------------------------------------------------- output
def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def child(args) -> None:
    cap_memory(args.mem_cap_gib)
    what = args.child
    if args.cmd == "resnet18":
        _, _, fns = resnet_setup(args)
        child_measure(fns[what])
    elif args.cmd == "lenet5":
        if what == "lenet_timing":
            print(json.dumps(bench_lenet(args)), flush=True)
            return
        model, x = lenet_setup(args)
        if what.startswith("backpack"):
            try:
                dh, v2r = backpack_fns(model, x)
            except Exception as exc:  # noqa: BLE001
                print(json.dumps({"error": f"{type(exc).__name__}: {exc}", "peak_bytes": None, "seconds": None}))
                return
            fn = dh if what == "backpack_diag_hessian" else v2r
        elif what == "ours_auto":
            fn = lambda: conditional_stats(model, x, "categorical")  # noqa: E731
        else:
            fn = lambda: conditional_stats(model, x, "categorical", path="reverse")  # noqa: E731
        child_measure(fn)
    elif args.cmd == "transformer":
        _, _, fns, _ = transformer_setup(args)
        child_measure(fns[what])
    else:
        raise SystemExit(f"no child measurement for {args.cmd}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("cmd", choices=["resnet18", "lenet5", "transformer", "mlp", "all"])
    ap.add_argument("--batch", type=int, default=2, help="inputs B (the issue asks for 2-8 on ResNet-18)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (median)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--input-size", type=int, default=28, choices=[28, 32], help="LeNet-5 input side")
    ap.add_argument("--fraction", type=float, default=0.01, help="transformer: fraction of entries with exact V₂")
    ap.add_argument("--precision-check", action="store_true",
                    help="resnet18: also time conditional_stats with its default float32 precision check")
    ap.add_argument("--lenet-reverse", action="store_true",
                    help="lenet5: also run conditional_stats(path='reverse') (exact w by nested forward mode; "
                         "measured about 2× the auto path's time)")
    ap.add_argument("--mem-cap-gib", type=float, default=12.0,
                    help="address-space cap of every measurement subprocess (RLIMIT_AS), GiB; 0 for none")
    ap.add_argument("--out", default="out/bench_architectures.json")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child(args)
        return
    if args.cmd == "mlp":
        print(MLP_HOWTO)
        return
    meta = {"command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "load_start": load(),
            "time_start": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "timing": f"median of {args.repeats} rounds after {args.warmup} warm-up round(s), order alternating",
            "memory": "fresh subprocess per measurement; peak = VmHWM − VmRSS after setup (HWM reset via "
                      f"/proc/self/clear_refs); address space capped at {args.mem_cap_gib} GiB"}
    cmds = ["resnet18", "lenet5", "transformer"] if args.cmd == "all" else [args.cmd]
    results = {}
    run = {"resnet18": bench_resnet, "lenet5": bench_lenet_parent, "transformer": bench_transformer}
    for c in cmds:
        print(f"== {c} (load {load()})", file=sys.stderr, flush=True)
        results[c] = run[c](args)
    meta["load_end"] = load()
    print(f"\n{meta['command']}\ntorch {meta['torch']}, {meta['threads']} thread(s), {meta['cpus']} CPUs, load "
          f"average at start {meta['load_start']}, at end {meta['load_end']}; {meta['timing']}; memory: "
          f"{meta['memory']}\n")
    for c, r in results.items():
        print(f"### {c}\n\n{r.get('table', '')}\n\n{r.get('summary', '')}\n")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"meta": meta, "results": results}, fh, indent=2, default=str)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
