"""KDL-DARTS: mixed ops, measured expected cost, derivation and skip cap, the architect, a tiny search and sweep."""

import json

import pytest
import torch

from rkd.cli import main
from rkd.config import ConfigError, load_config
from rkd.losses import ComplexityPenalty, MissingInputError
from rkd.nas.architect import Architect
from rkd.nas.complexity import ExpectedCost, NetworkShape, measure_network, network_params
from rkd.nas.derive import (
    SKIP,
    ArchWeights,
    count_ops,
    derive_genotype,
    edge_layout,
    node_slices,
    num_edges,
    sample_genotype,
)
from rkd.nas.genotype import Genotype, describe_cells, load_genotype, save_genotype
from rkd.nas.network import Student
from rkd.nas.ops import PRIMITIVES
from rkd.nas.supernet import MixedOp, SuperNet, arch_gradients_enabled, channel_shuffle
from rkd.run.hashing import stage_hashes

SHAPE = NetworkShape(in_channels=1, num_classes=10, image_size=12, init_channels=4, layers=3, stem_stride=2)
NODES = 2


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine a second thread mostly waits (and slows tiny ops 5-10x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cost() -> ExpectedCost:
    return ExpectedCost(PRIMITIVES, NODES, SHAPE)


def same_op_genotype(op: str, nodes: int = NODES) -> Genotype:
    """Every node reads the two cell inputs with ``op``."""
    edges = [(op, 0), (op, 1)] * nodes
    return Genotype(edges, list(range(2, 2 + nodes)), edges, list(range(2, 2 + nodes)))


def inputs_only_betas(nodes: int = NODES) -> torch.Tensor:
    """Edge parameters that give each node's two cell-input edges all the edge weight."""
    betas = torch.full((num_edges(nodes),), -60.0)
    for s in node_slices(nodes):
        betas[s.start : s.start + 2] = 60.0
    return betas


# ----------------------------------------------------------------------------- mixed op


@pytest.mark.parametrize("stride, size, out_size", [(1, 7, 7), (2, 7, 4), (2, 8, 4)])
def test_mixed_op_is_the_weighted_sum_of_its_ops(stride, size, out_size):
    torch.manual_seed(0)
    mixed = MixedOp(4, stride, PRIMITIVES).eval()
    x = torch.randn(2, 4, size, size)
    w = torch.softmax(torch.randn(len(PRIMITIVES)), dim=0)
    expected = sum(wi * op(x) for wi, op in zip(w, mixed.ops))
    out = mixed(x, w)
    assert out.shape == (2, 4, out_size, out_size)
    assert torch.allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("stride", [1, 2])
def test_partial_channels_mix_a_quarter_and_shuffle_the_rest_through(stride):
    torch.manual_seed(0)
    mixed = MixedOp(8, stride, ["none", "sep_conv_3x3", "max_pool_3x3"], partial_channels=4).eval()
    x = torch.randn(2, 8, 7, 7)
    out = mixed(x, torch.tensor([1.0, 0.0, 0.0]))  # only "none": the mixed quarter is zero
    assert out.shape == ((2, 8, 4, 4) if stride == 2 else x.shape)
    rest = x[:, 2:] if stride == 1 else torch.nn.functional.max_pool2d(x[:, 2:], 2, 2, ceil_mode=True)
    reference = channel_shuffle(torch.cat([torch.zeros_like(rest[:, :2]), rest], dim=1), 4)
    assert torch.allclose(out, reference)
    # the shuffle interleaves groups: channel 0 of each group first
    order = channel_shuffle(torch.arange(8.0).view(1, 8, 1, 1), 4).flatten().tolist()
    assert order == [0, 2, 4, 6, 1, 3, 5, 7]
    with pytest.raises(ValueError, match="partial_channels"):
        MixedOp(6, 1, PRIMITIVES, partial_channels=4)


# ----------------------------------------------------------------------------- expected cost


def test_expected_cost_is_the_softmax_weighted_sum_of_measured_op_costs(cost):
    fixed = cost.fixed
    betas = inputs_only_betas()
    real = [op for op in PRIMITIVES if op != "none"]
    measured = {op: measure_network(same_op_genotype(op), SHAPE) for op in real}
    # decided architecture: the expectation is the measured cost of the derived Student, exactly
    for op in real:
        row = torch.full((len(PRIMITIVES),), -60.0)
        row[PRIMITIVES.index(op)] = 60.0
        alphas = row.expand(num_edges(NODES), -1)
        value = cost(alphas, alphas, betas, betas)
        assert value["params"].item() == pytest.approx(measured[op].params, rel=1e-5)
        assert value["flops"].item() == pytest.approx(measured[op].flops, rel=1e-5)
    # an undecided one: each op's measured cost weighted by the softmax over the ops other than "none"
    torch.manual_seed(1)
    row = torch.randn(len(PRIMITIVES))
    probs = torch.softmax(row[1:], dim=0)
    alphas = row.expand(num_edges(NODES), -1)
    value = cost(alphas, alphas, betas, betas)
    for metric in ("params", "flops"):
        fixed_part = getattr(fixed, metric)
        expected = fixed_part + sum(
            float(p) * (getattr(measured[op], metric) - fixed_part) for p, op in zip(probs, real)
        )
        assert value[metric].item() == pytest.approx(expected, rel=1e-5)
    # "none" is never derived, so its weight does not change the expected cost
    shifted = alphas.clone()
    shifted[:, 0] += 5.0
    assert cost(shifted, shifted, betas, betas)["params"].item() == pytest.approx(value["params"].item(), rel=1e-6)
    # the parameter count matches what the Student reports, the FLOPs are non-trivial
    assert measured["sep_conv_5x5"].params == sum(
        p.numel() for p in Student(same_op_genotype("sep_conv_5x5"), 1, 10, 4, 3, 2).parameters()
    )
    assert measured["sep_conv_5x5"].flops > measured["max_pool_3x3"].flops == fixed.flops


def test_complexity_gradient_pushes_towards_cheaper_ops(cost):
    alphas_normal = torch.zeros(num_edges(NODES), len(PRIMITIVES), requires_grad=True)
    alphas_reduce = torch.zeros(num_edges(NODES), len(PRIMITIVES), requires_grad=True)
    penalty = ComplexityPenalty(["params", "flops"], scale=cost.uniform())
    before = cost.op_probabilities(alphas_normal.detach())
    optimizer = torch.optim.SGD([alphas_normal, alphas_reduce], lr=1.0)
    for _ in range(3):
        value = cost(alphas_normal, alphas_reduce)
        loss = penalty({"arch_params": value["params"], "arch_flops": value["flops"]}, {})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = cost.op_probabilities(alphas_normal.detach())
    index = {op: PRIMITIVES.index(op) for op in PRIMITIVES}
    for edge in range(num_edges(NODES)):  # normal cells: pools and identity are free, sep_conv_5x5 is the priciest
        assert after[edge, index["skip_connect"]] > before[edge, index["skip_connect"]]
        assert after[edge, index["max_pool_3x3"]] > before[edge, index["max_pool_3x3"]]
        assert after[edge, index["sep_conv_5x5"]] < before[edge, index["sep_conv_5x5"]]
    assert cost(alphas_normal, alphas_reduce)["params"].item() < cost.uniform()["params"]


def test_complexity_penalty_scale_budget_and_missing_key():
    outputs = {"arch_params": torch.tensor(3000.0), "arch_flops": torch.tensor(2e6)}
    scaled = ComplexityPenalty(["params"], scale={"params": 1500.0})
    assert scaled(outputs, {}).item() == pytest.approx(2.0)
    budget = ComplexityPenalty(["params", "flops"], scale={}, budget={"params": 4000.0, "flops": 1e6})
    assert budget(outputs, {}).item() == pytest.approx(1.0)  # params within budget, FLOPs at twice theirs
    with pytest.raises(ValueError, match="budget"):
        ComplexityPenalty(["params"], scale={}, budget={"params": -1})
    with pytest.raises(ValueError, match="metrics"):
        ComplexityPenalty(["latency"], scale={"latency": 1.0})
    from rkd.losses import CompositeLoss

    loss = CompositeLoss({"complexity": (1.0, scaled)})
    with pytest.raises(MissingInputError, match="arch_params"):
        loss({"logits": torch.zeros(1, 2)}, {})


# ----------------------------------------------------------------------------- derivation


def weights_for(rows: dict, nodes: int = 3) -> torch.Tensor:
    """Softmax-like rows from {edge: {op: weight}} (unset entries get 0.01)."""
    table = torch.full((num_edges(nodes), len(PRIMITIVES)), 0.01)
    for edge, ops in rows.items():
        for op, w in ops.items():
            table[edge, PRIMITIVES.index(op)] = w
    return table


def test_derivation_keeps_top_two_edges_by_strongest_real_op():
    layout = edge_layout(3)
    assert layout == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (2, 3)]
    normal = weights_for(
        {
            0: {"none": 0.9, "sep_conv_3x3": 0.05},  # "none" is strongest but never kept
            1: {"dil_conv_3x3": 0.3},
            2: {"max_pool_3x3": 0.2},
            3: {"sep_conv_5x5": 0.6},
            4: {"avg_pool_3x3": 0.4},  # node 1: inputs 1 and 2
            5: {"none": 0.99},
            6: {"skip_connect": 0.5},
            7: {"sep_conv_3x3": 0.45},
            8: {"dil_conv_5x5": 0.1},
        }
    )
    g = derive_genotype(ArchWeights(normal, normal), PRIMITIVES, 3)
    assert g.normal == [
        ("dil_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_5x5", 1),
        ("avg_pool_3x3", 2),
        ("skip_connect", 1),
        ("sep_conv_3x3", 2),
    ]
    assert g.normal_concat == [2, 3, 4] and g.reduce == g.normal
    assert all(op != "none" for op, _ in g.normal + g.reduce)
    # edge normalisation decides which edges survive: weight node 1's edge from input 0 up
    edges = torch.ones(num_edges(3))
    edges[2] = 10.0
    g2 = derive_genotype(ArchWeights(normal, normal, normal_edges=edges), PRIMITIVES, 3)
    assert g2.normal[2] == ("max_pool_3x3", 0)
    with pytest.raises(ValueError, match="shape"):
        derive_genotype(ArchWeights(normal[:4], normal), PRIMITIVES, 3)


