"""Side-by-side timing of two versions of fishersym in one process (round-robin, medians).

The MLP benchmark of issue 3 (784-128-64-32-10 sigmoid, categorical, 256 inputs, float64, one
thread): ``dataset_stats`` at the paper's scope (``use_eig=False, sharpened=False``) and with the
defaults, for the working tree's ``fishersym`` and an older copy importable as another package
name (e.g. ``git worktree add /tmp/base REV && cp -r /tmp/base/fishersym /tmp/oldver/fishersym_old``):

    .venv/bin/python benchmarks/compare_versions.py --old-path /tmp/oldver --old-name fishersym_old
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time

import torch
from torch import nn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-path", required=True)
    ap.add_argument("--old-name", default="fishersym_old")
    ap.add_argument("--repeats", type=int, default=11)
    args = ap.parse_args()
    torch.set_num_threads(1)
    new = importlib.import_module("fishersym.numeric")          # before the old copy's folder is on the path
    sys.path.append(args.old_path)
    old = importlib.import_module(f"{args.old_name}.numeric")
    print(f"new: {new.__file__}\nold: {old.__file__}")
    fam_new = importlib.import_module("fishersym.families").get("categorical", C=10)
    fam_old = importlib.import_module(f"{args.old_name}.families").get("categorical", C=10)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 128), nn.Sigmoid(), nn.Linear(128, 64), nn.Sigmoid(),
                          nn.Linear(64, 32), nn.Sigmoid(), nn.Linear(32, 10)).double()
    x = torch.randn(256, 784, dtype=torch.float64)
    runs = {
        "paper scope (use_eig=False, sharpened=False)": dict(use_eig=False, sharpened=False),
        "defaults": {},
    }
    for label, kw in runs.items():
        t_new, t_old = [], []
        for i in range(args.repeats + 1):
            for mod, fam, acc in ((new, fam_new, t_new), (old, fam_old, t_old)):
                t0 = time.perf_counter()
                mod.dataset_stats(model, x, fam, progress=False, **kw)
                if i:  # the first round warms up
                    acc.append(time.perf_counter() - t0)
        mn, mo = statistics.median(t_new), statistics.median(t_old)
        print(f"{label}: new {mn * 1e3:.1f} ms, old {mo * 1e3:.1f} ms, new/old {mn / mo:.2f} "
              f"(range of per-round ratios {min(a / b for a, b in zip(t_new, t_old)):.2f}–"
              f"{max(a / b for a, b in zip(t_new, t_old)):.2f})")


if __name__ == "__main__":
    main()
