"""Data-set passes across processes with ``torch.distributed`` (THEORY §8; issue 12 item 1).

Every rank of a process group streams its own shard of the data through the same per-batch
accumulation as a one-process pass; the accumulators are then merged so that every rank holds the
*global* result, the one of the concatenated data (up to the rounding of the merge):

* sums and counts (Σ_m I, Σ_m v_k, Σ_m bounds, group traces): ``all_reduce(SUM)``;
* maxima (cancellation ratio, measured precision): a gather of the per-rank values, max taken alike
  on every rank;
* centred second moments (Var_q I, THEORY §8): with n = Σ_r n_r and mean = Σ_r n_r·mean_r / n,
  M₂ = Σ_r [M₂,r + n_r (mean_r − mean)²] (Chan et al.'s merge written for all ranks at once: every
  term a square, never negative) — two ``all_reduce(SUM)``, one of n_r·mean_r, one of the bracket;
* higher moments (the estimators' score moments): gathered and merged in rank order (Pébay).

This module holds the pieces shared by :func:`fishersym.numeric.dataset_stats` and
:func:`fishersym.estimators.moments.data_moments`: which group a ``process_group`` argument means
(:func:`resolve_group`), agreement checks that raise on *every* rank before any reduction
(:func:`agree`, :func:`gather_outcome`), one-buffer reductions (:func:`all_reduce_flat`), sharding
(:func:`shard`) and ``torchrun`` start-up (:func:`init_from_env`).

Collectives run on the model's device: CPU tensors with gloo, CUDA tensors with NCCL (set
``torch.cuda.set_device(local_rank)`` before, as NCCL requires; :func:`init_from_env` does).  A CPU
model under an NCCL-only group has its buffers moved to the current CUDA device for the collective
and back (:func:`comm_device`).
"""
from __future__ import annotations

import datetime
import hashlib
import os
from typing import Any
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["resolve_group", "rank_world", "agree", "gather_outcome", "all_reduce_flat", "all_gather_flat",
           "comm_device", "shard", "init_from_env", "parameter_signature", "family_signature",
           "DistributedMismatchError", "TORCHRUN_HINT"]

TORCHRUN_HINT = ("launch with torchrun (e.g. torchrun --nproc_per_node=2 script.py) and call "
                 "torch.distributed.init_process_group(backend='gloo' on CPU, 'nccl' on CUDA) first, "
                 "or fishersym.numeric.distributed.init_from_env()")


class DistributedMismatchError(ValueError):
    """The ranks of a distributed pass disagree (models, settings, data structure); raised on every rank."""


def resolve_group(process_group: Any) -> Any:
    """The group a ``process_group`` argument means, or None for a purely local pass.

    * None: the WORLD group when ``torch.distributed`` is initialised (and has more than one rank or
      not: a world of one is still a group), else a local pass;
    * False: explicitly local, even under torchrun;
    * a ``ProcessGroup``: that group (``torch.distributed`` must be initialised).

    >>> resolve_group(None) is None and resolve_group(False) is None    # not initialised here
    True
    """
    if process_group is False:
        return None
    avail = dist.is_available()
    init = avail and dist.is_initialized()
    if process_group is None:
        return dist.group.WORLD if init else None
    if process_group is True:
        if not init:
            raise RuntimeError("process_group=True asks for the WORLD group, but torch.distributed is not "
                               f"initialised: {TORCHRUN_HINT}")
        return dist.group.WORLD
    if not avail or not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(f"process_group must be None (the WORLD group when torch.distributed is initialised, else "
                        f"local), False (local) or a torch.distributed.ProcessGroup, got "
                        f"{type(process_group).__name__}")
    if not init:
        raise RuntimeError(f"a process group was passed, but torch.distributed is not initialised: {TORCHRUN_HINT}")
    return process_group


def rank_world(group: Any) -> tuple[int, int]:
    """(this process's rank in ``group``, the group's size); (0, 1) for a local pass (None)."""
    if group is None:
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def _gather(obj: Any, group: Any) -> list:
    out: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out


def _short(v: Any, n: int = 160) -> str:
    s = repr(v)
    return s if len(s) <= n else s[:n - 3] + "..."