def test_skip_cap_prevents_skip_collapse():
    torch.manual_seed(0)
    alphas = torch.randn(num_edges(4), len(PRIMITIVES)) * 0.01
    alphas[:, PRIMITIVES.index(SKIP)] += torch.linspace(2.0, 3.0, num_edges(4))  # skip wins on every edge
    w = alphas.softmax(-1)
    uncapped = derive_genotype(ArchWeights(w, w), PRIMITIVES, 4)
    assert count_ops(uncapped, SKIP) == {"normal": 8, "reduce": 8}  # collapse: an all-skip cell
    capped = derive_genotype(ArchWeights(w, w), PRIMITIVES, 4, max_skips=2)
    assert count_ops(capped, SKIP) == {"normal": 2, "reduce": 2}
    # the surviving skips are the two strongest (last node's edges have the largest skip weight)
    assert [i for i, (op, _) in enumerate(capped.normal) if op == SKIP] == [6, 7]
    # replaced edges keep their input and take their best op that is neither none nor skip
    for (op, src), (_old_op, old_src) in zip(capped.normal, uncapped.normal):
        assert src == old_src and op not in ("none",)
    assert count_ops(derive_genotype(ArchWeights(w, w), PRIMITIVES, 4, max_skips=0), SKIP) == {"normal": 0, "reduce": 0}
    # the same through a supernet whose alphas favour skips everywhere
    net = SuperNet(1, 10, PRIMITIVES, init_channels=4, layers=3, nodes=4)
    with torch.no_grad():
        net.alphas_normal.copy_(alphas)
        net.alphas_reduce.copy_(alphas)
    assert max(count_ops(net.genotype(max_skips=2), SKIP).values()) <= 2


