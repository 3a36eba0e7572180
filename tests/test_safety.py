"""Damaged files, untrusted code and secrets: rkd refuses them with an error that names the file or field and the fix."""

import json
from pathlib import Path

import pytest
import torch
from test_pipeline import TINY

from rkd.cli import main
from rkd.config import ConfigError, load_config
from rkd.run.artifacts import IntegrityError


@pytest.fixture
def tiny_args(fake_fashion_dir, tmp_path):
    return [
        "--runs-dir",
        str(tmp_path / "runs"),
        "--name",
        "tiny",
        f"data.fashion_mnist_dir={fake_fashion_dir}",
        f"data.cache_dir={tmp_path / 'datasets'}",
        *TINY,
    ]


def flip_byte(path: Path, offset: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------- finished stages


def test_damaged_stage_outputs_are_refused_with_the_file_and_the_fix(tiny_args, tmp_path, capsys):
    assert main(["run", *tiny_args]) == 0
    run = tmp_path / "runs" / "tiny"
    record = json.loads((run / "stage1" / "stage.json").read_text())
    assert "model.safetensors" in record["files"] and not any(f.startswith("checkpoints/") for f in record["files"])
    capsys.readouterr()

    weights = run / "stage1" / "model.safetensors"
    original = weights.read_bytes()
    for damage in (flip_byte, lambda p: p.write_bytes(original[: len(original) // 2]), lambda p: p.unlink()):
        weights.write_bytes(original)
        damage(weights)
        assert main(["run", *tiny_args]) == 2
        err = capsys.readouterr().err
        assert str(weights) in err and f"move or delete {run / 'stage1'}" in err

    # the documented fix works: stage 1 is redone, the teacher and its cache are reused
    weights.write_bytes(original[:100])
    (run / "stage1").rename(run / "stage1.damaged")
    assert main(["run", *tiny_args]) == 0
    out = capsys.readouterr().out
    assert "teacher: done for this config, skipping" in out and "cache: done for this config, skipping" in out
    assert "stage1: running" in out

    # `rkd report` rewrites renderings only: the eval stage still verifies afterwards
    assert main(["report", *tiny_args]) == 0
    assert main(["run", *tiny_args]) == 0


def test_searched_genotype_and_records_are_checked(tmp_path):
    from rkd.run.pipeline import RunDirectory

    cfg = load_config(None, [f"runs_dir={tmp_path}", "name=g", "search.enabled=true"])
    run_dir = RunDirectory(cfg)
    out = run_dir.begin("search")
    (out / "genotype.json").write_text(json.dumps({"normal": [["sep_conv_3x3", 0]]}))
    (out / "cells.png").write_bytes(b"picture")
    run_dir.finish("search", {"params": 1})
    assert run_dir.is_done("search")

    (out / "cells.png").write_bytes(b"re-rendered")  # renderings may change
    (out / "sweep").mkdir()
    (out / "sweep" / "pareto.json").write_text("{}")  # the sweep adds files later
    assert run_dir.is_done("search")

    (out / "genotype.json").write_text(json.dumps({"normal": [["skip_connect", 0]]}))
    with pytest.raises(IntegrityError, match=r"genotype\.json was changed.*move or delete"):
        run_dir.is_done("search")

    (out / "stage.json").write_text((out / "stage.json").read_text()[:40])  # a truncated record
    with pytest.raises(IntegrityError, match=r"stage\.json is not a readable JSON record"):
        run_dir.is_done("search")


def test_user_genotype_file_faults_name_the_file(tmp_path):
    from rkd.nas.genotype import GenotypeError, load_genotype

    path = tmp_path / "cells.json"
    path.write_text('{"normal": [["sep_conv_3x3", 0], ')
    with pytest.raises(GenotypeError, match=r"cells\.json.*not valid JSON"):
        load_genotype(path)
    path.write_text(
        json.dumps(
            {
                "normal": [["no_such_op", 0]] * 8,
                "normal_concat": [2, 3, 4, 5],
                "reduce": [["max_pool_3x3", 0]] * 8,
                "reduce_concat": [2, 3, 4, 5],
            }
        )
    )
    with pytest.raises(GenotypeError, match=r"cells\.json.*no_such_op"):
        load_genotype(path)


# ----------------------------------------------------------------------------- checkpoints


def stopped_run(tmp_path):
    """A toy training run stopped by SIGUSR1 after a checkpoint; returns a resumer and the checkpoint root."""
    from test_engine import CFG, Objective, model, toy_data

    from rkd.engine import StopRequested, fit, make_accelerator

    accelerator = make_accelerator(cpu=True)
    train, val = toy_data()
    with pytest.raises(StopRequested):
        fit(accelerator, model(), Objective(fault_at=12, fault="signal"), train, val, CFG, tmp_path / "run")

    def resume():
        return fit(accelerator, model(), Objective(), train, val, CFG, tmp_path / "run")

    return resume, tmp_path / "run" / "checkpoints"


def test_damaged_checkpoint_is_never_loaded(tmp_path):
    resume, root = stopped_run(tmp_path)
    pointer = json.loads((root / "latest.json").read_text())
    assert pointer["files"] and all(len(v) == 64 for v in pointer["files"].values())
    directory = root / pointer["dir"]
    for name in ("model.safetensors", "optimizer.bin"):
        target = directory / name
        original = target.read_bytes()
        flip_byte(target, offset=len(original) // 2)
        with pytest.raises(IntegrityError) as info:
            resume()
        assert str(target) in str(info.value) and f"delete {root}" in str(info.value)
        target.write_bytes(original)

    (root / "latest.json").write_text('{"dir": "step-0000')
    with pytest.raises(IntegrityError, match="latest.json is not a readable JSON record"):
        resume()


def test_checkpoint_optimizer_state_is_read_weights_only(tmp_path):
    """Accelerate reads optimizer/scheduler/RNG files with torch.load(weights_only=True): a pickled
    object in a checkpoint file is refused, not executed (even after its checksum is re-recorded)."""
    from rkd.run.artifacts import sha256_file

    resume, root = stopped_run(tmp_path)
    pointer = json.loads((root / "latest.json").read_text())
    marker = tmp_path / "pwned"
    torch.save({"state": Exploit(str(marker))}, root / pointer["dir"] / "optimizer.bin")
    pointer["files"]["optimizer.bin"] = sha256_file(root / pointer["dir"] / "optimizer.bin")
    (root / "latest.json").write_text(json.dumps(pointer))
    with pytest.raises(Exception, match="Weights only load failed|weights_only"):
        resume()
    assert not marker.exists()


class Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


# ----------------------------------------------------------------------------- remote code


CUSTOM_CONFIG = """
import os
from pathlib import Path
from transformers import ResNetConfig

Path(os.environ["RKD_TEST_REMOTE_MARKER"]).touch()  # proves this file was executed


class TinyCustomConfig(ResNetConfig):
    model_type = "rkd-test-custom"
"""

CUSTOM_MODEL = """
from transformers import ResNetForImageClassification

from .configuration_custom import TinyCustomConfig


class TinyCustomClassifier(ResNetForImageClassification):
    config_class = TinyCustomConfig
"""


@pytest.fixture
def remote_code_teacher(tmp_path, monkeypatch):
    """A save_pretrained directory whose config needs its own Python (an auto_map), like many hub repos."""
    from transformers import ResNetConfig, ResNetForImageClassification

    path = tmp_path / "custom-teacher"
    config = ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=10)
    ResNetForImageClassification(config).save_pretrained(str(path))
    from rkd.teacher.hub import square_processor

    square_processor(28, [0.5], [0.5]).save_pretrained(str(path))  # a pretrained teacher comes with its processor
    (path / "configuration_custom.py").write_text(CUSTOM_CONFIG)
    (path / "modeling_custom.py").write_text(CUSTOM_MODEL)
    data = json.loads((path / "config.json").read_text())
    data.update(
        model_type="rkd-test-custom",
        auto_map={
            "AutoConfig": "configuration_custom.TinyCustomConfig",
            "AutoModelForImageClassification": "modeling_custom.TinyCustomClassifier",
        },
    )
    (path / "config.json").write_text(json.dumps(data))
    marker = tmp_path / "remote-code-ran"
    monkeypatch.setenv("RKD_TEST_REMOTE_MARKER", str(marker))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    return path, marker


def test_remote_code_runs_only_when_asked_on_the_command_line(remote_code_teacher, tiny_args, tmp_path, capsys):
    path, marker = remote_code_teacher
    args = [*tiny_args, f"teacher.source={path}", "teacher.image_size=28"]

    assert main(["teacher", *args]) == 2
    err = capsys.readouterr().err
    assert "--trust-remote-code" in err and str(path) in err and not marker.exists()

    yaml_file = tmp_path / "trusting.yaml"
    yaml_file.write_text("teacher:\n  trust_remote_code: true\n")
    assert main(["teacher", "--config", "default", "--config", str(yaml_file), *args]) == 2
    err = capsys.readouterr().err
    assert "teacher.trust_remote_code" in err and "only the command line" in err and not marker.exists()

    assert main(["teacher", "--trust-remote-code", *args]) == 0
    assert marker.exists()
    run = tmp_path / "runs" / "tiny"
    assert json.loads((run / "teacher" / "stage.json").read_text())["summary"]["trust_remote_code"] is True
    assert "trust_remote_code: true" in (run / "config.yaml").read_text()
    assert json.loads((run / "teacher" / "model" / "rkd_teacher.json").read_text())["trust_remote_code"] is True

    # a saved teacher that needed remote code does not switch it on by itself
    from rkd.teacher.io import load_trained_teacher

    with pytest.raises(ConfigError, match="--trust-remote-code"):
        load_trained_teacher(run / "teacher" / "model")


# ----------------------------------------------------------------------------- secrets


SECRET = "hf_" + "Zq7" * 12


def test_tokens_in_the_environment_never_reach_run_files_or_output(tiny_args, tmp_path, capsys, monkeypatch):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "GITHUB_TOKEN"):
        monkeypatch.setenv(name, SECRET)
    assert main(["run", *tiny_args]) == 0
    assert main(["report", *tiny_args]) == 0
    assert main(["export", *tiny_args]) == 0
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err
    run = tmp_path / "runs" / "tiny"
    files = [p for p in run.rglob("*") if p.is_file()]
    assert len(files) > 20
    leaked = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert leaked == []


@pytest.mark.parametrize(
    "field, value",
    [
        ("teacher.source", SECRET),
        ("data.name", "hf:" + SECRET),
        ("teacher.source", "https://user:p4ssw0rd@example.com/model"),
        ("data.cache_dir", "/tmp/ghp_" + "a1" * 15),
    ],
)
def test_config_values_that_look_like_credentials_are_refused(field, value):
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"{field}={value}"])
    message = str(info.value)
    assert field in message and "HF_TOKEN" in message
    assert value not in message  # the error itself must not repeat the secret


def test_yaml_may_keep_trust_remote_code_off(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("teacher:\n  trust_remote_code: false\n")
    assert load_config([path]).teacher.trust_remote_code is False
    assert load_config([path], ["teacher.trust_remote_code=true"]).teacher.trust_remote_code is True


def test_ablation_configs_carry_the_command_line_choice():
    """Baseline variants are derived through a YAML round trip; remote code stays as the user chose."""
    from rkd.baselines.variants import derive_config

    trusting = derive_config(load_config(None, ["teacher.trust_remote_code=true"]), ["stage2.lr=0.1"], "x")
    assert trusting.teacher.trust_remote_code is True and trusting.stage2.lr == 0.1
    assert derive_config(load_config(None, []), [], "x").teacher.trust_remote_code is False
