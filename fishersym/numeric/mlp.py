"""Fast exact path for multilayer perceptrons: the factored algorithm of THEORY §7.

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

Cost in depth (issue 12): D^l comes from one backward sweep (:func:`_second_derivatives`)
whose state is either the stacked factor rows [J^{m←l+1} W^{l+1}]_{m>l} (K_l rows, shared by
the C outputs; K_l grows by one layer width per curved layer above, so O(L²·n³) per input) or
the C Hessians ∂²h_a/∂z^l∂z^l (O(L·C·n³) per input); the sweep starts with factor rows and
switches to Hessians at the layer that minimises the operation count, so the cost is
O(L·min(L, C)·n³): linear in depth L once L exceeds a few C (width 128: the switch pays from
7 layers for C = 1, 11 for C = 2, 38 for C = 10).  Why not O(L·n³) for every C (an argument,
not a lower-bound proof): the squares do not chain, (J W) ∘ (J W) ≠ (J ∘ J)(W ∘ W), so the
squared Jacobians cannot be propagated on their own; everything below layer l depends on the
curvature above it only through the C quadratic forms ∂²h_a/∂z^l∂z^l, so a sweep carries either
those (C·n² numbers) or rows that rebuild them (K_l·n numbers), and moving either through a
layer multiplies that many numbers by an n × n matrix.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from ..families.base import ExponentialFamily
from .activations import SUPPORTED, compose, derivs
from .core import BASE_KEYS, EngineOutput, base_quantities, prob_negative
from .parts import Part

__all__ = ["MLPPlan", "plan_mlp", "mlp_engine"]


@dataclass
class MLPPlan:
    """An MLP for THEORY §7's recursion: the modules before its first Linear, the Linears, their activations."""
    pre: list[nn.Module]                      # parameter-free modules before the first Linear
    linears: list[tuple[str, nn.Linear]]      # (module name, layer)
    acts: list[list[nn.Module]]               # elementwise modules after each Linear


def _flatten_seq(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module | None]]:
    """The modules in the order ``nn.Sequential.forward`` calls them, repeats included (a module
    registered twice is called twice; ``named_children`` would list it once: issue 13 item 1)."""
    out: list[tuple[str, nn.Module | None]] = []
    for name, m in model._modules.items():
        full = f"{prefix}{name}"
        if type(m) is nn.Sequential:
            out.extend(_flatten_seq(m, full + "."))
        else:
            out.append((full, m))
    return out


#: the ``forward`` of every class the planner accepts, captured at import: a class patched later
#: no longer computes what the plan analyses
_ACCEPTED: tuple[type[nn.Module], ...] = (nn.Sequential, nn.Linear, nn.Flatten, *SUPPORTED)
_FORWARD = {cls: cls.forward for cls in _ACCEPTED}


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
        return None, (f"a global forward hook is registered (torch.nn.modules.module.{g}), "
                      "which the fast path cannot see")
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
        elif m is not None and type(m) in SUPPORTED:
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
    fns: list[Callable[[torch.Tensor], tuple]] = [partial(derivs, m) for m in mods]
    if link is not None:
        fns.append(lambda z: (link(z), link.g1(z), link.g2(z)))
    return fns


def mlp_engine(model: nn.Module, x: torch.Tensor, family: ExponentialFamily, plan: MLPPlan,
               params: dict[str, torch.Tensor], *, grams: bool = False,
               pneg_samples: int | None = None, base_keys=None) -> EngineOutput:
    """Exact per-input base quantities for every parameter, factored (THEORY §7); ``base_keys`` (a
    subset of :data:`.core.BASE_KEYS`, default all) restricts the work to those keys."""
    with torch.no_grad():
        return _run(model, x, family, plan, params, grams, pneg_samples, base_keys)


