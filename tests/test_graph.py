import io
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from nnmeter_nas.errors import (DynamicShapeError, ExportError, ModelFormatError,
                                UnsupportedOpError)
from nnmeter_nas.graph import OpGraph, load_graph
from nnmeter_nas.graph.torch_export import export_onnx
from nnmeter_nas.kernels import detect_kernels


class Shuffle(nn.Module):
    def forward(self, x):
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        a, b = x.chunk(2, dim=1)
        return torch.cat([a, b + 1.0], 1)


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.ReLU6(), Shuffle(),
                         nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 10))


def test_torch_module_to_graph_shapes_are_nhwc():
    g = load_graph(small_net(), input_shape=(1, 3, 32, 32))
    types = [n.type for n in g]
    assert types[:3] == ["conv", "relu", "dwconv"]  # BN folded into the conv by the export
    conv = next(iter(g))
    assert conv.input_shapes == [[1, 32, 32, 3]] and conv.output_shapes == [[1, 16, 16, 16]]
    assert conv.attrs["ks"] == [3, 3] and conv.attrs["strides"] == [2, 2]
    assert "split" in types and "concat" in types and "fc" in types
    # shape arithmetic of view/chunk was folded: no Shape/Gather nodes survive
    assert not {"gather", "cast"} & set(types)


def test_onnx_path_bytes_and_proto_agree(tmp_path):
    proto = export_onnx(small_net(), (1, 3, 32, 32))
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    graphs = [load_graph(path), load_graph(str(path)), load_graph(proto.SerializeToString()),
              load_graph(proto)]
    sigs = [[(n.type, n.input_shapes, n.output_shapes) for n in g] for g in graphs]
    assert all(s == sigs[0] for s in sigs)


def test_missing_truncated_and_non_onnx_files(tmp_path):
    with pytest.raises(ModelFormatError, match="not found"):
        load_graph(tmp_path / "nope.onnx")
    proto = export_onnx(small_net(), (1, 3, 32, 32))
    data = proto.SerializeToString()
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFormatError, match="trunc.onnx"):
        load_graph(trunc)
    text = tmp_path / "readme.onnx"
    text.write_text("hello, I am not a model")
    with pytest.raises(ModelFormatError, match="readme.onnx"):
        load_graph(text)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="empty"):
        load_graph(empty)
    with pytest.raises(ModelFormatError, match="cannot predict"):
        load_graph(42)


def _dynamic_model():
    w = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                              name="conv0"),
             helper.make_node("Identity", ["c"], ["i"], name="ident"),
             helper.make_node("Relu", ["i"], ["y"], name="relu0")]
    return helper.make_model(helper.make_graph(nodes, "dyn", [x], [y], [w]))


def test_dynamic_shapes_need_input_shape():
    m = _dynamic_model()
    with pytest.raises(DynamicShapeError, match="input_shape"):
        load_graph(m)
    g = load_graph(m, input_shape=(1, 3, 20, 20))
    assert [n.type for n in g] == ["conv", "relu"]  # Identity bypassed
    assert g["relu0"].inputs == ["conv0"]
    assert g["relu0"].output_shapes == [[1, 20, 20, 8]]
    with pytest.raises(ModelFormatError, match="rank"):
        load_graph(m, input_shape=(1, 3, 20))


def test_unsupported_op_is_named():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    node = helper.make_node("FancyOp", ["x"], ["y"], name="my_fancy_node", domain="custom.x")
    m = helper.make_model(helper.make_graph([node], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 13),
                                         helper.make_opsetid("custom.x", 1)])
    with pytest.raises(UnsupportedOpError, match="FancyOp.*my_fancy_node"):
        load_graph(m)


def test_constant_nodes_are_folded():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(
                 np.array([1, 256], np.int64))),
             helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "shape"], ["y"], name="flat")]
    g = load_graph(helper.make_model(helper.make_graph(nodes, "g", [x], [y])))
    assert [n.type for n in g] == ["relu", "reshape"]
    assert g["flat"].output_shapes == [[1, 256]]


