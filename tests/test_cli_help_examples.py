"""Every example printed by ``nnmeter-nas ... --help`` runs as printed and exits 0.

The examples are collected from the parser itself (each command's help text, description and
epilog as ``--help`` prints them), so an example added later is tested without editing this
file. Each runs in a fresh folder holding the files the examples name (``model.onnx``,
``archs.json``, an nn-Meter release zip...), with an empty ``NNMETER_NAS_HOME`` and ``HOME``.
Downloads are served from a local HTTP server (nn-Meter's release URL through
``NNMETER_NAS_MIRROR``; ``https://example.org/...`` by redirecting ``urlopen``), since the tests
run offline. ``predictors calibrate`` times networks on the predictor's build host: there the
host check and the timing are replaced by a fake backend (everything else runs).
"""
from __future__ import annotations

import argparse
import glob
import http.server
import json
import os
import re
import shlex
import shutil
import threading
import urllib.request
import warnings
from pathlib import Path

import pytest

from legacy_release import device_release_zip, release_files
from nnmeter_nas.cli import PROG, build_parser, main

# Examples slower than ~5 s here (2 shared cores): they import NNI and build a latency table
# of a space, score in full mode, or export dozens of networks.
SLOW = {
    "nnmeter-nas lut --space mypkg.spaces:MySpace --input-shape 1,3,64,64 "
    "--device cortexA76cpu_tflite21 --out t.json",
    "nnmeter-nas lut --space spos --device cortexA76cpu_tflite21 --out spos.json",
    "nnmeter-nas lut --space spos-small --device all --out spos_small_all.json",
    "nnmeter-nas score --space spos --devices cortexA76cpu_tflite21,adreno640gpu_tflite21 "
    "--n 100000 --out scores.parquet",
    "nnmeter-nas score --space nb201 --devices cortexA76cpu_tflite21,adreno640gpu_tflite21 "
    "--n 20 --mode full --out nb201.csv",
    "nnmeter-nas score --space spos --devices cortexA76cpu_tflite21 --samples archs.json "
    "--mode full --kernels --out k.parquet",
    "nnmeter-nas score --space spos-small --devices all --n 10 --mode full --out full.parquet",
    "nnmeter-nas predictors calibrate x86avx512cpu_onnxruntime --space spos",
    "nnmeter-nas predictors calibrate x86avx2cpu_onnxruntime --space nb201 --networks 40",
    # refits the Cortex-A76 on its built-in measurements too (20-28 s)
    "nnmeter-nas predictors fit cortexA76cpu_tflite21 --networks measured.csv",
}

# Examples whose work is big enough for score() to start a local Ray: under pytest-xdist they
# share the worker of the tests that start a Ray cluster (one cluster at a time).
STARTS_RAY = {
    "nnmeter-nas score --space spos --devices cortexA76cpu_tflite21,adreno640gpu_tflite21 "
    "--n 100000 --out scores.parquet",
}


# ---------------------------------------------------------------------------- collection
def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    # argparse has no public way to list a parser's subcommands; tests may look inside.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _examples_in(text: str) -> list[str]:
    """Command lines in a help text: lines starting with the program's name, and
    ```nnmeter-nas ...``` spans inside sentences."""
    found = [ln.strip() for ln in text.splitlines() if ln.strip().startswith(PROG + " ")]
    found += re.findall(rf"`({re.escape(PROG)} [^`]+)`", text)
    return found


def collect_examples() -> dict[str, list[str]]:
    """``{example: [commands whose --help prints it]}`` over every command and action,
    including ``predictors build`` as the builder defines it."""
    found: dict[str, list[str]] = {}

    def walk(path: list[str]) -> None:
        parser = build_parser(path)
        for name in path:
            parser = _subcommands(parser)[name]
        for example in _examples_in(parser.format_help()):
            found.setdefault(example, []).append(" ".join([PROG, *path]))
        for name in _subcommands(parser):
            walk([*path, name])

    walk([])
    return found


