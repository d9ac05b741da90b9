"""Cost of the fast MLP path against depth (issue 12, "Depth costs O(L²)").  Prints markdown tables.

Model of depth L (L Linear layers): Linear(784, 128), Sigmoid, (Linear(128, 128), Sigmoid) × (L − 2),
Linear(128, C); 256 inputs, float64, one thread by default.  For each depth, timed round-robin in
this one process (medians):

* one cross-entropy forward+backward of the same model (the unit of the ratios);
* ``dataset_stats(model, x, family, use_eig=False, sharpened=False)`` (the paper-scope analysis) with
  the package's ``_second_derivatives`` (**new**) and with the routine it replaced (**old**, kept
  in this script only, for the comparison: every layer pair's J^{m←l} formed over the whole batch);
* the max relative difference of fisher, var1 and var2 between the two (must be ≤ 1e-12).

Families: ``categorical`` (C = 10) and ``bernoulli`` (C = 1).  Which state the new sweep uses below
the top (factor rows or Hessians, THEORY §7) is printed as the fold layer s (−1: factor rows only).

    .venv/bin/python benchmarks/bench_depth.py [--depths 2 4 8 16] [--families categorical bernoulli]
                                               [--repeat 5] [--threads 1] [--no-old]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

import fishersym.numeric.mlp as mlp
from fishersym import families
from fishersym.numeric import dataset_stats

NEW = mlp._second_derivatives


#: the routine replaced in issue 12 (verbatim but for the name), for the comparison only
_K_BLOCK = 1 << 20


def old_second_derivatives(W, R, d1s, B, C):
    L = len(W)
    D = [None] * L
    D[L - 1] = R[L - 1]
    Js = {}
    for l in range(L - 2, -1, -1):
        Wn = W[l + 1]
        n_l = Wn.shape[1]
        acc = None
        if R[l + 1] is not None:
            acc = (R[l + 1].reshape(B * C, -1) @ (Wn * Wn)).view(B, C, n_l)
        deeper = [m for m in range(l + 2, L) if R[m] is not None]
        new_Js = {}
        for m in deeper:
            n_m = W[m].shape[0]
            keep = l > 0
            outer = None
            if m == l + 2 and Wn.shape[0] <= B:
                outer = (W[m].T.unsqueeze(-1) * Wn.unsqueeze(1)).reshape(Wn.shape[0], n_m * n_l)
            term = torch.empty(B, C, n_l, dtype=Wn.dtype, device=Wn.device)
            Jkeep = torch.empty(B, n_m, n_l, dtype=Wn.dtype, device=Wn.device) if keep else None
            step = max(1, _K_BLOCK // (n_m * n_l))
            for i in range(0, B, step):
                sl = slice(i, min(i + step, B))
                if outer is not None:
                    K = (d1s[l + 1][sl] @ outer).view(-1, n_m, n_l)
                else:
                    J = Js[m][sl]
                    K = (J.reshape(-1, J.shape[-1]) @ Wn).view(-1, n_m, n_l)
                if keep:
                    torch.mul(K, d1s[l][sl].unsqueeze(1), out=Jkeep[sl])
                K.square_()
                torch.bmm(R[m][sl], K, out=term[sl])
            acc = term if acc is None else acc.add_(term)
            if keep:
                new_Js[m] = Jkeep
        if l > 0 and R[l + 1] is not None and n_l > B:
            new_Js[l + 1] = Wn * d1s[l].unsqueeze(1)
        Js = new_Js
        if acc is not None:
            s = d1s[l]
            acc.mul_((s * s).unsqueeze(1))
        D[l] = acc if R[l] is None else (R[l] if acc is None else acc.add_(R[l]))
    return D


def make_model(depth: int, C: int, width: int = 128, n_in: int = 784) -> nn.Sequential:
    torch.manual_seed(0)
    mods: list[nn.Module] = [nn.Linear(n_in, width), nn.Sigmoid()]
    for _ in range(depth - 2):
        mods += [nn.Linear(width, width), nn.Sigmoid()]
    mods.append(nn.Linear(width, C))
    return nn.Sequential(*mods).double()


def fold_layer(depth: int, C: int, width: int = 128) -> int:
    n = [width] * (depth - 1) + [C]
    K = [0] * depth
    for l in range(depth - 2, -1, -1):
        K[l] = K[l + 1] + n[l + 1]
    return mlp._switch_layer(n, K, C) if depth > 1 else -1


def run(family_name: str, depths: list[int], repeat: int, with_old: bool, B: int = 256) -> None:
    fam = families.get(family_name, C=10) if family_name == "categorical" else families.get(family_name)
    C = 10 if family_name == "categorical" else 1
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, 784, generator=g, dtype=torch.float64)
    print(f"\n### {family_name} (C = {C}), {B} inputs, float64, {torch.get_num_threads()} thread(s), "
          f"load {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    head = "| depth | fold layer s | CE fwd+bwd (ms) | new (ms) | new / CE |"
    if with_old:
        head += " old (ms) | old / CE | old / new | max rel. diff |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for L in depths:
        model = make_model(L, C)
        if family_name == "categorical":
            y = torch.randint(0, C, (B,), generator=g)

            def ce(model=model, y=y):
                model.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
        else:
            y = torch.randint(0, 2, (B, 1), generator=g).double()

            def ce(model=model, y=y):
                model.zero_grad()
                nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()

        res = {}

        def stats(fn, key, res=res, model=model):
            def call():
                mlp._second_derivatives = fn
                try:
                    res[key] = dataset_stats(model, x, fam, use_eig=False, sharpened=False, progress=False)
                finally:
                    mlp._second_derivatives = NEW
            return call

        fns = {"ce": ce, "new": stats(NEW, "new")}
        if with_old:
            fns["old"] = stats(old_second_derivatives, "old")
        for fn in fns.values():                             # warm-up
            fn()
        ts: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(repeat):
            for k, fn in fns.items():
                t = time.perf_counter()
                fn()
                ts[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in ts.items()}
        row = (f"| {L} | {fold_layer(L, C)} | {med['ce'] * 1e3:.1f} | {med['new'] * 1e3:.0f} | "
               f"{med['new'] / med['ce']:.1f} |")
        if with_old:
            err = 0.0
            for key in ("fisher", "var1", "var2"):
                for name, a in res["new"][key].items():
                    b = res["old"][key][name]
                    err = max(err, float((a - b).abs().max() / b.abs().max().clamp_min(1e-300)))
            row += (f" {med['old'] * 1e3:.0f} | {med['old'] / med['ce']:.1f} | {med['old'] / med['new']:.2f} | "
                    f"{err:.1e} |")
        print(row, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8, 16])
    ap.add_argument("--families", nargs="+", default=["categorical", "bernoulli"],
                    choices=["categorical", "bernoulli"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-old", action="store_true", help="skip the replaced routine (faster)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for fam in args.families:
        run(fam, args.depths, args.repeat, not args.no_old)


if __name__ == "__main__":
    main()
