"""Many-input statistics: ``dataset_stats`` (THEORY §8, paper Theorem 4.7).

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

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Mapping as _MappingABC
from typing import cast

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from ..families.base import ExponentialFamily
from ..families.constants import certificate_policy
from .checks import GENERIC_MAX_PARAMS, check_count, check_inputs
from .conditional import (AnalysisOptions, Engine, _check_n, analyse_batch, check_group_bounds, check_sampled_grams,
                          check_sizes, check_v2, group_trace_bounds, resolve_family, sampling_description,
                          select_engine, v2_info)
from .core import mquad_cancels
from .distributed import (DistributedMismatchError, _short, agree, all_reduce_flat, family_signature,
                          gather_outcome, parameter_signature, rank_world, resolve_group)
from .guard import guarded
from .guard import memory_budget as memory_budget_bytes
from .parts import Part
from .precision import check_inputs_count, measured_v1_error
from .stats import (DEFAULT_LEVEL, FISHER_SQ, StatsResult, add_derived, apply_sampling, cancellation_ratio,
                    dataset_batch_sums, rel_sd, resolve_groups)

__all__ = ["dataset_stats", "iter_batches", "iter_data", "CentredMoments", "DATA_FORMS", "DatasetAccumulator",
           "auto_batch_size", "probed_batches"]

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


def iter_data(data, batch_size: int | str = 256, *, per_input_bytes: int | None = None,
              device: torch.device | str | None = None,
              memory_budget: int | str | None = None
              ) -> tuple[Iterator[tuple[torch.Tensor, torch.Tensor | None]], int | None]:
    """The one reading of ``data`` shared by every entry point (issue 13 item 3): (iterator of (x, y)
    batches with y None when there are no labels, number of batches or None when unknown).

    See :data:`DATA_FORMS`.  A tuple is always (inputs, labels); batches are given as a list (or an
    iterable).  Ambiguous data are refused: a tuple that is not two tensors of equal first dimension,
    a list mixing tensors and tuples, list batches of different trailing shapes (an (x, y) pair
    passed as a list), strings, mappings and arrays.  ``batch_size="auto"``: :func:`auto_batch_size`
    for ``per_input_bytes`` bytes per input on ``device`` (default: the inputs' device)."""
    if isinstance(batch_size, str) and batch_size == "auto":
        if per_input_bytes is None:
            raise ValueError("batch_size='auto' needs per_input_bytes= (the working set of one input) to size the "
                             "batches; dataset_stats estimates it itself")
        x1 = _first_input(data)
        dev = device if device is not None else (x1.device if x1 is not None else "cpu")
        batch_size = auto_batch_size(per_input_bytes, dev, memory_budget, cap=_n_inputs(data))[0]
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

    n_items: int | None
    try:
        n_items = len(data)
    except TypeError:
        n_items = None
    return gen(), n_items


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
        assert self.mean is not None and self.m2 is not None     # set by the first merge (self.n > 0)
        tot = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / tot)
        self.m2 = self.m2 + m2 + delta.square() * (self.n * n / tot)
        self.n = tot

    def merge(self, other: CentredMoments) -> None:
        """Merge another accumulator (e.g. another worker's shard of the data)."""
        if other.n:
            assert other.mean is not None and other.m2 is not None   # other.n > 0: it has merged values
            self.merge_stats(other.n, other.mean, other.m2)

    def add(self, values: torch.Tensor) -> None:
        """Add a batch of values (B, ...)."""
        B = values.shape[0]
        mean = values.mean(0)
        self.merge_stats(B, mean, (values - mean).square_().sum(0))

    def add_part(self, part: Part, sums: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Add a batch given as a :class:`Part` (values f·a^p) without expanding it where that is safe.

        Per entry, S₁ = Σ_b f_b a_b^p and S₂ = Σ_b f_b² a_b^{2p} are one matrix product each (THEORY §7)
        and M₂ = S₂ − S₁²/B.  That difference cancels: its rounding error is at most
        γ·S₂ with γ = (2B + 8)ε (two sums of B non-negative terms, S₁²/B ≤ S₂ by Cauchy–Schwarz).
        Entries whose relative error bound γ·S₂/M₂ exceeds √ε (near-constant values, e.g. repeated
        inputs, where M₂ ≈ 0) are recomputed by the two-pass form Σ_b (v_b − mean)² on the expanded
        rows of f that hold them (chunks of at most :attr:`CHUNK_ELEMENTS` values).  So every M₂ has
        relative error at most max(√ε, (B + 4)ε) and is never negative.  Where S₂ = 0 every value is 0
        and M₂ = 0 − 0 = 0 is exact (no recomputation: e.g. pixels that are 0 in every input).

        ``sums`` = (S₁, S₂) when the caller already has them (the data-set loop's batch sums,
        :func:`.stats.dataset_batch_sums`: S₁ is the Fisher sum): no product is repeated."""
        if part.a is None:
            self.add(part.f)
            return
        B = part.f.shape[0]
        f = part.f.reshape(B, -1)
        n, m = f.shape[1], part.a.shape[1]
        if sums is None:
            ap = part._ap()
            s1 = f.T @ ap
            s2 = (f * f).T @ (ap * ap)
        else:
            ap = None
            s1, s2 = sums[0].reshape(n, m), sums[1].reshape(n, m)
        mean = s1 / B
        m2 = s2 - s1 * mean
        eps = torch.finfo(m2.dtype).eps
        risky = (m2 <= (2 * B + 8) * eps / eps ** 0.5 * s2) & (s2 != 0)   # γ·S₂/M₂ > √ε (or M₂ ≤ 0)
        rows = torch.nonzero(risky.any(1)).flatten()
        if rows.numel():
            ap = part._ap() if ap is None else ap
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
        assert self.m2 is not None                                # self.n > 0: values were merged
        return self.m2 / self.n


# ------------------------------------------------------------------------------ device-aware batch sizes
#: batch_size="auto" on CUDA plans to use this fraction of the free device memory (the per-input
#: estimate is rough, and the allocator fragments)
CUDA_MEMORY_FRACTION = 0.5
#: batch_size="auto" on the CPU: at most this many inputs per batch (the fixed default)
CPU_AUTO_CAP = 256


def cuda_mem_get_info(device: torch.device) -> tuple[int, int]:
    """(free, total) bytes of a CUDA device (``torch.cuda.mem_get_info``).  Module-level so that tests
    can inject a fake device memory and exercise the CUDA branch of :func:`auto_batch_size` on a CPU."""
    return torch.cuda.mem_get_info(device)


def auto_batch_size(per_input_bytes: int, device: torch.device | str, memory_budget: int | str | None = None, *,
                    checked_per_input: int = 0, cap: int | None = None) -> tuple[int, dict]:
    """Inputs per batch for ``batch_size="auto"`` (issue 12 item 2), and how they were chosen.

    * CUDA: B = ⌊f·free / b⌋ with free from :func:`cuda_mem_get_info` on ``device``,
      f = :data:`CUDA_MEMORY_FRACTION` and b = ``per_input_bytes`` (the estimated working set per input);
    * CPU: B = min(:data:`CPU_AUTO_CAP`, ⌊budget / b⌋), the budget of :func:`.guard.memory_budget`
      (memory stays bounded as with the fixed default);
    * both: B ≤ ⌊budget / c⌋ with c = ``checked_per_input``, the per-input bytes of the allocations that
      :func:`.guard.check_budget` sizes against the budget (so that the chosen batch is never refused),
      B ≤ ``cap`` (e.g. the number of inputs) and B ≥ 1.

    >>> auto_batch_size(10 ** 6, "cpu", memory_budget="64MiB")[0]
    67
    """
    device = torch.device(device)
    b = max(1, int(per_input_bytes))
    budget = memory_budget_bytes(memory_budget)
    info: dict = {"device": str(device), "per_input_bytes": b}
    if device.type == "cuda":
        free, total = cuda_mem_get_info(device)
        B = int(CUDA_MEMORY_FRACTION * free) // b
        info.update(free_bytes=int(free), total_bytes=int(total), fraction=CUDA_MEMORY_FRACTION)
    else:
        B = min(CPU_AUTO_CAP, budget // b)
        info.update(budget_bytes=budget, cpu_cap=CPU_AUTO_CAP)
    if checked_per_input > 0:
        B = min(B, budget // int(checked_per_input))
        info["checked_per_input_bytes"] = int(checked_per_input)
    if cap is not None:
        B = min(B, max(1, int(cap)))
    B = max(1, int(B))
    info["batch_size"] = B
    return B, info


#: device types on which batch_size="auto" measures the first batch (tests add "cpu" with a fake allocator)
PROBE_DEVICE_TYPES = ("cuda",)


def cuda_memory_probe(device: torch.device, what: str) -> int:
    """CUDA allocator statistics for :func:`probed_batches`: ``what`` = "allocated" (bytes now),
    "reserved" (bytes held by the caching allocator), "peak" (peak allocated since the last "reset";
    the reset itself returns 0).  Module-level so that tests can fake a device memory on a CPU."""
    if what == "allocated":
        return int(torch.cuda.memory_allocated(device))
    if what == "reserved":
        return int(torch.cuda.memory_reserved(device))
    if what == "peak":
        return int(torch.cuda.max_memory_allocated(device))
    if what == "reset":
        torch.cuda.reset_peak_memory_stats(device)
        return 0
    raise ValueError(f"cuda_memory_probe: what must be allocated, reserved, peak or reset, got {what!r}")


def probed_batches(x: torch.Tensor, y: torch.Tensor | None, device: torch.device, info: dict, first: int, *,
                   checked_per_input: int = 0, memory_budget: int | str | None = None
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``batch_size="auto"`` on CUDA by measurement (issue 12 item 2).  The first batch has ``first``
    inputs, the size the (conservative) per-input estimate allows; it is analysed like any other
    (nothing is discarded) while the allocator's peak p above the memory held before is read.  Its
    bytes per input u = p / first (the fixed part of the working set included, so an over-estimate)
    size the rest: batches of B = ⌊f·avail / u⌋ inputs, where avail is the free device memory plus what
    the caching allocator holds unused and f = :data:`CUDA_MEMORY_FRACTION`; also B ≤ ⌊budget / c⌋ for
    the budget-checked allocations (c = ``checked_per_input``) and B ≥ 1.  Two batches in all when the
    data fit: every batch costs a fixed number of kernel launches, which dominates on a GPU.
    The measurement resets the device's peak-memory statistics (``torch.cuda.reset_peak_memory_stats``).
    ``info`` (the result's ``info["batch_size_auto"]``) receives the first batch's size and peak and
    the chosen B once known.  The result equals a fixed-batch pass up to the order of the sums."""
    n = x.shape[0]
    b1 = max(1, min(int(first), n))
    base = cuda_memory_probe(device, "allocated")
    cuda_memory_probe(device, "reset")
    yield x[:b1], (y[:b1] if y is not None else None)
    peak = max(1, cuda_memory_probe(device, "peak") - base)
    info.update(first_batch=b1, first_batch_peak_bytes=peak)
    if b1 >= n:
        info["batch_size"] = b1
        return
    u = peak / b1
    free, total = cuda_mem_get_info(device)
    avail = free + cuda_memory_probe(device, "reserved") - cuda_memory_probe(device, "allocated")
    B = int(CUDA_MEMORY_FRACTION * avail // u)
    if checked_per_input > 0:
        B = min(B, memory_budget_bytes(memory_budget) // int(checked_per_input))
    B = max(1, min(B, n - b1))
    info.update(bytes_per_input=u, available_bytes=int(avail), total_bytes=int(total),
                fraction=CUDA_MEMORY_FRACTION, batch_size=B,
                estimate="measured: the first batch's peak allocated bytes per input")
    start = b1
    while start < n:
        yield x[start:start + B], (y[start:start + B] if y is not None else None)
        start += B


def _first_input(data) -> torch.Tensor | None:
    """One input (1, ...) of a tensor or an (x, y) tuple, without iterating anything else; None otherwise."""
    x = data[0] if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor) else data
    if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] > 0:
        return x[:1]
    return None


def peek_input(data) -> torch.Tensor | None:
    """The first input (1, ...) of ``data`` in any form of :func:`iter_data`, without consuming it:
    a tensor or (x, y) tuple, the first batch of a list, or the first batch of a re-iterable loader
    (a fresh iterator, as a DataLoader gives).  None for a one-shot iterator (peeking would consume it)
    or no inputs."""
    x1 = _first_input(data)
    if x1 is not None or isinstance(data, (torch.Tensor, tuple)):
        return x1
    if isinstance(data, (str, bytes, _MappingABC)) or not hasattr(data, "__iter__"):
        return None
    if iter(data) is data:          # a generator or iterator: one pass only
        return None
    for batch in data:
        xb = batch[0] if isinstance(batch, (tuple, list)) and len(batch) == 2 \
            and isinstance(batch[0], torch.Tensor) else batch
        return xb[:1] if isinstance(xb, torch.Tensor) and xb.dim() > 0 and xb.shape[0] > 0 else None
    return None


def _n_inputs(data) -> int | None:
    x = data[0] if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor) else data
    return x.shape[0] if isinstance(x, torch.Tensor) and x.dim() > 0 else None


