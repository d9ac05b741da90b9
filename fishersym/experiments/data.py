"""Data sets of the experiments: scikit-learn's bundled 8×8 digits (default) and MNIST from a local file.

THEORY.md §11: the paper's Figure 2 uses MNIST; it cannot be downloaded here, so
the default is ``sklearn.datasets.load_digits`` (1,797 images of 8×8 pixels, 10
classes, shipped with scikit-learn) and MNIST is read from a file the user names:

* an ``.npz`` archive with arrays ``x`` (images, (n, 28, 28) or (n, 784)) and
  ``y`` (integer labels 0–9, shape (n,)); or with ``x_train``/``y_train``
  (and optionally ``x_test``/``y_test``), as ``keras.datasets.mnist`` saves it;
* the standard IDX files (``train-images-idx3-ubyte`` …, gzip-compressed or
  not): pass the images file (its labels file is found by the standard name
  ``…-labels-idx1-ubyte[.gz]`` next to it) or the folder holding them.

Every loader validates shapes and labels *before* any training and names the
path and the expected format in its error (:class:`~fishersym.experiments.io.ExperimentError`).
Pixel values are scaled to [0, 1].
"""
from __future__ import annotations

import gzip
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import ExperimentError

__all__ = ["Dataset", "load_digits", "load_mnist", "load_dataset", "read_idx", "write_idx", "MNIST_FORMAT"]

MNIST_FORMAT = ("an .npz archive with arrays 'x' (n, 28, 28) or (n, 784) and 'y' (n,) integer labels 0-9 "
                "(or x_train/y_train[/x_test/y_test]), or standard IDX files "
                "(train-images-idx3-ubyte[.gz] with train-labels-idx1-ubyte[.gz] next to it, or the folder holding them)")


@dataclass
class Dataset:
    """Flattened float inputs in [0, 1] and integer labels, split into train and test."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    source: str

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def summary(self) -> dict:
        return {"name": self.name, "source": self.source, "n_train": int(len(self.y_train)),
                "n_test": int(len(self.y_test)), "n_features": self.n_features, "n_classes": self.n_classes}


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    n_test = max(1, int(round(test_fraction * len(y))))
    te, tr = perm[:n_test], perm[n_test:]
    return x[tr], y[tr], x[te], y[te]


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _subset(x: np.ndarray, y: np.ndarray, n: int | None, seed: int, what: str = "n") -> tuple[np.ndarray, np.ndarray]:
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise ExperimentError(f"{what} must be a positive integer (or None for all), got {n!r}")
    if n is None or n >= len(y):
        return x, y
    idx = np.sort(np.random.default_rng(seed).choice(len(y), size=n, replace=False))
    return x[idx], y[idx]


def load_digits(test_fraction: float = 0.2, seed: int = 0, n_train: int | None = None) -> Dataset:
    """scikit-learn's bundled 8×8 digits, pixels /16, a seeded train/test split."""
    try:
        from sklearn.datasets import load_digits as _ld
    except ImportError as exc:  # pragma: no cover
        raise ExperimentError("the digits data set needs scikit-learn: pip install 'fishersym[experiments]'") from exc
    d = _ld()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    xtr, ytr, xte, yte = _split(x, y, test_fraction, seed)
    xtr, ytr = _subset(xtr, ytr, n_train, seed, "n_train")
    return Dataset("digits", xtr, ytr, xte, yte, 10, "sklearn.datasets.load_digits (8x8)")