EXAMPLES = collect_examples()


def test_examples_are_collected_from_every_command():
    """The collection itself can fail: it must see each command's examples."""
    where = {cmd for cmds in EXAMPLES.values() for cmd in cmds}
    for command in ("nnmeter-nas", "nnmeter-nas predictors", "nnmeter-nas predictors list",
                    "nnmeter-nas predictors import", "nnmeter-nas predictors install",
                    "nnmeter-nas predictors calibrate", "nnmeter-nas predict",
                    "nnmeter-nas lut", "nnmeter-nas score"):
        assert command in where, command
    assert "nnmeter-nas predictors build --help" in EXAMPLES
    assert len(EXAMPLES) >= 25


# ---------------------------------------------------------------------------- the folder
class _Server:
    """Static files from ``root`` on 127.0.0.1, in a thread."""

    def __init__(self, root: Path):
        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


_MY_SPACE = '''\
from nnmeter_nas.parallel.toy_space import ToySpace


class MySpace(ToySpace):
    """A user's NNI 3 model space (the toy space under another name)."""
'''


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The files the examples name, made once: ``work/`` (the folder examples run in),
    ``home/`` (``~``) and ``mirror/`` (what the local download server serves)."""
    import torch

    from nnmeter_nas.graph import load_graph
    from nnmeter_nas.packages.format import zip_package
    from nnmeter_nas.packages.registry import NNMETER_PREDICTORS
    from nnmeter_nas.testing import make_dummy_predictor

    root = tmp_path_factory.mktemp("help_examples")
    work, home, mirror = root / "work", root / "home", root / "mirror"
    for d in (work, home / "Downloads", mirror, work / "nets", work / "mypkg"):
        d.mkdir(parents=True)
    # models: static 224x224 (model.onnx also takes --input-shape 1,3,224,224)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1)).eval()
    for name in ("resnet18.onnx", "model.onnx", "spos.onnx"):
        torch.onnx.export(net, torch.zeros(1, 3, 224, 224), str(work / name), dynamo=False)
    load_graph(str(work / "model.onnx")).to_json(work / "model.json")
    for i in range(6):  # networks of "my space" for calibrate --models nets/*.onnx
        w = 8 + 4 * i
        torch.onnx.export(torch.nn.Sequential(torch.nn.Conv2d(3, w, 3), torch.nn.ReLU(),
                                              torch.nn.Conv2d(w, w, 3)).eval(),
                          torch.zeros(1, 3, 32 + 8 * i, 32 + 8 * i), str(work / f"nets/n{i}.onnx"),
                          dynamo=False)
    # networks "measured on a phone" for predictors fit --networks (ONNX paths + latency_ms)
    rows = "".join(f"nets/n{i}.onnx,{0.5 + 0.3 * i:.2f}\n" for i in range(6))
    for name in ("measured.csv", "m.csv"):
        (work / name).write_text("model,latency_ms\n" + rows)
    (work / "archs.json").write_text(json.dumps(
        [{f"layer_{i}": v for i in range(1, 21)} for v in ("k3", "xcep")]))
    (work / "mypkg" / "__init__.py").write_text("")
    (work / "mypkg" / "spaces.py").write_text(_MY_SPACE)
    # nn-Meter releases: zips (as downloaded) and an unzipped folder
    device_release_zip(work / "cortexA76cpu_tflite21.zip", "cortexA76cpu_tflite21")
    shutil.copy(work / "cortexA76cpu_tflite21.zip", home / "Downloads")
    shutil.copy(work / "cortexA76cpu_tflite21.zip", mirror)
    shutil.copy(work / "cortexA76cpu_tflite21.zip", mirror / "p.zip")
    folder = work / "adreno640gpu_tflite21"
    folder.mkdir()
    for name, data in release_files(
            NNMETER_PREDICTORS["adreno640gpu_tflite21"]["kernels"]).items():
        (folder / name).write_bytes(data)
    # packages of our format: a folder and a zip of "mydevice"
    make_dummy_predictor("mydevice", directory=work)
    zip_package(work / "mydevice", work / "mydevice-1.0.zip")
    shutil.copy(work / "mydevice-1.0.zip", mirror)
    return root


@pytest.fixture(scope="module")
def server(template):
    srv = _Server(template / "mirror")
    yield srv
    srv.close()


class _FakeBackend:
    settings = {"name": "fake", "processor": "test", "isa": "test", "version": "0"}


@pytest.fixture
def workspace(template, server, tmp_path, monkeypatch):
    """A fresh copy of the template's folder as the current directory, an empty predictor
    cache and home, downloads served locally, network timing faked."""
    from nnmeter_nas.builder import calibrate, network_timing

    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(template / "home", tmp_path / "home")
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(work))  # mypkg.spaces, as an installed package would be
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NNMETER_NAS_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("NNMETER_NAS_MIRROR", server.url)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    real_urlopen = urllib.request.urlopen

    def urlopen(url, *a, **kw):
        url = url if isinstance(url, str) else url.full_url
        return real_urlopen(url.replace("https://example.org/", server.url), *a, **kw)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)

    def measure(backend, models, passes, **kw):
        if kw.get("on_pass"):
            for p in range(passes):
                kw["on_pass"](p)
        return [[0.5 + 0.01 * (i % 7) + 0.001 * len(m) / 1e4] * passes
                for i, m in enumerate(models)]

    monkeypatch.setattr(calibrate, "measurement_backend", lambda predictor: _FakeBackend())
    monkeypatch.setattr(network_timing, "measure_interleaved", measure)
    return work


def _stage(example: str, template: Path, work: Path) -> None:
    """Copy into ``work`` the template's files that ``example`` names, and only those (a
    folder named like a device would be taken for that device's package)."""
    named = set()
    for word in shlex.split(example)[1:]:
        named |= {word.rstrip("/").removeprefix("./"), Path(word).parts[0],
                  word.split(":")[0].split(".")[0]}
        if word.endswith(".csv") and (template / "work" / word).is_file():
            # a CSV of measured networks names its ONNX files in its first column
            lines = (template / "work" / word).read_text().splitlines()[1:]
            named |= {Path(line.split(",")[0]).parts[0] for line in lines}
    for entry in (template / "work").iterdir():
        if entry.name in named:
            (shutil.copytree if entry.is_dir() else shutil.copy)(entry, work / entry.name)


