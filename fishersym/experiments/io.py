"""Output folders, atomic writes and the settings record of every experiment run.

Conventions shared by all experiments and reports (``fishersym experiment …``,
``fishersym report``, ``fishersym demo``):

* **One run, one folder, swapped in whole** (:func:`output_run`).  A run writes
  everything into a sibling staging folder ``.<name>.tmp-<pid>-<random>`` (same
  parent, so the same file system) and only when it has succeeded is that
  folder put in place of ``--out``.  On Linux the swap is one
  ``renameat2(RENAME_EXCHANGE)`` (atomic: at every instant ``--out`` is either the
  old complete run or the new complete run); elsewhere it is two renames
  (``--out`` → ``.<name>.old-<pid>-<random>``, staging → ``--out``), and the only
  window is between those two calls, where ``--out`` is briefly absent; a process
  killed inside that window is repaired by the next run on that ``--out``
  (:func:`_recover`).  Any failure before the swap — an exception, ``SIGINT``
  (``KeyboardInterrupt``), ``SIGKILL`` — leaves the previous contents of
  ``--out`` untouched; the staging folder is removed (exception, ``SIGINT``) or
  left behind and removed by the next run once its process is dead (``SIGKILL``).
  ``SIGINT``/``SIGTERM`` are held back during the swap itself.
* **A lock per output folder.**  ``flock`` on ``.<name>.lock`` in the parent folder;
  a second run on the same ``--out`` fails at once with an error naming the
  process that holds it (same machine; on network file systems ``flock`` may not
  be enforced).
* **Each command recognises only its own outputs.**  The marker file
  ``.fishersym-run`` (JSON, ``format`` :data:`MARKER_FORMAT`) records the
  command that wrote the folder and the list of files it wrote.  An existing,
  non-empty ``--out`` is refused unless ``--force`` (``fishersym demo`` also
  replaces a folder that ``fishersym demo`` wrote); ``--force`` replaces only
  folders written by fishersym and never a folder holding files that the
  recorded run did not write, nor a folder without a marker.
* Every single file is written atomically (temporary file in the same folder,
  then ``os.replace``) with the permissions ``0o666 & ~umask`` like any other
  tool (:func:`atomic_write_bytes`).
* Every run writes its numbers (CSV/JSON) next to its figures, together with a
  ``settings.json`` holding the settings, the seed, the command line, the
  package and library versions and the runtime (:func:`write_settings`).
"""
from __future__ import annotations

import contextlib
import contextvars
import csv
import errno
import io
import json
import math
import os
import platform
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Iterator, Mapping, Sequence

__all__ = ["ExperimentError", "prepare_out", "output_run", "OutputRun", "RunMarker", "read_marker",
           "display_path", "atomic_write_bytes", "atomic_write_text", "write_json", "write_csv", "read_csv",
           "save_figure", "write_settings", "MARKER", "MARKER_FORMAT", "jsonable"]

#: the file every run writes into its folder: which command wrote it (JSON, see :class:`RunMarker`)
MARKER = ".fishersym-run"
#: version of the marker's JSON layout; format 1 is the plain-text marker of fishersym before issue 13
MARKER_FORMAT = 2

#: the ``what`` of the format-1 marker text ("written by fishersym <what>") → the command
_LEGACY_WHAT = {"mlp experiment": "experiment mlp", "toy-ngd experiment": "experiment toy-ngd",
                "table experiment": "experiment table", "report": "report"}


class ExperimentError(RuntimeError):
    """A user-facing error of an experiment (bad input, refused overwrite); the CLI prints it and exits 2."""


# ---------------------------------------------------------------------- permissions
def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)      # pragma: no cover - non-Linux; not thread-safe, as everywhere
    os.umask(old)
    return old


def _file_mode() -> int:
    return 0o666 & ~_umask()


def _dir_mode() -> int:
    return 0o777 & ~_umask()


# ---------------------------------------------------------------------- the marker
@dataclass(frozen=True)
class RunMarker:
    """What the ``.fishersym-run`` file of a folder says.

    ``command``: the CLI command that wrote the folder (``"experiment mlp"``, ``"demo"``, …;
    ``None`` when a format-1 marker names no known command); ``format``: 1 (legacy text) or
    :data:`MARKER_FORMAT`; ``files``: the files the run wrote (relative paths), ``None`` when
    unknown (format 1, or a folder written in place by :func:`prepare_out`); ``complete``: the
    run finished (always true for folders swapped in by :func:`output_run`).
    """

    command: str | None
    format: int
    files: tuple[str, ...] | None = None
    complete: bool = False


