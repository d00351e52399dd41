"""The torch front end checks the arguments of the ops it maps as torch does.

A module whose forward torch itself refuses (a dimension out of range, a permutation of the
wrong length, shapes that do not concatenate, broadcast or multiply, a kernel larger than its
padded input, ...) must not get a graph, hence no latency: each invalid call below is run
eagerly in torch on a real tensor (which must raise, or the case proves nothing), through
``torch_frontend="trace"`` (a TorchFrontEndError naming the submodule that made the call) and
through the default mode (the front end's error falls back to the ONNX export, which fails
with torch's own message; the error names the model, and the submodule the front end
stopped in). Valid edge cases (negative dims, -1 in a
reshape, broadcasting, padding of half the kernel) keep giving the ONNX path's graph.
"""
from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from nnmeter_nas.errors import ExportError, TorchFrontEndError  # noqa: E402
from nnmeter_nas.graph import TorchFallbackWarning, load_graph  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPE = (1, 3, 4, 4)


class _Body(nn.Module):
    """Calls ``fn(self, x)``; ``layers`` become its submodules (``self.layers[i]``)."""

    def __init__(self, fn, layers=()):
        super().__init__()
        self.fn = fn
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        return self.fn(self, x)


class _Net(nn.Module):
    """A valid stem, then the body under test (so the error must name ``body``)."""

    def __init__(self, fn, layers=()):
        super().__init__()
        self.stem = nn.ReLU()
        self.body = _Body(fn, layers)

    def forward(self, x):
        return self.body(self.stem(x))


def _inplace_broadcast(m, x):
    y = x.mean(1, keepdim=True)
    y += x  # y (1, 1, 4, 4) cannot take the (1, 3, 4, 4) result
    return y


