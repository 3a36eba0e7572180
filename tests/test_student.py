"""Ops, genotypes and the student network: shapes, validation, size budget, trainability."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from rkd.measure import count_params
from rkd.nas.genotype import (
    GENOTYPES,
    GenotypeError,
    genotype_from_dict,
    genotype_to_dict,
    load_genotype,
    save_genotype,
)
from rkd.nas.heads import ClassifierHead, FeatureProjector
from rkd.nas.network import AuxiliaryHead, Cell, Student
from rkd.nas.ops import OPS, PRIMITIVES, FactorizedReduce, Identity, Zero
from rkd.nas.skeleton import reduction_layers

torch.set_num_threads(1)  # the CI box is small and shared; tiny tensors gain nothing from threads


# ----------------------------------------------------------------------------- ops


def test_primitives_are_the_darts_list_and_all_registered():
    assert PRIMITIVES == [
        "none",
        "max_pool_3x3",
        "avg_pool_3x3",
        "skip_connect",
        "sep_conv_3x3",
        "sep_conv_5x5",
        "dil_conv_3x3",
        "dil_conv_5x5",
    ]
    assert set(PRIMITIVES) <= set(OPS)


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("size", [14, 7, 1])
@pytest.mark.parametrize("stride", [1, 2])
def test_op_output_shape(name: str, size: int, stride: int):
    C = 4
    op = OPS[name](C, stride, False)
    x = torch.randn(2, C, size, size + 1, requires_grad=True)  # non-square catches swapped H/W padding
    y = op(x)
    assert tuple(y.shape) == (2, C, -(-size // stride), -(-(size + 1) // stride))  # ceil(in / stride)
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_skip_connect_is_identity_at_stride_1_and_reduces_at_stride_2():
    assert isinstance(OPS["skip_connect"](4, 1, True), Identity)
    assert isinstance(OPS["skip_connect"](4, 2, True), FactorizedReduce)
    assert isinstance(OPS["none"](4, 2, True), Zero)
    assert not OPS["none"](4, 2, True)(torch.randn(1, 4, 7, 7)).any()


def test_factorized_reduce_matches_strided_convs_on_shifted_input():
    """Subsample-then-conv must equal DARTS's stride-2 1x1 convs on the (padded) shifted input."""
    torch.manual_seed(0)
    op = FactorizedReduce(3, 4).eval()
    for size in (7, 8):
        x = torch.randn(2, 3, size, size)
        relu = F.relu(x)
        a = F.conv2d(relu, op.conv_1.weight, stride=2)
        b = F.conv2d(F.pad(relu, (0, 1, 0, 1))[:, :, 1:, 1:], op.conv_2.weight, stride=2)
        torch.testing.assert_close(op(x), op.bn(torch.cat([a, b], 1)))


def test_factorized_reduce_rejects_odd_channels():
    with pytest.raises(ValueError, match="even"):
        FactorizedReduce(4, 5)


# ----------------------------------------------------------------------------- genotypes


def test_registry_contains_default_and_darts_v2():
    assert set(GENOTYPES) >= {"default", "darts_v2"}
    v2 = load_genotype("darts_v2")
    assert v2.normal[:2] == [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)]
    assert v2.normal[-1] == ("dil_conv_3x3", 2)
    assert v2.reduce[2] == ("skip_connect", 2)
    assert v2.normal_concat == [2, 3, 4, 5] and v2.reduce_concat == [2, 3, 4, 5]
    for genotype in GENOTYPES.values():
        assert len(genotype.normal) == len(genotype.reduce) == 8  # 4 intermediate nodes


def test_genotype_dict_and_json_round_trip(tmp_path):
    genotype = GENOTYPES["default"]
    data = genotype_to_dict(genotype)
    assert json.loads(json.dumps(data)) == data
    assert genotype_from_dict(data) == genotype
    path = save_genotype(genotype, tmp_path / "cell.json", meta={"source": "test", "seed": 3})
    stored = json.loads(path.read_text())
    assert list(stored) == ["normal", "normal_concat", "reduce", "reduce_concat", "meta"]
    assert stored["meta"] == {"source": "test", "seed": 3}
    assert load_genotype(path) == genotype
    assert load_genotype(str(path)) == genotype


