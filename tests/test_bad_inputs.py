"""Issue 16: inputs that used to get an answer (or an unclear error) are refused with an error
that names the input at fault and says what to do, and nothing is written or installed.

One test per row of docs/bad_inputs.md.
"""
from __future__ import annotations

import io
import json
import pickle
import shlex
import zipfile
from pathlib import Path

import numpy as np
import pytest

from nnmeter_nas.cli import build_parser, main
from nnmeter_nas.errors import (GraphValidationError, InputTooLargeError, LatencyBudgetError,
                                NnMeterNasError, PackageError, PackageTooLargeError,
                                RegressorFileError, UnknownPredictorError)
from nnmeter_nas.graph import load_graph
from nnmeter_nas.kernels.fusion_rules import FusionRules
from nnmeter_nas.packages.format import PredictorPackage, write_package, zip_package
from nnmeter_nas.packages.registry import install_predictor, installed_dir
from nnmeter_nas.regressors.forest import TreeEnsemble
from nnmeter_nas.testing import grid_tree

torch = pytest.importorskip("torch")


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _installed(nnmeter_home: Path) -> list[str]:
    root = installed_dir()
    return sorted(p.name for p in root.rglob("manifest.json")) if root.exists() else []


# ---------------------------------------------------------------------------- graphs
@pytest.fixture(scope="module")
def static_onnx(tmp_path_factory) -> Path:
    """A conv net exported with a static 1x3x32x32 input."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    buf = io.BytesIO()
    torch.onnx.export(net.eval(), torch.zeros(1, 3, 32, 32), buf, dynamo=False)
    path = tmp_path_factory.mktemp("onnx") / "static.onnx"
    path.write_bytes(buf.getvalue())
    return path


def test_onnx_static_input_with_other_channels(static_onnx, dummy_predictor):
    before = _files(static_onnx.parent)
    with pytest.raises(GraphValidationError) as err:
        dummy_predictor.predict(str(static_onnx), input_shape=(1, 4, 32, 32))
    msg = str(err.value)
    assert str(static_onnx) in msg and "4 input channels" in msg and "weights take 3" in msg
    assert "input_shape (1, 4, 32, 32) replaced the static shape (1, 3, 32, 32)" in msg
    assert _files(static_onnx.parent) == before
    # a shape the weights accept still overrides the static one
    assert load_graph(str(static_onnx), input_shape=(1, 3, 64, 64))


def test_onnx_static_input_with_other_channels_cli(static_onnx, dummy_predictor, capsys):
    pkg = str(dummy_predictor.package.path)
    status = main(["predict", str(static_onnx), "--device", pkg, "--input-shape", "1,4,32,32"])
    err = capsys.readouterr().err
    assert status == 1 and str(static_onnx) in err and "weights take 3" in err


def _ir(conv_in=None, attrs=None, inbounds=("in",)) -> dict:
    return {
        "in": {"attr": {"type": "Placeholder", "attr": {}, "input_shape": [],
                        "output_shape": [[1, 8, 8, 4]]}, "inbounds": [], "outbounds": ["c"]},
        "c": {"attr": {"type": "Conv2D",
                       "attr": attrs if attrs is not None else {"ksize": [3, 3],
                                                                "strides": [1, 1]},
                       "input_shape": conv_in or [[1, 8, 8, 4]],
                       "output_shape": [[1, 8, 8, 4]]},
              "inbounds": list(inbounds), "outbounds": ["r"]},
        "r": {"attr": {"type": "Relu6", "attr": {}, "input_shape": [[1, 8, 8, 4]],
                       "output_shape": [[1, 8, 8, 4]]}, "inbounds": ["c"], "outbounds": []},
    }


def test_valid_ir_still_predicts(dummy_predictor):
    assert dummy_predictor.predict(_ir()) > 0


@pytest.mark.parametrize("shape, dim", [([1, -8, 8, 4], "-8"), ([1, 0, 0, 0], "0")])
def test_ir_conv_with_non_positive_dims(tmp_path, dummy_predictor, shape, dim):
    path = tmp_path / "neg.json"
    path.write_text(json.dumps(_ir(conv_in=[shape])))
    with pytest.raises(GraphValidationError) as err:
        dummy_predictor.predict(str(path))
    msg = str(err.value)
    assert str(path) in msg and "'c'" in msg and f"the dim {dim}" in msg and "positive" in msg
    assert _files(tmp_path) == ["neg.json"]


def test_ir_inbound_to_a_missing_node(dummy_predictor):
    with pytest.raises(GraphValidationError) as err:
        dummy_predictor.predict(_ir(inbounds=("in", "ghost")))
    msg = str(err.value)
    assert "'c'" in msg and "'ghost'" in msg and "not a node of the IR" in msg


def test_ir_conv_with_rank3_input(dummy_predictor):
    with pytest.raises(GraphValidationError) as err:
        dummy_predictor.predict(_ir(conv_in=[[1, 8, 8]]))
    msg = str(err.value)
    assert "'c'" in msg and "4-D NHWC input" in msg and "[1, 8, 8]" in msg


@pytest.mark.parametrize("ir, needle", [
    (_ir(attrs={"ksize": "abc", "strides": [1, 1]}), "attribute 'ksize' is 'abc'"),
    (_ir(attrs={"ksize": [3, "b"], "strides": [1, 1]}), "ks=[3, 'b']"),
    (_ir(attrs={"ksize": [3, 3], "strides": [1, 1], "group": "2"}), "attribute 'group'"),
    (_ir(conv_in=[["1", "8", "8", "4"]]), "the dim '1', which is not an int"),
    (_ir(conv_in="1,8,8,4"), "input_shape is '1,8,8,4'"),
])
def test_ir_with_malformed_attributes(dummy_predictor, ir, needle):
    with pytest.raises(GraphValidationError) as err:
        dummy_predictor.predict(ir)
    msg = str(err.value)
    assert "'c'" in msg and needle in msg
    assert "invalid literal" not in msg and "unsupported operand" not in msg


def test_torch_input_too_large_is_refused_before_allocation(monkeypatch):
    def no_alloc(*a, **k):
        raise AssertionError("a tensor was allocated")

    monkeypatch.setattr(torch, "zeros", no_alloc)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))
    with pytest.raises(InputTooLargeError) as err:
        load_graph(net, input_shape=(1, 3, 100000, 100000))
    msg = str(err.value)
    assert "Sequential" in msg and "(1, 3, 100000, 100000)" in msg and "ONNX" in msg


# ---------------------------------------------------------------------------- LatencyFilter
@pytest.fixture(scope="module")
def profiler():
    """A profiler of a one-choice table on the device 'dummy'."""
    pytest.importorskip("nni")
    from nnmeter_nas.nni import LatencyProfiler
    from nnmeter_nas.nni.table import LatencyTable, TablePoint

    point = TablePoint(name="p", frozen_path="p", kind="layer", labels=("a",),
                       combos=[("x",), ("y",)], ms=[[1.0], [2.0]], active=[True, True])
    return LatencyProfiler(table=LatencyTable(
        devices=["dummy"], input_shape=[1, 3, 16, 16], points=[point], fixed_ms={"dummy": 0.5},
        space={"class": "Toy", "labels": {"a": ["x", "y"]}}))


def test_filter_budget_on_an_unprofiled_device(profiler):
    from nnmeter_nas.nni import LatencyFilter

    with pytest.raises(LatencyBudgetError) as err:
        LatencyFilter({"ghostdev": 0.001}, profiler, devices=["dummy"])
    assert "'ghostdev'" in str(err.value) and "devices=['dummy']" in str(err.value)
    with pytest.raises(LatencyBudgetError) as err:
        LatencyFilter({"ghostdev": 0.001}, profiler)
    assert "'ghostdev'" in str(err.value) and "['dummy']" in str(err.value)
    with pytest.raises(LatencyBudgetError, match="did you mean 'dummy'"):
        LatencyFilter({"dumy": 0.001}, profiler)
    with pytest.raises(LatencyBudgetError, match="'dummy' of devices= has no budget"):
        LatencyFilter({"other": 1.0}, profiler, devices=["dummy", "other"])
    with pytest.raises(LatencyBudgetError, match="'nodev'"):
        LatencyFilter(1.0, profiler, devices=["nodev"])
    f = LatencyFilter({"dummy": 2.0}, profiler, devices=["dummy"])
    assert f({"a": "x"}) and not f({"a": "y"})
    assert LatencyFilter(np.float32(2.0), profiler)({"a": "x"})  # numpy budgets are numbers


@pytest.mark.parametrize("kw, needle", [
    ({"max_ms": float("nan")}, "max_ms is nan"),
    ({"max_ms": float("inf")}, "max_ms is inf"),
    ({"max_ms": -1.0}, "max_ms is -1.0"),
    ({"max_ms": 0}, "max_ms is 0"),
    ({"max_ms": {"dev": float("nan")}}, "max_ms['dev'] is nan"),
    ({"max_ms": None, "min_ms": float("nan")}, "min_ms is nan"),
    ({"max_ms": "20"}, "max_ms is '20'"),
    ({"max_ms": 1.0, "min_ms": 2.0}, "above max_ms"),
])
def test_filter_budget_not_a_finite_positive_number(kw, needle):
    pytest.importorskip("nni")
    from nnmeter_nas.nni import LatencyFilter

    with pytest.raises(LatencyBudgetError) as err:
        LatencyFilter(kw.pop("max_ms"), lambda s: {"dev": 1.0}, **kw)
    assert needle in str(err.value)


# ---------------------------------------------------------------------------- packages
def _regressors():
    return {"relu": grid_tree([0, 1], [[7, 14], [16]], lambda p: 1e-6 * p[0] * p[1], 2)}


def _package(dest: Path) -> Path:
    return write_package(dest, name="tiny", version="1.0", device="tiny", framework="test",
                         regressors=_regressors(), fusion_rules=FusionRules.default())


def _rezip(src_dir: Path, dest: Path, replace: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(src_dir.rglob("*")):
            rel = p.relative_to(src_dir).as_posix()
            if p.is_file():
                z.writestr(rel, replace.get(rel, p.read_bytes()))
    return dest


def test_zip_member_that_inflates_is_refused_before_decompression(tmp_path, nnmeter_home,
                                                                  monkeypatch):
    d = _package(tmp_path / "pkg")
    bomb = bytes(32 << 20)  # 32 MiB of zeros, about 32 KiB deflated
    z = _rezip(d, tmp_path / "bomb.zip", {"kernels/relu.npz": bomb})
    assert z.stat().st_size < 100_000
    opened = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, *a, **k):
        opened.append(name if isinstance(name, str) else name.filename)
        return real_open(self, name, *a, **k)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    with pytest.raises(PackageTooLargeError) as err:
        PredictorPackage.load(z)
    assert str(z) in str(err.value) and "'kernels/relu.npz'" in str(err.value)
    assert "kernels/relu.npz" not in opened
    with pytest.raises(PackageTooLargeError):
        install_predictor(z)
    assert _installed(nnmeter_home) == []


def test_zip_member_size_disagrees_with_manifest(tmp_path, nnmeter_home):
    d = _package(tmp_path / "pkg")
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["sizes"]["kernels/relu.npz"] == (d / "kernels/relu.npz").stat().st_size
    grown = (d / "kernels/relu.npz").read_bytes() + bytes(1000)
    z = _rezip(d, tmp_path / "grown.zip", {"kernels/relu.npz": grown})
    with pytest.raises(PackageTooLargeError) as err:
        install_predictor(z)
    assert str(z) in str(err.value) and "manifest.json says" in str(err.value)
    assert _installed(nnmeter_home) == []


def _tamper_kernel(d: Path, data: bytes) -> None:
    """Replace the relu kernel and fix its checksum and size, so only its content is bad."""
    (d / "kernels/relu.npz").write_bytes(data)
    manifest = json.loads((d / "manifest.json").read_text())
    import hashlib

    manifest["files"]["kernels/relu.npz"] = hashlib.sha256(data).hexdigest()
    manifest["sizes"]["kernels/relu.npz"] = len(data)
    (d / "manifest.json").write_text(json.dumps(manifest))


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize("data", [
    pickle.dumps({"left": [1, 2]}),
    _npz(left=np.array([{"x": 1}], dtype=object)),
], ids=["pickle", "object-array"])
def test_kernel_npz_that_is_not_a_tree_ensemble(tmp_path, data):
    path = tmp_path / "relu.npz"
    path.write_bytes(data)
    with pytest.raises(RegressorFileError) as err:
        TreeEnsemble.load(path)
    msg = str(err.value)
    assert str(path) in msg and "not a tree-ensemble file" in msg and "reinstall" in msg
    assert "allow_pickle" not in msg and "pickle.load" not in msg


def _without_n_features() -> bytes:
    ens = _regressors()["relu"]
    with np.load(io.BytesIO(ens.to_npz_bytes())) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(bytes(arrays["header"]).decode())
    del header["n_features"]
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    return _npz(**arrays)


def test_kernel_npz_without_n_features(tmp_path, static_onnx, capsys):
    path = tmp_path / "relu.npz"
    path.write_bytes(_without_n_features())
    with pytest.raises(RegressorFileError) as err:
        TreeEnsemble.load(path)
    assert str(path) in str(err.value) and "'n_features'" in str(err.value)
    d = _package(tmp_path / "pkg")
    _tamper_kernel(d, _without_n_features())
    status = main(["predict", str(static_onnx), "--device", str(d)])
    err_text = capsys.readouterr().err
    assert status == 1 and str(d) in err_text and "kernels/relu.npz" in err_text and \
        "'n_features'" in err_text and "reinstall" in err_text


def test_cost_model_npz_without_n_features_names_the_file_and_the_entry(tmp_path):
    """The four built-in devices store KernelCostModel files: the same row of the table."""
    from nnmeter_nas.packages.registry import builtin_dir
    from nnmeter_nas.regressors import load_regressor
    from nnmeter_nas.regressors.cost_model import FORMAT, KernelCostModel

    src = builtin_dir() / "cortexA76cpu_tflite21" / "kernels" / "conv-bn-relu.npz"
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(bytes(arrays["header"]).decode())
    assert header["format"] == FORMAT  # a cost model, not a tree ensemble
    del header["n_features"]
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    path = tmp_path / "conv-bn-relu.npz"
    path.write_bytes(_npz(**arrays))
    with pytest.raises(RegressorFileError) as err:
        KernelCostModel.load(path)
    assert str(path) in str(err.value) and "n_features" in str(err.value) and \
        "reinstall" in str(err.value)
    with pytest.raises(RegressorFileError, match="n_features"):
        load_regressor(path.read_bytes())
    with pytest.raises(RegressorFileError, match="not a regressor file"):
        load_regressor(b"not an npz")
    # the inflation cap the tree ensembles have holds for cost models too (one reader)
    arrays["header"] = np.frombuffer(json.dumps({**header, "n_features": 7}).encode(),
                                     dtype=np.uint8)
    arrays["corr_factor"] = np.zeros(80 << 20, dtype=np.uint8)  # 80 MiB packing to ~80 KB
    bomb = io.BytesIO()
    np.savez_compressed(bomb, **arrays)
    with pytest.raises(RegressorFileError, match="would inflate"):
        KernelCostModel.load(bomb.getvalue())


def test_broken_kernel_inside_an_installed_zip_names_the_zip(tmp_path, nnmeter_home):
    d = _package(tmp_path / "pkg")
    _tamper_kernel(d, pickle.dumps("not a forest"))
    z = zip_package(d, tmp_path / "broken.zip")
    with pytest.raises(PackageError) as err:
        install_predictor(z)
    msg = str(err.value)
    assert str(z) in msg and "kernels/relu.npz" in msg
    assert ".install-" not in msg and "unpacked" not in msg
    assert _installed(nnmeter_home) == []
    assert not [p for p in installed_dir().iterdir() if not p.name.endswith(".lock")]


# ---------------------------------------------------------------------------- devices
def test_unknown_device_gets_did_you_mean(static_onnx, capsys):
    status = main(["predict", str(static_onnx), "--device", "a76,adreno640gpu_tflite21"])
    err = capsys.readouterr().err
    assert status == 1 and "unknown predictor 'a76'" in err
    assert "did you mean 'cortexA76cpu_tflite21'" in err
    with pytest.raises(UnknownPredictorError, match="did you mean 'adreno640gpu_tflite21'"):
        from nnmeter_nas.packages.registry import load_predictor_spec

        load_predictor_spec("adreno64Ogpu_tflite21")


def _help_examples(command: str) -> list[list[str]]:
    parser = build_parser([command])
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    lines = [ln.strip() for ln in (sub.epilog or "").splitlines()]
    return [shlex.split(ln)[1:] for ln in lines if ln.startswith("nnmeter-nas ")]


@pytest.mark.parametrize("command", ["predict", "score", "lut"])
def test_help_examples_parse_and_name_known_devices(command):
    from nnmeter_nas.packages.registry import load_predictor_spec

    examples = _help_examples(command)
    assert examples
    for argv in examples:
        args = build_parser(argv).parse_args(argv)
        specs = getattr(args, "device", None) or getattr(args, "devices", None) or []
        for spec in ",".join(specs).split(","):
            if spec and spec != "all":
                assert load_predictor_spec(spec).device, (argv, spec)


def test_predict_help_examples_run_as_printed(tmp_path, monkeypatch, capsys):
    """Every `predict --help` example, run in a folder holding its model files."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1)).eval()
    for name, dynamic in (("resnet18.onnx", False), ("model.onnx", True),
                          ("spos.onnx", False)):
        torch.onnx.export(net, torch.zeros(1, 3, 224, 224), str(tmp_path / name), dynamo=False,
                          dynamic_axes={"x": {2: "h", 3: "w"}} if dynamic else None,
                          input_names=["x"])
    load_graph(str(tmp_path / "resnet18.onnx")).to_json(tmp_path / "model.json")
    monkeypatch.chdir(tmp_path)
    for argv in _help_examples("predict"):
        assert main(argv) == 0, (argv, capsys.readouterr().err)
    capsys.readouterr()


def test_every_error_class_derives_from_the_base():
    for cls in (GraphValidationError, InputTooLargeError, LatencyBudgetError,
                RegressorFileError, PackageTooLargeError):
        assert issubclass(cls, NnMeterNasError)
