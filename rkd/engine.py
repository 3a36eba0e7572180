"""The one training loop every stage uses (teacher fine-tuning, stage 1, stage 2, baselines).

Stages differ in model, objective and data, never in loop code. The loop owns what every stage
needs alike: Accelerate preparation, optimiser and schedule, gradient clipping, progress bar,
JSON-lines log, resumable checkpoints (mid-epoch, via ``skip_first_batches``), per-epoch
validation with best-model selection, a stop on non-finite losses, and checkpoint-then-exit on
SIGTERM/SIGUSR1 (what SLURM sends before a time limit or preemption).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedType, set_seed
from safetensors.torch import load_file, save_file

from rkd import optim
from rkd.config import TrainConfig
from rkd.hardware.decide import student_precision
from rkd.hardware.efficiency import Throughput, batch_images
from rkd.run.artifacts import atomic_write
from rkd.run.checkpoint import Checkpointer
from rkd.run.collective import check_replicas, process_group_kwargs, vote
from rkd.run.estimate import advance
from rkd.run.launch_check import applied_clipping, check_launch, use_stage_clipping
from rkd.run.preemption import SignalFlag, StopRequested
from rkd.run.progress import progress_bar
from rkd.run.tracking import log_record


@dataclass
class Step:
    """What an objective returns for one batch."""

    loss: torch.Tensor
    logits: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    terms: dict = field(default_factory=dict)
    stop: bool = False  # set by ``train_step``: some rank received a stop signal (all ranks agree)


Objective = Callable[[torch.nn.Module, dict, bool], Step]


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/Inf; the last good checkpoint is kept on disk. ``loss`` and ``terms`` say what."""

    def __init__(self, message: str, loss: float = math.nan, terms: dict | None = None) -> None:
        super().__init__(message)
        self.loss, self.terms = loss, dict(terms or {})


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def make_accelerator(
    mixed_precision: str = "auto",
    cpu: bool | None = None,
    seed: int = 0,
    log_with: list | None = None,
    project_dir: str | None = None,
    collective_timeout_minutes: float | None = None,
) -> Accelerator:
    """An Accelerator with seedable samplers (so a resumed epoch replays the same order).

    ``mixed_precision`` (auto, no/fp32, bf16, fp16) is resolved by ``rkd.hardware.decide.student_precision``
    (``PrecisionError`` before anything starts for one the device or a DeepSpeed JSON cannot run). Under
    DeepSpeed, Accelerate's own mixed precision stays off: the JSON's ``torch_autocast`` computes in
    bf16/fp16 on fp32 master weights (DeepSpeed's bf16/fp16 modes cast the weights rkd's fp32 inputs feed).
    The process group: ``rkd.run.collective.process_group_kwargs``. Under a DeepSpeed launch ``cpu`` must stay
    False (Accelerate turns DeepSpeed off for cpu=True), so a CPU DeepSpeed run gets gloo with cpu=False.
    ``log_with`` / ``project_dir``: experiment trackers (``rkd.run.tracking.accelerator_kwargs``).
    """
    check_launch()  # GPUs asked for but absent, ZeRO-3, a fixed DeepSpeed clipping: refused before any stage
    deepspeed = _env_flag("ACCELERATE_USE_DEEPSPEED")
    if cpu is None:
        cpu = not deepspeed and (not torch.cuda.is_available() or _env_flag("ACCELERATE_USE_CPU"))
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    no_gpu = cpu or not torch.cuda.is_available()
    precision = student_precision(mixed_precision, "cpu" if no_gpu else "cuda")
    kwargs = [process_group_kwargs(no_gpu, collective_timeout_minutes)] if distributed else []
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision="no" if deepspeed else precision.accelerate,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, non_blocking=torch.cuda.is_available()),
        kwargs_handlers=kwargs,
        log_with=log_with or None,
        project_dir=project_dir,
    )
    if deepspeed and accelerator.distributed_type != DistributedType.DEEPSPEED:
        raise RuntimeError(
            f"accelerate launch asked for DeepSpeed but the run became {accelerator.distributed_type.value}: "
            f"ACCELERATE_USE_CPU={os.environ.get('ACCELERATE_USE_CPU')!r} turns DeepSpeed off. For DeepSpeed on CPU, "
            f"launch without ACCELERATE_USE_CPU (rkd picks gloo itself)."
        )
    set_seed(seed)
    return accelerator