def _compose(mods: list[nn.Module], z: torch.Tensor, link=None) -> tuple:
    """:func:`compose` of the modules (and link); one module is returned as is (same values:
    compose's first step is s2·1·1 + s1·0 = s2, s1·1 = s1)."""
    if link is None and len(mods) == 1:
        return derivs(mods[0], z)
    return compose(_block(mods, link), z)


def _axis_base(family: ExponentialFamily, h: torch.Tensor, s: torch.Tensor, t: torch.Tensor | None,
               keys) -> dict[str, torch.Tensor]:
    """:func:`.core.base_quantities` of the last layer, whose u = s_c·e_c and w = t_c·e_c are axis
    directions (G^L = diag(s), D^L = diag(t)), in O(C) per input by the family's ``axis_forms``
    (no (B, C, C) matrix: the memory of a 1,000-class output stays O(C) per input).  For u = s·e_c:
    ‖u‖² = s², and its projection onto 𝟙^⊥ has ‖u − ū𝟙‖² = s²(1 − 1/C) (THEORY §5 [beyond])."""
    # only families that define axis_forms (the softmax) get here: mlp_engine checks callable(family.axis_forms)
    axis_forms = family.axis_forms  # type: ignore[attr-defined]
    want = set(BASE_KEYS) if keys is None else set(keys) | {"fisher"}
    moments = bool(want & {"nv1", "nv1_err"})
    if moments:
        fi, nv1, err = axis_forms(h, s, error=True)
        out = {"fisher": fi, "nv1": nv1, "nv1_err": err}
    else:
        out = {"fisher": axis_forms(h, s)[0]}
    C = h.shape[-1]
    if "u2" in want or "u2s" in want:
        u2 = s * s
        if "u2" in want:
            out["u2"] = u2
        if family.shift_invariant and "u2s" in want:
            out["u2s"] = u2 * (1 - 1 / C)
    if t is None:
        for k in ("nv2", "w2"):
            if k in want:
                out[k] = torch.zeros_like(out["fisher"])
        if family.shift_invariant and "w2s" in want:
            out["w2s"] = torch.zeros_like(out["fisher"])
    else:
        if "nv2" in want:
            out["nv2"] = axis_forms(h, t)[0]
        w2 = t * t
        if "w2" in want:
            out["w2"] = w2
        if family.shift_invariant and "w2s" in want:
            out["w2s"] = w2 * (1 - 1 / C)
    return out


