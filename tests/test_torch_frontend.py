"""The torch front end (graph/torch_frontend.py) against the ONNX export path.

Each network is read both ways (``load_graph(..., torch_frontend="trace")`` and
``torch_frontend="onnx"``); the kernel lists (kernel types, regressor names and feature vectors
in every feature set, under the default fusion rules) must be equal, and so must the graphs
(node types, source ops, NHWC shapes, attributes, links, order), which is what makes the
kernels equal. The big sweeps (whole zoo, 200 SPOS candidates per input size, 200
NAS-Bench-201 cells) are marked slow; a few of each run unmarked. The 600 sweep candidates are
compared with the ONNX path's records in tests/data/frontend_sweep_reference.json.gz (written
by scripts/frontend_sweep_reference.py; exporting them all at each run was most of the suite's
CPU time), and 10 per sweep are exported afresh against those records.
"""
from __future__ import annotations

import copy
import functools
import random
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from nnmeter_nas.errors import TorchFrontEndError  # noqa: E402
from nnmeter_nas.features.extract import FEATURE_SETS, extract_features, regressor_name  # noqa: E402
from nnmeter_nas.graph import TorchFallbackWarning, load_graph  # noqa: E402
from nnmeter_nas.kernels.detector import detect_kernels  # noqa: E402
from nnmeter_nas.kernels.fusion_rules import FusionRules  # noqa: E402

import frontend_reference as ref  # noqa: E402
from frontend_reference import SWEEP_PARTS, SWEEP_SEED, SWEEP_SIZE, SWEEP_SPACES  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def kernel_list(graph):
    """``[(kernel type, regressor, {feature set: features})]`` under the default rules."""
    out = []
    for k in detect_kernels(graph, FusionRules.default()):
        out.append((k.type, regressor_name(k.type),
                    {fs: extract_features(k, fs) for fs in FEATURE_SETS}))
    return out


def graph_signature(graph):
    index = {name: i for i, name in enumerate(graph.nodes)}
    return [(n.type, n.source_op, n.input_shapes, n.output_shapes, n.attrs,
             sorted(index[i] for i in n.inputs)) for n in graph]


def assert_same_as_onnx(module, shape):
    traced = load_graph(module, input_shape=shape, torch_frontend="trace")
    exported = load_graph(module, input_shape=shape, torch_frontend="onnx")
    assert kernel_list(traced) == kernel_list(exported)
    assert graph_signature(traced) == graph_signature(exported)
    assert traced.name == exported.name
    return traced


# ------------------------------------------------------------------------------ zoo

FAST_ZOO = ["mobilenet_v3_small", "shufflenet_v2", "cifar_resnet20"]


def _zoo_params():
    from nnmeter_nas import zoo

    return [pytest.param(name, marks=() if name in FAST_ZOO else pytest.mark.slow)
            for name in zoo.list_models()]


@pytest.mark.parametrize("name", _zoo_params())
def test_zoo_network_kernel_lists_equal_onnx_path(name):
    from nnmeter_nas import zoo

    torch.manual_seed(0)
    shape = (1, 3, 32, 32) if name in zoo.CIFAR_ZOO else (1, 3, 224, 224)
    assert_same_as_onnx(zoo.build(name), shape)


def test_zoo_shufflenet_split_variant_kernel_lists_equal_onnx_path():
    from nnmeter_nas import zoo

    assert_same_as_onnx(zoo.build("shufflenet_v2", split_op="split"), (1, 3, 224, 224))


# ------------------------------------------------------------------------------ search spaces

def _space_networks(space, n, seed):
    from nnmeter_nas.search_spaces.sampling import random_networks

    return [(arch, make(), shape) for arch, make, shape in random_networks(space, n, seed)]


@pytest.mark.parametrize("space", ["spos-small", "spos", "nb201"])
def test_few_random_candidates_kernel_lists_equal_onnx_path(space):
    for _, net, shape in _space_networks(space, 2, seed=11):
        assert_same_as_onnx(net, shape)


