"""The search's network and engine objective: the supernet with a feature projector, the KD + complexity
loss, and the objective whose ``before_update`` hook lets the architect step on val batches."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rkd.config import SearchConfig
from rkd.data import DataBundle
from rkd.engine import Step
from rkd.losses import ComplexityPenalty, CompositeLoss, build_kd_loss
from rkd.nas.architect import Architect
from rkd.nas.complexity import ExpectedCost
from rkd.nas.genotype import Genotype, genotype_to_dict
from rkd.nas.heads import FeatureProjector
from rkd.nas.supernet import SuperNet
from rkd.optim import build_scheduler


class SearchNetwork(nn.Module):
    """Supernet + feature projector: the search-time counterpart of ``DistilledStudent``.

    It passes every supernet output through (``arch_params``/``arch_flops`` included) and adds
    ``projected`` for feature KD, so ``build_kd_loss``'s terms and the complexity term all read it.
    """

    def __init__(self, supernet: SuperNet, teacher_feature_dim: int) -> None:
        super().__init__()
        self.supernet = supernet
        self.projector = FeatureProjector(supernet.feature_dim, teacher_feature_dim)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.supernet(x)
        out["projected"] = self.projector(out["features"])
        return out

    def arch_parameters(self) -> list[nn.Parameter]:
        return self.supernet.arch_parameters()

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def genotype(self, max_skips: int | None = None) -> Genotype:
        return self.supernet.genotype(max_skips)


def build_search_network(
    s: SearchConfig, bundle: DataBundle, teacher_feature_dim: int, cost: ExpectedCost | None
) -> SearchNetwork:
    supernet = SuperNet(
        bundle.channels,
        bundle.num_classes,
        s.primitives,
        init_channels=s.init_channels,
        layers=s.layers,
        nodes=s.nodes,
        stem_stride=s.stem_stride,
        partial_channels=s.partial_channels,
        edge_normalization=s.edge_normalization,
        cost=cost,
    )
    return SearchNetwork(supernet, teacher_feature_dim)


def complexity_metrics(kind: str) -> list[str]:
    return ["params", "flops"] if kind == "both" else [kind]


def build_search_loss(s: SearchConfig, cost: ExpectedCost, complexity_weight: float) -> CompositeLoss:
    """Task + logit KD + feature KD (the stage-1 terms) + the complexity penalty, scaled by the uniform cost."""
    penalty = ComplexityPenalty(
        complexity_metrics(s.complexity),
        scale=cost.uniform(),
        budget={"params": s.param_budget, "flops": s.flops_budget},
    )
    return build_kd_loss(s.loss, s.train.label_smoothing, extra={"complexity": (complexity_weight, penalty)})


def weight_lr_schedule(train_cfg, total_steps: int) -> Callable[[int], float]:
    """The weight learning rate at a step, from the engine's own schedule (for the unrolled step)."""
    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=train_cfg.lr)
    factor = build_scheduler(dummy, train_cfg, total_steps).lr_lambdas[0]
    return lambda step: train_cfg.lr * factor(step)


# ----------------------------------------------------------------------------- objective


class SearchObjective:
    """The engine objective of the search: the loss on train/val batches, plus the architecture step.

    ``before_update`` (called by ``rkd.engine.fit`` before each weight update) logs the architecture
    at every epoch start and, after the warm-up, lets the architect take one step on a val batch.
    """

    def __init__(
        self,
        transform,
        cache,
        loss: CompositeLoss,
        warmup_steps: int,
        steps_per_epoch: int,
        unwrap: Callable[[nn.Module], nn.Module],
        alpha_log: Path | None = None,
        max_skips: int | None = None,
    ) -> None:
        self.transform = transform
        self.cache = cache
        self.loss = loss
        self.warmup_steps = warmup_steps
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.unwrap = unwrap
        self.alpha_log = alpha_log
        self.max_skips = max_skips
        self.architect: Architect | None = None

    def evaluate(self, forward: Callable[[torch.Tensor], dict], batch: dict, split: str) -> tuple:
        x = self.transform(batch["pixels"])
        outputs = forward(x)
        targets = {"label": batch["label"], **self.cache.targets(split, batch["index"])}
        total, parts = self.loss(outputs, targets)
        return total, parts, outputs

    def loss_of(self, forward: Callable[[torch.Tensor], dict], batch: dict, split: str) -> torch.Tensor:
        """The architect's loss function (``forward`` may run the model with substituted weights)."""
        return self.evaluate(forward, batch, split)[0]

    def __call__(self, model: nn.Module, batch: dict, train: bool) -> Step:
        total, parts, outputs = self.evaluate(model, batch, "train" if train else "val")
        terms = dict(parts)
        for key in ("arch_params", "arch_flops"):
            if key in outputs:
                terms[f"expected_{key[5:]}"] = outputs[key].detach()
        if train and self.architect is not None and self.architect.last_val_loss is not None:
            terms["arch_val_loss"] = self.architect.last_val_loss
        return Step(loss=total, logits=outputs["logits"], labels=batch["label"], terms=terms)

    def before_update(self, model: nn.Module, batch: dict, step: int) -> None:
        if step % self.steps_per_epoch == 0:
            network = self.unwrap(model)
            assert isinstance(network, SearchNetwork), (
                f"the search trains a SearchNetwork, not a {type(network).__name__}"
            )
            self.log_architecture(network, step, epoch=step // self.steps_per_epoch)
        if self.architect is not None and step >= self.warmup_steps:
            self.architect.step(self.unwrap(model), batch, step)

    def log_architecture(self, model: SearchNetwork, step: int, epoch: Any) -> None:
        if self.alpha_log is None:
            return
        with torch.no_grad():
            w = model.supernet.arch_weights()
            record = {
                "epoch": epoch,
                "step": step,
                "primitives": model.supernet.primitives,
                "normal": w.normal.cpu().tolist(),
                "reduce": w.reduce.cpu().tolist(),
                "genotype": genotype_to_dict(model.genotype(self.max_skips)),
            }
            if w.normal_edges is not None and w.reduce_edges is not None:
                record["normal_edges"] = w.normal_edges.cpu().tolist()
                record["reduce_edges"] = w.reduce_edges.cpu().tolist()
            if model.supernet.cost is not None:
                record.update({f"expected_{k}": float(v) for k, v in model.supernet.expected_cost().items()})
        self.alpha_log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.alpha_log, "a") as handle:
            handle.write(json.dumps(record) + "\n")