# ---------------------------------------------------------------------- IDX
def _open(path: Path):
    with open(path, "rb") as f:
        head = f.read(2)
    return gzip.open(path, "rb") if head == b"\x1f\x8b" else open(path, "rb")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip or plain): magic 0x0000 | dtype code | ndim, big-endian dims, data."""
    path = Path(path)
    codes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    try:
        with _open(path) as f:
            magic = f.read(4)
            if len(magic) != 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in codes:
                raise ExperimentError(f"{path}: not an IDX file (bad magic number {magic!r}); expected {MNIST_FORMAT}")
            ndim = magic[3]
            dims = struct.unpack(f">{ndim}I", f.read(4 * ndim))
            dt = np.dtype(codes[magic[2]])
            data = f.read()
    except (OSError, EOFError, struct.error, zlib.error) as exc:
        raise ExperimentError(f"{path}: cannot read as an IDX file ({exc}); expected {MNIST_FORMAT}") from None
    n = int(np.prod(dims)) if dims else 0
    if len(data) < n * dt.itemsize:
        raise ExperimentError(f"{path}: truncated IDX file (header promises dims {dims}); expected {MNIST_FORMAT}")
    return np.frombuffer(data[: n * dt.itemsize], dtype=dt).reshape(dims)


def write_idx(path: str | Path, arr: np.ndarray, compress: bool | None = None) -> Path:
    """Write a uint8 array as an IDX file (gzip when the name ends in .gz); used by tests and examples."""
    path = Path(path)
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    data = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _labels_for(images: Path) -> Path:
    name = images.name
    for a, b in (("images-idx3", "labels-idx1"), ("images.idx3", "labels.idx1"), ("images", "labels")):
        if a in name:
            cand = images.with_name(name.replace(a, b))
            for c in (cand, cand.with_name(cand.name + ".gz"), cand.with_name(cand.name.removesuffix(".gz"))):
                if c.exists():
                    return c
            raise ExperimentError(f"{images}: its labels file {cand} (or .gz) was not found; expected {MNIST_FORMAT}")
    raise ExperimentError(f"{images}: cannot infer the labels file from the name (expected '…-images-idx3-ubyte'); "
                          f"expected {MNIST_FORMAT}")


def _check_xy(x: np.ndarray, y: np.ndarray, path: Path, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:
        x = x.reshape(x.shape[0], -1)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ExperimentError(f"{path}: {what} images have shape {x.shape}; expected (n, 28, 28) or (n, 784) "
                              f"with n > 0 — {MNIST_FORMAT}")
    if x.shape[1] != 784:
        raise ExperimentError(f"{path}: {what} images have {x.shape[1]} pixels each; MNIST expects 784 (28×28) — "
                              f"{MNIST_FORMAT}")
    y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ExperimentError(f"{path}: {what} labels have shape {y.shape} but there are {x.shape[0]} images; "
                              f"expected one integer label per image — {MNIST_FORMAT}")
    if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
        raise ExperimentError(f"{path}: {what} labels have dtype {y.dtype}; expected integers 0-9 — {MNIST_FORMAT}")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() > 9:
        raise ExperimentError(f"{path}: {what} labels range over [{y.min()}, {y.max()}]; expected 0-9 — {MNIST_FORMAT}")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise ExperimentError(f"{path}: {what} images are not finite numbers — {MNIST_FORMAT}")
    x = x.astype(np.float32)
    if x.max() > 1.0:
        x = x / 255.0
    return x, y


def _read_mnist_arrays(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    if not path.exists():
        raise ExperimentError(f"{path}: no such file or folder; expected {MNIST_FORMAT}")
    if path.is_dir():
        found = {}
        for split in ("train", "t10k"):
            for ext in ("", ".gz"):
                p = path / f"{split}-images-idx3-ubyte{ext}"
                if p.exists():
                    found[split] = p
        if "train" not in found:
            raise ExperimentError(f"{path}: the folder holds no train-images-idx3-ubyte[.gz]; expected {MNIST_FORMAT}")
        xtr, ytr = read_idx(found["train"]), read_idx(_labels_for(found["train"]))
        xte = yte = None
        if "t10k" in found:
            xte, yte = read_idx(found["t10k"]), read_idx(_labels_for(found["t10k"]))
        return xtr, ytr, xte, yte
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = set(z.files)
                if {"x", "y"} <= keys:
                    return z["x"], z["y"], None, None
                if {"x_train", "y_train"} <= keys:
                    te = (z["x_test"], z["y_test"]) if {"x_test", "y_test"} <= keys else (None, None)
                    return z["x_train"], z["y_train"], *te
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
            why = "the file is empty" if _is_empty(path) else f"{type(exc).__name__}: {exc}"
            raise ExperimentError(f"{path}: cannot read as .npz ({why}; truncated or corrupt?); "
                                  f"expected {MNIST_FORMAT}") from None
        raise ExperimentError(f"{path}: the archive holds arrays {sorted(keys)}; expected {MNIST_FORMAT}")
    return read_idx(path), read_idx(_labels_for(path)), None, None


def load_mnist(path: str | Path, test_fraction: float = 1 / 7, seed: int = 0, n_train: int | None = None,
               n_test: int | None = None) -> Dataset:
    """MNIST (or any 28×28, 10-class set in that format) from a local file; see the module docstring.

    Without a separate test split, a seeded ``test_fraction`` of the images is held out.
    ``n_train``/``n_test`` take seeded subsets (to keep runs short).
    """
    path = Path(path)
    xtr, ytr, xte, yte = _read_mnist_arrays(path)
    xtr, ytr = _check_xy(xtr, ytr, path, "training")
    if xte is None:
        if len(ytr) < 2:
            raise ExperimentError(f"{path}: needs at least 2 images to split into train and test; expected {MNIST_FORMAT}")
        xtr, ytr, xte, yte = _split(xtr, ytr, test_fraction, seed)
    else:
        xte, yte = _check_xy(xte, yte, path, "test")
    xtr, ytr = _subset(xtr, ytr, n_train, seed, "n_train")
    xte, yte = _subset(xte, yte, n_test, seed + 1, "n_test")
    return Dataset("mnist", xtr, ytr, xte, yte, 10, str(path))


def load_dataset(data: str | None, seed: int = 0, n_train: int | None = None, n_test: int | None = None) -> Dataset:
    """``None`` or "digits": the bundled digits; anything else: a path to MNIST (validated)."""
    if data is None or data == "digits":
        ds = load_digits(seed=seed, n_train=n_train)
        if n_test is not None:
            ds.x_test, ds.y_test = _subset(ds.x_test, ds.y_test, n_test, seed + 1, "n_test")
        return ds
    return load_mnist(data, seed=seed, n_train=n_train, n_test=n_test)
