"""Baselines: each forward pass over the channels, the digital capacity arithmetic, ablation configs, `rkd baselines`."""

import json
import math

import pytest
import torch

from rkd.baselines.conference import ConferenceAutoencoder, SNRScheduleObjective
from rkd.baselines.deep_jscc import DeepJSCCClassifier
from rkd.baselines.digital import (
    UniformQuantizer,
    capacity_bits,
    choose_bits,
    digital_sweep,
    fallback_predictions,
    min_snr_for_bits,
)
from rkd.baselines.link import ImageLink
from rkd.config import ConfigError, load_config

SPECS = [
    {"name": "awgn"},
    {"name": "rayleigh", "csi": "perfect"},
    {"name": "rayleigh", "csi": "none"},
    {"name": "rician", "csi": "perfect", "k_factor": 4.0},
]


def draws(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (
        -10 + 30 * torch.rand(n, generator=gen),
        torch.randint(1, 17, (n,), generator=gen),
        torch.arange(n) % len(SPECS),
    )


@pytest.mark.parametrize("adaptive", [False, True])
def test_deep_jscc_over_every_channel(adaptive):
    torch.manual_seed(0)
    model = DeepJSCCClassifier(ImageLink(1, 10, SPECS, 16), width=8, decoder_width=8, hidden=16, adaptive=adaptive)
    x = torch.randn(8, 1, 28, 28)
    snr, k, ids = draws(8)
    out = model(x, snr, k, ids, generator=torch.Generator().manual_seed(1))
    assert out["logits"].shape == (8, 10) and torch.isfinite(out["logits"]).all()
    out["logits"].sum().backward()
    assert model.encoder_stages[0].conv.weight.grad.abs().sum() > 0  # end to end through the channel
    model.eval()
    with torch.no_grad():
        z = model.transmit(x, snr)
        assert z.shape == (8, 16) and z.is_complex()
        # one image alone encodes as inside the batch (nothing mixes samples)
        assert torch.allclose(model.transmit(x[2:3], snr[2:3]), z[2:3], atol=1e-5)
        # the sweep's prefix call equals the full-length masked call
        state = torch.stack([snr, snr], -1)
        mask = torch.arange(16)[None] < 5
        full = model.decoder(torch.where(mask, z, torch.zeros_like(z)), mask.expand(8, -1), state)
        prefix = model.decoder(z[:, :5], torch.ones(8, 5, dtype=torch.bool), state)
        assert torch.allclose(full, prefix, atol=1e-5)
        # only the adaptive variant listens to the SNR
        moved = not torch.allclose(model.transmit(x, snr + 10), z, atol=1e-6)
        assert moved == adaptive


def test_deep_jscc_needs_a_multiple_of_8_symbols():
    with pytest.raises(ValueError, match="max_symbols"):
        DeepJSCCClassifier(ImageLink(1, 10, SPECS, 12))


def test_conference_autoencoder_sends_every_feature_value():
    torch.manual_seed(0)
    model = ConferenceAutoencoder(64, 10, SPECS, tokens=8, d_model=16, depth=1)
    assert model.max_symbols == 32  # 64 reals = 32 complex channel uses
    feats = torch.randn(6, 64)
    snr, _, ids = draws(6)
    k = torch.full((6,), 32)
    out = model(feats, snr, k, ids, generator=torch.Generator().manual_seed(0))
    assert out["logits"].shape == (6, 10) and out["projected"].shape == (6, 64)
    model.eval()
    with torch.no_grad():  # per sample: no attention across the batch
        assert torch.allclose(model.transmit(feats[:1], snr[:1]), model.transmit(feats, snr)[:1], atol=1e-5)
    with pytest.raises(ValueError, match="conference_tokens"):
        ConferenceAutoencoder(60, 10, SPECS, tokens=8)


def test_conference_trains_one_snr_per_epoch():
    objective = SNRScheduleObjective({}, None, None, [-5, -2, 0], steps_per_epoch=10, snr_min=-10, snr_max=20)
    seen = []
    for step in (0, 9, 10, 25, 99):
        objective.set_step(step)
        seen.append(objective.current_snr())
    assert seen == [-5.0, -5.0, -2.0, 0.0, 0.0]


class _Recorder(torch.nn.Module):
    """Stands in for the autoencoder: records the channel ids the objective draws."""

    max_symbols = 4

    def __init__(self):
        super().__init__()
        self.ids = []

    def forward(self, inputs, snr, k, channel_ids, generator=None):
        self.ids.append(channel_ids.clone())
        return {"logits": torch.zeros(inputs.shape[0], 2)}


class _NoTargets:
    def targets(self, split, index):
        return {}


@pytest.mark.parametrize("n_channels", [1, 3])
def test_conference_trains_on_the_channel_mixture(n_channels):
    features = {"train": torch.randn(512, 8)}
    loss = lambda outputs, targets: (outputs["logits"].sum(), {})  # noqa: E731 - the loss is not under test
    objective = SNRScheduleObjective(features, _NoTargets(), loss, [0.0], 10, -10, 20, seed=0, n_channels=n_channels)
    model = _Recorder()
    objective(model, {"index": torch.arange(512), "label": torch.zeros(512, dtype=torch.long)}, True)
    assert set(model.ids[0].tolist()) == set(range(n_channels))  # 1: AWGN only (the conference-awgn variant)


def test_capacity_arithmetic():
    assert float(capacity_bits(torch.tensor(0.0))) == pytest.approx(1.0)  # log2(1 + 1)
    assert float(capacity_bits(torch.tensor(20.0))) == pytest.approx(math.log2(101))
    assert float(capacity_bits(torch.tensor(10.0), 0.1)) == pytest.approx(1.0)  # |h|^2 SNR = 1
    # 4 values, 2 uses at 20 dB: 2 * 6.658 = 13.3 bits -> 3 bits/value (12) fit, 4 (16) do not
    assert choose_bits(20.0, 2, 4, [1, 2, 3, 4, 8]) == 3
    assert choose_bits(-10.0, 2, 4, [1, 2]) == 0  # 2 * 0.1375 bits: nothing fits
    assert choose_bits(0.0, 8, 8, [1, 2]) == 1  # exactly at capacity still fits
    assert min_snr_for_bits(1, 8, 8) == pytest.approx(0.0)  # 1 bit per use needs SNR = 1
    q = UniformQuantizer(torch.zeros(3), torch.ones(3))
    x = torch.rand(100, 3)
    for bits in (1, 3, 6):
        assert (q(x, bits) - x).abs().max() <= 0.5 / 2**bits + 1e-6
    assert q.indices(torch.tensor([[-1.0, 0.5, 2.0]]), 2).tolist() == [[0, 2, 3]]  # clamped to the range


def test_digital_sweep_cliff_and_outage():
    torch.manual_seed(0)
    n, dim = 4000, 4
    labels = torch.arange(n) % 4
    features = torch.nn.functional.one_hot(labels, dim).float()  # a perfectly separable feature
    head = torch.nn.Linear(dim, 4)
    with torch.no_grad():
        head.weight.copy_(torch.eye(4))
        head.bias.zero_()
    q = UniformQuantizer.fit(features)
    fallback = fallback_predictions(n, 4, "prior", prior_class=0, seed=0)
    records = digital_sweep(
        features,
        labels,
        head,
        q,
        [{"name": "awgn"}, {"name": "rayleigh", "csi": "perfect"}],
        snrs=[-10.0, 10.0],
        rates=[2],
        candidates=[1, 2],
        fallback=fallback,
        seed=0,
    )
    cell = {(r["channel_label"], r["snr_db"]): r for r in records}
    assert cell[("awgn", -10.0)]["bits"] == 0 and cell[("awgn", -10.0)]["accuracy"] == pytest.approx(0.25)
    assert cell[("awgn", -10.0)]["outage"] == 1.0
    # 10 dB: 2 uses carry 6.9 bits -> 1 bit/value (4 bits) fits, 2 (8 bits) does not
    assert (
        cell[("awgn", 10.0)]["bits"] == 1
        and cell[("awgn", 10.0)]["accuracy"] == 1.0
        and cell[("awgn", 10.0)]["outage"] == 0
    )
    # Rayleigh: outage when 2 log2(1 + |h|^2 * 10) < 4, i.e. |h|^2 < 0.3, probability 1 - exp(-0.3)
    ray = cell[("rayleigh-csi", 10.0)]
    assert ray["outage"] == pytest.approx(1 - math.exp(-0.3), abs=0.03)
    assert ray["accuracy"] == pytest.approx(1 - 0.75 * ray["outage"], abs=0.02)  # lost samples: class 0 right
    assert set(records[0]) >= {
        "method",
        "channel",
        "csi",
        "channel_label",
        "snr_db",
        "channel_uses",
        "accuracy",
        "n_test",
    }
    uniform = fallback_predictions(1000, 10, "uniform", 0, seed=1)
    assert uniform.unique().numel() == 10


def test_ablations_and_baselines_are_config_changes(tmp_path):
    from rkd.baselines.variants import (
        ablation_overrides,
        conference_student_overrides,
        derive_config,
        link_shared_stages,
    )
    from rkd.run.hashing import stage_hashes

    base = load_config(None, [f"runs_dir={tmp_path}", "name=main"])
    hashes = stage_hashes(base)
    for name in ("teacher", "cache", "stage1"):
        (base.run_dir / name).mkdir(parents=True)
        (base.run_dir / name / "stage.json").write_text(json.dumps({"hash": hashes[name]}))
    expected_shared = {
        "no-kd": ["teacher", "cache"],
        "no-robust-kd": ["teacher", "cache", "stage1"],
        "robust-kd": ["teacher", "cache", "stage1"],
        "no-channel-training": ["teacher", "cache", "stage1"],
        "no-state": ["teacher", "cache", "stage1"],
        "fixed-length": ["teacher", "cache", "stage1"],
    }
    for name, shared in expected_shared.items():
        variant = derive_config(base, ablation_overrides(name, base), name)
        assert variant.run_dir == base.run_dir / "ablations" / name
        assert link_shared_stages(base, variant) == shared
        assert (variant.run_dir / "teacher").is_symlink()
    assert derive_config(base, ablation_overrides("fixed-length", base), "f").codec.train_rates == [
        base.codec.max_symbols
    ]
    assert derive_config(base, ablation_overrides("no-state", base), "s").codec.use_state is False
    conference = derive_config(base, conference_student_overrides(base), "c")
    assert (conference.loss.task, conference.loss.logit_kd, conference.loss.feature_kd) == (0, 0, 1)
    assert conference.loss.feature_loss == "mse" and conference.stage1 == base.baselines.conference_stage1


def test_registries_hold_exactly_the_configurable_names():
    from rkd.baselines.names import ABLATIONS, BASELINE_METHODS
    from rkd.baselines.registry import METHODS
    from rkd.baselines.variants import ABLATIONS as ABLATION_REGISTRY
    from rkd.baselines.variants import ablation_overrides

    assert tuple(METHODS) == BASELINE_METHODS and tuple(ABLATION_REGISTRY) == ABLATIONS
    assert len({m.label for m in METHODS.values()}) == len(METHODS)  # one results name per method
    cfg = load_config(
        None, [f"baselines.methods=[{','.join(BASELINE_METHODS)}]", f"baselines.ablations=[{','.join(ABLATIONS)}]"]
    )
    assert all(isinstance(ablation_overrides(name, cfg), list) for name in ABLATIONS)
    with pytest.raises(ValueError, match="unknown ablation 'no-such'; known: "):
        ablation_overrides("no-such", cfg)


def test_method_hash_follows_each_methods_own_settings(tmp_path):
    from rkd.baselines.context import Context, comparison_grid
    from rkd.baselines.runner import method_hash
    from rkd.run.hashing import stage_hashes

    def hashes_of(*overrides):
        cfg = load_config(None, [f"runs_dir={tmp_path}", *overrides])
        ctx = Context(cfg, accelerator=None, run=None, run_stages=None, grid=comparison_grid(cfg))
        return {
            name: method_hash(ctx, name, stage_hashes(cfg))
            for name in (
                "rkd-sc",
                "deep-jscc",
                "adjscc",
                "conference",
                "conference-awgn",
                "digital",
                "label-digital",
                "feature-digital",
            )
        }

    base = hashes_of()
    assert len(set(base.values())) == len(base)  # the name is part of every hash
    wider = hashes_of("baselines.jscc_hidden=32")
    assert {n for n in base if base[n] != wider[n]} == {"deep-jscc", "adjscc"}
    target = hashes_of("baselines.digital_target_error=0.02")
    assert {n for n in base if base[n] != target[n]} == {"feature-digital"}  # only its block choice has a target
    trials = hashes_of("baselines.digital_code_trials=5000")
    assert {n for n in base if base[n] != trials[n]} == {"label-digital", "feature-digital"}
    grid = hashes_of("baselines.extra_snrs=[-7]")
    assert all(base[n] != grid[n] for n in base)  # every method is swept on the comparison grid


def test_baseline_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="baselines.conference_train.epochs"):
        load_config(None, ["baselines.conference_snrs=[0,10]"])
    with pytest.raises(ConfigError, match="codec.max_symbols"):
        load_config(None, ["codec.max_symbols=12", "codec.rates=[4,12]"])
    with pytest.raises(ConfigError, match="codec.train_rates"):
        load_config(None, ["codec.train_rates=[64]"])
    with pytest.raises(ConfigError, match="baselines.ablations"):
        load_config(None, ["baselines.ablations=[no-such]"])
    assert load_config(None, ["codec.max_symbols=12", "codec.rates=[4,12]", "baselines.methods=[digital]"])