def test_derived_genotype_round_trips_and_builds_a_student(tmp_path, cost):
    torch.manual_seed(0)
    net = SuperNet(1, 10, PRIMITIVES, init_channels=4, layers=3, nodes=NODES, cost=cost)
    genotype = net.genotype(max_skips=1)
    path = save_genotype(genotype, tmp_path / "genotype.json", meta={"complexity_weight": 0.5})
    assert load_genotype(str(path)) == genotype
    assert json.loads(path.read_text())["meta"] == {"complexity_weight": 0.5}
    student = Student(str(path), in_channels=1, num_classes=10, init_channels=4, layers=3)
    out = student(torch.randn(2, 1, 12, 12))
    assert out["logits"].shape == (2, 10) and out["features"].shape == (2, student.feature_dim)
    assert measure_network(genotype, SHAPE).params == sum(p.numel() for p in student.parameters())


@pytest.mark.parametrize(
    "shape",
    [NetworkShape(1, 10, 28, 10, 5, 2), NetworkShape(3, 7, 16, 4, 3, 1), NetworkShape(1, 10, 15, 6, 8, 2)],
    ids=["default", "rgb-unit-stem", "odd-side-deep"],
)
def test_network_params_sums_measured_ops_to_the_built_students_count(shape):
    """Drawn cells (skips and strided ops in reductions included) and a partial concat, built and summed."""
    nodes, generator = 4, torch.Generator().manual_seed(0)
    uniform = torch.ones(num_edges(nodes), len(PRIMITIVES))
    weights = ArchWeights(normal=uniform, reduce=uniform)
    drawn = [sample_genotype(weights, PRIMITIVES, nodes, None, generator) for _ in range(6)]
    partial = Genotype(drawn[0].normal, [2, 3], drawn[0].reduce, [2, 4, 5])
    for genotype in [*drawn, same_op_genotype("skip_connect", nodes), partial]:
        built = sum(p.numel() for p in shape.build(genotype).parameters())
        assert network_params(genotype, shape) == built, genotype


