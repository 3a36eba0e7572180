"""rkd.data: conversion, checksums, splits, the hf:/imagefolder: sources, transforms and loaders."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

import rkd.data.fashion_mnist as fashion_mnist
from rkd.config import DataConfig
from rkd.data import (
    CHECKSUM_FILE,
    FASHION_MNIST_CLASSES,
    DataError,
    ImageTransform,
    Split,
    augment,
    load_data,
    make_loader,
    random_erase,
    split_indices,
    student_transform,
)
from rkd.run.artifacts import read_json, sha256_file


def _idx_array(path: Path) -> np.ndarray:
    return fashion_mnist.read_idx(path)


def _count_conversions(monkeypatch) -> list:
    calls = []
    original = fashion_mnist._convert_fashion_mnist

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(fashion_mnist, "_convert_fashion_mnist", counting)
    return calls


def _flip_byte(path: Path, offset: int = -100) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


# ----------------------------------------------------------------------------- Fashion-MNIST


def test_idx_conversion_writes_arrow_and_checksums(
    fashion_cfg, fake_fashion_dir, data_cache_dir, fashion_bundle, monkeypatch
):
    calls = _count_conversions(monkeypatch)
    bundle = load_data(fashion_cfg)
    assert calls == [1]
    assert bundle.fingerprint == fashion_bundle.fingerprint  # content-based: the cache location does not matter
    assert {k: len(v) for k, v in bundle.splits.items()} == {"train": 240, "val": 60, "test": 100}
    assert bundle.class_names == FASHION_MNIST_CLASSES and bundle.num_classes == 10
    assert bundle.channels == 1 and bundle.image_shape == (28, 28, 1)
    test = bundle.splits["test"]
    assert test.images.dtype == torch.uint8 and test.labels.dtype == torch.int64
    # test is untouched: identical to the IDX source, in order
    src_images = _idx_array(fake_fashion_dir / "t10k-images-idx3-ubyte.gz")
    src_labels = _idx_array(fake_fashion_dir / "t10k-labels-idx1-ubyte.gz")
    assert torch.equal(test.images[..., 0], torch.from_numpy(src_images.copy()))
    assert torch.equal(test.labels, torch.from_numpy(src_labels.astype(np.int64)))

    converted = data_cache_dir / "fashion-mnist"
    record = read_json(converted / CHECKSUM_FILE)
    assert record["sources"] == {p.name: sha256_file(p) for p in fake_fashion_dir.iterdir()}
    arrow_files = sorted(converted.rglob("*.arrow"))
    assert len(arrow_files) == 2
    assert record["arrow"] == {str(p.relative_to(converted)): sha256_file(p) for p in arrow_files}
    import datasets

    dd = datasets.load_from_disk(str(converted))  # a plain DatasetDict any HF user can open
    assert set(dd) == {"train", "test"} and dd["train"].features["label"].names == FASHION_MNIST_CLASSES
    assert not list(data_cache_dir.glob(".fashion-mnist.*.tmp"))  # the temp dir was renamed away


def test_reload_skips_conversion(fashion_cfg, monkeypatch):
    first = load_data(fashion_cfg)
    calls = _count_conversions(monkeypatch)
    second = load_data(fashion_cfg)
    assert calls == []
    assert second.fingerprint == first.fingerprint
    for name in ("train", "val", "test"):
        assert torch.equal(first.splits[name].images, second.splits[name].images)


@pytest.mark.parametrize("damage", ["arrow", "checksum", "source"])
def test_damage_triggers_rebuild(fashion_cfg, data_cache_dir, fake_fashion_dir, tmp_path, monkeypatch, damage):
    reference = load_data(fashion_cfg)
    converted = data_cache_dir / "fashion-mnist"
    if damage == "arrow":
        _flip_byte(sorted(converted.rglob("*.arrow"))[0])
    elif damage == "checksum":
        path = converted / CHECKSUM_FILE
        path.write_text(path.read_text()[:20])  # truncated
    else:  # the IDX sources changed (e.g. a package update): the conversion is stale
        import shutil

        new_dir = tmp_path / "idx-copy"
        shutil.copytree(fake_fashion_dir, new_dir)
        labels = new_dir / "t10k-labels-idx1-ubyte.gz"
        raw = bytearray(gzip.decompress(labels.read_bytes()))
        raw[-1] = (raw[-1] + 1) % 10
        labels.write_bytes(gzip.compress(bytes(raw)))
        fashion_cfg.fashion_mnist_dir = str(new_dir)
    calls = _count_conversions(monkeypatch)
    rebuilt = load_data(fashion_cfg)
    assert calls == [1]
    if damage == "source":
        assert rebuilt.fingerprint != reference.fingerprint
        assert rebuilt.splits["test"].labels[-1] != reference.splits["test"].labels[-1]
    else:
        assert rebuilt.fingerprint == reference.fingerprint
    assert not [p for p in data_cache_dir.iterdir() if p.name.startswith(".fashion-mnist.") and "stale" in p.name]


def test_missing_idx_names_the_fix(tmp_path):
    cfg = DataConfig(fashion_mnist_dir=str(tmp_path / "nowhere"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError) as info:
        load_data(cfg)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message and "data.fashion_mnist_dir" in message
    assert str(tmp_path / "nowhere") in message


def test_verified_conversion_survives_missing_idx(fashion_cfg, tmp_path):
    reference = load_data(fashion_cfg)
    fashion_cfg.fashion_mnist_dir = str(tmp_path / "removed")
    again = load_data(fashion_cfg)
    assert again.fingerprint == reference.fingerprint and again.notes


def test_bad_idx_file_is_named(tmp_path):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x0c\x03" + b"\x00" * 16))
    with pytest.raises(DataError, match="bad.gz"):
        fashion_mnist.read_idx(bad)


# ----------------------------------------------------------------------------- splits and caps


def test_split_indices_fixed_disjoint_complete():
    kept, carved = split_indices(300, 0.2, seed=3)
    kept2, carved2 = split_indices(300, 0.2, seed=3)
    assert torch.equal(kept, kept2) and torch.equal(carved, carved2)
    assert len(carved) == 60 and len(kept) == 240
    assert set(kept.tolist()).isdisjoint(carved.tolist())
    assert sorted(kept.tolist() + carved.tolist()) == list(range(300))
    assert not torch.equal(carved, split_indices(300, 0.2, seed=4)[1])
    with pytest.raises(DataError, match="nothing would be left"):
        split_indices(3, 0.9, seed=0)


def test_bundle_split_matches_indices_and_seed(fashion_cfg, fake_fashion_dir):
    bundle = load_data(fashion_cfg)
    images = torch.from_numpy(_idx_array(fake_fashion_dir / "train-images-idx3-ubyte.gz").copy())[..., None]
    kept, carved = split_indices(300, 0.2, seed=0)
    assert torch.equal(bundle.splits["train"].images, images[kept])
    assert torch.equal(bundle.splits["val"].images, images[carved])
    fashion_cfg.split_seed = 1
    other = load_data(fashion_cfg)
    assert other.fingerprint != bundle.fingerprint
    assert not torch.equal(other.splits["val"].images, bundle.splits["val"].images)
    assert torch.equal(other.splits["test"].images, bundle.splits["test"].images)


def test_caps_take_seeded_subsets(fashion_cfg):
    full = load_data(fashion_cfg)
    fashion_cfg.max_train, fashion_cfg.max_val, fashion_cfg.max_test = 50, 10, 20
    capped = load_data(fashion_cfg)
    assert {k: len(v) for k, v in capped.splits.items()} == {"train": 50, "val": 10, "test": 20}
    assert capped.fingerprint != full.fingerprint
    again = load_data(fashion_cfg)
    assert again.fingerprint == capped.fingerprint
    # every capped row is a row of the uncapped split
    full_rows = {bytes(img.numpy().tobytes()) for img in full.splits["train"].images}
    assert all(bytes(img.numpy().tobytes()) in full_rows for img in capped.splits["train"].images)
    fashion_cfg.max_test = 1000  # a cap above the size keeps everything
    assert len(load_data(fashion_cfg).splits["test"]) == 100


# ----------------------------------------------------------------------------- hf: and imagefolder:


def _cifar_like(path: Path, with_test: bool = True) -> dict:
    """A tiny CIFAR-100-shaped DatasetDict: img (Image, 32x32 RGB), coarse_label first, then fine_label."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    fine = ["apple", "bee", "cloud", "dog"]
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "coarse_label": datasets.ClassLabel(names=["food", "animal", "sky"]),
            "fine_label": datasets.ClassLabel(names=fine),
        }
    )
    arrays = {}
    parts = {}
    for split, n in (("train", 40), ("test", 12)) if with_test else (("train", 40),):
        pixels = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        labels = np.arange(n) % 4
        arrays[split] = (pixels, labels)
        parts[split] = datasets.Dataset.from_dict(
            {
                "img": [Image.fromarray(p) for p in pixels],
                "coarse_label": (labels % 3).tolist(),
                "fine_label": labels.tolist(),
            },
            features=features,
        )
    datasets.DatasetDict(parts).save_to_disk(str(path))
    return arrays


