"""A new user's walkthrough of the predictor side (README, `nnmeter-nas --help`, every predictor
command on real and bad inputs): each test is a problem that walkthrough found, refused with one
clear error that names the file, row or device, nothing half-written, exit status non-zero."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnmeter_nas.cli import main
from nnmeter_nas.errors import MeasurementDataError, ModelFormatError, PackageError

ROOT = Path(__file__).resolve().parents[1]
A76 = "cortexA76cpu_tflite21"


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python -m nnmeter_nas.cli ARGS`` in a fresh interpreter (as a user runs it)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "nnmeter_nas.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _error_lines(err: str) -> list[str]:
    """stderr's error: one ``nnmeter-nas: error:`` line and its indented continuation lines."""
    assert "Traceback" not in err, err
    lines = err.rstrip("\n").splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith("nnmeter-nas: error:")]
    assert len(starts) == 1, err
    return lines[starts[0]:]


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """Four small ONNX convolution stacks and a valid measured.csv (made-up latencies)."""
    import torch

    from nnmeter_nas.graph.torch_export import export_onnx

    d = tmp_path_factory.mktemp("nets")
    rows = ["model,latency_ms"]
    for c in (8, 16, 32, 64):
        net = torch.nn.Sequential(torch.nn.Conv2d(3, c, 3, padding=1), torch.nn.ReLU(),
                                  torch.nn.Conv2d(c, c, 1), torch.nn.ReLU())
        (d / f"conv{c}.onnx").write_bytes(export_onnx(net, (1, 3, 16, 16)).SerializeToString())
        rows.append(f"conv{c}.onnx,{0.05 * c}")
    (d / "measured.csv").write_text("\n".join(rows) + "\n")
    return d


def _fit(csv_path: Path, out: Path, *extra: str) -> list[str]:
    return ["predictors", "fit", A76, "--networks", str(csv_path), "--only-mine",
            "--out", str(out), *extra]


# ---------------------------------------------------------------------------- --out / overwrite
def test_overwrite_never_deletes_a_folder_or_file_that_is_not_a_package(nets, tmp_path,
                                                                         capsys):
    """`--overwrite` replaced ANY existing --out: a folder of the user's files, or the CSV
    itself, was deleted and replaced by the package."""
    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "keep.txt").write_text("my notes")
    rc = main(_fit(nets / "measured.csv", mine, "--overwrite"))
    err = capsys.readouterr().err
    assert rc == 1
    line = _error_lines(err)[0]
    assert str(mine) in line and "not a predictor package" in line and "keep.txt" in line
    assert (mine / "keep.txt").read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no temporary left

    csv_copy = tmp_path / "copy.csv"
    csv_copy.write_text((nets / "measured.csv").read_text())
    with pytest.raises(PackageError, match="not a predictor package"):
        from nnmeter_nas.packages.format import check_replaceable
        check_replaceable(csv_copy)
    rc = main(["predictors", "fit", A76, "--networks", str(nets / "measured.csv"),
               "--only-mine", "--out", str(csv_copy), "--overwrite"])
    assert rc == 1 and "not a predictor package" in capsys.readouterr().err
    assert csv_copy.read_text() == (nets / "measured.csv").read_text()


def test_overwrite_replaces_a_package_and_an_empty_folder(nets, tmp_path, capsys):
    pkg = tmp_path / "pkg"
    assert main(_fit(nets / "measured.csv", pkg)) == 0
    assert main(_fit(nets / "measured.csv", pkg, "--overwrite")) == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(_fit(nets / "measured.csv", empty, "--overwrite")) == 0
    assert (empty / "manifest.json").is_file()
    capsys.readouterr()


def test_out_that_cannot_be_created_is_named(nets, tmp_path, capsys):
    """--out under a file: was `[Errno 17] File exists: '...'` (naming the parent only)."""
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    rc = main(_fit(nets / "measured.csv", a_file / "pkg"))
    line = _error_lines(capsys.readouterr().err)[0]
    assert rc == 1
    assert f"cannot write the package to {a_file / 'pkg'}" in line
    assert a_file.read_text() == "x"