def test_counting_drawn_genotypes_builds_no_student(monkeypatch):
    """The search counts up to thousands of draws: after the shape's first count, none builds a Student."""
    shape, generator = NetworkShape(1, 10, 28, 10, 5, 2), torch.Generator().manual_seed(1)
    uniform = torch.ones(num_edges(4), len(PRIMITIVES))
    network_params(sample_genotype(ArchWeights(uniform, uniform), PRIMITIVES, 4, None, generator), shape)
    built, build = [], NetworkShape.build
    monkeypatch.setattr(NetworkShape, "build", lambda self, *a, **k: built.append(self) or build(self, *a, **k))
    for _ in range(20):
        network_params(sample_genotype(ArchWeights(uniform, uniform), PRIMITIVES, 4, None, generator), shape)
    assert not built


# ----------------------------------------------------------------------------- supernet and architect


def test_supernet_outputs_and_frozen_architecture(cost):
    torch.manual_seed(0)
    net = SuperNet(
        1,
        10,
        PRIMITIVES,
        init_channels=4,
        layers=3,
        nodes=NODES,
        partial_channels=2,
        edge_normalization=True,
        cost=cost,
    )
    out = net(torch.randn(3, 1, 12, 12))
    assert set(out) >= {"tokens", "features", "logits", "arch_params", "arch_flops"}
    assert out["logits"].shape == (3, 10) and out["tokens"].shape[0] == 3
    assert len(net.arch_parameters()) == 4 and all(not p.requires_grad for p in net.arch_parameters())
    out["logits"].sum().backward()  # the weight step: no architecture gradient
    assert all(p.grad is None for p in net.arch_parameters())
    assert len(list(net.weight_parameters())) + 4 == len(list(net.parameters()))
    with arch_gradients_enabled(net.arch_parameters()):
        grads = torch.autograd.grad(
            net(torch.randn(2, 1, 12, 12))["logits"].pow(2).sum() + out["arch_params"].detach(),
            net.arch_parameters(),
            allow_unused=True,
        )
    assert all(not p.requires_grad for p in net.arch_parameters())
    assert grads[0] is not None and float(grads[0].abs().sum()) > 0


def _tiny_net():
    torch.manual_seed(0)
    return SuperNet(
        1, 10, ["none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"], init_channels=4, layers=2, nodes=NODES
    )


def _architect(net, order, unrolled_lr=0.0, reduce=None):
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 1, 12, 12, generator=generator), torch.randint(0, 10, (8,), generator=generator)

    def loss_fn(forward, batch, split):
        return torch.nn.functional.cross_entropy(forward(batch["x"])["logits"], batch["y"])

    batches = lambda skip: iter([{"x": x.flip(0), "y": y.flip(0)}] * 10)  # noqa: E731
    architect = Architect(
        net.arch_parameters(),
        loss_fn,
        batches,
        lr=0.1,
        order=order,
        unrolled_lr=lambda step: unrolled_lr,
        reduce=reduce,
    )
    return architect, {"x": x, "y": y}


def test_second_order_reduces_to_first_order_without_a_virtual_step_and_leaves_weights_alone():
    net = _tiny_net()
    first, batch = _architect(net, "first")
    val = {"x": batch["x"].flip(0), "y": batch["y"].flip(0)}
    g1 = first.gradients(net, batch, val, 0)
    second, _ = _architect(net, "second", unrolled_lr=0.0)
    g2 = second.gradients(net, batch, val, 0)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g1, g2))
    unrolled, _ = _architect(net, "second", unrolled_lr=0.05)
    weights_before = [p.detach().clone() for p in net.weight_parameters()]
    g3 = unrolled.gradients(net, batch, val, 0)
    assert any(not torch.allclose(a, b) for a, b in zip(g1, g3)) and all(torch.isfinite(g).all() for g in g3)
    assert all(torch.equal(a, b) for a, b in zip(weights_before, net.weight_parameters()))
    assert all(p.grad is None for p in net.weight_parameters())  # autograd.grad only: the weight step is untouched