def test_batchnorm_kept_or_folded_gives_same_kernels():
    """An ONNX file with an explicit BatchNormalization and torch's folded export give the
    same kernels."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    folded = load_graph(net, input_shape=(1, 3, 16, 16))
    buf = io.BytesIO()
    net.train()
    torch.onnx.export(net, torch.zeros(1, 3, 16, 16), buf, dynamo=False, opset_version=13,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    explicit_proto = onnx.load_from_string(buf.getvalue())
    assert any(n.op_type == "BatchNormalization" for n in explicit_proto.graph.node)
    explicit = load_graph(explicit_proto)
    k1 = [(k.type, k.input_shapes) for k in detect_kernels(folded)]
    k2 = [(k.type, k.input_shapes) for k in detect_kernels(explicit)]
    assert k1 == k2 == [("conv-relu", [[1, 16, 16, 3]])]


def test_export_failure_is_clear():
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom in forward")

    with pytest.raises(ExportError, match="Broken.*boom"):
        load_graph(Broken(), input_shape=(1, 3, 8, 8))
    with pytest.raises(ExportError, match="input_shape"):
        load_graph(small_net())
    with pytest.raises(ExportError, match="positive ints"):
        load_graph(small_net(), input_shape=(1, 3, -2, 8))


def test_nnmeter_ir_roundtrip(tmp_path):
    g = load_graph(small_net(), input_shape=(1, 3, 32, 32))
    ir = g.to_nnmeter_ir()
    g2 = load_graph(ir)
    assert [(n.name, n.type, n.input_shapes) for n in g] == \
        [(n.name, n.type, n.input_shapes) for n in g2]
    path = tmp_path / "m.json"
    g.to_json(path)
    g3 = load_graph(path)
    assert [k.type for k in detect_kernels(g3)] == [k.type for k in detect_kernels(g)]


def test_input_shape_given_with_an_ir_is_not_ignored_silently(tmp_path):
    """An nn-Meter IR fixes every node's shape: an input_shape given with one is ignored, and
    says so (it used to be dropped without a word: a prediction at 32x32 looked like one at
    the shape asked for)."""
    from nnmeter_nas.errors import LatencyWarning

    g = load_graph(small_net(), input_shape=(1, 3, 32, 32))
    path = tmp_path / "m.json"
    g.to_json(path)
    for model, where in ((path, "m.json"), (g.to_nnmeter_ir(), "IR dict")):
        with pytest.warns(LatencyWarning, match=rf"input_shape=\(1, 3, 64, 64\) is ignored "
                                                rf"for .*{where}"):
            g2 = load_graph(model, input_shape=(1, 3, 64, 64))
        assert [n.input_shapes for n in g2] == [n.input_shapes for n in g]
    with warnings.catch_warnings():
        warnings.simplefilter("error", LatencyWarning)
        load_graph(path)


def test_ir_with_onnx_and_tf_names_and_bad_ir(tmp_path):
    ir = {
        "in": {"attr": {"type": "Placeholder", "attr": {}, "input_shape": [],
                        "output_shape": [[1, 8, 8, 4]]}, "inbounds": [], "outbounds": ["c"]},
        "c": {"attr": {"type": "Conv2D", "attr": {"ksize": [3, 3], "strides": [1, 1]},
                       "input_shape": [[1, 8, 8, 4]], "output_shape": [[1, 8, 8, 4]]},
              "inbounds": ["in"], "outbounds": ["r"]},
        "r": {"attr": {"type": "Relu6", "attr": {}, "input_shape": [[1, 8, 8, 4]],
                       "output_shape": [[1, 8, 8, 4]]}, "inbounds": ["c"], "outbounds": []},
    }
    g = load_graph(ir)
    assert [n.type for n in g] == ["conv", "relu"]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ModelFormatError, match="bad.json"):
        load_graph(bad)
    with pytest.raises(ModelFormatError, match="no 'attr'"):
        load_graph({"x": {"inbounds": []}})


def test_graph_cycle_detected():
    from nnmeter_nas.graph.ir import OpNode

    with pytest.raises(ModelFormatError, match="cycle"):
        OpGraph([OpNode("a", "relu", inputs=["b"], outputs=["b"]),
                 OpNode("b", "relu", inputs=["a"], outputs=["a"])])


def _graph_rows(g):
    return [(n.name, n.type, n.source_op, n.inputs, n.outputs, n.input_shapes, n.output_shapes,
             sorted(n.attrs.items())) for n in g]


def test_fully_shaped_onnx_skips_shape_inference_with_the_same_graph(tmp_path, monkeypatch):
    """A file whose tensors all have static shapes and where nothing folds (as
    fold_constants writes it) is read without shape inference or folding; the graph equals
    the one the full path (skeleton, folding, shape inference) reads, and an input_shape other
    than the file's shapes takes the full path."""
    import nnmeter_nas.graph.onnx_import as oi
    from nnmeter_nas.graph.constant_folding import fold_constants

    proto = fold_constants(export_onnx(small_net(), (1, 3, 32, 32)), max_elems=1 << 40)
    path = tmp_path / "shaped.onnx"
    onnx.save(proto, path)
    assert oi._shaped_already(oi.read_onnx(path)[0], None,
                              oi._node_rows(oi.read_onnx(path)[0].graph)) is not None
    calls = []
    skeleton = oi._skeleton
    monkeypatch.setattr(oi, "_skeleton", lambda p: calls.append(1) or skeleton(p))
    fast = [load_graph(path), load_graph(path, input_shape=(1, 3, 32, 32)), load_graph(proto)]
    assert calls == []  # the fast path was taken
    load_graph(path, input_shape=(1, 3, 64, 64))  # not the file's shapes: the full path
    assert calls == [1]
    monkeypatch.setattr(oi, "_shaped_already", lambda *a: None)
    full = load_graph(path)
    assert len(calls) == 2
    assert all(_graph_rows(g) == _graph_rows(full) for g in fast)
    # an unfolded export (Constant/Shape nodes, shape arithmetic) is not fully shaped
    raw = export_onnx(small_net(), (1, 3, 32, 32))
    assert oi._shaped_already(raw, None, oi._node_rows(raw.graph)) is None


