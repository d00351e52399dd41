"""Random composed networks (builder.compose)."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from nnmeter_nas.builder.compose import FAMILIES, composed_networks, random_network


@pytest.mark.slow
def test_composed_networks_are_deterministic_and_cover_every_family():
    a = composed_networks(60, seed=3)
    b = composed_networks(60, seed=3)
    assert [n.spec for n in a] == [n.spec for n in b]
    assert json.loads(json.dumps(a[0].spec)) == a[0].spec
    assert [n.spec for n in composed_networks(5, seed=4)] != [n.spec for n in a[:5]]
    families = {s["family"] for n in a for s in n.spec["stages"]}
    assert families == set(FAMILIES)
    sizes = {n.input_shape[-1] for n in a}
    assert 32 in sizes and 224 in sizes
    assert len({n.name for n in a}) == 60
    # the same weights too (seeded), and every network runs
    x = torch.zeros(a[0].input_shape)
    with torch.no_grad():
        assert torch.equal(a[0].module(x), b[0].module(x))
    with pytest.raises(ValueError, match="unknown block family"):
        from nnmeter_nas.builder.compose import _stage
        _stage(__import__("random").Random(0), "nope", 8, 8, 1, 1, "relu")


@pytest.mark.slow
def test_composed_networks_export_and_are_predicted_without_missing_kernels():
    from nnmeter_nas import load_predictor
    from nnmeter_nas.graph.torch_export import export_onnx

    pred = load_predictor("x86avx512cpu_onnxruntime")
    nets = [random_network(s) for s in range(8)]
    for net in nets:
        with torch.no_grad():
            out = net.module(torch.zeros(net.input_shape))
        assert out.shape[0] == 1 and out.ndim == 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bd = pred.predict_kernels(export_onnx(net.module, net.input_shape))
        assert bd.missing_kernel_types == [] and bd.latency_ms > 0, net.spec