def test_written_package_folder_follows_the_umask(nets, tmp_path):
    """The package folder was created by mkdtemp and kept its mode 0700."""
    from nnmeter_nas.fitting import fit_device_package

    old = os.umask(0o022)
    try:
        dest = fit_device_package(A76, nets / "measured.csv", tmp_path / "pkg",
                                  builtin_data=False)
    finally:
        os.umask(old)
    assert dest.stat().st_mode & 0o777 == 0o755


# ---------------------------------------------------------------------------- measured.csv
# ---------------------------------------------------------------------------- measured.csv
@pytest.mark.parametrize("body, expected", [
    ("model,latency_ms\nconv8.onnx,0.4\nconv16.onnx,0.8\nconv8.onnx,0.4\n",
     r"row 4: conv8\.onnx is listed again \(row 2\)"),
    ("model,latency_ms\nconv8.onnx,0.4\n./conv8.onnx,0.9\n",
     r"row 3: \./conv8\.onnx is listed again \(row 2\)"),
    ("model,latency_ms\nconv8.onnx,0.4,1x3x16x16\n",
     r"row 2: 3 fields, the header has 2"),
    ("model,latency_ms,input_shape\nconv8.onnx,0.4,1,3,16,16\n",
     r"row 2: 6 fields, the header has 3.*1x3x224x224"),
    ("model,latency_ms,input_shape\nconv8.onnx,0.4,1x3xabc\n",
     r"row 2: input_shape '1x3xabc' is not .*1x3x224x224"),
    ("model,latency_ms,input_shape\nconv8.onnx,0.4,1x3x0x16\n",
     r"row 2: input_shape '1x3x0x16' is not "),
    ("model,latency_ms\nsub,0.4\n",
     r"row 2: model 'sub' is a directory, not an ONNX file"),
])
def test_bad_csv_rows_are_named(nets, tmp_path, body, expected):
    (nets / "sub").mkdir(exist_ok=True)
    p = nets / f"bad_{tmp_path.name}.csv"
    p.write_text(body)
    from nnmeter_nas.fitting.device_package import read_networks_csv
    from nnmeter_nas.fitting.nb201_devices import DEVICES

    with pytest.raises(MeasurementDataError, match=expected) as info:
        read_networks_csv(p, DEVICES[A76].rules())
    assert str(p) in str(info.value)


def test_csv_that_is_not_text_is_named(tmp_path, capsys):
    """Was `'utf-8' codec can't decode byte 0xff in position 0` without the file."""
    p = tmp_path / "measured.csv"
    p.write_bytes(b"\xff\xfe\x00model\x00,latency\n")
    rc = main(_fit(p, tmp_path / "out"))
    line = _error_lines(capsys.readouterr().err)[0]
    assert rc == 1 and str(p) in line and "not a text CSV" in line
    assert not (tmp_path / "out").exists()


def test_every_bad_row_is_on_its_own_line(nets, tmp_path, capsys):
    """The CLI joined a multi-line error into one line, so the list of bad rows ran together."""
    p = nets / "lat.csv"
    p.write_text("model,latency_ms\nconv8.onnx,nan\nconv16.onnx,-1\nconv32.onnx,abc\n")
    rc = main(_fit(p, tmp_path / "out"))
    lines = _error_lines(capsys.readouterr().err)
    assert rc == 1 and not (tmp_path / "out").exists()
    assert "3 bad row(s)" in lines[0]
    assert [ln.split(": ")[0].strip().rsplit(" ", 1)[-1] for ln in lines[1:]] == ["2", "3", "4"]
    assert all(ln.startswith("  ") for ln in lines[1:])


# ---------------------------------------------------------------------------- predict
# ---------------------------------------------------------------------------- predict
def test_model_that_is_a_directory_is_named(tmp_path, capsys):
    d = tmp_path / "model.onnx"
    d.mkdir()
    for model in (d, tmp_path / "ir.json"):
        model.mkdir(exist_ok=True)
        rc = main(["predict", str(model), "-d", A76])
        line = _error_lines(capsys.readouterr().err)[0]
        assert rc == 1 and f"{model} is a directory, not a model file" in line, line


