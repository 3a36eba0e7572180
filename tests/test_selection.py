"""The search's candidate selection: cells drawn from the architecture weights, trained briefly, the best kept."""

import json

import pytest
import torch
from test_search import one_thread, tiny_cfg  # noqa: F401 (one_thread: an autouse fixture)

from rkd.config import ConfigError, load_config
from rkd.nas.complexity import NetworkShape, network_params
from rkd.nas.derive import NONE, SKIP, ArchWeights, count_ops, derive_genotype, node_slices, num_edges, sample_genotype
from rkd.nas.genotype import genotype_to_dict, load_genotype
from rkd.nas.ops import PRIMITIVES
from rkd.nas.supernet import SuperNet
from rkd.run.hashing import stage_hashes
from rkd.stages import selection
from rkd.stages.inputs import describe_search

NODES = 3
SHAPE = NetworkShape(in_channels=1, num_classes=10, image_size=12, init_channels=4, layers=3, stem_stride=2)


def draws(weights, n, max_skips=None, seed=0, primitives=PRIMITIVES, nodes=NODES):
    generator = torch.Generator().manual_seed(seed)
    return [
        sample_genotype(ArchWeights(weights, weights), primitives, nodes, max_skips=max_skips, generator=generator)
        for _ in range(n)
    ]


def test_peaked_weights_draw_the_derived_cells_and_uniform_ones_draw_many():
    torch.manual_seed(0)
    peaked = torch.full((num_edges(NODES), len(PRIMITIVES)), 1e-12)
    for rows in node_slices(NODES):  # each node: two strong edges, one strong op on each
        for row in (rows.start, rows.stop - 1):
            peaked[row, torch.randint(1, len(PRIMITIVES), ()).item()] = 1.0
    derived = derive_genotype(ArchWeights(peaked, peaked), PRIMITIVES, NODES)
    assert all(g == derived for g in draws(peaked, 5))

    uniform = torch.full((num_edges(NODES), len(PRIMITIVES)), 1 / len(PRIMITIVES))
    drawn = draws(uniform, 60)
    assert len({str(genotype_to_dict(g)) for g in drawn}) > 50
    ops = [op for g in drawn for op, _ in g.normal + g.reduce]
    assert NONE not in ops and {op for op in ops} == set(PRIMITIVES) - {NONE}
    for g in drawn:  # two distinct inputs per node, each an earlier state
        for node in range(NODES):
            sources = [source for _, source in g.normal[2 * node : 2 * node + 2]]
            assert len(set(sources)) == 2 and all(0 <= s < 2 + node for s in sources)
    assert draws(uniform, 3, seed=7) == draws(uniform, 3, seed=7) != draws(uniform, 3, seed=8)


def test_draws_respect_the_skip_cap_and_a_skip_only_space_does_not_hang():
    skippy = torch.full((num_edges(NODES), len(PRIMITIVES)), 0.01)
    skippy[:, PRIMITIVES.index(SKIP)] = 1.0
    assert all(max(count_ops(g, SKIP).values()) <= 1 for g in draws(skippy, 20, max_skips=1))
    only = torch.ones(num_edges(NODES), 2)
    g = draws(only, 1, max_skips=0, primitives=[NONE, SKIP])[0]
    assert count_ops(g, SKIP) == {"normal": 2 * NODES, "reduce": 2 * NODES}


def test_proposals_start_with_the_derived_cells_are_distinct_and_fit_the_size_limit():
    torch.manual_seed(0)
    net = SuperNet(1, 10, PRIMITIVES, init_channels=4, layers=3, nodes=NODES)
    derived = net.genotype(max_skips=2)
    limit = network_params(derived, SHAPE)
    proposals = selection.propose(net, derived, SHAPE, 6, limit, 2, seed=0)
    assert proposals[0] == derived and 1 < len(proposals) <= 6
    assert len({str(genotype_to_dict(g)) for g in proposals}) == len(proposals)
    assert all(network_params(g, SHAPE) <= limit for g in proposals)
    assert selection.propose(net, derived, SHAPE, 6, 1, 2, seed=0) == [derived]  # nothing else fits
    assert selection.propose(net, derived, SHAPE, 6, limit, 2, seed=0) == proposals  # seeded


