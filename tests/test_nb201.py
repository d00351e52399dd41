"""NAS-Bench-201: data table, arch_str helpers, plain network builder, NNI model space."""
from __future__ import annotations

import io
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from nnmeter_nas.datasets.nb201 import (
    DATA_ENV_VAR,
    NB201_DEVICES,
    NB201_OPS,
    ArchStrError,
    NB201DataError,
    NB201Table,
    default_data_dir,
    format_arch_str,
    parse_arch_str,
)

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"

DATA_DIR = default_data_dir()
needs_data = pytest.mark.skipif(not (DATA_DIR / "architectures.csv").is_file(),
                                reason=f"NAS-Bench-201 data not found at {DATA_DIR} (set {DATA_ENV_VAR})")


@pytest.fixture(scope="module")
def table() -> NB201Table:
    return NB201Table.load()


# ----------------------------------------------------------------------------- arch_str

def test_parse_and_format_round_trip():
    ops = parse_arch_str(BEST)
    assert ops == ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3", "nor_conv_3x3")
    assert format_arch_str(ops) == BEST
    rng = np.random.default_rng(0)
    for _ in range(50):
        ops = tuple(rng.choice(NB201_OPS, size=6))
        assert parse_arch_str(format_arch_str(ops)) == ops
    mapping = {(0, 1): "none", (0, 2): "skip_connect", (1, 2): "avg_pool_3x3",
               (0, 3): "nor_conv_1x1", (1, 3): "none", (2, 3): "nor_conv_3x3"}
    assert parse_arch_str(format_arch_str(mapping)) == tuple(mapping.values())


@pytest.mark.parametrize("bad, words", [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "3"),
    ("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "conv_5x5"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "op~0"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2"),
])
def test_parse_rejects_malformed_strings(bad, words):
    with pytest.raises(ArchStrError, match=words):
        parse_arch_str(bad)
    with pytest.raises(ArchStrError):
        format_arch_str(["none"] * 5)


# ----------------------------------------------------------------------------- table

@needs_data
def test_table_contents(table):
    assert len(table) == 8689
    assert table.devices == NB201_DEVICES
    assert table.accuracy(1) == pytest.approx(93.66)
    assert table.arch(1).arch_str == table.arch(table.arch(1).arch_str).arch_str
    assert table.latency(1, "cortexA76cpu_tflite21") == pytest.approx(16.4499)
    assert table.latency(5, "cortexA76cpu_tflite21") is None  # in the table, not measured
    assert set(table.latencies(1)) == set(NB201_DEVICES)
    for device in NB201_DEVICES:
        rows = table.measured(device)
        assert len(rows.indices) == len(rows.arch_strs) == len(rows.accuracy) == len(rows.latency_ms) == 1458
        assert np.all(np.diff(rows.indices) > 0)
        assert np.all(rows.latency_ms > 0) and np.all(rows.accuracy >= 90)
    cells, lat = table.latency_matrix()
    assert lat.shape == (len(cells), 4) and len(cells) == 1458
    with pytest.raises(KeyError, match="cortexA76cpu_tflite21"):
        table.latency(1, "no_such_device")
    with pytest.raises(ArchStrError, match="not in the table"):
        table.arch(3)