def agree(fields: dict[str, Any] | None, group: Any, what: str, hints: dict[str, str] | None = None,
          error: BaseException | None = None) -> list[dict]:
    """Gather ``fields`` (picklable, comparable values) from every rank and raise
    :class:`DistributedMismatchError` on *every* rank when any field differs from rank 0's, naming the
    field, the offending rank(s) and the two values.  Returns the gathered list (rank order).
    ``hints`` maps a field to the fix to suggest.  ``error``: the exception this rank's preparation
    raised (then ``fields`` is None), raised on every rank as in :func:`gather_outcome` (one collective)."""
    if group is None:
        if error is not None:
            raise error
        assert fields is not None
        return [fields]
    rank, world = rank_world(group)
    allf = gather_outcome(fields, error, group, what)
    assert fields is not None                       # gather_outcome raised if this rank failed
    diffs = []
    for k in fields:
        bad = [r for r in range(world) if allf[r].get(k) != allf[0].get(k)]
        if bad:
            diffs.append(f"{k}: rank(s) {', '.join(map(str, bad))} have {_short(allf[bad[0]].get(k))}, rank 0 has "
                         f"{_short(allf[0].get(k))}" + (f" ({hints[k]})" if hints and k in hints else ""))
    if diffs:
        raise DistributedMismatchError(f"{what}: the {world} ranks disagree (this is rank {rank}); every rank must "
                                       "call it with the same model and settings and its own shard of the data. "
                                       + "; ".join(diffs))
    return allf


def gather_outcome(payload: Any, error: BaseException | None, group: Any, what: str) -> list:
    """Gather every rank's ``payload`` or the exception its local work raised; if any rank failed, raise on
    *every* rank (the failing rank re-raises its own exception; the others a RuntimeError naming it), so
    that no rank waits forever in a later collective.  Returns the payloads in rank order."""
    if group is None:
        if error is not None:
            raise error
        return [payload]
    rank, _ = rank_world(group)
    msg = None if error is None else f"{type(error).__name__}: {error}"
    got = _gather((msg, None if error is not None else payload), group)
    failed = [(r, m) for r, (m, _) in enumerate(got) if m is not None]
    if failed:
        if error is not None:
            raise error
        r, m = failed[0]
        raise RuntimeError(f"{what}: rank {r} failed ({m})"
                           + (f" and {len(failed) - 1} more rank(s)" if len(failed) > 1 else "")
                           + f"; this is rank {rank}, which stops too")
    return [p for _, p in got]


def comm_device(group: Any, device: torch.device) -> torch.device:
    """The device a collective of ``group`` must see tensors on: ``device``, except that a group whose
    only backend is NCCL (which reduces CUDA tensors only) gets CPU tensors on the current CUDA device.
    A model analysed on the CPU under ``torchrun`` on a GPU machine (NCCL by default) thus still merges.

    >>> comm_device(None, torch.device("cpu"))
    device(type='cpu')
    """
    if group is None or device.type != "cpu":
        return device
    backend = str(dist.get_backend(group)).lower()
    if "nccl" in backend and "gloo" not in backend and "cpu" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _flat_buffers(tensors: Sequence[torch.Tensor], group: Any):
    """Per dtype: (indices of those tensors, their concatenation on the collective's device
    (:func:`comm_device`), the tensors' own device)."""
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        by_dtype.setdefault(t.dtype, []).append(i)
    for idx in by_dtype.values():
        home = tensors[idx[0]].device
        yield idx, torch.cat([tensors[i].reshape(-1) for i in idx]).to(comm_device(group, home)), home


def _unflatten(buf: torch.Tensor, idx: list[int], tensors: Sequence[torch.Tensor], out: list) -> None:
    """Views of ``buf`` shaped as ``tensors[i]`` for i in ``idx``, written into ``out[i]``."""
    k = 0
    for i in idx:
        n = tensors[i].numel()
        out[i] = buf[k:k + n].reshape(tensors[i].shape)
        k += n


def all_reduce_flat(tensors: Sequence[torch.Tensor], group: Any, op: Any = None) -> list[torch.Tensor]:
    """``all_reduce`` a list of tensors in as few collectives as possible (one flat buffer per dtype, on
    the tensors' device): returns new tensors of the same shapes holding the reduction (default SUM).
    Every rank must pass tensors of the same shapes, dtypes and order."""
    op = dist.ReduceOp.SUM if op is None else op
    out: list[torch.Tensor | None] = [None] * len(tensors)
    for idx, buf, home in _flat_buffers(tensors, group):
        dist.all_reduce(buf, op=op, group=group)
        _unflatten(buf.to(home), idx, tensors, out)
    return out  # type: ignore[return-value]


def all_gather_flat(tensors: Sequence[torch.Tensor], group: Any) -> list[list[torch.Tensor]]:
    """Every rank's copy of ``tensors`` (one ``all_gather`` per dtype of one flat buffer): result[r][i] is
    rank r's i-th tensor.  Every rank must pass tensors of the same shapes, dtypes and order."""
    _, world = rank_world(group)
    out: list[list[torch.Tensor | None]] = [[None] * len(tensors) for _ in range(world)]
    for idx, buf, home in _flat_buffers(tensors, group):
        bufs = [torch.empty_like(buf) for _ in range(world)]
        dist.all_gather(bufs, buf, group=group)
        for r in range(world):
            _unflatten(bufs[r].to(home), idx, tensors, out[r])
    return out  # type: ignore[return-value]


