"""Fast exact path for multilayer perceptrons: the factored algorithm of THEORY.md §7.

Layers z^l = W^l a^{l−1} + b^l, a^l = σ_l(z^l) (σ_l the composition of the
elementwise modules after Linear l), h = g(z^L) with g the composition of the
modules after the last Linear and the family's elementwise link.  With
G^l = ∂h/∂z^l (C × n_l) and D^l the C × n_l matrix of ∂²h_a/∂(z^l_j)²:

    G^L = diag(g'(z^L)),   G^l = G^{l+1} W^{l+1} diag(σ'_l(z^l)),
    R^L = diag(g''(z^L)),  R^l = G^{l+1} W^{l+1} diag(σ''_l(z^l)),
    D^l = Σ_{m=l}^{L} R^m (J^{m←l} ∘ J^{m←l}),   J^{m←l} = ∂z^m/∂z^l,

and for the weight W^l_{jk} and bias b^l_j

    u = G^l[:, j] a^{l−1}_k,   w = D^l[:, j] (a^{l−1}_k)²,   u_b = G^l[:, j],   w_b = D^l[:, j].

Every per-weight quantity is therefore f(j)·(a_k)^power (a :class:`Part`):
the C × P Jacobian is never formed and batch sums are one matrix product per
layer.  Layers whose σ'' ≡ 0 (ReLU, leaky ReLU, Hardtanh, identity) contribute
no R^m and are skipped (THEORY §6 item 3).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from ..families.base import ExponentialFamily
from .activations import SUPPORTED, compose, derivs
from .core import EngineOutput, base_quantities, prob_negative
from .parts import Part

__all__ = ["MLPPlan", "plan_mlp", "mlp_engine"]


@dataclass
class MLPPlan:
    pre: list[nn.Module]                      # parameter-free modules before the first Linear
    linears: list[tuple[str, nn.Linear]]      # (module name, layer)
    acts: list[list[nn.Module]]               # elementwise modules after each Linear


def _flatten_seq(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The modules in the order ``nn.Sequential.forward`` calls them, repeats included (a module
    registered twice is called twice; ``named_children`` would list it once: issue 13 item 1)."""
    out = []
    for name, m in model._modules.items():
        full = f"{prefix}{name}"
        if type(m) is nn.Sequential:
            out.extend(_flatten_seq(m, full + "."))
        else:
            out.append((full, m))
    return out


#: the ``forward`` of every class the planner accepts, captured at import: a class patched later
#: no longer computes what the plan analyses
_FORWARD = {cls: cls.forward for cls in (nn.Sequential, nn.Linear, nn.Flatten, *SUPPORTED)}


def _global_hooks() -> str:
    """Name of the first global forward (pre-)hook registry that is not empty, else ''."""
    from torch.nn.modules import module as _mm
    for attr in ("_global_forward_pre_hooks", "_global_forward_hooks", "_global_forward_hooks_always_called"):
        if getattr(_mm, attr, None):
            return attr
    return ""


def _exact_module(name: str, m: nn.Module) -> str:
    """Why module ``m`` may compute something other than its class's plain forward, or ''."""
    from torch.nn.utils import parametrize
    label = f"module {name!r} ({type(m).__name__})"
    if parametrize.is_parametrized(m):
        return f"{label} is parametrized (torch.nn.utils.parametrize)"
    for attr in ("_forward_pre_hooks", "_forward_hooks"):
        if getattr(m, attr, None):
            return f"{label} has a forward {'pre-' if 'pre' in attr else ''}hook, which the fast path cannot see" + (
                " (old-style weight_norm and prune use one)" if "pre" in attr else "")
    if "forward" in vars(m) or "__call__" in vars(m):
        return f"{label} has its forward replaced on the instance"
    if type(m) in _FORWARD and _FORWARD[type(m)] is not type(m).forward:
        return f"{label}: {type(m).__name__}.forward was replaced after fishersym was imported"
    return ""