@torch.no_grad()
def evaluate(accelerator: Accelerator, model: torch.nn.Module, objective: Objective, loader) -> dict:
    """Accuracy and mean loss over a loader, gathered across processes without duplicates."""
    was_training = model.training
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    for batch in loader:
        step = objective(model, batch, False)
        assert step.logits is not None and step.labels is not None, "an evaluated objective returns logits and labels"
        preds, labels = accelerator.gather_for_metrics((step.logits.argmax(-1), step.labels))
        correct += int((preds == labels).sum())
        total += int(labels.numel())
        loss_sum += float(step.loss) * int(labels.numel())
    model.train(was_training)
    return {"accuracy": correct / max(1, total), "loss": loss_sum / max(1, total), "n": total}


def train_step(
    accelerator: Accelerator,
    model: torch.nn.Module,
    objective: Objective,
    batch: dict,
    optimizer: torch.optim.Optimizer,
    scheduler=None,
    global_step: int = 0,
    grad_clip: float | None = None,
    signals: SignalFlag | None = None,
) -> Step:
    """One weight update, exactly as ``fit`` takes it (benchmarks time this, not a copy of it).

    The objective's ``set_step(global_step)`` and ``before_update(model, batch, global_step)`` hooks run
    first if it has them, then the forward pass. Then every rank votes in one all-reduce
    (``rkd.run.collective.vote``): a non-finite loss on any rank raises ``NonFiniteLossError`` on every
    rank before any gradient is applied, and a stop signal received by any rank (``signals``) sets
    ``Step.stop`` on every rank. Then backward, clipping (when gradients are synchronised), the
    optimiser and schedule steps, and the gradients are freed. ``model`` and ``optimizer`` are
    normally prepared by ``accelerator``.
    """
    set_step = getattr(objective, "set_step", None)
    if set_step is not None:
        set_step(global_step)
    before_update = getattr(objective, "before_update", None)
    if before_update is not None:
        before_update(model, batch, global_step)
    step = objective(model, batch, True)
    outcome = vote(accelerator, step.loss, signals is not None and signals.received is not None)
    if outcome.non_finite_ranks:
        loss, terms = float(step.loss.detach()), {k: float(v) for k, v in step.terms.items()}
        where = "" if outcome.world_size == 1 else f" on rank(s) {outcome.non_finite_ranks} of {outcome.world_size}"
        raise NonFiniteLossError(
            f"non-finite loss{where} at step {global_step} (this rank: {loss}); loss terms: {terms}", loss, terms
        )
    accelerator.backward(step.loss)
    if grad_clip is not None and accelerator.sync_gradients:
        accelerator.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    step.stop = outcome.stop
    return step


