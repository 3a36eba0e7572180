"""Code explains, results remember: comments and docstrings say what the code does and why, in words
that stay true. Measured numbers, issue and commit references and the README's measurements belong
in benchmarks/results/ (HISTORY.md and the JSON files), where they carry their commit and machine.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the docs tests and the packaged-config rule talk about the README and history by design
EXEMPT = {"tests/test_docs.py", "tests/test_packaged_configs.py", "tests/test_code_explains.py"}
HISTORY = re.compile(
    r"\bissues?\s+#?\d+|\bissue's\b|\(issue\b|\bthe issue\b"  # an issue reference
    r"|\bREADME\b"  # a citation of the README's measurements
    r"|\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b"  # a commit hash
    r"|\d(\.\d+)?\s*x (faster|slower)"  # a measured speed-up
    r"|\d+\.\d+\s*%"  # a measured accuracy
    r"|\d\s*(min|s/epoch|s/step)\b"  # a measured time
    r"|\bbefore these\b",  # compatibility with what the code once was
    re.IGNORECASE,
)


def prose(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every comment and every line of every docstring."""
    found = [
        (tok.start[0], tok.string)
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                found.extend((node.body[0].lineno + i, line) for i, line in enumerate(doc.splitlines()))
    return found


def python_files() -> list[Path]:
    files = [*(REPO / "rkd").rglob("*.py"), *(REPO / "tests").rglob("*.py"), *(REPO / "benchmarks").glob("*.py")]
    return sorted(p for p in files if str(p.relative_to(REPO)) not in EXEMPT)


def test_comments_and_docstrings_carry_no_history():
    found = [
        f"{path.relative_to(REPO)}:{line}: {text.strip()}"
        for path in python_files()
        for line, text in prose(path.read_text())
        if HISTORY.search(text)
    ]
    assert not found, "move these to benchmarks/results/ (HISTORY.md), say it in words that stay true:\n" + "\n".join(
        found
    )


def test_the_scan_sees_comments_and_docstrings():
    source = '"""Module (issue 10)."""\n\n\ndef f():\n    """~1.7x faster."""\n    return 1  # 92.37% at f202ba0\n'
    flagged = [line for line, text in prose(source) if HISTORY.search(text)]
    assert sorted(flagged) == [1, 5, 6]
    assert not HISTORY.search("a 95% interval; 2..25% of the image; sha256 of the state dict")