def _stats_batch_size(batch_size, model: nn.Module, data, family: ExponentialFamily, engine, *, path: str,
                      v2: str, v2_sample, max_params: int, grams: bool, use_eig: bool | None,
                      chunk_size: int | None, memory_budget) -> tuple[int, dict | None]:
    """``batch_size`` of :func:`dataset_stats` as an int; "auto": :func:`auto_batch_size` with the
    per-input working set of :func:`.cost.cost_estimate` (one input) plus the per-input bytes of the
    budget-checked allocations (group_bounds' Gram matrices, the C⁴ moment tensors of use_eig)."""
    if not (isinstance(batch_size, str) and batch_size == "auto"):
        if isinstance(batch_size, str):
            raise ValueError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
        return check_count(batch_size, "batch_size"), None
    x1 = _first_input(data)
    device = next(iter(engine.params.values())).device
    if x1 is None:      # batches given by the user (a list or loader) are read as given; or no inputs
        return CPU_AUTO_CAP, {"batch_size": CPU_AUTO_CAP, "note": "the data come as batches (or are empty), "
                              "which are read as given; batch_size='auto' sizes tensor or (x, y) data only"}
    from ..families import constants as _fc
    from .conditional import gram_bytes
    from .cost import cost_estimate
    dtype = next(iter(engine.params.values())).dtype
    est = cost_estimate(model, x1.to(device), family, path=path, v2=v2, v2_sample=v2_sample,
                        max_params=max_params, calibrate=False)
    checked = gram_bytes(engine, 1, family.C, dtype, chunk_size) if grams else 0
    if certificate_policy(family, use_eig)[0] and not _fc.has_gram_form(family):   # C⁴ moment tensors
        checked = max(checked, _fc.moment_tensor_bytes(family, 1))
    B, info = auto_batch_size(est.peak_bytes + checked, device, memory_budget, checked_per_input=checked,
                              cap=_n_inputs(data))
    info["estimate"] = "cost_estimate(one input).peak_bytes + budget-checked allocations per input"
    return B, info