class _Run:
    """One ``fit`` call's state: the prepared objects, the progress record, the log and the progress bar."""

    def __init__(
        self,
        accelerator: Accelerator,
        model: torch.nn.Module,
        objective: Objective,
        loaders: tuple,  # (train, val)
        cfg: TrainConfig,
        out_dir: Path,
        desc: str,
        parameters: Iterable | None,
        checkpoint_objects: Sequence,
    ) -> None:
        train_loader, val_loader = loaders
        self.accelerator, self.objective, self.cfg, self.desc = accelerator, objective, cfg, desc
        self.out_dir = out_dir
        self.started = time.time()
        accelerator.free_memory()  # forget objects prepared by an earlier stage: a checkpoint holds this stage only
        if parameters is None:
            optim.freeze_unread_heads(model, objective, accelerator.print)
            parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = optim.build_optimizer(parameters, cfg)
        scheduler = optim.build_scheduler(optimizer, cfg, optim.schedule_steps(cfg, len(train_loader)))
        use_stage_clipping(accelerator, cfg.grad_clip)
        self.model, self.optimizer, self.train_loader, self.val_loader, self.scheduler = accelerator.prepare(
            model, optimizer, train_loader, val_loader, scheduler
        )
        self.total_steps = optim.schedule_steps(cfg, len(self.train_loader))  # per process, after sharding
        # Accelerate advances the schedule once per process at every update (N processes take N batches
        # per update), so the schedule spans N x this process's updates and ends with the last one,
        # max_steps included.
        optim.set_schedule_length(scheduler, self.total_steps * accelerator.num_processes)
        self.checkpointer = Checkpointer(accelerator, out_dir, objective=objective, objects=checkpoint_objects)
        self.progress: dict[str, Any] = dict(
            global_step=0, epoch=0, step_in_epoch=0, best_val_accuracy=-1.0, history=[]
        )
        resumed = self.checkpointer.latest()
        self.best_path, self.on_loss = out_dir / "best.safetensors", optim.selects_on_loss(objective)
        if resumed is not None:
            self.checkpointer.load(resumed)
            self.progress = {k: resumed[k] for k in self.progress}
            accelerator.print(
                f"[{desc}] resumed from {resumed['dir']} (step {self.progress['global_step']}/{self.total_steps})"
            )
        self.throughput = Throughput()
        self.log_path = out_dir / "log.jsonl"
        self.bar = progress_bar(
            self.total_steps,
            desc,
            enabled=accelerator.is_local_main_process,
            unit="steps",
            initial=self.progress["global_step"],
        )

    def log(self, record: dict) -> None:
        if self.accelerator.is_main_process:
            with open(self.log_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            log_record(self.accelerator, record)  # the same numbers to the experiment trackers, if any

    def step(self, batch: dict, epoch: int, signals: SignalFlag) -> Step:
        """``train_step`` at the current global step; a non-finite loss is reported with where to resume from."""
        progress = self.progress
        try:
            step = self.throughput.step(
                lambda: train_step(
                    self.accelerator,
                    self.model,
                    self.objective,
                    batch,
                    self.optimizer,
                    self.scheduler,
                    progress["global_step"],
                    self.cfg.grad_clip,
                    signals,
                ),
                batch_images(batch),
                progress["global_step"],
            )
            advance(f"{self.desc}:train")
            return step
        except NonFiniteLossError as err:
            raise NonFiniteLossError(
                f"[{self.desc}] {err} (epoch {epoch}). The last good checkpoint is kept in {self.checkpointer.root}; "
                f"lower the learning rate or set grad_clip, then rerun to resume.",
                err.loss,
                err.terms,
            ) from None

    def train_epoch(self, flag: SignalFlag) -> None:
        """The rest of the current epoch (or of the step budget), with logging, checkpoints and signal stops."""
        progress, cfg, accelerator = self.progress, self.cfg, self.accelerator
        epoch = progress["epoch"]
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(epoch)
        loader = self.train_loader
        if progress["step_in_epoch"]:
            loader = accelerator.skip_first_batches(self.train_loader, progress["step_in_epoch"])
        for batch in loader:
            step = self.step(batch, epoch, flag)
            progress["global_step"] += 1
            progress["step_in_epoch"] += 1
            self.bar.update(1)
            if progress["global_step"] % cfg.log_every == 0 or progress["global_step"] == 1:
                record = {
                    "stage": self.desc,
                    "step": progress["global_step"],
                    "epoch": epoch,
                    "loss": float(step.loss.detach()),
                    "lr": self.scheduler.get_last_lr()[0],
                    "time": time.time() - self.started,
                }
                record.update({k: float(v) for k, v in step.terms.items()})
                self.log(record)
                self.bar.set_postfix(loss=f"{float(step.loss.detach()):.4f}")
            done = progress["global_step"] >= self.total_steps
            if step.stop:
                self.checkpointer.save(progress)
                self.bar.close()
                accelerator.print(
                    f"[{self.desc}] signal {flag.received or 'on another process'}: checkpoint saved "
                    f"at step {progress['global_step']}; exiting"
                )
                raise StopRequested(0)
            if done:
                break
            if progress["global_step"] % cfg.checkpoint_every == 0:
                self.checkpointer.save(progress)

    def best_epoch(self) -> int | None:
        """The epoch whose weights are kept: the first with the best val accuracy, or with the lowest val loss
        when no loss term reads the logits (``rkd.optim.selects_on_loss``)."""
        history, (field, sign) = self.progress["history"], ("val_loss", -1) if self.on_loss else ("val_accuracy", 1)
        return max(range(len(history)), key=lambda i: (sign * history[i][field], -i)) if history else None

    def patience_exhausted(self) -> bool:
        """True when ``early_stop_patience`` epochs have passed since the best epoch."""
        patience, best = self.cfg.early_stop_patience, self.best_epoch()
        return patience is not None and best is not None and len(self.progress["history"]) - 1 - best >= patience

    def end_epoch(self) -> None:
        """Validate, keep the best weights, move to the next epoch and checkpoint."""
        progress, accelerator = self.progress, self.accelerator
        epoch = progress["epoch"]
        metrics = evaluate(accelerator, self.model, self.objective, self.val_loader)
        advance(f"{self.desc}:val", metrics["n"] / accelerator.num_processes)
        record = {
            "stage": self.desc,
            "epoch": epoch,
            "step": progress["global_step"],
            "val_accuracy": metrics["accuracy"],
            "val_loss": metrics["loss"],
            "time": time.time() - self.started,
        }
        self.log(record)
        progress["history"].append(record)
        self.bar.mark()  # in a job log: one progress line per epoch at least
        accelerator.print(f"[{self.desc}] epoch {epoch}: val accuracy {metrics['accuracy']:.4f}")
        if self.best_epoch() == len(progress["history"]) - 1:
            progress["best_val_accuracy"] = metrics["accuracy"]  # the kept weights' accuracy
            state = accelerator.get_state_dict(self.model)  # gathered from every process (None off rank 0 under ZeRO-3)
            state = {k: v.detach().cpu().contiguous() for k, v in (state or {}).items()}
            if accelerator.is_main_process:
                atomic_write(self.best_path, lambda p: save_file(state, str(p)))
        progress["epoch"] += 1
        progress["step_in_epoch"] = 0
        self.checkpointer.save(progress)


def fit(
    accelerator: Accelerator,
    model: torch.nn.Module,
    objective: Objective,
    train_loader,
    val_loader,
    cfg: TrainConfig,
    out_dir: Path,
    desc: str = "train",
    parameters: Iterable | None = None,
    checkpoint_objects: Sequence = (),
    until_epoch: int | None = None,
) -> dict:
    """Train ``model`` with ``objective``; on return ``model`` holds the best epoch's weights (``_Run.best_epoch``).

    ``parameters``: what the optimiser updates (default: all). An objective's ``set_step(global_step)`` is
    told the step before each update (stage 2 rotates SNR buckets); its ``before_update(model, batch,
    global_step)`` gets each batch first (the search's architecture step; it must leave the weights'
    gradients untouched). ``checkpoint_objects``: more state (``state_dict``/``load_state_dict``, such as
    the search's ``Architect``) in this call's checkpoints only. ``until_epoch``: stop after that many epochs
    of the ``cfg.epochs`` schedule; a later call on ``out_dir`` resumes as uninterrupted training would
    have gone on (the candidate selection's screening uses it).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(
        accelerator, model, objective, (train_loader, val_loader), cfg, out_dir, desc, parameters, checkpoint_objects
    )
    progress = run.progress
    run.model.train()
    last_epoch = cfg.epochs if until_epoch is None else min(cfg.epochs, until_epoch)
    with SignalFlag() as flag:
        while progress["global_step"] < run.total_steps and progress["epoch"] < last_epoch:
            if run.patience_exhausted():  # also when resuming a run that stopped early
                better = "lower val loss" if run.on_loss else "better val accuracy"
                accelerator.print(f"[{desc}] early stop: no {better} in {cfg.early_stop_patience} epochs")
                break
            run.train_epoch(flag)
            # end of epoch (or of the step budget): validate, keep the best, checkpoint
            run.end_epoch()
    run.bar.close()
    identical = check_replicas(accelerator, run.model, desc)  # the last weights; the best are read from one file
    unwrapped = accelerator.unwrap_model(run.model)
    if run.best_path.exists():
        unwrapped.load_state_dict(load_file(str(run.best_path)))
    return {
        "best_val_accuracy": progress["best_val_accuracy"],
        "selected_on": "val loss" if run.on_loss else "val accuracy",
        "history": progress["history"],
        "steps": progress["global_step"],
        "epochs": progress["epoch"],
        "stopped_early": run.patience_exhausted(),
        "seconds": time.time() - run.started,
        "grad_clip": applied_clipping(accelerator, run.model, cfg.grad_clip),
        "replicas_identical": identical,
        "throughput": run.throughput.summary(processes=accelerator.num_processes),
    }
