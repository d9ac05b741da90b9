"""LaTeX that fits the page (issue 11 item 3): every committed catalogue document (derivations/*.tex)
and the constants table compile with pdflatex and TeX reports no line wider than the text
(``Overfull \\hbox`` more than 1 pt too wide).  Also checks the line breaker of
:mod:`fishersym.symbolic.latex` on synthetic formulas, and that the overfull check itself fails on an
overwide document.  Skipped, with the reason, when pdflatex is absent.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import sympy as sp

from fishersym.experiments.table import TableSettings, latex_table, numeric_rows, standalone
from fishersym.symbolic.latex import LINE_WIDTH_PT, _display, _parse, _tokens, _width, document_head

ROOT = Path(__file__).resolve().parents[1]
CAT = ROOT / "derivations"
PDFLATEX = shutil.which("pdflatex")
pytestmark = pytest.mark.skipif(PDFLATEX is None, reason="pdflatex is not installed; cannot compile LaTeX")

#: tolerance of the check: TeX's own \hfuzz is 0.1 pt; a line more than 1 pt too wide fails
TOLERANCE_PT = 1.0
_OVERFULL = re.compile(r"Overfull \\hbox \((\d+(?:\.\d+)?)pt too wide\)[^\n]*")


def _start(tex: Path, workdir: Path) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "-output-directory",
                             str(workdir), str(tex)], cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(tex: Path, workdir: Path, proc: subprocess.Popen) -> list[tuple[float, str]]:
    """Wait for pdflatex; assert it succeeded; return the overfull boxes (width in pt, log line)."""
    out, _ = proc.communicate(timeout=300)
    log_path = workdir / (tex.stem + ".log")
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    errors = [ln for ln in log.splitlines() if ln.startswith("!")]
    assert proc.returncode == 0 and not errors and (workdir / (tex.stem + ".pdf")).exists(), \
        f"{tex.name} does not compile: {errors or out[-2000:]}"
    return [(float(m.group(1)), m.group(0)) for m in _OVERFULL.finditer(log)]


def compile_all(texs: list[Path], tmp: Path, jobs: int = 2) -> dict[str, list[tuple[float, str]]]:
    """Compile ``texs`` with up to ``jobs`` pdflatex processes at a time; overfull boxes per file name."""
    result: dict[str, list[tuple[float, str]]] = {}
    running: list[tuple[Path, Path, subprocess.Popen]] = []
    for i, tex in enumerate(texs):
        if len(running) >= jobs:
            t, d, p = running.pop(0)
            result[t.name] = _finish(t, d, p)
        d = tmp / f"{i}_{tex.stem}"
        running.append((tex, d, _start(tex, d)))
    for t, d, p in running:
        result[t.name] = _finish(t, d, p)
    return result


def too_wide(boxes: dict[str, list[tuple[float, str]]]) -> dict[str, list[str]]:
    return {name: [line for w, line in found if w > TOLERANCE_PT] for name, found in boxes.items()
            if any(w > TOLERANCE_PT for w, _ in found)}


def test_every_catalogue_document_fits(tmp_path):
    texs = sorted(CAT.glob("*.tex"))
    assert len(texs) >= 12, "the catalogue lost documents"
    bad = too_wide(compile_all(texs, tmp_path))
    assert not bad, f"lines run into the margin (regenerate with `fishersym derive --catalogue derivations`): {bad}"


def test_constants_table_fits(tmp_path):
    rows = numeric_rows(TableSettings(n_points=2, classes=(3,), n_starts=2))
    tex = tmp_path / "table_standalone.tex"
    tex.write_text(standalone(latex_table(rows)), encoding="utf-8")
    bad = too_wide(compile_all([tex], tmp_path))
    assert not bad, bad


def test_check_detects_an_overwide_line(tmp_path):
    """The check can fail: an unbreakable formula wider than the page is reported."""
    wide = " + ".join(f"x_{{{i}}} y_{{{i}}}" for i in range(60))
    tex = tmp_path / "wide.tex"
    tex.write_text(document_head("wide") + f"\\[ {wide} \\]\n\\end{{document}}\n", encoding="utf-8")
    bad = too_wide(compile_all([tex], tmp_path))
    assert "wide.tex" in bad and float(_OVERFULL.search(bad["wide.tex"][0]).group(1)) > 100


def _layout_free(s: str) -> str:
    """The formula without the breaker's layout: line breaks, alignment, indentation, sized delimiters."""
    s = re.sub(r"\\\\|&|\\quad|\{\}", " ", s)
    s = re.sub(r"\\(?:big|Big|bigg|Bigg)[lr]|\\left|\\right", "", s)
    return re.sub(r"\s+", "", s)


def test_breaker_on_synthetic_formulas(tmp_path):
    x = sp.symbols("x_1:9")
    y = sp.Symbol("y")
    N = sp.Symbol("N")
    long_sum = sp.expand((sum(x) + y) ** 3)                      # 165 terms, a sum at the top level
    nested = 2 * y ** 4 * sp.expand((sum(x[:5]) + y) ** 3) / N     # a fraction with a product numerator
    short = x[0] + x[1]
    docs = []
    for expr in (long_sum, nested, short):
        body = f"V = {sp.latex(expr)}"
        assert _width(_parse(_tokens(body))[0]) > LINE_WIDTH_PT or expr is short
        docs.append(_display(body))
    assert docs[2].startswith("\\begin{equation*}")               # fits: one line
    for d in docs[:2]:
        assert d.startswith("\\begin{align*}") and d.count("\\\\") >= 3
    # the broken sum is the same formula
    assert _layout_free(docs[0]) == _layout_free(f"\\begin{{align*}}V = {sp.latex(long_sum)}\\end{{align*}}")
    # the fraction's numerator factors stay over N, the sum is opened in sized parentheses
    assert "\\frac{2 y^{4}}{N}" in docs[1] and "\\bigl(" in docs[1]
    # a column vector with a component wider than the page: one broken equation per component
    comp = sp.latex(sp.expand((sum(x[:4]) + y) ** 3))
    vec = _display(f"u = \\begin{{pmatrix}}{comp} \\\\ {sp.latex(short)}\\end{{pmatrix}}")
    assert "pmatrix" not in vec and "\\left[u\\right]_{1} &=" in vec and "\\left[u\\right]_{2} &=" in vec
    docs.append(vec)
    tex = tmp_path / "synthetic.tex"
    tex.write_text(document_head("synthetic") + "".join(docs) + "\\end{document}\n", encoding="utf-8")
    bad = too_wide(compile_all([tex], tmp_path))
    assert not bad, bad