INVALID = {
    # the lead's findings
    "flatten_dim_5": (lambda m, x: torch.flatten(x, 5), ()),
    "permute_too_few_dims": (lambda m, x: x.permute(0, 1), ()),
    "softmax_dim_9": (lambda m, x: torch.softmax(x, dim=9), ()),
    "pad_odd_length": (lambda m, x: F.pad(x, (1,)), ()),
    "cat_sizes_differ": (lambda m, x: torch.cat([x, x[:, :, :2]], dim=1), ()),
    "transpose_dim_7": (lambda m, x: x.transpose(0, 7), ()),
    # dims
    "flatten_start_after_end": (lambda m, x: x.flatten(2, 1), ()),
    "permute_repeated_dim": (lambda m, x: x.permute(0, 1, 1, 2), ()),
    "log_softmax_dim_minus_5": (lambda m, x: F.log_softmax(x, -5), ()),
    "cat_dim_4": (lambda m, x: torch.cat([x, x], dim=4), ()),
    "cat_ranks_differ": (lambda m, x: torch.cat([x, x.flatten(2)], dim=1), ()),
    "stack_sizes_differ": (lambda m, x: torch.stack([x, x[:, :2]]), ()),
    "stack_dim_6": (lambda m, x: torch.stack([x, x], dim=6), ()),
    "unsqueeze_dim_6": (lambda m, x: x.unsqueeze(6), ()),
    "squeeze_dim_5": (lambda m, x: x.squeeze(5), ()),
    "mean_dim_4": (lambda m, x: x.mean(4), ()),
    "mean_repeated_dim": (lambda m, x: x.mean((1, -3)), ()),
    "sum_dim_minus_5": (lambda m, x: x.sum(-5), ()),
    "size_dim_4": (lambda m, x: x.view(x.size(4), -1), ()),
    "split_sizes_do_not_sum": (lambda m, x: torch.split(x, [1, 1], dim=1)[0], ()),
    "split_dim_4": (lambda m, x: x.split(1, dim=4)[0], ()),
    "chunk_dim_4": (lambda m, x: x.chunk(2, 4)[0], ()),
    # sizes
    "reshape_not_divisible": (lambda m, x: x.reshape(5, -1), ()),
    "view_two_minus_ones": (lambda m, x: x.view(-1, -1), ()),
    "view_wrong_total": (lambda m, x: x.view(1, 3, 17), ()),
    "add_does_not_broadcast": (lambda m, x: x + x[:, :2], ()),
    "mul_does_not_broadcast": (lambda m, x: torch.mul(x, x[:, :, :3]), ()),
    "inplace_add_grows_target": (_inplace_broadcast, ()),
    "pad_too_many_pairs": (lambda m, x: F.pad(x, (1,) * 10), ()),
    "pad_negative_size": (lambda m, x: F.pad(x, (-3, -3)), ()),
    "reflect_pad_not_smaller_than_input": (
        lambda m, x: F.pad(x, (4, 0, 0, 0), mode="reflect"), ()),
    "replicate_pad_one_pair_on_4d": (lambda m, x: F.pad(x, (1, 1), mode="replicate"), ()),
    "clamp_without_bounds": (lambda m, x: torch.clamp(x), ()),
    # layers
    "conv_in_channels": (lambda m, x: m.layers[0](x), (nn.Conv2d(4, 8, 3),)),
    "conv_kernel_larger_than_input": (lambda m, x: m.layers[0](x), (nn.Conv2d(3, 8, 7),)),
    "conv_in_sequential": (lambda m, x: m.layers[0](x),
                           (nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3)),)),
    "functional_conv_in_channels": (lambda m, x: F.conv2d(x, torch.zeros(8, 2, 3, 3)), ()),
    "conv_groups_do_not_divide_out_channels": (
        lambda m, x: F.conv2d(x, torch.zeros(4, 1, 3, 3), groups=3), ()),
    "batch_norm_channels": (lambda m, x: m.layers[0](x), (nn.BatchNorm2d(4),)),
    "linear_inner_sizes": (lambda m, x: m.layers[0](x.flatten(1)), (nn.Linear(10, 5),)),
    "max_pool_kernel_larger_than_input": (lambda m, x: F.max_pool2d(x, 5), ()),
    "max_pool_padding_over_half_kernel": (lambda m, x: F.max_pool2d(x, 2, padding=2), ()),
    "avg_pool_padding_over_half_kernel": (lambda m, x: F.avg_pool2d(x, 3, 1, 2), ()),
    "max_pool_layer_kernel_larger": (lambda m, x: m.layers[0](x), (nn.MaxPool2d(5),)),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_call_is_refused_as_torch_refuses_it(case):
    fn, layers = INVALID[case]
    model = _Net(fn, layers).eval()
    with torch.no_grad(), pytest.raises(Exception):  # torch itself refuses the call
        model(torch.zeros(SHAPE))
    with pytest.raises(TorchFrontEndError) as info:
        load_graph(model, input_shape=SHAPE, torch_frontend="trace")
    assert info.value.module.startswith("body"), info.value.module
    assert "body" in str(info.value)
    # default mode: the front end's error falls back to the export, which fails in torch
    with pytest.warns(TorchFallbackWarning, match="body"), \
            pytest.raises(ExportError, match="could not export _Net") as exported:
        load_graph(model, input_shape=SHAPE)
    assert "check that the model runs" in str(exported.value)
    # torch's message, then the front end's, which names the submodule
    assert "the torch front end, tried first, stopped in module body" in str(exported.value)


def _graph_signature(graph):
    index = {name: i for i, name in enumerate(graph.nodes)}
    return [(n.type, n.source_op, n.input_shapes, n.output_shapes, n.attrs,
             sorted(index[i] for i in n.inputs)) for n in graph]


