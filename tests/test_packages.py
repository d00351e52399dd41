"""Predictor packages: format, registry (installed / built-in / downloadable), downloads from a
local HTTP server, bad input, and concurrent installs."""
from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from legacy_release import LEGACY_023, device_release_zip, make_zip, release_files
from nnmeter_nas.errors import DownloadError, PackageError, UnknownPredictorError
from nnmeter_nas.kernels.fusion_rules import FusionRules
from nnmeter_nas.packages import registry
from nnmeter_nas.packages.format import PredictorPackage, write_package, zip_package
from nnmeter_nas.packages.registry import (install_predictor, installed_dir, list_predictors,
                                           load_predictor)
from nnmeter_nas.testing import grid_tree

DEVICE = "cortexA76cpu_tflite21"


@pytest.fixture(autouse=True)
def _no_proxy(no_proxy):
    """Downloads here go to a local server: no proxy from the environment."""


def _regressors(scale: float = 1.0):
    return {"relu": grid_tree([0, 1], [[7, 14, 28], [16, 64]],
                              lambda p: scale * 1e-6 * p[0] * p[0] * p[1], 2),
            "conv-bn-relu": grid_tree([5], [[0.1, 1.0, 10.0]], lambda p: scale * 0.01 * p[0], 7)}


def _package(dest: Path, name: str = "tiny", version: str = "1.0", scale: float = 1.0,
             **kw) -> Path:
    return write_package(dest, name=name, version=version, device=name, framework="test",
                         regressors=_regressors(scale), fusion_rules=FusionRules.default(),
                         source={"kind": "test"}, **kw)


def _leftovers(root: Path) -> list[str]:
    """Anything in the cache besides complete packages and lock files."""
    out = []
    if not root.exists():
        return out
    for p in root.iterdir():
        if p.name.endswith(".lock"):
            continue
        if p.name.startswith(".") or not p.is_dir():
            out.append(p.name)
            continue
        for v in p.iterdir():
            if v.name.startswith(".") or not (v / "manifest.json").is_file():
                out.append(f"{p.name}/{v.name}")
    return out


def _installed_packages(root: Path) -> list[str]:
    return sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in root.glob("*/*/manifest.json"))


