"""Exact off-diagonal variances and Theorem C.1 / Corollary C.3 bounds, on request (THEORY.md §3, §5).

For a pair (θ_i, θ_j) and each input: I_ij = u_iᵀΣu_j,
N·Var Î₁_ij = M₄(u_i,u_i,u_j,u_j) − I_ij², N·Var Î₂_ij = w_ijᵀΣw_ij with
w_ij = ∂²h/∂θ_i∂θ_j.  M₄(a,a,b,b) follows from the quartic form by
polarisation: [M₄(a+b)⁴ + M₄(a−b)⁴ − 2M₄(a)⁴ − 2M₄(b)⁴]/12 (THEORY §3).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, jvp

from ..bounds.offdiag import offdiag_bounds
from ..families.base import ExponentialFamily
from ..families.constants import MAX_C_EIG, eig_margin, family_constants, formation_margin
from .checks import check_inputs, check_model, check_params
from .conditional import _check_n, resolve_family

__all__ = ["offdiag_stats"]

Index = tuple[str, tuple[int, ...] | int]


def offdiag_stats(model: nn.Module, inputs: torch.Tensor, family: str | ExponentialFamily,
                  pairs: Sequence[tuple[Index, Index]], n_samples: int = 1) -> dict[str, torch.Tensor]:
    """For each pair ((name_i, index_i), (name_j, index_j)): tensors (n_pairs, batch) of
    ``fisher_ij``, ``var1_ij``, ``var2_ij`` and the certified ``offdiag_var1_upper`` (Theorem C.1,
    sup M(a,b,a,b) ≤ λ_max(M̄)) and ``offdiag_var2_upper`` (Corollary C.3)."""
    family = resolve_family(family)
    N = _check_n(n_samples)
    check_model(model)
    params = {k: v.detach() for k, v in check_params(model).items()}
    buffers = dict(model.named_buffers())
    x = check_inputs(inputs, next(iter(params.values())).dtype)
    if family.C > MAX_C_EIG:
        raise ValueError(f"offdiag bounds need M̄ (C² × C²); C = {family.C} > {MAX_C_EIG}")

    def hfun(pd):
        return family.link(functional_call(model, {**params, **buffers, **pd}, (x,)))

    def unit(name, idx):
        if name not in params:
            raise ValueError(f"unknown parameter {name!r}; parameters are {list(params)}")
        e = {k: torch.zeros_like(v) for k, v in params.items()}
        e[name][idx] = 1.0
        return e

    with torch.no_grad():
        h = family.natural(functional_call(model, {**params, **buffers}, (x,)))  # the link applied once
    S, k4, m4 = family.moment_tensors(h)
    mb = family.mbar_from(S, m4)
    # certified (floating-point-sound) constants: computed eigenvalues widened by their error bounds
    mbar_max = torch.linalg.eigvalsh(mb)[..., -1] + eig_margin(mb) + formation_margin(S, k4)
    sig_max = family_constants(family, h, optimise=False).sigma_max_cert
    rows = {k: [] for k in ("fisher_ij", "var1_ij", "var2_ij", "offdiag_var1_upper", "offdiag_var2_upper")}
    for (ni, ii), (nj, ij) in pairs:
        ei, ej = unit(ni, ii), unit(nj, ij)
        _, ui = jvp(hfun, (params,), (ei,))
        uj, wij = jvp(lambda p: jvp(hfun, (p,), (ej,))[1], (params,), (ei,))
        I_ij = (ui.unsqueeze(-2) @ S @ uj.unsqueeze(-1))[..., 0, 0]
        m4 = lambda v: family.m4(h, v)  # noqa: E731
        m4_iijj = (m4(ui + uj) + m4(ui - uj) - 2 * m4(ui) - 2 * m4(uj)) / 12
        rows["fisher_ij"].append(I_ij)
        rows["var1_ij"].append((m4_iijj - I_ij ** 2) / N)
        rows["var2_ij"].append(family.sigma_quad(h, wij) / N)
        b = offdiag_bounds((ui * ui).sum(-1), (uj * uj).sum(-1), (wij * wij).sum(-1), mbar_max, sig_max, N)
        for k, v in b.items():
            rows[k].append(v)
    return {k: torch.stack(v) for k, v in rows.items()}
