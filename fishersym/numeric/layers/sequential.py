"""Runner: exact u and w for every parameter of an ``nn.Sequential`` from the per-layer rules.

THEORY §7 generalised by §12.  Layers f_0 … f_{L−1} in the order the Sequential's forward calls
them (nested Sequentials expanded; a shared parameter-free instance simply runs twice), x_0 = x,
x_{l+1} = f_l(x_l), h = x_L of shape (B, C).

* Forward once, keeping each rule's cache.
* First order: G_L = I_C, G_l = jac_t_l(G_{l+1}) (B, C, *x_l-shape); u of layer l's parameters
  = param_u_l(G_{l+1}).
* Second order (exact, §12: w_{a,i} = Σ_{m,j} R^m_{a,j} (∂z^m_j/∂θ_i)²): walking down from the top,
  keep factor rows F (B, K, *x_{l+1}-shape), F[b, k] = ∂z_k/∂x_{l+1}, for the K non-linear units
  z_k met so far, and their residuals R (B, C, K), one block per non-linear layer (no
  concatenation).  At layer l: w of its parameters = Σ_blocks param_w_l(F, R); then
  F ← jac_t_l(F); then, if f_l is not piecewise linear, its units (its inputs x_l) join as a new
  block with F = identity and R = curvature_l(G_{l+1}) (units whose residual is 0 for every input
  and output are left out: they add exactly 0).  The identity rows are formed lazily: the layer
  just below may take them implicitly (``param_w_units``: Linear gives R_j·x_k², Conv one
  contraction with unfold(x)²); when formed they are shared by all inputs (a stride-0 batch
  dimension) and stay shared through layers with a constant Jacobian, so for Linear the next
  product is R^{m}(W^{m})² once for the batch, as in THEORY §7.
* When every layer above a parameter's layer is linear or piecewise linear, w ≡ 0 exactly
  (its layer is linear in it, §12); the value is a :class:`ProvedZero` carrying the reason and
  no second-order work is done for it.

Memory: first order, G_l is B × C × n_l (n_l the per-input size of x_l) and u is B × C × P_l per
parameter tensor (dense for convolutions, B × C × (n_out + n_in) factored for Linear).  Second
order, the factor rows are B × K × n_l numbers (K the number of non-linear units above layer l with
a non-zero residual, at most their total size; rows shared by the batch count once), the default
``param_w`` adds one block of at most ``W_CHUNK`` elements.  The runner computes an upper bound of
the second-order peak (every block counted as per-input) before the pass and refuses above
``max_bytes``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .base import Factored, LayerRule, ProvedZero, batch_shared, dense, rule_for

__all__ = ["ParamQuantities", "SequentialPlan", "plan_sequential", "layer_quantities", "DEFAULT_MAX_BYTES"]

#: default memory budget of the second-order pass (bytes)
DEFAULT_MAX_BYTES = 2 << 30


class ParamQuantities(NamedTuple):
    """u (B, C, *θ.shape) and w (B, C, *θ.shape) of one parameter tensor: dense tensors or
    :class:`Factored`, w a :class:`ProvedZero` when w ≡ 0 is proved from the layer types."""

    u: torch.Tensor | Factored
    w: torch.Tensor | Factored | ProvedZero | None


class SequentialPlan(NamedTuple):
    names: list[str]                       # module path of each step ("0", "3.1", …)
    modules: list[nn.Module]
    rules: list[LayerRule]
    params: list[dict[str, str]]           # per step: local parameter name → model parameter name


def _steps(seq: nn.Sequential, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The modules in the order ``seq.forward`` calls them (``_modules`` keeps a shared instance
    under each of its names; ``named_children`` would drop the repeats)."""
    out = []
    for name, m in seq._modules.items():
        if m is None:
            continue
        if type(m) is nn.Sequential:
            out.extend(_steps(m, f"{prefix}{name}."))
        else:
            out.append((f"{prefix}{name}", m))
    return out