def test_genotype_from_dict_accepts_tuples_and_ranges():
    g = GENOTYPES["darts_v2"]
    data = {
        "normal": tuple(tuple(e) for e in g.normal),
        "normal_concat": range(2, 6),
        "reduce": [list(e) for e in g.reduce],
        "reduce_concat": (2, 3, 4, 5),
    }
    assert genotype_from_dict(data) == g


def _bad(**changes):
    data = genotype_to_dict(GENOTYPES["default"])
    data.update(changes)
    return data


@pytest.mark.parametrize(
    "data, needle",
    [
        (_bad(normal=[["conv_9x9", 0], ["skip_connect", 1]]), "normal[0]: unknown op 'conv_9x9'"),
        (_bad(reduce=[["skip_connect", 0], ["max_pool_3x3", 2]]), "reduce[1]: input index 2"),
        (_bad(normal=[["skip_connect", 0], ["skip_connect", -1]]), "normal[1]: input index -1"),
        (_bad(normal=[["skip_connect", 0], ["skip_connect", True]]), "input index True"),
        (_bad(normal=[["skip_connect", 0]]), "normal: expected a non-empty, even number"),
        (_bad(normal=[["skip_connect", 0, 1], ["skip_connect", 1]]), "normal[0]: expected an (op_name, input_index)"),
        (_bad(normal_concat=[2, 3, 6]), "normal_concat: node index 6"),
        (_bad(reduce_concat=[0, 2]), "reduce_concat: node index 0"),
        (_bad(reduce_concat=[2, 2]), "reduce_concat: repeated"),
        (_bad(reduce_concat=[]), "reduce_concat: expected a non-empty list"),
        ({"normal": [], "reduce": []}, "missing field(s) ['normal_concat', 'reduce_concat']"),
    ],
)
def test_invalid_genotypes_name_the_problem(data, needle):
    with pytest.raises(GenotypeError) as info:
        genotype_from_dict(data)
    assert needle in str(info.value)


def test_load_genotype_unknown_name_and_bad_file(tmp_path):
    with pytest.raises(GenotypeError, match="neither a registered name"):
        load_genotype("no_such_cell")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_bad(normal_concat=[9])))
    with pytest.raises(GenotypeError, match="bad.json.*normal_concat: node index 9"):
        load_genotype(bad)


def test_genotype_accepts_ops_registered_later():
    OPS["test_only_op"] = lambda C, stride, affine: OPS["skip_connect"](C, stride, affine)
    try:
        data = _bad(normal=[["test_only_op", 0], ["skip_connect", 1]], normal_concat=[2])
        assert genotype_from_dict(data).normal[0] == ("test_only_op", 0)
    finally:
        del OPS["test_only_op"]


# ----------------------------------------------------------------------------- student