# The sweeps (issue 18): the torch front end on every candidate against the ONNX export path's
# records in tests/data/frontend_sweep_reference.json.gz (see tests/frontend_reference.py), and
# a fresh ONNX export against those records for one candidate of each part (10 per sweep), so a
# change of the export path or the reader fails too.
#
# The slow parts build the SPOS candidates as scoring does (nnmeter_nas.parallel.spaces
# .freeze_function: NNI's layout over one space's modules, as full-mode scoring and the latency
# tables read them), not with SPOSSpace.frozen_factory, which constructs and initialises all four
# candidates of each of the 20 blocks (about 0.25 s a network, 60% of a part's time). The records
# were written from frozen_factory networks, so a freezer whose networks differ fails the part;
# the unmarked first-candidates test keeps building them with frozen_factory.

def _reference_rows(space):
    rows = ref.load_reference()["sweeps"][space]
    assert len(rows) == SWEEP_SIZE, f"{space}: {len(rows)} records, rerun {ref.WRITER}"
    return rows


def _sweep_part(space, part):
    """The candidates of part ``part``: ``(index, arch, factory, shape)``."""
    candidates = ref.sweep(space)
    return [(i, *candidates[i]) for i in ref.part_indices(part)]


def test_sweep_parts_cover_every_candidate_once():
    for space in SWEEP_SPACES:
        keys = [repr(arch) for part in range(SWEEP_PARTS) for _, arch, _, _ in
                _sweep_part(space, part)]
        assert len(keys) == SWEEP_SIZE and len(set(keys)) == SWEEP_SIZE, space
        live = ref.live_indices(space)
        assert sorted(i % SWEEP_PARTS for i in live) == list(range(SWEEP_PARTS)), space
        assert all(0 <= i < SWEEP_SIZE for i in live)


def test_sweep_reference_holds_the_sampled_candidates():
    """The committed records are of the candidates the samplers draw today, in order, with the
    sweep's seed and size (a changed sampler needs a new reference)."""
    reference = ref.load_reference()
    assert (reference["format"], reference["seed"], reference["size"]) == \
        (ref.FORMAT, SWEEP_SEED, SWEEP_SIZE), f"rerun {ref.WRITER}"
    assert sorted(reference["sweeps"]) == sorted(SWEEP_SPACES)
    for space in SWEEP_SPACES:
        drawn = [ref.arch_key(arch) for arch, _, _ in ref.sweep(space)]
        stored = [ref.arch_key(row["arch"]) for row in _reference_rows(space)]
        assert drawn == stored, f"{space}: the sampler draws other candidates; rerun {ref.WRITER}"


@functools.lru_cache(maxsize=None)
def _scoring_freezer(space):
    """``sample -> network`` of ``space`` as scoring freezes candidates (one space built once,
    its modules shared by the candidates); None for NAS-Bench-201, whose sampler builds the
    deployed cell network directly (cheap)."""
    if not space.startswith("spos"):
        return None
    from nnmeter_nas.parallel.spaces import freeze_function, resolve_space

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NNI's torch-version notices
        return freeze_function(resolve_space(space).build())


def _check_against_reference(space, indices, candidates, live=(), freeze=None):
    """Compare the torch front end (and, for ``live``, a fresh ONNX export) with the
    reference on ``candidates[i]`` for each ``i`` of ``indices``; return the differences.
    ``freeze``: builds a candidate's network from its architecture (default: the
    candidate's own factory)."""
    rows = _reference_rows(space)
    differing = []
    for i in indices:
        arch, make, shape = candidates[i]
        want = rows[i]
        assert ref.arch_key(want["arch"]) == ref.arch_key(arch), \
            f"{space} candidate {i} is not the reference's; rerun {ref.WRITER}"
        want = {k: v for k, v in want.items() if k != "arch"}
        net = make() if freeze is None else freeze(arch)
        where = ref.first_difference(ref.trace_record(net, shape), want)
        if where:
            differing.append(f"candidate {i} ({arch}), torch front end against the ONNX path's "
                             f"record: {where}")
        if i in live:
            where = ref.first_difference(ref.onnx_record(net, shape), want)
            if where:
                differing.append(f"candidate {i} ({arch}), fresh ONNX export (export path "
                                 f"or reader changed? if on purpose, rerun {ref.WRITER}): "
                                 f"{where}")
    return differing


