"""The pydantic-validated schema keeps rkd's coercion rules and error wording; the search's loss is a section."""

import dataclasses

import pytest

from rkd.channels import CHANNEL_NAMES
from rkd.config import ConfigError, RunConfig, SearchConfig, TrainConfig, config_hash, load_config
from rkd.nas.ops import OPS, PRIMITIVES


@pytest.mark.parametrize(
    "override, attr, expected",
    [
        ("mixed_precision=no", ("mixed_precision",), "no"),  # YAML reads a bare `no` as False: it stays the word
        ("teacher.finetune=no", ("teacher", "finetune"), False),
        ("stage1.epochs=3.0", ("stage1", "epochs"), 3),
        ("stage1.lr='1e-3'", ("stage1", "lr"), 0.001),
        ("stage1.lr=1", ("stage1", "lr"), 1.0),
        ("name=5", ("name",), "5"),
        ("data.max_train=none", ("data", "max_train"), None),
        ("codec.rates='[8, 16]'", ("codec", "rates"), [8, 16]),
        ("search.sweep_weights=[0, 0.5]", ("search", "sweep_weights"), [0, 0.5]),
    ],
)
def test_values_are_coerced_as_before(override, attr, expected):
    value = load_config(None, [override])
    for name in attr:
        value = getattr(value, name)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    "override, message",
    [
        ("stage1.epochs=true", "config field 'stage1.epochs' = True is invalid: expected an integer"),
        ("stage1.lr=.inf", "config field 'stage1.lr' = inf is invalid: expected a finite number"),
        ("teacher.finetune=2", "'teacher.finetune' = 2 is invalid: expected true or false"),
        ("codec.rates=[8,x]", "config field 'codec.rates[1]' = 'x' is invalid: expected an integer"),
        ("stage1=5", "config field 'stage1' = 5 is invalid: expected a mapping of TrainConfig fields"),
        ("channel.channels=[wifi]", "'channel.channels[0]' = 'wifi' is invalid: expected one of 'awgn'"),
        ("channel.channels=[]", f"expected a non-empty list drawn from {CHANNEL_NAMES}"),
        (
            "baselines.methods=[digital,digital]",
            "'baselines.methods' = ['digital', 'digital'] is invalid: expected distinct",
        ),
        (
            "search.loss.feature_loss=l1",
            "'search.loss.feature_loss' = 'l1' is invalid: expected one of 'cosine' or 'mse'",
        ),
    ],
)
def test_errors_name_the_dotted_field_the_value_and_what_is_accepted(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["stage1.lr=0", "codec.dropout=2", "search.train.epochs=-1"])
    message = str(info.value)
    assert "'stage1.lr'" in message and "'codec.dropout'" in message and "'search.train.epochs'" in message


def test_search_loss_is_a_section_and_the_old_spelling_says_where_it_went(tmp_path):
    cfg = load_config(None, ["search.loss.logit_kd=0", "search.loss.temperature=2"])
    assert (cfg.search.loss.task, cfg.search.loss.logit_kd, cfg.search.loss.temperature) == (1.0, 0.0, 2.0)
    assert cfg.search.loss == dataclasses.replace(cfg.loss, logit_kd=0.0, temperature=2.0)
    with pytest.raises(ConfigError, match=r"'search.logit_kd' moved to 'search.loss.logit_kd'.*search.loss.logit_kd=0"):
        load_config(None, ["search.logit_kd=0"])
    path = tmp_path / "old.yaml"
    path.write_text("search:\n  enabled: true\n  feature_loss: mse\n")
    with pytest.raises(ConfigError, match="moved to 'search.loss.feature_loss'"):
        load_config(path)
    with pytest.raises(ConfigError, match="search.loss.*accuracy term"):
        load_config(None, ["search.loss.task=0", "search.loss.logit_kd=0", "search.loss.feature_kd=0"])
    assert config_hash(load_config(None).search) != config_hash(cfg.search)


def test_names_come_from_their_own_modules(monkeypatch):
    assert RunConfig().channel.channels == list(CHANNEL_NAMES) and SearchConfig().primitives == PRIMITIVES
    monkeypatch.setitem(OPS, "cheap_conv", OPS["sep_conv_3x3"])  # an op registered at run time is accepted
    assert load_config(None, ["search.primitives=[cheap_conv,skip_connect]"]).search.primitives[0] == "cheap_conv"
    monkeypatch.delitem(OPS, "cheap_conv")
    with pytest.raises(ConfigError, match="search.primitives"):
        load_config(None, ["search.primitives=[cheap_conv,skip_connect]"])


def test_sections_stay_plain_dataclasses():
    cfg = load_config(None)
    brief = dataclasses.replace(cfg, stage1=dataclasses.replace(cfg.stage1, epochs=1))
    assert brief.stage1.epochs == 1 and cfg.stage1.epochs == 6
    assert TrainConfig(epochs=-1).epochs == -1  # code may build sections directly; only loading validates
