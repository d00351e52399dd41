"""Full-mode scoring without data: FLOPs/params counted during the torch front end's shape-only
pass, candidates frozen without re-building fixed layers, and kernel detection shared between
devices. Each speed-up must give the numbers the slow way gives."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from nnmeter_nas.graph import TorchFallbackWarning, load_graph  # noqa: E402
from nnmeter_nas.kernels.detector import detect_kernels  # noqa: E402
from nnmeter_nas.parallel.costs import count_costs, graph_and_costs, module_costs  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _networks():
    from nnmeter_nas import zoo
    from nnmeter_nas.search_spaces.sampling import random_networks

    nets = [(zoo.build("cifar_resnet20"), (1, 3, 32, 32))]
    nets += [(make(), shape) for _, make, shape in random_networks("nb201", 2, 3)]
    return nets


def test_shape_only_costs_equal_a_real_forward_pass():
    for net, shape in _networks():
        shape_only = module_costs(net, shape)
        assert shape_only == module_costs(net, shape, shape_only=False)
        graph, flops, params = graph_and_costs(net, shape)
        assert (flops, params) == count_costs(net, shape)
        assert flops > 0 and params > 0
        assert [n.type for n in graph] == [n.type for n in load_graph(net, input_shape=shape)]


class _Unmapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.GELU(approximate="tanh")  # not mapped by the torch front end
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.act(self.conv(x)), 1))


def test_graph_and_costs_of_a_network_the_front_end_cannot_read():
    net = _Unmapped()
    with pytest.warns(TorchFallbackWarning, match="GELU"):
        graph, flops, params = graph_and_costs(net, (1, 3, 8, 8))
    assert module_costs(net, (1, 3, 8, 8), shape_only=False) == module_costs(net, (1, 3, 8, 8))
    assert (flops, params) == (2.0 * (4 * 8 * 8 * 3 * 9 + 5 * 4 * 8 * 8),
                               float(sum(p.numel() for p in net.parameters())))
    assert [n.type for n in graph] == \
        [n.type for n in load_graph(net, input_shape=(1, 3, 8, 8), torch_frontend="onnx")]


def test_predict_many_shares_detection_between_devices_with_equal_rules(dummy_predictor,
                                                                       monkeypatch):
    import nnmeter_nas.predictor as predictor_mod
    from nnmeter_nas import zoo
    from nnmeter_nas.predictor import LatencyPredictor

    other = LatencyPredictor(dummy_predictor.package)  # same rules and feature set
    nets = [zoo.build("cifar_resnet20"), zoo.build("mobilenet_v3_small")]
    graphs = [load_graph(n, input_shape=(1, 3, 32, 32)) for n in nets]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = [p.predict_many(graphs) for p in (dummy_predictor, other)]
        single = [dummy_predictor.predict(g) for g in graphs]
        detections = []
        real = predictor_mod.detect_kernels
        monkeypatch.setattr(predictor_mod, "detect_kernels",
                            lambda g, r: detections.append(g) or real(g, r))
        shared: dict = {}
        together = [p.predict_many(graphs, shared=shared) for p in (dummy_predictor, other)]
    assert together == alone
    assert alone[0] == pytest.approx(single, rel=1e-12)
    assert len(detections) == 2          # once per graph, not once per graph and device


@pytest.mark.slow
def test_full_scorer_equals_predicting_each_candidate_alone(dummy_predictor):
    from nnmeter_nas.parallel.full import FullScorer
    from nnmeter_nas.parallel.spaces import resolve_space

    spec = resolve_space("spos-small")
    scorer = FullScorer(spec, [dummy_predictor])
    codes = scorer.label_space.random_codes(2, 1, 7)
    got = scorer.score_codes(codes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        space = spec.build()
        for i, sample in enumerate(scorer.label_space.decode(codes)):
            net = space.freeze(dict(sample))         # NNI's own freeze, real forward pass
            assert got[dummy_predictor.device][i] == pytest.approx(
                dummy_predictor.predict(net, input_shape=spec.input_shape), rel=1e-12)
            real = module_costs(net, spec.input_shape, shape_only=False).values()
            assert got["flops"][i] == sum(v[0] for v in real)
            assert got["params"][i] == sum(v[1] for v in real)
    assert np.all(got["flops"] > 0)


def test_gc_paused_restores_the_collector_state():
    import gc

    from nnmeter_nas.predictor import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        with gc_paused():
            raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()
    try:  # a caller that turned the collector off keeps it off
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
