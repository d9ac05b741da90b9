"""Benchmark of the fast exact MLP path (THEORY.md §7), issue 3.  Prints a markdown table.

Model: Sequential(Linear(784,128), Sigmoid, Linear(128,64), Sigmoid, Linear(64,32), Sigmoid,
Linear(32,10)), categorical (C = 10), 256 inputs, float64 and float32; every figure is the
median of repeats in this one process.  Targets:

* issue 12 (CPU, float64, ``--threads 1``): the paper-scope analysis
  ``dataset_stats(use_eig=False, sharpened=False)`` ≤ 2× BackPACK ``DiagGGNExact`` and ≥ 40× faster
  than ``vmap(jacrev)``; the default analysis ≤ 1.5× the paper-scope one; float32 not slower than
  float64 (the analysis, the float64 precision re-check of 8 inputs included);
* ``dataset_stats`` (exact dataset-level fisher/var1/var2 and all certified Theorem 4.1 bounds
  for all 111,146 parameters, closed-form certificates) ≤ 15× one cross-entropy forward+backward;
* ≥ 30× faster (float64) than the per-sample Jacobian alone with ``vmap(jacrev)``;
* BackPACK (optional, skipped when not importable): the full analysis ≤ 3× ``DiagGGNExact``
  (exact Fisher diagonal only), and the ratio to a BackPACK route to the same V₂
  (one ``BatchDiagHessian`` pass per label plus one ``BatchDiagGGNExact``:
  N·V₂ = Σ_y p_y (diag∇²ℓ_y − diag GGN)², checked against ours);
* peak RSS of ``dataset_stats`` at batch 256 and 4096 (separate subprocesses).

    .venv/bin/python benchmarks/bench_mlp.py [--quick] [--json PATH] [--threads N] [--cpu-time]

The machine may be shared: the load average (``uptime``) is printed with the figures; with
other processes running, ``--threads 1 --cpu-time`` gives the steadiest ratios (the analyses,
the CE step and DiagGGNExact are timed round-robin in one process).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from fishersym import families
from fishersym.numeric import dataset_stats

N_PARAMS = 111_146


def make_model(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 128), nn.Sigmoid(), nn.Linear(128, 64), nn.Sigmoid(),
                         nn.Linear(64, 32), nn.Sigmoid(), nn.Linear(32, 10)).to(dtype)


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


#: the clock of every timing: wall time (default) or, with --cpu-time, this process's CPU time (steadier
#: on a machine shared with other processes; one thread, so CPU time ≈ wall time on an idle machine)
CLOCK = time.perf_counter


def bench(fn, repeat: int, warm: bool = True) -> float:
    """Median time (:data:`CLOCK`) of ``repeat`` calls after one warm-up call."""
    if warm:
        fn()
    ts = []
    for _ in range(repeat):
        t = CLOCK()
        fn()
        ts.append(CLOCK() - t)
    return statistics.median(ts)


def bench_interleaved(fns: dict, repeat: int, warm: int = 3) -> dict:
    """Median time (:data:`CLOCK`) of each function, timed round-robin (one call of each per round) so
    that the ratios between them share the machine's load conditions; ``warm`` untimed rounds."""
    for _ in range(warm):
        for fn in fns.values():
            fn()
    ts = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t = CLOCK()
            fn()
            ts[k].append(CLOCK() - t)
    return {k: statistics.median(v) for k, v in ts.items()}


def rss_child(batch: int, use_eig: bool) -> None:
    model, fam = make_model(), families.get("categorical", C=10)
    x = torch.randn(batch, 784, dtype=torch.float64)
    if batch > 1:                                      # batch 1: the imports and model alone (baseline)
        dataset_stats(model, x, fam, batch_size=batch, progress=False, use_eig=use_eig)
    # VmHWM: peak resident set of this process (unlike ru_maxrss not inherited from the parent)
    with open("/proc/self/status") as fh:
        hwm = next(line for line in fh if line.startswith("VmHWM"))
    print(int(hwm.split()[1]) / 1024)


def backpack_fns(model, x, y):
    """(DiagGGNExact step, V₂ route) on a BackPACK-extended copy of ``model``, or None when BackPACK is
    not importable."""
    try:
        from backpack import backpack, extend
        from backpack.extensions import BatchDiagGGNExact, BatchDiagHessian, DiagGGNExact
    except ImportError as e:
        print(f"(BackPACK rows skipped: backpack is not importable: {e})")
        return None
    bmodel = extend(make_model(next(model.parameters()).dtype))
    bmodel.load_state_dict(model.state_dict())
    lossf = extend(nn.CrossEntropyLoss(reduction="sum"))
    B, C = x.shape[0], 10

    def ggn():
        bmodel.zero_grad()
        with backpack(DiagGGNExact()):
            lossf(bmodel(x), y).backward()
        return [p.diag_ggn_exact for p in bmodel.parameters()]

    def v2_route():
        # N·V₂(θ|x) = Var_y(w·(e_y − p)) = Σ_y p_y (diag∇²ℓ_y − diag GGN)², per input (THEORY §3)
        bmodel.zero_grad()
        with backpack(BatchDiagGGNExact()):
            out = bmodel(x)
            lossf(out, y).backward()
        g = [p.diag_ggn_exact_batch.clone() for p in bmodel.parameters()]
        prob = torch.softmax(out.detach(), -1)
        acc = [torch.zeros_like(t) for t in g]
        for c in range(C):
            bmodel.zero_grad()
            with backpack(BatchDiagHessian()):
                lossf(bmodel(x), torch.full((B,), c, dtype=torch.long)).backward()
            for a, gg, p in zip(acc, g, bmodel.parameters()):
                d = p.diag_h_batch - gg
                a += prob[:, c].reshape((B,) + (1,) * (d.dim() - 1)) * d * d
        return [a.sum(0) / B / B for a in acc]  # scheme "all", N = 1: (1/M²) Σ_b N·V₂

    return ggn, v2_route


