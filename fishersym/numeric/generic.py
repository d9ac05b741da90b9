"""Generic exact path: any per-input ``nn.Module`` via ``torch.func`` (THEORY §2–§3).

For each parameter tensor and a chunk of its entries i, nested forward-mode
differentiation along the unit direction e_i gives, for all inputs and all C
outputs at once (the link included, THEORY §1),

    u_i = d/dε h(θ + ε e_i)|₀,     w_i = d²/dε² h(θ + ε e_i)|₀,

vmapped over the chunk.  Normalisation layers run as composite ops while
differentiating (:mod:`.safe_ad`: torch 2.13's nested forward rules for them
are wrong).  A list of patched ops cannot cover every op, so every chunk is
**verified by reverse mode** (issue 13 item 17): with a fixed random r (B × C)
and s(θ) = Σ_{b,c} r_bc h_bc(θ),

    Σ_{b,c} r_bc u_{b,i,c} = ∂s/∂θ_i                     (one backward pass),
    Σ_{b,c} r_bc w_{b,i,c} = e_iᵀ ∇²s e_i                 (reverse-over-reverse, vmapped over i),

and reverse-over-reverse second derivatives (double backward) are the route
torch tests for every op (gradgradcheck).  A wrong entry of u_i or w_i
violates these identities for almost every r, so an entry that disagrees
beyond rounding makes the chunk be recomputed per input by reverse-over-
reverse (``jacrev(jacrev)``; exact, slower) and a :class:`RuntimeWarning`
names the ops of the forward with hand-written derivative rules.  The cost
is about three forward passes per parameter entry plus the check (about the
same again), so this path is meant for small models (at most
:data:`GENERIC_MAX_PARAMS` parameters by default).  The user's model is never
modified: parameters are swapped in by :func:`.safe_ad.swapped` and restored
by identity (tied weights stay tied).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.func import grad, jacrev, jvp, vmap

from ..families.base import ExponentialFamily
from .checks import GENERIC_MAX_PARAMS, check_batch_independent
from .core import EngineOutput, base_quantities, prob_negative
from .parts import Part
from .. import activations as _act
from .safe_ad import composite_norms, preserved_attributes, stateless_call

__all__ = ["generic_engine", "directions", "FAST_LAYERS_HINT"]

FAST_LAYERS_HINT = ("nn.Sequential of Linear layers and elementwise activations ("
                    + ", ".join(t.__name__ for t in _act.TYPES if t is not nn.Dropout)
                    + "; Flatten before the first Linear; Dropout in eval mode) with an elementwise link")

#: seed of the private generator of the check's random combination r (the global RNG is not used)
_CHECK_SEED = 0x5EED
#: largest number of elements of one (C, K, P) block of the reverse-mode recomputation
_REV_BLOCK = 1 << 22


def _auto_chunk(x: torch.Tensor, numel: int) -> int:
    per_dir = x.shape[0] * max(int(x[0].numel()), 64) * 16
    return int(max(1, min(numel, 1024, (1 << 26) // per_dir)))


def _rtol(dtype: torch.dtype) -> float:
    """Agreement required between the forward and the reverse route: √eps (1.5e-8 in float64)."""
    return float(torch.finfo(dtype).eps) ** 0.5


def directions(model: nn.Module, x: torch.Tensor, family: ExponentialFamily, name: str,
               idx: torch.Tensor, *, verify: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """u_i, w_i (each (B, K, C)) for the flat entries ``idx`` of parameter ``name``.

    Nested forward mode, verified against reverse mode entry by entry (module docstring);
    entries that fail are recomputed by reverse-over-reverse with a :class:`RuntimeWarning`.
    """
    params = {k: v.detach() for k, v in model.named_parameters()}
    p0 = params[name]

    def hfun(t, xx=x):
        return family.link(stateless_call(model, {**params, name: t}, xx))

    def uw(e):
        return jvp(lambda t: jvp(hfun, (t,), (e,))[1], (p0,), (e,))

    K = len(idx)
    E = torch.zeros(K, p0.numel(), dtype=p0.dtype, device=p0.device)
    E[torch.arange(K), idx] = 1.0
    E = E.reshape(K, *p0.shape)
    try:
        with composite_norms():  # torch's nested forward rules of the norm ops are wrong (safe_ad)
            U, W = vmap(uw)(E)                               # (K, B, C)
    except (NotImplementedError, RuntimeError) as err:      # no (nested) forward-mode or vmap rule for an op
        try:
            U, W = _reverse(hfun, x, p0, idx)
        except Exception:  # noqa: BLE001 - the fallback failed too: report the original failure
            raise err from None
        warnings.warn(f"fishersym generic path: torch cannot run nested forward-mode AD through this model "
                      f"({type(err).__name__}: {str(err).splitlines()[0]}); u and w of parameter {name!r} were "
                      "computed by reverse-over-reverse autograd instead (exact, slower).",
                      RuntimeWarning, stacklevel=2)
        return U.transpose(0, 1), W.transpose(0, 1)
    if not verify:
        return U.transpose(0, 1), W.transpose(0, 1)
    try:
        bad_u, bad_w = _check(hfun, p0, E, idx, U, W)
    except (NotImplementedError, RuntimeError) as err:      # no double backward for an op
        warnings.warn(f"fishersym generic path: u and w of parameter {name!r} could not be verified by "
                      f"reverse-over-reverse autograd ({type(err).__name__}: {str(err).splitlines()[0]}); they "
                      "rely on torch's nested forward-mode rules alone.", RuntimeWarning, stacklevel=2)
        return U.transpose(0, 1), W.transpose(0, 1)
    if bad_u.any() or bad_w.any():
        bad = (bad_u | bad_w).nonzero().flatten()
        _warn(model, x, name, idx[bad], bool(bad_w.any()), bool(bad_u.any()))
        Ur, Wr = _reverse(hfun, x, p0, idx[bad])            # (K', B, C)
        U, W = U.clone(), W.clone()
        U[bad], W[bad] = Ur, Wr
    return U.transpose(0, 1), W.transpose(0, 1)


def _check(hfun, p0: torch.Tensor, E: torch.Tensor, idx: torch.Tensor, U: torch.Tensor,
           W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entries (K,) whose u resp. w disagree with reverse mode: Σ r u_i = ∂s/∂θ_i and
    Σ r w_i = e_iᵀ∇²s e_i with s = Σ r_bc h_bc (module docstring), beyond √eps of the scale."""
    g = torch.Generator(device="cpu").manual_seed(_CHECK_SEED)
    r = torch.randn(U.shape[1:], generator=g, dtype=p0.dtype).to(p0.device)      # (B, C)

    def s(t):
        return (hfun(t) * r).sum()

    def dsd(t, e):
        return (grad(s)(t) * e).sum()

    gs = grad(s)(p0).reshape(-1)[idx]                                            # (K,)

    def hvp_diag(e):
        return (grad(dsd)(p0, e) * e).sum()
    try:
        hd = vmap(hvp_diag)(E)                                                   # (K,) reverse-over-reverse
    except RuntimeError:  # a vmap batching rule missing or broken for an op: one direction at a time
        hd = torch.stack([hvp_diag(e) for e in E])
    rtol = _rtol(p0.dtype)
    out = []
    for val, ref in ((U, gs), (W, hd)):
        fwd = (val * r).sum((1, 2))
        scale = (val.abs() * r.abs()).sum((1, 2)) + ref.abs()
        tol = rtol * (scale + 1e-6 * scale.max())
        bad = ~((fwd - ref).abs() <= tol)                                       # NaN counts as bad
        out.append(bad & torch.isfinite(ref) | (torch.isfinite(ref) & ~torch.isfinite(fwd)))
    return out[0], out[1]


