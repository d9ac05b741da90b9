"""Data sets of the experiments: scikit-learn's bundled 8×8 digits (default) and MNIST from a local file.

THEORY §11: the paper's Figure 2 uses MNIST; it cannot be downloaded here, so
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
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import DTypeLike

from .io import ExperimentError

if TYPE_CHECKING:
    import torch

__all__ = ["Dataset", "load_digits", "load_mnist", "load_dataset", "read_idx", "write_idx", "MNIST_FORMAT",
           "ModelData", "load_model_data", "adapt_inputs", "MODEL_DATA_FORMAT"]

MNIST_FORMAT = ("an .npz archive with arrays 'x' (n, 28, 28) or (n, 784) and 'y' (n,) integer labels 0-9 "
                "(or x_train/y_train[/x_test/y_test]), or standard IDX files "
                "(train-images-idx3-ubyte[.gz] with train-labels-idx1-ubyte[.gz] next to it, "
                "or the folder holding them)")


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
        """The number of input features (columns of ``x_train``)."""
        return int(self.x_train.shape[1])

    def summary(self) -> dict:
        """Name, source, sizes, features and classes as a JSON-friendly dict."""
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
    codes: dict[int, DTypeLike] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
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
            raise ExperimentError(f"{path}: needs at least 2 images to split into train and test; "
                                  f"expected {MNIST_FORMAT}")
        xtr, ytr, xte, yte = _split(xtr, ytr, test_fraction, seed)
    else:
        assert yte is not None                      # test images come with their labels (_read_mnist_arrays)
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


# ---------------------------------------------------------------------- a user's model and data
MODEL_DATA_FORMAT = ("an .npz archive with an array 'x' (n, ...) of inputs and optionally 'y' (n,) of integer labels; "
                     "a .pt file (torch.save) holding a tensor x, a tuple/list (x,) or (x, y), or a dict with keys "
                     "'x' and optionally 'y'; or MNIST IDX files (see 'fishersym experiment mlp --help')")


@dataclass
class ModelData:
    """Inputs for analysing a user's model: ``x`` (n, *input shape) float, ``y`` (n,) int labels or None."""

    x: np.ndarray
    y: np.ndarray | None
    source: str
    adaptation: str = "as given"

    def summary(self) -> dict:
        """Source, size, input shape, whether labels came with the inputs and how they were adapted."""
        return {"source": self.source, "n": int(self.x.shape[0]), "input_shape": list(self.x.shape[1:]),
                "labels": self.y is not None, "adaptation": self.adaptation}


