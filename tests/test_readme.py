"""README.md's Python examples run as written (issue 11: "the README snippets are executed by a test").

Every fenced ```` ```python ```` block of README.md is extracted and executed with ``exec`` in a
fresh namespace, in a temporary working directory (files a block writes, e.g. ``D.to_latex(...)``,
land there), with torch's own default dtype float32 restored first (a block that verifies in
float64 says so itself with ``torch.set_default_dtype(torch.float64)``, as a user's script would)
and ``torch.manual_seed(0)`` for reproducibility.  A block written as a test module a user copies
(it defines ``test_*`` functions) has those functions called too, so the check it shows really runs.

A block that cannot run as written must say so: the line before its fence is
``<!-- readme-test: skip (REASON) -->``, and REASON must name the test file under ``tests/`` that
covers it (checked to exist).  Such blocks are still compiled (syntax), and reported as skipped with
their line and reason (``pytest -rs``).  Unmarked blocks are never skipped.

Of the ```` ```bash ```` blocks, one line runs: ``fishersym check mypkg.models:make_net ...``, with
``mypkg/models.py`` in the temporary directory holding the README's own ``make_net`` block (the CLI
is called in-process through ``fishersym.cli.main``; about 12 s).  The others are not run: ``make``
targets (set-up, the whole suite), the 1 min 44 s architectures example, the pytest-plugin call (a
nested pytest session; the plugin is tested in tests/test_testing_check.py), and CLI calls on a data
file the reader brings (``inputs.npz``); the CLI itself is tested in tests/test_reliability_cli.py.
"""
from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
_FENCE = re.compile(r"^```(\S*)\s*$")
_MARK = re.compile(r"^<!--\s*readme-test:\s*(.*?)\s*-->\s*$")
_SKIP = re.compile(r"^skip\s*\((.+)\)$")


@dataclass(frozen=True)
class Block:
    lang: str
    line: int            # 1-based line of the opening fence
    source: str
    skip_reason: str | None


def extract_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text with their language, fence line and skip marker.

    A ``<!-- readme-test: ... -->`` comment on the line right before a fence applies to that block;
    anything but ``skip (REASON)`` there, or a marker not followed by a fence, raises ValueError.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: tuple[int, str] | None = None
    i = 0
    while i < len(lines):
        mark = _MARK.match(lines[i])
        if mark:
            skip = _SKIP.match(mark.group(1))
            if not skip or not skip.group(1).strip():
                raise ValueError(f"README.md:{i + 1}: a readme-test marker must read "
                                 f"'<!-- readme-test: skip (REASON) -->', got {lines[i]!r}")
            pending = (i + 1, skip.group(1).strip())
            i += 1
            continue
        fence = _FENCE.match(lines[i])
        if fence:
            if pending is not None and pending[0] != i:
                raise ValueError(f"README.md:{pending[0]}: a readme-test marker must be on the line "
                                 f"right before a fence")
            start = i
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if j == len(lines):
                raise ValueError(f"README.md:{start + 1}: code fence never closed")
            blocks.append(Block(fence.group(1), start + 1, "\n".join(lines[start + 1:j]),
                                pending[1] if pending else None))
            pending = None
            i = j + 1
            continue
        if pending is not None and lines[i].strip():
            raise ValueError(f"README.md:{pending[0]}: a readme-test marker must be on the line "
                             f"right before a fence")
        i += 1
    if pending is not None:
        raise ValueError(f"README.md:{pending[0]}: a readme-test marker with no code block after it")
    return blocks


def run_block(block: Block) -> dict:
    """Execute a Python block in a fresh namespace (torch's default dtype float32 on entry, restored
    after) and call the ``test_*`` functions it defines; exceptions propagate."""
    filename = f"README.md:{block.line}"
    code = compile(block.source, filename, "exec")
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    try:
        namespace: dict = {"__name__": "readme_block"}
        exec(code, namespace)
        for name, obj in list(namespace.items()):
            if (name.startswith("test_") and callable(obj)
                    and getattr(getattr(obj, "__code__", None), "co_filename", None) == filename):
                obj()
        return namespace
    finally:
        torch.set_default_dtype(saved)


PY_BLOCKS = [b for b in extract_blocks(README.read_text(encoding="utf-8")) if b.lang == "python"]


def test_readme_blocks_are_found_and_markers_are_explained():
    blocks = extract_blocks(README.read_text(encoding="utf-8"))
    assert len(PY_BLOCKS) >= 6, [b.line for b in PY_BLOCKS]
    for b in blocks:
        if b.skip_reason is not None:
            assert b.lang == "python", f"README.md:{b.line}: skip marker on a {b.lang!r} block"
            named = re.findall(r"tests/test_\w+\.py", b.skip_reason)
            assert named, f"README.md:{b.line}: the skip reason must name the covering test file"
            for path in named:
                assert (ROOT / path).is_file(), f"README.md:{b.line}: {path} does not exist"
    runnable = [b for b in PY_BLOCKS if b.skip_reason is None]
    assert len(runnable) >= len(PY_BLOCKS) - 1, "most README examples must run as written"


@pytest.mark.parametrize("block", PY_BLOCKS, ids=lambda b: f"line{b.line}")
def test_readme_python_block_runs(block, tmp_path, monkeypatch):
    if block.skip_reason is not None:
        compile(block.source, f"README.md:{block.line}", "exec")      # at least valid Python
        pytest.skip(f"README.md:{block.line}: {block.skip_reason}")
    monkeypatch.chdir(tmp_path)
    run_block(block)


def test_the_runner_fails_a_broken_block_and_calls_its_tests(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NameError, match="model"):
        run_block(Block("python", 1, "r = model(x)", None))
    with pytest.raises(AssertionError, match="called"):
        run_block(Block("python", 2, "def test_x():\n    assert False, 'called'\n", None))
    ns = run_block(Block("python", 3, "import torch\nt = torch.zeros(1)\n", None))
    assert ns["t"].dtype == torch.float32             # torch's own default, as in a user's script
    assert torch.get_default_dtype() == torch.float64  # the suite's default restored


@pytest.mark.parametrize("text, message", [
    ("<!-- readme-test: skip -->\n```python\nx = 1\n```\n", "must read"),
    ("<!-- readme-test: skip (why) -->\n\ntext\n```python\nx = 1\n```\n", "right before a fence"),
    ("```python\nx = 1\n", "never closed"),
    ("<!-- readme-test: skip (why) -->\n", "no code block"),
])
def test_extractor_rejects_malformed_markers_and_fences(text, message):
    with pytest.raises(ValueError, match=message):
        extract_blocks(text)


def test_readme_cli_check_line_runs_on_the_readme_factory(tmp_path, monkeypatch):
    blocks = extract_blocks(README.read_text(encoding="utf-8"))
    cli = [line.strip() for b in blocks if b.lang == "bash" for line in b.source.splitlines()
           if line.strip().startswith("fishersym check mypkg.models:make_net")]
    factory = [b for b in PY_BLOCKS if "def make_net(" in b.source]
    assert len(cli) == 1 and len(factory) == 1, (cli, [b.line for b in factory])
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "models.py").write_text(factory[0].source + "\n")
    monkeypatch.chdir(tmp_path)
    from fishersym.cli import main
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)                 # as in a fresh `fishersym` process
    try:
        rc = main(shlex.split(cli[0])[1:])
    finally:
        torch.set_default_dtype(saved)
        for name in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
            del sys.modules[name]
    assert rc == 0, f"README's CLI line {cli[0]!r} exited with {rc}"
