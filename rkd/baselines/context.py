"""What every baseline method shares: the main run's inputs, the comparison grid, its directory, its size probes.

The methods never import the pipeline: the caller hands in a ``run_stages(cfg, until)`` function
that runs a config's stages (the main run, an ablation's or the conference student's variant) and
returns the run's ``RunInputs``, whose data bundle and teacher cache load on first use (a method
that needs neither never loads them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator

from rkd.baselines import budget
from rkd.channels import channel_label
from rkd.config import RunConfig
from rkd.data import student_transform
from rkd.draws import training_channel_specs
from rkd.evaluation.sweep import channel_sweep, snr_grid
from rkd.measure import count_flops, count_params
from rkd.run.artifacts import atomic_write_json, read_json
from rkd.run.rundir import ResumableDir
from rkd.stages.inputs import RunInputs

RKD_METHOD = "rkd-sc"
RunStages = Callable[[RunConfig, str], RunInputs]  # run cfg's stages up to ``until`` (collective); its inputs


def trained_labels(channel_cfg) -> list:
    """The eval labels of the channels (and CSI modes) a method was trained on (its training mixture)."""
    return sorted({channel_label(spec) for spec in training_channel_specs(channel_cfg)})


def receiver_csi_labels(channel_specs: list) -> list:
    """The eval channels a digital scheme is designed for: those where its receiver knows the channel exactly."""
    return [channel_label(s) for s in channel_specs if s["name"] == "awgn" or s.get("csi", "perfect") == "perfect"]


def coded_link_labels(channel_specs: list) -> list:
    """The eval channels an explicit-code scheme is designed for: those where its receiver knows ``h`` or
    estimates it from pilots it sends within ``k`` (coherent decoding); not fading without CSI."""
    return [channel_label(s) for s in channel_specs if s["name"] == "awgn" or s.get("csi", "perfect") != "none"]


def comparison_grid(cfg: RunConfig) -> list:
    """The eval grid plus ``baselines.extra_snrs``, sorted."""
    return sorted({float(s) for s in snr_grid(cfg.eval)} | {float(s) for s in cfg.baselines.extra_snrs})


def ablation_label(name: str) -> str:
    return f"ablation:{name}"


class MethodDir(ResumableDir):
    """``runs/<name>/baselines/<dir>``: done when ``done.json`` holds the current hash (like a pipeline stage)."""

    def done(self) -> dict | None:
        marker = self.path / "done.json"
        if marker.exists() and read_json(marker).get("hash") == self.hash and (self.path / "results.json").exists():
            return read_json(self.path / "results.json")
        return None

    def finish(self, results: dict) -> None:
        atomic_write_json(self.path / "results.json", results)
        atomic_write_json(self.path / "done.json", {"hash": self.hash, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})


@dataclass
class Context:
    """What every method needs, loaded once: the main run's data, cache, test inputs and grid."""

    cfg: RunConfig
    accelerator: Accelerator
    run: RunInputs
    run_stages: RunStages
    grid: list
    kept: list | None = None  # per-image correctness of each swept record (baselines.per_image)

    @property
    def bundle(self):
        return self.run.bundle

    @property
    def cache(self):
        return self.run.cache

    @property
    def teacher_dim(self) -> int:
        return int(self.cache.features["test"].shape[1])

    @property
    def transform(self):
        return student_transform(self.cfg.data, self.bundle)

    def inputs(self, split: str) -> torch.Tensor:
        return self.transform(self.bundle.splits[split].images)

    @property
    def labels(self) -> torch.Tensor:
        return self.bundle.splits["test"].labels

    @property
    def rates(self) -> list:
        return list(self.cfg.eval.rates or self.cfg.codec.rates)

    @property
    def n_train(self) -> int:
        return int(self.bundle.splits["train"].labels.numel())

    def upstream_budget(self, stages: tuple = ("teacher", "cache", "search", "stage1")) -> dict:
        """The main run's finished stages a method builds on (teacher, cache, search, stage 1)."""
        return budget.pipeline_costs(self.cfg, self.cfg.run_dir, stages, self.n_train)

    def sweep(self, model, inputs, rates, method, snrs: list | None = None) -> list:
        """The channel sweep of ``model`` on the comparison grid (or ``snrs``), per-image correctness kept."""
        e = self.cfg.eval
        return channel_sweep(
            model,
            inputs,
            self.labels,
            e.channels,
            self.grid if snrs is None else snrs,
            rates,
            e.batch_size,
            e.seed,
            progress=self.accelerator.is_local_main_process,
            method=method,
            keep=self.kept,
        )


def link_sizes(tx_params: int, rx_params: int, tx_call: Callable, rx_call: Callable) -> dict:
    """Parameters and FLOPs per image of both ends of a link (each call runs on one image)."""
    return {
        "tx_params": int(tx_params),
        "rx_params": int(rx_params),
        "tx_flops": count_flops(tx_call),
        "rx_flops": count_flops(rx_call),
    }


def receiver_probe(model, z: torch.Tensor) -> Callable:
    """The receiver's forward on one received code ``z`` (full mask, zero state), for counting its FLOPs."""
    mask = torch.ones(z.shape, dtype=torch.bool)
    state = torch.zeros(z.shape[0], 2)
    return lambda: model.classify(model.decoder(z, mask, state))


def student_params(student) -> int:
    """The student as a feature extractor: without its classifier head (which the transmitter never runs)."""
    return count_params(student) - count_params(student.classifier)


def method_path(root: Path, name: str) -> Path:
    """A method's directory under ``baselines/`` (``ablation:x`` -> ``ablation-x``)."""
    return Path(root) / name.replace(":", "-")