def test_hf_save_to_disk_detects_columns(tmp_path):
    arrays = _cifar_like(tmp_path / "cifar")
    cfg = DataConfig(
        name=f"hf:{tmp_path / 'cifar'}", cache_dir=str(tmp_path / "cache"), val_fraction=0.25, image_size=32
    )
    bundle = load_data(cfg)
    assert bundle.class_names == ["apple", "bee", "cloud", "dog"]  # fine_label, not coarse_label
    assert bundle.channels == 3 and bundle.image_shape == (32, 32, 3)
    assert {k: len(v) for k, v in bundle.splits.items()} == {"train": 30, "val": 10, "test": 12}
    pixels, labels = arrays["test"]
    assert torch.equal(bundle.splits["test"].images, torch.from_numpy(pixels))  # PNG is lossless
    assert torch.equal(bundle.splits["test"].labels, torch.from_numpy(labels.astype(np.int64)))
    import shutil

    shutil.copytree(tmp_path / "cifar", tmp_path / "moved")
    moved = load_data(DataConfig(name=f"hf:{tmp_path / 'moved'}", cache_dir=str(tmp_path / "cache"), val_fraction=0.25))
    assert moved.fingerprint == bundle.fingerprint
    cfg.label_column = "coarse_label"
    coarse = load_data(cfg)
    assert coarse.class_names == ["food", "animal", "sky"] and coarse.fingerprint != bundle.fingerprint


