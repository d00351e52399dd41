import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from nnmeter_nas.errors import MissingRegressorError
from nnmeter_nas.graph.torch_export import export_onnx
from nnmeter_nas.kernels import FusionRules
from nnmeter_nas.packages.format import PredictorPackage, write_package
from nnmeter_nas.predictor import LatencyPredictor, LatencyWarning
from nnmeter_nas.testing import _dummy_regressors, make_dummy_predictor


def net(width=16, k=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, width, k, 2, k // 2), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, width, 3, 1, 1, groups=width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def test_predict_is_sum_of_kernels(dummy_predictor):
    bd = dummy_predictor.predict_kernels(net(), input_shape=(1, 3, 64, 64))
    assert [k.regressor for k in bd] == ["conv-bn-relu", "dwconv-bn-relu", "global-avgpool",
                                         "fc"]
    assert all(k.status == "predicted" and k.latency_ms > 0 for k in bd)
    total = dummy_predictor.predict(net(), input_shape=(1, 3, 64, 64))
    assert total == pytest.approx(sum(k.latency_ms for k in bd))
    assert "total" in bd.table()


def test_same_answer_from_torch_onnx_and_ir(dummy_predictor, tmp_path):
    m = net()
    proto = export_onnx(m, (1, 3, 64, 64))
    path = tmp_path / "net.onnx"
    onnx.save(proto, path)
    ir_path = tmp_path / "net.json"
    dummy_predictor.graph(path).to_json(ir_path)
    a = dummy_predictor.predict(m, input_shape=(1, 3, 64, 64))
    assert dummy_predictor.predict(path) == a
    assert dummy_predictor.predict(proto) == a
    assert dummy_predictor.predict(ir_path) == a


def test_bigger_networks_are_slower(dummy_predictor):
    small = dummy_predictor.predict(net(16), input_shape=(1, 3, 64, 64))
    big = dummy_predictor.predict(net(64, 5), input_shape=(1, 3, 128, 128))
    assert big > 2 * small


def test_predict_many_matches_single(dummy_predictor):
    models = [net(w) for w in (8, 16, 32)]
    many = dummy_predictor.predict_many(models, input_shape=(1, 3, 32, 32))
    single = [dummy_predictor.predict(m, input_shape=(1, 3, 32, 32)) for m in models]
    np.testing.assert_allclose(many, single, rtol=1e-12)


@pytest.mark.parametrize("chunk", [1, 2, 3, 64])
def test_predict_many_in_collector_chunks(dummy_predictor, monkeypatch, chunk):
    """predict_many pauses the garbage collector and collects the young generation every
    chunk of networks: every network is predicted, in order, whether the models end inside
    a chunk or on its edge, and from a generator too; the collector is on again afterwards."""
    import gc

    import nnmeter_nas.predictor as predictor

    monkeypatch.setattr(predictor, "_GC_CHUNK", chunk)
    models = [net(w) for w in (8, 16, 32, 8, 24, 40)]
    single = [dummy_predictor.predict(m, input_shape=(1, 3, 32, 32)) for m in models]
    many = dummy_predictor.predict_many((m for m in models), input_shape=(1, 3, 32, 32))
    assert many == single
    assert dummy_predictor.predict_many([], input_shape=(1, 3, 32, 32)) == []
    assert gc.isenabled()


def test_torch_front_end_leaves_no_reference_cycles():
    """Reading a module leaves nothing for the garbage collector (predict_many pauses it
    over many networks): all the front end's objects go when their last reference does."""
    import gc

    from nnmeter_nas.graph import load_graph

    m = net()
    load_graph(m, input_shape=(1, 3, 32, 32))
    gc.collect()
    gc.disable()
    try:
        load_graph(m, input_shape=(1, 3, 32, 32))
        assert gc.collect() == 0
    finally:
        gc.enable()


def _partial_predictor(tmp_path, keep, strict=False, ranges=None):
    regs = {k: v for k, v in _dummy_regressors().items() if k in keep}
    write_package(tmp_path / "p", name="partial", version="1", device="partialdev",
                  framework="none", regressors=regs, fusion_rules=FusionRules.default(),
                  kernel_info=ranges or {}, free_kernel_types=["reshape"])
    return LatencyPredictor(PredictorPackage.load(tmp_path / "p"), strict=strict)


def test_missing_regressor_warns_once_and_is_recorded(tmp_path):
    p = _partial_predictor(tmp_path, {"conv-bn-relu", "dwconv-bn-relu"})
    with pytest.warns(LatencyWarning, match="global-avgpool|gap"):
        bd = p.predict_kernels(net(), input_shape=(1, 3, 32, 32))
    assert set(bd.missing_kernel_types) == {"gap", "fc"}
    assert [k.status for k in bd] == ["predicted", "predicted", "missing", "missing"]
    assert bd.latency_ms == pytest.approx(sum(k.latency_ms for k in bd[:2]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second prediction does not warn again
        p.predict(net(), input_shape=(1, 3, 32, 32))


def test_missing_regressor_names_where_and_what_to_do(tmp_path):
    # a user reading the warning learns which node of the network holds each unpriced
    # kernel type (for an ONNX file or an exported module: its module path) and what to do
    p = _partial_predictor(tmp_path, {"conv-bn-relu", "dwconv-bn-relu"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bd = p.predict_kernels(net(), input_shape=(1, 3, 32, 32))
    text = " ".join(str(w.message) for w in caught if w.category is LatencyWarning)
    for k in bd:
        if k.status == "missing":
            assert f"{k.kernel_type}: first at node {k.nodes[0]!r}" in text
    assert "use a predictor that covers them" in text
    strict = _partial_predictor(tmp_path / "s", {"conv-bn-relu", "dwconv-bn-relu"},
                                strict=True)
    with pytest.raises(MissingRegressorError, match="gap: first at node"):
        strict.predict(net(), input_shape=(1, 3, 32, 32))


def test_strict_raises_naming_kernel_types(tmp_path):
    p = _partial_predictor(tmp_path, {"conv-bn-relu", "dwconv-bn-relu"}, strict=True)
    with pytest.raises(MissingRegressorError, match=r"\['fc', 'gap'\]"):
        p.predict(net(), input_shape=(1, 3, 32, 32))


def test_out_of_domain_flagged(tmp_path):
    ranges = {"conv-bn-relu": {"feature_range": {"min": [1] * 7, "max": [40, 3, 64, 3, 2,
                                                                         1e9, 1e9]}}}
    p = _partial_predictor(tmp_path, set(_dummy_regressors()), ranges=ranges)
    bd = p.predict_kernels(net(), input_shape=(1, 3, 32, 32))
    assert bd[0].in_domain is True and bd[1].in_domain is None
    assert bd.in_domain is None
    with pytest.warns(LatencyWarning, match="outside"):
        bd = p.predict_kernels(net(), input_shape=(1, 3, 224, 224))
    assert bd[0].in_domain is False and bd.in_domain is False


def test_free_kernels_cost_nothing_without_warning(dummy_predictor):
    class Flat(nn.Module):
        def forward(self, x):
            return torch.relu(x).reshape(1, -1)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bd = dummy_predictor.predict_kernels(Flat(), input_shape=(1, 4, 8, 8))
    assert [(k.kernel_type, k.status) for k in bd] == [("relu", "predicted"),
                                                       ("reshape", "free")]


def test_predict_kernel_features(dummy_predictor):
    y = dummy_predictor.predict_kernel_features("relu", [[8, 16], [16, 16]])
    assert y[1] > y[0]
    with pytest.raises(MissingRegressorError, match="nope"):
        dummy_predictor.predict_kernel_features("nope", [[1, 2]])


def test_repr_and_metadata(dummy_predictor):
    assert "dummy" in repr(dummy_predictor)
    assert "conv-bn-relu" in dummy_predictor.kernel_types
    assert dummy_predictor.fusion_rules.is_fusible("conv", "relu")


def test_make_dummy_is_deterministic(tmp_path):
    a = make_dummy_predictor(directory=tmp_path / "a").predict(net(), input_shape=(1, 3, 32, 32))
    b = make_dummy_predictor(directory=tmp_path / "b").predict(net(), input_shape=(1, 3, 32, 32))
    assert a == b
