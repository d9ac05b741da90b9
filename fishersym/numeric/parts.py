"""Factored per-input, per-parameter arrays (THEORY.md §7, §8).

Every per-weight quantity of the fast MLP path factors as f(j) · (a_k)^p
(THEORY §7): I(W_jk|x) = (G_jᵀΣG_j)·a_k², N·V₁ ∝ a_k⁴, N·V₂ ∝ a_k⁴.  A
:class:`Part` stores the factors of one parameter tensor for a batch of
inputs and materialises them only on demand; batch sums over inputs are then
one matrix product ``fᵀ @ a^p`` (THEORY §7, §8).  The generic path stores the
dense array as ``f`` with ``a = None``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Part", "batch_sums"]


def batch_sums(parts: dict[str, "Part"]) -> dict[str, torch.Tensor]:
    """Σ_b of many parts at once: parts sharing an input factor and power are stacked into one
    matrix product fᵀ a^p (THEORY §7), with a^p computed once.  Parts whose per-row factor is
    identically zero (e.g. a lower bound with a zero constant) are left out of the product: their
    sum is exactly zero when a^p is finite."""
    out: dict[str, torch.Tensor] = {}
    groups: dict[tuple, list[str]] = {}
    for k, part in parts.items():
        if part.a is None or part.f.dim() != 2:
            out[k] = part.batch_sum()
        else:
            groups.setdefault((id(part.a), part.p), []).append(k)
    powers: dict[tuple, torch.Tensor] = {}
    for (aid, p), keys in sorted(groups.items(), key=lambda kv: kv[0][1]):
        first = parts[keys[0]]
        ap = powers[(aid, p)] = (powers[(aid, p // 2)].square() if p % 2 == 0 and (aid, p // 2) in powers
                                 else first._ap())
        live = [k for k in keys if bool(parts[k].f.any())]
        # 0·inf is not 0: keep the product unless a^p is finite (a non-finite entry makes the sum so)
        if len(live) < len(keys) and not bool(torch.isfinite(ap.sum())):
            live = keys
        for k in keys:
            if k not in live:
                out[k] = ap.new_zeros(parts[k].f.shape[1], ap.shape[1])
        if not live:
            continue
        F = parts[live[0]].f if len(live) == 1 else torch.cat([parts[k].f for k in live], 1)  # (B, K·n)
        S = F.T @ ap                                                 # (K·n, m)
        for k, blk in zip(live, torch.split(S, [parts[k].f.shape[1] for k in live], 0)):
            out[k] = blk
    return {k: out[k] for k in parts}


@dataclass
class Part:
    """Per-input values ``f[b, *fshape] · a[b, k]^p`` (shape (B, *fshape, m)), or ``f`` when ``a`` is None."""

    f: torch.Tensor
    a: torch.Tensor | None = None
    p: int = 0

    @property
    def batch(self) -> int:
        return self.f.shape[0]

    def materialize(self) -> torch.Tensor:
        """The dense array, shape (B, *param.shape)."""
        if self.a is None:
            return self.f
        return self.f.unsqueeze(-1) * self._ap().unsqueeze(-2)

    def _ap(self) -> torch.Tensor:
        a = self.a
        return a if self.p == 1 else a ** self.p

    def with_f(self, f: torch.Tensor, p: int | None = None) -> "Part":
        """Same input factor, new per-row factor (e.g. a bound computed from f)."""
        return Part(f, self.a, self.p if p is None else p)

    def scale(self, c: torch.Tensor) -> "Part":
        """Multiply input b's values by c[b]."""
        c = c.reshape(c.shape + (1,) * (self.f.dim() - 1))
        return Part(self.f * c, self.a, self.p)

    def square(self) -> "Part":
        """Elementwise square (f·a^p)² = f²·a^{2p}."""
        return Part(self.f * self.f, self.a, 2 * self.p)

    def batch_sum(self) -> torch.Tensor:
        """Σ_b values[b], shape param.shape; for factored parts one matrix product fᵀ a^p."""
        if self.a is None:
            return self.f.sum(0)
        return self.f.T @ self._ap() if self.f.dim() == 2 else torch.einsum("b...,bk->...k", self.f, self._ap())

    def entry_sum(self) -> torch.Tensor:
        """Σ over the parameter's entries for each input, shape (B,), without materialising."""
        fs = self.f.reshape(self.f.shape[0], -1).sum(1)
        return fs if self.a is None else fs * self._ap().sum(1)
