"""The distillation objective shared by stage 1, stage 2 and the baselines: batch -> model -> KD loss.

The loss reads the cached teacher rows of the batch (no teacher forward pass). With channel settings
the objective also draws each sample's SNR (from this process's SNR bucket), channel and channel
uses k, and keeps a log of the buckets it drew from.
"""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate.utils import gather_object

from rkd.draws import SNRSampler, sample_rates, training_channel_specs
from rkd.engine import Step
from rkd.evaluation.records import validation_batch_generator
from rkd.run.artifacts import atomic_write_json


class DistillObjective:
    """Batch -> student input -> model -> KD loss against the cached teacher rows of that batch.

    Training batches come from the train split, evaluation batches from ``eval_split``.
    With ``channel`` settings it is the stage-2 objective: it draws SNR (from this process's SNR
    bucket at this step), channel type and channel uses k per sample.
    """

    def __init__(
        self,
        transform,
        cache,
        loss,
        channel_cfg=None,
        rates=None,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        proportional_rates: bool = False,
    ) -> None:
        self.transform = transform
        self.cache = cache
        self.loss = loss
        self.channel_cfg = channel_cfg
        self.rates = list(rates or [])
        self.proportional_rates = proportional_rates
        self.n_channels = len(training_channel_specs(channel_cfg)) if channel_cfg is not None else 0
        self.eval_split = "val"
        self.step = 0
        self.seed = seed
        self.bucket_log: list = []  # [step, [buckets], min SNR, max SNR] per training batch (see write_snr_bucket_log)
        if channel_cfg is not None:
            self.sampler = SNRSampler(
                channel_cfg.snr_min, channel_cfg.snr_max, channel_cfg.snr_buckets, rank=rank, world_size=world_size
            )
        self.generator = torch.Generator().manual_seed(seed * 1000 + rank)

    def set_step(self, step: int) -> None:
        self.step = step

    def cache_on(self, device: torch.device):
        """The teacher cache on ``device``, moved there once: each batch's rows are then gathered on the device,
        not on the CPU with a copy per step."""
        if getattr(self, "_cache_device", None) != device:
            self._device_cache = self.cache.to(device) if hasattr(self.cache, "to") else self.cache
            self._cache_device = device
        return self._device_cache

    def output_keys(self) -> set | None:
        """The model outputs the loss reads (``rkd.losses.CompositeLoss.output_keys``)."""
        return self.loss.output_keys()

    def channel_draw(self, batch_size: int, train: bool, first_index: int) -> tuple:
        """SNR, k and channel id per sample; evaluation draws are a fixed function of the batch."""
        if train:
            gen = self.generator
            snr = self.sampler.sample(batch_size, self.step, generator=gen)
            self.bucket_log.append([self.step, self.sampler.buckets_for(self.step), float(snr.min()), float(snr.max())])
        else:
            gen = validation_batch_generator(first_index, self.seed)
            lo, hi = self.channel_cfg.snr_min, self.channel_cfg.snr_max
            snr = lo + (hi - lo) * torch.rand(batch_size, generator=gen)
        k = sample_rates(batch_size, self.rates, generator=gen, proportional=self.proportional_rates and train)
        channel_ids = torch.randint(0, self.n_channels, (batch_size,), generator=gen)
        return snr, k, channel_ids, gen

    def __call__(self, model, batch: dict, train: bool) -> Step:
        split = "train" if train else self.eval_split
        tokens = batch.get("tokens")  # stage 2 over a frozen student: its tokens, computed once
        x = self.transform(batch["pixels"]) if tokens is None else None
        targets = self.cache_on(batch["index"].device).targets(split, batch["index"])
        if self.channel_cfg is None:
            outputs = model(x)
        else:
            snr, k, channel_ids, gen = self.channel_draw(batch["label"].shape[0], train, int(batch["index"][0]))
            device = batch["label"].device
            extra = {} if tokens is None else {"tokens": tokens}  # the baselines' links take images only
            outputs = model(
                x, snr.to(device), k.to(device), channel_ids.to(device), generator=None if train else gen, **extra
            )
        full_batch = {"label": batch["label"], **targets}
        total, parts = self.loss(outputs, full_batch)
        return Step(loss=total, logits=outputs["logits"], labels=batch["label"], terms=parts)


SNR_LOG_STEPS = 5000  # steps kept per process in snr_buckets.json


def write_snr_bucket_log(accelerator, objective: DistillObjective, path: Path) -> None:
    """Gather which SNR buckets every process drew from at each step into one JSON on the main process.

    The bucket rule lives in ``SNRSampler``; this record lets a real multi-process run be checked
    against it (each rank's buckets, and the SNRs it drew staying inside them). Collective: every
    process must call it. After a resume it covers the steps since the resume.
    """
    mine = {"rank": accelerator.process_index, "steps": objective.bucket_log[-SNR_LOG_STEPS:]}
    everyone = gather_object([mine]) if accelerator.num_processes > 1 else [mine]
    if accelerator.is_main_process:
        sampler = objective.sampler
        atomic_write_json(
            path,
            {
                "world_size": accelerator.num_processes,
                "n_buckets": sampler.n_buckets,
                "edges": sampler.buckets(),
                "rule": "bucket = (rank + step * world_size) mod n_buckets",
                "ranks": sorted(everyone, key=lambda r: r["rank"]),
            },
        )