def test_reference_comparison_finds_a_changed_record():
    """The record comparison the sweeps rely on tells apart what ``==`` on live graphs did:
    a changed feature, attribute, link or node count, and a tuple where a list was."""
    want = _reference_rows("nb201")[0]
    want = {k: v for k, v in want.items() if k != "arch"}
    assert ref.first_difference(copy.deepcopy(want), want) is None
    changed = copy.deepcopy(want)
    next(k for k in changed["kernels"] if k[2]["nnmeter-nas-1"])[2]["nnmeter-nas-1"][0] += 1
    assert "['kernels']" in ref.first_difference(changed, want)
    changed = copy.deepcopy(want)
    changed["graph"][0][4]["pads"] = ref.canonical(tuple(want["graph"][0][4]["pads"]))
    assert "['pads']" in ref.first_difference(changed, want)
    changed = copy.deepcopy(want)
    changed["graph"][-1][5] = []
    assert ref.first_difference(changed, want)
    changed = copy.deepcopy(want)
    del changed["graph"][-1]
    assert "items" in ref.first_difference(changed, want)
    assert ref.canonical((1, [2])) != ref.canonical([1, [2]])
    assert ref.canonical({"a": np.int64(3), "b": np.float32(0.5)}) == {"a": 3, "b": 0.5}


@pytest.mark.parametrize("space", SWEEP_SPACES)
def test_first_sweep_candidates_equal_onnx_path_reference(space):
    """Unmarked: the first three candidates of each sweep; the second (in no part's live set)
    also exported afresh."""
    assert not set(ref.live_indices(space)) & {1}
    differing = _check_against_reference(space, range(3), ref.sweep(space), live={1})
    assert not differing, differing


@pytest.mark.slow
@pytest.mark.timeout(900)  # 20 builds and traces, one ONNX export; far longer on a shared core
@pytest.mark.parametrize("part", range(SWEEP_PARTS))
@pytest.mark.parametrize("space", SWEEP_SPACES)
def test_200_random_candidates_kernel_lists_equal_onnx_path(space, part):
    """Part ``part`` of the sweep: 20 candidates through the torch front end against the ONNX
    path's records, one of them (``ref.live_indices``) also exported afresh; SPOS candidates
    frozen as scoring freezes them (:func:`_scoring_freezer`)."""
    live = set(ref.live_indices(space)) & set(ref.part_indices(part))
    assert len(live) == 1
    differing = _check_against_reference(space, ref.part_indices(part), ref.sweep(space), live,
                                         freeze=_scoring_freezer(space))
    assert not differing, (f"{len(differing)} differences among the "
                           f"{SWEEP_SIZE // SWEEP_PARTS} {space} candidates of part {part}: "
                           f"{differing[:3]}")


def test_examples_networks_kernel_lists_equal_onnx_path():
    """The networks the examples predict: SPOS's published architecture and random SPOS
    samples with the examples' 10-class head, at the small input size."""
    from nnmeter_nas.search_spaces.spos import SPOS_PUBLISHED_ARCH, SPOSSpace, spos_random_sample

    for arch in (SPOS_PUBLISHED_ARCH, spos_random_sample(7)):
        net = SPOSSpace.frozen_factory(dict(arch))(small_input=True, num_labels=10)
        assert_same_as_onnx(net, (1, 3, 32, 32))


@pytest.mark.slow
def test_examples_full_size_networks_kernel_lists_equal_onnx_path():
    from nnmeter_nas.search_spaces.spos import SPOS_PUBLISHED_ARCH, SPOSSpace

    net = SPOSSpace.frozen_factory(dict(SPOS_PUBLISHED_ARCH))(small_input=False, num_labels=10)
    assert_same_as_onnx(net, (1, 3, 224, 224))
    net = SPOSSpace.frozen_factory(dict(SPOS_PUBLISHED_ARCH))()
    assert_same_as_onnx(net, (1, 3, 224, 224))