def test_no_state_codec_ignores_the_state():
    from rkd.models.cat import CATDecoder, CATEncoder

    torch.manual_seed(0)
    enc, dec = (
        CATEncoder(8, d_model=16, depth=1, heads=2, max_symbols=4, use_state=False),
        CATDecoder(d_model=16, depth=1, heads=2, max_symbols=4, out_dim=8, use_state=False),
    )
    tokens, y, mask = torch.randn(2, 5, 8), torch.randn(2, 4, dtype=torch.complex64), torch.ones(2, 4, dtype=torch.bool)
    a, b = torch.zeros(2, 2), torch.full((2, 2), 15.0)
    assert torch.equal(enc(tokens, a), enc(tokens, b)) and torch.equal(dec(y, mask, a), dec(y, mask, b))


SMALL_BASELINES = [
    "baselines.jscc_channels=8",
    "baselines.jscc_decoder_channels=8",
    "baselines.jscc_hidden=16",
    "baselines.jscc_train.epochs=1",
    "baselines.jscc_train.batch_size=32",
    "baselines.jscc_train.max_steps=3",
    "baselines.conference_stage1.epochs=1",
    "baselines.conference_stage1.batch_size=32",
    "baselines.conference_stage1.max_steps=3",
    "baselines.conference_snrs=[0,10]",
    "baselines.conference_train.epochs=2",
    "baselines.conference_train.batch_size=32",
    "baselines.conference_tokens=4",
    "baselines.conference_d_model=8",
    "baselines.conference_depth=1",
]


