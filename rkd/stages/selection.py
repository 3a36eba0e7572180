"""Candidate selection, the search's last step: the architecture weights propose cells, brief training picks.

DARTS keeps the top of architecture weights, which a short search leaves close to uniform, so the
derived cell need not beat a random cell of its size (``benchmarks/search_ablation.py`` compares). With
``search.candidates`` = K > 1 the derived cells are one of K candidates; the other K - 1 are drawn
from the same weights (``rkd.nas.derive.sample_genotype``), distinct and no larger than the derived
cells (or than ``search.param_budget`` when set), so the complexity penalty still sets the size.
Every candidate is trained the same brief way: stage 1's loss and optimiser, batches of
``search.candidate_batch_size``, ``search.candidate_epochs`` epochs over one seeded subset of
``search.candidate_max_train`` train rows, one seed; each is scored on the same
``search.candidate_max_val`` val rows, and the best val accuracy wins (ties: the smaller, then the
earlier candidate). With ``search.candidate_survivors`` = N < K the candidates are screened first
(successive halving): all K train ``search.candidate_screen_epochs`` epochs of the same schedule and
only the N best by val accuracy resume to the end: K x screen epochs + N x the remaining epochs of
training instead of K x all of them. Each candidate is its own resumable directory;
``candidates.json`` records them all.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from accelerate.utils import set_seed

from rkd.config import RunConfig, SearchConfig
from rkd.data import DataBundle, subset_indices
from rkd.hardware.efficiency import counted_flops
from rkd.nas.complexity import NetworkShape, measure_network, network_params
from rkd.nas.derive import sample_genotype
from rkd.nas.genotype import Genotype, genotype_from_dict, genotype_to_dict
from rkd.nas.supernet import SuperNet
from rkd.run.artifacts import atomic_write_json, read_json
from rkd.run.estimate import rescale
from rkd.stages.stage1 import train_student

DRAWS_PER_CANDIDATE = 200  # rejection sampling under the size limit gives up after this many draws per slot


def screening_survivors(s: SearchConfig, count: int) -> int | None:
    """How many of ``count`` candidates go past the screening; None when there are too few to screen."""
    survivors = s.candidate_survivors
    return survivors if survivors is not None and survivors < count else None


def candidate_epochs(s: SearchConfig, count: int) -> int:
    """Epochs of brief training ``count`` candidates take: screened, only the survivors go on."""
    survivors = screening_survivors(s, count)
    if survivors is not None:  # all the first epochs, the survivors the rest
        return count * s.candidate_screen_epochs + survivors * (s.candidate_epochs - s.candidate_screen_epochs)
    return count * s.candidate_epochs


def propose(
    supernet: SuperNet,
    derived: Genotype,
    shape: NetworkShape,
    count: int,
    max_params: int,
    max_skips: int | None,
    seed: int,
) -> list[Genotype]:
    """``derived`` first, then up to ``count - 1`` distinct draws from the architecture weights within ``max_params``."""
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        w = supernet.arch_weights()
    proposals, seen = [derived], {str(genotype_to_dict(derived))}
    for _ in range(DRAWS_PER_CANDIDATE * max(0, count - 1)):
        if len(proposals) >= count:
            break
        g = sample_genotype(w, supernet.primitives, supernet.nodes, max_skips, generator)
        key = str(genotype_to_dict(g))
        if key in seen:
            continue
        seen.add(key)
        if network_params(g, shape) <= max_params:
            proposals.append(g)
    return proposals


def train_candidate(
    cfg: RunConfig,
    accelerator,
    bundle: DataBundle,
    cache,
    genotype: Genotype,
    rows: dict,
    out_dir: Path,
    desc: str,
    epochs: int | None = None,
) -> float:
    """Best val accuracy of ``genotype`` after ``epochs`` (default all) of the brief training's epochs.

    A result already recorded is read back; a screened candidate asked for more epochs resumes from
    its checkpoint, on the schedule of all ``search.candidate_epochs``.
    """
    epochs = cfg.search.candidate_epochs if epochs is None else epochs
    record_path = out_dir / "candidate.json"
    expected = genotype_to_dict(genotype)
    record = read_json(record_path) if record_path.exists() else {}
    if record.get("genotype") != expected or not isinstance(record.get("val_accuracy"), dict):
        record = {"genotype": expected, "val_accuracy": {}, "seconds": 0.0}
    if str(epochs) in record["val_accuracy"]:
        return record["val_accuracy"][str(epochs)]
    brief = dataclasses.replace(
        cfg,
        stage1=dataclasses.replace(
            cfg.stage1, epochs=cfg.search.candidate_epochs, batch_size=cfg.search.candidate_batch_size
        ),
    )
    set_seed(cfg.seed + 1)  # one seed for every candidate: the same init stream, batch order and val rows
    summary = train_student(
        brief, accelerator, bundle, cache, out_dir, genotype=genotype, rows=rows, desc=desc, until_epoch=epochs
    )
    record["val_accuracy"][str(epochs)] = summary["best_val_accuracy"]
    record["seconds"] += summary["seconds"]
    counted = counted_flops(summary)  # the first call counts; one resumed past the counted step does not
    if counted is not None:
        record["flops_per_image"] = counted
    if accelerator.is_main_process:
        atomic_write_json(record_path, record)
    accelerator.wait_for_everyone()
    return summary["best_val_accuracy"]


def candidate_record(i: int, genotype: Genotype, shape: NetworkShape, val_accuracy: float) -> dict:
    """One line of ``candidates.json``: where the cells came from, their size and their val accuracy."""
    cost = measure_network(genotype, shape)
    source = "derived" if i == 0 else "drawn"
    return {
        "candidate": i,
        "source": source,
        "params": cost.params,
        "flops": cost.flops,
        "val_accuracy": val_accuracy,
        "genotype": genotype_to_dict(genotype),
    }


def _announce(cfg: RunConfig, accelerator, summary: dict, out_dir: Path) -> None:
    """Write ``candidates.json`` (main process) and say which candidate won against the derived cells."""
    s, records, best = cfg.search, summary["records"], summary["chosen"]
    screened, survivors = summary["screened"], summary["survivors"]
    if accelerator.is_main_process:
        atomic_write_json(out_dir / "candidates.json", summary)
    accelerator.wait_for_everyone()
    derived_note = (
        f"derived {100 * records[0]['val_accuracy']:.2f}%"
        if records[0]["val_accuracy"] is not None
        else "the derived cells screened out"
    )
    accelerator.print(
        f"[search] candidate selection: {len(records)} candidates"
        + (f", {survivors} past the {s.candidate_screen_epochs}-epoch screening" if screened else "")
        + f", chose {best} ({records[best]['source']}, val {100 * records[best]['val_accuracy']:.2f}% "
        f"vs {derived_note})"
    )


def selection_summary(
    s: SearchConfig, records: list, best: int, finalists: list, max_params: int, rows: dict, screened: bool
) -> dict:
    """What ``candidates.json`` and the search's genotype record say about the selection."""
    return {
        "candidates": len(records),
        "requested": s.candidates,
        "chosen": best,
        "chosen_source": records[best]["source"],
        "max_params": max_params,
        "train_rows": int(len(rows["train"])),
        "val_rows": int(len(rows["val"])),
        "epochs": s.candidate_epochs,
        "screened": screened,
        "survivors": len(finalists),
        "screen_epochs": s.candidate_screen_epochs if screened else None,
        "derived_val_accuracy": records[0]["val_accuracy"],
        "chosen_val_accuracy": records[best]["val_accuracy"],
        "records": records,
    }


