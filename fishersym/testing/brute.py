"""Brute-force oracle: I, V₁, V₂ and E[Î₂] from the definitions (THEORY §2–§3).

Independent of the closed forms of Lemma 3.1: for one input x the label
distribution p(y|x;θ) is enumerated (discrete families; the Poisson support
truncated at mass ≤ 1e-15) or replaced by Gauss–Hermite quadrature (Gaussian
families; exact for the polynomial moments involved), and for every label
the score ∂ℓ/∂θ_i and the negative Hessian −∂²ℓ/∂θ_i² of ℓ = log p(y|x;θ)
come from reverse-mode autograd on θ directly (the Hessian by reverse-over-
reverse, ``jacrev(jacrev(ℓ))``), never through u_i, w_i or Σ, and with
torch's own normalisation kernels: a different AD composition from the
engines' nested forward mode, so a wrong derivative rule in one of them
shows up as a mismatch (this is how torch 2.13's wrong second-order forward
rule of layer_norm was found, see fishersym.numeric.safe_ad).  Then

    I_i  = E[s_i²],         V₁ = Var(s_i²)/N,
    E[Î₂] = E[H_i],          V₂ = Var(H_i)/N,          P(Î₂ < 0) for N = 1.

Meant for small models (full Hessians): at most ``BRUTE_MAX_PARAMS`` parameters.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import jacrev, vmap

from ..families.base import ExponentialFamily
from ..numeric.safe_ad import stateless_call

__all__ = ["label_support", "brute_force", "BruteForce", "BRUTE_MAX_PARAMS"]

BRUTE_MAX_PARAMS = 600


def label_support(family: ExponentialFamily, h1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(t values (S, C), weights (S,)) representing p(y|h) for one input h1 (C,): the family's
    ``label_nodes`` hook (enumerated support for discrete families, truncated at mass ≤ 1e-15 where
    infinite; a quadrature rule exact for the polynomial moments involved for continuous ones)."""
    t, w = family.label_nodes(h1)
    if t.dim() != 2 or t.shape[-1] != family.C or w.shape != t.shape[:1]:
        raise ValueError(f"{family.name}.label_nodes returned t of shape {tuple(t.shape)} and weights of shape "
                         f"{tuple(w.shape)}; it must return t (S, C={family.C}) and weights (S,)")
    return t, w


@dataclass
class BruteForce:
    """Per-parameter brute-force values for one input, each {name: tensor(param.shape)}."""

    fisher: dict[str, torch.Tensor]
    fisher_hessian: dict[str, torch.Tensor]  # E[Î₂] (= I by unbiasedness)
    var1: dict[str, torch.Tensor]
    var2: dict[str, torch.Tensor]
    prob_neg2: dict[str, torch.Tensor] | None  # N = 1, discrete families
    n_labels: int
    mu4_1: dict[str, torch.Tensor] | None = None  # E[(s² − I)⁴], one label
    mu4_2: dict[str, torch.Tensor] | None = None  # E[(H − I)⁴], one label


def brute_force(model: nn.Module, x1: torch.Tensor, family: ExponentialFamily,
                n_samples: int = 1) -> BruteForce:
    """Brute-force I, V₁, V₂ for a single input ``x1`` (the batch dimension of size 1 kept)."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    P = sum(p.numel() for p in params.values())
    if P > BRUTE_MAX_PARAMS:
        raise ValueError(f"brute force needs full Hessians: {P} parameters > {BRUTE_MAX_PARAMS}")
    if x1.shape[0] != 1:
        raise ValueError("brute_force takes one input with a batch dimension of size 1")
    names = list(params)
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    flat = torch.cat([params[n].reshape(-1) for n in names])

    def unflatten(v):
        return {n: c.reshape(s) for n, c, s in zip(names, torch.split(v, sizes), shapes)}

    def h_of(v):
        return family.link(stateless_call(model, unflatten(v), x1))[0]

    with torch.no_grad():
        h1 = h_of(flat)
    t, w = label_support(family, h1)

    def loglik(v, t1):
        return family.log_prob(t1, h_of(v))

    score = vmap(jacrev(loglik), in_dims=(None, 0))(flat, t)  # (S, P)
    hdiag = vmap(lambda t1: -torch.diagonal(jacrev(jacrev(loglik))(flat, t1)))(t)  # (S, P), reverse-over-reverse
    s2 = score ** 2
    I = w @ s2
    EH = w @ hdiag
    v1 = (w @ (s2 - I) ** 2) / n_samples
    v2 = (w @ (hdiag - EH) ** 2) / n_samples
    pneg = None
    if family.discrete and n_samples == 1:
        pneg = w @ (hdiag < 0).to(w.dtype)

    mu4_1 = w @ (s2 - I) ** 4
    mu4_2 = w @ (hdiag - EH) ** 4

    def split(v):
        return unflatten(v) if v is not None else None
    return BruteForce(split(I), split(EH), split(v1), split(v2), split(pneg), int(t.shape[0]),
                      split(mu4_1), split(mu4_2))