def _nni_frozen_sample(space, seed):
    rng = random.Random(seed)
    sample = {}
    for label, mutable in space.simplify().items():
        values = getattr(mutable, "values", None)
        sample[label] = values[rng.randrange(len(values))] if values else mutable.default()
    return space.freeze(sample)


def test_nni_nasbench201_frozen_sample_kernel_lists_equal_onnx_path():
    """NNI's own NAS-Bench-201 space (cells sum their inputs with torch.stack/sum), as
    DirectLatencyProfiler reads it."""
    from nni.nas.hub.pytorch import NasBench201

    assert_same_as_onnx(_nni_frozen_sample(NasBench201(), 0), (1, 3, 32, 32))


@pytest.mark.slow
@pytest.mark.parametrize("space_name", ["MobileNetV3Space", "ProxylessNAS", "ShuffleNetSpace",
                                        "NasBench201"])
def test_nni_model_space_frozen_samples_kernel_lists_equal_onnx_path(space_name):
    import nni.nas.hub.pytorch as hub

    space = getattr(hub, space_name)()
    shape = (1, 3, 32, 32) if space_name == "NasBench201" else (1, 3, 224, 224)
    for seed in (1, 2):
        assert_same_as_onnx(_nni_frozen_sample(space, seed), shape)


# ------------------------------------------------------------------------------ exporter rules