def test_input_shape_other_than_a_fully_shaped_files_reshapes_every_tensor(tmp_path):
    """A file exported (and shape-inferred) at 32x32, read with input_shape 64x64, gives the
    graph of the network exported at 64x64: the file's declared inner shapes do not survive."""
    from nnmeter_nas.graph.constant_folding import fold_constants

    def net():  # no reshape: a folded file bakes a reshape's target shape in as a constant
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
                             nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.ReLU6(),
                             nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(16, 10))

    shaped = fold_constants(export_onnx(net(), (1, 3, 32, 32)), max_elems=1 << 40)
    assert len(shaped.graph.value_info) > 0  # inner shapes declared for 32x32
    path = tmp_path / "shaped32.onnx"
    onnx.save(shaped, path)
    read64 = load_graph(path, input_shape=(1, 3, 64, 64))
    exported64 = load_graph(fold_constants(export_onnx(net(), (1, 3, 64, 64)),
                                           max_elems=1 << 40))
    conv = next(iter(read64))
    assert conv.output_shapes == [[1, 32, 32, 16]]
    assert [n.output_shapes for n in read64] == [n.output_shapes for n in exported64]


def test_onnx_attribute_and_shape_memos_hand_out_copies(monkeypatch):
    """Attributes and tensor shapes are read once per distinct value (memoised by their
    bytes): every node still gets its own lists, the memos stay bounded, and what they hold
    is what reading the fields gives."""
    import onnx
    from onnx import helper

    from nnmeter_nas.graph import onnx_import

    monkeypatch.setattr(onnx_import, "_MEMO_SIZE", 3)
    monkeypatch.setattr(onnx_import, "_ATTR_MEMO", {})
    monkeypatch.setattr(onnx_import, "_DIMS_MEMO", {})
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1],
                              kernel_shape=[3, 3], group=1, name=f"c{i}") for i in range(3)]
    first, second, _ = (onnx_import._attributes(n) for n in nodes)
    assert first == second == {"strides": [2, 2], "pads": [1, 1, 1, 1],
                               "kernel_shape": [3, 3], "group": 1}
    first["strides"].append(9)
    assert onnx_import._attributes(nodes[2])["strides"] == [2, 2]
    assert len(onnx_import._ATTR_MEMO) <= 3
    shaped = helper.make_tensor_value_info("t", onnx.TensorProto.FLOAT, [1, 3, 8, 8])
    dynamic = helper.make_tensor_value_info("u", onnx.TensorProto.FLOAT, ["n", 3, 8, 8])
    unshaped = helper.make_tensor_value_info("v", onnx.TensorProto.FLOAT, None)
    for _ in range(2):  # read, then from the memo
        assert onnx_import._static_dims(shaped.type) == [1, 3, 8, 8]
        assert onnx_import._static_dims(dynamic.type) is None
        assert onnx_import._static_dims(unshaped.type) is None
    assert len(onnx_import._DIMS_MEMO) <= 3