@pytest.mark.parametrize("name", ["default", "darts_v2"])
@pytest.mark.parametrize("in_channels, size", [(1, 28), (3, 32)])
def test_student_forward_backward_and_output_shapes(name: str, in_channels: int, size: int):
    torch.manual_seed(0)
    model = Student(name, in_channels=in_channels, num_classes=7, init_channels=4, layers=4)
    x = torch.randn(3, in_channels, size, size)
    out = model(x)
    assert set(out) == {"tokens", "features", "logits"}
    side = -(-size // 2)  # stem stride 2
    for _ in model.reduction_indices:
        side = -(-side // 2)
    assert out["tokens"].shape == (3, side * side, model.token_dim)
    assert out["features"].shape == (3, model.feature_dim)
    assert out["logits"].shape == (3, 7)
    torch.testing.assert_close(out["features"], out["tokens"].mean(dim=1))
    F.cross_entropy(out["logits"], torch.tensor([0, 1, 2])).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_student_accepts_genotype_object_dict_name_and_path(tmp_path):
    path = save_genotype(GENOTYPES["darts_v2"], tmp_path / "v2.json")
    sources = [GENOTYPES["darts_v2"], genotype_to_dict(GENOTYPES["darts_v2"]), "darts_v2", path, str(path)]
    for source in sources:
        assert Student(source, 1, 10, init_channels=4, layers=2).genotype == GENOTYPES["darts_v2"]
    with pytest.raises(GenotypeError):
        Student("no_such_cell", 1, 10)


@pytest.mark.parametrize("stem_stride, side", [(1, 7), (2, 4), (4, 2)])
def test_stem_stride_sets_resolution(stem_stride: int, side: int):
    model = Student("default", 1, 10, init_channels=4, layers=3, stem_stride=stem_stride)
    assert model(torch.randn(2, 1, 28, 28))["tokens"].shape[1] == side * side


def test_default_student_budget():
    model = Student("default", in_channels=1, num_classes=10)
    n = count_params(model)
    assert n < 60_000, n  # at most 1/20 of the 1.23M-parameter teacher
    assert model.token_dim == model.feature_dim == 4 * 4 * 8  # 4 nodes x C doubled twice


@pytest.mark.parametrize("layers", [1, 2, 3, 5, 8])
def test_reduction_cells_at_one_and_two_thirds(layers: int):
    model = Student("default", 1, 10, init_channels=4, layers=layers)
    expected = sorted({layers // 3, 2 * layers // 3})
    assert reduction_layers(layers) == expected
    assert [i for i, cell in enumerate(model.cells) if cell.reduction] == expected
    channels = [cell.out_channels for cell in model.cells]
    for i in expected:  # channels double at each reduction
        assert channels[i] == 2 * (channels[i - 1] if i > 0 else 4 * 4)
    assert model(torch.randn(2, 1, 28, 28))["logits"].shape == (2, 10)


def test_cell_preprocesses_higher_resolution_input():
    cell = Cell(GENOTYPES["default"], C_prev_prev=8, C_prev=16, C=4, reduction=False, reduction_prev=True)
    assert isinstance(cell.preprocess0, FactorizedReduce)
    out = cell(torch.randn(2, 8, 7, 7), torch.randn(2, 16, 4, 4))
    assert out.shape == (2, 16, 4, 4)


def test_auxiliary_head_only_when_asked_and_only_in_training():
    x = torch.randn(2, 1, 28, 28)
    plain = Student("default", 1, 10, init_channels=4, layers=3)
    assert plain.auxiliary_head is None and "aux_logits" not in plain(x)
    model = Student("default", 1, 10, init_channels=4, layers=3, auxiliary=True)
    assert isinstance(model.auxiliary_head, AuxiliaryHead)
    assert model(x)["aux_logits"].shape == (2, 10)
    model.eval()
    assert "aux_logits" not in model(x)


def test_drop_path_only_in_training_and_spares_identity():
    torch.manual_seed(0)
    model = Student("default", 1, 10, init_channels=4, layers=3, drop_path=0.5)
    x = torch.randn(4, 1, 28, 28)
    model.eval()
    torch.testing.assert_close(model(x)["logits"], model(x)["logits"])  # deterministic at eval
    model.train()
    a, b = model(x)["logits"], model(x)["logits"]
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError):
        Student("default", 1, 10, drop_path=1.0)


def test_student_fits_a_tiny_batch():
    torch.manual_seed(0)
    model = Student("default", 1, 4, init_channels=4, layers=3)
    x, y = torch.randn(16, 1, 16, 16), torch.arange(16) % 4
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(x)["logits"], y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses


def test_state_dict_is_contiguous_for_safetensors():
    model = Student("default", 1, 10, init_channels=4, layers=3)
    model(torch.randn(2, 1, 28, 28)).get("logits").sum().backward()
    assert all(t.is_contiguous() for t in model.state_dict().values())


# ----------------------------------------------------------------------------- heads


def test_heads_shapes_and_parameter_count():
    x = torch.randn(5, 12)
    assert FeatureProjector(12, 30)(x).shape == (5, 30)
    assert FeatureProjector(12, 30, hidden=16)(x).shape == (5, 30)
    assert ClassifierHead(12, 3, hidden=8, dropout=0.1)(x).shape == (5, 3)
    assert count_params(FeatureProjector(12, 30)) == 12 * 30 + 30
    head = ClassifierHead(12, 3)
    head.net.bias.requires_grad_(False)
    assert count_params(head) == 12 * 3 + 3
    assert count_params(head, trainable_only=True) == 12 * 3
