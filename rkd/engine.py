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
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedType, InitProcessGroupKwargs, set_seed
from safetensors.torch import load_file, save_file

from rkd.artifacts import (IntegrityError, atomic_write, atomic_write_json, file_checksums, read_record,
                           verify_checksums)
from rkd.config import TrainConfig
from rkd.progress import progress_bar
from rkd.tracking import log_record


@dataclass
class Step:
    """What an objective returns for one batch."""

    loss: torch.Tensor
    logits: Optional[torch.Tensor] = None
    labels: Optional[torch.Tensor] = None
    terms: dict = field(default_factory=dict)


Objective = Callable[[torch.nn.Module, dict, bool], Step]


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/Inf; the last good checkpoint is kept on disk."""


class StopRequested(SystemExit):
    """A SIGTERM/SIGUSR1 arrived: a checkpoint was written and the process should exit."""


def make_accelerator(mixed_precision: str = "auto", cpu: Optional[bool] = None, seed: int = 0,
                     log_with: Optional[list] = None, project_dir: Optional[str] = None) -> Accelerator:
    """An Accelerator with seedable samplers (so a resumed epoch replays the same order).

    ``mixed_precision="auto"`` leaves the choice to the launcher (``accelerate launch`` exports the
    launch config's value as ACCELERATE_MIXED_PRECISION); any other value overrides it.
    gloo is chosen for CPU runs: DeepSpeed through Accelerate on CPU needs it, and it is the only
    backend that works there. Under a DeepSpeed launch ``cpu`` must stay False (Accelerate turns
    DeepSpeed off for cpu=True), so a CPU DeepSpeed run gets gloo with cpu=False.
    ``log_with`` / ``project_dir``: experiment trackers (``rkd.tracking.accelerator_kwargs``).
    """
    import os

    def flag(name: str) -> bool:
        return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")

    deepspeed = flag("ACCELERATE_USE_DEEPSPEED")
    if cpu is None:
        cpu = not deepspeed and (not torch.cuda.is_available() or flag("ACCELERATE_USE_CPU"))
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    no_gpu = cpu or not torch.cuda.is_available()
    kwargs = [InitProcessGroupKwargs(backend="gloo")] if no_gpu and distributed else []
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=None if mixed_precision == "auto" else mixed_precision,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
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
    if deepspeed and accelerator.mixed_precision != "no":
        raise RuntimeError(
            f"mixed precision {accelerator.mixed_precision!r} under DeepSpeed converts the weights to that dtype, "
            f"but rkd's objectives feed fp32 inputs. For bf16 use launch_configs/deepspeed_zero2_bf16.yaml "
            f"(DeepSpeed torch_autocast, fp32 master weights) with rkd's mixed_precision=auto or no."
        )
    set_seed(seed)
    return accelerator


def build_optimizer(params: Iterable, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    warmup = cfg.warmup_steps

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cfg.scheduler == "constant" or total_steps <= warmup:
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def evaluate(accelerator: Accelerator, model: torch.nn.Module, objective: Objective, loader) -> dict:
    """Accuracy and mean loss over a loader, gathered across processes without duplicates."""
    was_training = model.training
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    for batch in loader:
        step = objective(model, batch, False)
        preds, labels = accelerator.gather_for_metrics((step.logits.argmax(-1), step.labels))
        correct += int((preds == labels).sum())
        total += int(labels.numel())
        loss_sum += float(step.loss) * int(labels.numel())
    model.train(was_training)
    return {"accuracy": correct / max(1, total), "loss": loss_sum / max(1, total), "n": total}


class _SignalFlag:
    """Turns SIGTERM/SIGUSR1 into a flag the loop checks between steps."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s)

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def agreed(self, accelerator: Accelerator) -> bool:
        """True on every process as soon as any process got a signal, so all checkpoint at the same step.

        SLURM signals the processes of a job one by one: checked locally, one rank could enter the
        checkpoint's collectives while another runs the next step's all-reduce, and both would hang.
        """
        local = self.received is not None
        if accelerator.num_processes == 1:
            return local
        votes = torch.tensor([1.0 if local else 0.0], device=accelerator.device)
        return bool(accelerator.reduce(votes, reduction="sum").item() > 0)


def _unwrapped_state(accelerator: Accelerator, model: torch.nn.Module) -> dict:
    state = accelerator.get_state_dict(model)
    return {k: v.detach().cpu().contiguous() for k, v in state.items()} if state is not None else {}


class Checkpointer:
    """Resumable Accelerate state under ``out_dir/checkpoints``; ``latest.json`` is written last."""

    def __init__(self, accelerator: Accelerator, out_dir: Path, keep: int = 1, objective=None) -> None:
        self.accelerator = accelerator
        self.root = out_dir / "checkpoints"
        self.keep = keep
        # An objective's own generator (augmentation, channel draws) is part of the training state:
        # without it a resumed run would draw different noise than an uninterrupted one.
        self.generator = getattr(objective, "generator", None)

    def _generator_file(self, directory: Path) -> Path:
        return directory / f"objective-rng-rank{self.accelerator.process_index}.safetensors"

    def _fix(self) -> str:
        return (f"rkd will not load it. To restart this stage from its beginning, delete {self.root} "
                f"(the stage's other files and the stages before it are kept) and rerun the same command.")

    def latest(self) -> Optional[dict]:
        pointer = self.root / "latest.json"
        if not pointer.exists():
            return None
        record = read_record(pointer, self._fix())
        if not isinstance(record, dict) or not isinstance(record.get("dir"), str) or "files" not in record:
            raise IntegrityError(f"{pointer} is not a checkpoint record written by this version of rkd. {self._fix()}")
        if not (self.root / record["dir"]).is_dir():
            return None
        return record

    def save(self, progress: dict) -> None:
        name = f"step-{progress['global_step']:08d}"
        target = self.root / name
        self.accelerator.save_state(str(target))
        if isinstance(self.generator, torch.Generator):
            state = {"state": self.generator.get_state()}
            atomic_write(self._generator_file(target), lambda p: save_file(state, str(p)))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            # every rank's files, hashed once they all exist; the pointer (written last) carries them
            files = file_checksums(target)
            atomic_write_json(self.root / "latest.json", {"dir": name, **progress, "files": files})
            old = sorted(p for p in self.root.glob("step-*") if p.is_dir() and p.name != name)
            for stale in old[: max(0, len(old) - (self.keep - 1))]:
                shutil.rmtree(stale, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def load(self, record: dict) -> None:
        """Verify every file of the checkpoint against ``latest.json`` before anything is deserialised."""
        directory = self.root / record["dir"]
        verify_checksums(directory, record["files"], f"{self.root / 'latest.json'}", self._fix())
        self.accelerator.load_state(str(directory))
        if isinstance(self.generator, torch.Generator) and self._generator_file(directory).exists():
            self.generator.set_state(load_file(str(self._generator_file(directory)))["state"])


def fit(
    accelerator: Accelerator,
    model: torch.nn.Module,
    objective: Objective,
    train_loader,
    val_loader,
    cfg: TrainConfig,
    out_dir: Path,
    desc: str = "train",
    parameters: Optional[Iterable] = None,
) -> dict:
    """Train ``model`` with ``objective``; on return ``model`` holds the best-validation weights.

    ``parameters`` restricts what the optimiser updates (default: all of the model's).
    An objective with a ``set_step(global_step)`` method is told the step before each update
    (stage 2 uses it to rotate SNR buckets). An objective with a
    ``before_update(model, batch, global_step)`` method gets each training batch before the
    weight forward pass (the architecture search takes its architecture step there, with its own
    optimiser and validation batches; it must leave the weights' gradients untouched).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    accelerator.free_memory()  # forget objects prepared by an earlier stage: a checkpoint holds this stage only
    optimizer = build_optimizer(parameters if parameters is not None else model.parameters(), cfg)
    steps_per_epoch = len(train_loader)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    scheduler = build_scheduler(optimizer, cfg, total_steps)
    prepared_model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, scheduler
    )
    steps_per_epoch = len(train_loader)  # per process, after sharding
    total_steps = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.epochs * steps_per_epoch, cfg.max_steps)
    checkpointer = Checkpointer(accelerator, out_dir, objective=objective)
    progress = {"global_step": 0, "epoch": 0, "step_in_epoch": 0, "best_val_accuracy": -1.0, "history": []}
    resumed = checkpointer.latest()
    best_path = out_dir / "best.safetensors"
    if resumed is not None:
        checkpointer.load(resumed)
        progress = {k: resumed[k] for k in progress}
        accelerator.print(f"[{desc}] resumed from {resumed['dir']} (step {progress['global_step']}/{total_steps})")
    log_path = out_dir / "log.jsonl"

    def log(record: dict) -> None:
        if accelerator.is_main_process:
            with open(log_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            log_record(accelerator, record)  # the same numbers to the experiment trackers, if any

    bar = progress_bar(total_steps, desc, enabled=accelerator.is_local_main_process, unit="steps",
                       initial=progress["global_step"])
    set_step = getattr(objective, "set_step", None)
    before_update = getattr(objective, "before_update", None)
    prepared_model.train()
    with _SignalFlag() as flag:
        while progress["global_step"] < total_steps and progress["epoch"] < cfg.epochs:
            epoch = progress["epoch"]
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(epoch)
            loader = train_loader
            if progress["step_in_epoch"]:
                loader = accelerator.skip_first_batches(train_loader, progress["step_in_epoch"])
            for batch in loader:
                if set_step is not None:
                    set_step(progress["global_step"])
                if before_update is not None:
                    before_update(prepared_model, batch, progress["global_step"])
                step = objective(prepared_model, batch, True)
                if not torch.isfinite(step.loss.detach()).all():
                    terms = {k: float(v) for k, v in step.terms.items()}
                    raise NonFiniteLossError(
                        f"[{desc}] non-finite loss {float(step.loss.detach())} at epoch {epoch}, step {progress['global_step']}; "
                        f"loss terms: {terms}. The last good checkpoint is kept in {checkpointer.root}; "
                        f"lower the learning rate or set grad_clip, then rerun to resume."
                    )
                accelerator.backward(step.loss)
                if cfg.grad_clip is not None and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(prepared_model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                progress["global_step"] += 1
                progress["step_in_epoch"] += 1
                bar.update(1)
                if progress["global_step"] % cfg.log_every == 0 or progress["global_step"] == 1:
                    record = {"stage": desc, "step": progress["global_step"], "epoch": epoch, "loss": float(step.loss.detach()),
                              "lr": scheduler.get_last_lr()[0], "time": time.time() - started}
                    record.update({k: float(v) for k, v in step.terms.items()})
                    log(record)
                    bar.set_postfix(loss=f"{float(step.loss.detach()):.4f}")
                done = progress["global_step"] >= total_steps
                if flag.agreed(accelerator):
                    checkpointer.save(progress)
                    bar.close()
                    accelerator.print(f"[{desc}] signal {flag.received or 'on another process'}: checkpoint saved at step "
                                      f"{progress['global_step']}; exiting")
                    raise StopRequested(0)
                if done:
                    break
                if progress["global_step"] % cfg.checkpoint_every == 0:
                    checkpointer.save(progress)
            # end of epoch (or of the step budget): validate, keep the best, checkpoint
            metrics = evaluate(accelerator, prepared_model, objective, val_loader)
            record = {"stage": desc, "epoch": epoch, "step": progress["global_step"], "val_accuracy": metrics["accuracy"],
                      "val_loss": metrics["loss"], "time": time.time() - started}
            log(record)
            progress["history"].append(record)
            bar.mark()  # in a job log: one progress line per epoch at least
            accelerator.print(f"[{desc}] epoch {epoch}: val accuracy {metrics['accuracy']:.4f}")
            if metrics["accuracy"] > progress["best_val_accuracy"]:
                progress["best_val_accuracy"] = metrics["accuracy"]
                state = _unwrapped_state(accelerator, prepared_model)
                if accelerator.is_main_process:
                    atomic_write(best_path, lambda p: save_file(state, str(p)))
            progress["epoch"] += 1
            progress["step_in_epoch"] = 0
            checkpointer.save(progress)
    bar.close()
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(prepared_model)
    if best_path.exists():
        unwrapped.load_state_dict(load_file(str(best_path)))
    return {
        "best_val_accuracy": progress["best_val_accuracy"],
        "history": progress["history"],
        "steps": progress["global_step"],
        "seconds": time.time() - started,
    }
