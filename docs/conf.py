"""Sphinx configuration of the fishersym documentation (``make docs``).

Mathematics is rendered offline, at build time, by ``sphinx.ext.imgmath``: every
``$…$`` / ``$$…$$`` becomes a PNG made by ``latex`` + ``dvipng`` (Debian packages
texlive-latex-base, texlive-latex-recommended, texlive-fonts-recommended and dvipng).
Nothing is fetched from a CDN when a page is read.  Build with warnings as errors::

    .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html
"""
from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))          # autodoc imports the checkout's fishersym
sys.path.insert(0, str(DOCS / "_ext"))        # mathbatch, theorylinks (below)

project = "fishersym"
author = "fishersym developers"
copyright = "fishersym developers (MIT licence)"
try:
    release = metadata.version("fishersym")
except metadata.PackageNotFoundError:         # a checkout that was never pip-installed
    release = "unknown"
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.imgmath",
    "mathbatch",          # docs/_ext/mathbatch.py: one latex run for all formulas
    "theorylinks",        # docs/_ext/theorylinks.py: "THEORY §n" in docstrings -> links
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: $…$ inline and $$…$$ display mathematics, bare \begin{align}…\end{align}.
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_dmath_double_inline = True

# imgmath: PNG through dvipng.  Sphinx's LaTeX template loads anyfontsize.sty, which is
# only in texlive-latex-extra, not in the packages CI installs; docs/_latex/ holds a
# stand-in (the formulas are set at 12pt, a design size, so it has nothing to do) and is
# put first on TEXINPUTS for the latex runs of this build.  (Overriding the template
# through templates_path instead hits a bug of Sphinx 9.0: NameError '_StrPath'.)
_texinputs = os.environ.get("TEXINPUTS", "")
if not _texinputs.startswith(str(DOCS / "_latex") + os.pathsep):
    os.environ["TEXINPUTS"] = str(DOCS / "_latex") + os.pathsep + _texinputs
imgmath_image_format = "png"
imgmath_latex = "latex"
imgmath_use_preview = False     # preview.sty (baseline alignment) is texlive-latex-extra too
imgmath_font_size = 12
imgmath_latex_preamble = r"""
\newcommand{\tr}{\operatorname{tr}}
\newcommand{\Var}{\operatorname{Var}}
\newcommand{\Cov}{\operatorname{Cov}}
\newcommand{\E}{\mathbb{E}}
\newcommand{\R}{\mathbb{R}}
\newcommand{\one}{\mathbf{1}}
\newcommand{\vecop}{\operatorname{vec}}
\newcommand{\matop}{\operatorname{mat}}
\newcommand{\diag}{\operatorname{diag}}
\newcommand{\Sym}{\operatorname{Sym}}
"""

# autodoc / napoleon: Google-style docstrings (Args / Returns).
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_static_path = ["_static"]
html_css_files = ["fishersym.css"]
html_title = f"fishersym {release}"
html_theme_options = {"description": "exact variances of diagonal Fisher estimators",
                      "fixed_sidebar": False}


# The proofs of §14 (docs/math/certificates.md) are written separately.  When the page is
# present it is listed in a toctree at the end of theory/14-certificates; when absent, no
# reference to it is made (a toctree entry for a missing page would be a warning).
CERTIFICATE_PROOFS = DOCS / "math" / "certificates.md"


def _certificate_proofs(app, docname, source):
    if docname == "theory/14-certificates" and CERTIFICATE_PROOFS.is_file():
        source[0] += ("\n\n```{toctree}\n:maxdepth: 1\n:caption: Proofs\n\n"
                      "../math/certificates\n```\n")


def setup(app):
    app.connect("source-read", _certificate_proofs)
