"""Numeric evaluation of a symbolic derivation at a torch model's parameters.

Returns the mappings of ``fishersym.numeric.conditional_stats`` (keys of
:mod:`fishersym.bounds.theorem41`; ``{param name: tensor (batch, *shape)}``)
so that symbolic and numeric results can be compared in one line.  The
SymPy expressions are compiled with ``lambdify`` (NumPy, float64); the
intermediate symbols (z, a, h, p, …) are evaluated from their definitions in
order, then the per-parameter expressions.  Bounds use the numeric family
constants (THEORY §5) through the shared :func:`theorem41_bounds`.
"""
from __future__ import annotations

import numpy as np
import sympy as sp
import torch

from ..bounds.theorem41 import theorem41_bounds
from ..families.constants import MAX_C_EIG, family_constants

__all__ = ["evaluate", "numeric_modules"]


def _erf(x):
    try:
        from scipy.special import erf
        return erf(x)
    except ImportError:  # pragma: no cover
        import math
        return np.vectorize(math.erf, otypes=[float])(x)


def numeric_modules():
    return [{"erf": _erf}, "numpy"]


def _lamb(args, expr):
    return sp.lambdify(args, expr, modules=numeric_modules(), cse=True)


def evaluate(D, model, x, n_samples=None, optimise: bool = True, extra: bool = False):
    net, fam = D.network, D.family
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (batch, {net.widths[0]}), got {type(x).__name__}")
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2 or x.shape[-1] != net.widths[0]:
        raise ValueError(f"x must have shape (batch, {net.widths[0]}), got {tuple(x.shape)}")
    if isinstance(D.N, sp.Integer):
        N = int(D.N)
        if n_samples is not None and int(n_samples) != N:
            raise ValueError(f"this derivation was made for N = {N}; got n_samples = {n_samples}")
    else:
        N = 1 if n_samples is None else int(n_samples)
        if N < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples}")
    B = x.shape[0]
    xn = x.detach().to(torch.float64).cpu().numpy()
    vals: dict = {s: xn[:, k] for k, s in enumerate(net.x)}
    vals.update(net.parameter_values(model))
    vals.update(fam.sym_params)
    if not D.N.is_Integer:
        vals[D.N] = float(N)

    def ev(expr):
        expr = sp.sympify(expr)
        fs = sorted(expr.free_symbols, key=lambda s: s.name)
        missing = [s for s in fs if s not in vals]
        if missing:
            raise KeyError(f"no value for symbol(s) {missing}")
        out = _lamb(fs, expr)(*[vals[s] for s in fs])
        return np.broadcast_to(np.asarray(out, dtype=np.float64), (B,))

    for s, e in D.definitions():
        vals[s] = ev(e)

    # all per-parameter expressions in one compiled function
    names = ["fisher", "var1", "var2", "u_sq", "w_sq"]
    if extra:
        names += ["var1_moment", "var1_cumulant"]
    pds = list(D.params.values())
    exprs = []
    for pd in pds:
        exprs += [getattr(pd, n) for n in names]
        exprs += list(pd.u) + list(pd.w)
        if D.family.shift_invariant:
            C = len(pd.u)
            ub, wb = sp.Add(*pd.u) / C, sp.Add(*pd.w) / C
            exprs += [sp.Add(*[(c - ub) ** 2 for c in pd.u]), sp.Add(*[(c - wb) ** 2 for c in pd.w])]
    fs = sorted(set().union(*[sp.sympify(e).free_symbols for e in exprs]), key=lambda s: s.name)
    missing = [s for s in fs if s not in vals]
    if missing:
        raise KeyError(f"no value for symbol(s) {missing}")
    raw = sp.lambdify(fs, exprs, modules=numeric_modules(), cse=True)(*[vals[s] for s in fs])
    raw = [np.broadcast_to(np.asarray(r, dtype=np.float64), (B,)) for r in raw]

    shapes = {n: tuple(t.shape) for n, t in model.named_parameters()}
    C = fam.C
    keys = names + ["u", "w"] + (["up_sq", "wp_sq"] if fam.shift_invariant else [])
    out = {k: {} for k in keys}
    for pname in dict.fromkeys(pd.entry.torch_name for pd in pds):
        for k in keys:
            tail = (C,) if k in ("u", "w") else ()
            out[k][pname] = torch.zeros((B, *shapes[pname], *tail), dtype=torch.float64)
    pos = 0
    for pd in pds:
        e = pd.entry
        idx = (slice(None), *e.index)
        for n in names:
            out[n][e.torch_name][idx] = torch.from_numpy(np.array(raw[pos]))
            pos += 1
        for n in ("u", "w"):
            for c in range(C):
                out[n][e.torch_name][(*idx, c)] = torch.from_numpy(np.array(raw[pos]))
                pos += 1
        if fam.shift_invariant:
            for n in ("up_sq", "wp_sq"):
                out[n][e.torch_name][idx] = torch.from_numpy(np.array(raw[pos]))
                pos += 1

    # Theorem 4.1 bounds with the numeric family constants (THEORY §5)
    h = torch.from_numpy(np.stack([np.array(vals[s]) for s in fam.h_sym], axis=-1)).to(torch.float64)
    moments = fam.moment_tensors(h) if fam.C <= MAX_C_EIG else None  # shared by both calls
    consts = family_constants(fam, h, restricted=False, optimise=optimise, moments=moments)
    result = {k: out[k] for k in ("fisher", "var1", "var2")}
    cr = (family_constants(fam, h, restricted=True, optimise=optimise, moments=moments)
          if fam.shift_invariant else None)
    per_param = {}
    for pname in out["fisher"]:
        b = theorem41_bounds(out["u_sq"][pname], out["w_sq"][pname], consts, N)
        if cr is not None:
            b.update(theorem41_bounds(out["up_sq"][pname], out["wp_sq"][pname], cr, N, suffix="_sharp"))
        per_param[pname] = b
    for k in next(iter(per_param.values())):
        result[k] = {pname: per_param[pname][k] for pname in per_param}
    if extra:
        for k in keys:
            if k not in result:
                result[k] = out[k]
        if not D.forms.lam_named:
            sym = {}
            for pd in pds:
                for k, e in pd.bounds.items():
                    if k.endswith("_sharp"):
                        continue
                    sym.setdefault(k, {}).setdefault(pd.entry.torch_name,
                                                     torch.zeros((B, *shapes[pd.entry.torch_name]),
                                                                 dtype=torch.float64))
                    sym[k][pd.entry.torch_name][(slice(None), *pd.entry.index)] = torch.from_numpy(np.array(ev(e)))
            for k, v in sym.items():
                result[f"sym_{k}"] = v
    return result
