"""Regenerate the figures of the documentation's gallery (``docs/gallery.md``).

    .venv/bin/python tools/make_gallery.py            # every figure: about 10 minutes on 2 cores
    .venv/bin/python tools/make_gallery.py --only toy-ngd

Runs the paper's experiments with their default settings (``fishersym experiment toy-ngd | estimators``
and ``fishersym report``) into a scratch folder, copies the figures the gallery shows
into ``docs/_static/gallery/`` and writes ``docs/_static/gallery/manifest.json``: for every figure the
command that produced it, the package version, the git commit and the date.  The figures are
artefacts of those commands, committed so that the documentation builds offline without training
anything; ``tests/test_docs.py`` checks that the gallery page and the manifest name the same files
and that each was produced by the command the page states.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "docs" / "_static" / "gallery"

#: figure name in the gallery -> (experiment command after ``fishersym``, file inside its --out folder)
FIGURES: dict[str, tuple[list[str], str]] = {
    "toy_ngd.png": (["experiment", "toy-ngd"], "toy_ngd.png"),
    "toy_ngd_variance.png": (["experiment", "toy-ngd"], "toy_ngd_variance.png"),
    "mlp_training.png": (["report"], "mlp_training.png"),
    "mlp_figure2.png": (["report"], "mlp_figure2.png"),
    "plan.png": (["report"], "plan.png"),
    "estimators_cost.png": (["experiment", "estimators"], "estimators_cost.png"),
    "estimators_mc.png": (["experiment", "estimators"], "estimators_mc.png"),
}


def _git() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="experiment commands to run (e.g. toy-ngd mlp estimators report)")
    args = ap.parse_args(argv)
    import fishersym
    DEST.mkdir(parents=True, exist_ok=True)
    manifest_path = DEST / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    runs: dict[tuple[str, ...], Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (cmd, inner) in FIGURES.items():
            if args.only and cmd[-1] not in args.only:
                continue
            key = tuple(cmd)
            if key not in runs:
                out = Path(tmp) / "-".join(cmd)
                full = [sys.executable, "-m", "fishersym", *cmd, "--out", str(out)]
                full += ["--quiet"] if cmd[0] == "experiment" else []
                print("running", " ".join(full[2:]), flush=True)
                subprocess.run(full, cwd=ROOT, check=True)
                runs[key] = out
            found = sorted(runs[key].rglob(inner))
            if not found:
                raise FileNotFoundError(f"{' '.join(cmd)} wrote no {inner} (files: "
                                        f"{sorted(p.name for p in runs[key].rglob('*.png'))})")
            shutil.copyfile(found[0], DEST / name)
            manifest[name] = {"command": "fishersym " + " ".join(cmd), "file": str(found[0].relative_to(runs[key])),
                              "version": fishersym.__version__, "commit": _git(),
                              "date": datetime.date.today().isoformat()}
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(manifest)} figure(s) to {DEST}")


if __name__ == "__main__":
    main()
