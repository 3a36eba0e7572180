"""The one accuracy-record layout every sweep writes, and the per-cell noise seed."""

import torch

from rkd.evaluation.records import cell_generator, channel_record, clean_record

KEYS = ["method", "channel", "csi", "k_factor", "channel_label", "snr_db", "channel_uses", "accuracy", "n_test"]


def test_records_keep_one_key_order_and_name_csi_only_where_it_exists():
    awgn = channel_record("m", {"name": "awgn"}, 5, 8, 0.5, 100)
    assert list(awgn) == KEYS and (awgn["csi"], awgn["k_factor"], awgn["channel_label"]) == ("n/a", None, "awgn")
    assert isinstance(awgn["snr_db"], float) and isinstance(awgn["channel_uses"], int)
    blind = channel_record("m", {"name": "rayleigh", "csi": "none"}, -5.0, torch.tensor(4), 0.25, 100)
    assert (blind["csi"], blind["k_factor"], blind["channel_label"], blind["channel_uses"]) == (
        "none",
        None,
        "rayleigh-nocsi",
        4,
    )
    rician = channel_record("m", {"name": "rician", "k_factor": 4.0}, 0.0, 2, 0.1, 10, bits=3, outage=0.5)
    assert list(rician) == KEYS + ["bits", "outage"]  # a scheme's extras follow the common keys
    assert (rician["csi"], rician["k_factor"], rician["channel_label"]) == ("perfect", 4.0, "rician-k4-csi")
    clean = clean_record("teacher", 0.9, 100)
    assert list(clean) == KEYS and clean["channel"] == clean["channel_label"] == "clean"
    assert clean["snr_db"] is None and clean["channel_uses"] is None


def test_every_cell_draws_the_same_noise_for_the_same_eval_seed():
    a, b = cell_generator(7), cell_generator(7)
    assert torch.equal(torch.randn(5, generator=a), torch.randn(5, generator=b))
    assert not torch.equal(torch.randn(5, generator=cell_generator(7)), torch.randn(5, generator=cell_generator(8)))
