"""Distillation objectives as small terms registered by name and composed by weights, so an ablation is a
config change.

Every term is a module ``term(outputs, batch) -> scalar`` that declares the keys it reads in
``requires`` (``("outputs", key)`` or ``("batch", key)``). ``CompositeLoss`` checks those keys before
calling a term (so a missing teacher cache fails with a message naming the key and the term), skips
terms of weight 0 entirely, and reports each term's unweighted value for logging.

``LOSS_TERMS`` holds the terms of the stages' loss by name; each name is also a weight field of
``rkd.config.LossConfig``. Adding a term is one function registered with ``@loss_term`` (it builds
the term from the loss config section) and one weight field of that name: the stages' objectives,
the config check, the ablations and the stage-2 term benchmark read the registry. Terms outside the
registry join a loss through ``extra`` (the search's ``ComplexityPenalty``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Tensors = Mapping[str, torch.Tensor]


class MissingInputError(KeyError):
    """A loss term needs a key that the model outputs or the batch do not have."""

    def __str__(self) -> str:  # KeyError would print the repr of the message, quotes and all
        return str(self.args[0]) if self.args else ""


class LossTerm(nn.Module):
    """Base class: a scalar loss of ``(outputs, batch)`` that lists the keys it reads."""

    requires: tuple[tuple[str, str], ...] = ()

    def forward(self, outputs: Tensors, batch: Tensors) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class TaskLoss(LossTerm):
    """Cross-entropy on the ground-truth labels: keeps the student anchored to the real task."""

    requires = (("outputs", "logits"), ("batch", "label"))

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, outputs: Tensors, batch: Tensors) -> torch.Tensor:
        return F.cross_entropy(outputs["logits"].float(), batch["label"].long(), label_smoothing=self.label_smoothing)


class LogitKD(LossTerm):
    """Hinton's soft-target loss: ``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch.

    The ``T^2`` factor keeps the gradient magnitude roughly independent of ``T`` (soft-target gradients
    shrink as ``1/T^2``), so the weight of this term need not be retuned when ``T`` changes. Teacher
    logits are often cached in fp16; they are cast to float and never receive gradients.
    """

    requires = (("outputs", "logits"), ("batch", "teacher_logits"))

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, outputs: Tensors, batch: Tensors) -> torch.Tensor:
        T = self.temperature
        student = F.log_softmax(outputs["logits"].float() / T, dim=-1)
        teacher = F.log_softmax(batch["teacher_logits"].detach().float() / T, dim=-1)
        return F.kl_div(student, teacher, reduction="batchmean", log_target=True) * (T * T)


class FeatureKD(LossTerm):
    """Match the student's projected feature to the teacher's feature, per sample.

    ``cosine``: mean of ``1 - cos(p, t)``; direction only, blind to scale.
    ``mse``: mean squared error after dividing *both* vectors by the teacher's per-sample RMS, i.e.
    ``||p - t||^2 / ||t||^2`` (a normalised MSE). Raw MSE would scale with the teacher's feature
    magnitude (which differs by orders of magnitude between backbones) and so silently reweight the
    term; this version is invariant to that scale, needs no dataset statistics, does not depend on
    the batch, is zero only when ``p == t``, and, unlike cosine, also penalises a wrong norm.
    """

    requires = (("outputs", "projected"), ("batch", "teacher_features"))
    kinds = ("cosine", "mse")

    def __init__(self, kind: str = "cosine", eps: float = 1e-6) -> None:
        super().__init__()
        if kind not in self.kinds:
            raise ValueError(f"feature loss kind must be one of {self.kinds}, got {kind!r}")
        self.kind = kind
        self.eps = eps

    def forward(self, outputs: Tensors, batch: Tensors) -> torch.Tensor:
        student = outputs["projected"].float()
        teacher = batch["teacher_features"].detach().float()
        if student.shape != teacher.shape:
            raise ValueError(
                f"FeatureKD: projected features {tuple(student.shape)} and teacher features "
                f"{tuple(teacher.shape)} differ in shape"
            )
        if self.kind == "cosine":
            return (1.0 - F.cosine_similarity(student, teacher, dim=-1, eps=self.eps)).mean()
        rms = teacher.pow(2).mean(dim=-1, keepdim=True).add(self.eps).sqrt()
        return F.mse_loss(student / rms, teacher / rms)


class ComplexityPenalty(LossTerm):
    """The lightweight-search cost term: the expected size of the student the search would derive.

    Reads the expected parameters and/or FLOPs that the search network puts in ``outputs``
    (``arch_params`` / ``arch_flops``, differentiable in the architecture parameters; see
    ``rkd.nas.complexity``). Per metric, either

    * no budget: ``expected / scale``, the cost relative to a reference (the search uses the expected
      cost of the uniform architecture), so the term is about 1 at the start and its weight means
      "how much accuracy loss one reference-sized student is worth" whatever the units; or
    * a budget ``B``: the hinge ``max(0, expected / B - 1)``, zero inside the budget, so the search
      is free to pick the most accurate cells that fit and pays only for the excess.

    ``metrics`` ``("params", "flops")`` adds both terms.
    """

    metric_keys = {"params": "arch_params", "flops": "arch_flops"}

    def __init__(
        self, metrics: Sequence[str], scale: Mapping[str, float], budget: Mapping[str, float | None] | None = None
    ) -> None:
        super().__init__()
        metrics = list(metrics)
        if not metrics or any(m not in self.metric_keys for m in metrics):
            raise ValueError(
                f"complexity metrics {metrics!r} are invalid: expected a non-empty subset of {sorted(self.metric_keys)}"
            )
        budget = dict(budget or {})
        self.metrics = metrics
        self.scale: dict[str, float] = {}
        self.budget: dict[str, float | None] = {}
        for m in metrics:
            b = budget.get(m)
            if b is not None and not b > 0:
                raise ValueError(f"complexity budget for {m!r} = {b!r} is invalid: expected a number > 0, or None")
            self.budget[m] = None if b is None else float(b)
            if b is None:
                s = scale.get(m)
                if s is None or not s > 0:
                    raise ValueError(f"complexity scale for {m!r} = {s!r} is invalid: expected a number > 0")
                self.scale[m] = float(s)
        self.requires = tuple(("outputs", self.metric_keys[m]) for m in metrics)

    def forward(self, outputs: Tensors, batch: Tensors) -> torch.Tensor:
        total: torch.Tensor | None = None
        for m in self.metrics:
            expected = outputs[self.metric_keys[m]].float()
            b = self.budget[m]
            term = expected / self.scale[m] if b is None else F.relu(expected / b - 1.0)
            total = term if total is None else total + term
        assert total is not None
        return total


class CompositeLoss(nn.Module):
    """Weighted sum of named terms; returns ``(total, parts)`` with each part unweighted and detached.

    Terms with weight 0 are neither checked nor computed, so e.g. a task-only baseline needs no
    teacher outputs in the batch.
    """

    def __init__(self, terms: Mapping[str, tuple[float, nn.Module]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("CompositeLoss needs at least one term")
        self.weights: dict[str, float] = {}
        self.terms = nn.ModuleDict()
        for name, (weight, module) in terms.items():
            weight = float(weight)
            if not weight >= 0:
                raise ValueError(f"loss term {name!r}: weight must be >= 0, got {weight}")
            self.weights[name] = weight
            self.terms[name] = module
        if all(w == 0 for w in self.weights.values()):
            raise ValueError(f"CompositeLoss: all term weights are 0 ({self.weights}); nothing to optimise")

    def active(self) -> list[str]:
        """Names of the terms that will be computed (weight > 0)."""
        return [name for name, weight in self.weights.items() if weight > 0]

    def output_keys(self) -> set | None:
        """The model outputs the active terms read, or None when a term does not list what it reads.

        Under DDP a parameter that reaches no loss term breaks the gradient all-reduce, so ``rkd.engine``
        freezes the heads whose outputs nothing reads (``DistilledStudent.output_heads``)."""
        keys = set()
        for name in self.active():
            requires = getattr(self.terms[name], "requires", None)
            if requires is None:
                return None
            keys |= {key for source, key in requires if source == "outputs"}
        return keys

    def _check_inputs(self, name: str, module: nn.Module, outputs: Tensors, batch: Tensors) -> None:
        sources = {"outputs": outputs, "batch": batch}
        for source, key in getattr(module, "requires", ()):
            if key not in sources[source]:
                raise MissingInputError(
                    f"loss term {name!r} needs {source}[{key!r}], which is missing "
                    f"({source} has keys {sorted(sources[source])})"
                )

    def forward(self, outputs: Tensors, batch: Tensors) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total: torch.Tensor | None = None
        parts: dict[str, torch.Tensor] = {}
        for name in self.active():
            module = self.terms[name]
            self._check_inputs(name, module, outputs, batch)
            try:
                value = module(outputs, batch)
            except MissingInputError:
                raise
            except KeyError as err:  # a term without (complete) ``requires`` read a missing key
                raise MissingInputError(f"loss term {name!r} needs key {err.args[0]!r}, which is missing") from err
            parts[name] = value.detach().float()
            weighted = self.weights[name] * value
            total = weighted if total is None else total + weighted
        assert total is not None  # guaranteed by the constructor
        return total, parts


# name (a LossConfig weight field) -> the term built from the loss config section and the stage's label smoothing
TermFactory = Callable[[Any, float], LossTerm]
LOSS_TERMS: dict[str, TermFactory] = {}


def loss_term(name: str) -> Callable[[TermFactory], TermFactory]:
    """Register a term of the stages' loss under ``name``, the ``LossConfig`` field that holds its weight."""

    def register(factory: TermFactory) -> TermFactory:
        if name in LOSS_TERMS:
            raise ValueError(f"loss term {name!r} is registered twice")
        LOSS_TERMS[name] = factory
        return factory

    return register


