"""LaTeX output, the ``fishersym derive`` CLI and the committed catalogue (derivations/).

The catalogue must equal fresh output byte for byte and every document must
compile with pdflatex (skipped, with the reason, when pdflatex is absent).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fishersym import families, symbolic
from fishersym.cli import main
from fishersym.symbolic.catalogue import CASES, render_case

ROOT = Path(__file__).resolve().parents[1]
CAT = ROOT / "derivations"
PDFLATEX = shutil.which("pdflatex")
needs_pdflatex = pytest.mark.skipif(PDFLATEX is None, reason="pdflatex is not installed; cannot compile LaTeX")


def _compile(tex: Path, tmp: Path) -> None:
    r = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "-output-directory", str(tmp),
                        str(tex)], capture_output=True, text=True, timeout=120)
    log = (tmp / (tex.stem + ".log")).read_text(errors="replace") if (tmp / (tex.stem + ".log")).exists() else ""
    errors = [l for l in log.splitlines() if l.startswith("!")]
    assert r.returncode == 0 and not errors, f"{tex.name}: {errors or r.stdout[-2000:]}"
    assert (tmp / (tex.stem + ".pdf")).exists()


def test_catalogue_index_lists_every_case():
    readme = (CAT / "README.md").read_text(encoding="utf-8")
    for case in CASES:
        assert f"]({case.name}.tex)" in readme, case.name
        assert (CAT / f"{case.name}.tex").exists(), case.name
    assert "V₂ ≡ 0 for all" in readme
    relu = next(l for l in readme.splitlines() if "relu_bernoulli.tex" in l)
    assert "V₂ ≡ 0 for all" in relu


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_catalogue_reproducible(case):
    """Committed file == fresh output (deterministic)."""
    text, _ = render_case(case)
    assert (CAT / f"{case.name}.tex").read_text(encoding="utf-8") == text


def test_catalogue_readme_reproducible(tmp_path):
    from fishersym.symbolic.catalogue import write_catalogue
    write_catalogue(tmp_path, cases=CASES[:2], verbose=False)
    fresh = (tmp_path / "README.md").read_text(encoding="utf-8").splitlines()
    committed = (CAT / "README.md").read_text(encoding="utf-8").splitlines()
    for line in fresh:
        if line.startswith("- ["):
            assert line in committed


@needs_pdflatex
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_catalogue_compiles(case, tmp_path):
    _compile(CAT / f"{case.name}.tex", tmp_path)


@needs_pdflatex
def test_cli_acceptance(tmp_path, capsys):
    out = tmp_path / "x.tex"
    assert main(["derive", "--widths", "2", "2", "1", "--activation", "tanh", "--family", "bernoulli",
                 "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert r"\begin{document}" in text and r"W^{(1)}_{1,1}" in text and "0.weight[0, 0]" in text
    _compile(out, tmp_path)


def test_cli_categorical_and_errors(tmp_path, capsys):
    out = tmp_path / "c.tex"
    assert main(["derive", "--widths", "2", "3", "--activation", "identity", "--family", "categorical",
                 "--classes", "3", "--samples", "4", "--out", str(out)]) == 0
    assert r"\tilde\lambda_{\max}(M)" in out.read_text(encoding="utf-8")
    assert main(["derive", "--widths", "2", "2", "--family", "categorical", "--classes", "3"]) == 2
    assert "does not match" in capsys.readouterr().err
    assert main(["derive", "--widths", "2", "1", "--activation", "bogus", "--family", "bernoulli"]) == 2
    assert "known:" in capsys.readouterr().err
    assert main(["derive", "--widths", "2", "1", "--family", "bogus"]) == 2
    assert "available:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["derive", "--widths", "2", "0", "--family", "bernoulli"])
    assert main(["derive", "--widths", "8", "8", "8", "8", "4", "--family", "categorical"]) == 2
    assert "--force" in capsys.readouterr().err


def test_latex_sections_and_content():
    D = symbolic.derive(symbolic.mlp([2, 2, 1], "sigmoid"), families.get("bernoulli"), n_samples=3)
    t = D.to_latex()
    for part in ("Model", "cumulants of $F$", "First and second derivatives",
                 "Per-parameter Fisher information", "Trade-off", "which estimator wins where",
                 r"\kappa_4", "M_4", r"\xi_{1}"):
        assert part in t, part
    assert t.count(r"\subsection{") == len(D)
    assert D.to_latex() == t  # deterministic within a process too
