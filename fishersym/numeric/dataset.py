"""Many-input statistics: ``dataset_stats`` (THEORY.md §8, paper Theorem 4.7).

Write v_k(θ_i|x) = N·V_k(θ_i|x) (one label sample) and I(θ_i) = E_q I(θ_i|x)
with q the empirical distribution of the data set (M inputs).

* scheme ``"all"``: every input of the set, N labels each:
      Var Î_k(θ_i) = (1/M²) Σ_m v_k(θ_i|x_m)/N;
* scheme ``"iid"``: M' (``m_inputs``, default M) inputs drawn i.i.d. from q,
  N labels each (law of total variance):
      Var Î_k(θ_i) = (1/M') [ Var_q I(θ_i|x) + E_q v_k(θ_i|x)/N ].

Bounds are summed the same way: for "all" the per-input Theorem 4.1 bounds
are averaged and divided by M; for "iid" the exact input term Var_q I is
kept and the per-input bound replaces E_q v_k/N.  ``input_var`` is Var_q I
and ``input_var_upper`` Lemma 4.8's E_q[‖u_i‖⁴λ_max(Σ)²] ≥ Var_q I.

Inputs are streamed batch by batch; per-parameter sums over inputs are one
matrix product per layer on the fast path (THEORY §7).  Var_q I is accumulated
in centred form (per-batch mean and M₂ = Σ (I − mean)², merged by Chan et al.'s
exact rule, :class:`CentredMoments`), never as E[I²] − (E I)²: it is a sum of
squares (never negative; 0 for repeated inputs up to the rounding of the mean),
and shards of the data can be merged exactly.  ``data`` has one meaning in every
entry point (:func:`iter_data`): a tuple (x, y) is inputs and labels, a list is
batches.
"""
from __future__ import annotations

from collections.abc import Mapping as _MappingABC
from typing import Iterable, Iterator, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from ..bounds.lemma48 import lemma48_bound
from ..families.base import ExponentialFamily
from .checks import GENERIC_MAX_PARAMS, check_count, check_inputs
from .conditional import (_check_n, analyse_batch, check_group_bounds, check_sampled_grams, check_sizes, check_v2,
                          group_trace_bounds, resolve_family, sampling_description, select_engine, v2_info)
from .core import mquad_cancels
from .guard import guarded
from .parts import Part, batch_sums
from .precision import check_inputs_count, measured_v1_error
from .stats import DEFAULT_LEVEL, StatsResult, add_derived, apply_sampling, cancellation_ratio, rel_sd, resolve_groups

__all__ = ["dataset_stats", "iter_batches", "iter_data", "CentredMoments", "DATA_FORMS"]

#: the accepted forms of ``data`` (one meaning in every entry point that takes data)
DATA_FORMS = ("a tensor of inputs (batch, ...), split into batches of batch_size; "
              "a tuple (x, y) of two tensors with equal first dimension: inputs and labels, split alike; "
              "a list of batches, each a tensor of inputs or an (x, y, ...) tuple (all items of one kind); "
              "or any other iterable of such batches (e.g. a DataLoader)")


def _n_rows(t: torch.Tensor, what: str) -> int:
    if t.dim() == 0:
        raise ValueError(f"{what} need a leading batch dimension, got a 0-d tensor")
    return t.shape[0]


def _item(item, k: int) -> tuple[str, torch.Tensor, torch.Tensor | None]:
    """One batch of an iterable: ("tensor", x, None) or ("tuple", x, y)."""
    if isinstance(item, torch.Tensor):
        return "tensor", item, None
    if isinstance(item, (tuple, list)):
        if len(item) == 0 or not isinstance(item[0], torch.Tensor):
            first = type(item[0]).__name__ if len(item) else "nothing"
            raise TypeError(f"batch {k} is a {type(item).__name__} whose first element is {first}, not a tensor "
                            "of inputs; each batch must be a tensor or an (x, y, ...) tuple of tensors")
        x, y = item[0], (item[1] if len(item) > 1 else None)
        if y is not None:
            if not isinstance(y, torch.Tensor):
                raise TypeError(f"batch {k}: the labels (second element) must be a tensor or None, "
                                f"got {type(y).__name__}")
            if y.dim() > 0 and x.dim() > 0 and y.shape[0] != x.shape[0]:
                raise ValueError(f"batch {k}: the inputs have {x.shape[0]} rows but the labels {y.shape[0]}; "
                                 "an (x, y) batch needs one label row per input")
        return "tuple", x, y
    hint = " (convert with torch.as_tensor)" if hasattr(item, "__array__") else ""
    raise TypeError(f"batch {k} is a {type(item).__name__}{hint}; each batch must be a tensor or an "
                    "(x, y, ...) tuple of tensors")


