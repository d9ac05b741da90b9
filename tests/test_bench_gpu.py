"""benchmarks/bench_gpu.py (issue 12 item 5): the one-command device benchmark.

* a smoke run on the CPU (the smallest settings) in a subprocess where BackPACK, curvlinops, pytest,
  hypothesis, scipy, matplotlib, scikit-learn, pandas, torchvision and opt_einsum cannot be imported
  (the device machine may lack them): its markdown tables parse, every time and ratio is positive,
  the JSON agrees with the tables, and the device-vs-CPU check is within 1e-13;
* the timing helpers (prediction, repeat count, skip and error handling), the result comparison
  against an independently perturbed result, and the CUDA branches with a faked ``torch.cuda``
  (CI has no GPU).  No timing assertions.
"""
from __future__ import annotations

import doctest
import json
import math
import os
import subprocess
import sys
import types

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_gpu.py")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import bench_gpu  # noqa: E402

BANNED = ("backpack", "curvlinops", "pytest", "hypothesis", "_pytest", "scipy", "matplotlib", "sklearn", "pandas",
          "torchvision", "opt_einsum", "unfoldNd", "einops")

RUNNER = r"""
import runpy, sys
BANNED = set(sys.argv[1].split(","))
class _Hide:
    # wraps each meta-path finder: the banned packages are not found, as if not installed
    def __init__(self, inner):
        self._inner = inner
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BANNED:
            return None
        return self._inner.find_spec(name, path, target)
    def __getattr__(self, attr):
        return getattr(self._inner, attr)
sys.meta_path[:] = [_Hide(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
try:
    import hypothesis  # noqa: F401
    raise SystemExit("the import hiding does not work")
except ModuleNotFoundError:
    pass
script = sys.argv[2]
sys.argv = [script] + sys.argv[3:]
runpy.run_path(script, run_name="__main__")
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BANNED)
print("LEAKED", leaked)
"""


def _tables(text: str) -> list[list[list[str]]]:
    """Markdown tables of ``text``: lists of rows (header first, the |---| line dropped) of cells."""
    out, cur = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-:") for c in cells):
                cur.append(cells)
        elif cur:
            out.append(cur)
            cur = []
    return out