def run_baselines_cli(tmp_path, fake_fashion_dir, extra):
    from test_pipeline import TINY

    from rkd.cli import main

    args = [
        "--runs-dir",
        str(tmp_path / "runs"),
        "--name",
        "tiny",
        f"data.fashion_mnist_dir={fake_fashion_dir}",
        f"data.cache_dir={tmp_path / 'datasets'}",
        *TINY,
        *SMALL_BASELINES,
        *extra,
    ]
    assert main(["baselines", *args]) == 0
    return tmp_path / "runs" / "tiny", args


def check_comparison(run, methods):

    data = json.loads((run / "compare" / "results.json").read_text())
    assert set(data["methods"]) == set(methods)
    for method, summary in data["methods"].items():
        assert summary["tx_params"] > 0 and summary["tx_flops"] > 0, method
        assert summary["rx_flops"] > 0 or method == "label-digital", method  # its receiver only looks up a name
    swept = [r for r in data["records"] if r["method"] == "rkd-sc"]
    assert {r["snr_db"] for r in swept} == {-10.0, -5.0, 0.0, 5.0, 10.0, 20.0}  # eval grid + extra_snrs
    text = (run / "compare" / "comparison.md").read_text()
    assert "## awgn" in text and "## Targets" in text and "model compression" in text
    assert (run / "compare" / "comparison.png").stat().st_size > 0
    assert "rkd-sc" in json.loads((run / "compare" / "rate_policy.json").read_text())["policy"]
    assert json.loads((run / "eval" / "rate_policy.json").read_text())["policy"]["awgn"]
    return text