def plan_mlp(model: nn.Module, family: ExponentialFamily) -> tuple[MLPPlan | None, str]:
    """Decompose ``model`` for the fast path; (None, reason) when it is not supported.

    The fast path takes a model only when the plan provably is what ``model(x)`` computes
    (issue 13 items 1, 19): an exact ``nn.Sequential`` (no subclass) of exact ``nn.Linear``
    layers and supported elementwise modules, walked in call order (a shared activation
    instance is applied at each place), with no forward hooks or pre-hooks (per module or
    global), no parametrizations, no old-style ``weight_norm``/``prune`` (parameters other than
    a Linear's ``weight``/``bias``, or a weight that is not a registered Parameter), no Linear
    used twice and no Parameter shared by two Linears.  Anything else: (None, why)."""
    if type(model) is not nn.Sequential:
        return None, f"the model is a {type(model).__name__}, not an nn.Sequential"
    if not family.link.elementwise:
        return None, f"the link {family.link.name!r} mixes outputs (not elementwise)"
    g = _global_hooks()
    if g:
        return None, f"a global forward hook is registered (torch.nn.modules.module.{g}), which the fast path cannot see"
    for name, m in model.named_modules(remove_duplicate=False):
        why = _exact_module(name or "<model>", m)
        if why:
            return None, why
    pre: list[nn.Module] = []
    linears: list[tuple[str, nn.Linear]] = []
    acts: list[list[nn.Module]] = []
    seen_lin: dict[int, str] = {}
    for name, m in _flatten_seq(model):
        if type(m) is nn.Linear:
            if id(m) in seen_lin:
                return None, (f"the Linear module {seen_lin[id(m)]!r} is applied twice (also as {name!r}); "
                              "the fast path needs a separate layer per use")
            seen_lin[id(m)] = name
            why = _plain_linear(name, m)
            if why:
                return None, why
            linears.append((name, m))
            acts.append([])
        elif type(m) in SUPPORTED:
            if isinstance(m, nn.Dropout) and m.training and m.p > 0:
                return None, f"module {name!r} is Dropout in training mode"
            if m._parameters or m._buffers:
                return None, f"module {name!r} ({type(m).__name__}) holds parameters or buffers"
            (acts[-1] if linears else pre).append(m)
        elif type(m) is nn.Flatten and not linears:
            pre.append(m)
        else:
            where = "after the first Linear" if type(m) is nn.Flatten else ""
            return None, f"module {name!r} ({type(m).__name__}) is not supported by the fast path {where}".rstrip()
    if not linears:
        return None, "the model has no Linear layer"
    owner: dict[int, str] = {}
    for lname, lin in linears:
        for p in (lin.weight, lin.bias):
            if p is None:
                continue
            if id(p) in owner:
                return None, (f"the Linear layers {owner[id(p)]!r} and {lname!r} share (tie) a parameter; "
                              "the fast path needs independent layers")
            owner[id(p)] = lname
    for pname, p in model.named_parameters(remove_duplicate=False):
        if id(p) not in owner:
            return None, f"parameter {pname!r} does not belong to a Linear layer"
    return MLPPlan(pre, linears, acts), ""


def _plain_linear(name: str, lin: nn.Linear) -> str:
    """'' when ``lin`` computes F.linear(x, lin.weight, lin.bias) with registered Parameters only."""
    keys = set(lin._parameters)
    extra = keys - {"weight", "bias"}
    if extra:
        return (f"Linear {name!r} has parameters {sorted(extra)} (old-style weight_norm or prune?): "
                "its weight is computed in forward, which the fast path does not analyse")
    if not isinstance(lin._parameters.get("weight"), nn.Parameter):
        return f"Linear {name!r} has no registered weight Parameter (its weight is computed elsewhere)"
    b = lin._parameters.get("bias")
    if b is not None and not isinstance(b, nn.Parameter):
        return f"Linear {name!r} has a bias that is not a Parameter"
    if lin._buffers:
        return f"Linear {name!r} holds buffers {sorted(lin._buffers)} (prune's weight_mask?)"
    if "weight" in vars(lin) or "bias" in vars(lin):
        return f"Linear {name!r} has a plain weight/bias attribute shadowing its Parameter"
    return ""


