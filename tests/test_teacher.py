"""rkd.teacher.model: building (embedded / hub-style / CLIP), save+reload, fine-tuning and the teacher cache."""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import threading
from pathlib import Path

import pytest
import torch

from rkd.config import ConfigError, RunConfig, TeacherConfig, TrainConfig
from rkd.run.artifacts import read_json
from rkd.teacher.cache import MANIFEST, CacheError, cache_is_valid, load_cache
from rkd.teacher.cache_build import build_cache
from rkd.teacher.io import TEACHER_RECORD, load_trained_teacher, save_teacher
from rkd.teacher.model import Teacher, build_teacher

NAMES10 = [f"class{i}" for i in range(10)]
TINY = dict(embedded_hidden_sizes=[8, 16], embedded_depths=[1, 1], embedded_embedding_size=8)


def _pixels(n: int = 4, size: int = 28, channels: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, size, size, channels), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def _tiny_embedded(seed: int = 0) -> Teacher:
    torch.manual_seed(seed)
    return build_teacher(TeacherConfig(**TINY), 10, NAMES10, channels=1).eval()


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory) -> Path:
    """A tiny ViT classifier for labels a, b, c with its image processor, as a hub checkpoint would be."""
    from transformers import ViTConfig, ViTForImageClassification

    from rkd.teacher.hub import square_processor

    torch.manual_seed(0)
    labels = ["a", "b", "c"]
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    path = tmp_path_factory.mktemp("tiny-vit")
    ViTForImageClassification(config).save_pretrained(str(path))
    square_processor(32, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]).save_pretrained(str(path))
    return path


def _clip_processor():
    import transformers

    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32})


@pytest.fixture(scope="module")
def clip_vision_dir(tmp_path_factory) -> Path:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

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
    path = tmp_path_factory.mktemp("tiny-clip-vision")
    CLIPVisionModelWithProjection(config).save_pretrained(str(path))
    _clip_processor().save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def clip_full_dir(tmp_path_factory) -> Path:
    """A full CLIPModel checkpoint (text + vision), like openai/clip-vit-base-patch32."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    tower = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config = CLIPConfig(
        vision_config=dict(tower, image_size=32, patch_size=8),
        text_config=dict(tower, vocab_size=99),
        projection_dim=12,
    )
    path = tmp_path_factory.mktemp("tiny-clip-full")
    CLIPModel(config).save_pretrained(str(path))
    _clip_processor().save_pretrained(str(path))
    return path


# ----------------------------------------------------------------------------- building


def test_embedded_default_teacher():
    teacher = build_teacher(TeacherConfig(), 10, NAMES10, channels=1).eval()
    assert 1_200_000 < teacher.n_params < 1_260_000  # 1,232,810 with the defaults
    assert teacher.feature_dim == 256 and teacher.num_classes == 10 and teacher.kind == "embedded"
    assert teacher.transform.describe() == {"size": 28, "channels": 3, "mean": [0.5] * 3, "std": [0.5] * 3}
    pixels = _pixels()
    out = teacher(pixels)
    assert out["logits"].shape == (4, 10) and out["features"].shape == (4, 256)
    with torch.no_grad():  # features = pooled output of model.resnet; logits = the model's own
        x = teacher.transform(pixels)
        assert torch.allclose(out["features"], teacher.model.resnet(x).pooler_output.flatten(1), atol=1e-6)
        assert torch.allclose(out["logits"], teacher.model(pixel_values=x).logits, atol=1e-6)
    assert teacher.model.config.id2label[3] == "class3"
    identity = teacher.identity
    assert set(identity) >= {"source", "kind", "model_class", "n_params", "weights_sha256"}
    assert identity["model_class"] == "ResNetForImageClassification" and identity["source"] == "embedded"


def test_embedded_round_trip_identical(tmp_path):
    teacher = _tiny_embedded()
    save_teacher(teacher, tmp_path / "model")
    assert {"config.json", "model.safetensors", "preprocessor_config.json", TEACHER_RECORD} <= {
        p.name for p in (tmp_path / "model").iterdir()
    }
    again = load_trained_teacher(tmp_path / "model").eval()
    pixels = _pixels(6)
    with torch.no_grad():
        a, b = teacher(pixels), again(pixels)
    assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["features"], b["features"])
    assert again.identity == teacher.identity and again.transform == teacher.transform
    save_teacher(again, tmp_path / "model")  # overwriting an existing dir is atomic and leaves no temp dirs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_hub_vit_gets_new_head(vit_dir):
    names = ["v", "w", "x", "y", "z"]
    teacher = build_teacher(TeacherConfig(source=str(vit_dir)), 5, names, channels=1).eval()
    assert teacher.num_classes == 5 and teacher.feature_dim == 32
    assert teacher.model.config.id2label == dict(enumerate(names))
    assert teacher.transform.describe() == {"size": 32, "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3}
    pixels = _pixels(3)
    with torch.no_grad():
        out = teacher(pixels)
        cls_token = teacher.model.vit(teacher.transform(pixels)).last_hidden_state[:, 0]
    assert out["logits"].shape == (3, 5)
    assert torch.allclose(out["features"], cls_token, atol=1e-6)  # CLS token after the final layer norm
    assert teacher.identity["source"] == str(vit_dir)


def test_a_pretrained_teacher_without_its_processor_is_refused(vit_dir, tmp_path):
    """Before: a warning and ImageNet's mean/std for a ViT that expects 0.5/0.5 (silently lower accuracy)."""
    bare = tmp_path / "bare-vit"
    shutil.copytree(vit_dir, bare)
    (bare / "preprocessor_config.json").unlink()
    with pytest.raises(ConfigError) as info:
        build_teacher(TeacherConfig(source=str(bare)), 3, list("xyz"), channels=3)
    message = str(info.value)
    assert f"teacher.source = {str(bare)!r} has no usable image processor" in message
    assert "save_pretrained" in message and "\n" not in message
    from rkd.run.preflight import probe_teacher

    with pytest.raises(ConfigError, match="no usable image processor"):  # the pre-flight check, before any stage
        probe_teacher(TeacherConfig(source=str(bare)))