def test_search_with_candidates_keeps_the_best_and_reads_finished_ones_back(
    fake_fashion_dir, fashion_bundle, tiny_teacher_cache, tmp_path, monkeypatch
):
    from rkd.engine import make_accelerator
    from rkd.stages.search import run_search

    cfg = tiny_cfg(
        fake_fashion_dir,
        tmp_path,
        [
            "search.train.epochs=1",
            "search.warmup_epochs=0",
            "search.candidates=3",
            "search.candidate_epochs=1",
            "search.candidate_max_train=64",
            "search.candidate_max_val=32",
            "search.param_budget=1e9",
            "stage1.batch_size=32",
        ],
    )
    accelerator = make_accelerator(seed=0)
    out = tmp_path / "search"
    summary = run_search(cfg, accelerator, fashion_bundle, tiny_teacher_cache, out)
    record = json.loads((out / "candidates" / "candidates.json").read_text())
    accuracies = [r["val_accuracy"] for r in record["records"]]
    assert len(accuracies) == 3 and record["records"][0]["source"] == "derived"
    assert record["chosen"] == max(range(3), key=lambda i: (accuracies[i], -record["records"][i]["params"], -i))
    assert (record["train_rows"], record["val_rows"]) == (64, 32)
    chosen = record["records"][record["chosen"]]
    meta = json.loads((out / "genotype.json").read_text())["meta"]
    assert genotype_to_dict(load_genotype(out / "genotype.json")) == chosen["genotype"] == summary["genotype"]
    assert meta["params"] == chosen["params"] and meta["selection"]["chosen"] == record["chosen"]
    assert meta["selection"]["derived_genotype"] == record["records"][0]["genotype"]
    assert f"candidate {record['chosen']} of 3" in describe_search(meta)  # what the report says
    for i in range(3):  # every candidate trained into its own directory, on 64 rows of batch 32
        log = [
            json.loads(line)
            for line in (out / "candidates" / f"candidate-{i:02d}" / "log.jsonl").read_text().splitlines()
        ]
        assert max(r.get("step", 0) for r in log) <= 2

    def no_training(*args, **kwargs):
        raise AssertionError("a finished candidate was trained again")

    monkeypatch.setattr(selection, "train_student", no_training)
    again = run_search(cfg, accelerator, fashion_bundle, tiny_teacher_cache, out)  # resumes the finished search
    assert again["genotype"] == summary["genotype"] and again["selection"]["chosen"] == record["chosen"]


def test_screening_trains_only_the_survivors_to_the_end(fake_fashion_dir, fashion_bundle, tiny_teacher_cache, tmp_path):
    from rkd.engine import make_accelerator
    from rkd.stages.search import run_search

    cfg = tiny_cfg(
        fake_fashion_dir,
        tmp_path,
        [
            "search.train.epochs=1",
            "search.warmup_epochs=0",
            "search.candidates=4",
            "search.candidate_epochs=2",
            "search.candidate_survivors=2",
            "search.candidate_screen_epochs=1",
            "search.candidate_max_train=64",
            "search.candidate_max_val=32",
            "search.param_budget=1e9",
            "search.candidate_batch_size=32",
        ],
    )
    out = tmp_path / "search"
    run_search(cfg, make_accelerator(seed=0), fashion_bundle, tiny_teacher_cache, out)
    record = json.loads((out / "candidates" / "candidates.json").read_text())
    records = record["records"]
    assert record["screened"] and record["survivors"] == 2 and record["screen_epochs"] == 1 and len(records) == 4
    screen = [r["screen_val_accuracy"] for r in records]
    ranked = sorted(range(4), key=lambda i: (screen[i], -records[i]["params"], -i), reverse=True)
    assert sorted(r["candidate"] for r in records if r["survived"]) == sorted(ranked[:2])
    finals = {r["candidate"]: r["val_accuracy"] for r in records if r["survived"]}
    assert all(r["val_accuracy"] is None for r in records if not r["survived"])
    assert record["chosen"] == max(finals, key=lambda i: (finals[i], -records[i]["params"], -i))
    for r in records:  # 2 steps per epoch (64 rows, batches of 32): the screened-out stop at 2, survivors reach 4
        log = [
            json.loads(line)
            for line in (out / "candidates" / f"candidate-{r['candidate']:02d}" / "log.jsonl").read_text().splitlines()
        ]
        assert max(x.get("step", 0) for x in log) == (4 if r["survived"] else 2)
        assert finals.get(r["candidate"], screen[r["candidate"]]) >= screen[r["candidate"]]  # best of more epochs
    meta = json.loads((out / "genotype.json").read_text())["meta"]
    assert "2 passed a 1-epoch screening" in describe_search(meta)
    with pytest.raises(ConfigError, match="search.candidate_screen_epochs"):
        load_config(None, ["search.candidate_survivors=2", "search.candidate_screen_epochs=3"])