@pytest.mark.slow  # the whole pipeline plus two baselines and an ablation: a minute on a shared 2-core machine
def test_rkd_baselines_in_one_process_then_report_rerun_and_export(tmp_path, fake_fashion_dir, capsys):
    """`rkd baselines`, `report`, `baselines` again and `export` in one process; every method and ablation runs
    under 2 ranks in tests/test_standins.py."""
    extra = ["baselines.methods=[conference,digital]", "baselines.ablations=[no-kd]"]
    run, args = run_baselines_cli(tmp_path, fake_fashion_dir, extra)
    methods = ["rkd-sc", "conference-rkd", "digital", "ablation:no-kd"]
    check_comparison(run, methods)
    conference = json.loads((run / "baselines" / "conference" / "results.json").read_text())
    symbols = conference["summary"]["feature_dim"] // 2  # it sends its whole feature, always
    assert {r["symbols_sent"] for r in conference["records"]} == {symbols}
    assert {r["channel_uses"] for r in conference["records"]} == {symbols} | {k for k in (2, 8) if k < symbols}
    matched = [r for r in conference["records"] if r["channel_uses"] != symbols]  # equal energy per image
    assert matched and all(
        r["channel_snr_db"] == pytest.approx(r["snr_db"] - 10 * math.log10(symbols / r["channel_uses"]))
        for r in matched
    )
    digital = json.loads((run / "baselines" / "digital" / "results.json").read_text())
    assert all("bits" in r for r in digital["records"])
    (run / "compare" / "comparison.md").unlink()
    capsys.readouterr()
    from rkd.cli import main

    assert main(["report", *args]) == 0  # re-renders the comparison too
    assert "comparison:" in capsys.readouterr().out and (run / "compare" / "comparison.md").exists()
    assert main(["baselines", *args]) == 0  # everything is skipped the second time
    skipped = capsys.readouterr().out.count("done for this config, skipping")
    assert skipped >= 3 + len(methods) - 1  # the pipeline's stages and every method but RKD-SC itself
    (run / "export").mkdir()
    (run / "export" / "receiver.onnx").write_text("an earlier export's")
    # rkd export: the trained link as two TorchScript files (tests/test_export.py covers the ONNX pair)
    assert main(["export", "--no-onnx", *args]) == 0
    check = json.loads((run / "export" / "export.json").read_text())["check"]
    assert check["transmitter_max_abs_diff"] < 1e-4 and check["receiver_max_abs_diff"] < 1e-3
    assert not list((run / "export").glob("*.onnx"))


