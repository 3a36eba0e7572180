"""`make install TORCH=...` (the GPU-cluster install): the later pip installs are pinned to the torch
that TORCH installed, not to constraints.txt's CPU pin, which would replace it."""

from __future__ import annotations

import os
import subprocess
import sys

from multiproc import REPO


def test_install_pins_the_torch_that_torch_installed(tmp_path):
    site = tmp_path / "site" / "torch"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text('__version__ = "2.5.1+cu124"\n')  # what a CUDA wheel reports
    venv = tmp_path / "venv"
    venv.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    subprocess.run(["make", "-s", "pins", f"VENV={venv}", f"PY={sys.executable}"], cwd=REPO, env=env, check=True)
    pins = (venv / "constraints.txt").read_text().split()
    assert "torch==2.5.1" in pins and not [p for p in pins if p.startswith("torch==2.13")]
    dry = subprocess.run(
        ["make", "-n", "-B", "install", f"VENV={venv}", "TORCH=torch==2.5.1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installs = [line for line in dry.splitlines() if "pip install" in line and "-e " in line]
    assert installs and all(f"-c {venv}/constraints.txt" in line for line in installs), dry
