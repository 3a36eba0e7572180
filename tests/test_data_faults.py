"""Faulty datasets: each fault is either handled as documented (docs/usage.md, "Data faults") or refused
with a DataError that names the split, row or file and what to do."""

import numpy as np
import pytest
import torch

from rkd.config import DataConfig
from rkd.data import DataError, ImageTransform, load_data


def _png(path, size, mode="L", value=50):
    from PIL import Image

    shape = {"L": (size[1], size[0]), "RGB": (size[1], size[0], 3), "RGBA": (size[1], size[0], 4)}[mode]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)


def _folder(root, classes=("a", "b"), per_class=6, size=(12, 12), mode="L"):
    for c, name in enumerate(classes):
        for i in range(per_class):
            _png(root / name / f"{i}.png", size, mode, value=40 * c + i)
    return root


def _cfg(tmp_path, name, **kw):
    return DataConfig(name=name, cache_dir=str(tmp_path / "cache"), **kw)


def _images(n, size=8):
    from PIL import Image

    return [Image.fromarray(np.full((size, size), i, dtype=np.uint8)) for i in range(n)]


def _features(label="class"):
    import datasets

    labels = datasets.ClassLabel(names=["x", "y"]) if label == "class" else datasets.Value("int64")
    return datasets.Features({"image": datasets.Image(), "label": labels})


def test_unreadable_image_file_is_named(tmp_path):
    root = _folder(tmp_path / "f")
    (root / "a" / "broken.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(DataError, match=r"broken\.png.*not a readable image.*remove or replace it"):
        load_data(_cfg(tmp_path, f"imagefolder:{root}"))


def test_mixed_modes_and_sizes_are_converted(tmp_path):
    """Documented handling: RGBA -> RGB, grayscale promoted when any image is colour, sizes resized."""
    root = tmp_path / "f"
    _folder(root, classes=("a",), mode="RGBA", size=(12, 12))
    _folder(root, classes=("b",), mode="L", size=(20, 16))
    bundle = load_data(_cfg(tmp_path, f"imagefolder:{root}", image_size=12), test_fraction=0.2)
    assert bundle.image_shape == (12, 12, 3) and bundle.channels == 3
    assert any("resized to 12x12" in note for note in bundle.notes)


def test_four_channel_arrays_are_refused(tmp_path):
    import datasets

    features = datasets.Features(
        {"pixel_values": datasets.Array3D(shape=(8, 8, 4), dtype="uint8"), "label": datasets.Value("int64")}
    )
    datasets.Dataset.from_dict(
        {"pixel_values": np.zeros((20, 8, 8, 4), np.uint8), "label": [0, 1] * 10}, features=features
    ).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DataError, match="images have 4 channels; rkd supports 1 .* or 3"):
        load_data(_cfg(tmp_path, f"hf:{tmp_path / 'd'}"))


def test_non_finite_float_pixels_are_refused(tmp_path):
    import datasets

    pixels = np.random.default_rng(0).random((20, 8, 8)).astype(np.float32)
    pixels[3, 2, 2] = np.inf
    features = datasets.Features(
        {"pixel_values": datasets.Array2D(shape=(8, 8), dtype="float32"), "label": datasets.Value("int64")}
    )
    datasets.Dataset.from_dict({"pixel_values": pixels, "label": [0, 1] * 10}, features=features).save_to_disk(
        str(tmp_path / "d")
    )
    with pytest.raises(DataError, match=r"split 'train': row 3 has NaN or Inf"):
        load_data(_cfg(tmp_path, f"hf:{tmp_path / 'd'}"))


def test_labels_out_of_range_are_refused(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"image": _images(18), "label": [0, 1, -1] * 6}, features=_features("int")).save_to_disk(
        str(tmp_path / "d")
    )
    with pytest.raises(DataError, match=r"labels span \[-1, 1\].*expected labels in \[0, 1\]"):
        load_data(_cfg(tmp_path, f"hf:{tmp_path / 'd'}"))


