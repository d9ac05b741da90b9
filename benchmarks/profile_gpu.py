"""Where the data-set analysis spends its time on a device (issue 12 item 3): one ``torch.profiler``
run of ``dataset_stats`` on the MLP benchmark (784-128-64-32-10 sigmoid, categorical C = 10, float64),
paper scope and default, printing the top ops by self device time and by self host time, the op and
host-sync counts per call.  For deciding what to optimise next, not a benchmark of record
(``bench_gpu.py`` is).  No installation beyond torch, sympy, numpy, tqdm and the package::

    PYTHONPATH=. python benchmarks/profile_gpu.py [--n 4096] [--batch-size auto] [--rows 20]

On a machine without CUDA it profiles the CPU (host times only).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_mlp import make_model

from fishersym import families
from fishersym.numeric import dataset_stats

ANALYSES = {"paper scope": dict(use_eig=False, sharpened=False), "default": {}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4096, help="inputs (default 4096)")
    ap.add_argument("--batch-size", default="auto", help="'auto' or an integer (default auto)")
    ap.add_argument("--rows", type=int, default=20, help="rows per table (default 20)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    bs = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    model = make_model().double().to(dev).eval()
    x = torch.rand(args.n, 784, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(dev)
    fam = families.get("categorical", C=10)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    for name, kw in ANALYSES.items():
        r = dataset_stats(model, x, fam, batch_size=bs, progress=False, **kw)       # warm-up
        sync()
        t = time.perf_counter()
        r = dataset_stats(model, x, fam, batch_size=bs, progress=False, **kw)
        sync()
        wall = time.perf_counter() - t
        with profile(activities=acts) as prof:
            dataset_stats(model, x, fam, batch_size=bs, progress=False, **kw)
            sync()
        ev = prof.key_averages()
        n_ops = sum(e.count for e in ev if e.key.startswith("aten::"))
        syncs = sum(e.count for e in ev if e.key in ("aten::item", "aten::_local_scalar_dense", "cudaStreamSynchronize",
                                                       "cudaDeviceSynchronize", "aten::is_nonzero"))
        print(f"\n## {name}: {wall * 1e3:.1f} ms wall on {dev} ({args.n} inputs, batch_size={r.info['batch_size']}); "
              f"{n_ops} aten op calls, {syncs} host-sync calls")
        if dev.type == "cuda":
            print(ev.table(sort_by="self_cuda_time_total", row_limit=args.rows, max_name_column_width=60))
        print(ev.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
