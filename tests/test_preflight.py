"""Pre-flight checks (rkd.run.preflight): a teacher that cannot take its input size, and a bad genotype,
are refused in seconds, before any stage trains."""

import json
from pathlib import Path

import pytest
from test_pipeline import TINY

from rkd.cli import main
from rkd.config import ConfigError, TeacherConfig
from rkd.nas.genotype import GENOTYPES, GenotypeError, genotype_to_dict
from rkd.run.preflight import check_genotype, probe_teacher


def _save(config, path):
    from transformers import AutoModelForImageClassification

    from rkd.teacher.hub import square_processor

    AutoModelForImageClassification.from_config(config).save_pretrained(str(path))
    square_processor(config.image_size, [0.5] * 3, [0.5] * 3).save_pretrained(str(path))  # a pretrained teacher has one
    return path


@pytest.fixture(scope="module")
def tiny_convnext(tmp_path_factory):
    from transformers import ConvNextConfig

    config = ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], image_size=28, num_labels=10)
    return _save(config, tmp_path_factory.mktemp("tiny-convnext"))


@pytest.fixture(scope="module")
def tiny_swin(tmp_path_factory):
    from transformers import SwinConfig

    config = SwinConfig(
        image_size=28, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=7, num_labels=10
    )
    return _save(config, tmp_path_factory.mktemp("tiny-swin"))


def _refusal_at_28_px(source: Path, model_type: str) -> str:
    """The probe's one-line refusal of ``source`` at 28 px, checked to name the field, the model and the size."""
    with pytest.raises(ConfigError) as info:
        probe_teacher(TeacherConfig(source=str(source), image_size=28))
    message = str(info.value)
    assert "\n" not in message
    assert "teacher.image_size = 28" in message and f"'{model_type}'" in message and "28x28" in message
    return message


def test_convnext_at_28_px_is_refused_with_the_sizes_that_work(tiny_convnext):
    # its stride-4 stem and three stride-2 downsamplings leave 28 px at 1x1 before a 2x2 conv
    message = _refusal_at_28_px(tiny_convnext, "convnext")
    assert "sizes that passed the same probe: 32, 64, 224" in message


def test_swin_at_28_px_is_refused_naming_the_field(tiny_swin):
    message = _refusal_at_28_px(tiny_swin, "swin")
    assert "passed" in message  # which of the alternative sizes passed, or that none did


def test_teachers_that_fit_pass_the_probe(tiny_convnext):
    probe_teacher(TeacherConfig(source=str(tiny_convnext), image_size=32))
    probe_teacher(TeacherConfig(embedded_hidden_sizes=[8, 16], embedded_depths=[1, 1], embedded_embedding_size=8))


def test_an_unknown_op_names_the_field_file_and_edge(tmp_path):
    data = genotype_to_dict(GENOTYPES["default"])
    data["normal"][3][0] = "warp_conv_9x9"
    path = tmp_path / "cells.json"
    path.write_text(json.dumps(data))
    with pytest.raises(GenotypeError) as info:
        check_genotype(str(path))
    assert "student.genotype" in str(info.value) and str(path) in str(info.value)
    assert "normal[3]" in str(info.value) and "warp_conv_9x9" in str(info.value)
    assert check_genotype("default") == GENOTYPES["default"]


def test_a_bad_genotype_stops_the_run_before_the_teacher_trains(fake_fashion_dir, tmp_path, capsys, monkeypatch):
    import rkd.stages.teacher

    def no_training(*args, **kwargs):
        raise AssertionError("the teacher trained before the genotype was checked")

    monkeypatch.setattr(rkd.stages.teacher, "train_teacher", no_training)
    data = genotype_to_dict(GENOTYPES["default"])
    data["reduce"][0][1] = 7  # node 2 reads inputs 0 and 1 only
    path = tmp_path / "cells.json"
    path.write_text(json.dumps(data))
    args = [
        "--runs-dir",
        str(tmp_path / "runs"),
        "--name",
        "bad",
        f"data.fashion_mnist_dir={fake_fashion_dir}",
        f"data.cache_dir={tmp_path / 'datasets'}",
        *TINY,
        f"student.genotype={path}",
        "search.enabled=false",
    ]
    for command in ("run", "distill"):
        assert main([command, *args]) == 2
        err = capsys.readouterr().err
        assert "student.genotype" in err and str(path) in err and "reduce[0]" in err
    assert not (tmp_path / "runs" / "bad" / "teacher").exists()


def test_a_teacher_that_cannot_take_its_size_stops_the_run_before_training(
    tiny_convnext, fake_fashion_dir, tmp_path, capsys
):
    args = [
        "--runs-dir",
        str(tmp_path / "runs"),
        "--name",
        "cnx",
        f"data.fashion_mnist_dir={fake_fashion_dir}",
        f"data.cache_dir={tmp_path / 'datasets'}",
        *TINY,
        f"teacher.source={tiny_convnext}",
        "teacher.image_size=28",
    ]
    assert main(["teacher", *args]) == 2
    err = capsys.readouterr().err
    assert "teacher.image_size = 28" in err and "convnext" in err
    assert not (tmp_path / "runs" / "cnx" / "teacher").exists()