def test_test_only_classes_are_warned_and_recorded(tmp_path):
    import datasets

    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"image": _images(18), "label": [0, 1] * 9}, features=_features("int")),
            "test": datasets.Dataset.from_dict(
                {"image": _images(6), "label": [0, 1, 5] * 2}, features=_features("int")
            ),
        }
    ).save_to_disk(str(tmp_path / "d"))
    with pytest.warns(UserWarning, match=r"appear in test but not in train \(5\)"):
        bundle = load_data(_cfg(tmp_path, f"hf:{tmp_path / 'd'}"))
    assert bundle.num_classes == 6 and "cannot be learnt" in bundle.source


@pytest.mark.parametrize("empty", ["train", "test"])
def test_empty_splits(tmp_path, empty):
    import datasets

    from rkd.data.hf import bundle_from_hf

    sizes = {"train": 18, "test": 6, empty: 0}
    parts = {
        name: datasets.Dataset.from_dict(
            {"image": _images(n), "label": [i % 2 for i in range(n)]}, features=_features()
        )
        for name, n in sizes.items()
    }
    cfg = _cfg(tmp_path, "hf:in-memory")
    if empty == "train":
        with pytest.raises(DataError, match="split 'train' is empty"):
            bundle_from_hf(cfg, datasets.DatasetDict(parts), "hf:in-memory", 0.2)
    else:  # an empty test split is treated as missing: test is carved from train
        bundle = bundle_from_hf(cfg, datasets.DatasetDict(parts), "hf:in-memory", 0.2)
        assert "split 'test' is empty; not used as test" in bundle.notes and len(bundle.splits["test"]) == 4
    # datasets itself cannot reload a save_to_disk directory with an empty split: say so, with the fix
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DataError, match="drop empty splits first"):
        load_data(_cfg(tmp_path, f"hf:{tmp_path / 'd'}"))


def test_too_few_images_or_classes(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"image": _images(2), "label": [0, 1]}, features=_features()).save_to_disk(
        str(tmp_path / "two")
    )
    with pytest.raises(DataError, match=r"data\.val_fraction.*nothing would be left"):
        load_data(_cfg(tmp_path, f"hf:{tmp_path / 'two'}"))
    one = _folder(tmp_path / "one", classes=("only",))
    with pytest.raises(DataError, match=r"1 class folder\(s\) with files \['only'\].*at least 2 classes"):
        load_data(_cfg(tmp_path, f"imagefolder:{one}"))
    datasets.Dataset.from_dict({"image": _images(10), "label": [0] * 10}, features=_features("int")).save_to_disk(
        str(tmp_path / "mono")
    )
    with pytest.raises(DataError, match="classification needs at least 2"):
        load_data(_cfg(tmp_path, f"hf:{tmp_path / 'mono'}"))


def test_caps_that_empty_a_split_are_refused_by_config():
    from rkd.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="data.max_val"):
        load_config(None, ["data.max_val=0"])


def test_empty_class_folder_is_ignored(tmp_path):
    """Documented handling: a class folder without files is not a class."""
    root = _folder(tmp_path / "f")
    (root / "empty").mkdir()
    bundle = load_data(_cfg(tmp_path, f"imagefolder:{root}"), test_fraction=0.2)
    assert bundle.class_names == ["a", "b"]


def test_wrong_batch_shapes_at_the_model_input_are_refused():
    transform = ImageTransform(size=8, channels=1, mean=[0.5], std=[0.25])
    assert transform(torch.zeros(2, 20, 12, 3, dtype=torch.uint8)).shape == (2, 1, 8, 8)  # resized, luminance
    for bad in (
        torch.zeros(2, 8, 8, 4, dtype=torch.uint8),
        torch.zeros(2, 8, 8, 1),
        torch.zeros(8, 8, 1, dtype=torch.uint8),
    ):
        with pytest.raises(ValueError, match=r"uint8 \[B, H, W, C\] batch with C in \(1, 3\)"):
            transform(bad)
