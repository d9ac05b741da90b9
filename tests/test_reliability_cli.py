"""CLI and output-folder reliability (issue 13 items 8, 9, 10, 15, 21, 22).

Output folders: each command recognises only its own outputs (item 8); a run is written into
a staging folder and swapped in whole, so a failure, SIGINT or SIGKILL at any point leaves
either the old complete run or the new complete run (items 9, 21); files and folders get the
umask's permissions (item 10); a second run on a locked folder fails naming the holder (item 21).
CLI: every bad input ends in ``error: …`` with exit code 2, never a traceback (items 15, 22).

The subprocess tests load ``fishersym/experiments/io.py`` on its own (it needs only the
standard library), so that each process starts in a fraction of a second.
"""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fishersym.cli import build_parser, main
from fishersym.experiments import io as fio
from fishersym.experiments.io import (MARKER, MARKER_FORMAT, ExperimentError, atomic_write_text, output_run,
                                      read_marker)

IO_PATH = Path(fio.__file__).resolve()
ROOT = IO_PATH.parents[2]


def _files(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` except the marker → its text."""
    return {p.relative_to(folder).as_posix(): p.read_bytes().decode("utf-8", "surrogateescape")
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MARKER}


def _write_run(out: Path, command: str, tag: str, n: int = 3, force: bool = False, replace_own: bool = False):
    with output_run(out, command, force=force, replace_own=replace_own) as run:
        for i in range(n):
            atomic_write_text(run.stage / f"f{i}.txt", tag)
        (run.stage / "sub").mkdir()
        atomic_write_text(run.stage / "sub" / "deep.txt", tag)
    return run


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()
                  if ".tmp-" in p.name or ".old-" in p.name or p.name.endswith(".lock"))


# ---------------------------------------------------------------------- item 8: own outputs only
def test_marker_records_command_format_and_files(tmp_path):
    # issue 13 item 8
    out = tmp_path / "o"
    _write_run(out, "experiment mlp", "a")
    m = read_marker(out)
    assert m.command == "experiment mlp" and m.format == MARKER_FORMAT and m.complete
    assert set(m.files) == {"f0.txt", "f1.txt", "f2.txt", "sub/deep.txt"}
    assert json.loads((out / MARKER).read_text())["format"] == MARKER_FORMAT


def test_demo_refuses_an_experiment_mlp_folder_without_force(tmp_path, capsys):
    # issue 13 item 8: the demo took an `experiment mlp` folder for its own and mixed it
    out = tmp_path / "o"
    _write_run(out, "experiment mlp", "mlp results")
    before = _files(out)
    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(out), "--epochs", "1", "--quiet"])
    err = capsys.readouterr()
    assert e.value.code == 2
    assert "experiment mlp" in err.err and "--force" in err.err and "Traceback" not in err.err
    assert "part 1" not in err.out                                   # refused before any work
    assert _files(out) == before and read_marker(out).command == "experiment mlp"


def test_legacy_markers_are_recognised_but_never_taken_as_the_demos(tmp_path, capsys):
    # issue 13 item 8: folders written before the marker had a format (plain text)
    for what, command in [("mlp experiment", "experiment mlp"), ("report", "report")]:
        out = tmp_path / what.replace(" ", "_")
        out.mkdir()
        (out / MARKER).write_text(f"written by fishersym {what}\n")
        (out / "mlp.csv").write_text("old")
        assert read_marker(out).command == command and read_marker(out).format == 1
        with pytest.raises(SystemExit) as e:
            main(["demo", "--out", str(out), "--epochs", "1", "--quiet"])
        assert e.value.code == 2 and "--force" in capsys.readouterr().err
        assert (out / "mlp.csv").read_text() == "old"


@pytest.mark.parametrize("first,second", [("experiment mlp", "demo"), ("demo", "report"), ("report", "demo"),
                                          ("experiment table", "experiment mlp")])
def test_other_commands_folders_need_force_and_are_replaced_whole(tmp_path, first, second):
    # issue 13 item 8: a command reuses only its own folders; --force replaces the folder as a whole
    out = tmp_path / "o"
    _write_run(out, first, "old", n=4)
    with pytest.raises(ExperimentError, match="--force"):
        _write_run(out, second, "new", n=2, replace_own=True)
    assert _files(out) == {**{f"f{i}.txt": "old" for i in range(4)}, "sub/deep.txt": "old"}
    _write_run(out, second, "new", n=2, force=True)
    assert _files(out) == {"f0.txt": "new", "f1.txt": "new", "sub/deep.txt": "new"}   # no old f2, f3: not mixed
    assert read_marker(out).command == second


def test_demo_replaces_only_its_own_previous_output(tmp_path):
    # issue 13 item 8
    out = tmp_path / "o"
    _write_run(out, "demo", "old", n=3)
    run = _write_run(out, "demo", "new", n=1, replace_own=True)
    assert run.replacing == "demo"
    assert _files(out) == {"f0.txt": "new", "sub/deep.txt": "new"}


def test_force_never_deletes_files_fishersym_did_not_write(tmp_path):
    # issue 13 items 8/9: replacing a folder as a whole must not delete the user's own files
    out = tmp_path / "o"
    _write_run(out, "experiment mlp", "old")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExperimentError, match="notes.txt"):
        _write_run(out, "experiment mlp", "new", force=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "f0.txt").read_text() == "old"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("mine")
    with pytest.raises(ExperimentError, match="not written by fishersym"):
        _write_run(foreign, "experiment mlp", "new", force=True)
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]
    assert _leftovers(tmp_path) == []


def test_marker_only_folder_counts_as_empty(tmp_path):
    # issue 13 item 21: an interrupted in-place run left only the marker, which blocked a plain rerun
    out = tmp_path / "o"
    out.mkdir()
    (out / MARKER).write_text("written by fishersym mlp experiment\n")
    _write_run(out, "experiment mlp", "new")
    assert (out / "f0.txt").read_text() == "new"


# ---------------------------------------------------------------------- item 8 + 9: a generated class
_COMMANDS = ["demo", "report", "experiment mlp", "experiment toy-ngd", "experiment table"]


@settings(max_examples=40)
@given(st.lists(st.tuples(st.sampled_from(_COMMANDS), st.booleans(), st.booleans(),
                          st.integers(1, 4), st.sampled_from(["ok", "fail", "interrupt"])),
                min_size=1, max_size=6))
def test_generated_run_sequences_never_mix_or_lose_outputs(tmp_path_factory, ops):
    # issue 13 items 8, 9: any sequence of runs (any command, --force or not, succeeding, failing or
    # interrupted) leaves the folder holding exactly one complete run, the one the rules allow
    out = tmp_path_factory.mktemp("seq") / "o"
    expected = None                      # (command, files) of the run the folder must hold
    for k, (command, force, replace_own, n, outcome) in enumerate(ops):
        tag = f"run{k}"
        prev = expected

        def body(command=command, force=force, replace_own=replace_own, n=n, tag=tag, outcome=outcome):
            with output_run(out, command, force=force, replace_own=replace_own) as run:
                for i in range(n):
                    atomic_write_text(run.stage / f"f{i}.txt", tag)
                    if outcome != "ok" and i == n // 2:
                        raise KeyboardInterrupt if outcome == "interrupt" else RuntimeError("disk full")

        allowed = prev is None or force or (replace_own and prev[0] == command)
        if not allowed:
            with pytest.raises(ExperimentError, match="--force"):
                body()
        elif outcome == "ok":
            body()
            expected = (command, {f"f{i}.txt": tag for i in range(n)})
        else:
            with pytest.raises((KeyboardInterrupt, RuntimeError)):
                body()
        if expected is None:
            assert not out.exists()
        else:
            assert _files(out) == expected[1] and read_marker(out).command == expected[0]
        assert _leftovers(out.parent) == []


# ---------------------------------------------------------------------- item 9: failure during the write
def test_failed_force_rerun_leaves_the_old_run(tmp_path, monkeypatch, capsys):
    # issue 13 item 9: a --force rerun that fails part-way through left a mixed folder
    from fishersym.experiments import toy_ngd
    args = ["experiment", "toy-ngd", "--out", str(tmp_path / "o"), "--epochs", "1", "--seeds", "1",
            "--n-train", "8", "--n-test", "16", "--quiet", "--models", "classification"]
    assert main(args) == 0
    before = _files(tmp_path / "o")

    def broken(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(toy_ngd, "write_settings", broken)       # after the CSVs and figures were written
    with pytest.raises(SystemExit) as e:
        main(args + ["--seed", "3", "--force"])
    assert e.value.code == 2 and "No space left on device" in capsys.readouterr().err
    assert _files(tmp_path / "o") == before
    assert _leftovers(tmp_path) == []


def test_keyboard_interrupt_during_the_write_leaves_the_old_run(tmp_path):
    # issue 13 item 9
    out = tmp_path / "o"
    _write_run(out, "experiment mlp", "old")
    before = _files(out)
    with pytest.raises(KeyboardInterrupt):
        with output_run(out, "experiment mlp", force=True) as run:
            atomic_write_text(run.stage / "f0.txt", "new")
            raise KeyboardInterrupt
    assert _files(out) == before and _leftovers(tmp_path) == []


def test_a_failed_first_run_leaves_nothing(tmp_path):
    # issue 13 items 9/21: nothing appears until success, not even the parent folders created for it
    out = tmp_path / "a" / "b" / "o"
    with pytest.raises(RuntimeError):
        with output_run(out, "experiment mlp") as run:
            atomic_write_text(run.stage / "f0.txt", "new")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_swap_without_renameat2_and_recovery_of_a_half_done_swap(tmp_path, monkeypatch):
    # issue 13 item 9: the two-rename fallback, and a process killed between its two renames
    monkeypatch.setattr(fio, "_exchange", lambda a, b: False)
    out = tmp_path / "o"
    _write_run(out, "experiment mlp", "old")
    _write_run(out, "experiment mlp", "new", n=2, force=True)
    assert _files(out) == {"f0.txt": "new", "f1.txt": "new", "sub/deep.txt": "new"}
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for complete in (True, False):
        current = (out / "f0.txt").read_text()
        new = tmp_path / f".o.tmp-{dead.pid}-x"
        shutil_copy(out, new)                                   # the staged run: complete or not
        if not complete:
            (new / MARKER).unlink()
        (new / "f0.txt").write_text(f"newer {complete}")
        os.rename(out, tmp_path / f".o.old-{dead.pid}-y")      # killed between the two renames
        fio._recover(out)
        assert (out / "f0.txt").read_text() == (f"newer {complete}" if complete else current)
        assert _leftovers(tmp_path) == []


def shutil_copy(a: Path, b: Path) -> None:
    import shutil
    shutil.copytree(a, b)


# ---------------------------------------------------------------------- item 10: permissions
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_files_and_folders_get_the_umask_permissions(tmp_path, umask):
    # issue 13 item 10: data files were written with mode 0600 (mkstemp)
    old = os.umask(umask)
    try:
        f = atomic_write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask
        out = tmp_path / "o"
        _write_run(out, "experiment mlp", "x")
        assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
        assert stat.S_IMODE((out / "f0.txt").stat().st_mode) == 0o666 & ~umask
        assert stat.S_IMODE((out / MARKER).stat().st_mode) == 0o666 & ~umask
    finally:
        os.umask(old)


# ---------------------------------------------------------------------- item 21: locks and signals
SLOW_WRITER = textwrap.dedent("""
    import importlib.util, sys, time
    spec = importlib.util.spec_from_file_location("fsio", {io!r})
    m = importlib.util.module_from_spec(spec)
    sys.modules["fsio"] = m
    spec.loader.exec_module(m)
    out, tag, n, delay, force = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1"
    try:
        with m.output_run(out, "experiment slow", force=force) as run:
            print("started", flush=True)
            for i in range(n):
                m.atomic_write_text(run.stage / f"f{{i}}.txt", tag * 1000)
                time.sleep(delay)
    except m.ExperimentError as exc:
        print("error:", exc, file=sys.stderr)
        sys.exit(2)
    print("done", flush=True)
""")


@pytest.fixture
def writer(tmp_path):
    script = tmp_path / "slow_writer.py"
    script.write_text(SLOW_WRITER.format(io=str(IO_PATH)))

    def start(out, tag, n=10, delay=0.02, force=True):
        # SIGINT back to its default in the child: a test run started in the background (``cmd &``) ignores
        # SIGINT, the children inherit that, and Python then installs no KeyboardInterrupt handler
        return subprocess.Popen([sys.executable, str(script), str(out), tag, str(n), str(delay), "1" if force else "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return start


def _complete(out: Path, tag: str, n: int) -> bool:
    return _files(out) == {f"f{i}.txt": tag * 1000 for i in range(n)} and read_marker(out).complete


def test_second_run_on_a_locked_folder_fails_naming_the_holder(tmp_path, writer):
    # issue 13 item 21: two runs on one --out both exited 0 and one run's results were lost
    out = tmp_path / "o"
    a = writer(out, "a", n=40, delay=0.05)
    assert a.stdout.readline().strip() == "started"
    b = writer(out, "b", n=2, delay=0.0)
    _, err_b = b.communicate(timeout=60)
    assert b.returncode == 2, err_b
    assert "another fishersym run" in err_b and f"pid {a.pid}" in err_b and "experiment slow" in err_b
    a.communicate(timeout=120)
    assert a.returncode == 0 and _complete(out, "a", 40)
    assert _leftovers(tmp_path) == []


def test_cli_refuses_a_folder_locked_by_another_run(tmp_path, capsys):
    # issue 13 item 21: the CLI names the process that holds the folder
    out = tmp_path / "o"
    with output_run(out, "experiment mlp"):
        with pytest.raises(SystemExit) as e:
            main(["experiment", "table", "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "another fishersym run" in err and f"pid {os.getpid()}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_signal_sweep_over_the_write_phase_never_mixes(tmp_path, writer, sig):
    # issue 13 item 21: under a SIGINT/SIGKILL sweep 3 of 10 and 7 of 9 folders came out mixed
    n = 8
    fresh = tmp_path / "fresh"
    p = writer(fresh, "new", n=n, delay=0.02)              # SIGINT on a fresh folder: nothing appears
    assert p.stdout.readline().strip() == "started"
    time.sleep(0.03)
    p.send_signal(sig)
    p.wait(timeout=60)
    assert not fresh.exists() or _complete(fresh, "new", n)
    r = writer(fresh, "again", n=2, delay=0.0, force=fresh.exists())   # a plain rerun is not blocked
    _, err = r.communicate(timeout=60)
    assert r.returncode == 0, err
    outcomes = set()
    for k in range(10):
        out = tmp_path / f"o{k}"
        w = writer(out, "old", n=n, delay=0.0)
        w.communicate(timeout=60)
        assert _complete(out, "old", n)
        p = writer(out, "new", n=n, delay=0.02)
        assert p.stdout.readline().strip() == "started"
        time.sleep(0.025 * k)                               # sweep: before, during and after the write
        p.send_signal(sig)
        p.wait(timeout=60)
        old, new = _complete(out, "old", n), _complete(out, "new", n)
        assert old or new, f"kill after {0.025 * k:.3f} s left a mixed folder: {sorted(_files(out))}"
        outcomes.add("new" if new else "old")
        # a plain rerun works: stale staging folders of the dead process are cleaned up
        r = writer(out, "again", n=2, delay=0.0)
        _, err = r.communicate(timeout=60)
        assert r.returncode == 0, err
        assert _complete(out, "again", 2)
        assert _leftovers(tmp_path) == []
    assert "old" in outcomes                                # the sweep did hit the write phase


def test_plain_rerun_after_sigint_on_a_fresh_folder(tmp_path, writer):
    # issue 13 item 21: SIGINT on a fresh folder left only the marker, which blocked a plain rerun
    out = tmp_path / "o"
    p = writer(out, "new", n=20, delay=0.05, force=False)
    assert p.stdout.readline().strip() == "started"
    p.send_signal(signal.SIGINT)
    p.wait(timeout=60)
    assert not out.exists()
    r = writer(out, "new", n=2, delay=0.0, force=False)
    _, err = r.communicate(timeout=60)
    assert r.returncode == 0, err
    assert _complete(out, "new", 2) and _leftovers(tmp_path) == []


# ---------------------------------------------------------------------- item 15: errors, not tracebacks
def _run_cli(args, capsys):
    """main(args) → (exit code, stdout, stderr), whether it returns or exits."""
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _assert_error(code, err, *needles):
    assert code == 2, err
    assert "error:" in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def test_unknown_family_is_an_error(capsys):
    # issue 13 item 15
    code, _, err = _run_cli(["families", "nosuch"], capsys)
    _assert_error(code, err, "unknown family 'nosuch'", "categorical")


@pytest.mark.parametrize("shape", [["abc"], ["0"], ["-3"], ["2.5"]])
def test_check_bad_input_shape_is_an_error(capsys, shape):
    # issue 13 item 15
    code, _, err = _run_cli(["check", "x:y", "--family", "categorical", "--input-shape", *shape], capsys)
    _assert_error(code, err, "--input-shape")


@pytest.fixture
def user_pkg(tmp_path, monkeypatch):
    """A user package in a fresh folder on sys.path; a unique name per test (sys.modules caches)."""
    name = f"userpkg_{tmp_path.name.replace('-', '_')}"
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "boom.py").write_text("raise RuntimeError('the database is not configured')\n")
    (pkg / "syntax.py").write_text("def f(:\n    pass\n")
    (pkg / "deps.py").write_text("import no_such_dependency_xyz\n")
    (pkg / "models.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        def net():
            torch.manual_seed(0)
            return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
        def raising():
            raise RuntimeError("cannot load the checkpoint")
        def no_model():
            return {"net": net(), "inputs": torch.zeros(2, 3)}
        def not_a_module():
            return {"model": 42}
        def bad_inputs():
            return net(), torch.zeros(3)
        def wrong_inputs():
            return net(), torch.zeros(2, 5)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return name


@pytest.mark.parametrize("target,needles", [
    ("boom:f", ["error while importing {pkg}.boom: RuntimeError: the database is not configured"]),
    ("syntax:f", ["error while importing {pkg}.syntax: SyntaxError"]),
    ("deps:f", ["error while importing {pkg}.deps: ModuleNotFoundError", "no_such_dependency_xyz"]),
    ("models:raising", ["error in the factory {pkg}.models:raising: RuntimeError: cannot load the checkpoint"]),
    ("models:no_model", ["without a 'model' entry", "'inputs'", "'net'"]),
    ("models:not_a_module", ["not a torch.nn.Module", "int"]),
    ("models:bad_inputs", ["batch dimension"]),
    ("models:wrong_inputs", ["the model raised on the factory's inputs", "RuntimeError"]),
    ("nothere:f", ["cannot import module '{pkg}.nothere'"]),
    ("models:nothing", ["has no attribute 'nothing'"]),
])
def test_user_code_errors_are_reported_as_theirs(user_pkg, capsys, target, needles):
    # issue 13 item 15: a user's module, factory or model that raises is named, without a traceback
    code, _, err = _run_cli(["check", f"{user_pkg}.{target}", "--family", "categorical", "--param", "C=3",
                             "--examples", "1"], capsys)
    _assert_error(code, err, *(n.format(pkg=user_pkg) for n in needles))


def test_debug_shows_the_users_traceback(user_pkg, capsys):
    # issue 13 item 15: --debug (before or after the command) shows the traceback of the user's code
    for args in (["--debug", "check", f"{user_pkg}.models:raising", "--family", "categorical"],
                 ["check", f"{user_pkg}.models:raising", "--family", "categorical", "--debug"]):
        code, _, err = _run_cli(args, capsys)
        assert code == 2 and "Traceback" in err and "models.py" in err and 'raise RuntimeError("cannot load' in err
        assert "error in the factory" in err
    code, _, err = _run_cli(["check", f"{user_pkg}.models:raising", "--family", "categorical"], capsys)
    assert "Traceback" not in err and "--debug" in err


def test_check_wrong_input_shape_is_an_error(user_pkg, capsys):
    # issue 13 item 15: a wrong --input-shape ended in a torch traceback
    code, _, err = _run_cli(["check", f"{user_pkg}.models:net", "--family", "categorical", "--param", "C=3",
                             "--input-shape", "5", "--examples", "1"], capsys)
    _assert_error(code, err, "shape (5,)", "--input-shape", "mat1 and mat2")


def test_check_still_runs_a_good_model(user_pkg, capsys):
    code, out, err = _run_cli(["check", f"{user_pkg}.models:net", "--family", "categorical", "--param", "C=3",
                               "--input-shape", "3", "--examples", "1", "--properties", "closed_forms"], capsys)
    assert code == 0, err
    assert f"{user_pkg}.models:net" in out and "closed_forms" in out


def _derive(out):
    return ["derive", "--widths", "2", "1", "--family", "bernoulli", "--out", str(out)]


def test_derive_out_errors(tmp_path, capsys):
    # issue 13 item 15: --out into an existing directory or under a regular file ended in a traceback
    (tmp_path / "afile").write_text("x")
    code, _, err = _run_cli(_derive(tmp_path / "afile" / "x.tex"), capsys)
    _assert_error(code, err, "afile", "is a file, not a folder")
    code, _, err = _run_cli(_derive(tmp_path / "afile" / "deeper" / "x.tex"), capsys)
    _assert_error(code, err, "is a file, not a folder")
    code, _, err = _run_cli(_derive(tmp_path), capsys)
    _assert_error(code, err, "is a directory")
    code, out, err = _run_cli(_derive(tmp_path / "new" / "x.tex"), capsys)
    assert code == 0, err
    assert (tmp_path / "new" / "x.tex").read_text().startswith("\\documentclass")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions; the read-only case is covered "
                    "by --out under a regular file (test_derive_out_errors) and by non-root CI runs")
def test_derive_out_into_a_read_only_folder(tmp_path, capsys):
    # issue 13 item 15
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, _, err = _run_cli(_derive(ro / "x.tex"), capsys)
        _assert_error(code, err, "not writable")
        code, _, err = _run_cli(["experiment", "table", "--out", str(ro / "t")], capsys)
        _assert_error(code, err, str(ro))
    finally:
        ro.chmod(0o755)


def _npz_bytes(tmp_path) -> bytes:
    p = tmp_path / "good.npz"
    np.savez(p, x=np.zeros((5, 28, 28), np.uint8), y=np.zeros(5, np.int64))
    return p.read_bytes()


@pytest.mark.parametrize("kind", ["empty", "truncated", "corrupt", "compressed_corrupt", "not_zip"])
def test_mlp_bad_npz_is_an_error(tmp_path, capsys, kind):
    # issue 13 item 15: a truncated, corrupt or 0-byte .npz ended in a traceback
    good = _npz_bytes(tmp_path)
    bad = tmp_path / "bad.npz"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "truncated":
        bad.write_bytes(good[: len(good) // 2])
    elif kind == "corrupt":
        bad.write_bytes(good[:60] + bytes(b ^ 0xFF for b in good[60:400]) + good[400:])
    elif kind == "compressed_corrupt":
        np.savez_compressed(bad, x=np.arange(5 * 784).reshape(5, 28, 28) % 255, y=np.zeros(5, np.int64))
        data = bytearray(bad.read_bytes())
        for i in range(80, min(len(data) - 200, 600)):
            data[i] ^= 0x5A
        bad.write_bytes(bytes(data))
    else:
        bad.write_text("this is not an archive")
    out = tmp_path / "out"
    code, _, err = _run_cli(["experiment", "mlp", "--data", str(bad), "--out", str(out), "--quiet"], capsys)
    _assert_error(code, err, str(bad), ".npz")
    assert not out.exists()


@pytest.mark.parametrize("args", [
    ["experiment", "mlp", "--n-train", "0"], ["experiment", "mlp", "--n-test", "0"],
    ["experiment", "toy-ngd", "--n-train", "0"], ["experiment", "toy-ngd", "--n-test", "0"],
    ["experiment", "mlp", "--n-train", "-5"], ["experiment", "mlp", "--widths", "0"],
    ["experiment", "mlp", "--dropout", "1"], ["experiment", "mlp", "--batch-size", "0"],
    ["experiment", "mlp", "-N", "0"], ["experiment", "toy-ngd", "--seeds", "0"],
    ["experiment", "toy-ngd", "--check-every", "0"], ["experiment", "toy-ngd", "--lr", "nan"],
    ["experiment", "table", "--classes", "1"], ["experiment", "table", "--sigma2", "-1"],
    ["report", "--n-inputs", "0"], ["report", "--target", "0"], ["demo", "--widths", "-1"],
    ["derive", "--widths", "2", "1", "--family", "gaussian", "--sigma2", "0"],
])
def test_out_of_range_numbers_are_usage_errors(tmp_path, capsys, args):
    # issue 13 items 15, 22: --n-train 0 etc. crashed or ran on nothing
    code, _, err = _run_cli([*args, "--out", str(tmp_path / "o")] if args[0] != "derive" else args, capsys)
    _assert_error(code, err, "expected")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "-inf", "abc"])
def test_toy_ngd_damping_is_validated(tmp_path, capsys, value):
    # issue 13 item 22: --damping -1 was accepted and the run diverged
    code, _, err = _run_cli(["experiment", "toy-ngd", "--damping", value, "--out", str(tmp_path / "o")], capsys)
    _assert_error(code, err, "--damping")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("field,value", [("damping", -1.0), ("damping", 0.0), ("damping", float("nan")),
                                         ("lr", 0.0), ("check_every", 0)])
def test_toy_settings_are_validated_in_the_api(tmp_path, field, value):
    # issue 13 item 22: the Python API refuses the same values, before writing anything
    from fishersym.experiments.toy_ngd import ToySettings, run_toy_ngd
    with pytest.raises(ValueError, match=field):
        run_toy_ngd(tmp_path / "o", ToySettings(**{field: value}))
    assert not (tmp_path / "o").exists()


_NUMERIC = {("experiment", "toy-ngd"): {"--seeds": 1, "--n-train": 1, "--n-test": 1, "--batch-size": 1,
                                        "--check-every": 1, "--epochs": 1, "--lr": 0.0, "--damping": 0.0},
            ("experiment", "mlp"): {"--n-train": 1, "--n-test": 1, "--batch-size": 1, "--n-samples": 1,
                                    "--n-inputs": 1, "--epochs": 0, "--lr": 0.0},
            ("experiment", "estimators"): {"--n-train": 1, "--n-analysis": 1, "--ewc-inputs": 1,
                                           "--n-mc-inputs": 1, "--repeats": 1, "--epochs": 0}}


@settings(max_examples=60)
@given(st.sampled_from(sorted(_NUMERIC)), st.data())
def test_generated_numeric_options_parse_or_are_usage_errors(cmd, data):
    # issue 13 items 15, 22: every numeric option either parses to a value in its range or is refused
    # by argparse (SystemExit 2), for any integer, float or junk string
    opt = data.draw(st.sampled_from(sorted(_NUMERIC[cmd])))
    low = _NUMERIC[cmd][opt]
    raw = data.draw(st.one_of(st.integers(-10, 10).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                              st.text(max_size=4)))
    parser = build_parser()
    try:
        ns = parser.parse_args([*cmd, opt, raw])
    except SystemExit as e:
        assert e.code == 2
        return
    v = getattr(ns, opt.lstrip("-").replace("-", "_"))
    assert np.isfinite(v) and (v > low if isinstance(low, float) else v >= low)


def test_out_must_not_be_the_current_folder_or_above(tmp_path, monkeypatch):
    # issue 13 item 9: a run replaces --out as a whole; the current folder (or one above) is refused
    sub = tmp_path / "work"
    sub.mkdir()
    monkeypatch.chdir(sub)
    for out in (".", "..", str(sub)):
        with pytest.raises(ExperimentError, match="current folder"):
            _write_run(Path(out), "experiment mlp", "x")
    assert list(sub.iterdir()) == []


def test_output_run_is_reentrant(tmp_path):
    # issue 13 item 9: a run function that stages its own folder may be called inside a CLI's output_run
    out = tmp_path / "o"
    with output_run(out, "experiment mlp") as outer:
        with output_run(outer.stage, "experiment mlp", force=True) as inner:
            assert inner is outer
            atomic_write_text(inner.stage / "a.txt", "x")
        assert not out.exists()
    assert _files(out) == {"a.txt": "x"}


@pytest.mark.parametrize("kw", [{"n_train": 0}, {"n_test": 0}, {"n_train": -1}, {"n_test": 2.5}])
def test_data_subset_sizes_are_validated_in_the_api(kw):
    # issue 13 item 15: n_train/n_test = 0 gave empty data sets that failed later inside training
    from fishersym.experiments.data import load_dataset
    with pytest.raises(ExperimentError, match=next(iter(kw))):
        load_dataset(None, **kw)
