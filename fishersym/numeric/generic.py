"""Generic exact path: any per-input ``nn.Module`` via ``torch.func`` (THEORY.md §2–§3).

For each parameter tensor and a chunk of its entries i, nested forward-mode
differentiation along the unit direction e_i gives, for all inputs and all C
outputs at once (the link included, THEORY §1),

    u_i = d/dε h(θ + ε e_i)|₀,     w_i = d²/dε² h(θ + ε e_i)|₀,

vmapped over the chunk.  Normalisation layers run as composite ops while
differentiating (:mod:`.safe_ad`: torch 2.13's nested forward rules for them
are wrong).  Memory is bounded by the chunk size; the cost is
about three forward passes per parameter entry, so this path is meant for
small models (at most :data:`GENERIC_MAX_PARAMS` parameters by default).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, jvp, vmap

from ..families.base import ExponentialFamily
from .checks import GENERIC_MAX_PARAMS, check_batch_independent
from .core import EngineOutput, base_quantities, prob_negative
from .parts import Part
from .safe_ad import composite_norms

__all__ = ["generic_engine", "directions", "FAST_LAYERS_HINT"]

FAST_LAYERS_HINT = ("nn.Sequential of Linear layers and elementwise activations (Sigmoid, Tanh, ReLU, "
                    "LeakyReLU, Hardtanh, ELU, Softplus, GELU, SiLU, Identity; Flatten before the first "
                    "Linear; Dropout in eval mode) with an elementwise link")


def _auto_chunk(x: torch.Tensor, numel: int) -> int:
    per_dir = x.shape[0] * max(int(x[0].numel()), 64) * 16
    return int(max(1, min(numel, 1024, (1 << 26) // per_dir)))


def directions(model: nn.Module, x: torch.Tensor, family: ExponentialFamily, name: str,
               idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """u_i, w_i (each (B, K, C)) for the flat entries ``idx`` of parameter ``name``."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    p0 = params[name]

    def hfun(t):
        return family.link(functional_call(model, {**params, **buffers, name: t}, (x,)))

    def uw(e):
        return jvp(lambda t: jvp(hfun, (t,), (e,))[1], (p0,), (e,))

    E = torch.zeros(len(idx), p0.numel(), dtype=p0.dtype, device=p0.device)
    E[torch.arange(len(idx)), idx] = 1.0
    with composite_norms():  # torch's nested forward rules of the norm ops are wrong (safe_ad)
        U, W = vmap(uw)(E.reshape(len(idx), *p0.shape))
    return U.transpose(0, 1), W.transpose(0, 1)


def generic_engine(model: nn.Module, x: torch.Tensor, family: ExponentialFamily,
                   params: dict[str, torch.Tensor], *, grams: bool = False, pneg_samples: int | None = None,
                   chunk_size: int | None = None, max_params: int = GENERIC_MAX_PARAMS) -> EngineOutput:
    """Exact per-input base quantities for every parameter entry (chunked nested jvp)."""
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
                val = prob_negative(family, h, acc["fisher"][-1], W, pneg_samples)
                if val is None:
                    pneg = None
                else:
                    pn.append(val)
            if grams:
                uu = (U.unsqueeze(-1) * U.unsqueeze(-2)).reshape(B, -1, C * C)
                G["JJ"] += U.transpose(1, 2) @ U
                G["UU"] += uu.transpose(1, 2) @ uu
                G["WW"] += W.transpose(1, 2) @ W
        parts[name] = {key: Part(torch.cat(v, 1).reshape(B, *p.shape)) for key, v in acc.items()}
        if pneg is not None:
            pneg[name] = Part(torch.cat(pn, 1).reshape(B, *p.shape))
        if grams:
            gram_out[name] = G
    return EngineOutput(h=h, parts=parts, path="generic", grams=gram_out, pneg=pneg)