def plan_sequential(model: nn.Module) -> tuple[SequentialPlan | None, str]:
    """Decompose ``model`` into supported layers; (None, reason) when it cannot be."""
    if type(model) is not nn.Sequential:
        return None, f"the model is a {type(model).__name__}, not an nn.Sequential"
    steps = _steps(model)
    if not steps:
        return None, "the nn.Sequential is empty"
    pname = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    seen: dict[int, str] = {}
    names, modules, rules, params = [], [], [], []
    for name, m in steps:
        rule, why = rule_for(m)
        if rule is None:
            return None, f"module {name!r}: {why}"
        if not rule.linear_in_params and any(True for _ in m.parameters(recurse=False)):
            return None, f"module {name!r} ({type(m).__name__}) is not linear in its parameters"
        local = {}
        for ln, p in m.named_parameters(recurse=False):
            if id(p) in seen:
                return None, (f"parameter {ln!r} of module {name!r} is also used at {seen[id(p)]!r} (tied or "
                              "shared parameters): ∂²h/∂θ² then has cross terms the per-layer rules do not form")
            seen[id(p)] = f"{name}.{ln}"
            local[ln] = pname.get(id(p), f"{name}.{ln}")
        names.append(name)
        modules.append(m)
        rules.append(rule)
        params.append(local)
    for n, p in model.named_parameters():
        if id(p) not in seen:
            return None, f"parameter {n!r} is not used by any layer the forward pass calls"
    return SequentialPlan(names, modules, rules, params), ""


def _zero_reason(plan: SequentialPlan, l: int) -> str:
    above = list(dict.fromkeys(type(m).__name__ for m in plan.modules[l + 1:]))
    own = type(plan.modules[l]).__name__
    if not above:
        return f"w ≡ 0: h is the output of this {own} layer, which is linear in its parameters (THEORY §12)"
    return (f"w ≡ 0: the {own} layer is linear in the parameter and only linear or piecewise-linear layers "
            f"({', '.join(above)}) lie between it and h (THEORY §12)")


