"""Zoo models build, give (1, 1000) logits at 224x224, are deterministic and export to ONNX."""
from __future__ import annotations

import io

import onnx
import pytest
import torch

from nnmeter_nas import zoo
from nnmeter_nas.zoo.stats import PUBLISHED, count_params, run_counting_macs

REQUIRED = [
    "resnet18", "resnet50", "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large",
    "mobilenet_v3_small", "shufflenet_v2", "mnasnet_a1", "squeezenet1_1", "vgg11_bn",
    "googlenet_like", "densenet_like", "proxyless_mobile",
]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # The test machine is shared; one intra-op thread avoids OpenMP spin contention (2-3x faster).
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


EXPORT_ARGS = {"vgg11_bn": (224, {"fc_width": 256})}


def test_api_lists_required_models() -> None:
    names = zoo.list_models()
    assert set(REQUIRED) <= set(zoo.ZOO)
    assert set(REQUIRED) <= set(names)
    with pytest.raises(KeyError, match="mobilenet_v2"):
        zoo.build("no_such_net")


_SLOW_ZOO = {"densenet_like", "vgg11_bn"}  # about 10 s each on the 2-core reference machine


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW_ZOO else n
                                  for n in sorted(zoo.ZOO)])
def test_forward_224_size_and_onnx_export(name: str) -> None:
    torch.manual_seed(0)
    model = zoo.build(name)
    assert not model.training
    macs, out = run_counting_macs(model, torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000)
    assert torch.isfinite(out).all()

    # parameter and MAC counts within a few percent of the published figures
    pub_params, pub_macs = PUBLISHED[name]
    assert count_params(model) / 1e6 == pytest.approx(pub_params, rel=0.04)
    assert macs / 1e6 == pytest.approx(pub_macs, rel=0.06)

    # A 64x64 input keeps every spatial size >= 1 and makes the export cheap. VGG needs 224
    # (ONNX's adaptive-pool export needs 7 to divide the feature map) and narrower FCs (the
    # default 4096-wide ones are 120M weights and take ~10 s to serialise).
    size, kwargs = EXPORT_ARGS.get(name, (64, {}))
    if kwargs:
        torch.manual_seed(0)
        model = zoo.build(name, **kwargs)
    buf = io.BytesIO()
    torch.onnx.export(model, torch.randn(1, 3, size, size), buf, dynamo=False, opset_version=13,
                      do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto)
    assert any(n.op_type == "Conv" for n in proto.graph.node)


def test_deterministic_given_seed() -> None:
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = zoo.build("mobilenet_v3_small")
        with torch.no_grad():
            outs.append(model(torch.ones(1, 3, 64, 64)))
    assert torch.equal(outs[0], outs[1])


def test_constructor_args() -> None:
    m = zoo.build("mobilenet_v2", num_classes=10, width_mult=0.5)
    assert m(torch.zeros(2, 3, 64, 64)).shape == (2, 10)
    assert count_params(m) < count_params(zoo.build("mobilenet_v2", num_classes=10))
    cifar = zoo.build("cifar_resnet20")
    assert cifar(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    assert count_params(cifar) == pytest.approx(0.27e6, rel=0.05)


@pytest.mark.parametrize("split_op, expected", [("chunk", "Slice"), ("split", "Split")])
def test_shufflenet_split_and_shuffle_ops(split_op: str, expected: str) -> None:
    torch.manual_seed(0)
    model = zoo.build("shufflenet_v2", split_op=split_op)
    reference = zoo.build("shufflenet_v2")
    reference.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))  # same function either way
    buf = io.BytesIO()
    torch.onnx.export(model, x, buf, dynamo=False, opset_version=13, do_constant_folding=True)
    ops = [n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node]
    assert ops.count("Transpose") == 16 and ops.count("Reshape") == 32  # one shuffle per unit
    assert expected in ops