def _positive(cell: str) -> float:
    v = float(cell.replace(",", ""))
    assert v > 0 and math.isfinite(v), cell
    return v


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_gpu") / "gpu.json"
    env = {**os.environ, "PYTHONPATH": ROOT}
    cmd = [sys.executable, "-c", RUNNER, ",".join(BANNED), SCRIPT, "--device", "cpu", "--quick", "--sizes", "16,32",
           "--arch", "lenet5", "--lenet-input-size", "8", "--repeats", "1", "--threads", "1", "--json", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    with open(out) as fh:
        return p.stdout, json.load(fh)


def test_smoke_run_needs_no_optional_package(smoke):
    stdout, _ = smoke
    assert "LEAKED []" in stdout


def test_smoke_run_tables_parse_and_are_positive(smoke):
    stdout, data = smoke
    tables = _tables(stdout)
    by_head = {t[0][0] + "/" + t[0][1]: t for t in tables}
    summary, mlp, arch = by_head["inputs/CE fwd+bwd"], by_head["inputs/what"], by_head["architecture/dtype"]
    # the layout: one row per input count, every analysis measured (no skip, no error)
    assert [r[0] for r in summary[1:]] == ["16", "32"]
    for r in summary[1:]:
        assert r[1].endswith(" ms") and _positive(r[1][:-3])
        for c in r[2:]:
            assert "×" in c and "skipped" not in c and "error" not in c, c
    # long table: seconds, × CE (same inputs), × CE (256 inputs) positive; batch size used for dataset_stats
    heads = mlp[0]
    assert heads[:5] == ["inputs", "what", "median s", "× CE fwd+bwd (same inputs)", "× CE fwd+bwd (256 inputs)"]
    auto = data["mlp"]["auto_supported"]
    assert len(mlp) - 1 == 2 * 5
    for r in mlp[1:]:
        for c in r[2:5]:
            _positive(c)
        assert r[5] == "—"                                   # no device memory on the CPU
        if r[1].startswith("cross-entropy"):
            assert r[3] == "1.0"
        else:
            b, n = int(r[6]), int(r[0])
            assert 1 <= b <= n if "auto" in r[1] else b in (n, 256)
    assert auto, "this version of dataset_stats accepts batch_size='auto'"
    # architectures: LeNet-5 rows (Jacobian, auto, reverse), times and ratios positive
    assert [r[3].split(" ")[0] for r in arch[1:]] == ["vmap(jacrev)", "conditional_stats(keys=(fisher,", "the"]
    for r in arch[1:]:
        assert r[0].startswith("LeNet-5") and r[1] == "float64" and r[2] == "2"
        _positive(r[4])
        _positive(r[5])
    assert arch[1][5] == "1.00"
    assert "path auto → fast" in arch[2][3]


def test_smoke_run_json_and_cpu_check(smoke):
    stdout, data = smoke
    meta = data["meta"]
    assert meta["device"] == "cpu" and meta["torch"] == torch.__version__
    for n in ("16", "32"):
        cells = data["mlp"]["sizes"][n]["cells"]
        assert set(cells) == {"ce", "ce256", "paper", "default", "paper_auto", "default_auto"}
        for c in cells.values():
            assert c["error"] is None and c["skipped"] is None and c["seconds"] > 0 and c["calls"] == 1
    chk = data["mlp"]["sizes"]["16"]["cpu_check"]
    assert data["mlp"]["check_size"] == 16
    for a in ("paper", "default", "paper_auto", "default_auto"):
        assert 0 <= chk[a]["max_rel_diff_fisher_var1_var2"] <= chk[a]["max_rel_diff"] <= 1e-13, chk[a]
        assert 0 <= chk[a]["max_rel_diff_input_var"] <= bench_gpu.INPUT_VAR_TOL, chk[a]
        assert chk[a]["keys"] >= 14 and chk[a]["against"].endswith("batch_size=256")
    assert stdout.count("target ≤ 1e-13: met") == 4
    lenet = data["architectures"]["lenet5 B=2"]
    assert lenet["info"]["path"] == "fast" and lenet["P"] > 0
    assert lenet["jacobian_bytes"] == 2 * 10 * lenet["P"] * 8


def test_doctests():
    res = doctest.testmod(bench_gpu)
    assert res.failed == 0 and res.attempted >= 8


def test_runner_skips_predicted_and_limits_calls_and_reports_errors():
    cpu = torch.device("cpu")
    runner = bench_gpu.Runner(cpu, repeats=3, max_seconds=5.0, budget_seconds=1e6)
    calls = {"fast": 0, "slow": 0}

    def fast():
        calls["fast"] += 1
        return 1

    def boom():
        raise RuntimeError("CUDA out of memory.\nTried to allocate")

    def never():  # pragma: no cover - must not run
        raise AssertionError("a skipped method ran")

    cells, kept = runner.run({"fast": fast, "boom": boom, "big": never}, predicted={"big": 6.0, "fast": None},
                             keep=("fast",))
    assert kept == {"fast": 1}
    assert calls["fast"] == 1 + 3 and cells["fast"].calls == 3 and cells["fast"].seconds >= 0
    assert cells["boom"].error == "RuntimeError: CUDA out of memory. Tried to allocate"
    assert cells["boom"].text().startswith("error: RuntimeError")
    assert cells["big"].skipped == "skipped (> 5 s: predicted 6 s)"
    spent = bench_gpu.Runner(cpu, repeats=3, max_seconds=5.0, budget_seconds=0.0)
    cells, _ = spent.run({"x": never, "y": never}, predicted={"y": 1.0})
    assert cells["x"].skipped == "skipped (time budget of 0 s spent)"
    assert cells["y"].skipped.startswith("skipped (time budget: predicted 1 s")
    # a warm-up over the per-call limit stands alone: one call, shown as such
    tiny = bench_gpu.Runner(cpu, repeats=3, max_seconds=0.0, budget_seconds=1e6)
    n = []
    cells, _ = tiny.run({"one": lambda: n.append(1)})
    assert len(n) == 1 and cells["one"].calls == 0 and cells["one"].text().endswith("(1 call)")


def test_max_rel_diff_against_known_perturbation():
    g = torch.Generator().manual_seed(3)
    ref = {"fisher": {"a": torch.rand(4, 5, generator=g, dtype=torch.float64) + 1.0,
                      "b": torch.rand(7, generator=g, dtype=torch.float64)},
           "var2_lower": {"a": torch.tensor([-math.inf, 1.0, math.nan], dtype=torch.float64)}}
    got = {k: {n: t.clone() for n, t in d.items()} for k, d in ref.items()}
    assert bench_gpu.max_rel_diff(got, ref) == (0.0, "")
    scale = float(ref["fisher"]["b"].abs().max())
    got["fisher"]["b"][2] += 3e-11 * scale                  # per-tensor relative 3e-11, by construction
    d, where = bench_gpu.max_rel_diff(got, ref)
    assert where == "fisher[b]" and abs(d - 3e-11) < 1e-15
    got["var2_lower"]["a"][0] = math.inf                     # sign of an infinity differs
    assert bench_gpu.max_rel_diff(got, ref) == (math.inf, "var2_lower[a] non-finite values differ")
    got["var2_lower"]["a"][0] = 0.0
    assert bench_gpu.max_rel_diff(got, ref)[0] == math.inf
    del got["var2_lower"]
    assert bench_gpu.max_rel_diff(got, ref) == (math.inf, "key 'var2_lower' missing")


def test_cuda_branches_with_a_faked_torch_cuda(monkeypatch):
    """call_once's peak (max allocated after a reset, less the allocation before) and the device line,
    on a faked CUDA device."""
    state = {"alloc": 1000, "peak": 0, "syncs": 0}
    fake = {
        "synchronize": lambda device=None: state.__setitem__("syncs", state["syncs"] + 1),
        "reset_peak_memory_stats": lambda device=None: state.__setitem__("peak", state["alloc"]),
        "memory_allocated": lambda device=None: state["alloc"],
        "max_memory_allocated": lambda device=None: state["peak"],
        "mem_get_info": lambda device=None: (70 << 30, 80 << 30),
        "get_device_name": lambda device=None: "Fake H100",
        "get_device_properties": lambda device=None: types.SimpleNamespace(major=9, minor=0),
    }
    for k, v in fake.items():
        monkeypatch.setattr(torch.cuda, k, v)
    dev = torch.device("cuda")

    def work():
        state["peak"] = state["alloc"] + 5 * bench_gpu.MIB
        return "value"

    t, peak, out = bench_gpu.call_once(work, dev)
    assert out == "value" and peak == 5 * bench_gpu.MIB and t >= 0 and state["syncs"] == 2
    meta = bench_gpu.device_meta(dev)
    line = bench_gpu.meta_line(meta)
    assert "**Fake H100** (cuda)" in line and "free memory 70.0 / 80.0 GiB" in line and "capability 9.0" in line


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        bench_gpu.parse_args(["--arch", "vgg"])
    with pytest.raises(SystemExit):
        bench_gpu.parse_args(["--sizes", "0,16"])
    a = bench_gpu.parse_args(["--quick"])
    assert a.sizes == [256, 1024] and a.resnet_batches == [2] and a.lenet_batch == 2 and a.max_seconds == 10
    a = bench_gpu.parse_args([])
    assert a.sizes == [256, 4096, 65536] and a.resnet_batches == [2, 8] and a.arch == list(bench_gpu.ARCHS)
