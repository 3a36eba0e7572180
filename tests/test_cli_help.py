"""Every `rkd` command's --help says what it writes; the tests of the real outputs (test_pipeline,
test_export) check each file a run writes is named there."""

from __future__ import annotations

import pytest
from clihelp import command_help, names_output

from rkd.cli import COMMANDS

WRITES = {  # a few outputs each command's help must name
    "run": ["config.yaml", "teacher/", "cache/", "stage1/", "stage2/", "eval/", "results.json", "report.md"],
    "teacher": ["teacher/", "rkd_teacher.json"],
    "cache": ["teacher/", "cache/", "manifest.json"],
    "search": ["search/", "genotype.json", "alphas.jsonl", "pareto.json"],
    "distill": ["stage1/", "stage2/", "model.safetensors"],
    "evaluate": ["eval/", "results.json", "results.csv", "accuracy_vs_snr_awgn.png", "confusion_matrix.png"],
    "report": ["report.md", "comparison.md"],
    "baselines": ["baselines/", "ablations/", "compare/", "comparison.md", "comparison.png"],
    "export": ["export/", "transmitter.pt", "receiver.pt", "transmitter.onnx", "receiver.onnx", "export.json"],
    "doctor": [],  # writes no run directory; its help says where the probe's cache lives
}


def test_every_command_is_covered():
    assert set(WRITES) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(WRITES))
def test_help_says_what_the_command_writes(command):
    text = command_help(command)
    assert "Writes, in runs/<name>/:" in text, text
    missing = [path for path in WRITES[command] if not names_output(command, path)]
    assert not missing, f"`rkd {command} --help` does not name {missing}: {text}"


def test_the_help_reader_tells_named_from_unnamed():
    assert names_output("export", "transmitter.onnx") and not names_output("teacher", "transmitter.onnx")
    assert names_output("evaluate", "accuracy_vs_snr_rician-k4-csi.png")  # a pattern in the help
