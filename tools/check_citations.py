#!/usr/bin/env python3
"""Check that every "THEORY §n" citation in the package has a page in docs/theory/.

Docstrings, comments and generated texts of ``fishersym/`` cite the mathematics as
``THEORY §n`` or ``THEORY.md §n`` (also ``THEORY §6.3``, lists ``THEORY §8, §10``, ranges
``THEORY §2–§5`` / ``§6.2-6``, and the LaTeX spelling ``THEORY \\S5``).  Section n is
``docs/theory/`` page n, labelled ``(theory-n)=``; item k of a section is labelled
``(theory-n-k)=`` (docs/citations.md).  Bare ``§n`` references in the package mean the
same and are checked too, except where the text right before names another source
(``paper §5``, ``Cochran 1977 §2.15``, ``certificates.md §2``, ``App. C``).

Prints the number of citations per section and exits with status 1, listing file:line of
each, when a cited section or item has no page.

Usage: python tools/check_citations.py [--root REPO] [--quiet] [PATH ...]
(PATH: directories, scanned for *.py, or single files, relative to REPO; default fishersym)
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

SECTION = r"(?:§|\\{1,2}S)\s?(\d+)(?:\.(\d+))?"
# "THEORY", "THEORY.md", "\texttt{THEORY.md}", "`THEORY.md`", then an optional "references:"
THEORY = re.compile(r"THEORY(?:\.md)?[`}]*\s*(?:references:\s*)?")
REF = re.compile(SECTION)
RANGE_TAIL = re.compile(r"\s*[–-]\s*(?:§|\\{1,2}S)?\s?(\d+)(?:\.(\d+))?")
SEP = re.compile(r"\s*(?:,|/|;|and)\s*")
# text right before a bare § that names a source other than THEORY
OTHER_SOURCE = re.compile(r"(paper|Cochran|\.md\b(?<!THEORY\.md)|App\.?|Appendix|Section)[^§]{0,12}$",
                          re.IGNORECASE)
LABEL = re.compile(r"^\((theory-\d+(?:-\d+)?)\)=\s*$", re.MULTILINE)


def labels(root: Path) -> dict[str, Path]:
    """The anchors ``theory-n`` / ``theory-n-k`` defined in docs/theory/*.md, with their page."""
    found: dict[str, Path] = {}
    for page in sorted((root / "docs" / "theory").glob("*.md")):
        for label in LABEL.findall(page.read_text(encoding="utf-8")):
            found[label] = page
    return found


def _expand(a: tuple[str, str | None], b: tuple[str, str | None] | None) -> list[str]:
    """'6.2' - '6' (i.e. §6.2-6) -> 6.2..6.6; '2' - '5' -> 2..5; a single reference -> itself."""
    n, k = int(a[0]), (int(a[1]) if a[1] else None)
    if b is None:
        return [f"{n}" if k is None else f"{n}.{k}"]
    m, j = int(b[0]), (int(b[1]) if b[1] else None)
    if k is None and j is None:
        return [f"{i}" for i in range(n, m + 1)]
    if k is not None and j is None and m >= k:          # §6.2-6: items of one section
        return [f"{n}.{i}" for i in range(k, m + 1)]
    if k is not None and j is not None and m == n:      # §6.2–§6.5
        return [f"{n}.{i}" for i in range(k, j + 1)]
    return [f"{n}" if k is None else f"{n}.{k}", f"{m}" if j is None else f"{m}.{j}"]


def _refs_at(text: str, pos: int) -> tuple[list[str], int]:
    """Parse a list of references starting at ``pos``; return them and the end position."""
    out: list[str] = []
    while True:
        m = REF.match(text, pos)
        if not m:
            return out, pos
        end = m.end()
        tail = RANGE_TAIL.match(text, end)
        if tail:
            out += _expand((m.group(1), m.group(2)), (tail.group(1), tail.group(2)))
            end = tail.end()
        else:
            out += _expand((m.group(1), m.group(2)), None)
        sep = SEP.match(text, end)
        if sep and REF.match(text, sep.end()):
            pos = sep.end()
        else:
            return out, end


def citations(path: Path) -> list[tuple[int, str, bool]]:
    """(line, section, cited-with-THEORY) for every reference in one file."""
    text = path.read_text(encoding="utf-8")
    found: list[tuple[int, str, bool]] = []
    covered: set[int] = set()
    for m in THEORY.finditer(text):
        refs, end = _refs_at(text, m.end())
        line = text.count("\n", 0, m.start()) + 1
        found += [(line, r, True) for r in refs]
        covered.update(range(m.end(), end))
    for m in REF.finditer(text):
        if m.start() in covered:
            continue
        line_start = text.rfind("\n", 0, m.start()) + 1
        if OTHER_SOURCE.search(text[line_start:m.start()]):
            continue
        refs, end = _refs_at(text, m.start())
        covered.update(range(m.start(), end))
        found += [(text.count("\n", 0, m.start()) + 1, r, False) for r in refs]
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--quiet", action="store_true", help="print only problems")
    ap.add_argument("paths", nargs="*", default=["fishersym"],
                    help="directories (their *.py files) or files, relative to --root; default fishersym")
    args = ap.parse_args(argv)
    root = args.root
    anchors = labels(root)
    if not anchors:
        print(f"no theory pages with (theory-n)= labels under {root / 'docs' / 'theory'}", file=sys.stderr)
        return 1
    counts: Counter[str] = Counter()
    bare: Counter[str] = Counter()
    missing: list[str] = []
    files: list[Path] = []
    for name in args.paths:
        target = root / name
        if not target.exists():
            print(f"{target}: no such file or directory", file=sys.stderr)
            return 1
        files += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    for path in files:
        for line, ref, explicit in citations(path):
            (counts if explicit else bare)[ref] += 1
            if "theory-" + ref.replace(".", "-") not in anchors:
                kind = "THEORY" if explicit else "bare"
                missing.append(f"{path.relative_to(root)}:{line}: {kind} §{ref} has no page "
                               f"(no '(theory-{ref.replace('.', '-')})=' label in docs/theory/)")

    def key(r: str) -> tuple[int, ...]:
        return tuple(int(p) for p in r.split("."))

    if not args.quiet:
        print("citations of THEORY per section (explicit 'THEORY §n' + bare '§n'), page:")
        for ref in sorted(set(counts) | set(bare), key=key):
            page = anchors.get("theory-" + ref.replace(".", "-"))
            where = page.relative_to(root) if page else "MISSING"
            print(f"  §{ref:<5} {counts[ref]:4d} + {bare[ref]:3d}   {where}")
        print(f"total: {sum(counts.values())} explicit, {sum(bare.values())} bare")
    for m in missing:
        print(m, file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