def test_empty_onnx_file_is_named_once(tmp_path):
    from nnmeter_nas.graph import load_graph

    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    with pytest.raises(ModelFormatError) as info:
        load_graph(str(p))
    assert str(info.value) == f"{p}: empty file, not an ONNX model"


def test_warnings_print_as_one_line(nets):
    """A LatencyWarning printed Python's `cli.py:NNN: LatencyWarning: ...` and the source line
    `status = args._handler(args)`."""
    out = run_cli("predict", str(nets / "conv8.onnx"), "-d", A76)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines and all(ln.startswith("nnmeter-nas: warning: ") for ln in lines), out.stderr
    assert "outside the feature range" in out.stderr and "_handler" not in out.stderr
    debug = run_cli("--debug", "predict", str(nets / "conv8.onnx"), "-d", A76)
    assert "LatencyWarning" in debug.stderr  # --debug keeps Python's format


def test_dynamic_shape_error_names_the_cli_option(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    p = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(g), p)
    rc = main(["predict", str(p), "-d", A76])
    line = _error_lines(capsys.readouterr().err)[0]
    assert rc == 1 and "--input-shape N,C,H,W" in line


# ---------------------------------------------------------------------------- install, calibrate
def test_install_of_a_mistyped_device_name_suggests_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NNMETER_NAS_HOME", str(tmp_path / "home"))
    rc = main(["predictors", "install", "cortexA76cpu_tflite2"])
    line = _error_lines(capsys.readouterr().err)[0]
    assert rc == 1 and "Did you mean 'cortexA76cpu_tflite21'?" in line


def test_calibrate_names_a_corrupt_model_before_measuring(tmp_path, capsys, monkeypatch):
    """Was onnxruntime's `[ONNXRuntimeError] : 7 : INVALID_PROTOBUF ...` after the progress
    bar started, without the file."""
    monkeypatch.setenv("NNMETER_NAS_HOME", str(tmp_path / "home"))
    bad = tmp_path / "trunc.onnx"
    bad.write_bytes(b"\x08\x07\x12\x05abc")
    rc = main(["predictors", "calibrate", "x86avx2cpu_onnxruntime", "--models", str(bad),
               "--quiet", "--passes", "1", "--pause", "0"])
    line = _error_lines(capsys.readouterr().err)[0]
    assert rc == 1 and str(bad) in line and "not a valid ONNX model" in line
    assert not (tmp_path / "home").exists()


def test_folder_without_a_manifest_is_not_told_to_reinstall(tmp_path, capsys, monkeypatch):
    """A folder that is no package at all got 'the package is missing the file
    'manifest.json'; reinstall it' (`-d FOLDER`, `install FOLDER`, `import FOLDER`)."""
    monkeypatch.setenv("NNMETER_NAS_HOME", str(tmp_path / "home"))
    folder = tmp_path / "stuff"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    for argv in (["predict", str(tmp_path / "m.onnx"), "-d", str(folder)],
                 ["predictors", "install", str(folder)],
                 ["predictors", "import", str(folder)]):
        (tmp_path / "m.onnx").write_bytes(b"")
        rc = main(argv)
        line = _error_lines(capsys.readouterr().err)[0]
        assert rc == 1 and "reinstall" not in line, line
        assert f"{folder}" in line and ("no manifest.json in the folder" in line
                                        or "not an nn-Meter predictor release" in line), line


def test_predictors_help_names_every_action(capsys):
    """`nnmeter-nas --help` and `predictors --help` left out `fit` (issue 14's command)."""
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    assert main(["predictors", "--help"]) == 0
    group = capsys.readouterr().out
    summary = top.split("\n    predictors\n", 1)[1].splitlines()[0]
    for action in ("list", "import", "install", "calibrate", "fit", "build"):
        assert action in summary, (action, summary)
        assert f"nnmeter-nas predictors {action}" in group, (action, group)