def iter_data(data, batch_size: int = 256) -> tuple[Iterator[tuple[torch.Tensor, torch.Tensor | None]], int | None]:
    """The one reading of ``data`` shared by every entry point (issue 13 item 3): (iterator of (x, y)
    batches with y None when there are no labels, number of batches or None when unknown).

    See :data:`DATA_FORMS`.  A tuple is always (inputs, labels); batches are given as a list (or an
    iterable).  Ambiguous data are refused: a tuple that is not two tensors of equal first dimension,
    a list mixing tensors and tuples, list batches of different trailing shapes (an (x, y) pair
    passed as a list), strings, mappings and arrays."""
    batch_size = check_count(batch_size, "batch_size")
    if isinstance(data, torch.Tensor):
        n = _n_rows(data, "data")
        return ((xb, None) for xb in torch.split(data, batch_size)), -(-n // batch_size)
    if isinstance(data, tuple):
        if len(data) == 2 and isinstance(data[0], torch.Tensor) and (data[1] is None
                                                                     or isinstance(data[1], torch.Tensor)):
            x, y = data
            n = _n_rows(x, "the inputs x of (x, y)")
            if y is None:
                return ((xb, None) for xb in torch.split(x, batch_size)), -(-n // batch_size)
            if _n_rows(y, "the labels y of (x, y)") != n:
                raise ValueError(f"data is a tuple, read as (inputs, labels), but the inputs have {n} rows and "
                                 f"the labels {y.shape[0]}; one label row per input is needed. To pass "
                                 "batches, use a list: [x1, x2, ...] or [(x1, y1), (x2, y2), ...]")
            return zip(torch.split(x, batch_size), torch.split(y, batch_size)), -(-n // batch_size)
        kinds = ", ".join(type(d).__name__ for d in data)
        raise ValueError(f"data is a tuple of {len(data)} items ({kinds}); a tuple is read as (inputs, labels): "
                         "two tensors with equal first dimension. To pass batches, use a list: "
                         "[x1, x2, ...] or [(x1, y1), (x2, y2), ...]")
    if isinstance(data, (str, bytes, _MappingABC)) or hasattr(data, "__array__"):
        hint = " (convert with torch.as_tensor)" if hasattr(data, "__array__") else ""
        raise TypeError(f"data is a {type(data).__name__}{hint}; expected " + DATA_FORMS)
    try:
        it = iter(data)
    except TypeError:
        raise TypeError(f"data is a {type(data).__name__}, which is not iterable; expected " + DATA_FORMS) from None
    is_list = isinstance(data, list)

    def gen():
        kind, shape = None, None
        for k, item in enumerate(it):
            ikind, x, y = _item(item, k)
            if kind is None:
                kind = ikind
            elif ikind != kind:
                raise ValueError(f"the data mix batches that are tensors and batches that are tuples (batch 0 is a "
                                 f"{kind}, batch {k} a {ikind}); give every batch as a tensor of inputs, or every "
                                 "batch as an (x, y) tuple")
            if is_list and x.dim() > 0:
                if shape is None:
                    shape = tuple(x.shape[1:])
                elif tuple(x.shape[1:]) != shape:
                    raise ValueError(f"the list's batches have different shapes per input ({shape} in batch 0, "
                                     f"{tuple(x.shape[1:])} in batch {k}); a list is read as batches of inputs. "
                                     "For inputs and labels pass a tuple (x, y)")
            yield x, y

    try:
        n = len(data)
    except TypeError:
        n = None
    return gen(), n


def iter_batches(data, batch_size: int = 256) -> Iterator[torch.Tensor]:
    """The input batches of ``data`` (:func:`iter_data`, labels dropped)."""
    it, _ = iter_data(data, batch_size)
    return (x for x, _ in it)


class CentredMoments:
    """Count, mean and centred sum of squares M₂ = Σ_m (v_m − mean)² of a stream of per-input values,
    per entry (THEORY §8: Var_q I = M₂/M).

    Each batch contributes its own mean and centred M₂ (Welford's two-pass form within the batch), and
    batches (or accumulators of other workers, :meth:`merge`) are combined by Chan et al.'s exact
    parallel merge:  n = n_a + n_b,  δ = mean_b − mean_a,  mean = mean_a + δ·n_b/n,
    M₂ = M₂_a + M₂_b + δ²·n_a·n_b/n.  Every term is a sum of squares: the variance is never negative
    and 0 exactly for repeated values up to the rounding of the mean (no E[v²] − (E v)² cancellation)."""

    #: elements materialised at once when a factored :class:`Part` is expanded
    CHUNK_ELEMENTS = 1 << 21

    def __init__(self) -> None:
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def merge_stats(self, n: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        """Merge the moments (count, mean, M₂) of another set of values (Chan et al.)."""
        if n == 0:
            return
        if self.n == 0:
            self.n, self.mean, self.m2 = n, mean.clone(), m2.clone()
            return
        tot = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / tot)
        self.m2 = self.m2 + m2 + delta.square() * (self.n * n / tot)
        self.n = tot

    def merge(self, other: "CentredMoments") -> None:
        """Merge another accumulator (e.g. another worker's shard of the data)."""
        if other.n:
            self.merge_stats(other.n, other.mean, other.m2)

    def add(self, values: torch.Tensor) -> None:
        """Add a batch of values (B, ...)."""
        B = values.shape[0]
        mean = values.mean(0)
        self.merge_stats(B, mean, (values - mean).square_().sum(0))

    def add_part(self, part: Part) -> None:
        """Add a batch given as a :class:`Part` (values f·a^p) without expanding it where that is safe.

        Per entry, S₁ = Σ_b f_b a_b^p and S₂ = Σ_b f_b² a_b^{2p} are one matrix product each (THEORY §7)
        and M₂ = S₂ − S₁²/B.  That difference cancels: its rounding error is at most
        γ·S₂ with γ = (2B + 8)ε (two sums of B non-negative terms, S₁²/B ≤ S₂ by Cauchy–Schwarz).
        Entries whose relative error bound γ·S₂/M₂ exceeds √ε (near-constant values, e.g. repeated
        inputs, where M₂ ≈ 0) are recomputed by the two-pass form Σ_b (v_b − mean)² on the expanded
        rows of f that hold them (chunks of at most :attr:`CHUNK_ELEMENTS` values).  So every M₂ has
        relative error at most max(√ε, (B + 4)ε) and is never negative."""
        if part.a is None:
            self.add(part.f)
            return
        B = part.f.shape[0]
        f = part.f.reshape(B, -1)
        ap = part._ap()
        n, m = f.shape[1], ap.shape[1]
        s1 = f.T @ ap
        s2 = (f * f).T @ (ap * ap)
        mean = s1 / B
        m2 = s2 - s1 * mean
        eps = torch.finfo(m2.dtype).eps
        risky = m2 <= (2 * B + 8) * eps / eps ** 0.5 * s2          # γ·S₂/M₂ > √ε (or M₂ ≤ 0)
        rows = torch.nonzero(risky.any(1)).flatten()
        if rows.numel():
            k = max(1, min(rows.numel(), self.CHUNK_ELEMENTS // max(1, B * m)))
            for s in range(0, rows.numel(), k):
                r = rows[s:s + k]
                v = f[:, r, None] * ap[:, None, :]
                m2[r] = (v - mean[r]).square_().sum(0)
        shape = (*part.f.shape[1:], m)
        self.merge_stats(B, mean.reshape(shape), m2.reshape(shape))

    def variance(self) -> torch.Tensor:
        """The population variance M₂/n (Var_q over the n values seen)."""
        if self.n == 0:
            raise ValueError("no values were added")
        return self.m2 / self.n


@guarded
def dataset_stats(model: nn.Module, data: torch.Tensor | tuple | Iterable, family: str | ExponentialFamily,
                  n_samples: int = 1, scheme: str = "all", *, m_inputs: int | None = None, path: str = "auto",
                  optimised: bool = False, use_eig: bool | None = None,
                  groups: Mapping[str, Iterable[str] | str] | None = None, group_bounds: bool | str = False,
                  batch_size: int = 256, progress: bool | None = None, chunk_size: int | None = None,
                  max_params: int = GENERIC_MAX_PARAMS, sharpened: bool = True,
                  memory_budget: int | str | None = None, precision_check: int | None = None,
                  v2: str = "exact", v2_sample: int | float | None = None, seed: int | None = None) -> StatsResult:
    """Many-input I(θ_i), Var Î₁, Var Î₂ and bounds per parameter (shape param.shape), THEORY §8.

    ``data`` (one meaning in every entry point, :func:`iter_data`): a tensor of inputs; a tuple
    (x, y) of inputs and labels (labels unused here); a list or other iterable (a DataLoader) of
    batches, each a tensor or an (x, y, ...) tuple; streamed with a tqdm bar (``progress``).
    Keys as in :func:`conditional_stats` (no exact ``prob_neg2``; Cantelli's
    ``prob_neg2_upper`` is given) plus ``input_var`` and ``input_var_upper``
    (``input_var`` = Var_q I accumulated in centred form, :class:`CentredMoments`: never negative,
    and 0 for repeated inputs up to the rounding of the mean).
    ``result.groups`` sums every key over each module's parameters and over
    user ``groups``; ``group_bounds=True`` adds Theorem D.1 / Corollary 4.6;
    ``sharpened=False`` skips the 𝟙^⊥ keys (THEORY §5 [beyond]).

    Certification cost (``use_eig``): the default (None: True when C ≤ 24) also certifies
    λ̃(M), λ̃(K) by the extreme eigenvalues on Sym²(ℝ^C), a batched eigendecomposition of
    C(C+1)/2-dimensional matrices per input; for the softmax with C = 10 this makes the call
    about 10× slower than ``use_eig=False``, which certifies by closed forms only (Theorem 5.2,
    Corollary R.1, exact zeros) and gives V₁ upper bounds about 2× wider on an MNIST-sized
    MLP (the Fisher and V₂ bounds are unchanged).  Every bound is certified either way.

    **Sampled V₂** (``v2="sample"``, ``v2_sample=``, ``seed=``; as in :func:`conditional_stats`).
    The *same* entries are sampled for every input (every batch draws them from a fresh generator
    seeded ``seed``, and the indices are checked to agree across batches): so the data-set values
    of the V₂ keys (means over all inputs) are exact at the sampled entries, and each group total is
    the expansion estimate from those exact per-entry data-set values z_i (Var Î₂(θ_i) under the
    scheme), with s.e. P·√((1 − n/P)s_z²/n) computed from the z_i themselves.  This is the right
    s.e. for the data-set value: per-input errors share the sample, so they must not be combined as
    if independent.  NaN at the entries not sampled; ``result.v2_mask`` marks the exact ones.
    """
    if scheme not in ("all", "iid"):
        raise ValueError(f"scheme must be 'all' or 'iid', got {scheme!r}")
    if m_inputs is not None:
        if scheme == "all":
            raise ValueError("m_inputs applies to scheme='iid' (M inputs drawn from the data); "
                             "scheme='all' uses every input of the data")
        m_inputs = check_count(m_inputs, "m_inputs")
    family = resolve_family(family)
    n_samples = _check_n(n_samples)
    chunk_size, max_params = check_sizes(chunk_size, max_params)
    group_bounds, grams = check_group_bounds(group_bounds)
    batches, n_batches = iter_data(data, batch_size)
    v2, v2_sample, seed = check_v2(v2, v2_sample, seed)
    engine = select_engine(model, family, path, max_params, v2=v2, v2_sample=v2_sample, seed=seed)
    check_sampled_grams(engine, grams)
    index: dict[str, torch.Tensor] | None = None
    v2_record: dict | None = None
    members = None
    sums: dict[str, dict[str, torch.Tensor]] = {}
    gsums: dict[str, dict[str, torch.Tensor]] = {}
    ivar: dict[str, CentredMoments] = {}
    M, canc = 0, 1.0
    zero_reasons: dict[str, str] = {}
    measured: float | None = None
    n_check = check_inputs_count(precision_check, 8)
    bar = tqdm(batches, total=n_batches, disable=progress is False
               if progress is not None else None, desc="dataset_stats", unit="batch", leave=False)
    for x, _ in bar:
        ba = analyse_batch(engine, model, x, family, n_samples, optimised=optimised, use_eig=use_eig,
                           grams=grams, chunk_size=chunk_size, max_params=max_params, sharpened=sharpened,
                           memory_budget=memory_budget)
        M += ba.eng.h.shape[0]
        idx_b = {k: d["index"] for k, d in ba.eng.info.get("w_sample", {}).items()}
        if index is None:
            index, v2_record = idx_b, v2_info(engine, ba.eng)
        elif idx_b.keys() != index.keys() or any(not torch.equal(idx_b[k], index[k]) for k in index):
            raise ValueError(
                f"v2='sample': the sampled entries differ between batches (tensors sampled: {sorted(index)} in the "
                f"first batch, {sorted(idx_b)} in a later one), because the proofs of V₂ ≡ 0 differ between the "
                "batches (data-dependent control flow in the model). The data-set estimate needs the same "
                "entries for every input: pass all inputs in one batch (batch_size=), or use v2='exact'.")
        for k, why in ba.eng.info.get("var2_zero_reason", {}).items():
            zero_reasons.setdefault(k, why)
        if mquad_cancels(family):
            canc = max(canc, cancellation_ratio(ba.eng))
        me = measured_v1_error(engine, model, check_inputs(x, ba.eng.h.dtype), family, ba.eng, n_check,
                               seed=M, max_params=max_params)
        if me is not None:
            measured = me if measured is None else max(measured, me)
        smax2 = ba.consts.sigma_max_cert ** 2
        memo: dict[int, torch.Tensor] = {}   # weight and bias of a layer share their rows
        for name, d in ba.keys.items():
            fi, u2 = d["fisher"], ba.eng.parts[name]["u2"]
            ex = memo.get(id(u2.f))
            if ex is None:
                ex = memo[id(u2.f)] = u2.square().scale(smax2).f
            extra = {"input_var_upper": u2.with_f(ex, 2 * u2.p)}
            for k, s in batch_sums({**d, **extra}).items():
                acc = sums.setdefault(k, {})
                acc[name] = acc[name] + s if name in acc else s
            ivar.setdefault(name, CentredMoments()).add_part(fi)
        if members is None:
            members = resolve_groups(model, list(ba.keys), groups)
        if group_bounds:
            for g, names in members.items():
                tb = group_trace_bounds(ba, family, names, n_samples, optimised)
                acc = gsums.setdefault(g, {})
                for k, v in tb.items():
                    acc[k] = acc.get(k, 0) + v.sum()
    if M == 0:
        raise ValueError("the data contained no inputs")
    Mi = M if m_inputs is None else m_inputs
    # the sums are fresh tensors owned here: divide in place (same operations, no new arrays)
    mean = {k: {n: v.div_(M) for n, v in d.items()} for k, d in sums.items()}
    # Var_q I from the centred accumulators (Chan's merge): a sum of squares, never negative
    input_var = {n: acc.variance() for n, acc in ivar.items()}
    values: dict[str, dict[str, torch.Tensor]] = {}
    for k, d in mean.items():
        if k.startswith("var"):
            values[k] = ({n: v.div_(M) for n, v in d.items()} if scheme == "all"
                         else {n: v.add_(input_var[n]).div_(Mi) for n, v in d.items()})
        else:
            values[k] = d
    values["input_var"] = input_var
    add_derived(values)
    gsum = {}
    for g, names in (members or {}).items():
        d = {"n_params": torch.tensor(sum(values["fisher"][n].numel() for n in names))}
        for k, per in values.items():
            if not k.startswith(("rel_sd", "prob_neg")):
                d[k] = sum(per[n].sum() for n in names)
        d["rel_sd1"], d["rel_sd2"] = rel_sd(d["var1"], d["fisher"]), rel_sd(d["var2"], d["fisher"])
        if group_bounds:
            tv = gsums[g]
            in_var = d["input_var"]  # Σ_i Var_q I(θ_i|x): the input term of the trace variance
            for k, v in tv.items():
                if k.startswith("trace_fisher"):
                    d[k] = v / M
                else:
                    d[k] = v / M / M if scheme == "all" else (in_var + v / M) / Mi
        gsum[g] = d
    info = {"path_reason": engine.reason, "n_inputs": M, "m_inputs": Mi, "scheme": scheme,
            **({"var2_zero_reason": zero_reasons} if zero_reasons else {}), "v2": v2_record}
    sampling = None
    if index:
        sampling, estimated = apply_sampling(values, gsum, members or {}, index, "dataset",
                                             sampling_description(engine) + "; the same entries for every input",
                                             DEFAULT_LEVEL)
        info["estimated"], info["not_estimated"] = estimated, sampling.not_estimated
    return StatsResult(values, kind="dataset", path=engine.path, n_samples=n_samples,
                       dtype=next(iter(engine.params.values())).dtype, cancellation=canc,
                       v1_rel_error_measured=measured, groups=gsum, group_members=members or {}, info=info,
                       sampling=sampling)