def test_architect_step_updates_alphas_through_the_cross_process_reduce():
    calls = []

    def reduce(g):  # stands in for accelerator.reduce(g, "mean")
        calls.append(g.shape)
        return g

    net = _tiny_net()
    architect, batch = _architect(net, "first", reduce=reduce)
    before = net.alphas_normal.detach().clone()
    architect.step(net, batch, 0)
    assert calls == [net.alphas_normal.shape, net.alphas_reduce.shape]
    assert not torch.equal(before, net.alphas_normal) and architect.steps == 1
    other, _ = _architect(_tiny_net(), "first")
    other.load_state_dict(architect.state_dict())
    assert other.steps == 1 and other.optimizer.state_dict()["state"]


# ----------------------------------------------------------------------------- search, sweep, CLI

TINY = [  # as in test_pipeline: a tiny teacher, student, codec and evaluation
    "teacher.embedded_hidden_sizes=[8,16]",
    "teacher.embedded_depths=[1,1]",
    "teacher.embedded_embedding_size=8",
    "teacher.train.epochs=1",
    "teacher.train.batch_size=32",
    "teacher.cache_shard_size=64",
    "stage1.epochs=1",
    "stage1.batch_size=32",
    "stage1.max_steps=4",
    "codec.d_model=16",
    "codec.heads=2",
    "codec.encoder_depth=1",
    "codec.decoder_depth=1",
    "codec.max_symbols=8",
    "codec.rates=[2,8]",
    "stage2.epochs=1",
    "stage2.batch_size=32",
    "stage2.max_steps=4",
    "eval.snr_step=10",
]
SEARCH = [
    "data.val_fraction=0.2",
    "data.image_size=16",
    "student.init_channels=4",
    "student.layers=3",
    "search.init_channels=4",
    "search.layers=3",
    "search.nodes=2",
    "search.train.epochs=2",
    "search.train.batch_size=16",
    "search.warmup_epochs=1",
    "search.arch_lr=0.05",
    "search.max_train=48",
    "search.max_val=32",
    "eval.batch_size=50",
]


def tiny_cfg(fake_fashion_dir, tmp_path, extra=()):
    return load_config(
        None,
        [
            f"data.fashion_mnist_dir={fake_fashion_dir}",
            f"data.cache_dir={tmp_path / 'datasets'}",
            f"runs_dir={tmp_path / 'runs'}",
            *SEARCH,
            *extra,
        ],
    )