# ------------------------------------------------------------------------------ the accumulators
class DatasetAccumulator:
    """Everything one :func:`dataset_stats` pass accumulates, batch by batch (THEORY §8), in one place.

    * ``sums[key][name]``: Σ_m of every per-input key (one stacked matrix product per layer and input
      power on the fast path, :func:`.stats.dataset_batch_sums`), plus Lemma 4.8's ``input_var_upper``
      terms ‖u‖⁴·λ̄_max(Σ)²;
    * ``ivar[name]``: the centred moments (n, mean, M₂) of I(θ_i|x) (:class:`CentredMoments`);
    * ``gsums[group][key]``: Σ_m of the group trace bounds (Theorem D.1, Corollary 4.6);
    * M (inputs), ``batches`` (batches consumed), the cancellation ratio and measured float32 precision
      (maxima), the reasons of V₂ ≡ 0, the sampled-V₂ indices, and a fingerprint of the inputs
      (count, Σx, Σx² in float64: the checkpoint's and the same-data-on-every-rank guards).

    The same state is what a checkpoint saves (:meth:`state_dict`) and what ranks merge
    (:meth:`merge_ranks`): sums by addition, maxima by max, the centred moments exactly
    (M₂ = Σ_r [M₂,r + n_r(mean_r − mean)²], mean = Σ_r n_r mean_r / n)."""

    def __init__(self, engine: Engine, model: nn.Module, family: ExponentialFamily, n_samples: int, *, optimised: bool,
                 group_bounds: bool, groups, n_check: int, max_params: int) -> None:
        self.engine, self.model, self.family, self.n_samples = engine, model, family, n_samples
        self.optimised, self.group_bounds, self.groups = optimised, group_bounds, groups
        self.n_check, self.max_params = n_check, max_params
        self.sums: dict[str, dict[str, torch.Tensor]] = {}
        self.gsums: dict[str, dict[str, torch.Tensor]] = {}
        self.ivar: dict[str, CentredMoments] = {}
        self.M, self.batches, self.canc = 0, 0, 1.0
        self.zero_reasons: dict[str, str] = {}
        self.measured: float | None = None
        self.index: dict[str, torch.Tensor] | None = None
        self.v2_record: dict | None = None
        self.names: list[str] | None = None
        self.members: dict[str, list[str]] | None = None
        self.fp: list = [0, None, None]          # inputs, Σx, Σx² (float64)
        self.busy = False                        # True while a batch is being added (state inconsistent)

    # -- one batch
    def add(self, x: torch.Tensor, ba) -> None:
        """Add one analysed batch (:func:`.conditional.analyse_batch` of inputs ``x``)."""
        self.busy = True
        eng, family = ba.eng, self.family
        self.M += eng.h.shape[0]
        idx_b = {k: d["index"] for k, d in eng.info.get("w_sample", {}).items()}
        if self.index is None:
            self.index, self.v2_record = idx_b, v2_info(self.engine, eng)
        elif idx_b.keys() != self.index.keys() or any(not torch.equal(idx_b[k], self.index[k]) for k in self.index):
            raise ValueError(
                f"v2='sample': the sampled entries differ between batches (tensors sampled: {sorted(self.index)} in "
                f"the first batch, {sorted(idx_b)} in a later one), because the proofs of V₂ ≡ 0 differ between the "
                "batches (data-dependent control flow in the model). The data-set estimate needs the same "
                "entries for every input: pass all inputs in one batch (batch_size=), or use v2='exact'.")
        for k, why in eng.info.get("var2_zero_reason", {}).items():
            self.zero_reasons.setdefault(k, why)
        if mquad_cancels(family):
            self.canc = max(self.canc, cancellation_ratio(eng))
        if eng.h.dtype != torch.float64:        # the float32 precision measurement (float64 needs none)
            me = measured_v1_error(self.engine, self.model, check_inputs(x, eng.h.dtype), family, eng,
                                   self.n_check, seed=self.M, max_params=self.max_params)
            if me is not None:
                self.measured = me if self.measured is None else max(self.measured, me)
        # every per-parameter sum of the batch in one stacked product per layer and power
        # (:func:`.stats.dataset_batch_sums`), plus Σ_b I_b² for the centred moments of I
        for name, sums in dataset_batch_sums(eng, ba.keys, ba.consts).items():
            s2 = sums.pop(FISHER_SQ)
            for k, v in sums.items():
                acc = self.sums.setdefault(k, {})
                # the first batch's sums are views of one stacked product: own them (in-place division at
                # the end, and a checkpoint that saves only these entries, not the whole stacked storage)
                acc[name] = acc[name] + v if name in acc else v.clone()
            self.ivar.setdefault(name, CentredMoments()).add_part(ba.keys[name]["fisher"], sums=(sums["fisher"], s2))
        if self.names is None:
            self.names = list(ba.keys)
        if self.group_bounds:
            for g, names in self.group_members().items():
                tb = group_trace_bounds(ba, family, names, self.n_samples, self.optimised)
                acc = self.gsums.setdefault(g, {})
                for k, v in tb.items():
                    acc[k] = acc.get(k, 0) + v.sum()
        self.add_fingerprint(x)
        self.busy = False

    def add_fingerprint(self, x: torch.Tensor) -> None:
        """Add the batch ``x`` to the input fingerprint (count, Σx, Σx² in float64; :func:`add_input_print`)."""
        self.fp = add_input_print(self.fp, x)

    def group_members(self) -> dict[str, list[str]]:
        """group → its parameter names (:func:`.stats.resolve_groups` of ``groups`` over the parameters
        seen), resolved once."""
        if self.members is None:
            self.members = resolve_groups(self.model, self.names or [], self.groups)
        return self.members

    # -- checkpoints
    def state_dict(self) -> dict:
        """The accumulator state (tensors and plain values only: loadable with ``weights_only=True``)."""
        return {"M": self.M, "batches": self.batches, "canc": float(self.canc), "measured": self.measured,
                "zero_reasons": dict(self.zero_reasons), "index": self.index, "v2_record": self.v2_record,
                "names": self.names, "sums": self.sums, "gsums": self.gsums,
                "ivar": {n: {"n": a.n, "mean": a.mean, "m2": a.m2} for n, a in self.ivar.items()},
                "fp": list(self.fp)}

    def load_state_dict(self, st: dict) -> None:
        """Restore a state saved by :meth:`state_dict` (a checkpoint's); the groups are resolved again."""
        self.M, self.batches, self.canc, self.measured = st["M"], st["batches"], st["canc"], st["measured"]
        self.zero_reasons, self.index, self.v2_record = dict(st["zero_reasons"]), st["index"], st["v2_record"]
        self.names, self.sums, self.gsums, self.fp = st["names"], st["sums"], st["gsums"], list(st["fp"])
        self.ivar = {}
        for n, d in st["ivar"].items():
            a = CentredMoments()
            a.n, a.mean, a.m2 = d["n"], d["mean"], d["m2"]
            self.ivar[n] = a
        self.members = None

    # -- ranks
    def meta(self) -> dict:
        """What the ranks exchange before the reduction (plain values): counts, maxima, the structure of
        the sums (keys, names, shapes, dtypes), reasons, sampled indices and the input fingerprint."""
        spec = lambda t: (tuple(t.shape), str(t.dtype).replace("torch.", ""))  # noqa: E731
        return {"M": self.M, "names": self.names, "canc": float(self.canc), "measured": self.measured,
                "zero_reasons": self.zero_reasons, "v2_record": self.v2_record,
                "index": None if self.index is None else {k: v.tolist() for k, v in self.index.items()},
                "sums": {k: {n: spec(t) for n, t in d.items()} for k, d in self.sums.items()},
                "gsums": {g: {k: spec(t) for k, t in d.items()} for g, d in self.gsums.items()},
                "ivar": {n: spec(a.mean) for n, a in self.ivar.items()},
                "fp": input_print_values(self.fp)}

    def merge_ranks(self, metas: list[dict], group, device: torch.device) -> None:
        """Replace the local state by the global one of all ranks (``metas``: every rank's :meth:`meta`).

        Sums: one ``all_reduce(SUM)`` of one flat buffer per dtype (the sums, the group sums and
        n_r·mean_r); then M₂ = Σ_r [M₂,r + n_r(mean_r − mean)²] by a second one (THEORY §8; every
        term a square).  A rank without inputs contributes zeros of the shapes the others report.
        Raises on every rank (the metas are the same everywhere) when the ranks' structures differ."""
        rank, world = rank_world(group)
        full = [r for r, m in enumerate(metas) if m["M"] > 0]
        if not full:
            raise ValueError(f"the data contained no inputs (on any of the {world} ranks)")
        prints = [m["fp"] for m in metas]
        if world > 1 and len(full) == world and all(p == prints[0] for p in prints):
            raise DistributedMismatchError(
                f"dataset_stats: all {world} ranks passed the same data ({prints[0][0]} inputs with equal sums and "
                "sums of squares): each rank must pass its own shard (fishersym.numeric.distributed.shard(data) "
                "or a torch.utils.data.DistributedSampler), or pass process_group=False for a local pass on "
                "every rank")
        ref = metas[full[0]]
        for what in ("names", "sums", "gsums", "ivar", "index"):
            bad = [r for r in full if metas[r][what] != ref[what]]
            if bad:
                hint = (" (v2='sample': the sampled entries must agree; use the same seed= on every rank, or "
                        "v2='exact')" if what == "index" else " (data-dependent control flow in the model?)")
                raise DistributedMismatchError(
                    f"dataset_stats: the ranks' accumulators differ in {what!r}: rank(s) {bad} against rank "
                    f"{full[0]}{hint}; this is rank {rank}")
        mine = self.M > 0

        def local(d: dict | None, key, spec) -> torch.Tensor:
            t = d.get(key) if (mine and d is not None) else None
            return t if t is not None else torch.zeros(spec[0], dtype=getattr(torch, spec[1]), device=device)

        tensors, layout = [], []
        for k, d in ref["sums"].items():
            for n, spec in d.items():
                tensors.append(local(self.sums.get(k), n, spec).to(device))
                layout.append(("sums", k, n))
        for g, d in ref["gsums"].items():
            for k, spec in d.items():
                tensors.append(torch.as_tensor(local(self.gsums.get(g), k, spec)).to(device))
                layout.append(("gsums", g, k))
        for n, spec in ref["ivar"].items():
            a = self.ivar.get(n) if mine else None
            if a is not None:
                assert a.mean is not None                # every accumulator in ivar holds a batch (add_part)
                tensors.append((a.mean * a.n).to(device))
            else:
                tensors.append(local(None, n, spec))
            layout.append(("nmean", n, None))
        red = all_reduce_flat(tensors, group)
        M = sum(m["M"] for m in metas)
        sums: dict[str, dict[str, torch.Tensor]] = {}
        gsums: dict[str, dict[str, torch.Tensor]] = {}
        gmean: dict[str, torch.Tensor] = {}
        for (kind, a, b), t in zip(layout, red):
            if kind == "sums":
                sums.setdefault(a, {})[b] = t
            elif kind == "gsums":
                gsums.setdefault(a, {})[b] = t
            else:
                gmean[a] = t / M
        m2_parts = []
        for n, spec in ref["ivar"].items():
            a = self.ivar.get(n) if mine else None
            if a is not None:
                assert a.mean is not None and a.m2 is not None   # every accumulator in ivar holds a batch
                m2_parts.append((a.m2 + (a.mean - gmean[n].to(a.mean.device)).square() * a.n).to(device))
            else:
                m2_parts.append(local(None, n, spec))
        m2 = all_reduce_flat(m2_parts, group)
        self.ivar = {}
        for (n, _), v in zip(ref["ivar"].items(), m2):
            acc = CentredMoments()
            acc.n, acc.mean, acc.m2 = M, gmean[n], v
            self.ivar[n] = acc
        self.sums, self.gsums, self.M = sums, gsums, M
        self.names, self.members = ref["names"], None
        self.canc = max(m["canc"] for m in metas)
        meas = [m["measured"] for m in metas if m["measured"] is not None]
        self.measured = max(meas) if meas else None
        self.zero_reasons = {}
        for m in metas:                        # rank order = the order of the concatenated data
            for k, why in m["zero_reasons"].items():
                self.zero_reasons.setdefault(k, why)
        self.v2_record = ref["v2_record"]
        self.index = (self.index if mine else
                      {k: torch.tensor(v, dtype=torch.long, device=device) for k, v in (ref["index"] or {}).items()})