class _ExporterRules(nn.Module):
    """Constructs whose ONNX export is rewritten by the exporter (CSE, in-place ops, BN
    fusion conditions, transposes, slices, splits, pools, stack/sum, x + 0)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, 1, 1, groups=8)
        self.bn_fused = nn.BatchNorm2d(8)
        self.bn_kept = nn.BatchNorm2d(8)
        self.r1, self.r2 = nn.ReLU(inplace=True), nn.ReLU(inplace=True)
        self.p1 = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.p2 = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.mp = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.hs = nn.Hardswish()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)
        self.fc_nobias = nn.Linear(8, 4, bias=False)

    def forward(self, x):
        a = self.conv(x) + self.conv(x)                 # CSE: one conv
        b = self.r1(a) + self.r2(a)                     # in-place: relu(relu(a)) twice
        c = self.p1(b) + self.p2(b) + F.relu(b) + b.relu() + x.mul(0.0) + x * 0.0
        d = self.bn_fused(self.dw(c))                   # folded into the conv
        e = self.conv(d)
        f = self.bn_kept(e) + e                         # conv used twice: BN kept
        g = f.permute(0, 2, 3, 1).permute(0, 3, 1, 2)   # identity: dropped
        h1, h2 = g.chunk(2, 1)
        i1, i2 = g.split([4, 4], 1)
        j1, j2 = torch.split(g, 4, dim=1)
        k = torch.cat([h2 + i1, j1 * i2 + g[:, 2:6] + h1], 1)
        k = self.hs(k) + sum([k, g])                    # sum starts with 0 + k
        k = torch.stack([k, g], dim=1).sum(dim=1)
        k = self.mp(k).reshape(1, 2, 4, 8, 8).transpose(1, 2).reshape(1, 8, 8, 8)
        z = F.adaptive_avg_pool2d(k, 4) + F.adaptive_max_pool2d(k, 4)
        v = torch.flatten(self.gap(z), 1)
        return self.fc(v) + self.fc_nobias(v), z.mean((2, 3)), k[0]


def test_exporter_rewrites_are_reproduced():
    graph = assert_same_as_onnx(_ExporterRules().eval(), (1, 8, 16, 16))
    convs = [n for n in graph if n.type in ("conv", "dwconv")]
    assert len(convs) == 3                   # CSE merged the repeated 1x1 conv of x
    assert sum(n.type == "bn" for n in graph) == 1


class _PreActShortcut(nn.Module):
    """x is modified in place by the ReLU before the shortcut reads it."""

    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(4, 4, 3, 1, 1)

    def forward(self, x):
        y = x * 2.0
        out = self.conv(self.relu(y))
        return out + y                           # y is relu(y) here, as in eager mode


def test_inplace_ops_update_the_tensor_they_modify():
    graph = assert_same_as_onnx(_PreActShortcut(), (1, 4, 8, 8))
    add = next(n for n in graph if n.type == "add")
    assert {graph[i].type for i in add.inputs} == {"conv", "relu"}


class _ReluConv(nn.Conv2d):
    """A convolution subclass whose ``_conv_forward`` adds an activation."""

    def _conv_forward(self, x, weight, bias):
        return F.relu(super()._conv_forward(x, weight, bias))


class _OverriddenLayers(nn.Module):
    """Layers the front end would otherwise read without running their ``forward``: a subclass
    overriding a method that ``forward`` calls, a layer with a forward hook that changes its
    output, and one called with a keyword argument."""

    def __init__(self):
        super().__init__()
        self.conv = _ReluConv(3, 8, 3, padding=1)
        self.hooked = nn.Conv2d(8, 8, 1)
        self.hooked.register_forward_hook(lambda m, inp, out: out * 2.0)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU6()

    def forward(self, x):
        return self.act(self.bn(input=self.hooked(self.conv(x))))


def test_layers_whose_forward_is_overridden_or_hooked_are_read_through_it():
    graph = assert_same_as_onnx(_OverriddenLayers().eval(), (1, 3, 8, 8))
    assert [n.type for n in graph] == ["conv", "relu", "conv", "mul", "bn", "relu"]


class _Sequentials(nn.Module):
    """Sequential containers, whose common layers the front end runs without making the
    shape tensors between them: an in-place ReLU first (it updates the tensor handed to the
    container, which the caller reads again), a child with a forward hook, a batch norm on a
    2-D input (its own forward runs), a nested container and one whose child returns a
    tuple."""

    class _Pair(nn.Module):
        def forward(self, x):
            return x, x

    class _First(nn.Module):
        def forward(self, pair):
            return pair[0] + pair[1]

    def __init__(self):
        super().__init__()
        self.pre = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3, padding=1),
                                 nn.BatchNorm2d(4), nn.ReLU6(inplace=True))
        hooked = nn.Conv2d(4, 4, 1)
        hooked.register_forward_hook(lambda m, inp, out: out * 2.0)
        self.body = nn.Sequential(nn.Sequential(nn.Conv2d(4, 8, 1), nn.BatchNorm2d(8)),
                                  nn.Identity(), nn.ReLU(),
                                  nn.Conv2d(8, 4, 1), hooked, nn.Hardswish())
        self.split = nn.Sequential(nn.Conv2d(4, 4, 1), self._Pair(), self._First(),
                                   nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6),
                                  nn.BatchNorm1d(6), nn.ReLU())

    def forward(self, x):
        y = self.pre(x)
        return self.head(self.split(self.body(y) + x))  # x: updated by pre's first ReLU


def test_sequential_containers_are_read_as_their_forward_runs():
    graph = assert_same_as_onnx(_Sequentials().eval(), (1, 4, 8, 8))
    assert "mul" in [n.type for n in graph]  # (the hook's output * 2.0)


class _SamePadding(nn.Module):
    """Convolutions with ``padding='same'`` (odd, even and dilated kernels), which the exporter
    writes with ``auto_pad`` instead of pads."""

    def __init__(self):
        super().__init__()
        self.odd = nn.Conv2d(3, 8, 3, padding="same")
        self.even = nn.Conv2d(8, 8, 4, padding="same", bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.dilated = nn.Conv2d(8, 8, 3, padding="same", dilation=2, groups=8)

    def forward(self, x):
        return self.dilated(torch.relu(self.bn(self.even(self.odd(x)))))


def test_same_padding_is_mapped():
    graph = assert_same_as_onnx(_SamePadding().eval(), (1, 3, 9, 9))
    assert [n.type for n in graph] == ["conv", "conv", "relu", "dwconv"]
    assert all(n.attrs["auto_pad"] == "SAME_UPPER" and n.output_shapes[0][1:3] == [9, 9]
               for n in graph if n.type in ("conv", "dwconv"))


class _Conv1d(nn.Module):
    """1-D convolutions (plain with its batch norm, strided, dilated, depthwise, 'same')."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(8, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm1d(16)
        self.down = nn.Conv1d(16, 16, 5, stride=2, padding=2, dilation=1, groups=16)
        self.dil = nn.Conv1d(16, 8, 3, dilation=2)
        self.same = nn.Conv1d(8, 8, 4, padding="same")
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = self.dil(self.down(torch.relu(self.bn(self.conv(x)))))
        return self.fc(F.conv1d(self.same(y), self.same.weight, padding=1).mean(-1))


