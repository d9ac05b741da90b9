"""Experiment infrastructure: atomic writes, out-folder refusal, data loaders and their errors (issue 6)."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from fishersym.cli import main
from fishersym.experiments import data as D
from fishersym.experiments.io import (MARKER, ExperimentError, atomic_write_text, prepare_out, read_csv,
                                      write_csv, write_json)


def test_prepare_out_refuses_non_empty_without_force(tmp_path):
    out = tmp_path / "run"
    assert prepare_out(out).is_dir()
    assert (out / MARKER).exists()
    with pytest.raises(ExperimentError, match="--force"):
        prepare_out(out)
    (out / "keep.txt").write_text("user data")
    prepare_out(out, force=True)
    assert (out / "keep.txt").read_text() == "user data"      # --force overwrites our files only
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ExperimentError, match="not a directory"):
        prepare_out(f, force=True)


def test_atomic_writes_leave_no_temporaries_and_round_trip(tmp_path):
    rows = [{"epoch": 0, "group": "layer1", "var2": 0.0, "x": 1.2345678901234567e-300},
            {"epoch": 1, "group": "layer2", "var2": float("nan"), "x": float("inf")}]
    write_csv(tmp_path / "a.csv", rows)
    back = read_csv(tmp_path / "a.csv")
    assert back[0]["x"] == 1.2345678901234567e-300 and back[0]["var2"] == 0.0 and back[0]["group"] == "layer1"
    assert np.isnan(back[1]["var2"]) and back[1]["x"] == float("inf")
    write_json(tmp_path / "b.json", {"v": np.float64(1.5), "nan": float("nan")})
    atomic_write_text(tmp_path / "c.txt", "hello")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.json", "c.txt"]


def test_digits_loader_is_seeded_and_scaled():
    a, b = D.load_digits(seed=3), D.load_digits(seed=3)
    assert np.array_equal(a.y_test, b.y_test) and a.x_train.shape[1] == 64
    assert 0 <= a.x_train.min() and a.x_train.max() <= 1
    assert len(a.y_train) + len(a.y_test) == 1797
    assert len(D.load_digits(n_train=100).y_train) == 100


def _fake_mnist(n=30, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), rng.integers(0, 10, size=n).astype(np.uint8)


@pytest.mark.parametrize("kind", ["npz_xy", "npz_split", "idx", "idx_gz", "idx_dir"])
def test_mnist_loader_formats(tmp_path, kind):
    x, y = _fake_mnist()
    if kind == "npz_xy":
        path = tmp_path / "m.npz"
        np.savez(path, x=x, y=y)
    elif kind == "npz_split":
        path = tmp_path / "m.npz"
        np.savez(path, x_train=x[:20], y_train=y[:20], x_test=x[20:], y_test=y[20:])
    else:
        ext = ".gz" if kind == "idx_gz" else ""
        path = D.write_idx(tmp_path / f"train-images-idx3-ubyte{ext}", x)
        D.write_idx(tmp_path / f"train-labels-idx1-ubyte{ext}", y)
        if kind == "idx_dir":
            D.write_idx(tmp_path / "t10k-images-idx3-ubyte", x[:5])
            D.write_idx(tmp_path / "t10k-labels-idx1-ubyte", y[:5])
            path = tmp_path
    ds = D.load_mnist(path, seed=0)
    assert ds.n_features == 784 and ds.n_classes == 10
    assert ds.x_train.max() <= 1.0 and ds.x_train.dtype == np.float32
    total = len(ds.y_train) + len(ds.y_test)
    assert total == (35 if kind == "idx_dir" else 30)
    if kind == "idx_gz":
        with open(path, "rb") as f:
            assert f.read(2) == b"\x1f\x8b"
    # independent check of the pixel values: the IDX payload read back by numpy
    if kind == "idx":
        raw = np.frombuffer(path.read_bytes()[16:], dtype=np.uint8).reshape(30, 784)
        assert np.allclose(np.sort(raw.sum(1) / 255.0), np.sort(np.concatenate([ds.x_train, ds.x_test]).sum(1)),
                           rtol=1e-5)


@pytest.mark.parametrize("make,match", [
    (lambda p: None, "no such file"),
    (lambda p: np.savez(p, x=np.zeros((5, 10)), y=np.zeros(5, int)), "784"),
    (lambda p: np.savez(p, x=np.zeros((5, 28, 28)), y=np.zeros(4, int)), "labels have shape"),
    (lambda p: np.savez(p, x=np.zeros((5, 28, 28)), y=np.full(5, 12)), "0-9"),
    (lambda p: np.savez(p, images=np.zeros((5, 28, 28))), "holds arrays"),
])
def test_mnist_bad_files_name_path_and_format(tmp_path, make, match):
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(ExperimentError, match=match) as e:
        D.load_mnist(path)
    msg = str(e.value)
    assert str(path) in msg and ".npz archive with arrays 'x'" in msg      # names the path and the format


def test_idx_bad_magic_and_missing_labels(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(b"\x01\x02\x03\x04garbage"))
    with pytest.raises(ExperimentError, match="not an IDX file"):
        D.read_idx(p)
    x, _ = _fake_mnist()
    q = D.write_idx(tmp_path / "other-images-idx3-ubyte", x)
    with pytest.raises(ExperimentError, match="labels file"):
        D.load_mnist(q)


def test_cli_bad_data_file_fails_before_training(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((5, 10)), y=np.zeros(5, int))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["experiment", "mlp", "--data", str(bad), "--out", str(out), "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "784" in err and ".npz" in err
    assert not out.exists()                                    # nothing written, no training


def test_cli_unknown_experiment_and_option_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main(["experiment", "nope"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["experiment", "mlp", "--bogus"])
    assert e.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.parametrize("exp", ["toy-ngd", "mlp", "table", "estimators"])
def test_cli_help_documents_common_options(exp, capsys):
    with pytest.raises(SystemExit) as e:
        main(["experiment", exp, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--out", "--seed", "--epochs", "--force"):
        assert opt in text


def test_version_is_the_distribution_version():
    """settings.json records fishersym.__version__ (issue 11: it used to say "?")."""
    from importlib import metadata

    import fishersym
    from fishersym.experiments.io import _versions
    assert fishersym.__version__ == metadata.version("fishersym")
    assert _versions()["fishersym"] == fishersym.__version__
