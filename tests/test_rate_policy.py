"""The rate policy: per channel and SNR, the fewest channel uses within a margin of the best."""

import json

import pytest

from rkd.evaluation.rate_policy import rate_policy, write_rate_policy


def rec(label, snr, k, acc, method="rkd-sc"):
    return {
        "method": method,
        "channel": label.split("-")[0],
        "csi": "perfect",
        "k_factor": None,
        "channel_label": label,
        "snr_db": snr,
        "channel_uses": k,
        "accuracy": acc,
        "n_test": 100,
    }


RECORDS = [
    rec("awgn", 0.0, 4, 0.50),
    rec("awgn", 0.0, 8, 0.70),
    rec("awgn", 0.0, 16, 0.795),
    rec("awgn", 0.0, 32, 0.80),
    rec("awgn", 20.0, 4, 0.89),
    rec("awgn", 20.0, 8, 0.90),
    rec("awgn", 20.0, 16, 0.90),
    rec("awgn", 20.0, 32, 0.90),
    rec("rayleigh-csi", 0.0, 4, 0.40),
    rec("rayleigh-csi", 0.0, 8, 0.40),
    rec("awgn", 0.0, 4, 0.99, method="other"),
    {
        "method": "teacher",
        "channel": "clean",
        "csi": "n/a",
        "k_factor": None,
        "channel_label": "clean",
        "snr_db": None,
        "channel_uses": None,
        "accuracy": 0.95,
        "n_test": 100,
    },
]


def test_fewest_k_within_margin_of_the_best():
    policy = rate_policy(RECORDS, margin=0.01, method="rkd-sc")
    assert set(policy) == {"awgn", "rayleigh-csi"}
    awgn = {row["snr_db"]: row for row in policy["awgn"]}
    assert awgn[0.0]["k"] == 16 and awgn[0.0]["best_k"] == 32 and awgn[0.0]["best_accuracy"] == 0.80
    assert awgn[20.0]["k"] == 4  # 0.89 is within 0.01 of 0.90
    assert [row["snr_db"] for row in policy["awgn"]] == [0.0, 20.0]
    # a tie in the best accuracy goes to the smaller k; margin 0 demands the best itself
    assert policy["rayleigh-csi"][0]["k"] == 4 and policy["rayleigh-csi"][0]["best_k"] == 4
    strict = {row["snr_db"]: row["k"] for row in rate_policy(RECORDS, margin=0.0, method="rkd-sc")["awgn"]}
    assert strict == {0.0: 32, 20.0: 8}
    loose = {row["snr_db"]: row["k"] for row in rate_policy(RECORDS, margin=0.5, method="rkd-sc")["awgn"]}
    assert loose == {0.0: 4, 20.0: 4}


def test_method_filter_and_file(tmp_path):
    assert rate_policy(RECORDS, 0.01, method="other")["awgn"][0]["k"] == 4
    data = write_rate_policy(tmp_path / "rate_policy.json", RECORDS, 0.02, method="rkd-sc")
    on_disk = json.loads((tmp_path / "rate_policy.json").read_text())
    assert on_disk == json.loads(json.dumps(data)) and on_disk["margin"] == 0.02
    assert on_disk["policy"]["awgn"][0]["k"] == 16


def test_bad_margin_is_named():
    with pytest.raises(ValueError, match="margin"):
        rate_policy(RECORDS, margin=1.5)


def test_eval_config_margin_is_validated():
    from rkd.config import ConfigError, load_config

    assert load_config(None, ["eval.rate_margin=0.02"]).eval.rate_margin == 0.02
    with pytest.raises(ConfigError, match="eval.rate_margin"):
        load_config(None, ["eval.rate_margin=-0.1"])