def test_conv1d_is_mapped_and_refused_like_the_export():
    """Conv1d gives the export's graph (checked before validation); the predictors model 2-D
    image operators only, so both paths then refuse it with the same error, and the torch
    path no longer exports (no TorchFallbackWarning)."""
    from nnmeter_nas.errors import GraphValidationError
    from nnmeter_nas.graph import _front_end

    model, shape = _Conv1d().eval(), (1, 8, 40)
    traced = _front_end(model, input_shape=shape, torch_frontend="trace")
    exported = _front_end(model, input_shape=shape, torch_frontend="onnx")
    assert graph_signature(traced) == graph_signature(exported)
    assert [n.type for n in traced][:4] == ["conv", "relu", "dwconv", "conv"]
    assert traced.nodes[next(iter(traced.nodes))].attrs["ks"] == [3]
    errors = []
    for fe in ("auto", "onnx"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", TorchFallbackWarning)
            with pytest.raises(GraphValidationError, match="needs a 4-D NHWC input") as info:
                load_graph(model, input_shape=shape, torch_frontend=fe)
        errors.append(str(info.value).split("needs", 1)[1])
    assert errors[0] == errors[1]


class _Upsampling(nn.Module):
    """Nearest-neighbour upsampling by whole factors (``nn.Upsample``, ``F.interpolate``)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)

    def forward(self, x):
        y = self.up(self.conv(x))
        return torch.cat([y, F.interpolate(x, scale_factor=(2, 2))], 1), \
            F.interpolate(y, scale_factor=3.0)


def test_nearest_upsampling_is_mapped():
    graph = assert_same_as_onnx(_Upsampling().eval(), (1, 3, 5, 7))
    assert [n.output_shapes[0] for n in graph if n.type == "resize"] == \
        [[1, 10, 14, 4], [1, 10, 14, 3], [1, 30, 42, 4]]


class _GeluLayerNorm(nn.Module):
    """GELU and LayerNorm (over the last one and two axes, with and without affine weights),
    which opset 13 has no operator for: the exporter decomposes them."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.GELU()
        self.ln_w = nn.LayerNorm(6)
        self.ln_hw = nn.LayerNorm([5, 6], elementwise_affine=False)
        self.fc = nn.Linear(4 * 5 * 6, 8)
        self.ln_fc = nn.LayerNorm(8)

    def forward(self, x):
        y = self.ln_hw(self.ln_w(self.act(self.conv(x))))
        return F.gelu(self.ln_fc(self.fc(torch.flatten(y, 1)))), self.act(self.conv(x))


def test_gelu_and_layer_norm_are_mapped():
    graph = assert_same_as_onnx(_GeluLayerNorm().eval(), (1, 3, 5, 6))
    assert sum(n.type == "erf" for n in graph) == 2    # the repeated GELU is computed once
    # each layer norm is one node, as opset 17's LayerNormalization reads (not the opset-13
    # decomposition's seven to nine)
    assert sum(n.type == "layernorm" for n in graph) == 3
    assert not any(n.type in ("sqrt", "pow", "sub") for n in graph)


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_kernels_equal_across_opsets(tmp_path, affine):
    # a ViT-style block: the torch front end, its opset-13 export (decomposed layer norms)
    # and its opset-17 export (LayerNormalization) give the same kernels and latency
    from nnmeter_nas import load_predictor

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.pe = nn.Conv2d(3, 16, 4, 4)
            self.ln = nn.LayerNorm(16, elementwise_affine=affine)

        def forward(self, x):
            t = self.pe(x).flatten(2).transpose(1, 2)
            return self.ln(t) + t

    net, shape = Block().eval(), (1, 3, 20, 28)
    graphs = {"torch": load_graph(net, input_shape=shape, torch_frontend="trace")}
    for opset in (13, 17):
        path = tmp_path / f"b{opset}.onnx"
        torch.onnx.export(net, torch.randn(*shape), str(path), opset_version=opset,
                          dynamo=False)
        graphs[opset] = load_graph(str(path))
    kinds = {k: kernel_list(g) for k, g in graphs.items()}
    assert kinds["torch"] == kinds[13] == kinds[17]
    assert [n.type for n in graphs[17]].count("layernorm") == 1
    p = load_predictor("cortexA76cpu_tflite21")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (layer norms and transposes have no regressor)
        ms = {k: p.predict(g) for k, g in graphs.items()}
    assert ms["torch"] == ms[13] == ms[17]


# ------------------------------------------------------------------------------ fallback

class _WithGelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Sequential(nn.Conv2d(4, 4, 1), nn.GELU(approximate="tanh"))

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)))