def parameter_signature(model: nn.Module, values: bool = True) -> dict[str, Any]:
    """Names, shapes and dtypes of the trainable parameters, and (``values``) a SHA-256 of their values."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    out: dict[str, Any] = {"parameters": [(n, tuple(p.shape), str(p.dtype)) for n, p in params]}
    if values:
        h = hashlib.sha256()
        for n, p in params:
            a = p.detach().cpu().contiguous().reshape(-1)
            h.update(n.encode())
            h.update(a.view(torch.uint8).numpy().tobytes() if a.numel() else b"")
        out["parameter values"] = h.hexdigest()
    return out


def family_signature(family: Any) -> str:
    """The family's class, C and constructor settings (its simple attributes, and tensor attributes by
    shape, dtype and a SHA-256 of their values) as a comparable string."""
    simple: dict[str, Any] = {}
    for k, v in sorted(vars(family).items()):
        if k.startswith("_"):
            continue
        if isinstance(v, (int, float, str, bool, tuple, type(None))):
            simple[k] = v
        elif isinstance(v, torch.Tensor):
            a = v.detach().cpu().contiguous().reshape(-1)
            digest = hashlib.sha256(a.view(torch.uint8).numpy().tobytes() if a.numel() else b"").hexdigest()
            simple[k] = (tuple(v.shape), str(v.dtype), digest[:16])
    return f"{type(family).__name__}({family.name}; {simple}; link={getattr(family, 'link', None)!r})"


def shard(data: Any, group: Any = None, *, rank: int | None = None, world: int | None = None) -> Any:
    """This rank's contiguous shard of ``data``: rows [⌊rM/W⌋, ⌊(r+1)M/W⌋) of a tensor or of both
    parts of an (x, y) tuple, or that block of the batches of a list; so that the shards in rank order
    concatenate to the data (a rank may get none: an empty tensor, or an empty list).

    ``group``: as ``process_group`` of :func:`fishersym.numeric.dataset_stats` (None: WORLD when
    initialised); or give ``rank`` and ``world`` directly.  For a DataLoader use a
    ``torch.utils.data.DistributedSampler`` instead.

    >>> import torch
    >>> [shard(torch.arange(5), rank=r, world=2).tolist() for r in range(2)]
    [[0, 1], [2, 3, 4]]
    """
    if rank is None or world is None:
        g = resolve_group(group)
        if g is None:
            raise RuntimeError(f"shard needs a process group or rank= and world=; torch.distributed is not "
                               f"initialised: {TORCHRUN_HINT}")
        rank, world = rank_world(g)
    if not (isinstance(world, int) and world >= 1 and isinstance(rank, int) and 0 <= rank < world):
        raise ValueError(f"shard: need 0 <= rank < world, got rank={rank!r}, world={world!r}")

    def rows(n: int) -> slice:
        return slice(rank * n // world, (rank + 1) * n // world)

    if isinstance(data, torch.Tensor):
        return data[rows(data.shape[0])]
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        s = rows(data[0].shape[0])
        return data[0][s], (data[1][s] if data[1] is not None else None)
    if isinstance(data, list):
        return data[rows(len(data))]
    raise TypeError(f"shard takes a tensor, an (x, y) tuple or a list of batches, got {type(data).__name__}; "
                    "for a DataLoader use torch.utils.data.DistributedSampler")


def init_from_env(backend: str | None = None) -> tuple[int, int]:
    """Initialise the default process group from torchrun's environment (RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT): backend ``backend``, else the environment's ``FISHERSYM_DIST_BACKEND``,
    else ``nccl`` when CUDA is available (after ``torch.cuda.set_device(LOCAL_RANK)``) and ``gloo``
    otherwise.  Returns (rank, world size).  Without that
    environment a RuntimeError says how to launch.  Already initialised: returns the current values."""
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    need = ["RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"]
    missing = [k for k in need if k not in os.environ]
    if missing:
        raise RuntimeError(f"--distributed / init_from_env need torchrun's environment ({', '.join(missing)} not set): "
                           "launch with torchrun --nproc_per_node=N (e.g. torchrun --nproc_per_node=2 -m fishersym "
                           "report --distributed ...)")
    if backend is None:
        backend = os.environ.get("FISHERSYM_DIST_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    # a finite collective timeout (FISHERSYM_DIST_TIMEOUT seconds, default 600): a rank that dies
    # outside torchrun's supervision does not leave the others waiting for torch's default 30 minutes
    timeout = datetime.timedelta(seconds=float(os.environ.get("FISHERSYM_DIST_TIMEOUT", "600")))
    dist.init_process_group(backend=backend, timeout=timeout)
    return dist.get_rank(), dist.get_world_size()