# ------------------------------------------------------------------ package format
def test_write_load_roundtrip_dir_and_zip(tmp_path):
    d = _package(tmp_path / "tiny")
    z = zip_package(d, tmp_path / "tiny.zip")
    X = np.array([[14, 64], [100, 3]], dtype=float)
    for src in (d, z):
        pkg = PredictorPackage.load(src)
        assert pkg.name == "tiny" and sorted(pkg.regressors) == ["conv-bn-relu", "relu"]
        assert np.array_equal(pkg.regressors["relu"].predict(X),
                              _regressors()["relu"].predict(X))
    with pytest.raises(PackageError, match="already exists"):
        _package(tmp_path / "tiny")
    _package(tmp_path / "tiny", scale=2.0, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny", "tiny.zip"]


def test_missing_file_and_wrong_checksum(tmp_path):
    d = _package(tmp_path / "a")
    (d / "kernels" / "relu.npz").unlink()
    with pytest.raises(PackageError, match=r"missing the file 'kernels/relu.npz'"):
        PredictorPackage.load(d)
    d = _package(tmp_path / "b")
    f = d / "kernels" / "relu.npz"
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(PackageError, match=r"checksum mismatch for 'kernels/relu.npz'"):
        PredictorPackage.load(d)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(PackageError, match="manifest.json is not valid JSON"):
        PredictorPackage.load(d)
    (d / "manifest.json").write_text("[1, 2]")
    with pytest.raises(PackageError, match="must hold a JSON object"):
        PredictorPackage.load(d)


def test_bad_zips(tmp_path):
    d = _package(tmp_path / "p")
    z = zip_package(d, tmp_path / "p.zip")
    # an entry that escapes the package folder
    slip = tmp_path / "slip.zip"
    with zipfile.ZipFile(z) as src, zipfile.ZipFile(slip, "w") as dst:
        for n in src.namelist():
            dst.writestr(n, src.read(n))
        dst.writestr("../evil", b"x")
    with pytest.raises(PackageError, match=r"zip entry '\.\./evil' escapes"):
        PredictorPackage.load(slip)
    # truncated
    cut = tmp_path / "cut.zip"
    cut.write_bytes(z.read_bytes()[:-200])
    with pytest.raises(PackageError, match="not a predictor package"):
        PredictorPackage.load(cut)
    # a corrupt member (CRC mismatch) is a PackageError, not a raw zipfile error
    bad = tmp_path / "crc.zip"
    raw = bytearray(z.read_bytes())
    with zipfile.ZipFile(z) as zf:
        info = zf.getinfo("kernels/relu.npz")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + info.compress_size // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(PackageError, match="kernels/relu.npz"):
        PredictorPackage.load(bad)
    # a zip that is not a package
    with pytest.raises(PackageError, match="no manifest.json"):
        PredictorPackage.load(make_zip(tmp_path / "np.zip", {"a.txt": b"x"}))


# ------------------------------------------------------------------ registry: local sources
def test_unknown_device_and_version(nnmeter_home, monkeypatch):
    monkeypatch.setenv("NNMETER_NAS_MIRROR", "http://127.0.0.1:9/")  # never contacted
    with pytest.raises(UnknownPredictorError, match=r"unknown predictor 'no_such_device'"):
        load_predictor("no_such_device")
    with pytest.raises(UnknownPredictorError, match=r"has no version '9\.9'.*\['1\.0'\]"):
        load_predictor(DEVICE, "9.9")
    with pytest.raises(UnknownPredictorError, match="is not installed"):
        load_predictor(DEVICE, download=False)
    with pytest.raises(UnknownPredictorError, match="needs a predictor name"):
        load_predictor()
    assert _leftovers(installed_dir()) == []


def test_install_nnmeter_style_zip(nnmeter_home, tmp_path):
    z = make_zip(tmp_path / "legacy_cpu.zip", release_files(), top="legacy_cpu")
    dest = install_predictor(z)
    assert dest == installed_dir() / "legacy_cpu" / "1.0"
    pred = load_predictor("legacy_cpu")
    assert Path(pred.package.path) == dest
    assert pred.package.manifest["source"]["kind"] == "nnmeter-import"
    assert pred.package.feature_set == "nnmeter-2.0"
    rows = [r for r in list_predictors() if r.name == "legacy_cpu"]
    assert [(r.source, r.status) for r in rows] == [("installed", "in use")]
    assert _leftovers(installed_dir()) == []
    # an nn-Meter folder (not zipped) installs the same way, here under another name
    dest2 = install_predictor(LEGACY_023, name="legacy_folder")
    assert dest2 == installed_dir() / "legacy_folder" / "1.0"
    assert _installed_packages(installed_dir()) == ["legacy_cpu/1.0", "legacy_folder/1.0"]


def test_install_our_format(nnmeter_home, tmp_path):
    z = zip_package(_package(tmp_path / "tiny", version="2.1"), tmp_path / "tiny.zip")
    dest = install_predictor(z)
    assert dest == installed_dir() / "tiny" / "2.1"
    assert load_predictor("tiny", "2.1").version == "2.1"
    dest = install_predictor(tmp_path / "tiny")  # a package directory
    assert dest == installed_dir() / "tiny" / "2.1"
    assert _leftovers(installed_dir()) == []


def test_failed_installs_leave_nothing(nnmeter_home, tmp_path):
    d = _package(tmp_path / "broken")
    f = d / "kernels" / "relu.npz"
    data = f.read_bytes()
    f.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(PackageError, match="checksum mismatch"):
        install_predictor(zip_package(d, tmp_path / "broken.zip"))
    with pytest.raises(PackageError, match="checksum mismatch"):
        install_predictor(d)
    files = release_files(["relu"])
    files["relu.pkl"] = files["relu.pkl"][:100]
    with pytest.raises(PackageError, match="relu.pkl: not a readable predictor pickle"):
        install_predictor(make_zip(tmp_path / "badpkl.zip", files, top="badpkl"))
    with pytest.raises(PackageError, match="not found"):
        install_predictor(tmp_path / "nope.zip")
    # a manifest whose name would place the package outside the cache
    evil = _package(tmp_path / "evil", name="..")
    with pytest.raises(PackageError, match=r"invalid predictor name '\.\.'"):
        install_predictor(evil)
    assert _leftovers(installed_dir()) == []
    assert _installed_packages(installed_dir()) == []
    assert not (installed_dir().parent / "1.0").exists()


def test_installed_package_wins_over_builtin(nnmeter_home, tmp_path, monkeypatch):
    builtin = tmp_path / "builtin"
    monkeypatch.setattr(registry, "builtin_dir", lambda: builtin)
    _package(builtin / "prec" / "1.0", name="prec", version="1.0",
             description="built-in copy")
    _package(builtin / "prec" / "2.0", name="prec", version="2.0",
             description="built-in, newer")
    assert load_predictor("prec").package.manifest["description"] == "built-in, newer"
    install_predictor(_package(tmp_path / "mine", name="prec", version="1.0",
                               description="installed copy"))
    rows = {(r.source, r.version): r.status for r in list_predictors() if r.name == "prec"}
    assert rows == {("installed", "1.0"): "in use", ("builtin", "1.0"): "shadowed",
                    ("builtin", "2.0"): "shadowed"}
    pred = load_predictor("prec")
    assert pred.package.manifest["description"] == "installed copy"
    assert Path(pred.package.path).is_relative_to(installed_dir())
    # an explicit version only the built-in source has still resolves to it
    assert load_predictor("prec", "2.0").package.manifest["description"] == "built-in, newer"
    # the downloadable nn-Meter devices are listed as such while not installed
    dl = [r for r in list_predictors() if r.name == DEVICE]
    assert [(r.source, r.status) for r in dl] == [("downloadable", "not installed")]
    assert dl[0].url.endswith(f"/{DEVICE}.zip")


# ------------------------------------------------------------------ downloads
class _Server:
    """A static file server on 127.0.0.1 that counts GET requests per path."""

    def __init__(self, root: Path, truncate: bool = False):
        self.hits: dict[str, int] = {}
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def do_GET(self):
                with lock:
                    server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if not truncate:
                    return super().do_GET()
                data = (root / self.path.lstrip("/")).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.close_connection = True

            def log_message(self, *a):
                pass

        lock = threading.Lock()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    root.mkdir()
    device_release_zip(root / f"{DEVICE}.zip", DEVICE)
    srv = _Server(root)
    monkeypatch.setenv("NNMETER_NAS_MIRROR", srv.url)
    yield srv
    srv.close()


def test_download_imports_and_caches(nnmeter_home, mirror):
    pred = load_predictor(DEVICE)
    assert mirror.hits == {f"/{DEVICE}.zip": 1}
    dest = installed_dir() / DEVICE / "1.0"
    assert Path(pred.package.path) == dest
    m = pred.package.manifest
    assert m["device"] == DEVICE and m["framework"] == "TFLite 2.1"
    assert m["source"]["kind"] == "nnmeter-import" and m["source"]["folder"] == DEVICE
    assert sorted(pred.kernel_types) == sorted(registry.NNMETER_PREDICTORS[DEVICE]["kernels"])
    again = load_predictor(DEVICE)
    assert mirror.hits == {f"/{DEVICE}.zip": 1}  # served from the cache
    assert Path(again.package.path) == dest
    rows = [r for r in list_predictors() if r.name == DEVICE]
    assert [(r.source, r.status) for r in rows] == [("installed", "in use")]
    assert _leftovers(installed_dir()) == []


def test_concurrent_first_loads_download_once(nnmeter_home, mirror):
    errors, paths = [], []

    def worker():
        try:
            paths.append(load_predictor(DEVICE).package.path)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(set(map(str, paths))) == 1
    assert mirror.hits == {f"/{DEVICE}.zip": 1}
    assert _leftovers(installed_dir()) == []


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_offline_fails_at_once_with_install_hint(nnmeter_home, monkeypatch):
    """One connection attempt, no waiting and no retry, then an error saying what to do."""
    import urllib.request

    monkeypatch.setenv("NNMETER_NAS_MIRROR", f"http://127.0.0.1:{_closed_port()}/")
    attempts, sleeps = [], []
    real_urlopen = urllib.request.urlopen

    def counting_urlopen(url, *args, **kwargs):
        attempts.append(url)
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", counting_urlopen)
    monkeypatch.setattr(time, "sleep", lambda s: sleeps.append(s))
    with pytest.raises(DownloadError) as err:
        load_predictor(DEVICE)
    assert len(attempts) == 1 and sleeps == []
    msg = str(err.value)
    assert f"{DEVICE}.zip" in msg and "nnmeter-nas predictors install PATH.zip" in msg
    assert _leftovers(installed_dir()) == [] and _installed_packages(installed_dir()) == []


def test_http_errors_and_cut_downloads(nnmeter_home, tmp_path, monkeypatch):
    root = tmp_path / "www"
    root.mkdir()
    device_release_zip(root / f"{DEVICE}.zip", DEVICE)
    srv = _Server(root / "elsewhere")  # 404 for everything
    monkeypatch.setenv("NNMETER_NAS_MIRROR", srv.url)
    try:
        with pytest.raises(DownloadError, match="HTTP 404"):
            load_predictor(DEVICE)
    finally:
        srv.close()
    srv = _Server(root, truncate=True)
    monkeypatch.setenv("NNMETER_NAS_MIRROR", srv.url)
    try:
        with pytest.raises(DownloadError, match="cut short"):
            install_predictor(DEVICE)
    finally:
        srv.close()
    assert _leftovers(installed_dir()) == [] and _installed_packages(installed_dir()) == []


# ------------------------------------------------------------------ concurrency
def test_concurrent_installs_threads(nnmeter_home, tmp_path):
    z = make_zip(tmp_path / "conc.zip", release_files(), top="conc")
    results, errors = [], []

    def worker():
        try:
            results.append(install_predictor(z))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(results) == 4
    assert {str(r) for r in results} == {str(installed_dir() / "conc" / "1.0")}
    PredictorPackage.load(results[0])
    assert _installed_packages(installed_dir()) == ["conc/1.0"]
    assert _leftovers(installed_dir()) == []


def test_concurrent_installs_processes(nnmeter_home, tmp_path):
    z = make_zip(tmp_path / "procs.zip", release_files(["relu", "add"]), top="procs")
    code = ("import sys; from nnmeter_nas.packages.registry import install_predictor; "
            "print(install_predictor(sys.argv[1]))")
    env = dict(os.environ, NNMETER_NAS_HOME=str(nnmeter_home))
    repo = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(repo), env.get("PYTHONPATH", "")])
    procs = [subprocess.Popen([sys.executable, "-c", code, str(z)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert {o.strip() for o, _ in outs} == {str(installed_dir() / "procs" / "1.0")}
    pkg = PredictorPackage.load(installed_dir() / "procs" / "1.0")
    assert sorted(pkg.regressors) == ["add", "relu"]
    assert _leftovers(installed_dir()) == []
    assert json.loads((installed_dir() / "procs" / "1.0" / "manifest.json").read_text())[
        "name"] == "procs"