def add_input_print(fp: list, x: torch.Tensor) -> list:
    """The input fingerprint (count, Σx, Σx² in float64, kept on x's device: no host synchronisation)
    updated with the batch ``x``."""
    if x.shape[0] == 0:
        return fp
    xd = x.detach().to(torch.float64) if x.is_floating_point() or not x.is_complex() else x.detach().abs().double()
    s1, s2 = xd.sum(), xd.square().sum()
    return [fp[0] + int(x.shape[0]), s1 if fp[1] is None else fp[1] + s1, s2 if fp[2] is None else fp[2] + s2]


def input_print_values(fp: list) -> tuple[int, float, float]:
    return (int(fp[0]), 0.0 if fp[1] is None else float(fp[1]), 0.0 if fp[2] is None else float(fp[2]))


# ------------------------------------------------------------------------------ checkpoints
CHECKPOINT_FORMAT = "fishersym.dataset_stats checkpoint 1"


def _save_checkpoint(path: str, fingerprint: dict, acc: DatasetAccumulator, finished: bool) -> None:
    """Atomically write the accumulator state: a temporary file in the same folder, then ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        torch.save({"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "finished": finished,
                    "state": acc.state_dict()}, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _load_checkpoint(path: str, fingerprint: dict, device: torch.device) -> dict:
    """The saved state of ``path`` if its fingerprint equals ``fingerprint``; else a ValueError naming the
    first field that differs."""
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise ValueError(f"checkpoint {path!r} cannot be read ({type(exc).__name__}: {exc}); delete it to start "
                         "afresh, or pass another checkpoint= path") from exc
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {path!r} is not a dataset_stats checkpoint ({CHECKPOINT_FORMAT!r}); "
                         "delete it or pass another checkpoint= path")
    saved = ck["fingerprint"]
    for k in [*fingerprint, *(k for k in saved if k not in fingerprint)]:     # the first differing field
        if saved.get(k) != fingerprint.get(k):
            raise ValueError(f"checkpoint {path!r} was written by another pass: its {k!r} is "
                             f"{_short(saved.get(k))}, this call's is {_short(fingerprint.get(k))}. Resume with "
                             "the same model, family and settings, or delete the file (or pass another "
                             "checkpoint= path) to start afresh")
    return ck


@guarded
def dataset_stats(model: nn.Module, data: torch.Tensor | tuple | Iterable, family: str | ExponentialFamily,
                  n_samples: int = 1, scheme: str = "all", *, m_inputs: int | None = None, path: str = "auto",
                  optimised: bool = False, use_eig: bool | None = None,
                  groups: Mapping[str, Iterable[str] | str] | None = None, group_bounds: bool | str = False,
                  batch_size: int | str = 256, progress: bool | None = None, chunk_size: int | None = None,
                  max_params: int = GENERIC_MAX_PARAMS, sharpened: bool = True,
                  memory_budget: int | str | None = None, precision_check: int | None = None,
                  v2: str = "exact", v2_sample: int | float | None = None, seed: int | None = None,
                  process_group=None, checkpoint: str | os.PathLike | None = None,
                  checkpoint_every: int = 10,
                  family_params: dict | None = None) -> StatsResult:
    r"""Many-input I(θ_i), Var Î₁, Var Î₂ and bounds per parameter (shape param.shape), THEORY §8.

    With I(θ_i) = E_q I(θ_i|x) over the data distribution q (the empirical distribution of M inputs)
    and v_k(θ_i|x) = N·V_k(θ_i|x) (:func:`conditional_stats`), the variance of the estimator Î_k
    (k = 1: squared score, k = 2: negative Hessian) with N = ``n_samples`` labels per input is, in
    scheme ``"all"`` (every input once) and scheme ``"iid"`` (M′ inputs drawn i.i.d. from q):

    .. math::

        I(\theta_i) = \frac{1}{M} \sum_{m=1}^{M} I(\theta_i \mid x_m), \qquad
        \Var \hat I_k(\theta_i) = \frac{1}{M^2} \sum_{m=1}^{M} \frac{v_k(\theta_i \mid x_m)}{N}
        \quad \text{(all)},

        \Var \hat I_k(\theta_i) = \frac{1}{M'} \Bigl[\Var_q I(\theta_i \mid x)
        + \frac{1}{N}\, \mathbb{E}_q\, v_k(\theta_i \mid x)\Bigr] \quad \text{(iid)}.

    Keys as in :func:`conditional_stats` (no exact ``prob_neg2``; Cantelli's ``prob_neg2_upper`` is
    given) plus ``input_var`` and ``input_var_upper`` (``input_var`` = Var_q I accumulated in centred
    form, :class:`CentredMoments`: never negative, and 0 for repeated inputs up to the rounding of the
    mean).  ``result.groups`` sums every key over each module's parameters and over user ``groups``.

    **Certification cost** (``use_eig``): the default (None, :func:`..families.constants.default_use_eig`)
    also certifies λ̃(M), λ̃(K) by their extreme eigenvalues on Sym²(ℝ^C) — for the softmax and the
    Bernoulli from a C × C Gram matrix per input (THEORY §14), up to ``MAX_C_GRAM`` = 24 classes;
    for other families from the C(C+1)/2-dimensional moment matrices up to ``MAX_C_EIG`` — and by
    closed forms above (Theorem 5.2, Corollary R.1, exact zeros; ``use_eig=False`` always), which
    give V₁ upper bounds about 2× wider on an MNIST-sized MLP (the Fisher and V₂ bounds are
    unchanged).  ``result.info["certificates"]`` says which was used.  Every bound is certified
    either way.

    **Batches** (``batch_size``): inputs per engine call for tensor or (x, y) data (a list or loader
    keeps its batches).  ``"auto"``: on CUDA as many as half the free device memory holds, measured
    on the first batch, whose size the conservative per-input estimate of :func:`.cost.cost_estimate`
    sets (:func:`probed_batches`; with a ``checkpoint``, whose batches must be reproducible, that
    estimate alone); on the CPU at most 256 within the memory budget (:func:`auto_batch_size`); the
    choice is ``result.info["batch_size"]`` / ``["batch_size_auto"]``.

    **Across processes** (``process_group``, THEORY §8): under an initialised ``torch.distributed``
    every rank calls ``dataset_stats(model, its_shard, family, ...)`` with its own shard
    (:func:`.distributed.shard`, or a ``DistributedSampler``; shards may be uneven or empty) and gets
    the *global* result, the one of the concatenated shards, identical on every rank.  The ranks first
    agree on the model (parameter names, shapes, dtypes and values), the family and the settings, and
    raise on every rank, naming the rank and the field, when they differ.  The accumulators
    (:class:`DatasetAccumulator`) are then merged: sums by ``all_reduce(SUM)``, maxima by max, and the
    centred moments of I exactly, mean = Σ_r n_r·mean_r / n and M₂ = Σ_r [M₂,r + n_r(mean_r − mean)²]
    (Chan et al. for all ranks at once; never negative).  Passing the same full data on every rank is
    refused (equal input counts, sums and sums of squares on all ranks).  Collectives run on the
    model's device (gloo: CPU; NCCL: CUDA).

    **Checkpoints** (``checkpoint=path``, ``checkpoint_every=k``): the accumulator state is saved
    atomically (a temporary file, then ``os.replace``) every k batches, at the end, and when the pass
    is interrupted by an exception between batches; under a process group each rank writes
    ``path.rank{r}``.  A call whose checkpoint file exists resumes from it: the file must come from
    the same model (parameter names, shapes, dtypes and a hash of the values), family, n_samples,
    path, use_eig, sharpened, optimised, v2 settings, groups, batch size, chunk size and (distributed)
    rank and world size, or it is refused naming the field that differs.  **The data must be
    iterated in the same order**: the batches already done are skipped (their count and float64 sum
    and sum of squares of the inputs are checked against the checkpoint's) and the pass continues;
    the result equals the uninterrupted one exactly.  A checkpoint of a finished pass is not
    recomputed: the result is rebuilt from it (``scheme``/``m_inputs`` may differ: they are applied at
    the end) and ``result.info["resumed_from"]`` says so.

    **Sampled V₂** (``v2="sample"``, ``v2_sample=``, ``seed=``; as in :func:`conditional_stats`).
    The *same* entries are sampled for every input (every batch draws them from a fresh generator
    seeded ``seed``, and the indices are checked to agree across batches): so the data-set values
    of the V₂ keys (means over all inputs) are exact at the sampled entries, and each group total is
    the expansion estimate from those exact per-entry data-set values z_i (Var Î₂(θ_i) under the
    scheme), with s.e. P·√((1 − n/P)s_z²/n) computed from the z_i themselves.  This is the right
    s.e. for the data-set value: per-input errors share the sample, so they must not be combined as
    if independent.  NaN at the entries not sampled; ``result.v2_mask`` marks the exact ones.

    Args:
        model: the network; its output h (batch, C) is the family's natural parameter.
        data: one meaning in every entry point (:func:`iter_data`): a tensor of inputs; a tuple
            (x, y) of inputs and labels (labels unused here); a list or other iterable (a DataLoader)
            of batches, each a tensor or an (x, y, ...) tuple; streamed with a tqdm bar (``progress``).
        family: a family name or :class:`~fishersym.families.ExponentialFamily` (by name, a free size
            C is taken from the model's outputs).
        n_samples: N, the number of label samples per input of the estimators (default 1).
        scheme: ``"all"`` (default: every input once) or ``"iid"`` (M′ inputs drawn i.i.d.).
        m_inputs: M′ of scheme ``"iid"`` (default M, the number of inputs); refused with ``"all"``.
        path: the exact path, as in :func:`conditional_stats` ("auto", "fast", "generic", "reverse").
        optimised: also the ``*_opt`` bounds with the optimised λ̃ (THEORY §5).
        use_eig: the certification of the constants (above; None: the default).
        groups: user parameter groups {name: [parameter names or module-name prefixes]}.
        group_bounds: True adds Theorem D.1 / Corollary 4.6 per group (``"corollary46"``: Corollary
            4.6 only), as in :func:`conditional_stats`.
        batch_size: inputs per engine call (default 256), or ``"auto"`` (above).
        progress: a tqdm bar on stderr (None: when stderr is a terminal).
        chunk_size: parameter entries per chunk on the generic and reverse paths (None: the engine's
            default).
        max_params: the size limit of the generic path and of the reverse path's exact w.
        sharpened: False skips the 𝟙^⊥ keys (THEORY §5 [beyond]).
        memory_budget: bytes (or "2GiB") that the Gram and moment tensors, and ``batch_size="auto"``,
            may use.
        precision_check: inputs re-analysed in float64 to measure V₁'s float32 precision (None: the
            default count; 0 turns it off).
        v2: "exact", "prove" or "sample", as in :func:`conditional_stats`.
        v2_sample: with ``v2="sample"``, the entries sampled per tensor (an int >= 2, or a fraction).
        seed: with ``v2="sample"``, the seed of the sampled entries (default 0).
        process_group: None (the WORLD group when ``torch.distributed`` is initialised, else a local
            pass), False (local even under torchrun) or a ProcessGroup (above).
        checkpoint: a file to save the accumulator state to and resume from (above; None: none).
        checkpoint_every: batches between checkpoint saves (default 10).
        family_params: parameters of a family given by name (e.g. ``{"C": 10}``); they win over the
            size read from the model.

    Returns:
        StatsResult: per key, {parameter name: tensor of param.shape}, with ``groups``, ``info``
        (``batch_size``, ``certificates``, ``scheme``, ``n_inputs``, ``resumed_from``, ...) and, for a
        sampled V₂, ``v2_mask`` and the standard errors of the group estimates.

    Raises:
        ValueError: for an invalid option (``scheme``, ``m_inputs`` with scheme ``"all"``, or an option
            :func:`conditional_stats` refuses), a checkpoint of another model, family or settings
            (naming the field), skipped batches that differ from the checkpoint's, the same full
            data on every rank, or ranks that disagree on the model, family or settings (raised on
            every rank, naming the rank and the field).

    Examples:
        >>> import torch
        >>> from fishersym import families
        >>> from fishersym.numeric import conditional_stats
        >>> net = torch.nn.Linear(3, 2).double()
        >>> x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> fam = families.get("categorical", C=2)
        >>> r, c = dataset_stats(net, x, fam, batch_size=3), conditional_stats(net, x, fam)
        >>> torch.allclose(r["var1"]["weight"], c["var1"]["weight"].sum(0) / 4 ** 2)    # scheme "all"
        True
    """
    group = resolve_group(process_group)
    rank, world = rank_world(group)
    # rank-local preparation, argument checks included: a failure on one rank is raised on every rank
    # (agree() below is the first collective; no rank is left waiting in it)
    err, fields, engine = None, None, None
    try:
        if scheme not in ("all", "iid"):
            raise ValueError(f"scheme must be 'all' or 'iid', got {scheme!r}")
        if m_inputs is not None:
            if scheme == "all":
                raise ValueError("m_inputs applies to scheme='iid' (M inputs drawn from the data); "
                                 "scheme='all' uses every input of the data")
            m_inputs = check_count(m_inputs, "m_inputs")
        fam = resolve_family(family, family_params, model=model, data=data)
        n_samples = _check_n(n_samples)
        chunk_size, max_params = check_sizes(chunk_size, max_params)
        with_group_bounds, grams = check_group_bounds(group_bounds)
        checkpoint_every = check_count(checkpoint_every, "checkpoint_every")
        if groups is not None and isinstance(groups, _MappingABC):   # read a generator selector once
            groups = {k: v if isinstance(v, str) else list(v) for k, v in groups.items()}
        v2, v2_sample, seed = check_v2(v2, v2_sample, seed)
        engine = select_engine(model, fam, path, max_params, v2=v2, v2_sample=v2_sample, seed=seed)
        check_sampled_grams(engine, grams)
        n_check = check_inputs_count(precision_check, 8)
        settings = {"n_samples": n_samples, "path": path, "optimised": optimised, "use_eig": use_eig,
                    "sharpened": sharpened, "group_bounds": with_group_bounds, "v2": v2, "v2_sample": v2_sample,
                    "seed": seed, "groups": _plain(groups), "precision_check": n_check, "max_params": max_params}
        # the values' hash (a host copy of every parameter) only where it is compared: across ranks, or
        # against a checkpoint
        fields = {**parameter_signature(model, values=group is not None or checkpoint is not None),
                  "family": family_signature(fam), **settings,
                  "engine path": engine.path, "scheme": (scheme, m_inputs)}
    except Exception as exc:  # noqa: BLE001 - re-raised on every rank by agree()
        err = exc
    agree(fields, group, "dataset_stats", {"parameter values": "broadcast the model's state_dict from rank 0, or "
                                           "load the same weights on every rank"}, error=err)
    assert engine is not None and fields is not None     # agree() re-raised any failure of the preparation
    device = next(iter(engine.params.values())).device
    ckpt = None if checkpoint is None else (f"{os.fspath(checkpoint)}.rank{rank}" if world > 1
                                            else os.fspath(checkpoint))
    acc = DatasetAccumulator(engine, model, fam, n_samples, optimised=optimised, group_bounds=with_group_bounds,
                             groups=groups, n_check=n_check, max_params=max_params)
    resumed, err, auto_info = None, None, None
    try:
        if batch_size == "auto" and ckpt is not None and os.path.exists(ckpt):
            batch_size = _saved_batch_size(ckpt, device) or batch_size     # resume with the saved choice
        batch_size, auto_info = _stats_batch_size(batch_size, model, data, fam, engine, path=path, v2=v2,
                                                  v2_sample=v2_sample, max_params=max_params, grams=grams,
                                                  use_eig=use_eig, chunk_size=chunk_size,
                                                  memory_budget=memory_budget)
        n_all = _n_inputs(data)
        if (auto_info is not None and device.type in PROBE_DEVICE_TYPES and ckpt is None and n_all
                and batch_size < n_all):
            # measured, not estimated: the estimate of cost_estimate is the conditional_stats working set
            # (dense per-input outputs), far above this pass's (issue 12 item 2; bench_gpu.py)
            x_all, y_all = data if isinstance(data, tuple) else (data, None)
            auto_info = {"estimated_batch_size": batch_size, "estimate_info": auto_info}
            batches, n_batches = probed_batches(x_all, y_all, device, auto_info, batch_size,
                                                checked_per_input=auto_info["estimate_info"].get(
                                                    "checked_per_input_bytes", 0),
                                                memory_budget=memory_budget), None
        else:
            batches, n_batches = iter_data(data, batch_size)
        # scheme and m_inputs are applied at the end: a finished checkpoint serves either scheme
        fingerprint = {**{k: v for k, v in fields.items() if k != "scheme"}, "batch_size": batch_size,
                       "chunk_size": chunk_size, "rank": rank, "world": world}
        if ckpt is not None and os.path.exists(ckpt):
            ck = _load_checkpoint(ckpt, fingerprint, device)
            acc.load_state_dict(ck["state"])
            resumed = {"checkpoint": ckpt, "batches": acc.batches, "inputs": acc.M, "finished": bool(ck["finished"])}
        _run_pass(acc, batches, n_batches, engine, model, fam, n_samples, progress, ckpt, checkpoint_every,
                  fingerprint, resumed, group is not None,
                  AnalysisOptions(optimised=optimised, use_eig=use_eig, grams=grams, chunk_size=chunk_size,
                                  max_params=max_params, sharpened=sharpened, memory_budget=memory_budget))
    except Exception as exc:  # raised below, on every rank
        if group is None:
            raise
        err = exc
    if group is not None:
        metas = gather_outcome(None if err is not None else acc.meta(), err, group, "dataset_stats")
        acc.merge_ranks(metas, group, device)
    if auto_info is not None and "first_batch" in auto_info:
        batch_size = auto_info.get("batch_size", batch_size)
    info_extra = {"batch_size": batch_size, **({"batch_size_auto": auto_info} if auto_info else {}),
                  "certificates": certificate_policy(fam, use_eig)[1]}
    if group is not None:
        info_extra["distributed"] = {"world_size": world, "inputs_per_rank": [m["M"] for m in metas],
                                     "backend": str(dist.get_backend(group))}
    if resumed is not None:
        info_extra["resumed_from"] = resumed
    return _finish(acc, engine, scheme, m_inputs, n_samples, v2, with_group_bounds, info_extra)


def _saved_batch_size(ckpt: str, device) -> int | None:
    """The batch size a checkpoint was written with (None when it cannot be read: refused later)."""
    try:
        ck = torch.load(ckpt, map_location=device, weights_only=True)
        return int(ck["fingerprint"]["batch_size"])
    except Exception:  # noqa: BLE001 - an unreadable file is refused, with its reason, by _load_checkpoint
        return None


def _plain(groups):
    """``groups`` as comparable plain values (for the agreement and checkpoint fingerprints)."""
    if groups is None:
        return None
    return sorted((str(k), v if isinstance(v, str) else list(v)) for k, v in groups.items())


def _run_pass(acc: DatasetAccumulator, batches, n_batches, engine, model, family, n_samples, progress, ckpt,
              every, fingerprint, resumed, distributed: bool, options: AnalysisOptions) -> None:
    """Stream the batches into ``acc``: skip (and verify) those a checkpoint already holds, analyse the
    rest, save the checkpoint every ``every`` batches, at the end and on an interruption between batches.
    An empty batch is an error, except in a distributed pass, where a rank's shard may be empty."""
    n_skip = acc.batches if resumed else 0
    saved_at = acc.batches if resumed else -1
    skip_fp: list = [0, None, None]
    bar = tqdm(batches, total=n_batches, disable=progress is False
               if progress is not None else None, desc="dataset_stats", unit="batch", leave=False)
    k = -1
    try:
        for k, (x, _) in enumerate(bar):
            if k < n_skip:
                skip_fp = add_input_print(skip_fp, x)
                if k == n_skip - 1:
                    _check_skipped(skip_fp, acc, ckpt)
                continue
            if resumed and resumed["finished"]:
                raise ValueError(f"checkpoint {ckpt!r} holds a finished pass over {n_skip} batches, but the data "
                                 "have more: they are not the data of that pass. Delete the checkpoint (or pass "
                                 "another checkpoint= path) to analyse these data")
            if x.shape[0]:
                ba = analyse_batch(engine, model, x, family, n_samples, options)
                acc.add(x, ba)
            elif not distributed:
                raise ValueError(f"batch {k} of the data is empty (0 inputs): drop empty batches from the list "
                                 "or loader (an empty shard is allowed only in a distributed pass)")
            acc.batches = k + 1
            if ckpt is not None and acc.batches % every == 0:
                _save_checkpoint(ckpt, fingerprint, acc, finished=False)
                saved_at = acc.batches
        if k + 1 < n_skip:
            raise ValueError(f"checkpoint {ckpt!r} holds {n_skip} batches, but the data have only {k + 1}: they "
                             "are not the data of the checkpointed pass (iterate the same data in the same order)")
    except BaseException:
        if ckpt is not None and not acc.busy and acc.batches > max(saved_at, n_skip):
            _save_checkpoint(ckpt, fingerprint, acc, finished=False)   # keep what was done: resume loses nothing
        raise
    if ckpt is not None and not (resumed and resumed["finished"]):
        _save_checkpoint(ckpt, fingerprint, acc, finished=True)


def _check_skipped(fp: list, acc: DatasetAccumulator, ckpt) -> None:
    """The skipped batches must be those of the checkpoint: same count, float64 Σx and Σx² (to 1e-9
    relative: a different thread count may sum in another order)."""
    n, s1, s2 = input_print_values(fp)
    m, t1, t2 = input_print_values(acc.fp)
    ok = n == m and all(abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1e-300) for a, b in ((s1, t1), (s2, t2)))
    if not ok:
        raise ValueError(f"checkpoint {ckpt!r}: the first {acc.batches} batches of the data are not those of the "
                         f"checkpointed pass (inputs, Σx, Σx²: {(n, s1, s2)} now, {(m, t1, t2)} then); iterate the "
                         "same data in the same order to resume, or delete the checkpoint to start afresh")