def test_unmapped_op_falls_back_to_onnx_with_a_warning_naming_the_module():
    model = _WithGelu().eval()
    with pytest.warns(TorchFallbackWarning, match=r"head\.1 \(GELU\)"):
        graph = load_graph(model, input_shape=(1, 3, 16, 16))
    assert graph_signature(graph) == graph_signature(
        load_graph(model, input_shape=(1, 3, 16, 16), torch_frontend="onnx"))
    with pytest.raises(TorchFrontEndError, match="gelu") as info:
        load_graph(model, input_shape=(1, 3, 16, 16), torch_frontend="trace")
    assert info.value.module.startswith("head.1")


class _BadTranspose(nn.Module):
    def forward(self, x):
        return x.transpose(0, 7)  # no dim 7: the transpose handler fails on it


def test_frontend_errors_chain_the_handlers_error_and_not_an_unmapped_ops():
    """An op the front end does not map says so alone (no cause, no context shown); a
    handler that fails on the op's arguments keeps that failure as the cause."""
    with pytest.raises(TorchFrontEndError, match="cannot map") as unmapped:
        load_graph(_WithGelu().eval(), input_shape=(1, 3, 16, 16), torch_frontend="trace")
    assert unmapped.value.__cause__ is None and unmapped.value.__suppress_context__
    with pytest.raises(TorchFrontEndError, match="failed on") as failed:
        load_graph(_BadTranspose(), input_shape=(1, 3, 4, 4), torch_frontend="trace")
    assert failed.value.__cause__ is not None
    assert not isinstance(failed.value.__cause__, TorchFrontEndError)
    assert failed.value.module


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:  # needs values: the shape-only pass cannot decide it
            return y.relu()
        return y


def test_data_dependent_control_flow_falls_back_to_onnx():
    with pytest.warns(TorchFallbackWarning, match="_DataDependent"):
        graph = load_graph(_DataDependent(), input_shape=(1, 3, 8, 8))
    assert [n.type for n in graph][0] == "conv"


def test_unknown_frontend_name_is_refused():
    with pytest.raises(ValueError, match="torch_frontend"):
        load_graph(_PreActShortcut(), input_shape=(1, 4, 8, 8), torch_frontend="fx")


def test_module_mode_and_buffers_are_left_untouched():
    from nnmeter_nas import zoo

    model = zoo.build("cifar_resnet20").train()
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = (bn.num_batches_tracked.clone(), bn.running_mean.clone())
    load_graph(model, input_shape=(1, 3, 32, 32), torch_frontend="trace")
    assert all(m.training for m in model.modules())
    assert torch.equal(bn.num_batches_tracked, before[0])
    assert torch.equal(bn.running_mean, before[1])