def _block(mods: list[nn.Module], link=None) -> list:
    fns = [partial(derivs, m) for m in mods]
    if link is not None:
        fns.append(lambda z: (link(z), link.g1(z), link.g2(z)))
    return fns


def mlp_engine(model: nn.Module, x: torch.Tensor, family: ExponentialFamily, plan: MLPPlan,
               params: dict[str, torch.Tensor], *, grams: bool = False,
               pneg_samples: int | None = None) -> EngineOutput:
    """Exact per-input base quantities for every parameter, factored (THEORY §7)."""
    with torch.no_grad():
        return _run(model, x, family, plan, params, grams, pneg_samples)


def _compose(mods: list[nn.Module], z: torch.Tensor, link=None) -> tuple:
    """:func:`compose` of the modules (and link); one module is returned as is (same values:
    compose's first step is s2·1·1 + s1·0 = s2, s1·1 = s1)."""
    if link is None and len(mods) == 1:
        return derivs(mods[0], z)
    return compose(_block(mods, link), z)


def _run(model, x, family, plan, params, grams, pneg_samples) -> EngineOutput:
    a = x
    for m in plan.pre:
        a = m(a)
    if a.dim() != 2:
        raise ValueError(f"the input to the first Linear must be (batch, features); got shape {tuple(a.shape)} "
                         "(add nn.Flatten() before the first Linear)")
    L = len(plan.linears)
    a_in, d1s, d2s, curved = [], [], [], []
    for l, (_, lin) in enumerate(plan.linears):
        a_in.append(a)
        z = torch.nn.functional.linear(a, lin.weight, lin.bias)
        mods = plan.acts[l]
        if l < L - 1:
            a, d1, d2 = _compose(mods, z)
        else:
            o = _compose(mods, z)[0] if mods else z
            h = family.natural(o)
            _, d1, d2 = _compose(mods, z, family.link)
        curved.append(bool((d2 != 0).any()))  # R^l ≡ 0 on this batch otherwise
        d1s.append(d1)
        d2s.append(d2)
    B, C = h.shape
    W = [lin.weight for _, lin in plan.linears]
    # backward for G^l and R^l (THEORY §7), all (B, C, n_l); G^L, R^L are diagonal, so
    # G^L W^L is a row scaling (the same sums: the off-diagonal terms are exact zeros)
    G: list[torch.Tensor] = [None] * L  # type: ignore[list-item]
    R: list[torch.Tensor | None] = [None] * L
    G[L - 1] = torch.diag_embed(d1s[L - 1])
    R[L - 1] = torch.diag_embed(d2s[L - 1]) if curved[L - 1] else None
    for l in range(L - 2, -1, -1):
        if l == L - 2:
            P = d1s[L - 1].unsqueeze(-1) * W[L - 1]          # ∂h/∂a^l, (B, C, n_l)
        else:
            P = G[l + 1] @ W[l + 1]
        G[l] = P * d1s[l].unsqueeze(1)
        R[l] = P * d2s[l].unsqueeze(1) if curved[l] else None
    D = _second_derivatives(W, R, d1s, B, C)
    parts: dict[str, dict[str, Part]] = {}
    gram_out = {} if grams else None
    pneg = {} if pneg_samples else None
    names = {id(p): n for n, p in model.named_parameters()}
    for l, (_, lin) in enumerate(plan.linears):
        Gc = G[l].transpose(1, 2)                    # (B, n_l, C): u of the biases
        Dc = None if D[l] is None else D[l].transpose(1, 2)
        base = base_quantities(family, h, G[l], D[l], cdim=1)
        pn = prob_negative(family, h, base["fisher"], Dc, pneg_samples) if pneg is not None else None
        if pn is None:
            pneg = None
        wname, bname = names.get(id(lin.weight)), names.get(id(lin.bias)) if lin.bias is not None else None
        aa = a_in[l]
        if wname in params:
            parts[wname] = {k: Part(v, aa, _power(k)) for k, v in base.items()}
            if pneg is not None:
                pneg[wname] = Part(pn, (aa != 0).to(aa.dtype), 1)
        if bname in params:
            parts[bname] = {k: Part(v) for k, v in base.items()}
            if pneg is not None:
                pneg[bname] = Part(pn)
        if grams:
            gg = G[l] @ G[l].transpose(1, 2)
            vv = (Gc.unsqueeze(-1) * Gc.unsqueeze(-2)).reshape(B, -1, C * C)
            uu = vv.transpose(1, 2) @ vv
            ww = h.new_zeros(B, C, C) if D[l] is None else D[l] @ D[l].transpose(1, 2)
            s2, s4 = (aa * aa).sum(1)[:, None, None], (aa ** 4).sum(1)[:, None, None]
            if wname in params:
                gram_out[wname] = {"JJ": gg * s2, "UU": uu * s4, "WW": ww * s4}
            if bname in params:
                gram_out[bname] = {"JJ": gg, "UU": uu, "WW": ww}
    layer_of = {}
    for l, (_, lin) in enumerate(plan.linears):
        layer_of[names.get(id(lin.weight))] = (l, "weight")
        if lin.bias is not None:
            layer_of[names.get(id(lin.bias))] = (l, "bias")
    return EngineOutput(h=h, parts=parts, path="fast", grams=gram_out, pneg=pneg,
                        info={"G": G, "D": D, "a_in": a_in, "layer_of": layer_of})


