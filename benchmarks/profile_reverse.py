"""Where the reverse path's time and memory go on the CIFAR ResNet-18 (issue 9), beyond the Jacobian.

Runs ``conditional_stats(resnet18(), x, "categorical", path="reverse", precision_check=0)`` once
(float32, ``--batch`` inputs) with:

* wrappers on the stages of the pipeline (module attributes of fishersym.numeric.conditional and
  fishersym.numeric.reverse, replaced in this process only): per stage the number of calls, the
  wall time (inclusive of nested stages), the resident memory at entry and the peak resident
  memory during its calls, both above the RSS after the model and inputs were built;
* a sampling thread reading VmRSS from /proc/self/statm every ``--interval`` ms (the peaks);
* optionally (``--cprofile N``) cProfile's top N functions by cumulative time.

    .venv/bin/python benchmarks/profile_reverse.py --batch 2 [--cprofile 30] [--json out/profile_reverse.json]

The same for ``vmap(jacrev)`` alone is printed first, in the same process (after it, RSS is
measured again so the baseline of the second run is its own).
"""
from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import os
import pstats
import sys
import threading
import time

import torch

from fishersym.experiments.architectures import resnet18
from fishersym.numeric import conditional as cond
from fishersym.numeric import conditional_stats
from fishersym.numeric import reverse as rev

MIB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


class Sampler(threading.Thread):
    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.samples.append((time.perf_counter(), rss()))
            time.sleep(self.interval)

    def peak(self, t0: float, t1: float) -> int:
        vals = [r for t, r in self.samples if t0 <= t <= t1]
        return max(vals) if vals else 0


STAGES = [  # (module, attribute, label)
    (cond, "select_engine", "select_engine (validation)"),
    (cond, "probe_outputs", "probe_outputs (one forward)"),
    (cond, "check_reverse_w_cost", "check_reverse_w_cost (proof trace: one traced forward)"),
    (cond, "reverse_engine", "reverse_engine (whole engine)"),
    (rev, "check_batch_independent", "  check_batch_independent"),
    (rev, "trace_taints", "  trace_taints (aten op log for the V₂ ≡ 0 proof)"),
    (rev, "_jacobians", "  _jacobians (vmap(jacrev) per group)"),
    (rev, "base_quantities", "  base_quantities (I, N·V₁, norms per tensor)"),
    (rev, "prob_negative", "  prob_negative"),
    (cond, "family_constants", "family_constants"),
    (cond, "per_input_keys", "per_input_keys (bounds, keys)"),
    (cond, "add_derived", "add_derived"),
    (cond, "cancellation_ratio", "cancellation_ratio"),
    (cond, "measured_v1_error", "measured_v1_error"),
]


def instrument(sampler: Sampler, base: int):
    log: dict[str, dict] = {}
    originals = []
    for mod, attr, label in STAGES:
        if not hasattr(mod, attr):
            continue
        orig = getattr(mod, attr)
        originals.append((mod, attr, orig))

        def wrap(orig=orig, label=label):
            @functools.wraps(orig)
            def inner(*a, **k):
                d = log.setdefault(label, {"calls": 0, "seconds": 0.0, "rss_entry_mib": [], "peak_mib": 0.0,
                                           "intervals": []})
                r0, t0 = rss(), time.perf_counter()
                try:
                    return orig(*a, **k)
                finally:
                    t1 = time.perf_counter()
                    d["calls"] += 1
                    d["seconds"] += t1 - t0
                    d["rss_entry_mib"].append(round((r0 - base) / MIB, 1))
                    d["intervals"].append((t0, t1))
            return inner

        setattr(mod, attr, wrap())
    return log, originals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--interval", type=float, default=5.0, help="RSS sampling interval, ms")
    ap.add_argument("--cprofile", type=int, default=0, help="print cProfile's top N by cumulative time")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    model = resnet18()
    torch.manual_seed(1)
    x = torch.randn(args.batch, 3, 32, 32)
    B, C, P = args.batch, 10, sum(p.numel() for p in model.parameters())
    jac_bytes = B * C * P * 4
    sampler = Sampler(args.interval / 1e3)
    sampler.start()
    out: dict = {"B": B, "P": P, "jacobian_bytes": jac_bytes, "load": os.getloadavg()}

    # 1. the Jacobian alone
    from torch.func import functional_call, jacrev, vmap
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    f = lambda p, xi: functional_call(model, {**p, **buffers}, (xi.unsqueeze(0),))[0]  # noqa: E731
    base = rss()
    t0 = time.perf_counter()
    J = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    t1 = time.perf_counter()
    del J
    out["jacobian"] = {"seconds": t1 - t0, "peak_mib": (sampler.peak(t0, t1) - base) / MIB}
    print(f"vmap(jacrev): {t1 - t0:.2f} s, peak {(sampler.peak(t0, t1) - base) / MIB:.0f} MiB "
          f"above {base / MIB:.0f} MiB (Jacobian B·C·P·4 = {jac_bytes / MIB:.0f} MiB)", flush=True)

    # 2. ours, instrumented
    time.sleep(0.2)
    base = rss()
    log, originals = instrument(sampler, base)
    prof = cProfile.Profile() if args.cprofile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    r = conditional_stats(model, x, "categorical", path="reverse", precision_check=0)
    if prof:
        prof.disable()
    t1 = time.perf_counter()
    total_peak = sampler.peak(t0, t1) - base
    vals = getattr(r, "_values", {})
    result_bytes = sum(t.numel() * t.element_size() for per in vals.values() for t in per.values())
    n_keys = len(vals)
    sampler.stop.set()
    for mod, attr, orig in originals:
        setattr(mod, attr, orig)
    out["ours"] = {"seconds": t1 - t0, "peak_mib": total_peak / MIB,
                   "result_mib": result_bytes / MIB, "result_keys": n_keys,
                   "rss_after_mib": (rss() - base) / MIB}
    print(f"conditional_stats(path='reverse', precision_check=0): {t1 - t0:.2f} s, peak {total_peak / MIB:.0f} MiB "
          f"above {base / MIB:.0f} MiB; result: {n_keys} keys, {result_bytes / MIB:.0f} MiB held at the end",
          flush=True)
    print("\n| stage | calls | seconds (inclusive) | % of total | RSS at first entry (MiB above base) | "
          "peak during (MiB above base) |\n|---|---:|---:|---:|---:|---:|")
    stages = {}
    for _, _, label in STAGES:
        d = log.get(label)
        if not d:
            continue
        pk = max(sampler.peak(a, b) for a, b in d["intervals"]) - base
        stages[label] = {"calls": d["calls"], "seconds": d["seconds"], "rss_entry_mib": d["rss_entry_mib"][:4],
                         "peak_mib": pk / MIB}
        print(f"| {label} | {d['calls']} | {d['seconds']:.2f} | {100 * d['seconds'] / (t1 - t0):.0f} | "
              f"{d['rss_entry_mib'][0]:.0f} | {pk / MIB:.0f} |")
    out["stages"] = stages
    out["engine_info"] = {k: r.info.get(k) for k in ("path_reason",)}
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(args.cprofile)
        txt = s.getvalue()
        print("\n" + txt)
        out["cprofile"] = txt
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2, default=str)


if __name__ == "__main__":
    sys.exit(main())
