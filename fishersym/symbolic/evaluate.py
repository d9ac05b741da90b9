"""Numeric evaluation of a symbolic derivation at a torch model's parameters.

Returns a :class:`~fishersym.numeric.stats.StatsResult`, the type of
``fishersym.numeric.conditional_stats`` (keys of :mod:`fishersym.bounds.theorem41`
and the derived ``rel_sd*``/``prob_neg2_upper``; ``{param name: tensor (batch, *shape)}``;
``path="symbolic"``), so that symbolic and numeric results can be compared in one line.  The
SymPy expressions are compiled with ``lambdify`` (NumPy, float64); the
intermediate symbols (z, a, h, p, …) are evaluated from their definitions in
order, then the per-parameter expressions.  Bounds use the numeric family
constants (THEORY §5) through the shared :func:`theorem41_bounds`.
"""
from __future__ import annotations

import numpy as np
import sympy as sp
import torch

from torch import nn

from ..bounds.theorem41 import STAT_KEYS, theorem41_bounds
from ..families.constants import certificate_policy, family_constants, has_gram_form
from ..numeric.stats import RESULT_KEYS, StatsResult, add_derived, conditional_group_sums, resolve_groups

__all__ = ["evaluate", "numeric_modules", "check_architecture"]


def _erf(x):
    try:
        from scipy.special import erf
        return erf(x)
    except ImportError:  # pragma: no cover
        import math
        return np.vectorize(math.erf, otypes=[float])(x)


def numeric_modules() -> list:
    """The ``modules`` argument of ``sp.lambdify`` for the derivation's expressions: NumPy, with
    ``erf`` from SciPy (elementwise ``math.erf`` without SciPy)."""
    return [{"erf": _erf}, "numpy"]


def _lamb(args, expr):
    return sp.lambdify(args, expr, modules=numeric_modules(), cse=True)


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
               "_forward_pre_hooks_with_kwargs")


def _module_config(m: nn.Module) -> dict:
    """The public attributes that define what an activation module computes (``inplace``
    and ``training`` do not change the function)."""
    return {k: v for k, v in vars(m).items() if not k.startswith("_") and k not in ("training", "inplace")}


def _same_activation(m: nn.Module, ref: nn.Module) -> bool:
    """``m`` computes the activation ``ref`` (the derivation's torch module).  Softplus: the same β
    and a linearisation threshold at least the default 20 (torch returns z for βz > threshold,
    within e^{-20} of log(1 + e^z); a higher threshold is closer to the derivation's function)."""
    if type(m) is not type(ref):
        return False
    got, want = _module_config(m), _module_config(ref)
    if isinstance(m, nn.Softplus):
        return got.get("beta") == want.get("beta") and got.get("threshold", 0) >= want.get("threshold", 0)
    return got == want


def _describe_linear(n_in: int, n_out: int, bias: bool) -> str:
    return f"Linear({n_in}, {n_out}, bias={bias})"


