"""Render all formulas of a build in one ``latex`` run and one ``dvipng`` run.

``sphinx.ext.imgmath`` runs latex and dvipng once per formula, about 0.3-0.5 s each on a
small machine; the theory pages hold about 500 formulas, which made the build take
minutes.  Once every document is read, this extension collects the formulas of all
documents, typesets them as the pages of a single LaTeX document (imgmath's own preamble
and per-formula body, one formula per page) and converts every page with one dvipng call.
Page k is saved under the content-addressed name imgmath gives formula k, the SHA-1 of the
LaTeX source it generates (``sphinx.ext.imgmath.generate_latex_macro``), so imgmath finds
each image already present and reuses it instead of starting latex again.

Nothing is hidden by this step: whenever the batch cannot be made (no latex or dvipng, a
LaTeX error anywhere in it, a page count that does not match), it is abandoned as a whole
and imgmath renders formula by formula as usual, reporting the failing formula as a
warning (an error under ``sphinx-build -W``).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from hashlib import sha1
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.ext.imgmath import generate_latex_macro
from sphinx.util import logging
from sphinx.util.math import wrap_displaymath

logger = logging.getLogger(__name__)
_MARK = "FISHERSYMMATHBATCHMARK"


def _formulas(env: Any) -> list[str]:
    """The math strings imgmath will render, in the form it passes to ``render_math``."""
    seen: dict[str, None] = {}
    for docname in sorted(env.found_docs):
        tree = env.get_doctree(docname)
        for node in tree.findall(lambda n: isinstance(n, (nodes.math, nodes.math_block))):
            if isinstance(node, nodes.math):
                math = "$" + node.astext() + "$"
            elif node.get("no-wrap", node.get("nowrap", False)):
                math = node.astext()
            else:
                math = wrap_displaymath(node.astext(), None, False)
            if math.strip("$ \n"):
                seen.setdefault(math, None)
    return list(seen)


def _render_batch(app: Any, env: Any) -> None:
    builder = app.builder
    config = app.config
    if builder.format != "html" or config.html_math_renderer not in (None, "imgmath") \
            or config.imgmath_image_format.lower() != "png" or config.imgmath_use_preview \
            or config.imgmath_embed:
        return
    fmt = "png"
    outdir = Path(builder.outdir) / builder.imagedir / "math"
    todo = []
    for math in _formulas(env):
        latex = generate_latex_macro(fmt, math, config, builder.confdir)
        name = sha1(latex.encode(), usedforsecurity=False).hexdigest() + "." + fmt
        if not (outdir / name).is_file():
            todo.append((math, name))
    if len(todo) < 2:
        return
    template = generate_latex_macro(fmt, _MARK, config, builder.confdir)
    head, sep, rest = template.partition("\\begin{document}")
    body, sep2, _ = rest.partition("\\end{document}")
    if not sep or not sep2 or body.count(_MARK) != 1:
        logger.info("mathbatch: unexpected imgmath template, rendering formula by formula")
        return
    doc = head + "\\begin{document}\n" + "".join(
        body.replace(_MARK, math) + "\n\\clearpage\n" for math, _ in todo) + "\\end{document}\n"
    tmp = Path(tempfile.mkdtemp(suffix="-fishersym-mathbatch"))
    try:
        (tmp / "math.tex").write_text(doc, encoding="utf-8")
        cmd = [config.imgmath_latex, "--interaction=nonstopmode", *config.imgmath_latex_args, "math.tex"]
        try:
            ret = subprocess.run(cmd, capture_output=True, cwd=tmp, check=False)
        except OSError:
            return                                  # imgmath warns that latex cannot be run
        log = (tmp / "math.log").read_text(encoding="latin-1") if (tmp / "math.log").exists() else ""
        if ret.returncode != 0 or f"Output written on math.dvi ({len(todo)} page" not in log:
            logger.info("mathbatch: the batch did not typeset cleanly, rendering formula by formula")
            return
        cmd = [config.imgmath_dvipng, "-o", str(tmp / "p%d.png"), "-T", "tight", "-z9",
               *config.imgmath_dvipng_args, str(tmp / "math.dvi")]
        try:
            ret = subprocess.run(cmd, capture_output=True, check=False)
        except OSError:
            return                                  # imgmath warns that dvipng cannot be run
        pages = [tmp / f"p{k + 1}.png" for k in range(len(todo))]
        if ret.returncode != 0 or not all(p.is_file() for p in pages) or (tmp / f"p{len(todo) + 1}.png").exists():
            logger.info("mathbatch: dvipng did not convert every page, rendering formula by formula")
            return
        outdir.mkdir(parents=True, exist_ok=True)
        for page, (_, name) in zip(pages, todo):
            shutil.move(str(page), str(outdir / name))
        logger.info("mathbatch: rendered %d formulas in one latex run", len(todo))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def setup(app: Any) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.imgmath")
    app.connect("env-updated", _render_batch)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