def test_missing_input_shape_is_the_same_error_as_before():
    from nnmeter_nas.errors import ExportError

    with pytest.raises(ExportError, match="input_shape"):
        load_graph(_PreActShortcut())


def test_predictions_equal_through_both_frontends(dummy_predictor):
    from nnmeter_nas import zoo

    model = zoo.build("mobilenet_v3_small")
    traced = load_graph(model, input_shape=(1, 3, 224, 224), torch_frontend="trace")
    exported = load_graph(model, input_shape=(1, 3, 224, 224), torch_frontend="onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert dummy_predictor.predict(traced) == dummy_predictor.predict(exported)
        assert dummy_predictor.predict(model, input_shape=(1, 3, 224, 224)) == \
            dummy_predictor.predict(exported)


# ------------------------------------------------------------------------------ predict_many

def test_predict_many_reads_each_distinct_model_once_and_shares_detection(dummy_predictor,
                                                                          monkeypatch):
    import nnmeter_nas.predictor as predictor_mod
    from nnmeter_nas import zoo

    a, b = zoo.build("cifar_resnet20"), zoo.build("mobilenet_v3_small")
    a2 = zoo.build("cifar_resnet20")  # another object, equal graph
    shape = (1, 3, 32, 32)
    reads, detections = [], []
    real_graph, real_detect = dummy_predictor.graph, predictor_mod.detect_kernels
    monkeypatch.setattr(dummy_predictor, "graph",
                        lambda m, **kw: reads.append(m) or real_graph(m, **kw))
    monkeypatch.setattr(predictor_mod, "detect_kernels",
                        lambda g, r: detections.append(g) or real_detect(g, r))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = [dummy_predictor.predict(m, input_shape=shape) for m in (a, b, a, a2, b)]
        reads.clear()
        detections.clear()
        many = dummy_predictor.predict_many([a, b, a, a2, b], input_shape=shape)
    assert many == pytest.approx(single, rel=1e-12)
    assert len(reads) == 3            # a, b, a2 (a and b repeated: not re-read)
    assert len(detections) == 2       # a2's graph equals a's


def test_predict_many_tells_graphs_with_the_same_node_types_apart(dummy_predictor, monkeypatch):
    """Graphs with the same node types but other kernel sizes or widths (SPOS's k3/k5/k7)
    are detected apart; an equal one arriving later shares detection."""
    import nnmeter_nas.predictor as predictor_mod

    def net(k, c):
        return nn.Sequential(nn.Conv2d(3, c, k, padding=k // 2), nn.ReLU(),
                             nn.Conv2d(c, 8, 1)).eval()

    shape = (1, 3, 16, 16)
    nets = [net(3, 8), net(5, 8), net(3, 16), net(3, 8)]
    detections = []
    real_detect = predictor_mod.detect_kernels
    monkeypatch.setattr(predictor_mod, "detect_kernels",
                        lambda g, r: detections.append(g) or real_detect(g, r))
    single = [dummy_predictor.predict(m, input_shape=shape) for m in nets]
    assert len(set(single[:3])) == 3
    detections.clear()
    assert dummy_predictor.predict_many(nets, input_shape=shape) == pytest.approx(single,
                                                                               rel=1e-12)
    assert len(detections) == 3  # the fourth equals the first


def test_predict_many_does_not_confuse_models_whose_ids_are_reused(dummy_predictor):
    from nnmeter_nas import zoo

    names = ["cifar_resnet20", "mobilenet_v3_small", "cifar_resnet20", "mobilenet_v3_small"]
    shapes = (1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # each model is dropped once read, so a later one may get the same id
        many = dummy_predictor.predict_many((zoo.build(n) for n in names), input_shape=shapes)
        single = [dummy_predictor.predict(zoo.build(n), input_shape=shapes) for n in names]
    assert many == pytest.approx(single, rel=1e-12)
