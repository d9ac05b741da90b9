"""Exact off-diagonal variances and Theorem C.1 / Corollary C.3 bounds, on request (THEORY §3, §5).

For a pair (θ_i, θ_j) and each input: I_ij = u_iᵀΣu_j,
N·Var Î₁_ij = M₄(u_i,u_i,u_j,u_j) − I_ij², N·Var Î₂_ij = w_ijᵀΣw_ij with
w_ij = ∂²h/∂θ_i∂θ_j.

N·Var Î₁_ij = M₄(a,a,b,b) − (aᵀΣb)² = M₄(a,b,a,b) − (aᵀΣb)² = (a⊗b)ᵀ M̄ (a⊗b) (a = u_i, b = u_j;
M₄ is symmetric, M̄ = mat(M₄) − vec(Σ)vec(Σ)ᵀ, THEORY §3) is evaluated by this direct contraction with
the family's M̄ (``family.mbar``, stable closed forms where the family has them), in float64.  The
polarisation [M₄(a+b) + M₄(a−b) − 2M₄(a) − 2M₄(b)]/12 used before cancels catastrophically when ‖a‖
and ‖b‖ differ in scale, and the difference M₄ − I² cancels again (issue 13 items 16, 22).

Floating-point soundness of ``offdiag_var1_upper`` (issue 13 items 16, 22): the value is
q̂ = fl(wᵀM̄̂w), w = fl(a⊗b), with |q̂ − wᵀM̄̂w| ≤ γ_{C²+4}‖a‖²‖b‖²‖M̄̂‖_F (|w|ᵀ|M̄̂||w| ≤ ‖w‖²‖M̄̂‖_F).
The bound is ‖a‖²‖b‖²·m with m = λ̂_max(M̄̂) + eig_margin(M̄̂) (≥ λ_max(M̄̂) ≥ wᵀM̄̂w/‖w‖²) +
the formation error of M̄̂ (:func:`.formation_margin` for the generic M̄ = mat(M₄) − vec(Σ)vec(Σ)ᵀ,
16C²ε‖M̄̂‖_F for a family's closed form) + (C² + 8)ε‖M̄̂‖_F (the contraction), and
:func:`..bounds.offdiag.offdiag_bounds` widens the products.  Everything is computed in float64 and
cast to the input dtype, the value to nearest and the bound upward (``nextafter``): rounding is
monotone, so the cast keeps the value below the bound.
"""
from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.func import jvp

from ..bounds.offdiag import offdiag_bounds
from ..families.base import ExponentialFamily
from ..families.constants import (MAX_C_EIG, _round_out, eig_margin, family_constants, formation_margin,
                                  moment_tensor_bytes)
from .checks import check_deterministic, check_inputs, check_output_shape, check_params
from .conditional import _check_n, resolve_family
from .guard import check_budget, guarded
from .safe_ad import stateless_call

__all__ = ["offdiag_stats", "check_pairs"]

Index = tuple[str, tuple[int, ...] | int]
#: an Index with the full tuple of one int per dimension (:func:`check_pairs`)
FullIndex = tuple[str, tuple[int, ...]]


def _full_index(entry, params: dict[str, torch.Tensor], k: int, side: str) -> tuple[str, tuple[int, ...]]:
    """(name, index) with one in-range int per dimension of the parameter (issue 13 item 5)."""
    if not isinstance(entry, (tuple, list)) or len(entry) != 2:
        raise TypeError(f"pair {k}: the {side} entry must be (parameter name, index), got {entry!r}")
    name, idx = entry
    if not isinstance(name, str):
        raise TypeError(f"pair {k}: the parameter name must be a str, got {type(name).__name__}")
    if name not in params:
        raise ValueError(f"unknown parameter {name!r}; parameters are {list(params)}")
    shape = tuple(params[name].shape)
    if not isinstance(idx, (tuple, list)):
        if len(shape) == 1 and not isinstance(idx, bool):
            idx = (idx,)
        else:
            raise TypeError(f"pair {k}: the index of {name!r} (shape {shape}) must be a tuple of {len(shape)} ints, "
                            f"one per dimension, got {idx!r}; an int would select a whole "
                            f"{'row' if len(shape) > 1 else 'tensor'}, not one parameter entry")
    if len(idx) != len(shape):
        raise ValueError(f"pair {k}: the index {tuple(idx)!r} of {name!r} has {len(idx)} entries but the parameter "
                         f"has shape {shape}: give one int per dimension, e.g. {tuple(0 for _ in shape)!r}")
    out = []
    for i, n in zip(idx, shape):
        if isinstance(i, bool):
            raise TypeError(f"pair {k}: index entries of {name!r} must be ints, got the bool {i!r}")
        try:
            i = operator.index(i)
        except TypeError:
            raise TypeError(f"pair {k}: index entries of {name!r} must be ints, got {type(i).__name__}") from None
        if not -n <= i < n:
            raise ValueError(f"pair {k}: index {tuple(idx)!r} is out of range for {name!r} of shape {shape}")
        out.append(i % n)
    return name, tuple(out)


