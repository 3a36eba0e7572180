"""What `rkd <command> --help` says a command writes, read back for tests that compare it with real outputs."""

from __future__ import annotations

import contextlib
import fnmatch
import io
import re

from rkd.cli import build_parser


def command_help(command: str) -> str:
    """The text `rkd <command> --help` prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        build_parser().parse_args([command, "--help"])
    return " ".join(out.getvalue().split())  # argparse wraps lines; names may be split only at spaces


def names_output(command: str, path: str) -> bool:
    """Does the command's help name ``path`` (``dir/`` for a directory, a file name, or a ``*`` pattern)?"""
    said = re.search(r"Writes, in runs/<name>/: (.*?) positional arguments:", command_help(command))
    if said is None:
        return False
    tokens = {re.sub(r"<[^>]+>", "*", t.strip(",;:()")) for t in said.group(1).split()}
    files = {t.rsplit("/", 1)[-1] for t in tokens if not t.endswith("/")}  # eval/report.md names report.md
    dirs = {t[: i + 1] for t in tokens for i, c in enumerate(t) if c == "/"}  # baselines/*/ names baselines/
    return any(fnmatch.fnmatchcase(path, token) for token in tokens | files | dirs if token)