def check_architecture(net, model: nn.Module) -> None:
    """Refuse a model that does not compute exactly the symbolic network ``net``.

    The derivation holds for ``nn.Sequential(Linear(d_0, d_1), φ_1, …, Linear(d_{L-1}, d_L))``
    (THEORY §1, §7; :mod:`fishersym.symbolic.network`): exactly 2L − 1 modules, each ``Linear``
    with the derivation's in/out widths and bias presence, each activation of the derivation's
    type and settings (e.g. the leaky slope, GELU's approximation, softplus' β), exactly the
    parameters ``"{2(l-1)}.weight"`` (and ``.bias``) with the derivation's shapes, none tied to
    another (a shared ``Linear`` or tied weight makes θ enter two layers, which the per-layer
    derivation does not model), no forward hooks, no parametrizations (both change what forward
    computes) and finite parameter values.  Raises TypeError (not a module) or ValueError naming
    the first mismatch; nothing is filled in or truncated.
    """
    from torch.nn.modules import module as _mod
    from torch.nn.utils import parametrize

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    want = "nn.Sequential(" + ", ".join(
        [_describe_linear(net.widths[l - 1], net.widths[l], net.bias)
         + (f", {type(net.activations[l - 1].torch_module()).__name__}" if l < net.L else "")
         for l in range(1, net.L + 1)]) + ")"
    fix = (f"this derivation is for {want} ({net!r}); build the model with "
           "derivation.network.torch_module() or derive for the model's architecture")
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
        raise ValueError(f"the model is a {type(model).__name__}, not an nn.Sequential with the standard "
                         f"forward; {fix}")
    layers = list(model._modules.items())  # with repeats: named_children() hides a module used twice
    if len(layers) != 2 * net.L - 1:
        raise ValueError(f"the model has {len(layers)} modules but the derivation's network has "
                         f"{2 * net.L - 1} ({net.L} Linear layers and {net.L - 1} activations); {fix}")
    for mod in model.modules():
        hooks = [h for h in _HOOK_DICTS if getattr(mod, h, None)]
        if hooks:
            raise ValueError(f"the model has forward hooks ({', '.join(hooks)} on a {type(mod).__name__}); "
                             "a hook changes what forward computes, which the derivation does not model; "
                             "remove the hooks")
        if parametrize.is_parametrized(mod):
            raise ValueError(f"a {type(mod).__name__} of the model is parametrized (torch.nn.utils.parametrize): "
                             "its weight is computed from other tensors, which the derivation does not model; "
                             "remove the parametrization (parametrize.remove_parametrizations) first")
    for h in ("_global_forward_hooks", "_global_forward_pre_hooks"):
        if getattr(_mod, h, None):
            raise ValueError("global forward hooks are registered (torch.nn.modules.module."
                             "register_module_forward_hook); they change what forward computes; remove them")
    seen: dict[int, str] = {}
    for i, (key, m) in enumerate(layers):
        if i % 2 == 0:
            l = i // 2 + 1
            n_in, n_out = net.widths[l - 1], net.widths[l]
            if not isinstance(m, nn.Linear) or type(m).forward is not nn.Linear.forward:
                raise ValueError(f"module {key!r} of the model is a {type(m).__name__}; layer {l} of the "
                                 f"derivation is {_describe_linear(n_in, n_out, net.bias)}; {fix}")
            has_bias = m.bias is not None
            if (m.in_features, m.out_features, has_bias) != (n_in, n_out, net.bias):
                raise ValueError(f"module {key!r} of the model is "
                                 f"{_describe_linear(m.in_features, m.out_features, has_bias)} but layer {l} of "
                                 f"the derivation is {_describe_linear(n_in, n_out, net.bias)}; {fix}")
            if id(m) in seen:
                raise ValueError(f"modules {seen[id(m)]!r} and {key!r} of the model are the same nn.Linear "
                                 "instance (shared layer): its parameters enter two layers, which the derivation "
                                 "(one independent parameter per entry) does not model; use separate layers")
            seen[id(m)] = key
        else:
            act = net.activations[i // 2]
            ref = act.torch_module()
            if not _same_activation(m, ref):
                got = f"{type(m).__name__}({m.extra_repr()})"
                raise ValueError(f"module {key!r} of the model is {got} but the derivation's activation {i // 2 + 1} "
                                 f"is {act.name} = {type(ref).__name__}({ref.extra_repr()}); {fix}")
    expected: dict[str, tuple[int, ...]] = {}
    for l in range(1, net.L + 1):
        n_in, n_out = net.widths[l - 1], net.widths[l]
        expected[f"{2 * (l - 1)}.weight"] = (n_out, n_in)
        if net.bias:
            expected[f"{2 * (l - 1)}.bias"] = (n_out,)
    params = list(model.named_parameters(remove_duplicate=False))
    by_id: dict[int, str] = {}
    for name, t in params:
        if name not in expected:
            raise ValueError(f"the model has a parameter {name!r} that the derivation does not have "
                             f"(its parameters: {', '.join(expected)}); {fix}")
        if tuple(t.shape) != expected[name]:
            raise ValueError(f"parameter {name!r} has shape {tuple(t.shape)} but the derivation's has "
                             f"{expected[name]}; {fix}")
        if id(t) in by_id:
            raise ValueError(f"parameters {by_id[id(t)]!r} and {name!r} of the model are the same tensor "
                             "(tied weights): the derivation treats them as independent parameters; untie them "
                             "or derive for a network with tied parameters by hand")
        by_id[id(t)] = name
        if not t.is_floating_point():
            raise TypeError(f"parameter {name!r} has dtype {t.dtype}; expected a floating-point tensor")
        if not bool(torch.isfinite(t.detach()).all()):
            raise ValueError(f"parameter {name!r} contains non-finite values (NaN or inf)")
    missing = [n for n in expected if n not in dict(params)]
    if missing:
        raise ValueError(f"the model has no parameter(s) {missing} that the derivation needs; {fix}")


def evaluate(D, model: nn.Module, x: torch.Tensor, n_samples: int | None = None, optimised: bool = True,
             extra: bool = False) -> StatsResult:
    """See :meth:`fishersym.symbolic.derive.Derivation.evaluate`.  The model must compute
    exactly the derivation's network (:func:`check_architecture`), and x must be finite."""
    net, fam = D.network, D.family
    check_architecture(net, model)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (batch, {net.widths[0]}), got {type(x).__name__}")
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2 or x.shape[-1] != net.widths[0]:
        raise ValueError(f"x must have shape (batch, {net.widths[0]}), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("x has no inputs (batch size 0)")
    if x.is_complex() or not bool(torch.isfinite(x).all()):
        raise ValueError("x must be real and finite (it contains NaN, inf or complex values)")
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
    out: dict[str, dict[str, torch.Tensor]] = {k: {} for k in keys}
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
    # the C⁴ moment tensors, shared by both calls, only where the default certificates use them (not for
    # families with a Gram form, which ignore them)
    eig, certificates = certificate_policy(fam, None)
    moments = fam.moment_tensors(h) if eig and not has_gram_form(fam) else None
    consts = family_constants(fam, h, restricted=False, optimised=optimised, use_eig=eig, moments=moments)
    values: dict[str, dict[str, torch.Tensor]] = {k: out[k] for k in STAT_KEYS}
    cr = (family_constants(fam, h, restricted=True, optimised=optimised, use_eig=eig, moments=moments)
          if fam.shift_invariant else None)
    for pname in out["fisher"]:
        b = theorem41_bounds(out["u_sq"][pname], out["w_sq"][pname], consts, N)
        if cr is not None:
            b.update(theorem41_bounds(out["up_sq"][pname], out["wp_sq"][pname], cr, N, suffix="_sharp"))
        for k, v in b.items():
            values.setdefault(k, {})[pname] = v
    add_derived(values)
    members = resolve_groups(model, values["fisher"])
    groups = conditional_group_sums(values, members)
    if extra:
        for k in keys:
            if k not in values:
                values[k] = out[k]
        if not D.forms.lam_named:
            sym: dict[str, dict[str, torch.Tensor]] = {}
            for pd in pds:
                for k, e in pd.bounds.items():
                    if k.endswith("_sharp"):
                        continue
                    sym.setdefault(k, {}).setdefault(pd.entry.torch_name,
                                                     torch.zeros((B, *shapes[pd.entry.torch_name]),
                                                                 dtype=torch.float64))
                    sym[k][pd.entry.torch_name][(slice(None), *pd.entry.index)] = torch.from_numpy(np.array(ev(e)))
            for k, sv in sym.items():
                values[f"sym_{k}"] = sv
    info = {"path_reason": "symbolic: the SymPy closed forms of the derivation, compiled by lambdify and "
                           "evaluated in float64 (NumPy)",
            "h": h, "constants": consts, "constants_sharp": cr, "certificates": certificates,
            "v1_precision": "not bounded: the symbolic path evaluates SymPy's expressions, not the stable "
                            "forms whose rounding the numeric engines bound (v1_rel_error is then ε, "
                            "not a measurement); compare with fishersym.numeric.conditional_stats"}
    if extra:
        info["extra_keys"] = [k for k in values if k not in RESULT_KEYS]
    return StatsResult(values, kind="conditional", path="symbolic", n_samples=N, dtype=torch.float64,
                       cancellation=1.0, groups=groups, group_members=members, info=info)
