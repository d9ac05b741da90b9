"""Data-set passes across processes (issue 12 items 1–2; THEORY §8): ``dataset_stats`` and the
estimators' ``data_moments`` under ``torch.distributed`` (2 processes, gloo, CPU), checkpoint/resume,
and ``batch_size="auto"``.

One spawned job of two ranks runs every distributed case (process start-up dominates the cost) and
saves what each rank got; the tests compare it with the one-process pass on the concatenated data
(1e-12 relative, every key, group total and input_var, schemes "all" and "iid"), and the ranks with
each other (bitwise).  The oracle is the one-process pass, itself tested against autograd and
enumeration elsewhere (test_numeric_*); the merge formulas are the only new arithmetic.
"""
from __future__ import annotations

import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import fishersym.estimators as fe
from fishersym import families
from fishersym.numeric import dataset_stats
from fishersym.numeric import dataset as ds_mod
from fishersym.numeric.distributed import resolve_group, shard

WORLD = 2
REL = 1e-12
SCHEMES = ("all", "iid")


# ------------------------------------------------------------------------------ models and data (all ranks)
def make_mlp(width: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, 3)).double().eval()


def make_conv() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3)).double().eval()


def make_data(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2 if kind == "mlp" else 3)
    shape = (12, 4) if kind == "mlp" else (10, 1, 4, 4)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (shape[0],), generator=g)
    return x, y


FAM = families.get("categorical", C=3)
MODELS = {"mlp": make_mlp, "conv": make_conv}


def split(x: torch.Tensor, how: str, rank: int):
    """This rank's shard: "even" (shard()), "uneven" (3 and the rest), "empty" (rank 1 has none)."""
    if how == "even":
        return shard(x, rank=rank, world=WORLD)
    if how == "uneven":
        return x[:3] if rank == 0 else x[3:]
    return x if rank == 0 else x[:0]


STATS_KW = dict(batch_size=4, group_bounds="corollary46", progress=False)
SHARDS = ("even", "uneven", "empty")


def _pack(r) -> dict:
    return {"values": {k: dict(r[k]) for k in r.keys()},
            "groups": {g: {k: v for k, v in d.items() if torch.is_tensor(v)} for g, d in r.groups.items()},
            "info_n": r.info["n_inputs"]}


def _moments_pack(a) -> dict:
    m = a.moments
    out = {"M": m.M, "batch_sizes": list(m.batch_sizes)}
    for f in ("I_sum", "I_var", "I_cross", "v1_sum", "v2_sum", "q4_sum", "rad_sum", "gram_off_sum", "F_off",
              "score_batch_sq"):
        out[f] = getattr(m, f)
    out["score_cumulants"] = list(m.score.cumulants())
    out["score_sq_var"] = m.score_sq.variance()
    return out


def _err(exc: BaseException) -> tuple[str, str]:
    return ("error", f"{type(exc).__name__}: {exc}")