def layer_quantities(model: nn.Module, x: torch.Tensor, *, second_order: bool = True,
                     max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[torch.Tensor, dict[str, ParamQuantities]]:
    """(h, {parameter name: (u, w)}) for a batch x, exact, from the per-layer rules (THEORY §7, §12).

    h = model(x) must have shape (B, C).  u and w have shape (B, C, *θ.shape) each (dense tensors,
    :class:`Factored`, or :class:`ProvedZero`; see :class:`ParamQuantities`); with
    ``second_order=False`` w is not computed (None) unless proved 0.
    Raises ValueError when the model is not supported (the reason names the module) or when the
    second-order pass would need more than ``max_bytes``."""
    plan, why = plan_sequential(model)
    if plan is None:
        raise ValueError(f"the per-layer engine cannot handle this model: {why}")
    with torch.no_grad():
        return _run(plan, x, second_order, max_bytes)


def _run(plan: SequentialPlan, x: torch.Tensor, second_order: bool, max_bytes: int):
    mods, rules = plan.modules, plan.rules
    L = len(mods)
    xs, caches = [x], []
    for m, r in zip(mods, rules):
        y, cache = r.forward(m, xs[-1])
        xs.append(y)
        caches.append(cache)
    h = xs[-1]
    if h.dim() != 2:
        raise ValueError(f"the model's output must have shape (batch, C); got {tuple(h.shape)}")
    B, C = h.shape
    out: dict[str, ParamQuantities] = {}
    # first order: G_{l+1} = ∂h/∂x_{l+1}
    G_above: list[torch.Tensor] = [None] * L  # type: ignore[list-item]
    G = torch.eye(C, dtype=h.dtype, device=h.device).expand(B, C, C).contiguous()
    lowest = min((l for l in range(L) if plan.params[l]), default=None)
    us: dict[int, dict[str, torch.Tensor | Factored]] = {}
    for l in range(L - 1, -1, -1):
        G_above[l] = G
        if plan.params[l]:
            us[l] = rules[l].param_u(mods[l], caches[l], G)
        if lowest is None or l == lowest:
            break
        G = rules[l].jac_t(mods[l], caches[l], G)
    # structural zeros: layers l whose every layer above is piecewise linear
    curved_above = [False] * L
    acc = False
    for l in range(L - 1, -1, -1):
        curved_above[l] = acc
        acc = acc or not rules[l].piecewise_linear
    ws: dict[int, dict[str, torch.Tensor | Factored | ProvedZero | None]] = {}
    need = [l for l in us if curved_above[l]]
    for l in us:
        if not curved_above[l]:
            reason = _zero_reason(plan, l)
            ws[l] = {ln: ProvedZero((B, C) + tuple(p.shape), reason, h.dtype, h.device)
                     for ln, p in mods[l].named_parameters(recurse=False)}
        elif not second_order:
            ws[l] = {ln: None for ln in us[l]}
    if need and second_order:
        lo = min(need)
        _check_budget(plan, xs, lo, B, C, h.element_size(), max_bytes)
        # blocks [F, R]: F (B, K_m, *x_{l+1}-shape) rows, or None for the identity on x_{l+1}'s units
        # (then R is (B, C, *x_{l+1}-shape) over all of them; formed only when needed)
        blocks: list[list] = []
        for l in range(L - 1, lo - 1, -1):
            if l in need:
                parts = []
                for blk in blocks:
                    if blk[0] is None:
                        short = rules[l].param_w_units(mods[l], caches[l], blk[1])
                        if short is not None:
                            parts.append(short)
                            continue
                        _form_identity(blk, B, C)
                    parts.append(rules[l].param_w(mods[l], caches[l], blk[0], blk[1]))
                ws[l] = _sum_w(parts, mods[l], B, C, h)
            if l == lo:
                break
            for blk in blocks:
                if blk[0] is None:
                    _form_identity(blk, B, C)
                blk[0] = _jac_t(rules[l], mods[l], caches[l], blk[0], B)
            if not rules[l].piecewise_linear:
                Rl = rules[l].curvature(mods[l], caches[l], G_above[l])
                if Rl is not None and bool((Rl != 0).any()):
                    blocks.append([None, Rl])
    names = plan.params
    for l, ud in us.items():
        for ln, u in ud.items():
            out[names[l][ln]] = ParamQuantities(u, ws[l][ln])
    return h, out


def _form_identity(blk: list, B: int, C: int) -> None:
    """Replace a lazy identity block [None, R (B, C, *shape)] by explicit rows: the identity on the
    units whose residual is non-zero for some input and output (the others add exactly 0), shared
    by all inputs (stride-0 batch dimension)."""
    R = blk[1]
    shape = tuple(R.shape[2:])
    Rf = R.reshape(B, C, -1)
    n = Rf.shape[-1]
    keep = (Rf != 0).any(0).any(0).nonzero().squeeze(1)
    eye = torch.zeros(keep.numel(), n, dtype=R.dtype, device=R.device)
    eye[torch.arange(keep.numel(), device=R.device), keep] = 1
    blk[0] = eye.reshape((1, keep.numel()) + shape).expand((B, keep.numel()) + shape)
    blk[1] = Rf[:, :, keep] if keep.numel() < n else Rf


def _jac_t(rule: LayerRule, module: nn.Module, cache, F: torch.Tensor, B: int) -> torch.Tensor:
    """jac_t of the rows F; rows shared by all inputs stay shared through a constant Jacobian."""
    if rule.jacobian_constant and batch_shared(F):
        out = rule.jac_t(module, cache, F[:1])
        return out.expand((B,) + tuple(out.shape[1:]))
    return rule.jac_t(module, cache, F)


def _sum_w(parts: list[dict], module: nn.Module, B: int, C: int, h: torch.Tensor) -> dict:
    """Σ over blocks of param_w; factored values with the same input factor and power stay factored."""
    out: dict = {}
    for d in parts:
        for n, v in d.items():
            if n not in out:
                out[n] = v
            elif (isinstance(v, Factored) and isinstance(out[n], Factored) and v.a is out[n].a
                  and v.p == out[n].p):
                out[n] = Factored(out[n].f + v.f, v.a, v.p)
            else:
                out[n] = dense(out[n]) + dense(v)
    if not out:       # no block (every residual above was 0 on this batch): exact zeros, not a proof
        out = {ln: torch.zeros((B, C) + tuple(p.shape), dtype=h.dtype, device=h.device)
               for ln, p in module.named_parameters(recurse=False)}
    return out


def _check_budget(plan: SequentialPlan, xs: list[torch.Tensor], lo: int, B: int, C: int, itemsize: int,
                  max_bytes: int) -> None:
    """Upper bound of the second-order peak: F before and after jac_t (B·K·(n_{l+1} + n_l)) plus R
    (B·C·K), K the total size of the non-linear layers' inputs above (no row dropped, none shared)."""
    K, peak = 0, 0
    for l in range(len(plan.modules) - 1, lo - 1, -1):
        n_out, n_in = xs[l + 1][0].numel(), xs[l][0].numel()
        peak = max(peak, B * K * (n_out + n_in) + B * C * K)
        if not plan.rules[l].piecewise_linear:
            K += n_in
            peak = max(peak, B * K * n_in + B * C * K)
    est = peak * itemsize
    if est > max_bytes:
        raise ValueError(
            f"the exact second-order pass needs about {est / 2**30:.2f} GiB (factor rows B × K × layer size with "
            f"B = {B}, K = {K} non-linear units above the lowest parameter), above max_bytes = "
            f"{max_bytes / 2**30:.2f} GiB; options: fewer inputs per call, second_order=False (u only), "
            "exact values on a sample of entries, or a larger max_bytes")
