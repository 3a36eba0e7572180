"""Loss terms and their weighted composition."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rkd.baselines.variants import ablation_overrides, conference_student_overrides
from rkd.config import ConfigError, LossConfig, RunConfig, SearchConfig, validate
from rkd.losses import (
    LOSS_TERMS,
    CompositeLoss,
    FeatureKD,
    LogitKD,
    LossTerm,
    MissingInputError,
    TaskLoss,
    build_kd_loss,
    loss_weights,
    teacher_terms,
)

torch.set_num_threads(1)


def _batch(n: int = 6, classes: int = 5, dim: int = 8, seed: int = 0) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "logits": torch.randn(n, classes, generator=g, requires_grad=True),
        "projected": torch.randn(n, dim, generator=g, requires_grad=True),
    }
    batch = {
        "label": torch.randint(0, classes, (n,), generator=g),
        "teacher_logits": torch.randn(n, classes, generator=g).half(),
        "teacher_features": torch.randn(n, dim, generator=g).half(),
    }
    return outputs, batch


# ----------------------------------------------------------------------------- single terms


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_task_loss_is_cross_entropy(smoothing: float):
    outputs, batch = _batch()
    expected = F.cross_entropy(outputs["logits"], batch["label"], label_smoothing=smoothing)
    torch.testing.assert_close(TaskLoss(smoothing)(outputs, batch), expected)


def test_logit_kd_zero_for_equal_logits_positive_otherwise():
    outputs, batch = _batch()
    kd = LogitKD(temperature=4.0)
    same = {"logits": batch["teacher_logits"].float()}
    assert kd(same, batch).abs().item() < 1e-6
    assert kd(outputs, batch).item() > 0


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_logit_kd_is_t_squared_times_kl_of_softened_distributions(T: float):
    outputs, batch = _batch()
    p_t = F.softmax(batch["teacher_logits"].float() / T, dim=-1)
    log_p_s = F.log_softmax(outputs["logits"] / T, dim=-1)
    kl = (p_t * (p_t.log() - log_p_s)).sum(dim=-1).mean()
    torch.testing.assert_close(LogitKD(T)(outputs, batch), T * T * kl)


def test_logit_kd_gradient_pulls_student_towards_teacher():
    teacher = torch.tensor([[3.0, 0.0, -3.0]])
    student = torch.zeros(1, 3, requires_grad=True)
    LogitKD(2.0)({"logits": student}, {"teacher_logits": teacher}).backward()
    # descending the gradient raises the logit the teacher prefers and lowers the one it rejects
    assert student.grad[0, 0] < 0 < student.grad[0, 2]
    assert math.isclose(student.grad.sum().item(), 0.0, abs_tol=1e-6)  # softmax is shift invariant


def test_logit_kd_never_backpropagates_into_the_teacher():
    outputs, batch = _batch()
    batch["teacher_logits"] = batch["teacher_logits"].float().requires_grad_()
    LogitKD(4.0)(outputs, batch).backward()
    assert batch["teacher_logits"].grad is None and outputs["logits"].grad is not None


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_feature_kd_zero_for_identical_and_positive_otherwise(kind: str):
    outputs, batch = _batch()
    kd = FeatureKD(kind)
    same = {"projected": batch["teacher_features"].float()}
    assert kd(same, batch).abs().item() < 1e-5
    assert kd(outputs, batch).item() > 0


def test_feature_kd_cosine_ignores_scale_and_mse_is_normalised():
    _, batch = _batch()
    teacher = batch["teacher_features"].float()
    assert FeatureKD("cosine")({"projected": 7.0 * teacher}, batch).abs().item() < 1e-5
    mse = FeatureKD("mse")
    # a student at twice the teacher's norm is penalised, by the same amount at any teacher scale
    doubled = mse({"projected": 2.0 * teacher}, batch)
    assert doubled.item() == pytest.approx(1.0, rel=1e-3)
    scaled = {"teacher_features": 100.0 * teacher}
    assert mse({"projected": 200.0 * teacher}, scaled).item() == pytest.approx(doubled.item(), rel=1e-3)


def test_feature_kd_rejects_shape_mismatch_and_unknown_kind():
    outputs, batch = _batch()
    with pytest.raises(ValueError, match="differ in shape"):
        FeatureKD()({"projected": outputs["projected"][:, :3]}, batch)
    with pytest.raises(ValueError, match="'l1'"):
        FeatureKD("l1")


# ----------------------------------------------------------------------------- composition


class Counting(LossTerm):
    """A constant term that counts its calls."""

    requires = (("outputs", "logits"),)

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value, self.calls = value, 0

    def forward(self, outputs, batch):
        self.calls += 1
        return outputs["logits"].sum() * 0 + self.value


def test_composite_total_is_weighted_sum_of_unweighted_parts():
    outputs, batch = _batch()
    loss = build_kd_loss(LossConfig(task=0.5, logit_kd=2.0, feature_kd=3.0, temperature=3.0, feature_loss="mse"))
    total, parts = loss(outputs, batch)
    assert set(parts) == {"task", "logit_kd", "feature_kd"}
    torch.testing.assert_close(parts["task"], TaskLoss()(outputs, batch).detach())
    torch.testing.assert_close(parts["logit_kd"], LogitKD(3.0)(outputs, batch).detach())
    torch.testing.assert_close(parts["feature_kd"], FeatureKD("mse")(outputs, batch).detach())
    torch.testing.assert_close(total, 0.5 * parts["task"] + 2.0 * parts["logit_kd"] + 3.0 * parts["feature_kd"])
    assert all(not p.requires_grad and p.dtype == torch.float32 for p in parts.values())
    total.backward()
    assert outputs["logits"].grad is not None and outputs["projected"].grad is not None


def test_zero_weight_terms_are_not_computed_nor_required():
    skipped, used = Counting(5.0), Counting(2.0)
    loss = CompositeLoss({"skipped": (0.0, skipped), "used": (1.5, used)})
    total, parts = loss({"logits": torch.zeros(2, 3)}, {})
    assert skipped.calls == 0 and used.calls == 1
    assert list(parts) == ["used"] and total.item() == pytest.approx(3.0)
    # task-only: no teacher tensors needed in the batch
    outputs, batch = _batch()
    total, parts = build_kd_loss(LossConfig(logit_kd=0.0, feature_kd=0.0))(
        {"logits": outputs["logits"]}, {"label": batch["label"]}
    )
    assert list(parts) == ["task"]


def test_missing_key_error_names_the_key_and_the_term():
    outputs, batch = _batch()
    del batch["teacher_features"]
    with pytest.raises(KeyError) as info:
        build_kd_loss(LossConfig())(outputs, batch)
    assert isinstance(info.value, MissingInputError)
    message = str(info.value)
    assert "'feature_kd'" in message and "batch['teacher_features']" in message
    with pytest.raises(KeyError, match=r"'logit_kd' needs outputs\['logits'\]"):
        build_kd_loss(LossConfig(task=0.0))({"projected": outputs["projected"]}, batch)


def test_missing_key_in_a_term_without_requires_is_reported_too():
    class Bare(nn.Module):
        def forward(self, outputs, batch):
            return outputs["mystery"].sum()

    with pytest.raises(MissingInputError, match="'bare' needs key 'mystery'"):
        CompositeLoss({"bare": (1.0, Bare())})({}, {})


def test_composite_rejects_bad_weights():
    with pytest.raises(ValueError, match="weight must be >= 0"):
        CompositeLoss({"task": (-1.0, TaskLoss())})
    with pytest.raises(ValueError, match="all term weights are 0"):
        build_kd_loss(LossConfig(task=0.0, logit_kd=0.0, feature_kd=0.0))


# ----------------------------------------------------------------------------- terms by name


def test_every_registered_term_has_its_weight_field_and_back():
    weights = {f.name for f in dataclasses.fields(LossConfig) if f.type == "Weight"}
    assert weights == set(LOSS_TERMS) and teacher_terms(LossConfig()) == ["logit_kd", "feature_kd"]


def test_a_new_term_is_one_function_and_one_config_field(monkeypatch):
    """A toy term (logit KD at twice the temperature): its function and its LossConfig weight field, nothing else."""

    def hot_logit_kd(cfg, label_smoothing: float) -> nn.Module:
        return LogitKD(2 * cfg.temperature)

    monkeypatch.setitem(LOSS_TERMS, "hot_logit_kd", hot_logit_kd)
    ToyLossConfig = dataclasses.make_dataclass("ToyLossConfig", [("hot_logit_kd", float, 0.5)], bases=(LossConfig,))
    cfg = RunConfig(  # as if LossConfig had the field: every section that holds a loss
        loss=ToyLossConfig(task=0.0, logit_kd=0.0, feature_kd=0.0),
        stage2_loss=ToyLossConfig(),
        search=SearchConfig(loss=ToyLossConfig()),
    )

    outputs, batch = _batch()
    total, parts = build_kd_loss(cfg.loss)(outputs, batch)  # the stages' objective
    assert list(parts) == ["hot_logit_kd"]
    torch.testing.assert_close(total, 0.5 * LogitKD(8.0)(outputs, batch))
    validate(cfg)  # the config check counts its weight: the loss is not empty
    assert loss_weights(cfg.loss)["hot_logit_kd"] == 0.5  # what the search records
    assert "stage2_loss.hot_logit_kd=0" in ablation_overrides("no-robust-kd", cfg)  # a KD term: it reads the teacher
    assert "loss.hot_logit_kd=0" in conference_student_overrides(cfg)
    with pytest.raises(ConfigError, match="hot_logit_kd"):
        validate(dataclasses.replace(cfg, loss=ToyLossConfig(task=0.0, logit_kd=0.0, feature_kd=0.0, hot_logit_kd=0.0)))
