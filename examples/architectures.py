"""The three real architectures end to end: ResNet-18 (CIFAR), LeNet-5 (tanh), a small transformer.

    python examples/architectures.py                 # small sizes: a few minutes on 2 cores
    python examples/architectures.py --full          # ResNet-18 width 64 (11.2M), LeNet-5 28×28, d = 64
    python examples/architectures.py --only lenet5 --n-inputs 4

Each model (``fishersym.experiments.architectures``) runs through

1. ``conditional_stats`` on a few digits (THEORY §2–§5): the exact path, per tensor how V₂ was
   obtained (proved ≡ 0 from the executed ops and why, computed exactly, or exact on a sample with a
   confidence interval), the counts of the ``var2_zero_reason`` texts, and the time per input;
2. ``dataset_stats`` (scheme "all", §8) on the same inputs;
3. ``check_model`` (the paper's properties, ``fishersym check``) on one input, unperturbed (one exact
   ``conditional_stats`` call shared by the properties);
4. the report (``fishersym report --model``) into ``out/architectures/NAME``.

Data: scikit-learn's 8×8 digits, adapted to each model (``fishersym.experiments.data.adapt_inputs``):
upsampled bilinearly to 32×32 and repeated over 3 channels for the ResNet, upsampled to 28×28 for
LeNet, read as 8 rows of 8 pixels for the transformer.

Paths ("auto"): the ResNet and LeNet take the fast per-layer engine (``fishersym.numeric.layers``:
u and w for every entry from one forward and one backward of C rows per input; V₂ ≡ 0 proved per
tensor for the ReLU/BatchNorm/residual ResNet, exact V₂ everywhere for the tanh LeNet).  The
transformer (attention has no per-layer rule) takes the reverse path (u from C backward passes per
input, V₂ ≡ 0 proved per tensor from the executed ops) and samples V₂ where it is not proved
(``v2="sample"``, 1 % of the entries of each tensor, with the minimum that ``fishersym.numeric``
sets): V₂ at the sampled entries is exact, its sums are estimates with a standard error, and the
output says so.  ``check_model`` has no sampled V₂: it computes every w.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import torch

from fishersym import families
from fishersym.experiments.architectures import lenet5, resnet18, small_transformer
from fishersym.experiments.data import adapt_inputs, load_model_data
from fishersym.experiments.report import ModelReportSettings, run_model_report
from fishersym.numeric import conditional_stats, dataset_stats
from fishersym.testing import check_model

#: name → size → (factory, factory kwargs, input shape, conditional_stats options)
SAMPLE = {"v2": "sample", "v2_sample": 0.01, "seed": 0}
CONFIGS = {
    "resnet18": {
        "small": (resnet18, {"width": 4}, (3, 32, 32), {}),
        "full": (resnet18, {}, (3, 32, 32), {}),
    },
    "lenet5": {
        "small": (lenet5, {"activation": "tanh"}, (1, 28, 28), {}),
        "full": (lenet5, {"activation": "tanh"}, (1, 28, 28), {}),
    },
    "small_transformer": {
        "small": (small_transformer, {"d_model": 16, "nhead": 2, "dim_feedforward": 32}, (8, 8), SAMPLE),
        "full": (small_transformer, {}, (8, 8), SAMPLE),
    },
}
#: tensors frozen (requires_grad False) for check_model: none (the per-layer engine gives every w exactly)
CHECK_FROZEN: dict[str, dict[str, list[str]]] = {"small": {}, "full": {}}
#: properties run by check_model here (one example each): the others are not applicable above
#: 600 parameters (label-space oracle) or take many conditional_stats calls
PROPERTIES = ["nonnegative", "structural"]


def v2_status(r, name: str, numel: int) -> str:
    """How V₂ of one tensor was obtained, from a result's ``info``."""
    zero = r.info.get("var2_zero_reason", {}) or {}
    if name in zero:
        return "0 (proved)"
    v = r["var2"][name]
    n_known = int((~torch.isnan(v.reshape(v.shape[0], -1))).all(0).sum())
    if n_known < numel:
        return f"sampled ({n_known}/{numel} entries exact)"
    return "exact"


