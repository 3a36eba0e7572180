"""The benchmark's methods: what each cell runs, which learning rates its tuning grid scales, what it answers.

Names are those of ``rkd baselines``: ``rkd-sc``, the registered baselines and controls
(``rkd.baselines.registry``) and ``ablation:<name>`` (``rkd.baselines.variants``). A method with
``lr_fields`` is tuned on its own grid; one without inherits RKD-SC's choice (ablations, random
cells: RKD-SC's recipe with one thing changed) or trains nothing (the digital schemes).
"""

from __future__ import annotations

from dataclasses import dataclass

RKD = "rkd-sc"


@dataclass(frozen=True)
class BenchMethod:
    name: str
    lr_fields: tuple  # config fields the tuning grid multiplies; () = not tuned on its own
    question: str  # what the method's cells answer (shown in the plan)
    trains: bool = True


JSCC_LR = ("baselines.jscc_train.lr",)
CONTROL_LR = ("baselines.control_lr_scale",)

METHODS = (
    BenchMethod(RKD, ("stage1.lr", "stage2.lr"), "the method (search, stage 1, stage 2) on the default"),
    BenchMethod("ablation:no-robust-kd", (), "stage 2 without KD terms"),
    BenchMethod("ablation:stage2-logit-kd", (), "stage 2 with logit KD only"),
    BenchMethod("ablation:stage2-feature-kd", (), "stage 2 with feature KD only"),
    BenchMethod("ablation:robust-kd", (), "stage 2 with logit and feature KD"),
    BenchMethod("ablation:no-kd", (), "KD's gain at matched budget (searched cells, no KD in stage 1 or 2)"),
    BenchMethod("random-cells", (), "the search's gain: random cells of its size, full training"),
    BenchMethod("no-teacher", CONTROL_LR, "the searched student + CAT without a teacher at RKD-SC's budget"),
    BenchMethod("no-teacher-converged", CONTROL_LR, "the same trained to convergence (val early stopping)"),
    BenchMethod("deep-jscc", JSCC_LR, "Deep JSCC at RKD-SC's per-seed budget"),
    BenchMethod("adjscc", JSCC_LR, "ADJSCC at RKD-SC's per-seed budget"),
    BenchMethod("deep-jscc-budget", JSCC_LR, "Deep JSCC with RKD-SC's whole budget (teacher included)"),
    BenchMethod("deep-jscc-kd", JSCC_LR, "Deep JSCC + RKD-SC's KD loss from the cache, whole budget"),
    BenchMethod("vfe", ("baselines.vfe_train.lr",), "VFE (information bottleneck, Shao et al.), per-seed budget"),
    BenchMethod(
        "conference",
        ("baselines.conference_stage1.lr", "baselines.conference_train.lr"),
        "the conference design (feature-MSE student + attention autoencoder)",
    ),
    BenchMethod("label-digital", (), "the student's label over a digital link", trains=False),
    BenchMethod("feature-digital", (), "the student's quantised feature over a digital link", trains=False),
)
BY_NAME = {m.name: m for m in METHODS}
# the stage-2 terms with the default's own stage 2 (task only) are RKD-SC itself: the plan drops an
# ablation whose stage 2 equals RKD-SC's and says so
STAGE2_TERMS = ("ablation:no-robust-kd", "ablation:stage2-logit-kd", "ablation:stage2-feature-kd", "ablation:robust-kd")


def method(name: str) -> BenchMethod:
    if name not in BY_NAME:
        raise ValueError(f"benchmark method {name!r} is unknown: expected one of {sorted(BY_NAME)}")
    return BY_NAME[name]


def tuned(name: str) -> bool:
    return bool(method(name).lr_fields)


def parse_methods(text: str | None) -> list:
    """``--only a,b`` -> those methods (RKD-SC is run for any method that needs it); None -> every method."""
    if not text:
        return [m.name for m in METHODS]
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(f"--only {','.join(unknown)} is invalid: expected names from {', '.join(BY_NAME)}")
    return names
