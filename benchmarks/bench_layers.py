"""Per-layer engine vs the MLP engine on the issue-3 MLP benchmark (issue 9 item 3: no regression).

Model and data as ``bench_mlp.py``: Sequential 784-128-64-32-10 with sigmoids, categorical (C = 10),
256 inputs, float64, one thread.  Times (median, round-robin in this one process) of

* ``mlp_engine`` (THEORY §7 recursion, today's fast path),
* ``layer_engine`` with ``route="auto"`` (what the lead wires as the fast path: an MLP goes through
  the §7 recursion; must be ≤ 1.05× mlp_engine),
* ``layer_engine`` with ``route="graph"`` (the general DAG runner on the same model, for reference),

after checking that all three give the same base quantities (relative error ≤ 1e-10).

    .venv/bin/python benchmarks/bench_layers.py [--repeat N]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_mlp import bench_interleaved, load, make_model

from fishersym import families
from fishersym.numeric.layers.engine import layer_engine, plan_layers
from fishersym.numeric.mlp import mlp_engine, plan_mlp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(1)
    fam = families.get("categorical", C=10)
    model = make_model(torch.float64)
    x = torch.rand(256, 784, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    params = dict(model.named_parameters())
    pm, _ = plan_mlp(model, fam)
    pl, why = plan_layers(model, fam)
    if pl is None:
        raise SystemExit(f"plan_layers refused the benchmark model: {why}")
    runs = {"mlp_engine": lambda: mlp_engine(model, x, fam, pm, params),
            "layer_engine (auto)": lambda: layer_engine(model, x, fam, pl, params),
            "layer_engine (graph)": lambda: layer_engine(model, x, fam, pl, params, route="graph")}
    outs = {k: f() for k, f in runs.items()}
    ref = outs["mlp_engine"]
    for k, out in outs.items():
        for n in params:
            for key, part in ref.parts[n].items():
                a, b = out.parts[n][key].materialize(), part.materialize()
                err = float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))
                if err > 1e-10:
                    raise SystemExit(f"{k} differs from mlp_engine at {n}/{key}: relative error {err:.2e}")
    t = bench_interleaved(runs, args.repeat)
    print(f"load average: {load()}")
    print("| engine | median time (ms) | ratio to mlp_engine |\n|---|---|---|")
    for k, v in t.items():
        print(f"| {k} | {v * 1e3:.1f} | {v / t['mlp_engine']:.3f} |")


if __name__ == "__main__":
    main()