def test_matching_labels_keep_head_in_task_order(vit_dir):
    from transformers import ViTForImageClassification

    original = ViTForImageClassification.from_pretrained(str(vit_dir)).eval()
    teacher = build_teacher(TeacherConfig(source=str(vit_dir), finetune=False), 3, ["c", "A", "b"], channels=3).eval()
    pixels = _pixels(2, size=32, channels=3)
    with torch.no_grad():
        expected = original(pixel_values=teacher.transform(pixels)).logits[:, [2, 0, 1]]
        got = teacher(pixels)["logits"]
    assert torch.allclose(got, expected, atol=1e-6)
    assert teacher.model.config.id2label == {0: "c", 1: "A", 2: "b"}


def test_finetune_false_with_other_classes_is_refused(vit_dir, clip_vision_dir):
    with pytest.raises(ConfigError) as info:
        build_teacher(TeacherConfig(source=str(vit_dir), finetune=False), 5, list("vwxyz"), channels=1)
    message = str(info.value)
    assert "predicts 3 classes (a, b, c)" in message and "the task has 5" in message
    assert "teacher.finetune=true" in message and str(vit_dir) in message
    with pytest.raises(ConfigError, match="CLIP.*teacher.finetune=true"):
        build_teacher(TeacherConfig(source=str(clip_vision_dir), finetune=False), 5, list("vwxyz"), channels=1)


def test_image_size_override_interpolates_positions(vit_dir, tmp_path):
    teacher = build_teacher(TeacherConfig(source=str(vit_dir), image_size=16), 4, list("pqrs"), channels=1).eval()
    assert teacher.transform.size == 16
    assert teacher(_pixels(2))["logits"].shape == (2, 4)
    save_teacher(teacher, tmp_path / "model")
    processor = read_json(tmp_path / "model" / "preprocessor_config.json")
    assert processor["size"] == {"height": 16, "width": 16}
    again = load_trained_teacher(tmp_path / "model").eval()
    with torch.no_grad():
        assert torch.equal(again(_pixels(2))["logits"], teacher(_pixels(2))["logits"])


