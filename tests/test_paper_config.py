"""The paper-scale configs validate, keep their hub paths, and their pieces run from local stand-ins.

Nothing is downloaded: a tiny CIFAR-100-shaped dataset saved with ``save_to_disk`` stands in for
``uoft-cs/cifar100`` and a tiny CLIP vision tower saved with ``save_pretrained`` stands in for
``openai/clip-vit-base-patch32``; the rest of the paper config (student, codec, channels) is used
as shipped, with the step counts cut.
"""

import json

import numpy as np
import pytest
import torch

from rkd.cli import main
from rkd.config import load_config


@pytest.fixture(scope="module")
def tiny_cifar_dir(tmp_path_factory):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    names = [f"class{i}" for i in range(5)]
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "coarse_label": datasets.ClassLabel(names=["a", "b"]),
            "fine_label": datasets.ClassLabel(names=names),
        }
    )
    parts = {}
    for split, n in (("train", 60), ("test", 20)):
        labels = np.arange(n) % 5
        pixels = rng.integers(0, 60, size=(n, 32, 32, 3)).astype(np.uint8) + (labels * 40)[:, None, None, None].astype(
            np.uint8
        )
        parts[split] = datasets.Dataset.from_dict(
            {
                "img": [Image.fromarray(p) for p in pixels],
                "coarse_label": (labels % 2).tolist(),
                "fine_label": labels.tolist(),
            },
            features=features,
        )
    path = tmp_path_factory.mktemp("tiny-cifar100")
    datasets.DatasetDict(parts).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        projection_dim=16,
    )
    path = tmp_path_factory.mktemp("tiny-clip")
    CLIPVisionModelWithProjection(config).save_pretrained(str(path))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(path))
    return path


def test_paper_configs_keep_hub_paths():
    clip = load_config("paper-cifar100-clip")
    vit = load_config("paper-cifar100-vit")
    assert clip.teacher.source == "openai/clip-vit-base-patch32" and clip.teacher.kind == "clip"
    assert vit.teacher.source == "google/vit-base-patch16-224"
    assert clip.data.name == vit.data.name == "hf:uoft-cs/cifar100"
    assert clip.data.label_column == "fine_label"


def test_paper_clip_pipeline_runs_on_local_stand_ins(tiny_cifar_dir, tiny_clip_dir, tmp_path):
    args = [
        "--config",
        "paper-cifar100-clip",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--name",
        "paper",
        f"data.name=hf:{tiny_cifar_dir}",
        f"data.cache_dir={tmp_path / 'datasets'}",
        "data.val_fraction=0.2",
        f"teacher.source={tiny_clip_dir}",
        "teacher.image_size=32",
        "mixed_precision=no",
        "teacher.train.max_steps=2",
        "teacher.train.batch_size=16",
        "teacher.train.warmup_steps=0",
        "stage1.max_steps=2",
        "stage1.batch_size=16",
        "stage2.max_steps=2",
        "stage2.batch_size=16",
        "eval.snr_step=30",
        "eval.batch_size=20",
        "eval.rates=[16,128]",
    ]
    assert main(["run", *args]) == 0
    run = tmp_path / "runs" / "paper"
    results = json.loads((run / "eval" / "results.json").read_text())
    summary = results["summary"]
    assert summary["n_test"] == 20
    records = [r for r in results["records"] if r["method"] == "rkd-sc"]
    assert {r["channel_uses"] for r in records} == {16, 128}
    assert {r["snr_db"] for r in records} == {-10.0, 20.0}
    manifest = json.loads((run / "cache" / "manifest.json").read_text())
    assert manifest["teacher"]["kind"] == "clip"
    # the CLIP tower's projection is the feature the student's projector aims at
    assert summary["student_params"] > 0 and summary["teacher_params"] > 0