def run_one(name: str, size: str, n_inputs: int, out: Path, digits) -> dict:
    factory, kwargs, shape, opts = CONFIGS[name][size]
    model = factory(**kwargs).double()
    P = sum(p.numel() for p in model.parameters())
    x, how = adapt_inputs(digits.x[:n_inputs], model, input_shape=shape)
    fam = families.get("categorical", C=10)
    print(f"\n=== {name} {kwargs} — {P:,} parameters in {len(list(model.parameters()))} tensors; "
          f"{n_inputs} digits {tuple(x.shape[1:])} ({how}); options {opts}")
    timings = {}

    t = time.time()
    r = conditional_stats(model, x, fam, 1, **opts)
    timings["conditional_stats_per_input_s"] = (time.time() - t) / n_inputs
    print(f"conditional_stats: path {r.path} ({r.info.get('path_reason', '')}); "
          f"{timings['conditional_stats_per_input_s']:.2f} s per input")
    status = {}
    for pname, p in model.named_parameters():
        status[pname] = v2_status(r, pname, p.numel())
        print(f"  {pname:45} {p.numel():9,d}  V2 {status[pname]}")
    counts = collections.Counter(v.split(" (")[0] if v.startswith("sampled") else v for v in status.values())
    print("  V2 per tensor:", dict(counts))
    reasons = collections.Counter(r.info.get("var2_zero_reason", {}).values())
    for why, k in reasons.most_common():
        print(f"  var2_zero_reason ×{k}: {why}")
    if r.info.get("estimated"):
        print(f"  estimated (everything else exact): {len(r.info['estimated'])} keys — V₂ and its bounds at the "
              "sampled entries are exact, their sums per tensor/group are estimates with a standard error "
              "(result.standard_errors, result.ci(); descriptions in result.info['estimated'])")

    t = time.time()
    d = dataset_stats(model, x, fam, 1, scheme="all", progress=False, batch_size=1, **opts)
    timings["dataset_stats_s"] = time.time() - t
    tot = {k: sum(float(v.nansum()) for v in d[k].values()) for k in ("fisher", "var1", "var2")}
    print(f"dataset_stats: path {d.path}, {timings['dataset_stats_s']:.1f} s; Σ_i I = {tot['fisher']:.4g}, "
          f"Σ_i Var Î₁ = {tot['var1']:.4g}, Σ_i Var Î₂ = {tot['var2']:.4g}"
          + (" (V₂: sampled entries only)" if d.info.get("estimated") else ""))

    t = time.time()
    if opts.get("v2") == "sample":
        print("check_model: exact V₂ for every entry on one input (check_model has no sampled V₂) ...")
    frozen = CHECK_FROZEN[size].get(name, [])
    cm = model
    if frozen:
        import copy
        cm = copy.deepcopy(model)
        for pname, p in cm.named_parameters():
            p.requires_grad_(pname not in frozen)
        print(f"check_model on the tensors other than {frozen} (frozen: constants of the check)")
    rep = check_model(cm, fam, x[:1], max_examples=1, properties=PROPERTIES, path=opts.get("path", "auto"),
                      perturb=0.0)
    timings["check_model_s"] = time.time() - t
    print(f"check_model ({timings['check_model_s']:.1f} s):",
          ", ".join(f"{p.name} {p.status}" for p in rep.results), "— OK" if rep.ok else "— FAILED")

    t = time.time()
    s = ModelReportSettings(model=f"fishersym.experiments.architectures:{name}", model_args=kwargs, n_inputs=n_inputs,
                            path=opts.get("path", "auto"), v2=opts.get("v2", "exact"), v2_sample=opts.get("v2_sample"),
                            progress=None)
    res = run_model_report(model, out / name, s, force=True)
    timings["report_s"] = time.time() - t
    print(f"report ({timings['report_s']:.1f} s): {res['paths']['html']}")
    return {"name": name, "params": P, "path": r.path, "v2": dict(counts), "check_ok": rep.ok, **timings}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the real sizes (slow: hours on 2 cores for ResNet-18)")
    ap.add_argument("--only", choices=sorted(CONFIGS), action="append", help="run only this architecture")
    ap.add_argument("--n-inputs", type=int, default=2, help="digits per model (default 2)")
    ap.add_argument("--out", default="out/architectures", help="reports go to OUT/NAME")
    a = ap.parse_args(argv)
    digits = load_model_data(None)
    rows = [run_one(n, "full" if a.full else "small", a.n_inputs, Path(a.out), digits) for n in (a.only or CONFIGS)]
    print("\nsummary")
    for r in rows:
        print(f"  {r['name']:18} {r['params']:>11,d} params  path {r['path']:8} V2 {r['v2']}  "
              f"cond {r['conditional_stats_per_input_s']:.2f} s/input  dataset {r['dataset_stats_s']:.1f} s  "
              f"check {r['check_model_s']:.1f} s ({'ok' if r['check_ok'] else 'FAILED'})  report {r['report_s']:.1f} s")
    return 0 if all(r["check_ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