def read_marker(folder: str | os.PathLike) -> RunMarker | None:
    """The marker of ``folder``, or ``None`` if it has none (or an unreadable one)."""
    path = Path(folder) / MARKER
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if text.startswith("written by fishersym "):
        what = text[len("written by fishersym "):].strip()
        return RunMarker(_LEGACY_WHAT.get(what), 1)
    try:
        rec = json.loads(text)
        fmt = int(rec["format"])
        files = rec.get("files")
        return RunMarker(str(rec["command"]), fmt, tuple(files) if isinstance(files, list) else None,
                         bool(rec.get("complete", False)))
    except (ValueError, KeyError, TypeError):
        return None


def _marker_text(command: str, files: Sequence[str] | None, complete: bool) -> str:
    rec = {"format": MARKER_FORMAT, "command": command, "complete": complete,
           "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid(),
           "files": sorted(files) if files is not None else None}
    return json.dumps(rec, indent=1) + "\n"


def _listing(folder: Path) -> list[str]:
    """Every file below ``folder`` (relative, '/'-separated), folders that hold nothing included."""
    out = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        for f in files:
            out.append((rel / f).as_posix())
        if not dirs and not files and root != str(folder):
            out.append(rel.as_posix() + "/")
    return sorted(out)


def _cmd(command: str | None) -> str:
    return f"`fishersym {command}`" if command else "an unknown fishersym command"


def _check_existing(out: Path, command: str, force: bool, replace_own: bool, replaces_all: bool) -> str:
    """Decide what may happen to ``out``: 'absent', 'empty' or 'replace' (else ExperimentError).

    ``replaces_all``: the whole folder will be replaced (staged runs), so files that the
    recorded run did not write are a reason to refuse even with ``force``.
    """
    if out.is_symlink() and not out.exists():
        raise ExperimentError(f"--out {out}: is a dangling symbolic link; remove it or choose another --out")
    if not out.exists():
        return "absent"
    if not out.is_dir():
        raise ExperimentError(f"--out {out}: exists and is not a directory; choose another --out")
    try:
        entries = sorted(p.name for p in out.iterdir())
    except OSError as exc:
        raise ExperimentError(f"--out {out}: cannot list the folder ({exc.strerror or exc})") from None
    marker = read_marker(out)
    if not entries or (replaces_all and entries == [MARKER] and marker is not None):
        return "empty"     # a marker alone: an interrupted in-place run that wrote nothing else
    if marker is None:
        raise ExperimentError(
            f"--out {out}: the folder is not empty ({len(entries)} entries, e.g. {entries[0]!r}) and was not "
            f"written by fishersym (no {MARKER} marker); such a folder is never replaced, not even with --force. "
            "Choose another --out (or empty it yourself).")
    if replaces_all and marker.files is not None:
        extra = sorted(set(_listing(out)) - set(marker.files) - {MARKER})
        if extra:
            shown = ", ".join(extra[:5]) + (", …" if len(extra) > 5 else "")
            raise ExperimentError(
                f"--out {out}: the folder holds {len(extra)} file(s) that the {_cmd(marker.command)} run did not "
                f"write ({shown}); replacing the folder would delete them, so it is refused even with --force. "
                "Move them away or choose another --out.")
    own = marker.command == command
    if force or (replace_own and own):
        return "replace"
    if own:
        raise ExperimentError(f"--out {out}: the folder holds a previous {_cmd(command)} run; pass --force to "
                              "replace it, or choose another --out.")
    raise ExperimentError(f"--out {out}: the folder holds the output of {_cmd(marker.command)}, not of "
                          f"{_cmd(command)}; pass --force to replace it, or choose another --out.")


# ---------------------------------------------------------------------- in-place (legacy API)
_ACTIVE: contextvars.ContextVar[tuple] = contextvars.ContextVar("fishersym_active_runs", default=())


def _abs(p: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.fspath(p)))


