"""Output folders of the experiments called from Python (issue 13 items 8, 9, 21).

``run_mlp``, ``run_report``, ``run_table`` and ``run_toy_ngd`` write through
:func:`fishersym.experiments.io.output_run` themselves, not only under the CLI: a run that
fails part-way (an exception, or ``KeyboardInterrupt`` as from SIGINT) leaves the previous
complete run untouched and no staging folder, lock or created parent behind; no output file
names the private staging folder; ``python -m fishersym`` is the CLI.

Failures are injected by counting the package's file writes (every writer ends in
``io.atomic_write_bytes``) and raising at the k-th one.  Runs are as small as the settings
allow, so the file runs in well under a minute.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fishersym.experiments.io as fio
import fishersym.experiments.mlp as fmlp
from fishersym.experiments.io import ExperimentError, output_run, read_marker
from fishersym.experiments.mlp import MLPSettings, run_mlp
from fishersym.experiments.report import ReportSettings, run_report
from fishersym.experiments.table import TableSettings, run_table
from fishersym.experiments.estimators import EstimatorSettings, run_estimators
from fishersym.experiments.toy_ngd import ToySettings, run_toy_ngd

ROOT = Path(__file__).resolve().parents[1]


def _table(out, settings, force=False):
    return run_table(out, settings, force=force, echo=False)


#: name → (run function, settings for a seed, the CLI command that writes such a folder)
CASES = {
    "mlp": (run_mlp, lambda seed: MLPSettings(seed=seed, epochs=0, widths=(2,), n_samples=1, n_inputs=1,
                                              n_train=20, n_test=5, progress=False), "experiment mlp"),
    "report": (run_report, lambda seed: ReportSettings(seed=seed, epochs=0, widths=(2,), n_samples=1, n_inputs=1,
                                                       n_train=20, n_test=5, derivation_widths=(1, 1),
                                                       progress=False), "report"),
    "table": (_table, lambda seed: TableSettings(seed=seed, n_points=1, classes=(3,), sigma2=(1.0,), n_starts=1),
              "experiment table"),
    "toy-ngd": (run_toy_ngd, lambda seed: ToySettings(seed=seed, epochs=1, n_seeds=1, n_train=4, n_test=4,
                                                      batch_size=4, check_every=1, models=("regression",),
                                                      progress=False), "experiment toy-ngd"),
    "estimators": (run_estimators, lambda seed: EstimatorSettings(
        seed=seed, models=("mlp",), epochs=0, widths=(2,), n_train=40, n_analysis=8, n_mc_inputs=2, repeats=20,
        m_ladder=(1,), n_samples=(1,), ewc_inputs=4, ewc_population=16, progress=False), "experiment estimators"),
}


class Injected(OSError):
    """The failure raised by :func:`_fail_at` (an OSError, like a full disk)."""


def _fail_at(monkeypatch, k: int | None, exc: type[BaseException] = Injected) -> list[str]:
    """Count the package's file writes; raise ``exc`` at the k-th (never if k is None). Returns the names written."""
    real = fio.atomic_write_bytes
    calls: list[str] = []

    def flaky(path, data):
        calls.append(Path(path).name)
        if k is not None and len(calls) == k:
            raise exc(f"injected failure at write {k} ({Path(path).name})")
        return real(path, data)

    monkeypatch.setattr(fio, "atomic_write_bytes", flaky)
    monkeypatch.setattr(fmlp, "atomic_write_bytes", flaky, raising=False)     # imported by name (model.pt)
    return calls


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` with its bytes (relative '/'-paths)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _texts(folder: Path) -> dict[str, str]:
    return {k: v.decode("utf-8") for k, v in _snapshot(folder).items() if not k.endswith((".png", ".pt"))}


# ---------------------------------------------------------------------- a complete run, as the CLI makes it
@pytest.fixture(scope="module")
def baselines(tmp_path_factory):
    """Per case: a complete run written as the CLI does (the run function on output_run's staging folder)."""
    made = {}
    for name, (fn, settings, command) in CASES.items():
        out = tmp_path_factory.mktemp(name) / "run"
        mp = pytest.MonkeyPatch()
        written = _fail_at(mp, None)
        with output_run(out, command) as run:
            r = fn(run.stage, settings(0), force=True)
            # re-entrant: the run wrote into the enclosing staging folder; its paths lie where it was told
            assert r["out"] == run.stage
            assert r["paths"] and all(Path(p).is_file() and run.stage in Path(p).parents for p in r["paths"].values())
            stage = run.stage
        mp.undo()
        assert written[-1] == fio.MARKER           # the last write: the marker, just before the swap
        made[name] = (out, stage, len(written))
    return made


@pytest.mark.parametrize("name", CASES)
def test_outputs_never_name_the_staging_folder(name, baselines):
    # issue 13 item 9: run under the CLI's output_run, the report's HTML named the staging folder
    # (".run.tmp-<pid>-…", deleted once the run is in place) as the place it was written to
    out, stage, _ = baselines[name]
    fn, settings, command = CASES[name]
    assert not stage.exists()
    marker = read_marker(out)
    assert marker.command == command and marker.complete
    texts = _texts(out)
    assert texts and "settings.json" in texts
    for rel, text in texts.items():
        assert ".tmp-" not in text, f"{rel} names a staging folder"
        assert stage.name not in text and str(stage) not in text, f"{rel} names the staging folder {stage}"
    if name == "report":
        html = texts["report.html"]
        assert f"Written to <code>{out}</code>" in html      # the final folder instead
    leftovers = sorted(n for n in os.listdir(out.parent) if n != out.name)
    assert leftovers == []


@pytest.mark.parametrize("name", CASES)
def test_failed_rerun_leaves_the_previous_run_untouched(name, baselines, tmp_path, monkeypatch):
    # issue 13 item 9: a --force rerun that failed part-way replaced files one by one (a mixed folder)
    fn, settings, command = CASES[name]
    import shutil
    out = tmp_path / "run"
    shutil.copytree(baselines[name][0], out)
    before = _snapshot(out)
    # KeyboardInterrupt (SIGINT) at the third file write; another seed, so every data file would differ
    written = _fail_at(monkeypatch, 3, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt, match="injected failure at write 3"):
        fn(out, settings(1), force=True)
    monkeypatch.undo()
    assert len(written) == 3
    assert _snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["run"]          # no staging folder, no lock file
    # an OSError at the last write (the marker, just before the swap); one quick case suffices, as that
    # step is output_run's own and the same for every experiment
    if name == "table":
        _fail_at(monkeypatch, baselines[name][2])
        with pytest.raises(Injected, match=fio.MARKER):
            fn(out, settings(1), force=True)
        monkeypatch.undo()
        assert _snapshot(out) == before
        assert sorted(os.listdir(tmp_path)) == ["run"]


@pytest.mark.parametrize("name", CASES)
def test_failed_run_on_a_fresh_folder_leaves_nothing(name, tmp_path, monkeypatch):
    # issue 13 items 9, 21: a fresh folder that failed kept its marker and first files (blocking a plain rerun)
    fn, settings, command = CASES[name]
    out = tmp_path / "new" / "deeper" / "run"
    _fail_at(monkeypatch, 2)
    with pytest.raises(Injected, match="injected failure at write 2"):
        fn(out, settings(0))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []                      # nor the parents this run created


def test_python_api_returns_the_final_paths_and_refuses_without_force(tmp_path):
    # issue 13 item 9: called from Python (not under the CLI) the run is staged and swapped in; its paths
    # name the final folder, where the files are once it returns
    out = tmp_path / "t"
    r = run_table(out, TableSettings(n_points=1, classes=(3,), sigma2=(1.0,), n_starts=1), echo=False)
    assert r["out"] == out
    assert {p.name for p in r["paths"].values()} == {"table.tex", "table_standalone.tex", "table.csv", "table.txt",
                                                     "table.json", "settings.json"}
    assert all(p.parent == out and p.is_file() for p in r["paths"].values())
    marker = read_marker(out)
    assert marker.command == "experiment table" and marker.complete
    assert set(marker.files) == {p.name for p in r["paths"].values()}
    assert sorted(os.listdir(tmp_path)) == ["t"]
    before = _snapshot(out)
    with pytest.raises(ExperimentError, match="--force"):
        run_table(out, TableSettings(seed=1, n_points=1, classes=(3,), sigma2=(1.0,), n_starts=1), echo=False)
    assert _snapshot(out) == before


def test_second_run_on_a_locked_folder_is_refused(tmp_path):
    # issue 13 item 21: two runs on one folder both passed the emptiness check and one result was lost;
    # a run from Python takes the folder's lock, and a second process holding it makes it fail at once
    out = tmp_path / "t"
    holder = textwrap.dedent(f"""
        import sys
        from fishersym.experiments.io import output_run
        with output_run({str(out)!r}, "experiment table") as run:
            (run.stage / "partial.txt").write_text("half")
            print("locked", flush=True)
            sys.stdin.readline()
            raise SystemExit(3)         # the holder fails: nothing of it may appear
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env=env)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(ExperimentError, match=r"another fishersym run is writing this folder \(pid"):
            run_table(out, TableSettings(n_points=1, classes=(3,), sigma2=(1.0,), n_starts=1), force=True,
                      echo=False)
    finally:
        p.stdin.write("\n")
        p.stdin.close()
        assert p.wait(timeout=60) == 3
    assert os.listdir(tmp_path) == []


def test_python_m_fishersym_runs_the_cli():
    # `python -m fishersym` is the `fishersym` command (fishersym.cli.main)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-m", "fishersym", "families", "bernoulli"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("== bernoulli") and "F(h)" in r.stdout
