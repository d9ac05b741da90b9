"""``fishersym derive``: symbolic derivation of I, V₁, V₂, bounds and trade-off as a LaTeX document.

    fishersym derive --widths 2 2 1 --activation tanh --family bernoulli --out x.tex
    fishersym derive --catalogue derivations

THEORY §1–§7; see :mod:`fishersym.symbolic`.
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
from pathlib import Path

from ..experiments.io import ExperimentError, atomic_write_text
from ._util import positive_float, positive_int, print_error


def _family(args, out_width: int):
    """The family of ``--family`` with the options that name its constructor's parameters (``--classes``
    → C, ``--sigma2`` → sigma2, ``--link`` → link), its size C taken from the output width where it is
    a free parameter (:func:`fishersym.families.resolve`).  An option the family's constructor does
    not take is refused, naming the families that take it."""
    from ..families import REGISTRY, available, resolve
    if args.family not in available():
        raise ValueError(f"unknown family {args.family!r}; available: {', '.join(available())}")
    params: dict = {}
    for option, key, value in (("--classes", "C", args.classes), ("--sigma2", "sigma2", args.sigma2),
                               ("--link", "link", args.link)):
        if value is None:
            continue
        takers = [n for n in available() if key in inspect.signature(REGISTRY[n]).parameters]
        if args.family not in takers:
            raise ValueError(f"{option} does not apply to the {args.family} family (its constructor has no "
                             f"{key!r} parameter); families that take it: {', '.join(takers) or 'none'}")
        params[key] = value
    if params.get("C", out_width) != out_width:
        raise ValueError(f"--classes {params['C']} does not match the output width {out_width} (the last of "
                         "--widths); drop --classes to take C from the widths")
    return resolve(args.family, params, out_dim=out_width)


def check_out_file(out: str) -> Path:
    """Refuse an ``--out`` that cannot be written, before any (possibly long) derivation."""
    path = Path(out)
    if path.is_dir():
        raise ExperimentError(f"--out {out}: is a directory; give the name of the .tex file to write, "
                              f"e.g. --out {path / 'derivation.tex'}")
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise ExperimentError(f"--out {out}: {parent} is a file, not a folder; choose another --out")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ExperimentError(f"--out {out}: the folder {parent} is not writable; choose another --out")
            break
    return path


def write_out_file(path: Path, text: str) -> None:
    """Write the document atomically (umask permissions); OSError → ExperimentError naming ``--out``."""
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise ExperimentError(f"--out {path}: cannot write the file ({exc.strerror or exc})") from None


def run(args: argparse.Namespace) -> int:
    """Run ``fishersym derive``: one derivation (``--widths``, ``--family``) or the catalogue; 0 or 2."""
    from ..symbolic import derive, mlp
    from ..symbolic.catalogue import write_catalogue
    from ..symbolic.derive import SizeError
    try:
        if args.catalogue:
            cat = Path(args.catalogue)
            if cat.exists() and not cat.is_dir():
                raise ExperimentError(f"--catalogue {cat}: exists and is not a directory")
            t0 = time.perf_counter()
            try:
                timings = write_catalogue(args.catalogue)
            except OSError as exc:
                raise ExperimentError(f"--catalogue {cat}: cannot write ({exc.strerror or exc}"
                                      f"{': ' + str(exc.filename) if exc.filename else ''})") from None
            print(f"catalogue: {len(timings)} derivations in {time.perf_counter() - t0:.1f} s -> {args.catalogue}")
            return 0
        if not args.widths or not args.family:
            print("fishersym derive: error: give --widths and --family (or --catalogue DIR)", file=sys.stderr)
            return 2
        out = check_out_file(args.out) if args.out else None
        acts = args.activation
        net = mlp(args.widths, acts if len(acts) > 1 else acts[0], bias=not args.no_bias)
        fam = _family(args, net.widths[-1])
        t0 = time.perf_counter()
        D = derive(net, fam, n_samples=args.samples, force=args.force)
        text = D.to_latex()
        if out is not None:
            write_out_file(out, text)
            print(f"wrote {args.out} ({len(D)} parameters, {time.perf_counter() - t0:.1f} s)")
        else:
            sys.stdout.write(text)
        return 0
    except (ValueError, KeyError, SizeError, ExperimentError) as exc:
        print_error("fishersym derive", exc, getattr(args, "debug", False))
        return 2


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"widths must be positive integers, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive integers, got {s!r}")
    return v


def _family_names() -> list[str]:
    from ..families import available
    return available()


def _act_names() -> list[str]:
    from ..activations import names
    return names()


def register(sub) -> None:
    """Add the ``derive`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("derive", help="symbolic derivation of Fisher, V1, V2, bounds and trade-off (LaTeX)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=_positive_int, nargs="+", help="layer widths: input, hidden..., output")
    p.add_argument("--activation", nargs="+", default=["tanh"],
                   help="hidden activation, or one per hidden layer (" + ", ".join(_act_names())
                        + "; leaky_relu:0.2 sets the slope)")
    p.add_argument("--family", help="output family (" + ", ".join(_family_names()) + ")")
    p.add_argument("--classes", type=positive_int, default=None,
                   help="the family's size C (default: the output width; must equal it)")
    p.add_argument("--sigma2", type=positive_float, default=None,
                   help="variance of a family with a fixed variance, e.g. gaussian (> 0)")
    p.add_argument("--link", default=None,
                   help="link name passed to the family (the gaussian's default is 'mean': the network outputs μ; "
                        "'natural' makes it output h = μ/σ²)")
    p.add_argument("--samples", type=positive_int, default=None, help="number of label samples N (default: symbolic N)")
    p.add_argument("--no-bias", action="store_true", help="layers without biases")
    p.add_argument("--force", action="store_true", help="derive even networks whose expressions would blow up")
    p.add_argument("--out", help="output .tex file (default: stdout)")
    p.add_argument("--catalogue", metavar="DIR", help="regenerate the whole derivation catalogue into DIR")
    p.set_defaults(func=run)
