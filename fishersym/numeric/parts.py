"""Factored per-input, per-parameter arrays (THEORY §7, §8).

Every per-weight quantity of the fast MLP path factors as f(j) · (a_k)^p
(THEORY §7): I(W_jk|x) = (G_jᵀΣG_j)·a_k², N·V₁ ∝ a_k⁴, N·V₂ ∝ a_k⁴.  A
:class:`Part` stores the factors of one parameter tensor for a batch of
inputs and materialises them only on demand; batch sums over inputs are then
one matrix product ``fᵀ @ a^p`` (THEORY §7, §8).  The generic path stores the
dense array as ``f`` with ``a = None``.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Mapping

import torch

__all__ = ["Part", "batch_sums", "batch_sums_many"]


def batch_sums(parts: dict[str, Part]) -> dict[str, torch.Tensor]:
    """Σ_b of many parts of one parameter at once (:func:`batch_sums_many` for one parameter)."""
    return batch_sums_many({"": parts})[""]


def _power(a: torch.Tensor, p: int) -> torch.Tensor:
    """a^p (a itself for p = 1)."""
    return a if p == 1 else a ** p


def _nan_or_zero(t: torch.Tensor, even: bool) -> torch.Tensor:
    """Σ_b 0·t_b per column: 0 where every t_b is finite, NaN where one is not (IEEE: 0·±∞ = NaN), from
    the column extremes (max and min propagate NaN; a column is finite when both extremes are; an even
    power t = a^p is never −∞, so its maximum alone decides)."""
    hi = t.amax(0).mul_(0)
    return hi if even else hi.add_(t.amin(0).mul_(0))


def _zero_sum(row: torch.Tensor, col: torch.Tensor | None) -> torch.Tensor:
    """Σ_b f_b·a_b^p or Σ_b f_b (``col`` None) for a factor f whose every entry is 0 or NaN
    (:attr:`Part.zero`), without the product, from ``row`` = Σ_b f_b (itself 0 or NaN per j) and
    ``col`` = :func:`_nan_or_zero` of a^p: each term is 0 or NaN, so entry (j, k) is NaN exactly when
    some f_bj is NaN or some a_bk^p is not finite (0·∞ = NaN), and 0 otherwise — what the product
    computes in IEEE arithmetic."""
    return row if col is None else row.unsqueeze(1) + col.unsqueeze(0)


def batch_sums_many(parts: Mapping[str, Mapping[str, Part]]) -> dict[str, dict[str, torch.Tensor]]:
    """Σ_b of every part of several parameters (name → key → Part), with as few kernels as possible
    (THEORY §7, §8).

    * Factored parts (f (B, n), a (B, m), power p) that share their input factor and power — of any
      parameter — are stacked along the output dimension into one matrix product
      [f₁ … f_K]ᵀ a^p, (K·n, m), with a^p formed once per (a, p) (a⁴ as (a²)²);
    * a dense part (``a`` None) whose per-row factor f is also the factor of a stacked part (the bias
      of a Linear layer shares its rows with the weight on the fast path) takes its sum from one
      column sum of the stacked matrix, Σ_b [f₁ … f_K] (K·n,);
    * a part flagged :attr:`Part.zero` (its factor is c_b·g_bj with c ≡ 0: every entry 0 or NaN) is
      summed without a product (:func:`_zero_sum`: exact, NaN where the product would be NaN);
    * every other part: :meth:`Part.batch_sum`.

    No host synchronisation: nothing depends on the values.  The sums of a stacked group are views of
    one result tensor (non-overlapping: each may be updated in place)."""
    out: dict[str, dict[str, torch.Tensor]] = {name: {} for name in parts}
    groups: dict[tuple, dict] = {}                  # (id(a), p) → {"a", "fs": [f], "index": id(f) → column}
    dense: list[tuple[str, str, Part]] = []
    for name, d in parts.items():
        for k, part in d.items():
            if part.a is not None and part.f.dim() == 2 and not part.zero:
                g = groups.setdefault((id(part.a), part.p), {"a": part.a, "p": part.p, "fs": [], "col": {}, "to": []})
                if id(part.f) not in g["col"]:
                    g["col"][id(part.f)] = len(g["fs"])
                    g["fs"].append(part.f)
                g["to"].append((name, k, g["col"][id(part.f)]))
            else:
                dense.append((name, k, part))
    powers: dict[tuple, torch.Tensor] = {}
    colsums: dict[int, torch.Tensor] = {}           # id(f) → Σ_b f (from a stacked group)
    cols: dict[tuple, torch.Tensor] = {}            # (id(a), p) → Σ_b 0·a^p (0 or NaN per column)
    rows: dict[int, torch.Tensor] = {}              # id(f) → Σ_b f of a zero part (weight and bias share f)
    for (aid, p), g in sorted(groups.items(), key=lambda kv: kv[0][1]):
        half = powers.get((aid, p // 2)) if p % 2 == 0 else None
        ap = powers[(aid, p)] = half.square() if half is not None else _power(g["a"], p)
        fs = g["fs"]
        F = fs[0] if len(fs) == 1 else torch.cat(fs, 1)                   # (B, K·n)
        S = F.T @ ap                                                      # (K·n, m)
        n = [f.shape[1] for f in fs]
        blocks = torch.split(S, n, 0)
        for name, k, c in g["to"]:
            out[name][k] = blocks[c]
        if any(part.a is None and id(part.f) in g["col"] and id(part.f) not in colsums for _, _, part in dense):
            for f, cs in zip(fs, torch.split(F.sum(0), n, 0)):
                colsums.setdefault(id(f), cs)
    for name, k, part in dense:
        if part.a is None and id(part.f) in colsums:
            out[name][k] = colsums[id(part.f)]
        elif part.zero and (part.a is None or part.f.dim() == 2):
            col = None
            if part.a is not None:
                col = cols.get((id(part.a), part.p))
                if col is None:
                    known = powers.get((id(part.a), part.p))
                    col = cols[(id(part.a), part.p)] = _nan_or_zero(part._ap() if known is None else known,
                                                                    part.p % 2 == 0)
            row = rows.get(id(part.f))
            if row is None:
                row = rows[id(part.f)] = part.f.sum(0)
            out[name][k] = _zero_sum(row, col)
        else:
            out[name][k] = part.batch_sum()
    # every returned tensor is its own (callers update the sums in place): a repeat (two keys with the
    # same factor object) is cloned
    seen: set[int] = set()
    res: dict[str, dict[str, torch.Tensor]] = {}
    for name, d in parts.items():
        res[name] = {}
        for k in d:
            t = out[name][k]
            if id(t) in seen:
                t = t.clone()
            seen.add(id(t))
            res[name][k] = t
    return res


@dataclass
class Part:
    """Per-input values ``f[b, *fshape] · a[b, k]^p`` (shape (B, *fshape, m)), or ``f`` when ``a`` is None."""

    f: torch.Tensor
    a: torch.Tensor | None = None
    p: int = 0
    #: f is known to be c_b·g with c ≡ 0 exactly (a bound whose constant is 0 for every input), so
    #: every entry is 0 or NaN: :func:`batch_sums_many` sums it without a matrix product
    zero: bool = False

    @property
    def batch(self) -> int:
        """The number B of inputs."""
        return self.f.shape[0]

    def materialize(self) -> torch.Tensor:
        """The dense array, shape (B, *param.shape)."""
        if self.a is None:
            return self.f
        return self.f.unsqueeze(-1) * self._ap().unsqueeze(-2)

    def _ap(self) -> torch.Tensor:
        assert self.a is not None                    # only factored parts have a column factor
        return _power(self.a, self.p)

    def take(self, index: torch.Tensor) -> Part:
        """The same values for the inputs ``index`` only (rows of f and a), without materialising."""
        return Part(self.f[index], None if self.a is None else self.a[index], self.p, self.zero)

    def with_f(self, f: torch.Tensor, p: int | None = None) -> Part:
        """Same input factor, new per-row factor (e.g. a bound computed from f)."""
        return Part(f, self.a, self.p if p is None else p)

    def scale(self, c: torch.Tensor) -> Part:
        """Multiply input b's values by c[b]."""
        c = c.reshape(c.shape + (1,) * (self.f.dim() - 1))
        return Part(self.f * c, self.a, self.p)

    def square(self) -> Part:
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
