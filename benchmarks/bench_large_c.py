"""Large output spaces (issue 12 item 4): ``dataset_stats`` at C = 100 and C = 1,000 classes.

For each C ∈ {100, 1000}, dtype ∈ {float32, float64}, path ∈ {fast, reverse} and certificate
setting ∈ {default (``use_eig=None``), ``use_eig=False``} one *fresh subprocess*:

1. imports torch and fishersym, builds the model and the batch of 256 inputs, runs a 2-input
   warm-up call, and reads the baseline ``resource.getrusage(RUSAGE_SELF).ru_maxrss``;
2. times one ``dataset_stats(model, x, categorical(C), batch_size=256)`` call (wall clock);
3. reads ``ru_maxrss`` again: peak memory of the call = the increase over the baseline (ru_maxrss
   is the process's high-water mark, so this is the most the call added at any moment; the
   warm-up's 2-input peak is far below it).

Models: fast path, the MLP Linear(784, 64)–Sigmoid–Linear(64, C) (the exact MLP algorithm of
THEORY §7); reverse path (``path="reverse"``), a tiny convolutional net Conv2d(1, 4, 3)–Tanh–
AvgPool(3)–Flatten–Linear(16, C) on 8×8 inputs (per-sample Jacobians, C backward passes per
input).  The table gives the time per call, the peak per call and per input (peak / 256), and
``result.info["certificates"]`` when the package reports it (how the Sym² constants were
certified).  Target: C = 1,000, batch 256, float32: peak below 1 GiB.

    .venv/bin/python benchmarks/bench_large_c.py [--C 100 1000] [--dtypes float32 float64]
                                                [--paths fast reverse] [--threads 1]

Timings are single runs on a possibly shared machine (the load average is printed); compare
rows only within one run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

BATCH = int(os.environ.get("BENCH_LARGE_C_BATCH", "256"))   # --batch sets it for the subprocesses


def _model(path: str, C: int, dtype):
    import torch
    from torch import nn
    torch.manual_seed(0)
    if path == "fast":
        model = nn.Sequential(nn.Linear(784, 64), nn.Sigmoid(), nn.Linear(64, C))
        x = torch.randn(BATCH, 784)
    else:
        model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.AvgPool2d(3), nn.Flatten(), nn.Linear(16, C))
        x = torch.randn(BATCH, 1, 8, 8)
    return model.to(dtype), x.to(dtype)


def child(C: int, dtype_name: str, path: str, eig: str, threads: int) -> None:
    import torch
    torch.set_num_threads(threads)
    from fishersym import families
    from fishersym.numeric import dataset_stats
    dtype = getattr(torch, dtype_name)
    model, x = _model(path, C, dtype)
    fam = families.get("categorical", C=C)
    kw = {"path": "reverse"} if path == "reverse" else {}
    use_eig = {"default": None, "False": False, "True": True}[eig]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    dataset_stats(model, x[:2], fam, batch_size=BATCH, progress=False, use_eig=use_eig, **kw)   # warm-up
    t = time.perf_counter()
    res = dataset_stats(model, x, fam, batch_size=BATCH, progress=False, use_eig=use_eig, **kw)
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss        # kB on Linux
    info = res.info.get("certificates", "") if isinstance(res.info, dict) else ""
    print(json.dumps({"time_s": dt, "peak_mib": (peak - base) / 1024, "base_mib": base / 1024,
                      "path": res.path, "certificates": str(info)}))


def run_child(C: int, dtype_name: str, path: str, eig: str, threads: int, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", str(C), dtype_name, path, eig, "--threads", str(threads)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                 [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                  os.environ.get("PYTHONPATH", "")])})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": last[:160]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    global BATCH
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", nargs=4, metavar=("C", "DTYPE", "PATH", "EIG"), help=argparse.SUPPRESS)
    ap.add_argument("--C", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    ap.add_argument("--paths", nargs="+", default=["fast", "reverse"])
    ap.add_argument("--eig", nargs="+", default=["default", "False"], choices=["default", "False", "True"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=None, help="inputs per call (default 256)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per subprocess, seconds")
    args = ap.parse_args()
    if args.batch is not None:
        os.environ["BENCH_LARGE_C_BATCH"] = str(args.batch)
        BATCH = args.batch
    if args.child:
        C, dt, path, eig = args.child
        child(int(C), dt, path, eig, args.threads)
        return
    import torch
    print(f"# dataset_stats at large C (batch {BATCH}); torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, "
          f"{args.threads} thread(s), load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print()
    print("| C | dtype | path | use_eig | time (s) | peak (MiB) | peak per input (MiB) | certificates |")
    print("|---|---|---|---|---|---|---|---|")
    for C in args.C:
        for dt in args.dtypes:
            for path in args.paths:
                for eig in args.eig:
                    r = run_child(C, dt, path, eig, args.threads, args.timeout)
                    if "error" in r:
                        print(f"| {C} | {dt} | {path} | {eig} | – | – | – | failed: {r['error']} |", flush=True)
                        continue
                    print(f"| {C} | {dt} | {path} | {eig} | {r['time_s']:.3g} | {r['peak_mib']:.0f} | "
                          f"{r['peak_mib'] / BATCH:.2f} | {r['certificates']} |", flush=True)


if __name__ == "__main__":
    main()
