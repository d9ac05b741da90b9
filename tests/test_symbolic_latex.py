"""LaTeX output, the ``fishersym derive`` CLI and the committed catalogue (derivations/).

The catalogue must equal fresh output byte for byte; a CLI document must
compile with pdflatex (skipped, with the reason, when pdflatex is absent).
Every catalogue document compiling without overfull lines is tests/test_latex_fit.py.
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


# Every catalogue document compiles with no error and no overfull line: tests/test_latex_fit.py.


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


def test_simplex_simplification_is_exact_and_shorter():
    """Σ_a p_a = 1 shortens the softmax's V₁ (moment and cumulant forms) and I, and the printed forms equal
    the derived ones at random points of the simplex (numeric check, independent of SymPy's proof)."""
    import random

    import sympy as sp

    from fishersym.symbolic.latex import simplex_coordinates, simplex_simplify

    D = symbolic.derive(symbolic.mlp([2, 3], "identity"), families.get("categorical", C=3), n_samples=1)
    ps = simplex_coordinates(D)
    assert [str(p) for p in ps] == ["p_1", "p_2", "p_3"]
    F = D.forms
    u = dict(zip(F.U, (sp.Symbol("x_1"), 0, 0)))
    rng = random.Random(0)
    for e in (F.var1_moment.xreplace(u), F.var1_cumulant.xreplace(u), F.fisher.xreplace(u)):
        s = simplex_simplify(e, ps)
        assert len(sp.latex(s)) < len(sp.latex(e))
        for _ in range(20):
            a, b = sorted((rng.random(), rng.random()))
            point = {ps[0]: a, ps[1]: b - a, ps[2]: 1 - b, sp.Symbol("x_1"): rng.uniform(-2, 2)}
            assert float(s.subs(point)) == pytest.approx(float(e.subs(point)), rel=1e-12, abs=1e-12)
    # families whose coordinates do not sum to one are left alone
    Db = symbolic.derive(symbolic.mlp([2, 1], "identity"), families.get("bernoulli"), n_samples=1)
    assert simplex_coordinates(Db) == []
