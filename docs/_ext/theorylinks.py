"""Turn the "THEORY §n" citations of docstrings into links to the theory pages.

Connected to ``autodoc-process-docstring``: in the reStructuredText of every documented
object, ``THEORY §n`` / ``THEORY.md §n`` / ``THEORY §n.k`` becomes
``:ref:`THEORY §n <theory-n>``` (item k of section n: ``theory-n-k``), so the API pages
link each citation to its page (docs/citations.md).  Inline literals (backquotes) and
literal or directive blocks (the indented lines after a line ending in ``::``) are left
as they are.  A citation of a section that has no page becomes an undefined reference,
which ``sphinx-build -W`` reports as an error, like ``tools/check_citations.py``.
"""
from __future__ import annotations

import re
from typing import Any

CITE = re.compile(r"THEORY(?:\.md)?\s?§\s?(\d+)(?:\.(\d+))?")
LITERAL = re.compile(r"(``.*?``|`[^`]*`)")


def _link(match: re.Match[str]) -> str:
    n, k = match.group(1), match.group(2)
    label = f"theory-{n}" if k is None else f"theory-{n}-{k}"
    shown = f"THEORY §{n}" if k is None else f"THEORY §{n}.{k}"
    return f":ref:`{shown} <{label}>`"


def link_citations(lines: list[str]) -> None:
    """Rewrite the citations of one docstring (a list of reST lines) in place."""
    block_indent: int | None = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if block_indent is not None:
            if not stripped or indent > block_indent:
                continue
            block_indent = None
        parts = LITERAL.split(line)
        parts[::2] = [CITE.sub(_link, p) for p in parts[::2]]
        lines[i] = "".join(parts)
        if stripped.endswith("::"):
            block_indent = indent


def _process(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    link_citations(lines)


def setup(app: Any) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.autodoc")
    app.connect("autodoc-process-docstring", _process)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
