"""The reviewer's controls and the new baselines: VFE's bottleneck, Deep JSCC + KD, no-teacher and random-cell variants."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from test_baselines import SPECS, draws

from rkd.baselines import budget
from rkd.baselines.controls import control_config
from rkd.baselines.deep_jscc import DeepJSCCClassifier
from rkd.baselines.link import ImageLink
from rkd.baselines.variants import ablation_overrides, conference_stage1
from rkd.baselines.vfe import ACTIVE_LOG_ALPHA, BottleneckKL, VFEClassifier, active_dims, sparsity_kl
from rkd.config import load_config
from rkd.nas.complexity import NetworkShape, network_params
from rkd.nas.genotype import load_genotype, save_genotype


def test_sparsity_kl_is_the_log_uniform_bound():
    log_alpha = torch.linspace(-8, 8, 33)
    kl = sparsity_kl(log_alpha)
    assert (kl >= -1e-4).all() and (kl[1:] <= kl[:-1]).all()  # larger noise-to-signal: less information
    assert float(sparsity_kl(torch.tensor(20.0))) == pytest.approx(0.0, abs=1e-4)


def test_vfe_sends_bounded_symbols_and_pays_for_the_information_it_sends():
    torch.manual_seed(0)
    model = VFEClassifier(ImageLink(1, 10, SPECS, 8), width=8, hidden=16)
    x = torch.randn(6, 1, 28, 28)
    snr, k, ids = draws(6)
    out = model(x, snr, k, ids, generator=torch.Generator().manual_seed(1))
    assert out["logits"].shape == (6, 10) and out["bottleneck_kl"].shape == (6,)
    assert (out["bottleneck_kl"] >= 0).all()
    loss = out["logits"].sum() + BottleneckKL()(out, {})
    loss.backward()
    assert model.encoder[0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        z = model.transmit(x, snr)
        assert z.shape == (6, 8) and z.real.abs().max() <= 1 and z.imag.abs().max() <= 1  # peak constraint
        assert torch.allclose(model.transmit(x[1:2], snr[1:2]), z[1:2], atol=1e-6)  # per sample
        full_k = torch.full((6,), 8)
        quiet, _ = model.sent_log_alpha(z, torch.full((6,), 20.0), full_k)
        noisy, sent = model.sent_log_alpha(z, torch.full((6,), -10.0), full_k)
        assert torch.allclose(noisy - quiet, torch.full_like(quiet, 3 * math.log(10)), atol=1e-4)  # 30 dB more noise
        assert sparsity_kl(noisy).sum() < sparsity_kl(quiet).sum() and sent.all()
        _, prefix = model.sent_log_alpha(z, snr, torch.full((6,), 2))
        assert prefix.sum(dim=1).tolist() == [4] * 6  # k=2 symbols: 4 real dimensions
    counts = active_dims(model, x, 20.0, [2, 8])
    assert 0 <= counts["2"] <= 4 and 0 <= counts["8"] <= 16 and ACTIVE_LOG_ALPHA > 0


def test_deep_jscc_with_kd_projects_its_feature_for_training_only():
    model = DeepJSCCClassifier(ImageLink(1, 10, SPECS, 16), width=8, decoder_width=8, hidden=16, teacher_dim=24)
    snr, k, ids = draws(4)
    out = model(torch.randn(4, 1, 28, 28), snr, k, ids)
    assert out["projected"].shape == (4, 24)
    receiver = sum(p.numel() for m in model.receiver_modules() for p in m.parameters())
    plain = DeepJSCCClassifier(ImageLink(1, 10, SPECS, 16), width=8, decoder_width=8, hidden=16)
    assert "projected" not in plain(torch.randn(4, 1, 28, 28), snr, k, ids)
    assert receiver == sum(p.numel() for m in plain.receiver_modules() for p in m.parameters())


def test_candidate_images_count_the_screening():
    cfg = load_config(["default"])
    selection = {
        "train_rows": 4096,
        "candidates": 16,
        "survivors": 4,
        "epochs": 3,
        "screened": True,
        "screen_epochs": 1,
    }
    assert budget.candidate_images(cfg, selection) == 4096 * (16 + 4 * 2)
    assert budget.candidate_images(cfg, {**selection, "screened": False, "survivors": 16}) == 4096 * 16 * 3
    assert budget.candidate_images(cfg, None) == 0


def finished_run(tmp_path, overrides=()):
    """A config whose search and stage 1 have stage records (what the controls read), with searched cells."""
    cfg = load_config(["default"], [f"runs_dir={tmp_path}", "name=main", *overrides])
    selection = {
        "train_rows": 4096,
        "candidates": 16,
        "survivors": 4,
        "epochs": 3,
        "screened": True,
        "screen_epochs": 1,
    }
    for stage, summary in {"search": {"steps": 64, "selection": selection}, "stage1": {"steps": 15 * 210}}.items():
        (cfg.run_dir / stage).mkdir(parents=True)
        (cfg.run_dir / stage / "stage.json").write_text(json.dumps({"summary": {**summary, "seconds": 1.0}}))
    save_genotype(load_genotype("default"), cfg.run_dir / "search" / "genotype.json")
    bundle = SimpleNamespace(channels=1, num_classes=10)
    return SimpleNamespace(
        cfg=cfg,
        n_train=54000,
        bundle=bundle,
        accelerator=SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: None),
    )


def test_no_teacher_controls_train_the_searched_cells_without_kd(tmp_path):
    ctx = finished_run(tmp_path, ["baselines.control_lr_scale=0.5"])
    cfg = ctx.cfg
    budgeted = control_config(ctx, "no-teacher")
    assert budgeted.loss.logit_kd == budgeted.loss.feature_kd == 0 and budgeted.stage2_loss.logit_kd == 0
    assert not budgeted.search.enabled and budgeted.student.genotype.endswith("main/search/genotype.json")
    seen = 64 * 64 + 4096 * 24 + 15 * 210 * 256  # supernet + candidates + stage 1, in images
    assert budgeted.stage1.max_steps == math.ceil(seen / 256) and budgeted.stage1.epochs == math.ceil(seen / 256 / 210)
    assert budgeted.stage1.lr == pytest.approx(0.5 * cfg.stage1.lr) and budgeted.stage2.epochs == cfg.stage2.epochs
    assert budgeted.run_dir == cfg.run_dir / "controls" / "no-teacher-lr0.5"  # one directory per grid point
    converged = control_config(ctx, "no-teacher-converged")
    for stage in ("stage1", "stage2"):  # a stretched schedule, stopped by a whole default schedule without progress
        default, stretched = getattr(cfg, stage), getattr(converged, stage)
        assert stretched.epochs == 4 * default.epochs and stretched.early_stop_patience == default.epochs
    assert converged.stage1.max_steps is None
    no_kd = ablation_overrides("no-kd", cfg)
    assert "search.enabled=false" in no_kd and any(o.startswith("student.genotype=") for o in no_kd)


def test_random_cells_match_the_searched_size_and_keep_the_recipe(tmp_path):
    ctx = finished_run(tmp_path)
    variant = control_config(ctx, "random-cells")
    shape = NetworkShape(1, 10, 28, ctx.cfg.student.init_channels, ctx.cfg.student.layers, ctx.cfg.student.stem_stride)
    target = network_params(load_genotype("default"), shape)
    drawn = network_params(load_genotype(variant.student.genotype), shape)
    assert abs(drawn - target) <= 0.03 * target and load_genotype(variant.student.genotype) != load_genotype("default")
    assert variant.loss == ctx.cfg.loss and variant.stage1 == ctx.cfg.stage1 and not variant.search.enabled
    again = control_config(ctx, "random-cells")
    assert load_genotype(again.student.genotype) == load_genotype(variant.student.genotype)  # seeded: the same draw


def test_budget_rule_gives_the_conference_student_rkd_scs_stage1_epochs():
    cfg = load_config(["default"])
    assert conference_stage1(cfg)["epochs"] == cfg.baselines.conference_stage1.epochs
    matched = load_config(["default"], ["baselines.match_budget=true"])
    assert conference_stage1(matched)["epochs"] == matched.stage1.epochs