@pytest.mark.slow  # the pipeline twice (two seeds) plus the digital schemes and the budget-matched Deep JSCC
def test_rkd_baselines_two_seeds_paired(tmp_path, fake_fashion_dir):
    run, _ = run_baselines_cli(
        tmp_path,
        fake_fashion_dir,
        [
            "baselines.methods=[deep-jscc-budget,label-digital,feature-digital,digital]",
            "baselines.ablations=[]",
            "baselines.seeds=[0,1]",
            "baselines.per_image=true",
        ],
    )
    text = check_comparison(run, ["rkd-sc", "deep-jscc-budget", "label-digital", "feature-digital", "digital"])
    assert (run / "seeds" / "seed-1" / "baselines" / "label-digital" / "correct.npz").exists()
    assert not (run / "baselines" / "digital" / "correct.npz").exists()  # the bound keeps no per-image data
    data = json.loads((run / "compare" / "results.json").read_text())
    assert data["seeds"] == [0, 1]
    swept = [r for r in data["records"] if r["snr_db"] is not None]
    assert all(r["seeds"] == 2 and r["low"] <= r["accuracy"] <= r["high"] for r in swept)
    targets = data["targets"]
    cells = targets["dominance_cells"] + targets["outside_training"]
    assert cells and all(c["test"].startswith("mcnemar") for c in cells)
    assert {c["method"] for c in cells} <= {"deep-jscc-budget", "label-digital", "feature-digital"}  # never the bound
    dominance = targets["dominance_cells"]
    assert all(c["channel_label"] != "rayleigh-nocsi" for c in dominance)  # nothing was trained without CSI
    # pilots: trained by RKD-SC and Deep JSCC (the default mixture); the coded digital schemes send their own
    assert any(c["channel_label"] == "rayleigh-pilot1" and c["method"] == "label-digital" for c in dominance)
    verdicts = targets["verdicts"]["families"]
    assert {r["method"] for r in verdicts["target"]} == {"deep-jscc-budget", "label-digital", "feature-digital"}
    assert all(len(r["seeds"]) == 2 and r["verdict"] != "n/a" for r in verdicts["target"])
    assert data["yardstick"] and targets["yardstick"]["cells"]
    rkd_budget = data["methods"]["rkd-sc"]["budget"]
    assert set(rkd_budget["parts"]) >= {"teacher", "stage1", "stage2"}
    trained = [p["flops"] for p in rkd_budget["parts"].values() if p["images_seen"]]
    assert all(f > 0 for f in trained) and rkd_budget["flops"] == sum(trained)  # each training step counted
    assert data["methods"]["deep-jscc-budget"]["budget"]["flops"] > 0
    matched = data["methods"]["deep-jscc-budget"]["budget"]["images_seen"]
    assert rkd_budget["images_seen"] <= matched < rkd_budget["images_seen"] + 32  # one batch of slack
    for name in ("label-digital", "feature-digital", "digital"):  # they send the stage-1 student's output
        assert set(data["methods"][name]["budget"]["parts"]) >= {"teacher", "stage1"}
    designed = data["methods"]["label-digital"]["trained_on"]
    assert "awgn" in designed and "rayleigh-csi" in designed
    assert "rayleigh-nocsi" not in designed and "rayleigh-pilot1" in designed  # its own pilot, within k
    label = [r for r in data["records"] if r["method"] == "label-digital" and r["snr_db"] is not None]
    assert all(r["code_uses"] == r["channel_uses"] - (r["channel_label"] == "rayleigh-pilot1") for r in label)
    assert "## Verdicts over seeds" in text
    assert "capacity bound, not a scheme" in text and "## Training budgets" in text and "±" in text