def _run(model, x, family, plan, params, grams, pneg_samples, base_keys=None) -> EngineOutput:
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
    G: list[torch.Tensor | None] = [None] * L
    R: list[torch.Tensor | None] = [None] * L
    # the last layer by its diagonal alone when the family has O(C) axis forms (the softmax): a
    # (B, C, C) G^L is 1 GiB in float32 at C = 1,000, B = 256 (it is formed for Gram matrices or
    # P(Î₂ < 0) only, which need it)
    axis = callable(getattr(family, "axis_forms", None)) and not grams and not pneg_samples
    G[L - 1] = None if axis else torch.diag_embed(d1s[L - 1])
    R[L - 1] = torch.diag_embed(d2s[L - 1]) if curved[L - 1] else None
    for l in range(L - 2, -1, -1):
        if l == L - 2:
            P = d1s[L - 1].unsqueeze(-1) * W[L - 1]          # ∂h/∂a^l, (B, C, n_l)
        else:
            G1 = G[l + 1]
            assert G1 is not None                            # only G^L may be left out (axis forms)
            P = G1 @ W[l + 1]
        G[l] = P * d1s[l].unsqueeze(1)
        R[l] = P * d2s[l].unsqueeze(1) if curved[l] else None
    D = _second_derivatives(W, R, d1s, B, C)
    parts: dict[str, dict[str, Part]] = {}
    gram_out: dict[str, dict[str, torch.Tensor]] | None = {} if grams else None
    pneg: dict[str, Part] | None = {} if pneg_samples else None
    names = {id(p): n for n, p in model.named_parameters()}
    for l, (_, lin) in enumerate(plan.linears):
        Gl, Dl = G[l], D[l]
        Dc = None if Dl is None else Dl.transpose(1, 2)
        if Gl is None:                               # the last layer, axis directions (see above)
            Gc = None
            base = _axis_base(family, h, d1s[l], None if Dl is None else torch.diagonal(Dl, dim1=1, dim2=2),
                              base_keys)
        else:
            Gc = Gl.transpose(1, 2)                  # (B, n_l, C): u of the biases
            base = base_quantities(family, h, Gl, Dl, cdim=1, keys=base_keys)
        pn = prob_negative(family, h, base["fisher"], Dc, pneg_samples) if pneg is not None else None
        if pn is None:
            pneg = None
        wname, bname = names.get(id(lin.weight)), names.get(id(lin.bias)) if lin.bias is not None else None
        aa = a_in[l]
        if wname is not None and wname in params:
            parts[wname] = {k: Part(v, aa, _power(k)) for k, v in base.items()}
            if pneg is not None and pn is not None:
                pneg[wname] = Part(pn, (aa != 0).to(aa.dtype), 1)
        if bname is not None and bname in params:
            parts[bname] = {k: Part(v) for k, v in base.items()}
            if pneg is not None and pn is not None:
                pneg[bname] = Part(pn)
        if grams:
            assert Gl is not None and Gc is not None and gram_out is not None    # no axis forms with grams
            gg = Gl @ Gl.transpose(1, 2)
            vv = (Gc.unsqueeze(-1) * Gc.unsqueeze(-2)).reshape(B, -1, C * C)
            uu = vv.transpose(1, 2) @ vv
            ww = h.new_zeros(B, C, C) if Dl is None else Dl @ Dl.transpose(1, 2)
            s2, s4 = (aa * aa).sum(1)[:, None, None], (aa ** 4).sum(1)[:, None, None]
            if wname is not None and wname in params:
                gram_out[wname] = {"JJ": gg * s2, "UU": uu * s4, "WW": ww * s4}
            if bname is not None and bname in params:
                gram_out[bname] = {"JJ": gg, "UU": uu, "WW": ww}
    layer_of = {}
    for l, (_, lin) in enumerate(plan.linears):
        layer_of[names.get(id(lin.weight))] = (l, "weight")
        if lin.bias is not None:
            layer_of[names.get(id(lin.bias))] = (l, "bias")
    return EngineOutput(h=h, parts=parts, path="fast", grams=gram_out, pneg=pneg,
                        info={"G": G, "D": D, "a_in": a_in, "layer_of": layer_of, "d1": d1s})


#: elements of the per-chunk working set of :func:`_second_derivatives` (the factor rows of a few
#: inputs: cache-sized chunks were measured faster than whole-batch passes, which are memory-bound)
_CHUNK_ELEMS = 1 << 20
#: the same on an accelerator (large chunks: few kernel launches)
_CHUNK_ELEMS_ACCEL = 1 << 25


