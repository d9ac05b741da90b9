"""Output folders, atomic writes and the settings record of every experiment run.

Conventions shared by all experiments (``fishersym experiment …``, ``fishersym report``):

* every run writes into one folder (``--out DIR``); an existing, non-empty
  folder is refused unless ``--force`` is given (:func:`prepare_out`);
* every file is written atomically: to a temporary file in the same folder,
  then ``os.replace`` — a crash never leaves a half-written CSV or PNG;
* every run writes its numbers (CSV/JSON) next to its figures, together with a
  ``settings.json`` holding the settings, the seed, the command line, the
  package and library versions and the runtime (:func:`write_settings`).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["ExperimentError", "prepare_out", "atomic_write_bytes", "atomic_write_text", "write_json",
           "write_csv", "read_csv", "save_figure", "write_settings", "MARKER", "jsonable"]

#: a file every run writes into its folder; ``fishersym demo`` only overwrites folders carrying it
MARKER = ".fishersym-run"


class ExperimentError(RuntimeError):
    """A user-facing error of an experiment (bad input, refused overwrite); the CLI prints it and exits 2."""


def prepare_out(out: str | os.PathLike, force: bool = False, what: str = "experiment") -> Path:
    """Create the output folder; refuse an existing non-empty one unless ``force``.

    With ``force`` files of the same name are overwritten (atomically); other
    files in the folder are left alone.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExperimentError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExperimentError(f"--out {out}: the folder exists and is not empty; the {what} would overwrite "
                              "its files. Pass --force to overwrite, or choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MARKER, f"written by fishersym {what}\n")
    return out


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def jsonable(obj: Any) -> Any:
    """Convert tensors, numpy values, paths and non-finite floats to JSON-friendly values."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # torch / numpy
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=2, ensure_ascii=False) + "\n")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if hasattr(v, "item"):
        return _fmt(v.item())
    return str(v)


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], columns: Iterable[str] | None = None) -> Path:
    """Rows (dicts) as CSV with full float precision; columns default to the union in first-seen order."""
    cols = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([_fmt(r.get(c, "")) for c in cols])
    return atomic_write_text(path, buf.getvalue())


def read_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a CSV written by :func:`write_csv`; numeric cells become floats."""
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            row = {}
            for k, v in r.items():
                try:
                    row[k] = float(v)
                except (TypeError, ValueError):
                    row[k] = v
            out.append(row)
    return out


def save_figure(fig, path: str | os.PathLike, dpi: int = 130) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for mod in ("fishersym", "torch", "numpy", "sympy", "matplotlib", "sklearn"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "?")
        except Exception:  # pragma: no cover
            pass
    return out


def write_settings(out: Path, experiment: str, settings: Mapping[str, Any], started: float,
                   extra: Mapping[str, Any] | None = None, name: str = "settings.json") -> Path:
    """The companion JSON of a run: settings (incl. seed), argv, versions, runtime, results summary."""
    rec = {"experiment": experiment, "settings": dict(settings), "argv": sys.argv,
           "versions": _versions(), "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
           "runtime_s": round(time.time() - started, 3)}
    if extra:
        rec.update(extra)
    return write_json(Path(out) / name, rec)