def _worker(rank: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=120))
    res: dict = {}
    try:
        # (a)–(c): even, uneven and empty shards, both engines, both schemes
        for kind, make in MODELS.items():
            x, _ = make_data(kind)
            for how in SHARDS:
                for scheme in SCHEMES:
                    r = dataset_stats(make(), split(x, how, rank), FAM, scheme=scheme, **STATS_KW)
                    res[("stats", kind, how, scheme)] = _pack(r)
        # (d) mismatched models / settings: every rank raises, naming the rank
        x, _ = make_data("mlp")
        mine = shard(x, rank=rank, world=WORLD)
        for case, model, kw in (("width", make_mlp(6 if rank == 1 else 5), {}),
                                ("values", make_mlp(), {}),
                                ("n_samples", make_mlp(), {"n_samples": 2 if rank == 1 else 1})):
            if case == "values" and rank == 1:
                with torch.no_grad():
                    model[0].bias.add_(1e-3)
            try:
                dataset_stats(model, mine, FAM, progress=False, **kw)
                res[("mismatch", case)] = ("ok", "")
            except Exception as exc:  # noqa: BLE001 - recorded for the test
                res[("mismatch", case)] = _err(exc)
        # (g) the same full data on every rank
        try:
            dataset_stats(make_mlp(), x, FAM, progress=False)
            res["same_data"] = ("ok", "")
        except Exception as exc:  # noqa: BLE001
            res["same_data"] = _err(exc)
        # a failure on one rank only (bad inputs there) is raised on every rank
        try:
            dataset_stats(make_mlp(), mine if rank == 0 else torch.randn(3, 7), FAM, progress=False)
            res["one_fails"] = ("ok", "")
        except Exception as exc:  # noqa: BLE001
            res["one_fails"] = _err(exc)
        # process_group=False: a local pass on each rank
        res["local"] = _pack(dataset_stats(make_mlp(), mine, FAM, progress=False, process_group=False))
        # (f) the estimators' data moments: one batch (tensor) and a list of batches; uneven and empty shards
        for how in ("uneven", "empty"):
            xs, ys = split(x, how, rank), split(make_data("mlp")[1], how, rank)
            res[("moments", "one", how)] = _moments_pack(fe.analyse(make_mlp(), (xs, ys), FAM, batch_size=2))
        xb, yb = make_data("mlp")
        batches = [(xb[i:i + 3], yb[i:i + 3]) for i in range(0, 12, 3)]
        res[("moments", "list", "even")] = _moments_pack(fe.analyse(make_mlp(), shard(batches, rank=rank,
                                                                                      world=WORLD), FAM))
        # (h) checkpoints under a process group: one file per rank, a finished pass is reused
        ck = os.path.join(out, "ck.pt")
        r1 = dataset_stats(make_mlp(), mine, FAM, progress=False, checkpoint=ck, checkpoint_every=1, batch_size=2)
        r2 = dataset_stats(make_mlp(), mine, FAM, progress=False, checkpoint=ck, checkpoint_every=1, batch_size=2)
        res["ckpt"] = (_pack(r1), _pack(r2), r2.info.get("resumed_from"), os.path.exists(f"{ck}.rank{rank}"))
    finally:
        torch.save(res, os.path.join(out, f"rank{rank}.pt"))
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Run :func:`_worker` on 2 ranks (spawn, gloo, file:// rendezvous); the two ranks' results."""
    d = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(f"file://{d / 'init'}", str(d)), nprocs=WORLD, join=True)
    return [torch.load(d / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# ------------------------------------------------------------------------------ comparisons
def _close(got: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert got.shape == ref.shape, what
    nan = torch.isnan(ref)
    assert torch.equal(nan, torch.isnan(got)), what
    g, r = got[~nan], ref[~nan]
    inf = torch.isinf(r)
    assert torch.equal(g[inf], r[inf]), what
    err = (g[~inf] - r[~inf]).abs()
    assert bool((err <= REL * r[~inf].abs()).all()), f"{what}: max abs error {err.max():.3g}"


def _same(a, b, what: str) -> None:
    """Bitwise equal (NaN where NaN)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for k in a:
            _same(a[k], b[k], f"{what}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (u, v) in enumerate(zip(a, b)):
            _same(u, v, f"{what}[{i}]")
    elif torch.is_tensor(a):
        assert a.dtype == b.dtype and a.shape == b.shape, what
        assert torch.equal(torch.nan_to_num(a, nan=1.25), torch.nan_to_num(b, nan=1.25)), what
    else:
        assert a == b, what


def _compare_stats(got: dict, ref, what: str) -> None:
    assert got["values"].keys() == set(ref.keys()), what
    assert "input_var" in got["values"]
    for k in ref.keys():
        for n, t in ref[k].items():
            _close(got["values"][k][n], t, f"{what} {k}[{n}]")
    for g, d in ref.groups.items():
        for k, v in d.items():
            if torch.is_tensor(v):
                _close(got["groups"][g][k], v, f"{what} group {g} {k}")




def _rank_batches(x: torch.Tensor, how: str) -> list[torch.Tensor]:
    """The batches the ranks analyse, in rank order (rank 0's, then rank 1's)."""
    return [b for r in range(WORLD) for b in torch.split(split(x, how, r), STATS_KW["batch_size"]) if b.shape[0]]


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("how", SHARDS)
def test_dataset_stats_two_ranks_equal_one_process(ranks, kind, how):
    """(a) even, (b) uneven, (c) one rank without inputs: the global result on both ranks, bitwise
    identical, equal to one process over the concatenated shards to 1e-12 relative: every key against
    the one-process pass over the same batches (so only the merge differs), and against the pass over
    the concatenated tensor (other batches: the per-input values do not depend on the batch)."""
    x, _ = make_data(kind)
    for scheme in SCHEMES:
        key = ("stats", kind, how, scheme)
        _same(ranks[0][key], ranks[1][key], str(key))
        assert ranks[0][key]["info_n"] == x.shape[0]
        kw = {k: v for k, v in STATS_KW.items() if k != "batch_size"}
        ref = dataset_stats(MODELS[kind](), _rank_batches(x, how), FAM, scheme=scheme, **kw)
        _compare_stats(ranks[0][key], ref, str(key))
        plain = dataset_stats(MODELS[kind](), x, FAM, scheme=scheme, **STATS_KW)
        _compare_stats(ranks[0][key], plain, f"{key} (one tensor)")


def test_mismatched_models_raise_on_every_rank_naming_the_rank(ranks):
    """(d) a different architecture, different weights, different settings on rank 1: both ranks raise
    before any reduction, naming rank 1 and what differs."""
    for case, field in (("width", "parameters"), ("values", "parameter values"), ("n_samples", "n_samples")):
        for r in range(WORLD):
            status, msg = ranks[r][("mismatch", case)]
            assert status == "error", (case, r)
            assert msg.startswith("DistributedMismatchError"), msg
            assert "rank(s) 1" in msg and field in msg, msg


def test_same_data_on_every_rank_is_refused(ranks):
    """(g) every rank passing the full data (a classic mistake) is refused on every rank, naming the fix."""
    for r in range(WORLD):
        status, msg = ranks[r]["same_data"]
        assert status == "error" and "same data" in msg and "shard" in msg and "process_group=False" in msg, msg


def test_a_failure_on_one_rank_is_raised_on_every_rank(ranks):
    """Rank 1's inputs do not fit the model: rank 1 raises its own error, rank 0 a RuntimeError naming
    rank 1 (rather than waiting forever in a collective)."""
    s0, m0 = ranks[0]["one_fails"]
    s1, m1 = ranks[1]["one_fails"]
    assert s0 == s1 == "error"
    assert m0.startswith("RuntimeError") and "rank 1 failed" in m0, m0
    assert "features" in m1 or "shape" in m1, m1


def test_process_group_false_is_local(ranks):
    x, _ = make_data("mlp")
    for r in range(WORLD):
        ref = dataset_stats(make_mlp(), shard(x, rank=r, world=WORLD), FAM, progress=False)
        _compare_stats(ranks[r]["local"], ref, f"local rank {r}")


@pytest.mark.parametrize("form,how", [("one", "uneven"), ("one", "empty"), ("list", "even")])
def test_data_moments_two_ranks_equal_one_process(ranks, form, how):
    """(f) fe.analyse / data_moments: every moment of every estimator (sums, cross sums over the one
    batch spanning both shards, centred and higher moments, the P × P Fisher's off-diagonal sums) on
    both ranks, bitwise identical, equal to one process to 1e-12 relative."""
    key = ("moments", form, how)
    _same(ranks[0][key], ranks[1][key], str(key))
    x, y = make_data("mlp")
    if form == "one":
        ref = _moments_pack(fe.analyse(make_mlp(), (x, y), FAM, batch_size=2))
    else:
        ref = _moments_pack(fe.analyse(make_mlp(), [(x[i:i + 3], y[i:i + 3]) for i in range(0, 12, 3)], FAM))
    got = ranks[0][key]
    assert got["M"] == ref["M"] and got["batch_sizes"] == ref["batch_sizes"]
    for f, v in ref.items():
        if isinstance(v, dict):
            for n, t in v.items():
                _close(got[f][n], t, f"{key} {f}[{n}]")
        elif isinstance(v, list) and v and torch.is_tensor(v[0]):
            for i, t in enumerate(v):
                scale = t.abs().max().clamp_min(1e-300)    # a third cumulant can be ≈ 0 by cancellation
                assert float((got[f][i] - t).abs().max()) <= 1e-12 * float(scale), (key, f, i)
        elif torch.is_tensor(v):
            _close(got[f], v, f"{key} {f}")


def test_checkpoint_per_rank_and_finished_pass_reused(ranks):
    """(h) under a process group each rank writes its own checkpoint; a second call finds the finished
    pass, reports it, and returns the same result bitwise."""
    for r in range(WORLD):
        first, second, resumed, exists = ranks[r]["ckpt"]
        assert exists
        _same(first, second, f"rank {r}")
        assert resumed["finished"] and resumed["inputs"] == 6 and resumed["checkpoint"].endswith(f".rank{r}")


# ------------------------------------------------------------------------------ in-process
def test_uninitialised_group_is_a_clear_error():
    """(e) a process group object (or True) without torch.distributed initialised: an error naming the fix."""
    assert not dist.is_initialized()
    assert resolve_group(None) is None and resolve_group(False) is None
    with pytest.raises(RuntimeError, match="not initialised.*torchrun.*init_process_group"):
        dataset_stats(make_mlp(), make_data("mlp")[0], FAM, process_group=True, progress=False)
    with pytest.raises(TypeError, match="ProcessGroup"):
        dataset_stats(make_mlp(), make_data("mlp")[0], FAM, process_group="world", progress=False)


class _Interrupt(Exception):
    pass


def _interrupted(x: torch.Tensor, k: int, size: int):
    """The batches of x, raising after k of them (a killed job)."""
    for i, s in enumerate(range(0, x.shape[0], size)):
        if i == k:
            raise _Interrupt
        yield x[s:s + size]


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_checkpoint_resume_is_bitwise_the_uninterrupted_pass(tmp_path, kind):
    """(h) interrupt after 3 batches (an exception inside the iterator), resume from the checkpoint on the
    same data: the result equals the uninterrupted pass bitwise, for both schemes."""
    x, _ = make_data(kind)
    kw = dict(progress=False, group_bounds="corollary46")
    ref = dataset_stats(MODELS[kind](), list(torch.split(x, 2)), FAM, scheme="iid", **kw)
    ck = tmp_path / "pass.pt"
    with pytest.raises(_Interrupt):
        dataset_stats(MODELS[kind](), _interrupted(x, 3, 2), FAM, scheme="iid", checkpoint=ck,
                      checkpoint_every=2, **kw)
    saved = torch.load(ck, weights_only=True)
    assert saved["state"]["batches"] == 3 and not saved["finished"]      # saved on the interruption
    got = dataset_stats(MODELS[kind](), list(torch.split(x, 2)), FAM, scheme="iid", checkpoint=ck,
                        checkpoint_every=2, **kw)
    assert got.info["resumed_from"]["batches"] == 3 and not got.info["resumed_from"]["finished"]
    _same(_pack(got)["values"], _pack(ref)["values"], "resumed")
    _same(_pack(got)["groups"], _pack(ref)["groups"], "resumed groups")
    # the finished pass serves the other scheme too, without recomputing
    again = dataset_stats(MODELS[kind](), list(torch.split(x, 2)), FAM, scheme="all", checkpoint=ck, **kw)
    assert again.info["resumed_from"]["finished"]
    ref_all = dataset_stats(MODELS[kind](), list(torch.split(x, 2)), FAM, scheme="all", **kw)
    _same(_pack(again)["values"], _pack(ref_all)["values"], "finished, scheme all")


def test_checkpoint_refuses_other_model_settings_or_data(tmp_path):
    """A resume file from another model, settings or data is refused, naming the mismatch; a failed
    resume leaves the file as it was."""
    x, _ = make_data("mlp")
    ck = tmp_path / "pass.pt"
    dataset_stats(make_mlp(), x, FAM, progress=False, checkpoint=ck, batch_size=4)
    before = ck.read_bytes()
    other = make_mlp()
    with torch.no_grad():
        other[2].weight.mul_(1.5)
    with pytest.raises(ValueError, match="'parameter values'"):
        dataset_stats(other, x, FAM, progress=False, checkpoint=ck, batch_size=4)
    with pytest.raises(ValueError, match="'parameters'"):
        dataset_stats(make_mlp(6), x, FAM, progress=False, checkpoint=ck, batch_size=4)
    with pytest.raises(ValueError, match="'batch_size'"):
        dataset_stats(make_mlp(), x, FAM, progress=False, checkpoint=ck, batch_size=3)
    with pytest.raises(ValueError, match="'n_samples'"):
        dataset_stats(make_mlp(), x, FAM, 2, progress=False, checkpoint=ck, batch_size=4)
    with pytest.raises(ValueError, match="'use_eig'"):
        dataset_stats(make_mlp(), x, FAM, progress=False, checkpoint=ck, batch_size=4, use_eig=False)
    with pytest.raises(ValueError, match="not those of the checkpointed pass"):
        dataset_stats(make_mlp(), x + 1, FAM, progress=False, checkpoint=ck, batch_size=4)
    with pytest.raises(ValueError, match="finished pass over 3 batches, but the data have more"):
        dataset_stats(make_mlp(), torch.cat([x, x[:2]]), FAM, progress=False, checkpoint=ck, batch_size=4)
    assert ck.read_bytes() == before


# ------------------------------------------------------------------------------ batch_size="auto"
def test_auto_batch_size_cuda_branch_with_fake_memory(monkeypatch):
    """The CUDA branch, exercised on the CPU with an injected mem_get_info: half the free memory over
    the per-input bytes, capped by the inputs and the budget-checked allocations."""
    seen = []

    def fake(device):
        seen.append(device)
        return 8 * 2 ** 30, 16 * 2 ** 30

    monkeypatch.setattr(ds_mod, "cuda_mem_get_info", fake)
    B, info = ds_mod.auto_batch_size(2 ** 20, torch.device("cuda", 1))
    assert B == 4096 and info["free_bytes"] == 8 * 2 ** 30 and seen == [torch.device("cuda", 1)]
    assert ds_mod.auto_batch_size(2 ** 20, "cuda:0", cap=100)[0] == 100
    assert ds_mod.auto_batch_size(2 ** 20, "cuda:0", memory_budget="64MiB", checked_per_input=2 ** 20)[0] == 64
    assert ds_mod.auto_batch_size(2 ** 40, "cuda:0")[0] == 1
    # the CPU: at most 256, within the memory budget
    assert ds_mod.auto_batch_size(1, "cpu")[0] == 256
    assert ds_mod.auto_batch_size(2 ** 20, "cpu", memory_budget="10MiB")[0] == 10


def test_dataset_stats_auto_batch_size_records_choice_and_matches():
    x, _ = make_data("mlp")
    x = torch.cat([x] * 30)                          # 360 inputs: more than the CPU cap of 256
    r = dataset_stats(make_mlp(), x, FAM, batch_size="auto", progress=False)
    ref = dataset_stats(make_mlp(), x, FAM, batch_size=256, progress=False)
    assert r.info["batch_size"] == 256 and r.info["batch_size_auto"]["device"] == "cpu"
    _compare_stats(_pack(r), ref, "auto")
    small = dataset_stats(make_mlp(), x, FAM, batch_size="auto", progress=False, memory_budget="256KiB")
    per = small.info["batch_size_auto"]["per_input_bytes"]
    assert small.info["batch_size"] == max(1, min(256, 256 * 1024 // per)) < 256
    with pytest.raises(ValueError, match="'auto'"):
        dataset_stats(make_mlp(), x, FAM, batch_size="big", progress=False)


def test_iter_data_auto_needs_the_per_input_size():
    x = torch.zeros(10, 3)
    it, n = ds_mod.iter_data(x, "auto", per_input_bytes=1024, memory_budget="4KiB")
    assert n == 3 and [b.shape[0] for b, _ in it] == [4, 4, 2]
    with pytest.raises(ValueError, match="per_input_bytes"):
        ds_mod.iter_data(x, "auto")


def test_distributed_example_runs_as_one_process(capsys, monkeypatch):
    """examples/distributed_dataset_stats.py without torchrun: one process, checked against itself
    (under torchrun the same script checks 2 ranks against one process; the CLI docs give the line)."""
    import importlib.util
    from pathlib import Path
    monkeypatch.delenv("RANK", raising=False)
    path = Path(__file__).resolve().parent.parent / "examples" / "distributed_dataset_stats.py"
    spec = importlib.util.spec_from_file_location("example_distributed", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "make_data", lambda n=60: torch.rand(n, 20, generator=torch.Generator().manual_seed(1)))
    mod.main()
    out = capsys.readouterr().out
    assert "1 process(es)" in out and "largest relative difference to one process" in out


def test_comm_device_moves_cpu_buffers_only_for_an_nccl_only_group(monkeypatch):
    """NCCL reduces CUDA tensors only: a CPU model under an NCCL group must reduce on the current CUDA
    device; gloo, mixed ("cpu:gloo,cuda:nccl") groups and CUDA tensors stay where they are."""
    from fishersym.numeric import distributed as dmod
    monkeypatch.setattr(dmod.torch.cuda, "current_device", lambda: 3)
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 1)
    for backend, want in [("nccl", torch.device("cuda", 3)), ("gloo", cpu), ("cpu:gloo,cuda:nccl", cpu)]:
        monkeypatch.setattr(dmod.dist, "get_backend", lambda group=None, b=backend: b)
        assert dmod.comm_device(object(), cpu) == want, backend
        assert dmod.comm_device(object(), cuda) == cuda, backend
    assert dmod.comm_device(None, cpu) == cpu


class _FakeAllocator:
    """A CUDA allocator stand-in for ``probed_batches``: the consumer of the batches sets the peak an
    analysis of b inputs reaches, fixed + slope·b above the 'allocated' base."""

    def __init__(self, base=10 ** 6, fixed=5 * 10 ** 6, slope=10 ** 5):
        self.base, self.fixed, self.slope, self.peak = base, fixed, slope, base

    def __call__(self, device, what):
        return {"allocated": self.base, "reserved": self.base, "peak": self.peak, "reset": 0}[what]

    def analysed(self, b):
        self.peak = self.base + self.fixed + self.slope * b


def test_probed_batches_fit_the_measured_working_set(monkeypatch):
    fake = _FakeAllocator()
    monkeypatch.setattr(ds_mod, "cuda_memory_probe", fake)
    monkeypatch.setattr(ds_mod, "cuda_mem_get_info", lambda dev: (10 ** 9, 2 * 10 ** 9))
    x, y = torch.arange(20000.0)[:, None], torch.arange(20000)
    info: dict = {}
    got = []
    for xb, yb in ds_mod.probed_batches(x, y, torch.device("cpu"), info, 100):
        assert torch.equal(xb[:, 0].long(), yb)
        got.append(xb)
        fake.analysed(xb.shape[0])
    # first batch 100 inputs, peak 5e6 + 100·1e5 = 1.5e7: u = 1.5e5 bytes per input (fixed part included),
    # B = ⌊0.5 · 1e9 / 1.5e5⌋ = 3333
    sizes = [b.shape[0] for b in got]
    assert sizes[0] == 100 and set(sizes[1:-1]) == {3333} and 0 < sizes[-1] <= 3333 and sum(sizes) == 20000
    assert torch.equal(torch.cat(got), x)
    assert info["batch_size"] == 3333 and info["first_batch"] == 100 and info["bytes_per_input"] == 1.5e5
    # the budget-checked allocations bound B too
    info2: dict = {}
    fake.analysed(0)
    sizes2 = []
    for xb, _ in ds_mod.probed_batches(x, None, torch.device("cpu"), info2, 100, checked_per_input=2 ** 20,
                                       memory_budget="512MiB"):
        sizes2.append(xb.shape[0])
        fake.analysed(xb.shape[0])
    assert info2["batch_size"] == 512 and sizes2[1] == 512
    # all the data in the first batch: nothing else
    info3: dict = {}
    assert [b.shape[0] for b, _ in ds_mod.probed_batches(x[:100], None, torch.device("cpu"), info3, 256)] == [100]
    assert info3["batch_size"] == 100


def test_dataset_stats_auto_measures_on_probe_devices_and_matches(monkeypatch):
    """The probing branch of dataset_stats (CUDA only in use) run on the CPU with a fake allocator: the
    batches follow the measurement, nothing is lost, and the result equals a fixed-batch pass."""
    fake = _FakeAllocator(fixed=0, slope=10 ** 6)
    # the estimate's first batch: 2 GiB budget / estimated bytes per input; then B = ⌊0.5·3e8 / 1e6⌋ = 150
    monkeypatch.setattr(ds_mod, "cuda_memory_probe", fake)
    monkeypatch.setattr(ds_mod, "cuda_mem_get_info", lambda dev: (3 * 10 ** 8, 10 ** 9))
    monkeypatch.setattr(ds_mod, "PROBE_DEVICE_TYPES", ("cuda", "cpu"))
    real = ds_mod.analyse_batch

    def spy(engine, model, x, *a, **k):
        out = real(engine, model, x, *a, **k)
        fake.analysed(x.shape[0])
        return out

    monkeypatch.setattr(ds_mod, "analyse_batch", spy)
    x, _ = make_data("mlp")
    x = torch.cat([x] * 400)                                   # 4,800 inputs: more than the estimate allows
    r = dataset_stats(make_mlp(), x, FAM, batch_size="auto", progress=False)
    ref = dataset_stats(make_mlp(), x, FAM, batch_size=256, progress=False)
    auto = r.info["batch_size_auto"]
    assert auto["first_batch"] == auto["estimated_batch_size"] < 4800
    assert r.info["batch_size"] == auto["batch_size"] == 150 and r.info["n_inputs"] == 4800
    _compare_stats(_pack(r), ref, "auto (measured)")
