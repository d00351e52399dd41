"""``KernelCostModel.in_domain``: calibrated where the cost terms were measured (issue 14)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnmeter_nas.fitting.cost_terms import terms_of
from nnmeter_nas.regressors.cost_model import KernelCostModel, term_arrays

PKG_ROOT = Path(__file__).resolve().parents[1] / "nnmeter_nas" / "data" / "predictors"


def _model(reg: str, n_features: int) -> KernelCostModel:
    terms = terms_of(reg)
    return KernelCostModel(regressor=reg, n_features=n_features,
                           coef=np.full(len(terms), 1e-6),
                           **term_arrays(reg, [t for _, t in terms]))


# ShuffleNetV2 1.0's channel shuffles: 28x28x116, 14x14x232, 7x7x464 (22,736-90,944 elements)
SHUFFLES = np.array([[28, 116], [14, 232], [7, 464]], dtype=float)


def test_measured_configurations_are_in_domain_and_larger_work_is_not():
    m = _model("channelshuffle", 2).set_domain(SHUFFLES)
    assert m.in_domain(SHUFFLES).all()
    inside = m.in_domain(np.array([[7, 640],     # 31,360 elements: between measured ones
                                   [56, 64],     # 200,704 elements: 2.2x the largest
                                   [28, 464],    # inside the feature box, 4x the elements
                                   [2, 116]]))   # 464 elements: below every measured one
    assert inside.tolist() == [True, False, False, False]


def test_no_measured_configuration_means_never_in_domain():
    m = _model("channelshuffle", 2).set_domain(np.zeros((0, 2)))
    assert not m.in_domain(SHUFFLES).any()
    assert _model("channelshuffle", 2).in_domain(SHUFFLES) is None   # no domain recorded


def test_conv_gate_classes_and_discrete_features():
    # measured: 3x3 convolutions (stride 1 and 2) and 1x1 convolutions
    def conv(hw, cin, cout, k, s):
        params = cout * (k * k * cin + 1)
        return [hw, cin, cout, k, s, (hw / s) ** 2 * params / 1e6, params / 1e6]

    X = np.array([conv(hw, c, c, k, s) for hw in (14, 28, 56) for c in (32, 64, 128)
                  for k, s in ((3, 1), (3, 2), (1, 1))])
    m = _model("conv-bn-relu", 7).set_domain(X)
    assert m.in_domain(X).all()
    assert m.in_domain(np.array([conv(28, 48, 48, 3, 1)]))[0]      # interpolated
    assert not m.in_domain(np.array([conv(28, 64, 64, 5, 1)]))[0]  # 5x5 class never measured
    assert not m.in_domain(np.array([conv(28, 64, 64, 3, 3)]))[0]  # stride 3 never measured
    assert not m.in_domain(np.array([conv(224, 64, 64, 3, 1)]))[0]  # 16x the largest work


def test_domain_survives_the_package_format():
    m = _model("channelshuffle", 2).set_domain(SHUFFLES)
    back = KernelCostModel.load(m.to_npz_bytes())
    assert back.domain == m.domain
    x = np.array([[7, 640], [56, 64]])
    assert back.in_domain(x).tolist() == m.in_domain(x).tolist()


@pytest.mark.parametrize("dev", ["cortexA76cpu_tflite21", "myriadvpu_openvino2019r2"])
def test_builtin_packages_flag_spos_first_stage_shuffles(dev):
    """SPOS at 224x224 shuffles 64 channels on 56x56 maps (200,704 elements); the only measured
    channel shuffles (ShuffleNetV2 1.0 on these two devices) move at most 90,944: extrapolated,
    so flagged, whatever the feature box says."""
    from nnmeter_nas import load_predictor

    if not (PKG_ROOT / dev / "manifest.json").is_file():
        pytest.skip("package not built")
    manifest = json.loads((PKG_ROOT / dev / "manifest.json").read_text())
    if not manifest["version"].startswith("multi-"):
        pytest.skip("not a cost-model package")
    pred = load_predictor(dev)
    model = pred.package.regressors["channelshuffle"]
    if model.domain is None:
        pytest.skip("package built before domains were recorded")
    assert model.in_domain(SHUFFLES).all()
    assert not model.in_domain(np.array([[56.0, 64.0]]))[0]
    assert pred._in_domain("channelshuffle", np.array([[56.0, 64.0]])).tolist() == [False]