def test_candidates_hash_stage_one_settings_and_are_validated():
    on = stage_hashes(load_config(None, ["search.candidates=4"]))
    assert stage_hashes(load_config(None, ["search.candidates=4", "stage1.lr=0.01"]))["search"] != on["search"]
    off = stage_hashes(load_config(None))
    assert stage_hashes(load_config(None, ["stage1.lr=0.01"]))["search"] == off["search"]
    screened = stage_hashes(load_config(None, ["search.candidates=4", "search.candidate_survivors=2"]))
    assert screened["search"] != on["search"]
    assert (
        stage_hashes(
            load_config(
                None, ["search.candidates=4", "search.candidate_survivors=2", "search.candidate_screen_epochs=2"]
            )
        )["search"]
        != screened["search"]
    )
    # every search setting but the sweep's is hashed, used by this run or not: no special cases
    assert stage_hashes(load_config(None, ["search.candidates=4", "search.candidate_screen_epochs=2"])) != on
    with pytest.raises(ConfigError, match="search.candidates"):
        load_config(None, ["search.candidates=-1"])
    with pytest.raises(ConfigError, match="search.candidate_epochs"):
        load_config(None, ["search.candidate_epochs=0"])


def test_fewer_candidates_than_planned_rescale_the_running_stage_clock(
    fake_fashion_dir, fashion_bundle, tmp_path, monkeypatch
):
    """The plan priced ``search.candidates``; when fewer fit under the searched cells' size, the clock learns it."""
    from rkd.engine import make_accelerator
    from rkd.run.estimate import StagePlan, stage_clock

    cfg = tiny_cfg(
        fake_fashion_dir,
        tmp_path,
        ["search.candidates=4", "search.candidate_epochs=2", "search.candidate_survivors=2"],
    )
    assert selection.candidate_epochs(cfg.search, 4) == 4 * 1 + 2 * 1  # screened: 4 first epochs, 2 survivors go on
    assert selection.candidate_epochs(cfg.search, 2) == 2 * 2  # no more than the survivors: no screening
    torch.manual_seed(0)
    net = SuperNet(1, 10, PRIMITIVES, init_channels=4, layers=3, nodes=NODES)
    derived = net.genotype(max_skips=2)
    two = selection.propose(net, derived, SHAPE, 2, 10**9, 2, seed=0)
    monkeypatch.setattr(selection, "propose", lambda *args, **kwargs: two)
    monkeypatch.setattr(selection, "train_candidate", lambda *args, **kwargs: 0.5)
    plan = StagePlan("search")
    plan.add("search:train", 10, 1.0)
    plan.add("candidate:train", 60, 1.0)
    plan.add("candidate:val", 600, 0.01)
    with stage_clock(plan, lambda line: None) as clock:
        selection.select(cfg, make_accelerator(seed=0), fashion_bundle, None, net, derived, SHAPE, tmp_path / "c")
    assert [p.units for p in clock.plan.phases] == [10, 40, 400]