def _finish(acc: DatasetAccumulator, engine, scheme: str, m_inputs: int | None, n_samples: int, v2: str,
            group_bounds: bool, info_extra: dict) -> StatsResult:
    """The result from the (global) accumulators: means, the scheme's variances (THEORY §8), groups."""
    M = acc.M
    if M == 0:
        raise ValueError("the data contained no inputs")
    members = acc.group_members()
    Mi = M if m_inputs is None else m_inputs
    # the sums are fresh tensors owned here: divide in place (same operations, no new arrays)
    mean = {k: {n: v.div_(M) for n, v in d.items()} for k, d in acc.sums.items()}
    # Var_q I from the centred accumulators (Chan's merge): a sum of squares, never negative
    input_var = {n: a.variance() for n, a in acc.ivar.items()}
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
    for g, names in members.items():
        d = {"n_params": torch.tensor(sum(values["fisher"][n].numel() for n in names))}
        for k, per in values.items():
            if not k.startswith(("rel_sd", "prob_neg")):
                # a group has members (resolve_groups refuses an empty one): a tensor, never sum()'s 0
                d[k] = cast(torch.Tensor, sum(per[n].sum() for n in names))
        d["rel_sd1"], d["rel_sd2"] = rel_sd(d["var1"], d["fisher"]), rel_sd(d["var2"], d["fisher"])
        if group_bounds:
            tv = acc.gsums[g]
            in_var = d["input_var"]  # Σ_i Var_q I(θ_i|x): the input term of the trace variance
            for k, v in tv.items():
                if k.startswith("trace_fisher"):
                    d[k] = v / M
                else:
                    d[k] = v / M / M if scheme == "all" else (in_var + v / M) / Mi
        gsum[g] = d
    info = {"path_reason": engine.reason, "n_inputs": M, "m_inputs": Mi, "scheme": scheme,
            **({"var2_zero_reason": acc.zero_reasons} if acc.zero_reasons else {}), "v2": acc.v2_record,
            **info_extra}
    sampling = None
    if acc.index:
        sampling, estimated = apply_sampling(values, gsum, members, acc.index, "dataset",
                                             sampling_description(engine) + "; the same entries for every input",
                                             DEFAULT_LEVEL)
        info["estimated"], info["not_estimated"] = estimated, sampling.not_estimated
    return StatsResult(values, kind="dataset", path=engine.path, n_samples=n_samples,
                       dtype=next(iter(engine.params.values())).dtype, cancellation=acc.canc,
                       v1_rel_error_measured=acc.measured, groups=gsum, group_members=members, info=info,
                       sampling=sampling)