def _as_the_shell_would(example: str) -> list[str]:
    """The example's arguments after the shell's word splitting, ``~`` and glob expansion."""
    argv = []
    for word in shlex.split(example)[1:]:
        word = os.path.expanduser(word)
        matches = sorted(glob.glob(word)) if any(c in word for c in "*?[") else []
        argv.extend(matches or [word])
    return argv


# ---------------------------------------------------------------------------- the examples
@pytest.mark.parametrize("example", [
    pytest.param(e, id=e[len(PROG) + 1:],
                 marks=([pytest.mark.slow] if e in SLOW else [])
                 + ([pytest.mark.xdist_group("ray-cluster")] if e in STARTS_RAY else []))
    for e in sorted(EXAMPLES)])
def test_help_example_runs_as_printed(example, template, workspace, capsys):
    _stage(example, template, workspace)
    argv = _as_the_shell_would(example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            status = main(argv)
        except SystemExit as exc:  # `--help` of the builder's own parser
            status = exc.code
    out, err = capsys.readouterr()
    assert status == 0, f"{example!r} (printed by `{EXAMPLES[example][0]} --help`) exited " \
                        f"{status}:\n{err[-2000:]}"


def test_marked_examples_are_printed_examples():
    """The examples marked slow or Ray-starting above are ones `--help` prints (a reworded
    example would otherwise lose its mark silently)."""
    assert SLOW <= set(EXAMPLES), sorted(SLOW - set(EXAMPLES))
    assert STARTS_RAY <= set(EXAMPLES), sorted(STARTS_RAY - set(EXAMPLES))
