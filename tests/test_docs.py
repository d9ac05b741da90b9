"""The documentation builds with no warnings, its mathematics is rendered offline as images,
and every "THEORY §n" citation of the package has a page (docs/, tools/check_citations.py).

Needs sphinx and myst-parser (the ``docs`` extra) and, for the mathematics, ``latex`` and
``dvipng`` (Debian: texlive-latex-base, texlive-latex-recommended, texlive-fonts-recommended,
dvipng); the build tests are skipped with that reason where they are missing.  The citation
checker needs neither.
"""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CHECKER = ROOT / "tools" / "check_citations.py"
THEORY_PAGES = sorted((DOCS / "theory").glob("[0-9][0-9]-*.md"))

_missing = [m for m in ("sphinx", "myst_parser") if importlib.util.find_spec(m) is None]
_tools = [t for t in ("latex", "dvipng") if shutil.which(t) is None]
needs_build = pytest.mark.skipif(
    bool(_missing or _tools),
    reason=(f"python packages {_missing} missing: pip install -c constraints.txt sphinx myst-parser "
            "(the docs extra)" if _missing else
            f"{_tools} not on PATH: apt-get install texlive-latex-base texlive-latex-recommended "
            "texlive-fonts-recommended dvipng"))


def _sphinx(src: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", *extra,
                           str(src), str(out)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "html"
    ret = _sphinx(DOCS, out)
    assert ret.returncode == 0, f"sphinx-build -W failed:\n{ret.stderr[-4000:]}"
    return out


def _body(page: Path) -> str:
    text = page.read_text(encoding="utf-8")
    start = text.find('<div class="body"')
    assert start >= 0, f"{page}: no body"
    return text[start:text.find('<div class="sphinxsidebar"', start)]


def test_one_page_per_theory_section():
    numbers = [int(p.name[:2]) for p in THEORY_PAGES]
    assert numbers == list(range(1, 15)), numbers
    for page in THEORY_PAGES:
        n = int(page.name[:2])
        assert page.read_text(encoding="utf-8").startswith(f"(theory-{n})=\n# §{n} "), page


@needs_build
def test_theory_math_is_rendered_offline_as_images(html):
    for src in THEORY_PAGES:
        page = html / "theory" / (src.stem + ".html")
        body = _body(page)
        images = re.findall(r'<img (?:class="math" )?src="\.\./_images/math/([0-9a-f]{40}\.png)"', body)
        assert images, f"{page.name}: no rendered formula"
        for name in images:
            png = html / "_images" / "math" / name
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{page.name}: {name} is not a PNG"
        # imgmath's fallback when rendering fails is the raw TeX in <span class="math">
        assert '<span class="math">' not in body, f"{page.name}: a formula fell back to raw TeX"
        text = re.sub(r"<[^>]+>", "", body)
        assert "$" not in text, f"{page.name}: unrendered $…$ left in the HTML"
        assert f'id="theory-{int(src.name[:2])}"' in body, f"{page.name}: no theory-n anchor"
    bounds = _body(html / "theory" / "05-bounds.html")
    for anchor in ("theorem-4-1", "corollary-4-2", "proposition-4-3", "corollary-4-6", "lemma-4-8",
                   "proposition-5-1", "theorem-5-2", "corollary-r-1", "theorem-c-1", "theorem-d-1"):
        assert f'id="{anchor}"' in bounds, anchor
    structure = _body(html / "theory" / "06-structure.html")
    for k in range(1, 8):
        assert f'id="theory-6-{k}"' in structure, k


@needs_build
def test_no_resource_is_fetched_from_the_network(html):
    for page in html.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        remote = re.findall(r'<(?:script|link|img)[^>]*(?:src|href)="(?:https?:)?//[^"]*"', text)
        assert not remote, f"{page.relative_to(html)}: {remote}"
        assert not re.search(r"<script[^>]*mathjax", text, re.IGNORECASE), f"{page.relative_to(html)} loads MathJax"


@needs_build
def test_a_bad_formula_fails_the_build(tmp_path):
    """The batched rendering (docs/_ext/mathbatch.py) must not hide a LaTeX error: imgmath then
    renders formula by formula and its warning is an error under -W."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("conf.py", "_ext", "_latex", "_static"):
        (shutil.copytree if (DOCS / name).is_dir() else shutil.copy)(DOCS / name, src / name)
    (src / "index.md").write_text("# t\n\nGood $\\theta_i$, good $u_i^\\top\\Sigma u_i$, "
                                  "bad $\\notamacro{x}$.\n", encoding="utf-8")
    ret = _sphinx(src, tmp_path / "out")
    assert ret.returncode != 0
    assert "latex exited with error" in ret.stderr, ret.stderr[-2000:]
    (src / "index.md").write_text("# t\n\nGood $\\theta_i$ and $u_i^\\top\\Sigma u_i$.\n", encoding="utf-8")
    ret = _sphinx(src, tmp_path / "out2")
    assert ret.returncode == 0, ret.stderr[-2000:]
    assert len(list((tmp_path / "out2" / "_images" / "math").glob("*.png"))) == 2


def _checker():
    spec = importlib.util.spec_from_file_location("check_citations", CHECKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_theory_citation_of_the_package_has_a_page():
    ret = subprocess.run([sys.executable, str(CHECKER)], capture_output=True, text=True, timeout=60)
    assert ret.returncode == 0, ret.stderr
    counted = dict(re.findall(r"^\s+§(\d+(?:\.\d+)?)\s+(\d+) \+", ret.stdout, re.MULTILINE))
    assert int(counted["5"]) > 0 and int(counted["7"]) > 0, ret.stdout


def test_citation_checker_parses_lists_ranges_and_fails_on_a_missing_page(tmp_path):
    mod = _checker()
    pkg = tmp_path / "fishersym"
    pkg.mkdir()
    (pkg / "a.py").write_text(
        '"""THEORY §2–§4 and THEORY.md §6.2-4; THEORY §8, §10.\n'
        'In LaTeX: (THEORY \\\\S5), paper §15 is not ours, Cochran 1977 §2.15 neither."""\n',
        encoding="utf-8")
    refs = sorted((r, e) for _, r, e in mod.citations(pkg / "a.py"))
    assert refs == sorted([("2", True), ("3", True), ("4", True), ("6.2", True), ("6.3", True),
                           ("6.4", True), ("8", True), ("10", True), ("5", True)])
    shutil.copytree(DOCS / "theory", tmp_path / "docs" / "theory")
    assert mod.main(["--root", str(tmp_path), "--quiet"]) == 0
    (pkg / "b.py").write_text('"""See THEORY §15 and §6.9.\n\nAlso §6.8 here."""\n', encoding="utf-8")
    ret = subprocess.run([sys.executable, str(CHECKER), "--root", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert ret.returncode == 1
    assert "fishersym/b.py:1: THEORY §15 has no page" in ret.stderr
    assert "fishersym/b.py:1: THEORY §6.9 has no page" in ret.stderr
    assert "fishersym/b.py:3: bare §6.8 has no page" in ret.stderr


def test_docstring_citations_become_links_outside_literals():
    spec = importlib.util.spec_from_file_location("theorylinks", DOCS / "_ext" / "theorylinks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    lines = ["Bounds (THEORY §5) and THEORY.md §6.3, not ``THEORY §7`` nor `THEORY §8`::",
             "",
             "    THEORY §9 in a literal block",
             "",
             "After it THEORY §2–§3."]
    mod.link_citations(lines)
    assert lines == ["Bounds (:ref:`THEORY §5 <theory-5>`) and :ref:`THEORY §6.3 <theory-6-3>`, "
                     "not ``THEORY §7`` nor `THEORY §8`::",
                     "",
                     "    THEORY §9 in a literal block",
                     "",
                     "After it :ref:`THEORY §2 <theory-2>`–§3."]


def test_gallery_shows_every_example_and_the_figures_of_the_manifest():
    """docs/gallery.md includes every script of examples/, and shows exactly the figures that
    tools/make_gallery.py produced (manifest.json), each under the command that produced it."""
    import json
    page = (DOCS / "gallery.md").read_text()
    examples = sorted(p.name for p in (ROOT / "examples").glob("*.py"))
    included = sorted(re.findall(r"\{literalinclude\} \.\./examples/(\S+\.py)", page))
    assert included == examples
    manifest = json.loads((DOCS / "_static" / "gallery" / "manifest.json").read_text())
    shown = sorted(re.findall(r"\]\(_static/gallery/(\S+\.png)\)", page))
    assert shown == sorted(manifest)
    spec = importlib.util.spec_from_file_location("make_gallery", ROOT / "tools" / "make_gallery.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert sorted(mod.FIGURES) == sorted(manifest)
    for name, meta in manifest.items():
        png = DOCS / "_static" / "gallery" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert meta["command"] == "fishersym " + " ".join(mod.FIGURES[name][0])
        assert f"`{meta['command']}`" in page, (name, meta["command"])