def _second_derivatives(W: list[torch.Tensor], R: list[torch.Tensor | None], d1s: list[torch.Tensor],
                        B: int, C: int, switch: int | None = None) -> list[torch.Tensor | None]:
    """D^l = Σ_{m ≥ l} R^m (J^{m←l} ∘ J^{m←l}) for every layer, (B, C, n_l) or None when ≡ 0 (THEORY §7).

    One backward sweep per chunk of inputs, carrying either of two exact states:

    * **factor rows** (layers l > ``switch``): U^l = [J^{m←l+1} W^{l+1}]_{m > l, R^m ≠ 0} stacked
      (K_l × n_l, shared by the C outputs: BackPACK's DiagHessian form), U^{l−1} = [U^l diag(σ'_l) W^l ;
      W^l] and D^l = R^l + σ'_l² ∘ (R̄^l (U^l ∘ U^l)), R̄^l = [R^m]_m (C × K_l).  Cost per input
      K_{l+1}·n_{l+1}·n_l: K grows by a layer width per curved layer, so this is O(L²·n³) in depth L.
    * **Hessians** (layers l ≤ ``switch``): P^l_a = ∂²h_a/∂z^l∂z^l (C × n_l × n_l),
      P^l = (σ'_l σ'_lᵀ) ∘ (W^{l+1}ᵀ P^{l+1} W^{l+1}) + diag(R^l) and D^l = diag(P^l), entered at
      l = s = ``switch`` from the factor rows by P^s_a = (σ'_s σ'_sᵀ) ∘ (U^sᵀ diag(R̄^s_a) U^s) + diag(R^s_a).
      Cost per input C·n_{l+1}·n_l·(n_{l+1} + n_l): O(L·C·n³) in depth.

    Both states give D^l exactly (the same sums in another order).  ``switch`` (default: the layer
    :func:`_switch_layer` finds cheapest by operation count; −1: factor rows throughout) makes the
    total O(L·min(L, C)·n³) per input: linear in depth once L exceeds a few C.
    """
    L = len(W)
    D: list[torch.Tensor | None] = [None] * L
    D[L - 1] = R[L - 1]
    if L == 1:
        return D
    n = [w.shape[0] for w in W]                             # n[l] = width of z^l
    curved = [r is not None for r in R]
    K = [0] * L                                             # K[l] = rows of U^l
    for l in range(L - 2, -1, -1):
        K[l] = K[l + 1] + (n[l + 1] if curved[l + 1] else 0)
    s = _switch_layer(n, K, C) if switch is None else switch
    if s >= 0 and not K[s]:
        raise ValueError(f"switch layer {s} has no curvature above it")
    dev, dt = W[0].device, W[0].dtype
    for l in range(L - 2, s, -1):                           # factor layers: the m = l+1 block, W^{l+1}
        R1 = R[l + 1]
        if R1 is not None:                                  # curved: shared by all inputs, one plain product
            D[l] = (R1.reshape(B * C, -1) @ (W[l + 1] * W[l + 1])).view(B, C, n[l])
        elif K[l + 1]:
            D[l] = torch.zeros(B, C, n[l], dtype=dt, device=dev)
    for l in range(s + 1):
        D[l] = torch.empty(B, C, n[l], dtype=dt, device=dev)
    if s >= 0 or any(K[l + 1] for l in range(s + 1, L - 1)):
        Rbar = torch.cat([Rm for m in range(L - 1, 0, -1) if (Rm := R[m]) is not None], dim=2)
        nmax = max(n[:L - 1])
        per_input = max(3 * K[max(s, 0)] * nmax, 3 * C * nmax * nmax if s >= 0 else 0)
        budget = _CHUNK_ELEMS if dev.type == "cpu" else _CHUNK_ELEMS_ACCEL
        step = max(1, min(B, budget // per_input))
        size = step * K[max(s, 0)] * nmax                  # reused buffers: fresh ones cost page faults
        bufs = [torch.empty(size, dtype=dt, device=dev) for _ in range(3)]
        for i in range(0, B, step):
            sl = slice(i, min(i + step, B))
            _sweep(W, R, d1s, D, Rbar[sl], curved, n, K, s, sl, C, bufs)
    for l in range(L - 2, s, -1):
        Dl, Rl = D[l], R[l]
        if Dl is not None:
            g = d1s[l]
            Dl.mul_((g * g).unsqueeze(1))
            if Rl is not None:
                Dl.add_(Rl)
        else:
            D[l] = R[l]
    return D


def _sweep(W, R, d1s, D, Rbar, curved, n, K, s, sl, C, bufs) -> None:
    """The inputs ``sl`` of :func:`_second_derivatives`: for the factor layers l > s adds
    R̄ (U ∘ U) of the deeper rows to D[l][sl] (before the σ'_l² scaling); for l ≤ s writes diag(P^l).
    ``bufs``: three flat work buffers of at least (inputs)·K_max·n_max elements."""
    L = len(W)
    b = sl.stop - sl.start
    dev, dt = W[0].device, W[0].dtype
    U: torch.Tensor | None = None                           # (b, K[l], n_l): factor rows over z^l
    for l in range(L - 2, max(s, 0) - 1, -1):
        deep = K[l + 1]                                     # rows from blocks m ≥ l+2
        if not K[l]:
            continue
        bufs[0], bufs[1] = bufs[1], bufs[0]                  # U lives in bufs[0], Unew in bufs[1]
        Unew = bufs[1][:b * K[l] * n[l]].view(b, K[l], n[l])
        if deep:
            Ws = d1s[l + 1][sl].unsqueeze(-1) * W[l + 1]    # diag(σ'_{l+1}) W^{l+1}, (b, n_{l+1}, n_l)
            assert U is not None                            # deep rows come from a layer above
            torch.bmm(U, Ws, out=Unew[:, :deep])
            if l > s:
                sq = torch.mul(Unew[:, :deep], Unew[:, :deep], out=bufs[2][:b * deep * n[l]].view(b, deep, n[l]))
                D[l][sl].baddbmm_(Rbar[:, :, :deep], sq)
        if curved[l + 1]:
            Unew[:, deep:] = W[l + 1]
        U = Unew
    if s < 0:
        return
    # fold at layer s: P_a = (σ'σ'ᵀ) ∘ (Uᵀ diag(R̄_a) U) + diag(R^s_a), then Hessian steps down to layer 0
    assert U is not None                                    # K[s] > 0 rows (checked by the caller)
    P = torch.empty(b, C, n[s], n[s], dtype=dt, device=dev)
    Rb = Rbar[:, :, :K[s]]
    for a in range(C):
        torch.bmm((U * Rb[:, a].unsqueeze(-1)).transpose(1, 2), U, out=P[:, a])
    del U
    for l in range(s, -1, -1):
        if l < s:
            P = (P @ W[l + 1]).transpose(-1, -2) @ W[l + 1]         # W^{l+1}ᵀ P W^{l+1} (P symmetric)
        g = d1s[l][sl].unsqueeze(1)
        P.mul_(g.unsqueeze(-1) * g.unsqueeze(-2))
        if curved[l]:
            P.diagonal(dim1=-2, dim2=-1).add_(R[l][sl])
        D[l][sl] = P.diagonal(dim1=-2, dim2=-1)


def _switch_layer(n: list[int], K: list[int], C: int) -> int:
    """The layer s at which :func:`_second_derivatives` turns its factor rows into Hessians, chosen
    to minimise the multiply-add count per input (−1: never).  Factor layer l: K_{l+1}·n_{l+1}·n_l
    (product) + (C + 1)·K_{l+1}·n_l (square, contraction); layer s: K_{s+1}·n_{s+1}·n_s + C·K_s·n_s²
    (fold); Hessian layer l < s: C·n_{l+1}·n_l·(n_{l+1} + n_l) + 2·C·n_l²."""
    L = len(n)
    fac = [K[l + 1] * n[l + 1] * n[l] + (C + 1) * K[l + 1] * n[l] for l in range(L - 1)]
    hes = [C * n[l + 1] * n[l] * (n[l + 1] + n[l]) + 2 * C * n[l] ** 2 for l in range(L - 1)]
    best, best_cost = -1, sum(fac)
    for s in range(L - 2, -1, -1):
        if not K[s]:
            continue
        cost = sum(fac[s + 1:]) + K[s + 1] * n[s + 1] * n[s] + C * K[s] * n[s] ** 2 + sum(hes[:s])
        if cost < best_cost:
            best, best_cost = s, cost
    return best


def _power(key: str) -> int:
    from .core import BASE_POWER
    return BASE_POWER[key]