def _reverse(hfun, x: torch.Tensor, p0: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """u_i, w_i (K, B, C) per input by reverse mode: u = J[:, i], w = ∂J[:, i]/∂θ_i (jacrev of jacrev;
    plain ``torch.autograd.grad`` loops where an op has no working vmap rule)."""
    B = x.shape[0]
    Us, Ws = [], []
    for b in range(B):
        xb = x[b:b + 1]

        def h1(t, xb=xb):
            return hfun(t, xb)[0]                                        # (C,)
        try:
            ub, wb = _reverse_vmapped(h1, p0, idx)
        except RuntimeError:
            ub, wb = _reverse_loop(h1, p0, idx)
        Us.append(ub)
        Ws.append(wb)
    return torch.stack(Us, 1), torch.stack(Ws, 1)                        # (K, B, C)


def _reverse_vmapped(h1, p0: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    C, P = int(h1(p0).shape[0]), p0.numel()
    step = max(1, _REV_BLOCK // max(1, C * P))
    ub, wb = [], []
    for i in range(0, len(idx), step):
        sel = idx[i:i + step]

        def jsel(t, sel=sel):
            return jacrev(h1)(t).reshape(C, P)[:, sel]                   # (C, k)
        ub.append(jsel(p0))
        H = jacrev(jsel)(p0).reshape(C, len(sel), P)
        wb.append(H[:, torch.arange(len(sel)), sel])
    return torch.cat(ub, 1).T, torch.cat(wb, 1).T                        # (K, C)


def _reverse_loop(h1, p0: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        t = p0.detach().clone().requires_grad_(True)
        out = h1(t)
        C = out.shape[0]
        U = p0.new_zeros(len(idx), C)
        W = p0.new_zeros(len(idx), C)
        for c in range(C):
            g, = torch.autograd.grad(out[c], t, create_graph=True, allow_unused=True)
            if g is None:
                continue
            g = g.reshape(-1)
            U[:, c] = g[idx].detach()
            for k, i in enumerate(idx.tolist()):
                if g.grad_fn is None:
                    break
                gg, = torch.autograd.grad(g[i], t, retain_graph=True, allow_unused=True)
                if gg is not None:
                    W[k, c] = gg.reshape(-1)[i].detach()
    return U, W


#: aten ops whose derivative rules are elementary (not reported as suspects)
_PLAIN_OPS = {
    "add", "sub", "mul", "div", "neg", "pow", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "tanh",
    "sigmoid", "relu", "abs", "mm", "bmm", "addmm", "matmul", "linear", "t", "transpose", "permute",
    "view", "reshape", "_unsafe_view", "expand", "squeeze", "unsqueeze", "clone", "sum", "mean",
    "detach", "alias", "slice", "select", "cat", "stack", "zeros_like", "ones_like", "empty_like",
    "fill", "copy", "_to_copy", "lift_fresh", "sin", "cos", "clamp", "where", "softplus", "gelu",
    "silu", "leaky_relu", "elu", "hardtanh", "split", "unbind", "contiguous", "flatten", "_log_softmax",
    "_softmax", "log_softmax", "softmax", "maximum", "minimum", "max", "amax", "logsumexp", "gt", "lt",
    "ge", "le", "eq", "ne", "scalar_tensor", "full", "zeros", "ones", "arange", "empty", "sub_", "add_",
    "mul_", "div_", "addcmul", "addcdiv", "reciprocal", "square", "erf", "threshold_backward",
}


def _suspect_ops(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the aten ops one forward pass calls, less the elementary ones."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: list[str] = []

    class _Rec(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            op = func._schema.name.split("::")[-1]
            if op not in _PLAIN_OPS and op not in seen:
                seen.append(op)
            return func(*args, **(kwargs or {}))
    try:
        with torch.no_grad(), _Rec():
            model(x[:1])
    except Exception:  # noqa: BLE001 — the list is a hint in a warning only
        return []
    return seen


def _warn(model, x, name, idx, w_bad: bool, u_bad: bool) -> None:
    ops = _suspect_ops(model, x)
    which = " and ".join(q for q, f in (("u (first derivatives)", u_bad), ("w (second derivatives)", w_bad)) if f)
    warnings.warn(
        f"fishersym generic path: torch's forward-mode {which} of parameter {name!r} disagree with "
        f"reverse-over-reverse autograd at {len(idx)} entries (a wrong nested forward-mode rule in torch; "
        f"likely one of the ops {', '.join(ops) if ops else '(unknown)'}); these entries were recomputed "
        "exactly by reverse mode (slower).", RuntimeWarning, stacklevel=3)


def generic_engine(model: nn.Module, x: torch.Tensor, family: ExponentialFamily,
                   params: dict[str, torch.Tensor], *, grams: bool = False, pneg_samples: int | None = None,
                   chunk_size: int | None = None, max_params: int = GENERIC_MAX_PARAMS) -> EngineOutput:
    """Exact per-input base quantities for every parameter entry (chunked nested jvp, verified).
    The model's plain tensor attributes are restored afterwards (:func:`.safe_ad.preserved_attributes`)."""
    with preserved_attributes(model):
        return _generic(model, x, family, params, grams, pneg_samples, chunk_size, max_params)


def _generic(model, x, family, params, grams, pneg_samples, chunk_size, max_params) -> EngineOutput:
    total = sum(p.numel() for p in params.values())
    if total > max_params:
        raise ValueError(
            f"the model has {total} parameters, more than the generic exact path's limit of {max_params} "
            f"(it runs ~3 forward passes per parameter). Use the fast path, which supports {FAST_LAYERS_HINT}, "
            "or raise max_params= if you accept the cost.")
    with torch.no_grad():
        out = model(x)
    h = family.natural(out)
    check_batch_independent(model, x, out)
    B, C = h.shape
    parts: dict[str, dict[str, Part]] = {}
    gram_out: dict[str, dict[str, torch.Tensor]] | None = {} if grams else None
    pneg: dict[str, Part] | None = {} if pneg_samples else None
    for name, p in params.items():
        n = p.numel()
        k = chunk_size or _auto_chunk(x, n)
        acc: dict[str, list[torch.Tensor]] = {}
        pn: list[torch.Tensor] = []
        G = ({"JJ": h.new_zeros(B, C, C), "UU": h.new_zeros(B, C * C, C * C), "WW": h.new_zeros(B, C, C)}
             if grams else None)
        for start in range(0, n, k):
            idx = torch.arange(start, min(n, start + k), device=p.device)
            U, W = directions(model, x, family, name, idx)
            for key, val in base_quantities(family, h, U, W).items():
                acc.setdefault(key, []).append(val)
            if pneg is not None:
                pv = prob_negative(family, h, acc["fisher"][-1], W, pneg_samples)
                if pv is None:
                    pneg = None
                else:
                    pn.append(pv)
            if G is not None:
                uu = (U.unsqueeze(-1) * U.unsqueeze(-2)).reshape(B, -1, C * C)
                G["JJ"] += U.transpose(1, 2) @ U
                G["UU"] += uu.transpose(1, 2) @ uu
                G["WW"] += W.transpose(1, 2) @ W
        parts[name] = {key: Part(torch.cat(v, 1).reshape(B, *p.shape)) for key, v in acc.items()}
        if pneg is not None:
            pneg[name] = Part(torch.cat(pn, 1).reshape(B, *p.shape))
        if gram_out is not None and G is not None:
            gram_out[name] = G
    return EngineOutput(h=h, parts=parts, path="generic", grams=gram_out, pneg=pneg)