def prepare_out(out: str | os.PathLike, force: bool = False, what: str = "experiment",
                command: str | None = None) -> Path:
    """Create the output folder of an in-place run; refuse an existing non-empty one unless ``force``.

    Inside :func:`output_run` for the same folder (``out`` is its staging folder) this
    returns the staging folder unchanged: the run is then written in one piece and swapped
    in at the end.  Otherwise (the Python API called directly) the folder is written in
    place: with ``force`` files of the same name are overwritten one by one and other files
    are left alone (:func:`output_run` is the safe way).
    """
    p = _abs(out)
    for run in _ACTIVE.get():
        if p == run.stage:
            return run.stage
        if p == run.final:
            raise ExperimentError(f"--out {out}: this process is already writing this folder (staged in "
                                  f"{run.stage}); pass the staging folder, or choose another --out")
    command = command or _LEGACY_WHAT.get(what, what)
    _check_existing(p, command, force, False, replaces_all=False)
    try:
        p.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p / MARKER, _marker_text(command, None, False))   # the latest writer
    except OSError as exc:
        raise ExperimentError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
    return Path(out)


# ---------------------------------------------------------------------- staged runs
@dataclass
class OutputRun:
    """A run in progress: write into ``stage``; ``final`` is ``--out``; ``replacing`` says whose
    previous output will be replaced (the command, or ``None`` when ``--out`` was absent or empty)."""

    final: Path
    stage: Path
    command: str
    replacing: str | None
    state: str


def display_path(p: str | os.PathLike) -> Path:
    """Where a path inside a running :func:`output_run` will be once the run is swapped in."""
    q0 = q = _abs(p)
    for run in reversed(_ACTIVE.get()):  # innermost run first, then map outward (nested runs)
        if q == run.stage or run.stage in q.parents:
            q = run.final / q.relative_to(run.stage)
    return q if q != q0 else Path(p)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leftovers(final: Path) -> list[tuple[str, int, Path]]:
    """Staging (``tmp``) and swapped-out (``old``) folders of ``final`` left by earlier runs: (kind, pid, path)."""
    out: list[tuple[str, int, Path]] = []
    prefix = f".{final.name}."
    try:
        names = os.listdir(final.parent)
    except OSError:
        return out
    for n in names:
        if not n.startswith(prefix):
            continue
        kind, _, rest = n[len(prefix):].partition("-")
        pid, _, _ = rest.partition("-")
        if kind in ("tmp", "old") and pid.isdigit():
            out.append((kind, int(pid), final.parent / n))
    return out


def _recover(final: Path) -> None:
    """Remove what dead runs on ``final`` left behind; finish a swap that died half-way.

    Called with the lock held.  Folders of live processes are left alone.  If ``final`` is
    missing and a dead run left both an ``old`` folder and a complete staging folder (it
    died between the two renames of the non-Linux swap), the staging folder is its finished
    run and is put in place; with only an ``old`` folder, that one is put back.
    """
    dead = [(k, pid, p) for k, pid, p in _leftovers(final) if not _pid_alive(pid)]
    if not final.exists():
        for k, pid, p in dead:
            if k == "old":
                done = [q for k2, pid2, q in dead if k2 == "tmp" and pid2 == pid
                        and (read_marker(q) or RunMarker(None, 0)).complete]
                os.rename(done[0] if done else p, final)
                break
    for _, _, p in dead:
        if p.exists():
            shutil.rmtree(p, ignore_errors=True)


class _Lock:
    """``flock`` on ``.<name>.lock`` beside the folder; the file names the holder."""

    def __init__(self, final: Path, command: str):
        self.path = final.parent / f".{final.name}.lock"
        self.final, self.command = final, command
        self.fd: int | None = None

    def __enter__(self) -> _Lock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            fcntl = None  # type: ignore[assignment]
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | (0 if fcntl else os.O_EXCL), 0o666)
            except FileExistsError:  # pragma: no cover - Windows
                raise ExperimentError(self._busy()) from None
            except OSError as exc:
                raise ExperimentError(f"--out {self.final}: cannot create the lock file {self.path} "
                                      f"({exc.strerror or exc}); is the parent folder writable?") from None
            if fcntl is None:  # pragma: no cover
                self.fd = fd
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise ExperimentError(self._busy()) from None
                raise
            try:        # the file we locked must still be the one at the path (a releaser unlinks it)
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                break
            os.close(fd)
        else:  # pragma: no cover
            raise ExperimentError(f"--out {self.final}: could not take the lock {self.path}")
        assert self.fd is not None                  # set by the break above
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"pid {os.getpid()}: fishersym {self.command}, started "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        return self

    def _busy(self) -> str:
        try:
            holder = self.path.read_text(encoding="utf-8").strip() or "unknown process"
        except OSError:
            holder = "unknown process"
        return (f"--out {self.final}: another fishersym run is writing this folder ({holder}; lock file "
                f"{self.path}). Wait for it to finish, or choose another --out.")

    def __exit__(self, *exc) -> None:
        try:
            os.unlink(self.path)      # while still holding the lock: see the samestat check above
        except OSError:
            pass
        assert self.fd is not None                  # set by __enter__
        os.close(self.fd)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back (delivered afterwards) so that the swap is not cut in two."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    if hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread():
        old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    else:  # pragma: no cover
        yield


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux ``renameat2(RENAME_EXCHANGE)``; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False      # the file system cannot exchange: fall back to two renames
    raise OSError(err, os.strerror(err), str(b))


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _swap_in(stage: Path, final: Path) -> None:
    """Put ``stage`` in place of ``final`` (see the module docstring for the exact window)."""
    with _signals_held():
        if final.exists():
            if _exchange(stage, final):
                old = stage
            else:
                old = final.parent / f".{final.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
                os.rename(final, old)
                os.rename(stage, final)       # window: between these two renames `final` is absent
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(stage, final)
        _fsync_dir(final.parent)