def select(
    cfg: RunConfig,
    accelerator,
    bundle: DataBundle,
    cache,
    supernet: SuperNet,
    derived: Genotype,
    shape: NetworkShape,
    out_dir: Path,
) -> tuple[Genotype, dict]:
    """The winning candidate and a record of every candidate (also written to ``out_dir/candidates.json``)."""
    s = cfg.search
    out_dir = Path(out_dir)
    derived_params = network_params(derived, shape)
    max_params = int(s.param_budget) if s.param_budget is not None else derived_params
    proposals = propose(supernet, derived, shape, s.candidates, max_params, s.max_skips, cfg.seed)
    if len(proposals) != s.candidates:  # fewer fit under the searched cells' size than the plan priced
        why = f"{len(proposals)} candidates drawn where the plan priced {s.candidates}"
        rescale("candidate", candidate_epochs(s, len(proposals)) / candidate_epochs(s, s.candidates), why)
    rows = {
        "train": subset_indices(len(bundle.splits["train"]), s.candidate_max_train, cfg.seed + 2),
        "val": subset_indices(len(bundle.splits["val"]), s.candidate_max_val, cfg.seed + 3),
    }
    screened = screening_survivors(s, len(proposals)) is not None
    first_epochs = s.candidate_screen_epochs if screened else s.candidate_epochs

    def train(i: int, epochs: int) -> float:
        stage = f"candidate {i + 1}/{len(proposals)}" + (
            f" ({epochs} of {s.candidate_epochs} epochs)" if epochs < s.candidate_epochs else ""
        )
        return train_candidate(
            cfg,
            accelerator,
            bundle,
            cache,
            proposals[i],
            rows,
            out_dir / f"candidate-{i:02d}",
            desc=stage,
            epochs=epochs,
        )

    records = []
    for i, genotype in enumerate(proposals):
        accuracy = train(i, first_epochs)
        records.append(candidate_record(i, genotype, shape, accuracy))
    rank = lambda i: (records[i]["val_accuracy"], -records[i]["params"], -i)  # noqa: E731 (ties: smaller, earlier)
    finalists = list(range(len(records)))
    if screened:
        finalists = sorted(finalists, key=rank, reverse=True)[: s.candidate_survivors]
        for record in records:
            record["screen_val_accuracy"], record["val_accuracy"] = record["val_accuracy"], None
            record["survived"] = record["candidate"] in finalists
        for i in sorted(finalists):
            records[i]["val_accuracy"] = train(i, s.candidate_epochs)
    best = max(finalists, key=rank)
    summary = selection_summary(s, records, best, finalists, max_params, rows, screened)
    _announce(cfg, accelerator, summary, out_dir)
    return genotype_from_dict(records[best]["genotype"]), summary