def check_pairs(pairs, params: dict[str, torch.Tensor]) -> list[tuple[FullIndex, FullIndex]]:
    """Validated pairs ((name_i, index_i), (name_j, index_j)) with full indices; at least one pair."""
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Iterable):
        raise TypeError(f"pairs must be a sequence of ((name_i, index_i), (name_j, index_j)), "
                        f"got {type(pairs).__name__}")
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs is empty: give at least one pair ((name_i, index_i), (name_j, index_j)), "
                         "e.g. [(('0.weight', (0, 0)), ('0.weight', (0, 1)))]")
    out: list[tuple[FullIndex, FullIndex]] = []
    for k, pr in enumerate(pairs):
        if not isinstance(pr, (tuple, list)) or len(pr) != 2:
            raise TypeError(f"pair {k} must be ((name_i, index_i), (name_j, index_j)), got {pr!r}")
        out.append((_full_index(pr[0], params, k, "first"), _full_index(pr[1], params, k, "second")))
    return out


@guarded
def offdiag_stats(model: nn.Module, inputs: torch.Tensor, family: str | ExponentialFamily,
                  pairs: Sequence[tuple[Index, Index]], n_samples: int = 1, *,
                  memory_budget: int | str | None = None,
                  family_params: dict | None = None) -> dict[str, torch.Tensor]:
    """For each pair ((name_i, index_i), (name_j, index_j)): tensors (n_pairs, batch) of
    ``fisher_ij``, ``var1_ij``, ``var2_ij`` and the certified ``offdiag_var1_upper`` (Theorem C.1,
    sup M(a,b,a,b) ≤ λ_max(M̄)) and ``offdiag_var2_upper`` (Corollary C.3).

    Each index is a full index: a tuple with one int per dimension of the parameter (an int
    is accepted for a 1-D parameter); at least one pair.  The C⁴ tensors are sized against
    ``memory_budget`` (:func:`.guard.check_budget`)."""
    family = resolve_family(family, family_params, model=model, data=inputs)
    N = _check_n(n_samples)
    check_deterministic(model)
    params = {k: v.detach() for k, v in check_params(model).items()}
    full_pairs = check_pairs(pairs, params)
    x = check_inputs(inputs, next(iter(params.values())).dtype)
    if family.C > MAX_C_EIG:
        raise ValueError(f"offdiag bounds need M̄ (C² × C²); C = {family.C} > {MAX_C_EIG}")

    def hfun(pd):
        return family.link(stateless_call(model, {**params, **pd}, x))

    def unit(name, idx):
        e = {k: torch.zeros_like(v) for k, v in params.items()}
        e[name][idx] = 1.0
        return e

    with torch.no_grad():
        out = stateless_call(model, params, x)
    check_output_shape(out, x)
    h = family.natural(out)  # the link applied once
    check_budget(moment_tensor_bytes(family, h.shape[0]) + 8 * h.shape[0] * family.C ** 4,
                 f"offdiag_stats (C⁴ moment tensors and the C²×C² matrix M̄ per input; B={h.shape[0]} inputs, "
                 f"C={family.C})", ["fewer inputs per call"], memory_budget)
    C, f64 = family.C, torch.float64
    eps64 = torch.finfo(f64).eps
    hd = h.detach().to(f64)
    if type(family).mbar is ExponentialFamily.mbar:  # generic: mat(M₄) − vec(Σ)vec(Σ)ᵀ, cancelling
        S64, k4, m4 = family.moment_tensors(hd)
        mb = family.mbar_from(S64, m4)
        form = formation_margin(S64, k4)
    else:  # the family's stable closed form (e.g. Bernoulli: σ(h)σ(−h)tanh²(h/2))
        mb = family.mbar(hd)
        form = 16 * C * C * eps64 * torch.linalg.matrix_norm(mb)
    S = family.sigma(h)
    # certified (floating-point-sound) constants, module docstring
    mb_norm = torch.linalg.matrix_norm(mb)
    mbar_max = (torch.linalg.eigvalsh(mb)[..., -1] + eig_margin(mb) + form + (C * C + 8) * eps64 * mb_norm)
    sig_max = family_constants(family, h, optimised=False).sigma_max_cert.to(f64)
    rows: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("fisher_ij", "var1_ij", "var2_ij", "offdiag_var1_upper", "offdiag_var2_upper")}
    for (ni, ii), (nj, ij) in full_pairs:
        ei, ej = unit(ni, ii), unit(nj, ij)
        ui = jvp(hfun, (params,), (ei,))[1]
        uj, wij = jvp(lambda p, ej=ej: jvp(hfun, (p,), (ej,))[1], (params,), (ei,))[:2]
        I_ij = (ui.unsqueeze(-2) @ S @ uj.unsqueeze(-1))[..., 0, 0]
        a, b = ui.detach().to(f64), uj.detach().to(f64)
        w = (a.unsqueeze(-1) * b.unsqueeze(-2)).reshape(*a.shape[:-1], C * C)
        q = torch.einsum("...p,...pq,...q->...", w, mb, w)  # (a⊗b)ᵀM̄(a⊗b) = M₄(a,a,b,b) − I_ij²
        rows["fisher_ij"].append(I_ij)
        rows["var1_ij"].append((q / N).to(h.dtype))
        rows["var2_ij"].append(family.sigma_quad(h, wij) / N)
        bd = offdiag_bounds((a * a).sum(-1), (b * b).sum(-1), (wij.detach().to(f64) ** 2).sum(-1), mbar_max,
                            sig_max, N, n_terms=C)
        for k, v in bd.items():
            rows[k].append(_round_out(v, h.dtype, up=True))
    return {k: torch.stack(v) for k, v in rows.items()}