#: largest number of elements of one temporary K^{m←l} block (the batch is chunked to stay below)
_K_BLOCK = 1 << 20


def _second_derivatives(W: list[torch.Tensor], R: list[torch.Tensor | None], d1s: list[torch.Tensor],
                        B: int, C: int) -> list[torch.Tensor | None]:
    """D^l = Σ_{m ≥ l} R^m (J^{m←l} ∘ J^{m←l}) for every layer, (B, C, n_l) or None when ≡ 0.

    Write J^{m←l} = K^{m←l} diag(σ'_l) with K^{m←l} = J^{m←l+1} W^{l+1}; then
    R^m (J^{m←l})² = (R^m (K^{m←l})²) diag(σ'_l²), so the column scaling is done once per layer:

    * m = l+1: K = W^{l+1} is shared by all inputs: one plain product R^{l+1} (W^{l+1})²;
    * m = l+2: K_b = W^{l+2} diag(σ'_{l+1,b}) W^{l+1} = Σ_k σ'_{l+1,b,k} W^{l+2}[:,k] W^{l+1}[k,:], so all
      inputs' K are one product σ'_{l+1} · O with O the n_{l+1} outer products (when n_{l+1} ≤ B,
      O is no larger than K itself);
    * m ≥ l+3: K_b = J^{m←l+1}_b W^{l+1}, one plain product over all inputs and rows.

    K is squared in place and contracted with R^m in batch chunks of at most ``_K_BLOCK`` elements.
    """
    L = len(W)
    D: list[torch.Tensor | None] = [None] * L
    D[L - 1] = R[L - 1]
    Js: dict[int, torch.Tensor] = {}                        # m → J^{m←l+1} for m ≥ l+3, (B, n_m, n_{l+1})
    for l in range(L - 2, -1, -1):
        Wn = W[l + 1]
        n_l = Wn.shape[1]
        acc = None
        if R[l + 1] is not None:
            acc = (R[l + 1].reshape(B * C, -1) @ (Wn * Wn)).view(B, C, n_l)
        deeper = [m for m in range(l + 2, L) if R[m] is not None]
        new_Js: dict[int, torch.Tensor] = {}
        for m in deeper:
            n_m = W[m].shape[0]
            keep = l > 0                                    # J^{m←l} is needed one layer down
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
        if l > 0 and R[l + 1] is not None and n_l > B:     # J^{l+1←l}, (B, n_{l+1}, n_l), for m = l+1
            new_Js[l + 1] = Wn * d1s[l].unsqueeze(1)        # one layer down when O is not used there
        Js = new_Js
        if acc is not None:
            s = d1s[l]
            acc.mul_((s * s).unsqueeze(1))
        D[l] = acc if R[l] is None else (R[l] if acc is None else acc.add_(R[l]))
    return D


def _power(key: str) -> int:
    from .core import BASE_POWER
    return BASE_POWER[key]