def test_hf_without_test_split_carves_one(tmp_path):
    _cifar_like(tmp_path / "trainonly", with_test=False)
    cfg = DataConfig(name=f"hf:{tmp_path / 'trainonly'}", cache_dir=str(tmp_path / "cache"), val_fraction=0.25)
    bundle = load_data(cfg, test_fraction=0.1)
    assert {k: len(v) for k, v in bundle.splits.items()} == {"train": 27, "val": 9, "test": 4}
    assert any("carved" in note for note in bundle.notes) and "carved" in bundle.source
    assert load_data(cfg, test_fraction=0.1).fingerprint == bundle.fingerprint


def test_hf_column_errors_list_columns(tmp_path):
    import datasets

    _cifar_like(tmp_path / "cifar")
    cfg = DataConfig(name=f"hf:{tmp_path / 'cifar'}", cache_dir=str(tmp_path / "cache"), image_column="picture")
    with pytest.raises(DataError) as info:
        load_data(cfg)
    assert "data.image_column" in str(info.value) and "'picture'" in str(info.value) and "fine_label" in str(info.value)
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"x": [1, 2], "y": [0, 1]})}).save_to_disk(
        str(tmp_path / "odd")
    )
    with pytest.raises(DataError, match=r"no image column.*x \(Value\), y \(Value\)"):
        load_data(DataConfig(name=f"hf:{tmp_path / 'odd'}", cache_dir=str(tmp_path / "cache")))


def test_hf_array_column_and_plain_labels(tmp_path):
    import datasets

    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(30, 12, 12), dtype=np.uint8)
    features = datasets.Features(
        {"pixel_values": datasets.Array2D(shape=(12, 12), dtype="uint8"), "label": datasets.Value("int64")}
    )
    ds = datasets.Dataset.from_dict({"pixel_values": pixels, "label": (np.arange(30) % 3).tolist()}, features=features)
    ds.save_to_disk(str(tmp_path / "arr"))  # a single Dataset, not a DatasetDict
    bundle = load_data(DataConfig(name=f"hf:{tmp_path / 'arr'}", cache_dir=str(tmp_path / "c"), val_fraction=0.2))
    assert bundle.channels == 1 and bundle.class_names == ["0", "1", "2"]
    assert sum(len(s) for s in bundle.splits.values()) == 30