def test_tiny_search_changes_the_architecture_and_writes_its_outputs(
    fake_fashion_dir, fashion_bundle, tiny_teacher_cache, tmp_path
):
    from rkd.engine import make_accelerator
    from rkd.stages.search import run_search

    cfg = tiny_cfg(
        fake_fashion_dir,
        tmp_path,
        [
            "search.partial_channels=2",
            "search.train.log_every=1",
            "search.edge_normalization=true",
            "search.complexity=both",
        ],
    )
    summary = run_search(cfg, make_accelerator(seed=0), fashion_bundle, tiny_teacher_cache, tmp_path / "search")
    out = tmp_path / "search"
    records = [json.loads(line) for line in (out / "alphas.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, "final"]
    # warm-up epoch: no architecture step yet; then the architecture moves
    assert records[0]["normal"] == records[1]["normal"]
    assert records[1]["normal"] != records[2]["normal"] and records[1]["reduce_edges"] != records[2]["reduce_edges"]
    assert summary["arch_steps"] == 3 and summary["steps"] == 6  # 48 rows / 16 = 3 steps per epoch
    data = json.loads((out / "genotype.json").read_text())
    genotype = load_genotype(out / "genotype.json")
    assert (
        data["meta"]["method"] == "KDL-DARTS"
        and data["meta"]["params"] == measure_network(genotype, NetworkShape(1, 10, 16, 4, 3, 2)).params
    )
    assert max(data["meta"]["skips"].values()) <= 2
    assert (out / "genotype.png").stat().st_size > 0
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in logged if "loss" in r]
    assert all("complexity" in r and "expected_params" in r and "expected_flops" in r for r in steps)
    assert ["arch_val_loss" in r for r in steps] == [False, False, False, True, True, True]


def test_interrupted_search_resumes_to_the_same_architecture(
    fake_fashion_dir, fashion_bundle, tiny_teacher_cache, tmp_path, monkeypatch, capsys
):
    from accelerate.utils import set_seed

    from rkd.engine import make_accelerator
    from rkd.stages.search import run_search
    from rkd.stages.search_objective import SearchObjective

    cfg = tiny_cfg(fake_fashion_dir, tmp_path, ["search.warmup_epochs=0", "search.max_train=32"])  # 2 steps/epoch
    accelerator = make_accelerator(seed=0)

    def final(directory):
        return [json.loads(line) for line in (directory / "alphas.jsonl").read_text().splitlines()][-1]

    set_seed(0)
    run_search(cfg, accelerator, fashion_bundle, tiny_teacher_cache, tmp_path / "whole")
    original = SearchObjective.before_update

    def crash_at_step_3(self, model, batch, step):
        if step == 3:
            raise RuntimeError("simulated crash")
        original(self, model, batch, step)

    monkeypatch.setattr(SearchObjective, "before_update", crash_at_step_3)
    set_seed(0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_search(cfg, accelerator, fashion_bundle, tiny_teacher_cache, tmp_path / "resumed")
    monkeypatch.setattr(SearchObjective, "before_update", original)
    capsys.readouterr()
    set_seed(0)  # the same command again (seeded samplers are part of the resume contract)
    summary = run_search(cfg, accelerator, fashion_bundle, tiny_teacher_cache, tmp_path / "resumed")
    assert "[search] resumed from step-00000002" in capsys.readouterr().out  # the end-of-epoch-0 checkpoint
    assert summary["arch_steps"] == 4  # 2 restored with the checkpoint (Adam state included), then steps 2 and 3
    a, b = final(tmp_path / "whole"), final(tmp_path / "resumed")
    assert a["normal"] == b["normal"] and a["reduce"] == b["reduce"] and a["genotype"] == b["genotype"]


def test_sweep_points_pareto_and_budget(fake_fashion_dir, fashion_bundle, tiny_teacher_cache, tmp_path):
    from rkd.engine import make_accelerator
    from rkd.stages.sweep import pareto_front, pick_within_budget, run_sweep

    points = [
        {"params": 100, "flops": 10, "val_accuracy": 0.5},
        {"params": 200, "flops": 5, "val_accuracy": 0.7},
        {"params": 300, "flops": 30, "val_accuracy": 0.6},
    ]
    assert pareto_front(points, "params") == [0, 1] and pareto_front(points, "flops") == [1]
    assert pick_within_budget(points, 150, "params") == 0 and pick_within_budget(points, None, "params") == 1
    assert pick_within_budget(points, 50, "params") is None

    cfg = tiny_cfg(
        fake_fashion_dir,
        tmp_path,
        [
            "search.sweep_weights=[0.0,2.0]",
            "search.sweep_budget=1e9",
            "search.train.epochs=1",
            "search.warmup_epochs=0",
            "search.train.max_steps=2",
            "stage1.batch_size=32",
            "stage1.max_steps=1",
            "search.sweep_train_epochs=1",
        ],
    )
    accelerator = make_accelerator(seed=0)
    sweep = tmp_path / "sweep"
    assert run_sweep(cfg, accelerator, fashion_bundle, tiny_teacher_cache, sweep, index=1) is None  # point 0 missing
    with pytest.raises(ValueError, match="sweep-index 2 is out of range"):
        run_sweep(cfg, accelerator, fashion_bundle, tiny_teacher_cache, sweep, index=2)
    result = run_sweep(cfg, accelerator, fashion_bundle, tiny_teacher_cache, sweep)  # point 1 is reused
    assert [p["complexity_weight"] for p in result["points"]] == [0.0, 2.0]
    assert result["chosen"] in (0, 1)
    for name in ("pareto.json", "pareto.csv", "pareto.png", "genotype.json"):
        assert (sweep / name).stat().st_size > 0
    load_genotype(sweep / "genotype.json")
    assert (sweep / "point-01" / "stage1" / "model.safetensors").exists()


def test_rkd_search_then_run_with_the_searched_cells(fake_fashion_dir, tmp_path, capsys):
    args = [
        "--runs-dir",
        str(tmp_path / "runs"),
        "--name",
        "tiny",
        f"data.fashion_mnist_dir={fake_fashion_dir}",
        f"data.cache_dir={tmp_path / 'datasets'}",
        *TINY,
        *SEARCH,
    ]
    assert main(["search", *args]) == 0
    run = tmp_path / "runs" / "tiny"
    searched = load_genotype(run / "search" / "genotype.json")
    assert json.loads((run / "search" / "stage.json").read_text())["summary"]["params"] > 0
    assert not (run / "stage1").exists()
    capsys.readouterr()
    assert main(["run", *args, "search.enabled=true"]) == 0
    out = capsys.readouterr().out
    assert "search: done for this config, skipping" in out
    student = json.loads((run / "stage1" / "student.json").read_text())["genotype"]
    assert Genotype(**{k: [tuple(e) if isinstance(e, list) else e for e in v] for k, v in student.items()}) == searched
    report = (run / "eval" / "report.md").read_text()
    assert "searched by KDL-DARTS" in report
    assert describe_cells(searched) in report  # the report names every searched op, not only the file
    capsys.readouterr()
    assert main(["search", *args, "--sweep-index", "7"]) == 2  # 4 sweep weights: indices 0-3
    assert "--sweep-index 7 is out of range" in capsys.readouterr().err


def test_search_config_validation_and_hashes():
    cfg = load_config(None, ["search.train.epochs=2"])
    assert cfg.search.train.optimizer == "sgd" and cfg.search.train.lr == 0.025  # partial sections keep their defaults
    base = stage_hashes(load_config(None))
    on = stage_hashes(load_config(None, ["search.enabled=true"]))
    assert base["stage1"] != on["stage1"] and base["search"] == on["search"] and base["cache"] == on["cache"]
    changed = stage_hashes(load_config(None, ["search.enabled=true", "search.arch_lr=0.01"]))
    assert changed["search"] != on["search"] and changed["stage1"] != on["stage1"]
    sweep_only = stage_hashes(load_config(None, ["search.enabled=true", "search.sweep_weights=[1.0]"]))
    assert sweep_only["search"] == on["search"] and sweep_only["stage1"] == on["stage1"]
    off_changed = stage_hashes(load_config(None, ["search.arch_lr=0.01"]))
    assert off_changed["stage1"] == base["stage1"]  # a disabled search does not touch stage 1


@pytest.mark.parametrize(
    "override, field, accepted",
    [
        ("search.order=third", "search.order", "second"),
        ("search.primitives=[sep_conv_3x3,warp_conv]", "search.primitives", "distinct op names"),
        ("search.primitives=[none]", "search.primitives", "other than 'none'"),
        ("search.partial_channels=3", "search.partial_channels", "dividing search.init_channels"),
        ("search.complexity=latency", "search.complexity", "both"),
        ("search.complexity_weight=-1", "search.complexity_weight", ">= 0"),
        ("search.param_budget=0", "search.param_budget", "> 0"),
        ("search.max_skips=-1", "search.max_skips", "no cap"),
        ("search.arch_betas=[0.5]", "search.arch_betas", "two numbers"),
        ("search.sweep_weights=[]", "search.sweep_weights", "non-empty"),
        ("search.train.optimizer=lion", "search.train.optimizer", "adamw"),
    ],
)
def test_bad_search_values_name_field_and_accepted(override, field, accepted):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert field in str(info.value) and accepted in str(info.value)


SEARCH_JOB = """
import json, sys
from pathlib import Path
import torch
from rkd.commands import leave
from rkd.config import load_config
from rkd.data import load_data
from rkd.engine import make_accelerator
from rkd.stages.search import run_search
from rkd.stages.search_objective import SearchObjective
from rkd.teacher.cache import TeacherCache

out = Path(sys.argv[1])
cfg = load_config(None, sys.argv[2:])
accelerator = make_accelerator(cpu=True)
rank, world = accelerator.process_index, accelerator.num_processes
if accelerator.is_main_process:
    load_data(cfg.data)
accelerator.wait_for_everyone()
bundle = load_data(cfg.data)
g = torch.Generator().manual_seed(0)
logits = {s: (4 * torch.nn.functional.one_hot(d.labels, 10) + torch.randn(len(d), 10, generator=g)).half()
          for s, d in bundle.splits.items()}
features = {s: torch.randn(len(d), 12, generator=g).half() for s, d in bundle.splits.items()}
cache = TeacherCache(logits, features, {}, out)
losses, latest = [], []
original = SearchObjective.before_update
def spy(self, model, batch, step):  # record this rank's own architecture loss and architecture
    original(self, model, batch, step)
    if self.architect is not None and self.architect.latest is not None:
        losses.append(self.architect.last_val_loss)
        latest[:] = [t.tolist() for t in self.architect.latest]
SearchObjective.before_update = spy
run_search(cfg, accelerator, bundle, cache, out / "search")
(out / f"rank{rank}.json").write_text(json.dumps({"world": world, "val_losses": losses, "latest": latest}))
accelerator.end_training()  # and leave as rkd.cli does: the interpreter's shutdown can abort a rank
leave(0, distributed=True)
"""


@pytest.mark.slow
def test_two_processes_average_the_architecture_gradient(fake_fashion_dir, tmp_path):
    """2 gloo processes see different val shards (different architecture losses) yet keep identical alphas."""
    from multiproc import run_launch

    job = tmp_path / "search_job.py"
    job.write_text(SEARCH_JOB)
    args = [
        f"data.fashion_mnist_dir={fake_fashion_dir}",
        f"data.cache_dir={tmp_path / 'datasets'}",
        *SEARCH,
        "search.warmup_epochs=0",
        "search.train.epochs=1",
    ]
    run_launch([job, tmp_path, *args], tmp_path / "search.log", nproc=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["val_losses"] != ranks[1]["val_losses"]  # each rank's own validation shard
    assert ranks[0]["latest"] == ranks[1]["latest"]  # the averaged gradient keeps the architectures identical
    initial = json.loads((tmp_path / "search" / "alphas.jsonl").read_text().splitlines()[0])["normal"]
    final = json.loads((tmp_path / "search" / "alphas.jsonl").read_text().splitlines()[-1])["normal"]
    assert initial != final


def test_the_default_searches_and_the_hand_cells_are_one_override_away():
    default = load_config("default")
    assert default.search.enabled  # the paper's method: teacher -> cache -> KDL-DARTS -> stage 1 on its cells
    hand = load_config("default", ["search.enabled=false", "student.genotype=default"])
    assert not hand.search.enabled and hand.student.genotype == "default"
    assert stage_hashes(hand)["stage1"] != stage_hashes(default)["stage1"]
    quick = load_config(["default", "quick"])  # the smoke run keeps the search, on a small subset
    assert quick.search.enabled and quick.search.max_train <= 256 and quick.search.train.epochs <= 2


def test_shared_edges_counts_what_every_seed_chose():
    from rkd.nas.genotype import GENOTYPES, shared_edges

    hand = GENOTYPES["default"]
    assert shared_edges([hand, hand, hand]) == 16 == shared_edges([hand], ignore_inputs=True)
    normal = list(hand.normal)
    normal[0], normal[1] = normal[1], normal[0]  # the same node's edges in another order: still shared
    normal[2] = ("max_pool_3x3", 2)  # one op changed
    normal[4] = ("dil_conv_3x3", 1)  # one input changed, op kept
    other = hand._replace(normal=normal)
    assert shared_edges([hand, other]) == 14 and shared_edges([hand, other], ignore_inputs=True) == 15
    assert shared_edges([hand, GENOTYPES["darts_v2"], other]) < 14


@pytest.mark.parametrize("order, unrolled_lr", [("first", 0.0), ("second", 0.05)])
def test_architecture_gradients_are_fp32_under_the_weights_mixed_precision(order, unrolled_lr, fresh_accelerate_state):
    """Accelerate's bf16 wraps the network's forward; the architect's passes (second order: a finite difference of
    two nearby losses, no loss scaling) must not inherit it."""
    from accelerate import Accelerator

    net = _tiny_net()
    architect, batch = _architect(net, order, unrolled_lr=unrolled_lr)
    val = {"x": batch["x"].flip(0), "y": batch["y"].flip(0)}
    reference = architect.gradients(net, batch, val, 0)
    Accelerator(cpu=True, mixed_precision="bf16").prepare_model(net)  # wraps net.forward in bf16 autocast
    with torch.no_grad():  # the wrapper casts its outputs back to fp32, after computing in bf16
        assert not torch.allclose(net(batch["x"])["logits"], net._original_forward(batch["x"])["logits"], atol=1e-4)
    under_amp = architect.gradients(net, batch, val, 0)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(reference, under_amp))