@pytest.mark.parametrize("which", ["vision", "full"])
def test_clip_teacher(which, clip_vision_dir, clip_full_dir, tmp_path):
    source = clip_vision_dir if which == "vision" else clip_full_dir
    teacher = build_teacher(TeacherConfig(source=str(source)), 7, [f"c{i}" for i in range(7)], channels=1).eval()
    projection = 16 if which == "vision" else 12
    assert teacher.kind == "clip" and teacher.feature_dim == projection and teacher.num_classes == 7
    assert teacher.transform.size == 32 and teacher.transform.channels == 3  # crop_size of the processor
    pixels = _pixels(3)
    with torch.no_grad():
        out = teacher(pixels)
        embeds = teacher.model(pixel_values=teacher.transform(pixels)).image_embeds
    assert out["logits"].shape == (3, 7) and torch.allclose(out["features"], embeds)
    save_teacher(teacher, tmp_path / "model")
    again = load_trained_teacher(tmp_path / "model").eval()
    with torch.no_grad():
        assert torch.equal(again(pixels)["logits"], out["logits"])
    assert again.identity == teacher.identity


def test_non_image_model_is_refused(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(
        str(tmp_path)
    )
    with pytest.raises(ConfigError, match="'bert' model, which is not an image classifier"):
        build_teacher(TeacherConfig(source=str(tmp_path)), 3, list("abc"), channels=3)
    with pytest.raises(ConfigError, match="does not exist"):
        build_teacher(TeacherConfig(source=str(tmp_path / "missing")), 3, list("abc"), channels=3)


# ----------------------------------------------------------------------------- the cache


SHARD = 64  # train 240 -> 4 shards, val 60 -> 1, test 100 -> 2


@pytest.fixture(scope="module")
def cached(fashion_bundle, tmp_path_factory):
    teacher = _tiny_embedded(seed=1)
    cache_dir = tmp_path_factory.mktemp("teacher-cache")
    manifest = build_cache(teacher, fashion_bundle, cache_dir, batch_size=50, shard_size=SHARD, progress=False)
    return teacher, cache_dir, manifest


@pytest.fixture
def cache_copy(cached, tmp_path) -> Path:
    target = tmp_path / "cache"
    shutil.copytree(cached[1], target)
    return target


def test_cache_build_load_and_targets(cached, fashion_bundle):
    teacher, cache_dir, manifest = cached
    assert json.loads((cache_dir / MANIFEST).read_text()) == manifest
    assert manifest["augmentation"] == "none: un-augmented single view"
    # every shard records its augmentation, so a shard of another augmentation is never current
    assert read_json(cache_dir / "train-00000.safetensors.json")["augmentation"] == manifest["augmentation"]
    assert manifest["dataset_fingerprint"] == fashion_bundle.fingerprint
    assert manifest["teacher"] == teacher.identity
    assert manifest["transform"] == teacher.transform.describe()
    assert {s: e["size"] for s, e in manifest["splits"].items()} == {"train": 240, "val": 60, "test": 100}
    assert [s["file"] for s in manifest["splits"]["train"]["shards"]] == [
        f"train-{i:05d}.safetensors" for i in range(4)
    ]
    assert manifest["splits"]["test"]["shards"][1] == {
        **manifest["splits"]["test"]["shards"][1],
        "start": 64,
        "stop": 100,
    }
    cache = load_cache(cache_dir, expected_teacher=teacher.identity, expected_fingerprint=fashion_bundle.fingerprint)
    assert cache.logits["train"].dtype == torch.float16 and cache.logits["train"].shape == (240, 10)
    assert cache.features["test"].shape == (100, 16)
    index = torch.tensor([0, 63, 64, 239, 5])
    targets = cache.targets("train", index)
    with torch.no_grad():
        direct = teacher(fashion_bundle.splits["train"].images[index])
    assert targets["teacher_logits"].dtype == torch.float32
    assert torch.allclose(targets["teacher_logits"], direct["logits"], atol=2e-2, rtol=1e-2)
    assert torch.allclose(targets["teacher_features"], direct["features"], atol=2e-2, rtol=1e-2)
    assert cache_is_valid(cache_dir, teacher.identity, fashion_bundle.fingerprint)
    with pytest.raises(KeyError, match="train"):
        cache.targets("unlabelled", index)


def _flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "damage", ["corrupt", "missing", "truncated-manifest", "no-manifest", "teacher", "fingerprint"]
)
def test_cache_damage_raises_cache_error(cache_copy, cached, fashion_bundle, damage):
    teacher = cached[0]
    expected_teacher, fingerprint = teacher.identity, fashion_bundle.fingerprint
    named = cache_copy / "val-00000.safetensors"
    if damage == "corrupt":
        _flip_byte(named)
        pattern = "val-00000.safetensors: sha256"
    elif damage == "missing":
        named.unlink()
        pattern = "val-00000.safetensors is missing"
    elif damage == "truncated-manifest":
        text = (cache_copy / MANIFEST).read_text()
        (cache_copy / MANIFEST).write_text(text[: len(text) // 2])
        pattern = "manifest.json is not valid JSON"
    elif damage == "no-manifest":
        (cache_copy / MANIFEST).unlink()
        pattern = "manifest.json is missing"
    elif damage == "teacher":
        expected_teacher = _tiny_embedded(seed=2).identity
        pattern = "manifest.json: built by a different teacher \\(weights_sha256"
    else:
        fingerprint = "0" * 64
        pattern = "manifest.json: built for dataset fingerprint"
    with pytest.raises(CacheError, match=pattern):
        load_cache(cache_copy, expected_teacher=expected_teacher, expected_fingerprint=fingerprint)
    assert not cache_is_valid(cache_copy, expected_teacher, fingerprint)
    assert issubclass(CacheError, RuntimeError)


def test_cache_resume_rewrites_only_missing_shard(cache_copy, cached, fashion_bundle):
    teacher, _, manifest = cached
    before = {p.name: p.stat().st_mtime_ns for p in cache_copy.glob("*.safetensors")}
    (cache_copy / "train-00002.safetensors").unlink()
    rebuilt = build_cache(teacher, fashion_bundle, cache_copy, batch_size=50, shard_size=SHARD, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in cache_copy.glob("*.safetensors")}
    assert set(after) == set(before)
    changed = sorted(name for name in after if after[name] != before[name])
    assert changed == ["train-00002.safetensors"]
    assert rebuilt["splits"] == manifest["splits"]  # same bytes, same checksums
    load_cache(cache_copy, expected_teacher=teacher.identity)
    other = _tiny_embedded(seed=3)  # a different teacher invalidates every shard
    build_cache(other, fashion_bundle, cache_copy, batch_size=50, shard_size=SHARD, progress=False)
    assert all(p.stat().st_mtime_ns != after[p.name] for p in cache_copy.glob("*.safetensors"))
    with pytest.raises(CacheError, match="different teacher"):
        load_cache(cache_copy, expected_teacher=teacher.identity)


class _ThreadAccelerator:
    """Enough of accelerate.Accelerator for one of N processes, played by threads sharing a barrier."""

    def __init__(self, rank: int, world: int, barrier: threading.Barrier) -> None:
        self.process_index, self.num_processes = rank, world
        self.is_main_process = rank == 0
        self.device = torch.device("cpu")
        self.barrier = barrier
        self.written: list[str] = []

    def wait_for_everyone(self) -> None:
        self.barrier.wait(timeout=60)

    def autocast(self):
        return contextlib.nullcontext()

    def unwrap_model(self, model):
        return model


_THREAD = threading.local()  # the rank a thread plays


def _thread_collectives(monkeypatch, world: int) -> None:
    """rkd.run.collective's object gather and broadcast between threads (each sets ``_THREAD.rank``)."""
    import rkd.run.collective as collective

    slots: dict = {}
    gate = threading.Barrier(world)

    def gather_object(objects):
        slots[_THREAD.rank] = list(objects)
        gate.wait(timeout=60)
        gathered = [x for rank in range(world) for x in slots[rank]]
        gate.wait(timeout=60)
        return gathered

    def broadcast_object_list(objects, from_process=0):
        if _THREAD.rank == from_process:
            slots["sent"] = list(objects)
        gate.wait(timeout=60)
        objects[:] = slots["sent"]
        gate.wait(timeout=60)
        return objects

    monkeypatch.setattr(collective, "gather_object", gather_object)
    monkeypatch.setattr(collective, "broadcast_object_list", broadcast_object_list)


def test_cache_shards_split_across_processes(cached, fashion_bundle, tmp_path, monkeypatch):
    import rkd.teacher.cache_build as cache_module

    teacher, reference_dir, reference = cached
    cache_dir = tmp_path / "multi"
    barrier = threading.Barrier(2)
    accelerators = [_ThreadAccelerator(rank, 2, barrier) for rank in range(2)]
    writers: dict[int, list] = {0: [], 1: []}
    original_pass = cache_module._teacher_pass

    def recording_pass(model, images, batch_size, device, accelerator, flip_average=False):
        writers[accelerator.process_index].append(images.shape[0])
        return original_pass(model, images, batch_size, device, accelerator, flip_average)

    monkeypatch.setattr(cache_module, "_teacher_pass", recording_pass)
    _thread_collectives(monkeypatch, 2)
    results: dict[int, dict] = {}

    # one teacher per "process", as real processes have: Teacher.forward captures features with a
    # hook on its head, and two threads in one module's forward would catch each other's batches
    replicas = [copy.deepcopy(teacher) for _ in range(2)]

    def run(rank: int) -> None:
        _THREAD.rank = rank
        results[rank] = build_cache(
            replicas[rank], fashion_bundle, cache_dir, 50, SHARD, accelerator=accelerators[rank], progress=False
        )

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # global shard order: train 0-3 (64, 64, 64, 48), val 0 (60), test 0-1 (64, 36); process i takes i, i+2, ...
    assert writers == {0: [64, 64, 60, 36], 1: [64, 48, 64]}
    assert results[0] == results[1]

    def layout(manifest):  # shard files and index ranges; checksums may differ in the last fp16 bit
        return {
            split: [{k: v for k, v in shard.items() if k != "sha256"} for shard in info["shards"]]
            if isinstance(info, dict) and "shards" in info
            else info
            for split, info in manifest["splits"].items()
        }

    assert layout(results[0]) == layout(reference)
    ours = load_cache(cache_dir, expected_teacher=teacher.identity, expected_fingerprint=fashion_bundle.fingerprint)
    theirs = load_cache(
        reference_dir, expected_teacher=teacher.identity, expected_fingerprint=fashion_bundle.fingerprint
    )
    for split in ours.logits:  # threads share torch's pool, so reduction order (not the math) may differ
        assert torch.allclose(ours.logits[split].float(), theirs.logits[split].float(), atol=1e-2)
        assert torch.allclose(ours.features[split].float(), theirs.features[split].float(), atol=1e-2)


# ----------------------------------------------------------------------------- fine-tuning


def test_parameter_groups_split_head_from_backbone(vit_dir, clip_vision_dir):
    from rkd.teacher.training import parameter_groups

    for source in (vit_dir, clip_vision_dir):
        teacher = build_teacher(TeacherConfig(source=str(source)), 4, list("pqrs"), channels=1)
        head, backbone = parameter_groups(teacher, lr=1e-3, backbone_lr_scale=0.1)
        assert head["lr"] == 1e-3 and backbone["lr"] == pytest.approx(1e-4)
        assert sum(p.numel() for p in head["params"]) == teacher.feature_dim * 4 + 4
        assert sum(p.numel() for g in (head, backbone) for p in g["params"]) == teacher.n_params


def test_train_teacher_tiny_run(fashion_bundle, tmp_path):
    from rkd.engine import make_accelerator
    from rkd.teacher.training import train_teacher

    cfg = RunConfig()
    cfg.teacher = TeacherConfig(
        **TINY, train=TrainConfig(epochs=2, batch_size=32, lr=3e-3, max_steps=14, checkpoint_every=1000, log_every=5)
    )
    accelerator = make_accelerator(cpu=True, seed=0)
    summary = train_teacher(cfg, fashion_bundle, tmp_path / "teacher", accelerator)
    assert summary["steps"] == 14 and summary["finetuned"] and summary["n_params"] > 0
    assert 0.0 <= summary["val_accuracy"] <= 1.0 and summary["train_seconds"] > 0
    teacher = load_trained_teacher(summary["model_dir"]).eval()
    val = fashion_bundle.splits["val"]
    with torch.no_grad():
        accuracy = float((teacher(val.images)["logits"].argmax(-1) == val.labels).float().mean())
    assert accuracy == pytest.approx(summary["val_accuracy"])  # the saved weights are the best-val ones
    assert accuracy > 0.2  # chance is 0.1; the fake classes differ in brightness
    assert (tmp_path / "teacher" / "log.jsonl").exists()

    cfg.teacher.finetune = False  # only evaluated and saved
    frozen = train_teacher(cfg, fashion_bundle, tmp_path / "frozen", accelerator)
    assert frozen["steps"] == 0 and not frozen["finetuned"]
    assert (tmp_path / "frozen" / "model" / TEACHER_RECORD).exists()
