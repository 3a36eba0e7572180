"""Train one embedded-teacher candidate with its recipe and print JSON (params, s/epoch, accuracy per epoch).

Picks the embedded teacher's family, size and recipe by measurement, through the same pieces the
run uses (``build_teacher``, ``TeacherObjective``, ``rkd.engine``'s optimiser, schedule and
``train_step``), but in a plain loop so every epoch reports val and test accuracy. ``--time-budget``
stops after the epoch that crosses it (the schedule is still planned for ``teacher.train.epochs``).
Example, one thread:

    OMP_NUM_THREADS=1 python benchmarks/teacher_recipe.py --config default \\
        teacher.embedded_family=regnet teacher.train.epochs=12 --out benchmarks/results/teacher_regnet.json
"""

from __future__ import annotations

import json
import os
import time

import torch
from common import parse_config, write_json

from rkd.data import load_data, make_loader  # noqa: E402
from rkd.engine import make_accelerator, train_step  # noqa: E402
from rkd.optim import build_optimizer, build_scheduler  # noqa: E402
from rkd.teacher.model import build_teacher  # noqa: E402
from rkd.teacher.training import TeacherObjective  # noqa: E402


def _options(parser) -> None:
    parser.add_argument("--time-budget", type=float, default=None, help="seconds of training before stopping")
    parser.add_argument("--max-train", type=int, default=None, help="train on the first N training images")
    parser.add_argument("--out", default=None, help="also write the JSON here")


@torch.no_grad()
def accuracy(teacher, split, batch_size: int = 1000, flip_average: bool = False, shifts: bool = False) -> float:
    """Top-1 accuracy; ``flip_average`` scores the mean logits of each image and its mirror.

    ``shifts`` also averages the four cyclic 1-pixel shifts of each view (10 views with the flip).
    """
    teacher.eval()
    correct = 0
    for start in range(0, len(split.labels), batch_size):
        images = split.images[start : start + batch_size]
        views = [images, images.flip(2)] if flip_average else [images]
        if shifts:
            views = views + [view.roll(step, dim) for view in views for step in (-1, 1) for dim in (1, 2)]
        logits = sum(teacher(view)["logits"].float() for view in views) / len(views)
        correct += int((logits.argmax(-1) == split.labels[start : start + batch_size]).sum())
    teacher.train()
    return correct / len(split.labels)


def main() -> None:
    cfg, args = parse_config("embedded teacher recipe", _options, default_configs=("default",))
    if args.max_train:
        cfg.data.max_train = args.max_train
    bundle = load_data(cfg.data)
    tcfg = cfg.teacher
    accelerator = make_accelerator(cpu=True, seed=cfg.seed)  # fit's step, on the CPU as before
    torch.manual_seed(cfg.seed)
    teacher = build_teacher(tcfg, bundle.num_classes, bundle.class_names, bundle.channels)
    objective = TeacherObjective(
        tcfg.augment,
        tcfg.train.label_smoothing,
        seed=cfg.seed,
        precision=tcfg.train_precision,
        random_erasing=tcfg.random_erasing,
    )
    loader = make_loader(bundle.splits["train"], tcfg.train.batch_size, shuffle=True, seed=cfg.seed)
    optimizer = build_optimizer(teacher.parameters(), tcfg.train)
    scheduler = build_scheduler(optimizer, tcfg.train, tcfg.train.epochs * len(loader))
    teacher, optimizer, scheduler = accelerator.prepare(teacher, optimizer, scheduler)
    record = {
        "family": tcfg.embedded_family,
        "hidden_sizes": tcfg.embedded_hidden_sizes,
        "depths": tcfg.embedded_depths,
        "image_size": tcfg.image_size or 28,
        "params": teacher.n_params,
        "threads": torch.get_num_threads(),
        "channels_last": tcfg.channels_last,
        "augment": tcfg.augment,
        "random_erasing": tcfg.random_erasing,
        "train_precision": tcfg.train_precision,
        "train": vars(tcfg.train),
        "n_train": len(bundle.splits["train"].labels),
        "epochs": [],
    }
    trained, global_step = 0.0, 0
    for epoch in range(tcfg.train.epochs):
        started = time.time()
        for batch in loader:
            loss = train_step(
                accelerator, teacher, objective, batch, optimizer, scheduler, global_step, tcfg.train.grad_clip
            ).loss
            global_step += 1
        seconds = time.time() - started
        trained += seconds
        row = {
            "epoch": epoch + 1,
            "train_seconds": round(seconds, 1),
            "loss": round(float(loss.detach()), 4),
            "val": accuracy(teacher, bundle.splits["val"]),
            "test": accuracy(teacher, bundle.splits["test"]),
            "load_average": os.getloadavg()[0],
        }
        record["epochs"].append(row)
        print(json.dumps(row), flush=True)
        if args.time_budget is not None and trained >= args.time_budget:
            break
    record["s_per_epoch"] = round(trained / len(record["epochs"]), 1)
    record["final_test"] = record["epochs"][-1]["test"]
    record["final_test_flip_average"] = accuracy(teacher, bundle.splits["test"], flip_average=True)
    record["final_test_flip_shift_average"] = accuracy(teacher, bundle.splits["test"], flip_average=True, shifts=True)
    write_json(record, args.out, indent=1)


if __name__ == "__main__":
    main()
