"""Detection rate of the V₁ precision flag on a trained digits MLP in float32 (issue 13 items 6, 23).

Trains the report's sigmoid MLP (64-128-64-32-10) on scikit-learn's bundled digits in float32 with
Adam, then for each test input compares ``conditional_stats`` in float32 with the same weights and
input in float64 (the reference), per input:

* the largest relative error of V₁ over all entries (and the number of entries off by > 1 %);
* ``precision_lost`` and ``v1_rel_error`` of the float32 result.

It prints the detection rate: of the inputs whose float32 V₁ is off by more than 1e-3 somewhere,
the fraction flagged; and the false-alarm rate among the others.  Run:

    .venv/bin/python benchmarks/precision_flag.py [--epochs 30] [--inputs 200]
"""
from __future__ import annotations

import argparse
import copy

import torch

from fishersym import families
from fishersym.experiments.data import load_digits
from fishersym.experiments.mlp import build_mlp
from fishersym.numeric import conditional_stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--inputs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_digits(seed=args.seed)
    x = torch.tensor(ds.x_train, dtype=torch.float32)
    y = torch.tensor(ds.y_train, dtype=torch.long)
    model = build_mlp(ds.n_features, [128, 64, 32], ds.n_classes, "sigmoid", seed=args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(args.seed)
    for _ in range(args.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    m64 = copy.deepcopy(model).double()
    fam = families.get("categorical", C=ds.n_classes)
    xt = torch.tensor(ds.x_test[: args.inputs], dtype=torch.float32)
    off3 = flagged_off3 = ok = flagged_ok = bad_entries = 0
    worst_unflagged = 0.0
    bound_covers = 0
    for b in range(len(xt)):
        r32 = conditional_stats(model, xt[b:b + 1], fam, prob_negative=False, sharpened=False)
        r64 = conditional_stats(m64, xt[b:b + 1].double(), fam, prob_negative=False, sharpened=False)
        err = 0.0
        for n in r64.var1:
            ref, got = r64.var1[n], r32.var1[n].double()
            rel = ((got - ref).abs() / ref.abs().clamp_min(1e-300))[ref > 0]
            if rel.numel():
                err = max(err, float(rel.max()))
                bad_entries += int((rel > 1e-2).sum())
        bound_covers += err <= max(r32.v1_rel_error, 0.0) * 1.0001
        if err > 1e-3:
            off3 += 1
            flagged_off3 += r32.precision_lost
            if not r32.precision_lost:
                worst_unflagged = max(worst_unflagged, err)
        else:
            ok += 1
            flagged_ok += r32.precision_lost
    print(f"digits MLP 64-128-64-32-10 sigmoid, float32 vs float64, {len(xt)} test inputs, {args.epochs} epochs")
    print(f"V1 entries off by > 1%: {bad_entries}")
    print(f"inputs with V1 off by > 1e-3: {off3}; flagged: {flagged_off3}"
          + (f" (detection rate {flagged_off3 / off3:.0%})" if off3 else ""))
    print(f"inputs within 1e-3: {ok}; flagged anyway: {flagged_ok}")
    print(f"inputs whose worst V1 error is within v1_rel_error: {bound_covers}/{len(xt)}")
    print(f"worst error of an unflagged input: {worst_unflagged:.3g}")


if __name__ == "__main__":
    main()
