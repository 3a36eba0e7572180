"""Cost of distillation: seconds per training step of student-only, cache-KD and online-teacher-KD, in one run.

The three step kinds are interleaved round by round (so load from other jobs hits them alike) and
reported as medians and as ratios to the student-only step. Target: cache KD <= 1.2x student-only.

    python benchmarks/distill_cost.py [--config ...] [--rounds 15]      # prints JSON
"""

from __future__ import annotations

import json
import statistics
import time

import torch
from common import parse_config, run_teacher, trained


class OnlineTeacherObjective:
    """KD with the teacher run on every batch (what the cache avoids)."""

    def __init__(self, transform, teacher, loss) -> None:
        self.transform, self.teacher, self.loss = transform, teacher, loss

    def __call__(self, model, batch, train):
        from rkd.engine import Step

        with torch.no_grad():
            out = self.teacher(batch["pixels"])
        outputs = model(self.transform(batch["pixels"]))
        targets = {
            "label": batch["label"],
            "teacher_logits": out["logits"].float(),
            "teacher_features": out["features"].float(),
        }
        total, parts = self.loss(outputs, targets)
        return Step(loss=total, logits=outputs["logits"], labels=batch["label"], terms=parts)


def main() -> dict:
    from rkd.baselines.link import NoTeacher
    from rkd.config import LossConfig
    from rkd.data import load_data, make_loader, student_transform
    from rkd.engine import make_accelerator, train_step
    from rkd.losses import build_kd_loss
    from rkd.measure import count_params
    from rkd.models.factory import create_stage1_model
    from rkd.optim import build_optimizer, build_scheduler
    from rkd.stages.objective import DistillObjective
    from rkd.teacher.cache import load_cache

    cfg, args = parse_config(__doc__, lambda p: p.add_argument("--rounds", type=int, default=15))
    rounds = args.rounds
    bundle = load_data(cfg.data)
    run = cfg.run_dir
    teacher = run_teacher(cfg, bundle)
    for p in teacher.parameters():
        p.requires_grad_(False)
    if trained(run / "cache"):
        cache = load_cache(run / "cache")
    else:  # the same shapes and dtype as a real cache
        from rkd.teacher.cache import TeacherCache

        n = len(bundle.splits["train"])
        cache = TeacherCache(
            {"train": torch.randn(n, bundle.num_classes).half()},
            {"train": torch.randn(n, teacher.feature_dim).half()},
            {},
            run / "cache",
        )
    transform = student_transform(cfg.data, bundle)
    loader = make_loader(bundle.splits["train"], cfg.stage1.batch_size, shuffle=True, seed=0, drop_last=True)
    batches = iter(loader)
    kinds = {
        "student_only": DistillObjective(
            transform, NoTeacher(), build_kd_loss(LossConfig(task=1.0, logit_kd=0.0, feature_kd=0.0))
        ),
        "cache_kd": DistillObjective(transform, cache, build_kd_loss(cfg.loss)),
        "online_teacher_kd": OnlineTeacherObjective(transform, teacher, build_kd_loss(cfg.loss)),
    }
    accelerator = make_accelerator(cpu=True, seed=0)  # the step fit takes, on the CPU as before
    models, optimizers, schedulers = {}, {}, {}
    for kind in kinds:
        torch.manual_seed(0)
        model = create_stage1_model(cfg, bundle, teacher.feature_dim).train()
        optimizer = build_optimizer(model.parameters(), cfg.stage1)
        scheduler = build_scheduler(optimizer, cfg.stage1, rounds + 2)
        models[kind], optimizers[kind], schedulers[kind] = accelerator.prepare(model, optimizer, scheduler)
    times = {kind: [] for kind in kinds}
    for r in range(rounds + 2):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        for kind, objective in kinds.items():  # same batch for all three: only the KD source differs
            start = time.perf_counter()
            train_step(
                accelerator, models[kind], objective, batch, optimizers[kind], schedulers[kind], r, cfg.stage1.grad_clip
            )
            if r >= 2:  # two warm-up rounds
                times[kind].append(time.perf_counter() - start)
    median = {kind: statistics.median(t) for kind, t in times.items()}
    base = median["student_only"]
    ratios = {kind: m / base for kind, m in median.items()}
    return {
        "benchmark": "distill_cost",
        "config": cfg.name,
        "batch_size": cfg.stage1.batch_size,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "teacher_params": count_params(teacher),
        "student_params": count_params(models["cache_kd"].student),
        "median_step_seconds": median,
        "ratio_to_student_only": ratios,
        "target_cache_kd_le_1.2x": ratios["cache_kd"] <= 1.2,
        "cache_source": "run cache" if trained(run / "cache") else "synthetic cache of the same shape",
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