def test_missing_data_dir_names_path_and_env_var(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv(DATA_ENV_VAR, str(missing))
    assert default_data_dir() == missing
    with pytest.raises(NB201DataError) as err:
        NB201Table.load()
    assert str(missing) in str(err.value) and DATA_ENV_VAR in str(err.value)


def test_env_var_overrides_and_rows_are_checked(tmp_path, monkeypatch):
    (tmp_path / "architectures.csv").write_text(
        f"nb201_index,arch_str,cifar10_acc\n7,{BEST},94.1\n9,{ALL_CONV3},93.5\n")
    (tmp_path / "latency_train.csv").write_text(
        "nb201_index,device,latency_ms\n7,devA,2.5\n9,devA,3.0\n9,devB,1.0\n")
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    t = NB201Table.load()
    assert t.devices == ("devA", "devB") and t.latency(BEST, "devB") is None
    assert [a.index for a in t.measured_on_all()] == [9]
    (tmp_path / "latency_train.csv").write_text("nb201_index,device,latency_ms\n8,devA,2.5\n")
    with pytest.raises(NB201DataError, match="index 8"):
        NB201Table.load()
    (tmp_path / "latency_train.csv").write_text("nb201_index,device,latency_ms\n7,devA,nan\n")
    with pytest.raises(NB201DataError, match="not a positive number"):
        NB201Table.load()


# ----------------------------------------------------------------------------- plain network

def _expected_params(arch_str: str, C: int = 16, N: int = 5, classes: int = 10) -> int:
    """Parameter count of a NAS-Bench-201 network, counted by hand from the paper's layout."""
    from nnmeter_nas.search_spaces.nasbench201 import live_edges
    per_edge = {"nor_conv_3x3": lambda c: 9 * c * c + 2 * c, "nor_conv_1x1": lambda c: c * c + 2 * c}
    total = 27 * C + 2 * C  # stem conv + BN
    for stage, c in enumerate((C, 2 * C, 4 * C)):
        if stage:
            ci = c // 2
            total += 9 * ci * c + 2 * c + 9 * c * c + 2 * c + ci * c  # conv_a, conv_b, 1x1 shortcut
        total += N * sum(per_edge.get(op, lambda c: 0)(c) for _, _, op in live_edges(parse_arch_str(arch_str)))
    return total + 2 * 4 * C + 4 * C * classes + classes


def _onnx_op_counts(net) -> Counter:
    import onnx
    import torch
    buf = io.BytesIO()
    torch.onnx.export(net.eval(), (torch.zeros(1, 3, 32, 32),), buf, dynamo=False)
    return Counter(n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node)


def test_network_shapes_and_parameter_counts():
    import torch
    from nnmeter_nas.search_spaces.nasbench201 import build_nb201_network
    net = build_nb201_network(ALL_CONV3)
    assert sum(p.numel() for p in net.parameters()) == 1531546  # NAS-Bench-201's largest network
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    for arch in (BEST, "|none~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|skip_connect~0|none~1|nor_conv_1x1~2|"):
        net = build_nb201_network(arch, C=8, N=2, num_classes=7)
        assert sum(p.numel() for p in net.parameters()) == _expected_params(arch, 8, 2, 7)
        assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 7)


def test_none_and_dead_edges_add_no_onnx_operators():
    from nnmeter_nas.search_spaces.nasbench201 import build_nb201_network
    fixed_convs = 1 + 2 * 3  # stem + two residual blocks (conv_a, conv_b, shortcut)
    full = _onnx_op_counts(build_nb201_network(ALL_CONV3, N=1))
    assert full["Conv"] == fixed_convs + 3 * 6
    assert full["Add"] == 2 + 3 * 3  # residual adds + node sums (1 + 2 per cell)
    # node 1 feeds nothing (its out-edges are none), node 2 has only a pool: cell = pool -> conv1x1
    arch = "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|none~0|none~1|nor_conv_1x1~2|"
    counts = _onnx_op_counts(build_nb201_network(arch, N=1))
    assert counts["Conv"] == fixed_convs + 3 * 1
    assert counts["AveragePool"] == 3 + 2  # one per cell, two residual shortcuts
    assert counts["Add"] == 2 and counts["Mul"] == 0


def test_cell_without_path_to_output_gives_zeros():
    import torch
    from nnmeter_nas.search_spaces.nasbench201 import build_nb201_network
    net = build_nb201_network("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|none~2|", N=1)
    assert all(len(cell.edges) == 0 for cell in net.cells if hasattr(cell, "edge_nodes"))
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(net.eval()(x), net(torch.randn(1, 3, 32, 32)))  # output ignores the input