def _model_xy(x, y, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate x (n, ...) finite numbers with n ≥ 1 and y (n,) integers (or None)."""
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ExperimentError(f"{path}: 'x' has dtype {x.dtype}; expected numbers — {MODEL_DATA_FORMAT}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ExperimentError(f"{path}: 'x' has shape {x.shape}; expected (n, ...) with a batch dimension first "
                              f"and n ≥ 1 (one input per row) — {MODEL_DATA_FORMAT}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ExperimentError(f"{path}: 'x' holds non-finite values (nan or inf) — {MODEL_DATA_FORMAT}")
    if y is None:
        return x, None
    y = np.asarray(y)
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ExperimentError(f"{path}: 'y' has shape {y.shape} but 'x' holds {x.shape[0]} inputs; expected one "
                              f"integer label per input, shape ({x.shape[0]},) — {MODEL_DATA_FORMAT}")
    if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
        raise ExperimentError(f"{path}: 'y' has dtype {y.dtype} with non-integer values; expected integer labels — "
                              f"{MODEL_DATA_FORMAT}")
    return x, y.astype(np.int64)


def _load_pt(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    import torch
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for a bad file
        why = "the file is empty" if _is_empty(path) else f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        raise ExperimentError(f"{path}: cannot read as a .pt file ({why}) — {MODEL_DATA_FORMAT}") from None

    def arr(t, what):
        if not isinstance(t, torch.Tensor):
            raise ExperimentError(f"{path}: {what} is a {type(t).__name__}, not a tensor — {MODEL_DATA_FORMAT}")
        return t.detach().cpu().numpy()
    if isinstance(obj, torch.Tensor):
        return arr(obj, "x"), None
    if isinstance(obj, (tuple, list)):
        if not 1 <= len(obj) <= 2:
            raise ExperimentError(f"{path}: holds a {type(obj).__name__} of length {len(obj)}; expected (x,) or "
                                  f"(x, y) — {MODEL_DATA_FORMAT}")
        return arr(obj[0], "x"), (arr(obj[1], "y") if len(obj) == 2 else None)
    if isinstance(obj, dict):
        if "x" not in obj:
            raise ExperimentError(f"{path}: the dict has keys {sorted(map(str, obj))}, no 'x' — {MODEL_DATA_FORMAT}")
        extra = set(obj) - {"x", "y"}
        if extra:
            raise ExperimentError(f"{path}: the dict has unknown keys {sorted(map(str, extra))}; expected 'x' and "
                                  f"optionally 'y' — {MODEL_DATA_FORMAT}")
        return arr(obj["x"], "x"), (arr(obj["y"], "y") if "y" in obj else None)
    raise ExperimentError(f"{path}: holds a {type(obj).__name__}; expected a tensor, a tuple or a dict — "
                          f"{MODEL_DATA_FORMAT}")


def load_model_data(data: str | Path | None, seed: int = 0) -> ModelData:
    """Inputs (and labels, if any) to analyse a user's model on (``fishersym report --model --data``).

    ``data``: a ``.npz`` (arrays ``x``, optional ``y``), a ``.pt`` (tensor, (x[, y]) or
    {'x', 'y'}), MNIST IDX files or folder (:func:`load_mnist`; its held-out test split, as
    784-pixel rows in [0, 1]); ``None``: the digits' test split (64-pixel rows in [0, 1]).
    Inputs keep their per-example shape; :func:`adapt_inputs` fits them to the model.
    """
    if data is None or data == "digits":
        ds = load_digits(seed=seed)
        return ModelData(ds.x_test.astype(np.float64), ds.y_test, ds.source)
    path = Path(data)
    if not path.exists():
        raise ExperimentError(f"--data {path}: no such file or folder; expected {MODEL_DATA_FORMAT}")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = set(z.files)
                if "x" not in keys:
                    raise ExperimentError(f"{path}: the archive holds arrays {sorted(keys)}, no 'x' — "
                                          f"{MODEL_DATA_FORMAT}")
                x, y = z["x"], (z["y"] if "y" in keys else None)
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
            why = "the file is empty" if _is_empty(path) else f"{type(exc).__name__}: {exc}"
            raise ExperimentError(f"{path}: cannot read as .npz ({why}; truncated or corrupt?) — "
                                  f"{MODEL_DATA_FORMAT}") from None
        x, y = _model_xy(x, y, path)
        return ModelData(x, y, str(path))
    if path.suffix in (".pt", ".pth"):
        x, y = _model_xy(*_load_pt(path), path)
        return ModelData(x, y, str(path))
    ds = load_mnist(path, seed=seed)
    return ModelData(ds.x_test.astype(np.float64), ds.y_test, str(path))


def adapt_inputs(x, model, input_shape: tuple[int, ...] | None = None) -> tuple[torch.Tensor, str]:
    """Fit inputs (n, ...) to ``model``: as given when the model runs on them; else reshaped to the
    model's input shape (``input_shape``, or :func:`~fishersym.testing.check.infer_input_shape`) when
    the sizes agree; else, for square single-channel images (n, k·k) or (n, k, k) and an image model,
    resized bilinearly to the model's H × W and repeated over its channels.  Returns the tensor and a
    sentence saying what was done.  Raises :class:`ExperimentError` naming ``--data`` otherwise.

    >>> import torch
    >>> x, how = adapt_inputs(np.zeros((2, 64)), torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten(),
    ...                                                               torch.nn.Linear(72, 2)))
    >>> tuple(x.shape), how
    ((2, 3, 8, 8), 'reshaped (64,) to (1, 8, 8), repeated over 3 channels')
    """
    import math
    import torch
    from ..testing.check import _runs_on, infer_input_shape
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    p = next(iter(model.parameters()), None)
    x = x.to(p.dtype if p is not None and p.is_floating_point() else torch.get_default_dtype())
    given = tuple(x.shape[1:])
    if input_shape is None and _runs_on(model, given):
        return x, "as given"
    try:
        target = tuple(input_shape) if input_shape is not None else infer_input_shape(model)
    except ValueError as exc:
        raise ExperimentError(f"the model does not run on inputs of shape {given} (from the data) and its input "
                              f"shape cannot be inferred ({exc}); pass --data with inputs shaped as the model expects, "
                              f"(n, *input shape)") from None
    if target == given:
        return x, "as given"
    n = x.shape[0]
    if math.prod(given) == math.prod(target):
        return x.reshape(n, *target), f"reshaped {given} to {target}"
    side = math.isqrt(math.prod(given))
    if side * side == math.prod(given) and len(given) <= 2 and len(target) in (2, 3):
        img = x.reshape(n, 1, side, side)
        hw = target[-2:]
        how = f"reshaped {given} to (1, {side}, {side})" if len(given) == 1 else "as images"
        if hw != (side, side):
            img = torch.nn.functional.interpolate(img, size=hw, mode="bilinear", align_corners=False)
            how += f", resized bilinearly to {hw[0]}×{hw[1]}"
        if len(target) == 3:
            if target[0] != 1:
                img = img.repeat(1, target[0], 1, 1)
                how += f", repeated over {target[0]} channels"
        else:
            img = img[:, 0]
        return img.contiguous(), how
    raise ExperimentError(f"the data's inputs have shape {given} per example but the model expects {target}; "
                          f"pass --data with inputs of shape (n, {', '.join(map(str, target))}) — {MODEL_DATA_FORMAT}")