@contextlib.contextmanager
def output_run(out: str | os.PathLike, command: str, *, force: bool = False,
               replace_own: bool = False) -> Iterator[OutputRun]:
    """Write a run into a staging folder and swap it in place of ``out`` on success.

    ::

        with output_run("out/mlp", "experiment mlp", force=args.force) as run:
            write_csv(run.stage / "mlp.csv", rows)      # … every file of the run

    On entry: takes the lock of ``out`` (:class:`ExperimentError` naming the holder if another
    run has it), cleans up what dead runs left (:func:`_recover`), refuses an existing
    non-empty ``out`` unless ``force`` (or ``replace_own`` and the folder was written by the same
    ``command``), and creates the staging folder.  On a normal exit: writes the marker (command,
    format, file list) and swaps the staging folder in (module docstring).  On any exception
    (``KeyboardInterrupt`` included) the staging folder is deleted and ``out`` is untouched.
    Parent folders that this call created are removed again if the run fails.
    """
    for active in _ACTIVE.get():           # re-entrant: ``out`` is the staging folder of an enclosing run
        if _abs(out) == active.stage:
            yield active
            return
    final = _abs(out)
    if final.exists() or final.is_symlink():
        final = Path(os.path.realpath(final))      # a link to a folder: the folder is what gets replaced
    cwd = Path(os.path.realpath(os.getcwd()))
    if final == final.parent or final == cwd or final in cwd.parents:
        raise ExperimentError(f"--out {out}: is the current folder or one above it; a run replaces its --out "
                              "folder as a whole, so choose a subfolder (e.g. --out results/run1)")
    created = []
    for p in reversed([final.parent, *final.parent.parents]):
        if not p.exists():
            created.append(p)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExperimentError(f"--out {out}: cannot create the folder {final.parent} "
                              f"({exc.strerror or exc})") from None
    ok = False
    try:
        with _Lock(final, command):
            with contextlib.suppress(OSError):
                _recover(final)
            state = _check_existing(final, command, force, replace_own, replaces_all=True)
            replacing = (read_marker(final) or RunMarker(None, 0)).command if state == "replace" else None
            try:
                stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
                os.chmod(stage, _dir_mode())
            except OSError as exc:
                raise ExperimentError(f"--out {out}: cannot write into {final.parent} "
                                      f"({exc.strerror or exc})") from None
            run = OutputRun(final, stage, command, replacing, state)
            token = _ACTIVE.set(_ACTIVE.get() + (run,))
            reset = False
            try:
                yield run
                _ACTIVE.reset(token)
                reset = True
                atomic_write_text(stage / MARKER, _marker_text(command, _listing(stage), True))
                _fsync_dir(stage)
                _check_existing(final, command, force, replace_own, replaces_all=True)   # changed meanwhile?
                _swap_in(stage, final)
                ok = True
            finally:
                if not reset:
                    _ACTIVE.reset(token)
                if not ok:
                    shutil.rmtree(stage, ignore_errors=True)
    finally:
        if not ok:
            for p in reversed(created):
                with contextlib.suppress(OSError):
                    p.rmdir()


# ---------------------------------------------------------------------- files
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then ``os.replace``).

    The file gets the mode ``0o666 & ~umask``, as files written by ``open`` do.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _file_mode()) if hasattr(os, "fchmod") else os.chmod(tmp, _file_mode())
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
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write_bytes`)."""
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
    """Write ``obj`` as indented JSON (:func:`jsonable` values) to ``path`` atomically."""
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
            row: dict[str, Any] = {}
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
        except Exception:  # noqa: BLE001 - a broken optional package leaves its version out  # pragma: no cover
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