def test_fit_of_a_mistyped_device_suggests_it(nets, tmp_path, capsys):
    rc = main(["predictors", "fit", "cortexA76cpu_tflite2", "--networks",
               str(nets / "measured.csv"), "--out", str(tmp_path / "o")])
    line = _error_lines(capsys.readouterr().err)[0]
    assert rc == 1 and "did you mean 'cortexA76cpu_tflite21'?" in line and "--base" in line
    assert not (tmp_path / "o").exists()


def _ir_file(path: Path, nodes: dict) -> Path:
    import json

    path.write_text(json.dumps(nodes))
    return path


def test_empty_ir_is_refused_not_answered_0_ms(tmp_path, capsys):
    """`{}` as an nn-Meter IR file was predicted 0.0000 ms with exit status 0."""
    p = _ir_file(tmp_path / "empty.json", {})
    rc = main(["predict", str(p), "-d", A76])
    line = _error_lines(capsys.readouterr().err)[0]
    assert rc == 1 and f"{p}: the IR has no nodes" in line


def test_input_shape_with_an_ir_file_is_a_usage_error(tmp_path, capsys):
    """--input-shape was silently ignored for an IR file (its shapes are fixed)."""
    shape = [[1, 8, 8, 4]]
    p = _ir_file(tmp_path / "m.json", {
        "in": {"attr": {"type": "Placeholder", "attr": {}, "input_shape": [],
                        "output_shape": shape}, "inbounds": [], "outbounds": ["c"]},
        "c": {"attr": {"type": "Conv2D", "attr": {"ksize": [3, 3], "strides": [1, 1]},
                       "input_shape": shape, "output_shape": shape},
              "inbounds": ["in"], "outbounds": []}})
    assert main(["predict", str(p), "-d", A76]) == 0
    capsys.readouterr()
    rc = main(["predict", str(p), "-d", A76, "--input-shape", "1,4,16,16"])
    line = _error_lines(capsys.readouterr().err)[0]
    assert rc == 2 and "--input-shape applies to ONNX files" in line and str(p) in line


def test_unwritable_user_cache_is_named_before_fitting(nets, tmp_path, capsys, monkeypatch):
    """An NNMETER_NAS_HOME that cannot be created gave `[Errno 20] Not a directory: ...`,
    after the fit had run."""
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    monkeypatch.setenv("NNMETER_NAS_HOME", str(a_file / "home"))
    calls = []
    import nnmeter_nas.fitting.device_package as dp

    monkeypatch.setattr(dp, "fit_device_package", lambda *a, **k: calls.append(a))
    for argv in (["predictors", "fit", A76, "--networks", str(nets / "measured.csv")],
                 ["predictors", "install", str(nets)]):
        rc = main(argv)
        line = _error_lines(capsys.readouterr().err)[0]
        assert rc == 1 and f"cannot install predictors into {a_file / 'home'}" in line, line
        assert "NNMETER_NAS_HOME" in line
    assert calls == []


def test_csv_saved_with_a_byte_order_mark_is_read(nets, tmp_path):
    """Excel's "CSV UTF-8" starts the file with a byte order mark, which made the first
    column '\\ufeffmodel' ("needs the columns 'model' ... it has ['\\ufeffmodel', ...]")."""
    from nnmeter_nas.fitting.device_package import read_networks_csv
    from nnmeter_nas.fitting.nb201_devices import DEVICES

    p = nets / "excel.csv"
    p.write_bytes(b"\xef\xbb\xbf" + (nets / "measured.csv").read_bytes().replace(b"\n", b"\r\n"))
    samples = read_networks_csv(p, DEVICES[A76].rules())
    assert [s.latency_ms for s in samples] == [0.4, 0.8, 1.6, 3.2]


