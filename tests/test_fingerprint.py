"""Stage hashes follow the content of the files a config points to, not their paths."""

import hashlib
import json
import shutil
import time

import pytest
from test_pipeline import TINY

from rkd.config import load_config
from rkd.nas.genotype import DEFAULT, genotype_to_dict
from rkd.run.fingerprint import file_digest, tree_digest
from rkd.run.hashing import stage_hashes


def hashes(*overrides):
    return stage_hashes(load_config(None, list(overrides)))


def _touch_later(path, text):
    """Rewrite a file so that its mtime moves on (the per-process digest cache keys on it)."""
    time.sleep(0.01)
    path.write_text(text)


def test_file_digest_streams_and_follows_changes(tmp_path):
    big = tmp_path / "big.bin"
    data = bytes(range(256)) * 9000  # > 2 blocks of 1 MiB
    big.write_bytes(data)
    assert file_digest(big) == hashlib.sha256(data).hexdigest()
    _touch_later(big, "changed")
    assert file_digest(big) == hashlib.sha256(b"changed").hexdigest()


def test_genotype_file_by_content(tmp_path):
    cells = genotype_to_dict(DEFAULT)
    first = tmp_path / "a" / "cells.json"
    first.parent.mkdir()
    first.write_text(json.dumps(cells))
    base = hashes(f"student.genotype={first}")
    moved = tmp_path / "elsewhere" / "renamed.json"
    moved.parent.mkdir()
    shutil.copy(first, moved)
    assert hashes(f"student.genotype={moved}") == base  # moved but identical: every stage a cache hit
    cells["normal"][0][0] = "skip_connect" if cells["normal"][0][0] != "skip_connect" else "max_pool_3x3"
    _touch_later(first, json.dumps(cells))
    edited = hashes(f"student.genotype={first}")
    assert edited["teacher"] == base["teacher"] and edited["cache"] == base["cache"]
    assert all(edited[s] != base[s] for s in ("stage1", "stage2", "eval"))
    assert hashes("student.genotype=default") != base  # a packaged name is hashed by name


def _teacher_dir(path, weights=b"\x00" * 64):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "resnet", "num_labels": 10}))
    (path / "model.safetensors").write_bytes(weights)
    return path


def test_teacher_directory_by_content(tmp_path):
    first = _teacher_dir(tmp_path / "t1")
    base = hashes(f"teacher.source={first}")
    assert hashes(f"teacher.source={_teacher_dir(tmp_path / 'moved' / 't2')}") == base
    (first / ".DS_Store").write_bytes(b"junk")  # hidden files are not the model
    (first / "checkpoint-5").mkdir()  # nor a Trainer's sub-folders
    (first / "checkpoint-5" / "model.safetensors").write_bytes(b"1")
    assert hashes(f"teacher.source={first}") == base
    (first / "model.safetensors").write_bytes(b"\x01" * 64)
    changed = hashes(f"teacher.source={first}")
    assert all(changed[s] != base[s] for s in ("teacher", "cache", "stage1", "stage2", "eval"))
    _touch_later(first / "model.safetensors", "\x00" * 64)
    (first / "config.json").write_text(json.dumps({"model_type": "resnet", "num_labels": 11}))
    assert hashes(f"teacher.source={first}")["teacher"] != base["teacher"]


def _imagefolder(root):
    for cls, payload in (("zéro", b"png-0"), ("class seven", b"png-7")):
        (root / cls).mkdir(parents=True)
        (root / cls / "a.png").write_bytes(payload)
    return root


def test_imagefolder_by_content(tmp_path):
    first = _imagefolder(tmp_path / "one")
    base = hashes(f"data.name=imagefolder:{first}")
    assert hashes(f"data.name=imagefolder:{_imagefolder(tmp_path / 'two' / 'copy')}") == base
    (first / "zéro" / "b.png").write_bytes(b"png-new")
    added = hashes(f"data.name=imagefolder:{first}")
    assert added["teacher"] != base["teacher"] and added["eval"] != base["eval"]
    (first / "zéro" / "b.png").unlink()
    assert hashes(f"data.name=imagefolder:{first}") == base
    (first / "class seven").rename(first / "seven")  # a class folder's name is a label: content
    assert hashes(f"data.name=imagefolder:{first}")["teacher"] != base["teacher"]


def test_save_to_disk_dataset_by_content(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"image": [[1, 2], [3, 4]], "label": [0, 1]})
    ds.save_to_disk(str(tmp_path / "d1"))
    base = hashes(f"data.name=hf:{tmp_path / 'd1'}")
    shutil.copytree(tmp_path / "d1", tmp_path / "moved" / "d2")
    assert hashes(f"data.name=hf:{tmp_path / 'moved' / 'd2'}") == base
    shutil.rmtree(tmp_path / "d1")
    datasets.Dataset.from_dict({"image": [[1, 2], [3, 5]], "label": [0, 1]}).save_to_disk(str(tmp_path / "d1"))
    assert hashes(f"data.name=hf:{tmp_path / 'd1'}")["teacher"] != base["teacher"]
    assert hashes("data.name=hf:some-org/some-dataset") != base  # a hub id stays a name


def test_fashion_mnist_files_and_cache_dir(tmp_path, fake_fashion_dir):
    base = hashes(f"data.fashion_mnist_dir={fake_fashion_dir}", f"data.cache_dir={tmp_path / 'c1'}")
    copy = shutil.copytree(fake_fashion_dir, tmp_path / "copy")
    assert hashes(f"data.fashion_mnist_dir={copy}", f"data.cache_dir={tmp_path / 'c2'}") == base
    (copy / "t10k-labels-idx1-ubyte.gz").write_bytes(b"other labels")
    assert hashes(f"data.fashion_mnist_dir={copy}")["teacher"] != base["teacher"]
    assert tree_digest(copy) != tree_digest(fake_fashion_dir)


def test_edited_genotype_retrains_stage1(fake_fashion_dir, tmp_path, capsys):
    """The case fingerprints exist for: editing the genotype JSON between two runs reruns stage 1, not the teacher."""
    from rkd.cli import main

    cells = genotype_to_dict(DEFAULT)
    path = tmp_path / "cells.json"
    path.write_text(json.dumps(cells))
    args = [
        "--runs-dir",
        str(tmp_path / "runs"),
        "--name",
        "g",
        f"data.fashion_mnist_dir={fake_fashion_dir}",
        f"data.cache_dir={tmp_path / 'datasets'}",
        f"student.genotype={path}",
        *TINY,
        "stage2.max_steps=1",
        "teacher.train.max_steps=2",
    ]
    assert main(["distill", *args]) == 0
    capsys.readouterr()
    moved = tmp_path / "moved.json"
    shutil.copy(path, moved)
    assert main(["distill", *args, f"student.genotype={moved}"]) == 0
    assert capsys.readouterr().out.count("done for this config, skipping") == 4  # teacher, cache, stage1, stage2
    cells["normal"][0][0] = "skip_connect" if cells["normal"][0][0] != "skip_connect" else "max_pool_3x3"
    _touch_later(path, json.dumps(cells))
    assert main(["distill", *args]) == 0
    out = capsys.readouterr().out
    print(out)
    assert "[rkd] stage1: config or input files changed, previous output moved to" in out
    assert "[rkd] teacher: done for this config, skipping" in out and "[rkd] stage1: running" in out
    assert list((tmp_path / "runs" / "g").glob("stage1.stale-*"))