VALID = {
    "negative_dims": (lambda m, x: torch.softmax(x.transpose(-1, -3).flatten(-2, -1), -1),
                      ()),
    # (the ONNX path cannot shape this one: the exporter writes the negative perm as given,
    # which ONNX's shape inference leaves unknown; checked against torch's shape only)
    "permute_negative": (lambda m, x: x.permute(-1, 0, -2, 1).relu(), ()),
    "reshape_minus_one": (lambda m, x: x.reshape(1, -1, 8).relu(), ()),
    "view_minus_one_first": (lambda m, x: x.view(-1, 48).relu(), ()),
    "broadcast_channel": (lambda m, x: x * x.mean((2, 3), keepdim=True), ()),
    "broadcast_both_ways": (lambda m, x: x[:, :1] + x.mean(-1, keepdim=True), ()),
    "inplace_broadcast_into_target": (
        lambda m, x: m.layers[0](x).add_(x.mean(1, keepdim=True)), (nn.Conv2d(3, 3, 1),)),
    "cat_negative_dim": (lambda m, x: torch.cat([x, x[:, :, :2]], dim=-2).relu(), ()),
    "stack_last_dim": (lambda m, x: torch.stack([x, x.sigmoid()], dim=-1).relu(), ()),
    "split_negative_dim": (lambda m, x: sum(torch.split(x, [1, 3], dim=-1)[1:]).relu(), ()),
    "conv_kernel_equal_input": (lambda m, x: m.layers[0](x), (nn.Conv2d(3, 4, 4),)),
    "conv_kernel_fits_padded_input": (lambda m, x: m.layers[0](x),
                                      (nn.Conv2d(3, 4, 6, padding=1),)),
    "max_pool_padding_half_kernel": (lambda m, x: F.max_pool2d(x, 2, 1, padding=1), ()),
    "avg_pool_ceil_mode": (lambda m, x: F.avg_pool2d(x, 3, 2, ceil_mode=True), ()),
    "pad_negative_constant": (lambda m, x: F.pad(x, (-1, 0, 1, 1)).relu(), ()),
    "reflect_pad_negative_and_below_size": (
        lambda m, x: F.pad(x, (3, -1, 0, 1), mode="reflect").relu(), ()),
    "unsqueeze_last": (lambda m, x: x.unsqueeze(-1).squeeze(-1).unsqueeze(4).relu(), ()),
}
NO_ONNX = {"permute_negative"}


@pytest.mark.parametrize("case", sorted(VALID))
def test_valid_edge_cases_keep_working(case):
    fn, layers = VALID[case]
    model = _Net(fn, layers).eval()
    with torch.no_grad():
        expected = tuple(model(torch.zeros(SHAPE)).shape)
    traced = load_graph(model, input_shape=SHAPE, torch_frontend="trace")
    out = [n for n in traced if not n.outputs]
    assert len(out) == 1
    shape = out[0].output_shapes[0]
    # (NHWC in the graph for a 4-D tensor)
    assert shape == ([expected[0], expected[2], expected[3], expected[1]]
                     if len(expected) == 4 else list(expected))
    if case in NO_ONNX:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = load_graph(model, input_shape=SHAPE, torch_frontend="onnx")
    assert _graph_signature(traced) == _graph_signature(exported)


def test_unbatched_convolution_input_names_the_batched_shape():
    """torch runs a Conv2d on an unbatched (C, H, W) input; the front end does not map it and
    says why and which input shape to give (it used to say only 1-D and 2-D convolutions are
    mapped, of a 2-D convolution); the default mode still answers through the export."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3)).eval()
    with torch.no_grad():
        model(torch.zeros(3, 8, 8))  # torch accepts it
    with pytest.raises(TorchFrontEndError, match=r"unbatched input of shape \(3, 8, 8\).*"
                                                 r"\(1, 3, 8, 8\)"):
        load_graph(model, input_shape=(3, 8, 8), torch_frontend="trace")
    with pytest.warns(TorchFallbackWarning, match="unbatched"):
        assert len(load_graph(model, input_shape=(3, 8, 8))) > 0