def test_missing_sources_name_the_fix(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(DataConfig(name=f"hf:{tmp_path / 'absent'}", cache_dir=str(tmp_path / "c")))
    with pytest.raises(DataError, match="hub id") as info:  # HF_HUB_OFFLINE=1: the hub path fails fast, with advice
        load_data(DataConfig(name="hf:no-such-user/no-such-dataset", cache_dir=str(tmp_path / "c")))
    # offline compute nodes: the advice is to set the offline switches and use a cache, not to unset them
    assert "run with HF_HUB_OFFLINE=1" in str(info.value) and "must be unset" not in str(info.value)
    with pytest.raises(DataError, match="one sub-folder per class"):
        load_data(DataConfig(name=f"imagefolder:{tmp_path / 'absent'}", cache_dir=str(tmp_path / "c")))


def _write_png(path: Path, size: tuple[int, int], value: int, mode: str = "RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode=None).save(path)


def test_imagefolder_flat_with_mixed_sizes(tmp_path):
    root = tmp_path / "folder"
    for c, cls in enumerate(["bird", "ant", "cat"]):
        for i in range(6):
            _write_png(root / cls / f"{i}.png", (16 + 4 * (i % 2), 16), 40 * c + i)
    cfg = DataConfig(name=f"imagefolder:{root}", cache_dir=str(tmp_path / "cache"), image_size=16, val_fraction=0.2)
    bundle = load_data(cfg, test_fraction=0.2)
    assert bundle.class_names == ["ant", "bird", "cat"]
    assert bundle.image_shape == (16, 16, 3)
    assert sum(len(s) for s in bundle.splits.values()) == 18
    assert any("resized" in n for n in bundle.notes) and any("carved" in n for n in bundle.notes)


def test_imagefolder_train_test_dirs_grayscale(tmp_path):
    root = tmp_path / "folder"
    for split, n in (("train", 8), ("test", 3)):
        for cls in ("no", "yes"):
            for i in range(n):
                _write_png(root / split / cls / f"{i}.png", (10, 10), 100 if cls == "yes" else 10, mode="L")
    bundle = load_data(DataConfig(name=f"imagefolder:{root}", cache_dir=str(tmp_path / "cache"), val_fraction=0.25))
    assert bundle.class_names == ["no", "yes"] and bundle.channels == 1
    assert {k: len(v) for k, v in bundle.splits.items()} == {"train": 12, "val": 4, "test": 6}
    test = bundle.splits["test"]
    assert torch.equal(test.images[:, 0, 0, 0] == 100, test.labels == 1)


# ----------------------------------------------------------------------------- transforms


def test_image_transform_shapes_and_normalisation():
    pixels = torch.full((2, 28, 28, 1), 255, dtype=torch.uint8)
    pixels[1] = 0
    t = ImageTransform(size=28, channels=1, mean=[0.5], std=[0.5])
    out = t(pixels)
    assert out.shape == (2, 1, 28, 28) and out.dtype == torch.float32
    assert torch.allclose(out[0], torch.ones(1, 28, 28)) and torch.allclose(out[1], -torch.ones(1, 28, 28))
    rgb = ImageTransform(size=56, channels=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))(pixels)
    assert rgb.shape == (2, 3, 56, 56)
    assert torch.allclose(rgb[0, 0], torch.full((56, 56), 2.5)) and torch.allclose(rgb[0, 2], torch.full((56, 56), 3.5))
    gray_in = torch.randint(0, 256, (3, 20, 20, 1), dtype=torch.uint8)
    repeated = ImageTransform(size=20, channels=3, mean=[0.0], std=[1.0])(gray_in)
    assert torch.equal(repeated[:, 0], repeated[:, 1]) and torch.equal(repeated[:, 1], repeated[:, 2])
    color = torch.zeros(1, 4, 4, 3, dtype=torch.uint8)
    color[..., 1] = 255
    assert torch.allclose(ImageTransform(4, 1, [0.0], [1.0])(color), torch.full((1, 1, 4, 4), 0.587))
    down = ImageTransform(size=8, channels=1, mean=[0.0], std=[1.0])(torch.full((1, 32, 32, 1), 51, dtype=torch.uint8))
    assert down.shape == (1, 1, 8, 8) and torch.allclose(down, torch.full_like(down, 0.2))
    assert ImageTransform(8, 1, [0.0], [1.0]).describe() == {"size": 8, "channels": 1, "mean": [0.0], "std": [1.0]}


def test_image_transform_rejects_bad_input():
    with pytest.raises(ValueError, match="channels"):
        ImageTransform(size=28, channels=2, mean=[0.5], std=[0.5])
    with pytest.raises(ValueError, match=r"mean = \[0.5, 0.5\].*1 or 3 values"):
        ImageTransform(size=28, channels=3, mean=[0.5, 0.5], std=[0.5])
    with pytest.raises(ValueError, match="std"):
        ImageTransform(size=28, channels=1, mean=[0.5], std=[0.0])
    with pytest.raises(ValueError, match="uint8"):
        ImageTransform(size=28, channels=1, mean=[0.5], std=[0.5])(torch.zeros(1, 28, 28, 1))


def test_augment_crop_and_flip():
    pixels = torch.randint(0, 256, (16, 28, 28, 1), dtype=torch.uint8)
    a = augment(pixels, torch.Generator().manual_seed(0))
    b = augment(pixels, torch.Generator().manual_seed(0))
    assert a.shape == pixels.shape and a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a, pixels)
    flipped = augment(pixels, torch.Generator().manual_seed(1), padding=0)
    for original, out in zip(pixels, flipped):  # without padding each image is itself or its mirror
        assert torch.equal(out, original) or torch.equal(out, original.flip(1))
    shifted = augment(pixels, torch.Generator().manual_seed(2), padding=4, flip=False)
    assert (shifted == 0).any()  # zero padding shows at the borders of shifted crops


