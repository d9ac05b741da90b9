"""The per-parameter moments of a data set from which every estimator's exact mean and variance follow
(THEORY §8, §9, §13).

One pass over the data accumulates, per parameter θ_i (tensors of ``param.shape``), only what the
requested estimators need (:data:`NEEDS`):

* ``"fisher"``: M, Σ_m I_m, Var_q I (centred, :class:`~fishersym.numeric.dataset.CentredMoments`) and
  the cross sum Σ_b Σ_{m≠n ∈ b} I_m I_n over the batches the batched estimators square (an exclusive
  prefix sum: every term non-negative, no cancellation);
* ``"v1"``: Σ_m v₁(θ_i|x_m) with v₁ = N·V₁ for one label (Lemma 3.1, THEORY §3);
* ``"v2"``: Σ_m v₂(θ_i|x_m), v₂ = w_iᵀΣw_i;
* ``"q4"``: Σ_m ‖L_mᵀu_{m,i}‖₄⁴ with L_mL_mᵀ = Σ_m (the family's :meth:`sigma_factor_t`), and the
  Rademacher-probe variance Σ_m (2I_m² − 2‖L_mᵀu_m‖₄⁴), summed as 2Σ_{a≠b}A_a²A_b² (A = Lᵀu, ≥ 0);
* ``"gram"``: Σ_m Σ_{j≠i} F_m,ij² = Σ_m [u_iᵀΣ_m(J_mJ_mᵀ)Σ_mu_i − I_m²] (per-input C × C Gram over
  all parameters; per input a difference of two non-negative terms, so its rounding is relative to
  (F_m²)_ii: a parameter with no off-diagonal coupling can come out as ±ε·I_m² instead of 0);
* ``"F"``: the data-set Fisher F = Σ_m J_mᵀΣ_mJ_m (P × P, all parameters) → Σ_{j≠i} F_ij² (the
  diagonal zeroed first, so no cancellation);
* ``"score"``: the scores s_m = u_iᵀ(t(y_m) − η_m) at the *observed* labels: Σ_b (Σ_{m∈b} s_m)², the
  central moments of s up to order 4 and those of s² (THEORY §9).

**Batches.** The batched estimators square the gradient of a batch.  A tensor or an (x, y) tuple is
one batch of all M inputs (split internally only to bound memory); a list of batches or a loader keeps
its batches, so a draw is Σ_b (Σ_{m∈b} s_m)², as EWC codes compute it batch by batch.

I, v₁, v₂ come from :func:`fishersym.numeric.conditional_stats` (its exact paths); the others from the
per-input Jacobians u (:func:`fishersym.numeric.reverse.per_sample_jacobians`).  Per-input values carry
the model's precision (use float64 to verify; ``conditional_stats`` flags float32's loss in V₁); every
sum over inputs is accumulated in float64, so a float32 model loses nothing more over a large data set.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..families.base import ExponentialFamily
from ..numeric.checks import check_inputs
from ..numeric.conditional import conditional_stats
from ..numeric.dataset import CentredMoments, add_input_print, input_print_values, iter_data
from ..numeric.estimators import statistic
from ..numeric.guard import check_budget
from ..numeric.guard import memory_budget as memory_budget_bytes
from ..numeric.reverse import per_sample_jacobians

__all__ = ["DataMoments", "data_moments", "NEEDS", "HigherMoments", "unflatten", "jacobian_batch_size"]

NEEDS = ("fisher", "v1", "v2", "q4", "gram", "F", "score")


class HigherMoments:
    """Count, mean and central sums M₂, M₃, M₄ of a stream of values per entry, merged exactly.

    Pébay (2008), with δ = mean_b − mean_a and n = n_a + n_b:

        M₂ = M₂a + M₂b + δ²n_an_b/n
        M₃ = M₃a + M₃b + δ³n_an_b(n_a − n_b)/n² + 3δ(n_aM₂b − n_bM₂a)/n
        M₄ = M₄a + M₄b + δ⁴n_an_b(n_a² − n_an_b + n_b²)/n³ + 6δ²(n_a²M₂b + n_b²M₂a)/n² + 4δ(n_aM₃b − n_bM₃a)/n

    so the cumulants of the empirical distribution never come from raw power sums.

    >>> import torch
    >>> v = torch.tensor([[1.0], [2.0], [4.0], [8.0]], dtype=torch.float64)
    >>> hm = HigherMoments(); hm.add(v[:1]); hm.add(v[1:])
    >>> [round(float(k), 6) for k in hm.cumulants()]      # mean, μ₂, μ₃, μ₄ − 3μ₂² of 1, 2, 4, 8
    [3.75, 7.1875, 12.65625, -56.773438]
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None
        self.m3: torch.Tensor | None = None
        self.m4: torch.Tensor | None = None

    def add(self, values: torch.Tensor) -> None:
        """Merge a batch ``values`` (n, ...) of the stream into the running moments."""
        nb = values.shape[0]
        mb = values.mean(0)
        d = values - mb
        d2 = d * d
        self._merge(nb, mb, d2.sum(0), (d2 * d).sum(0), (d2 * d2).sum(0))

    def _merge(self, nb, mb, m2b, m3b, m4b) -> None:
        if nb == 0:
            return
        if self.n == 0:
            self.n, self.mean, self.m2, self.m3, self.m4 = nb, mb, m2b, m3b, m4b
            return
        na, n = self.n, self.n + nb
        assert self.mean is not None and self.m2 is not None and self.m3 is not None and self.m4 is not None
        d = mb - self.mean
        m2a, m3a, m4a = self.m2, self.m3, self.m4
        self.m4 = (m4a + m4b + d ** 4 * (na * nb * (na * na - na * nb + nb * nb) / n ** 3)
                   + 6 * d * d * (na * na * m2b + nb * nb * m2a) / n ** 2 + 4 * d * (na * m3b - nb * m3a) / n)
        self.m3 = m3a + m3b + d ** 3 * (na * nb * (na - nb) / n ** 2) + 3 * d * (na * m2b - nb * m2a) / n
        self.m2 = m2a + m2b + d * d * (na * nb / n)
        self.mean = self.mean + d * (nb / n)
        self.n = n

    def cumulants(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(k₁, k₂, k₃, k₄) of the empirical distribution: mean, μ₂, μ₃, μ₄ − 3μ₂²."""
        n = self.n
        if self.mean is None or self.m2 is None or self.m3 is None or self.m4 is None:
            raise ValueError("HigherMoments.cumulants: no values were added")
        mu2, mu3, mu4 = self.m2 / n, self.m3 / n, self.m4 / n
        return self.mean, mu2, mu3, mu4 - 3 * mu2 * mu2


@dataclass
class DataMoments:
    """What one pass over M inputs leaves per parameter (see the module docstring).  Every field is a
    dict {parameter name: tensor of param.shape} (I_sum, I_var and I_cross always; the others None when
    not requested); all values are exact (sums of exact per-input quantities, up to rounding)."""
    M: int
    names: list[str]
    shapes: dict[str, torch.Size]
    family: ExponentialFamily
    have: frozenset[str]
    I_sum: dict[str, torch.Tensor] = field(default_factory=dict)
    I_var: dict[str, torch.Tensor] = field(default_factory=dict)    # Var_q I = M₂/M
    I_cross: dict[str, torch.Tensor] = field(default_factory=dict)  # Σ_b Σ_{m≠n in batch b} I_m I_n
    v1_sum: dict[str, torch.Tensor] | None = None
    v2_sum: dict[str, torch.Tensor] | None = None
    q4_sum: dict[str, torch.Tensor] | None = None         # Σ_m ‖L_mᵀu_m‖₄⁴
    rad_sum: dict[str, torch.Tensor] | None = None        # Σ_m 2Σ_{a≠b}(Lᵀu)_a²(Lᵀu)_b² = Σ_m (2I_m² − 2‖Lᵀu_m‖₄⁴)
    gram_off_sum: dict[str, torch.Tensor] | None = None   # Σ_m Σ_{j≠i} F_m,ij² = Σ_m [(F_m²)_ii − F_m,ii²]
    F_off: dict[str, torch.Tensor] | None = None          # Σ_{j≠i} F_ij², F = Σ_m F_m
    score_batch_sq: dict[str, torch.Tensor] | None = None  # Σ_b (Σ_{m in b} s_m)² (observed labels)
    score: HigherMoments | None = None                    # central moments of s (flattened entries)
    score_sq: CentredMoments | None = None                # centred moments of s²
    #: sizes of the batches the batched estimators square (one batch of all M inputs unless the data
    #: came as a list of batches or a loader, whose batches are kept)
    batch_sizes: list[int] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def require(self, needs: Iterable[str], who: str) -> None:
        """Raise a ValueError naming ``who`` when a moment in ``needs`` was not computed."""
        missing = sorted(set(needs) - self.have)
        if missing:
            raise ValueError(f"{who} needs the data moments {missing}, which this DataMoments lacks (it has "
                             f"{sorted(self.have)}); compute them with data_moments(..., needs=...)")

    @property
    def I_sq_sum(self) -> dict[str, torch.Tensor]:
        """Σ_m I_m² = M(Var_q I + Ī²)."""
        M = self.M
        return {n: M * (self.I_var[n] + (self.I_sum[n] / M) ** 2) for n in self.names}


def _stack_u(U: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    """(B, C, P): the per-input Jacobians of all tensors side by side."""
    return torch.cat([U[n].reshape(U[n].shape[0], U[n].shape[1], -1) for n in names], -1)


def _check_needs(needs) -> frozenset[str]:
    if isinstance(needs, str):
        needs = (needs,)
    bad = sorted(set(needs) - set(NEEDS))
    if bad:
        raise ValueError(f"unknown data moments {bad}; the available ones are {list(NEEDS)}")
    return frozenset(needs) | {"fisher"}


def jacobian_batch_size(model: nn.Module, C: int, memory_budget: int | str | None = None, cap: int = 64) -> int:
    """The largest batch (≤ ``cap``) whose per-input Jacobians (3·B·C·P values) fit the memory budget."""
    params = [p for p in model.parameters() if p.requires_grad]
    P = sum(p.numel() for p in params)
    item = torch.finfo(params[0].dtype).bits // 8 if params else 8
    return max(1, min(cap, memory_budget_bytes(memory_budget) // max(1, 3 * C * P * item)))


def data_moments(model: nn.Module, data, family: ExponentialFamily, needs: Iterable[str], *,
                 batch_size: int | None = None, memory_budget: int | str | None = None,
                 progress: bool | None = None, process_group=None) -> DataMoments:
    """One streamed pass over ``data`` (any form of :data:`fishersym.numeric.dataset.DATA_FORMS`)
    accumulating the moments in ``needs`` (a subset of :data:`NEEDS`; ``"fisher"`` is always included).
    ``"score"`` needs observed labels: ``data`` must carry them ((x, y) batches).  ``"F"`` holds the
    P × P data-set Fisher, sized against ``memory_budget`` before it is allocated.  ``batch_size``
    None: the largest batch ≤ 64 whose Jacobians fit the budget (:func:`jacobian_batch_size`); a tensor
    or (x, y) tuple is split into such batches, a list or loader is read as given.  ``progress``:
    a tqdm bar over the batches (None: when the output is a terminal).

    **Across processes** (``process_group`` as in :func:`fishersym.numeric.dataset_stats`: None the
    WORLD group when ``torch.distributed`` is initialised, False local, or a ProcessGroup): every rank
    passes its own shard and gets the moments of the concatenated shards, identical on every rank.
    The ranks first agree on the model, family, ``needs`` and the form of the data (one batch: a
    tensor or (x, y) tuple on every rank; or batches), raising on every rank where they differ.  Each
    rank's accumulators are then gathered (one ``all_gather``; F by ``all_reduce``) and merged *in rank
    order* on every rank, exactly as consecutive batches are (THEORY §8): sums add; the centred
    moments of I and s² by Chan et al.'s rule and those of s by Pébay's (:class:`HigherMoments`); for
    one batch spanning all shards, the cross sums by the exclusive prefix over ranks
    Σ_{m≠n} I_mI_n = Σ_r [cross_r + 2 S_r·Σ_{s<r} S_s] with S_r = Σ_{m∈r} I_m (non-negative terms
    only), and the batch score sum as (Σ_r Σ_{m∈r} s_m)².  A rank with no inputs contributes nothing."""
    from ..numeric.distributed import agree, family_signature, parameter_signature, rank_world, resolve_group
    group = resolve_group(process_group)
    # the batched estimators square the gradient of a batch: a tensor or an (x, y) tuple is one batch
    # (split here only to bound memory), a list of batches or a loader keeps its own batches
    one_batch = isinstance(data, (torch.Tensor, tuple))
    fields, prep_err = None, None
    try:                   # argument checks: a failure on one rank is raised on every rank by agree()
        needs = _check_needs(needs)
        if batch_size is None:
            batch_size = jacobian_batch_size(model, family.C, memory_budget)
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if not params:
            raise ValueError("the model has no trainable parameters (requires_grad=True)")
        fields = {**parameter_signature(model, values=group is not None), "family": family_signature(family),
                  "needs": sorted(needs),
                  "data form": "one batch (a tensor or (x, y))" if one_batch else "batches (a list or loader)"}
    except Exception as exc:  # noqa: BLE001 - re-raised on every rank by agree()
        prep_err = exc
    agree(fields, group, "data_moments", {"parameter values": "broadcast the model's state_dict from rank 0",
                                          "data form": "pass every rank's shard in the same form"}, error=prep_err)
    st: dict | None = None
    err: Exception | None = None
    try:
        st = _local_pass(model, data, family, needs, params, one_batch, batch_size, memory_budget, progress,
                         keep_open=group is not None and one_batch, distributed=group is not None)
    except Exception as exc:  # raised on every rank by _merge_ranks
        if group is None:
            raise
        err = exc
    if group is not None:
        st = _merge_ranks(st, err, group, model, params, needs, one_batch)
    assert st is not None      # a failed local pass was raised above (by _merge_ranks on every rank)
    M = st["M"]
    if M == 0:
        raise ValueError("the data contained no inputs")
    names, shapes = list(params), {n: p.shape for n, p in params.items()}
    acc, F = st["acc"], st["F"]
    out = DataMoments(M=M, names=names, shapes=shapes, family=family, have=frozenset(needs),
                      batch_sizes=st["sizes"])
    out.I_sum = acc["I"]
    out.I_var = {n: st["Imom"][n].m2 / M for n in names}
    out.I_cross = acc["cross"]
    if "v1" in needs:
        out.v1_sum = acc["v1"]
    if "v2" in needs:
        out.v2_sum = acc["v2"]
    if "q4" in needs:
        out.q4_sum, out.rad_sum = acc["q4"], acc["rad"]
    if "gram" in needs:
        out.gram_off_sum = acc["gram"]
    if "F" in needs:
        F.fill_diagonal_(0)
        out.F_off = unflatten((F * F).sum(0), names, shapes)             # Σ_{j≠i} F_ij², no cancellation
    if "score" in needs:
        out.score_batch_sq, out.score, out.score_sq = acc["s"], st["score"], st["score_sq"]
    out.info.update(path=st["path"], sigma_factor=getattr(family, "sigma_factor_name", None))
    if group is not None:
        out.info["distributed"] = {"world_size": rank_world(group)[1], "inputs_per_rank": st["per_rank"]}
    return out


#: the per-parameter sums of :func:`data_moments` (acc keys) merged by addition across ranks
_SUM_KEYS = ("I", "cross", "v1", "v2", "q4", "rad", "gram", "s")


def _local_pass(model, data, family, needs, params, one_batch, batch_size, memory_budget, progress,
                keep_open: bool, distributed: bool = False) -> dict:
    """This process's pass over its data: the accumulators of :func:`data_moments` (``keep_open``: leave
    the one batch's score sum S_b open, for the ranks' merge).  An empty batch is an error, except in a
    distributed pass (a rank's shard may be empty), as in :func:`fishersym.numeric.dataset_stats`."""
    names = list(params)
    shapes = {n: p.shape for n, p in params.items()}
    dtype = next(iter(params.values())).dtype
    P = sum(p.numel() for p in params.values())
    item = torch.finfo(dtype).bits // 8
    if "F" in needs:
        check_budget(P * P * 8, f"the data-set Fisher F (P × P with P = {P}) for param_hutchinson's (F²)_ii",
                     ["leave param_hutchinson out (estimators=...)", "analyse fewer parameters"], memory_budget)
    keys = ["fisher"] + (["var1"] if "v1" in needs else []) + (["var2"] if "v2" in needs else [])
    need_u = bool(needs & {"q4", "gram", "F", "score"})
    batches, n_batches = iter_data(data, batch_size)
    batches = tqdm(batches, total=n_batches, desc="estimator moments", leave=False,
                   disable=progress is False if progress is not None else None)
    C = family.C
    acc: dict[str, dict[str, torch.Tensor]] = {
        k: {} for k in ("I", "cross", "run", "v1", "v2", "q4", "rad", "gram", "s")}
    Imom = {n: CentredMoments() for n in names}
    F = None
    score = HigherMoments() if "score" in needs else None
    score_sq = CentredMoments() if "score" in needs else None
    M = 0
    sizes: list[int] = []
    S_b: dict[str, torch.Tensor] = {}          # the current batch's Σ_m s_m
    fp: list = [0, None, None]
    path = None

    def add(key, n, v):                      # every sum is accumulated in float64, whatever the model's dtype
        v = v.double()
        acc[key][n] = acc[key][n] + v if n in acc[key] else v

    for k, (xb, yb) in enumerate(batches):
        if xb.dim() > 0 and xb.shape[0] == 0:        # an empty shard (e.g. a rank without inputs)
            if not distributed:
                raise ValueError(f"batch {k} of the data is empty (0 inputs): drop empty batches from the list "
                                 "or loader (an empty shard is allowed only in a distributed pass)")
            continue
        xb = check_inputs(xb, dtype)
        B = xb.shape[0]
        if "score" in needs and yb is None:
            raise ValueError("the empirical estimators need observed labels: pass data as (x, y) or (x, y) batches")
        if need_u:
            check_budget(B * C * P * item * 3, f"the per-input Jacobians of a batch of {B} inputs (B·C·P values)",
                         ["a smaller batch_size="], memory_budget)
        r = conditional_stats(model, xb, family, keys=keys, precision_check=0, progress=False,
                              memory_budget=memory_budget)
        path = r.path
        for n in names:
            I = r["fisher"][n].double()
            Imom[n].add(I)
            run = acc["run"].get(n, torch.zeros_like(I[0]))
            cs = torch.cumsum(I, 0)
            excl = torch.cat([torch.zeros_like(cs[:1]), cs[:-1]]) + run   # Σ_{n' < m} I_{n'}: sums of I ≥ 0 only
            add("cross", n, 2 * (I * excl).sum(0))
            acc["run"][n] = run + I.sum(0)
            add("I", n, I.sum(0))
            if "v1" in needs:
                add("v1", n, r["var1"][n].double().sum(0))
            if "v2" in needs:
                add("v2", n, r["var2"][n].double().sum(0))
        if need_u:
            with torch.no_grad():
                h = family.natural(model(xb))
            U = per_sample_jacobians(model, xb, family, names)            # {n: (B, C, *shape)}
            J = _stack_u(U, names)                                        # (B, C, P)
            del U
            Jt = J.transpose(1, 2)                                        # (B, P, C)
            if "q4" in needs or "F" in needs:
                A = family.sigma_factor_t(h, Jt)                          # (B, P, C): L_mᵀu_{m,i}
                if "q4" in needs:
                    A2 = A * A
                    S = A2.sum(-1, keepdim=True)
                    q4 = (A2 * A2).sum(-1).sum(0)
                    rad = 2 * (A2 * (S - A2)).sum(-1).sum(0)  # 2Σ_{a≠b}A_a²A_b² = 2I² − 2‖Lᵀu‖₄⁴ ≥ 0
                    for n, v in unflatten(q4, names, shapes).items():
                        add("q4", n, v)
                    for n, v in unflatten(rad, names, shapes).items():
                        add("rad", n, v)
                if "F" in needs:
                    At = A.reshape(B, -1, C).transpose(1, 2).reshape(B * C, P).double()
                    F = At.T @ At if F is None else F.addmm_(At.T, At)
                del A
            if "gram" in needs:
                S = family.sigma(h)                                       # (B, C, C)
                G = torch.einsum("bcp,bdp->bcd", J, J)                   # J_mJ_mᵀ
                SU = torch.einsum("bcd,bpd->bpc", S, Jt)                  # Σ_m u_{m,i}
                fii = torch.einsum("bpc,bpc->bp", SU, Jt)                # F_m,ii = u_iᵀΣ_mu_i
                g = (torch.einsum("bpc,bcd,bpd->bp", SU, G, SU) - fii * fii).sum(0)   # Σ_m Σ_{j≠i} F_m,ij²
                for n, v in unflatten(g, names, shapes).items():
                    add("gram", n, v)
            if "score" in needs:
                T = statistic(family, yb, dtype)
                rr = T - family.mean(h)                                   # (B, C)
                s = torch.einsum("bpc,bc->bp", Jt, rr)                    # (B, P)
                s = s.double()
                assert score is not None and score_sq is not None
                score.add(s)
                score_sq.add(s * s)
                for n, v in unflatten(s.sum(0), names, shapes).items():
                    S_b[n] = S_b[n] + v if n in S_b else v
            del J, Jt
        M += B
        fp = add_input_print(fp, xb)
        if one_batch and sizes:
            sizes[0] += B
        else:
            sizes.append(B)
            if not one_batch:                  # a new given batch: the cross terms and score sums restart
                acc["run"] = {}
                _close_batch(acc, S_b)
    if not keep_open:
        _close_batch(acc, S_b)
    return {"M": M, "acc": acc, "Imom": Imom, "F": F, "score": score, "score_sq": score_sq, "sizes": sizes,
            "S_b": S_b, "path": path, "fp": fp}


def _merge_ranks(st: dict | None, err, group, model, params, needs, one_batch) -> dict:
    """The global state from every rank's :func:`_local_pass` (see :func:`data_moments`): the same on
    every rank (all ranks merge the gathered states in rank order)."""
    from ..numeric.distributed import (DistributedMismatchError, all_gather_flat, all_reduce_flat, gather_outcome,
                                       rank_world)
    rank, world = rank_world(group)
    names = list(params)
    shapes = {n: p.shape for n, p in params.items()}
    P = sum(p.numel() for p in params.values())
    device = next(iter(params.values())).device
    meta = None if st is None else {"M": st["M"], "sizes": st["sizes"], "path": st["path"],
                                    "fp": input_print_values(st["fp"]), "F": st["F"] is not None}
    metas = gather_outcome(meta, err, group, "data_moments")
    assert st is not None      # gather_outcome raised on every rank if any rank failed
    prints = [m["fp"] for m in metas]
    if world > 1 and all(m["M"] > 0 for m in metas) and all(p == prints[0] for p in prints):
        raise DistributedMismatchError(
            f"data_moments: all {world} ranks passed the same data ({prints[0][0]} inputs with equal sums and sums of "
            "squares): each rank must pass its own shard (fishersym.numeric.distributed.shard(data) or a "
            "DistributedSampler), or process_group=False for a local pass on every rank")
    z = lambda shape: torch.zeros(shape, dtype=torch.float64, device=device)  # noqa: E731
    keys = [k for k in _SUM_KEYS if k in ("I", "cross") or (k in ("v1", "v2", "gram") and k in needs)
            or (k in ("q4", "rad") and "q4" in needs) or (k == "s" and "score" in needs)]
    mine = st["M"] > 0
    layout: list[tuple] = []
    tensors: list[torch.Tensor] = []

    def put(tag, t):
        layout.append(tag)
        tensors.append(t.to(device=device, dtype=torch.float64))

    for k in keys:
        for n in names:
            put(("sum", k, n), st["acc"][k].get(n, z(shapes[n])) if mine else z(shapes[n]))
    for n in names:
        put(("run", n), st["acc"]["run"].get(n, z(shapes[n])) if mine and one_batch else z(shapes[n]))
        a = st["Imom"][n] if mine else None
        put(("Imean", n), a.mean if a is not None else z(shapes[n]))
        put(("Im2", n), a.m2 if a is not None else z(shapes[n]))
        if "score" in needs:
            put(("Sb", n), st["S_b"].get(n, z(shapes[n])) if mine else z(shapes[n]))
    if "score" in needs:
        sc, sq = (st["score"], st["score_sq"]) if mine else (None, None)
        for f in ("mean", "m2", "m3", "m4"):
            put(("score", f), getattr(sc, f) if sc is not None else z((P,)))
        for f in ("mean", "m2"):
            put(("score_sq", f), getattr(sq, f) if sq is not None else z((P,)))
    got = all_gather_flat(tensors, group)
    ranks = [{tag: t for tag, t in zip(layout, g)} for g in got]
    out_acc: dict[str, dict[str, torch.Tensor]] = {k: {} for k in keys}
    Imom = {n: CentredMoments() for n in names}
    score = HigherMoments() if "score" in needs else None
    score_sq = CentredMoments() if "score" in needs else None
    run_before = {n: z(shapes[n]) for n in names}
    S_tot = {n: z(shapes[n]) for n in names}
    for m, d in zip(metas, ranks):                          # rank order: as consecutive data
        if m["M"] == 0:
            continue
        for k in keys:
            for n in names:
                v = d[("sum", k, n)]
                if k == "cross" and one_batch:                # pairs across shards: 2 S_r · Σ_{s<r} S_s ≥ 0
                    v = v + 2 * d[("run", n)] * run_before[n]
                out_acc[k][n] = out_acc[k][n] + v if n in out_acc[k] else v.clone()
        for n in names:
            run_before[n] = run_before[n] + d[("run", n)]
            Imom[n].merge_stats(m["M"], d[("Imean", n)], d[("Im2", n)])
            if "score" in needs:
                S_tot[n] = S_tot[n] + d[("Sb", n)]
        if "score" in needs:
            assert score is not None and score_sq is not None
            score._merge(m["M"], *(d[("score", f)] for f in ("mean", "m2", "m3", "m4")))
            score_sq.merge_stats(m["M"], d[("score_sq", "mean")], d[("score_sq", "m2")])
    if "score" in needs and one_batch:
        _close_batch(out_acc, S_tot)                      # the one batch spans every shard: (Σ_r S_r)²
    F = None
    if "F" in needs:
        F = st["F"] if mine and st["F"] is not None else z((P, P))
        F = all_reduce_flat([F], group)[0]
    sizes = ([sum(m["M"] for m in metas)] if one_batch else [b for m in metas for b in m["sizes"]])
    path = next((m["path"] for m in metas if m["path"] is not None), None)
    return {"M": sum(m["M"] for m in metas), "acc": out_acc, "Imom": Imom, "F": F, "score": score,
            "score_sq": score_sq, "sizes": sizes, "path": path, "per_rank": [m["M"] for m in metas]}


def _close_batch(acc: dict, S_b: dict[str, torch.Tensor]) -> None:
    """Add the finished batch's (Σ_m s_m)² to acc["s"] and clear it."""
    for n, v in S_b.items():
        acc["s"][n] = acc["s"][n] + v * v if n in acc["s"] else v * v
    S_b.clear()


def unflatten(flat: torch.Tensor, names: list[str], shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Split a flat (P,) vector into {name: tensor of shape}, in the order of ``names``."""
    out, k = {}, 0
    for n in names:
        c = shapes[n].numel()
        out[n] = flat[k:k + c].reshape(shapes[n])
        k += c
    return out