@pytest.mark.slow
def test_plain_builder_does_not_import_nni():
    code = ("import sys; from nnmeter_nas.search_spaces.nasbench201 import build_nb201_network; "
            "import nnmeter_nas.search_spaces, nnmeter_nas.datasets; "
            f"build_nb201_network({BEST!r}); assert 'nni' not in sys.modules, 'nni imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# ----------------------------------------------------------------------------- NNI model space

@pytest.fixture(scope="module")
def space_cls():
    pytest.importorskip("nni")
    from nnmeter_nas.search_spaces import NasBench201Space
    return NasBench201Space


def test_space_labels_and_sample_mapping(space_cls):
    from nnmeter_nas.search_spaces.nasbench201 import NB201_LABELS, arch_str_to_sample, sample_to_arch_str
    space = space_cls(C=4, N=1)
    simple = space.simplify()
    assert tuple(simple) == NB201_LABELS == ("cell/0_1", "cell/0_2", "cell/1_2", "cell/0_3", "cell/1_3", "cell/2_3")
    assert all(list(m.values) == list(NB201_OPS) for m in simple.values())
    sample = arch_str_to_sample(BEST)
    assert sample_to_arch_str(sample) == BEST
    hub_style = {k: v.replace("nor_", "") for k, v in sample.items()}  # NNI hub spelling
    assert sample_to_arch_str(hub_style) == BEST
    with pytest.raises(ArchStrError, match="cell/2_3"):
        sample_to_arch_str({k: v for k, v in sample.items() if k != "cell/2_3"})
    with pytest.raises(ArchStrError, match="unknown label"):
        sample_to_arch_str({**sample, "lr": 0.1})
    assert sample_to_arch_str({**sample, "lr": 0.1}, strict=False) == BEST
    with pytest.raises(ArchStrError, match="conv_5x5"):
        sample_to_arch_str({**sample, "cell/0_1": "conv_5x5"})


def test_frozen_space_equals_plain_network(space_cls):
    import torch
    from nni.nas.space import model_context
    from nnmeter_nas.search_spaces.nasbench201 import NB201Network, arch_str_to_sample, build_nb201_network
    space = space_cls(C=8, N=2)
    arch = "|nor_conv_1x1~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
    sample = arch_str_to_sample(arch)
    torch.manual_seed(0)
    frozen = space.freeze(sample)
    torch.manual_seed(0)
    plain = build_nb201_network(arch, C=8, N=2)
    with model_context(sample):
        torch.manual_seed(0)
        in_context = space_cls(C=8, N=2)
    for net in (frozen, in_context):
        assert isinstance(net, NB201Network) and net.arch_str == arch
        assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
        x = torch.randn(2, 3, 32, 32)
        assert torch.allclose(net.eval()(x), plain.eval()(x))
    assert space(torch.zeros(1, 3, 32, 32)).shape == (1, 10)  # the supernet dry-run runs too


def test_space_restricted_to_allowed_cells(space_cls):
    from nni.mutable import SampleValidationError
    from nni.nas.space import SimplifiedModelSpace
    from nnmeter_nas.search_spaces.nasbench201 import arch_str_to_sample, sample_to_arch_str
    allowed = {BEST, ALL_CONV3, "|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|"}
    space = space_cls(C=4, N=1, allowed_arch_strs=allowed)
    assert "cell/allowed" in space.simplify()
    assert space.contains(arch_str_to_sample(BEST))
    other = arch_str_to_sample(BEST.replace("skip_connect", "none"))
    assert not space.contains(other)
    with pytest.raises(SampleValidationError, match="not among"):
        space.freeze(other)
    # a larger allowed set (4% of the space): sampling retries until it lands inside
    import itertools
    allowed = {format_arch_str(("skip_connect", a, b, c, d, "nor_conv_3x3"))
               for a, b, c, d in itertools.product(NB201_OPS, repeat=4)}
    exec_space = SimplifiedModelSpace.from_model(space_cls(C=4, N=1, allowed_arch_strs=allowed), None)
    rs = np.random.RandomState(1)
    seen = []
    for _ in range(2000):
        try:
            model = exec_space.random(random_state=rs)
        except SampleValidationError:
            continue
        seen.append(sample_to_arch_str(model.sample))
    assert len(seen) > 30 and set(seen) <= allowed
    assert model.executable_model().arch_str == seen[-1]


def test_random_networks_of_a_space_are_deterministic_distinct_and_skip_excluded():
    from nnmeter_nas.search_spaces.sampling import random_networks

    a = [arch for arch, _, _ in random_networks("nb201", 20, seed=3)]
    assert a == [arch for arch, _, _ in random_networks("nb201", 20, seed=3)]
    assert len(set(a)) == 20
    b = [arch for arch, _, _ in random_networks("nb201", 20, seed=3, exclude=a[:5])]
    assert not set(a[:5]) & set(b) and b[:15] == a[5:]
    arch, make, shape = next(random_networks("nb201", 1, seed=0))
    import torch

    net = make()
    assert shape == (1, 3, 32, 32) and isinstance(net, torch.nn.Module)
    with torch.no_grad():
        assert tuple(net.eval()(torch.zeros(shape)).shape) == (1, 10)
    with pytest.raises(ValueError, match="unknown search space 'imagenet'.*spos, spos-small"):
        next(random_networks("imagenet", 1))