def test_fit_prints_how_close_it_comes_to_the_measurements(nets, tmp_path, capsys):
    """`predictors fit` printed only the destination: latencies in the wrong unit (here one
    network 1e-9 ms, one 1e9 ms) gave a package far from them without a word."""
    assert main(_fit(nets / "measured.csv", tmp_path / "good")) == 0
    out = capsys.readouterr().out
    assert "your networks (4): 100% predicted within +-10%" in out, out
    p = nets / "extreme.csv"
    p.write_text("model,latency_ms\nconv8.onnx,1e-9\nconv16.onnx,1e9\n")
    assert main(_fit(p, tmp_path / "bad")) == 0
    out = capsys.readouterr().out
    assert "your networks (2): 0% predicted within +-10%" in out, out
    from nnmeter_nas import load_predictor

    m = load_predictor(path=tmp_path / "bad").package.manifest
    assert m["validation"]["train_by_source"]["user"]["n"] == 2


def test_installed_package_with_a_broken_manifest_is_not_skipped_silently(nets, tmp_path,
                                                                          capsys, monkeypatch):
    """An installed (fitted) package whose manifest.json got corrupt was skipped without a
    word, and its name silently loaded the built-in package instead."""
    import warnings

    from nnmeter_nas import load_predictor
    from nnmeter_nas.packages.registry import PackageWarning

    monkeypatch.setenv("NNMETER_NAS_HOME", str(tmp_path / "home"))
    assert main(["predictors", "fit", A76, "--networks", str(nets / "measured.csv"),
                 "--only-mine"]) == 0
    capsys.readouterr()
    assert load_predictor(A76).version == "user-1"
    (installed,) = (tmp_path / "home").rglob("manifest.json")
    installed.write_text("{")
    with pytest.warns(PackageWarning, match=f"{installed.parent}: installed predictor package "
                                            r"skipped \(manifest.json cannot be read"):
        assert load_predictor(A76).version != "user-1"
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        assert main(["predictors", "list"]) == 0
    err = capsys.readouterr().err
    assert f"nnmeter-nas: warning: {installed.parent}: installed predictor package skipped" in err


def test_batch_above_1_is_not_answered_silently(nets, capsys):
    """`predict m.onnx --input-shape 8,3,224,224` gave batch 1's latency (MobileNetV2 on the
    Cortex-A76: 42.0989 ms at batch 1 and at batch 8) without a word."""
    import warnings

    import torch

    from nnmeter_nas import load_predictor
    from nnmeter_nas.predictor import LatencyWarning

    conv = torch.nn.Conv2d(3, 8, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LatencyWarning)
        warnings.filterwarnings("ignore", "kernels of type", LatencyWarning)
        one = load_predictor(A76).predict(conv, input_shape=(1, 3, 32, 32))
    with pytest.warns(LatencyWarning, match=r"input has batch 4, .* measured at batch 1") as w:
        four = load_predictor(A76).predict(conv, input_shape=(4, 3, 32, 32))
    assert four == one  # what the warning says
    assert any(Path(r.filename).name == Path(__file__).name for r in w)  # points at the call
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        assert main(["predict", str(nets / "conv8.onnx"), "-d", A76,
                     "--input-shape", "8,3,16,16"]) == 0
    assert "nnmeter-nas: warning: predictor 'cortexA76cpu_tflite21': the network's input has " \
           "batch 8" in capsys.readouterr().err


def test_build_refuses_an_output_folder_of_other_files_before_measuring(tmp_path, capsys,
                                                                         monkeypatch):
    """`predictors build NAME -o DIR` replaced DIR whatever it held, once the build ended;
    now write_package refuses a folder that is no package, and the build says so first."""
    import nnmeter_nas.builder.build as build

    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    monkeypatch.setattr(build, "build_predictor", lambda *a, **k: pytest.fail("measured"))
    rc = main(["predictors", "build", "mycpu", "-o", str(mine), "--no-progress"])
    line = _error_lines(capsys.readouterr().err)[0]
    assert rc == 1 and f"{mine} is not a predictor package" in line
    assert (mine / "keep.txt").read_text() == "x"