def backpack_v2_row(v2_route, ours_var2, rep, rows, dtype_name) -> float:
    got = v2_route()                                   # warm-up and check
    t_v2 = bench(v2_route, 1 if rep < 21 else 2, warm=False)
    err = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-300)) for a, b in zip(got, ours_var2))
    rows.append((f"BackPACK V₂ route (10 BatchDiagHessian + BatchDiagGGNExact) [{dtype_name}]", t_v2))
    print(f"BackPACK V₂ route vs ours ({dtype_name}): max relative difference {err:.2e}")
    return t_v2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, no Sym²-eig row at batch 4096")
    ap.add_argument("--json", metavar="PATH", help="also save the numbers as JSON")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with this process's CPU time instead of wall time (steadier on a shared machine)")
    ap.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--use-eig", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    if args.rss_child:
        rss_child(args.rss_child, args.use_eig)
        return
    rep = 7 if args.quick else 21
    rep_slow = 1 if args.quick else 3
    fam = families.get("categorical", C=10)
    load_start = load()
    results: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor(),
                     "clock": "process CPU" if args.cpu_time else "wall", "quick": args.quick,
                     "load_start": load_start, "rows": {}, "ratios": {}}
    rows: list[tuple[str, float]] = []
    for dtype in (torch.float64, torch.float32):
        dn = str(dtype).replace("torch.", "")
        model = make_model(dtype)
        torch.manual_seed(1)
        x = torch.randn(256, 784, dtype=dtype)
        y = torch.randint(0, 10, (256,))

        def ce(model=model, x=x, y=y):
            model.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()

        params = {k: v.detach() for k, v in model.named_parameters()}

        def jac(model=model, params=params, x=x):
            f = lambda p, xi: functional_call(model, p, (xi.unsqueeze(0),))[0]  # noqa: E731
            return vmap(jacrev(f), in_dims=(None, 0))(params, x)

        fast = lambda model=model, x=x: dataset_stats(model, x, fam, progress=False, use_eig=False)  # noqa: E731
        paper = lambda model=model, x=x: dataset_stats(  # noqa: E731
            model, x, fam, progress=False, use_eig=False, sharpened=False)
        default = lambda model=model, x=x: dataset_stats(model, x, fam, progress=False)  # noqa: E731  (use_eig: C ≤ 24)
        bp = backpack_fns(model, x, y)
        fns = {"ce": ce, "fast": fast, "paper": paper, "default": default}
        if bp is not None:
            fns["ggn"] = bp[0]
        tt = bench_interleaved(fns, rep)
        t_ce, t_fast, t_paper, t_eig = tt["ce"], tt["fast"], tt["paper"], tt["default"]
        t_ggn = tt.get("ggn")
        t_jac = bench(jac, rep_slow)
        rows += [(f"CE forward+backward [{dn}]", t_ce),
                 (f"dataset_stats, Theorem 4.1 bounds only (use_eig=False, sharpened=False) [{dn}]", t_paper),
                 (f"dataset_stats, + sharpened 1-perp bounds (use_eig=False) [{dn}]", t_fast),
                 (f"dataset_stats default: Sym²-eig certificates, sharpened bounds [{dn}]", t_eig),
                 (f"vmap(jacrev) per-sample Jacobian alone [{dn}]", t_jac)]
        r_fast, r_eig = fast(), default()
        tight = {k: float(r_fast[k]["0.weight"].sum() / r_eig[k]["0.weight"].sum())
                 for k in ("var1_upper", "var1_upper_sharp", "fisher_upper_sharp")}
        t_v2 = None
        if bp is not None:
            rows.append((f"BackPACK DiagGGNExact (exact Fisher diagonal only) [{dn}]", t_ggn))
            t_v2 = backpack_v2_row(bp[1], list(r_fast["var2"].values()), rep, rows, dn)
        ratios = {"fast_over_ce": t_fast / t_ce, "jac_over_fast": t_jac / t_fast,
                  "paper_scope_over_ce": t_paper / t_ce, "jac_over_paper_scope": t_jac / t_paper,
                  "eig_over_ce": t_eig / t_ce, "default_over_paper_scope": t_eig / t_paper,
                  "closed_over_eig_bound_width": tight}
        if t_ggn is not None:
            ratios.update(fast_over_diag_ggn=t_fast / t_ggn, v2_route_over_fast=t_v2 / t_fast,
                          paper_scope_over_diag_ggn=t_paper / t_ggn)
        results["ratios"][dn] = ratios
        results["rows"].update({name: t for name, t in rows if f"[{dn}]" in name})
    results["load_end"] = load()
    rss = {}
    for b in (1, 256, 4096):
        for eig in ((False,) if args.quick or b == 1 else (False, True)):
            cmd = [sys.executable, __file__, "--rss-child", str(b)] + (["--use-eig"] if eig else [])
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
            rss["baseline (imports + model, no call)" if b == 1 else f"batch {b}, use_eig={eig}"] = float(out)
    results["peak_rss_mib"] = rss

    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} thread(s), 784-128-64-32-10 sigmoid, "
          f"C = 10, 256 inputs, {N_PARAMS:,} parameters; {results['clock']} time; load average at start {load_start}, "
          f"at end {results['load_end']}\n")
    print("| what | median s | × CE step |")
    print("|---|---:|---:|")
    for name, t in rows:
        ce_t = results["rows"][f"CE forward+backward [{name.split('[')[-1][:-1]}]"]
        print(f"| {name} | {t:.4f} | {t / ce_t:.1f} |")
    print()
    for dn, r in results["ratios"].items():
        line = (f"- {dn}: fast path = {r['fast_over_ce']:.1f}× CE step (target ≤ 15: "
                f"{'met' if r['fast_over_ce'] <= 15 else 'NOT met'}); vmap(jacrev) = {r['jac_over_fast']:.0f}× "
                f"the fast path (target ≥ 30{'' if dn == 'float64' else ', float64 only'}: "
                f"{'met' if r['jac_over_fast'] >= 30 else 'NOT met'})")
        if "fast_over_diag_ggn" in r:
            line += (f"; fast path = {r['fast_over_diag_ggn']:.1f}× BackPACK DiagGGNExact (aim ≤ 3: "
                     f"{'met' if r['fast_over_diag_ggn'] <= 3 else 'NOT met'}); BackPACK V₂ route = "
                     f"{r['v2_route_over_fast']:.0f}× the fast path")
        print(line)
        print(f"  paper scope (Theorem 4.1 bounds, no sharpened keys): {r['paper_scope_over_ce']:.1f}× CE step "
              f"(target ≤ 15: {'met' if r['paper_scope_over_ce'] <= 15 else 'NOT met'}); vmap(jacrev) = "
              f"{r['jac_over_paper_scope']:.0f}× it "
              f"(target ≥ 30: {'met' if r['jac_over_paper_scope'] >= 30 else 'NOT met'})"
              + (f"; {r['paper_scope_over_diag_ggn']:.1f}× BackPACK DiagGGNExact"
                 if "paper_scope_over_diag_ggn" in r else ""))
        print("  issue 12 targets: paper scope ≤ 2× DiagGGNExact: "
              + (f"{r['paper_scope_over_diag_ggn']:.2f}× "
                 f"({'met' if r['paper_scope_over_diag_ggn'] <= 2 else 'NOT met'})"
                 if "paper_scope_over_diag_ggn" in r else "n/a (no BackPACK)")
              + f"; vmap(jacrev) ≥ 40× the paper scope: {r['jac_over_paper_scope']:.0f}× "
              f"({'met' if r['jac_over_paper_scope'] >= 40 else 'NOT met'}); default ≤ 1.5× the paper scope: "
              f"{r['default_over_paper_scope']:.2f}× ({'met' if r['default_over_paper_scope'] <= 1.5 else 'NOT met'})")
        print("  closed-form / Sym²-eig certified bound (sum over layer 0 weights): "
              + ", ".join(f"{k} {v:.3f}" for k, v in r["closed_over_eig_bound_width"].items()))
    pairs = (("paper scope", "dataset_stats, Theorem 4.1 bounds only (use_eig=False, sharpened=False)"),
             ("default", "dataset_stats default: Sym²-eig certificates, sharpened bounds"))
    if all(f"{name} [{d}]" in results["rows"] for _, name in pairs for d in ("float32", "float64")):
        r32 = {k: results["rows"][f"{name} [float32]"] / results["rows"][f"{name} [float64]"] for k, name in pairs}
        results["float32_over_float64"] = r32
        print("- float32 / float64 time (target ≤ 1: float32 not slower): "
              + ", ".join(f"{k} {v:.2f} ({'met' if v <= 1 else 'NOT met'})" for k, v in r32.items()))
    print()
    for k, v in rss.items():
        print(f"- peak RSS dataset_stats {k}: {v:.0f} MiB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
        print(f"\nsaved {args.json}")


if __name__ == "__main__":
    main()
