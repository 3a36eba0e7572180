"""A tiny end-to-end run through the `rkd` command: every stage, skipping, stale handling, outputs."""

import json

import pytest
from clihelp import names_output

from rkd.cli import main
from rkd.config import load_config

TINY = [
    "data.val_fraction=0.2",
    "teacher.embedded_hidden_sizes=[8,16]",
    "teacher.embedded_depths=[1,1]",
    "teacher.embedded_embedding_size=8",
    "teacher.train.epochs=1",
    "teacher.train.batch_size=32",
    "teacher.cache_shard_size=64",
    "student.init_channels=4",
    "student.layers=3",
    "stage1.epochs=1",
    "stage1.batch_size=32",
    "stage1.max_steps=4",
    "codec.d_model=16",
    "codec.heads=2",
    "codec.encoder_depth=1",
    "codec.decoder_depth=1",
    "codec.max_symbols=8",
    "codec.rates=[2,8]",
    "stage2.epochs=1",
    "stage2.batch_size=32",
    "stage2.max_steps=4",
    "eval.snr_step=10",
    "eval.batch_size=50",
    "search.enabled=false",  # the default searches; the tiny runs keep the hand cells (test_search covers the search)
]


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


def test_end_to_end_run_skip_and_rerun(tiny_args, tmp_path, capsys):
    assert main(["run", *tiny_args]) == 0
    run = tmp_path / "runs" / "tiny"
    results = json.loads((run / "eval" / "results.json").read_text())
    summary = results["summary"]
    for key in ("teacher_params", "student_params", "codec_tx_params", "teacher_accuracy", "student_accuracy"):
        assert key in summary
    assert summary["n_test"] == 100
    records = [r for r in results["records"] if r["method"] == "rkd-sc"]
    # 4 channels x SNRs {-10, 0, 10, 20} x k {2, 8}
    assert len(records) == 4 * 4 * 2
    for r in records:
        assert set(r) >= {"method", "channel", "csi", "snr_db", "channel_uses", "accuracy", "n_test"}
        assert 0.0 <= r["accuracy"] <= 1.0 and r["n_test"] == 100
    assert {r["channel_label"] for r in records} == {"awgn", "rayleigh-csi", "rayleigh-pilot1", "rician-k4-csi"}
    for name in ("results.csv", "report.md", "accuracy_vs_snr.png", "accuracy_vs_snr_awgn.png"):
        assert (run / "eval" / name).stat().st_size > 0
    assert "teacher" in (run / "eval" / "report.md").read_text()
    for stage in ("teacher", "cache", "stage1", "stage2", "eval"):
        assert json.loads((run / stage / "stage.json").read_text())["hash"]
    assert (run / "teacher" / "model" / "config.json").exists()  # save_pretrained layout
    written = [p.name + "/" if p.is_dir() else p.name for p in run.iterdir()] + [p.name for p in run.glob("eval/*")]
    assert not [p for p in written if not names_output("run", p)], "`rkd run --help` should name what it writes"
    capsys.readouterr()

    # same config again: every stage is skipped
    assert main(["run", *tiny_args]) == 0
    out = capsys.readouterr().out
    assert out.count("done for this config, skipping") == 5

    # a stage-2 change reruns stage 2 and eval only; the old stage 2 output is kept aside
    assert main(["run", *tiny_args, "stage2.lr=0.0005"]) == 0
    out = capsys.readouterr().out
    assert out.count("skipping") == 3
    assert list(run.glob("stage2.stale-*")) and list(run.glob("eval.stale-*"))


def test_bad_config_exits_with_clear_message(tiny_args, capsys):
    assert main(["run", *tiny_args, "codec.rates=[8,99]"]) == 2
    err = capsys.readouterr().err
    assert "codec.rates" in err and "max_symbols" in err


def test_missing_dataset_names_the_fix(tmp_path):
    from rkd.data import load_data

    cfg = load_config(None, [f"data.fashion_mnist_dir={tmp_path / 'nowhere'}", f"data.cache_dir={tmp_path / 'c'}"])
    with pytest.raises(Exception) as info:
        load_data(cfg.data)
    assert "dataset-fashion-mnist" in str(info.value)


def test_corrupt_cache_shard_is_rebuilt_not_used(tiny_args, tmp_path, capsys):
    assert main(["run", *tiny_args]) == 0
    run = tmp_path / "runs" / "tiny"
    shard = sorted((run / "cache").glob("train-*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    # a new evaluation grid makes eval rerun, which reads the cache: the damage is found and repaired
    assert main(["run", *tiny_args, "eval.snr_step=15"]) == 0
    out = capsys.readouterr().out
    assert "teacher cache is not usable" in out and shard.name in out
    from rkd.teacher.cache import verify_cache

    verify_cache(run / "cache")  # repaired: raises if anything is still wrong
