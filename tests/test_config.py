"""Config loading, overrides, validation messages and stage hashing."""

from pathlib import Path

import pytest

from rkd.config import ConfigError, load_config
from rkd.run.hashing import stage_hashes


def test_packaged_configs_validate():
    for name in ("default", "paper-cifar100-clip", "paper-cifar100-vit"):
        cfg = load_config(name)
        assert cfg.codec.rates and cfg.eval.channels
    quick = load_config(["default", "quick"])
    assert quick.data.max_train == 3000 and quick.name == "quick"
    # the paper-scale configs keep the real hub paths
    assert load_config("paper-cifar100-clip").teacher.source == "openai/clip-vit-base-patch32"
    assert load_config("paper-cifar100-clip").data.name == "hf:uoft-cs/cifar100"


def test_overrides_are_typed():
    cfg = load_config(None, ["stage1.epochs=2", "codec.rates=[8,16]", "channel.csi=none", "data.max_train=null"])
    assert cfg.stage1.epochs == 2 and cfg.codec.rates == [8, 16] and cfg.channel.csi == "none"
    assert cfg.data.max_train is None
    assert load_config(None, ["collective_timeout_minutes=null"]).collective_timeout_minutes is None
    assert load_config(None, ["collective_timeout_minutes=90"]).collective_timeout_minutes == 90.0


@pytest.mark.parametrize(
    "override, field, accepted",
    [
        (["stage1.epochs=-1"], "stage1.epochs", ">= 0"),
        (["stage1.lr=0"], "stage1.lr", "> 0"),
        (["codec.rates=[8,100]"], "codec.rates", "codec.max_symbols"),
        (["codec.d_model=30"], "codec.d_model", "multiple of codec.heads"),
        (["channel.channels=[awgn,wifi]"], "channel.channels", "awgn"),
        (["channel.snr_min=30"], "channel.snr_min", "below channel.snr_max"),
        (["data.name=mnist"], "data.name", "fashion-mnist"),
        (["data.val_fraction=1.5"], "data.val_fraction", "between 0 and 1"),
        (["teacher.kind=gpt"], "teacher.kind", "clip"),
        (["stage2.optimizer=lion"], "stage2.optimizer", "adamw"),
        (["stage1.epochs=many"], "stage1.epochs", "an integer"),
        (["student.stem_stride=3"], "student.stem_stride", "1, 2 or 4"),
        (["eval.rates=[12]"], "eval.rates", "subset of codec.rates"),
        (["collective_timeout_minutes=0"], "collective_timeout_minutes", "> 0, or null"),
    ],
)
def test_bad_values_name_field_and_accepted(override, field, accepted):
    with pytest.raises(ConfigError) as info:
        load_config(None, override)
    message = str(info.value)
    assert field in message and accepted in message


def test_unknown_keys_are_rejected_with_the_accepted_list(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['epoch'\] in section 'stage1'.*epochs"):
        load_config(None, ["stage1.epoch=3"])
    path = tmp_path / "bad.yaml"
    path.write_text("stage2:\n  lr: 0.001\nstudnet: {layers: 3}\n")
    with pytest.raises(ConfigError, match="studnet"):
        load_config(path)
    path.write_text("- just a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="available"):
        load_config("no-such-packaged-config")


def test_stage_hashes_chain_downstream():
    base = stage_hashes(load_config(None))
    changed = stage_hashes(load_config(None, ["stage1.epochs=1"]))
    assert base["teacher"] == changed["teacher"] and base["cache"] == changed["cache"]
    assert (
        base["stage1"] != changed["stage1"] and base["stage2"] != changed["stage2"] and base["eval"] != changed["eval"]
    )
    only_eval = stage_hashes(load_config(None, ["eval.snr_step=5"]))
    assert only_eval["stage2"] == base["stage2"] and only_eval["eval"] != base["eval"]


def test_eval_pilots_leave_data_uses():
    # a packet of k uses with k pilots carries no data: the coded digital schemes and the codec would send nothing
    with pytest.raises(ConfigError, match=r"eval.channels\[1\].pilots.*smallest evaluated k \(4\)"):
        load_config(None, ['eval.channels=[{"name": "awgn"}, {"name": "rayleigh", "csi": "pilot", "pilots": 4}]'])
    assert load_config(None, ['eval.channels=[{"name": "rayleigh", "csi": "pilot", "pilots": 3}]'])


def test_yaml_through_libyaml_reads_and_writes_what_pyyamls_safe_functions_do(tmp_path):
    """Configs are read and written through libyaml where PyYAML has it (the pure-Python parser and emitter
    were most of a comparison's config time); every packaged config and a saved run config come out the same."""
    import yaml

    import rkd
    from rkd.config.loading import save_config, to_dict
    from rkd.config.yaml_io import dump_yaml, load_yaml

    assert yaml.__with_libyaml__  # the wheel CI installs: otherwise this test reads the fallback twice
    packaged = sorted((Path(rkd.__file__).parent / "configs").glob("*.yaml"))
    assert packaged
    for path in packaged:
        assert load_yaml(path.read_text()) == yaml.safe_load(path.read_text()), path
    cfg = load_config(None, ["codec.rates=[2, 8]", "name=caf\u00e9"])
    saved = tmp_path / "config.yaml"
    save_config(cfg, saved)
    assert (
        saved.read_text() == yaml.safe_dump(to_dict(cfg), sort_keys=False) == dump_yaml(to_dict(cfg), sort_keys=False)
    )
    assert load_config([str(saved)], []) == cfg
    with pytest.raises(yaml.YAMLError):
        load_yaml("a: [1, 2")