def test_random_erase_one_seeded_rectangle_per_chosen_image():
    pixels = torch.zeros(64, 28, 28, 1, dtype=torch.uint8)
    a = random_erase(pixels, torch.Generator().manual_seed(0), probability=0.5)
    b = random_erase(pixels, torch.Generator().manual_seed(0), probability=0.5)
    assert a.shape == pixels.shape and a.dtype == torch.uint8 and torch.equal(a, b)
    erased = (a > 0).squeeze(-1)
    touched = erased.flatten(1).any(1)
    assert 16 < int(touched.sum()) < 48  # about half the images
    for mask in erased[touched]:  # the noise fills an axis-aligned rectangle of 2..25% of the image
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        height, width = int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1
        assert height * width <= 0.3 * 28 * 28
        assert int(mask.sum()) >= 0.9 * height * width  # noise values of 0 are rare holes
    assert torch.equal(random_erase(pixels, torch.Generator(), probability=0.0), pixels)
    assert (random_erase(pixels, torch.Generator().manual_seed(1), probability=1.0) > 0).flatten(1).any(1).all()
    with pytest.raises(ValueError, match="probability"):
        random_erase(pixels, torch.Generator(), probability=1.5)


def test_student_transform_uses_train_statistics(fashion_bundle):
    cfg = DataConfig(image_size=32)
    t = student_transform(cfg, fashion_bundle)
    train = fashion_bundle.splits["train"].images.float() / 255
    assert t.size == 32 and t.channels == 1
    assert t.mean[0] == pytest.approx(float(train.mean()), abs=1e-5)
    assert t.std[0] == pytest.approx(float(train.std(unbiased=False)), abs=1e-4)
    out = t(fashion_bundle.splits["train"].images)
    assert abs(float(out.mean())) < 0.05


def test_loader_batches_and_seeded_order(fashion_bundle):
    split = fashion_bundle.splits["val"]
    loader = make_loader(split, batch_size=16, shuffle=True, seed=5)
    batch = next(iter(loader))
    assert set(batch) == {"pixels", "label", "index"}
    assert batch["pixels"].shape == (16, 28, 28, 1) and batch["pixels"].dtype == torch.uint8
    assert batch["label"].dtype == torch.int64 and batch["index"].dtype == torch.int64
    assert torch.equal(batch["pixels"], split.images[batch["index"]])
    assert torch.equal(batch["label"], split.labels[batch["index"]])
    again = next(iter(make_loader(split, batch_size=16, shuffle=True, seed=5)))
    assert torch.equal(again["index"], batch["index"])
    ordered = torch.cat([b["index"] for b in make_loader(split, batch_size=16, shuffle=False, seed=0)])
    assert torch.equal(ordered, torch.arange(len(split)))
    assert len(make_loader(split, batch_size=16, shuffle=False, seed=0, drop_last=True)) == len(split) // 16


def test_split_validates_dtypes():
    with pytest.raises(DataError, match="uint8"):
        Split(torch.zeros(2, 4, 4, 1), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(DataError, match="int64"):
        Split(torch.zeros(2, 4, 4, 1, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))
