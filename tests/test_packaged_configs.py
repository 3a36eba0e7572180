"""The packaged configs explain their settings and leave their history to benchmarks/results/HISTORY.md.

A config carries a short header (what the profile is for) and at most one comment line per setting,
either above it or beside it; no measured numbers, before/after arrows, issue or commit references.
"""

import re
from pathlib import Path

import pytest

import rkd

CONFIGS = sorted((Path(rkd.__file__).parent / "configs").glob("*.yaml"))
HEADER_LINES = 3
HISTORY = re.compile(
    r"\d\s*%"  # a measured accuracy
    r"|->|→"  # before -> after
    r"|\d\s*(min|ms|s/epoch|s/step)\b"  # a measured time
    r"|\d(\.\d+)?x (faster|slower)"  # a measured speed-up
    r"|\b(measured|README|issue)\b"
    r"|\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b",  # a commit hash
    re.IGNORECASE,
)


def comments(path: Path) -> list[tuple[int, str, bool]]:
    """(line number, comment text, whether the line is a comment only) for every comment of ``path``."""
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("#"):
            found.append((number, line.lstrip()[1:].strip(), True))
        elif " #" in line:
            found.append((number, line.split(" #", 1)[1].strip(), False))
    return found


def test_there_are_packaged_configs():
    assert {"default", "quick", "compare"} <= {p.stem for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_at_most_one_comment_line_per_setting(path):
    lines = path.read_text().splitlines()
    header = 0
    while header < len(lines) and lines[header].startswith("#"):
        header += 1
    assert header <= HEADER_LINES, f"{path.name}: a header of {header} comment lines; at most {HEADER_LINES}"
    for number, _, whole_line in comments(path):
        if not whole_line or number <= header:
            continue
        following = lines[number] if number < len(lines) else ""
        assert following.strip() and not following.lstrip().startswith("#"), (
            f"{path.name}:{number}: a comment line must stand right above the one setting it explains"
        )
        assert " #" not in following, f"{path.name}:{number + 1}: two comments for one setting (above and beside)"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_no_measurements_or_history_in_comments(path):
    for number, text, _ in comments(path):
        match = HISTORY.search(text)
        assert match is None, (
            f"{path.name}:{number}: {match.group(0)!r} in a comment reads as a measurement or history; "
            "say what the setting does and keep the numbers in benchmarks/results/HISTORY.md"
        )