@loss_term("task")
def task_term(cfg: Any, label_smoothing: float) -> LossTerm:
    """Cross-entropy on the labels, smoothed as the stage's ``train.label_smoothing`` says."""
    return TaskLoss(label_smoothing)


@loss_term("logit_kd")
def logit_kd_term(cfg: Any, label_smoothing: float) -> LossTerm:
    """Soft targets from the cached teacher logits at ``temperature``."""
    return LogitKD(cfg.temperature)


@loss_term("feature_kd")
def feature_kd_term(cfg: Any, label_smoothing: float) -> LossTerm:
    """The projected student feature against the cached teacher feature, by ``feature_loss``."""
    return FeatureKD(cfg.feature_loss)


def loss_weights(cfg: Any) -> dict[str, float]:
    """The weight of every registered term in a ``LossConfig``."""
    return {name: float(getattr(cfg, name)) for name in LOSS_TERMS}


def teacher_terms(cfg: Any) -> list[str]:
    """The registered terms that read the cached teacher (the KD terms), as built from ``cfg``."""
    return [
        name
        for name, make in LOSS_TERMS.items()
        if any(source == "batch" and key.startswith("teacher_") for source, key in make(cfg, 0.0).requires)
    ]


def build_kd_loss(
    cfg: Any, label_smoothing: float = 0.0, extra: Mapping[str, tuple[float, nn.Module]] | None = None
) -> CompositeLoss:
    """The stages' loss a ``LossConfig`` describes: every registered term at its weight, in registration order;
    ``extra`` terms (e.g. the search's complexity penalty) follow them."""
    terms = {name: (getattr(cfg, name), make(cfg, label_smoothing)) for name, make in LOSS_TERMS.items()}
    return CompositeLoss({**terms, **(extra or {})})
