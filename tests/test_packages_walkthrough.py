"""Getting nn-Meter's predictors as a new user does (download, import, install), against a local
HTTP server that misbehaves on purpose: each test is a row of docs/bad_inputs.md's section
"Getting nn-Meter's predictors"."""
from __future__ import annotations

import http.server
import stat
import threading
import time
import types
import warnings
import zipfile
from pathlib import Path

import pytest

from legacy_release import device_release_zip, make_zip, release_files
from nnmeter_nas.cli import main
from nnmeter_nas.errors import (DownloadError, NnMeterNasWarning, PackageError,
                                UnknownKernelWarning)
from nnmeter_nas.kernels.fusion_rules import FusionRules
from nnmeter_nas.packages import download as download_mod
from nnmeter_nas.packages.format import PredictorPackage, write_package, zip_package
from nnmeter_nas.packages.nnmeter_import import import_nnmeter_package
from nnmeter_nas.packages.registry import install_predictor, installed_dir
from nnmeter_nas.testing import grid_tree

DEVICE = "cortexA76cpu_tflite21"


@pytest.fixture(autouse=True)
def _no_proxy(no_proxy):
    """Downloads here go to a local server: no proxy from the environment."""


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes[path]``: bytes (whole) or a callable(handler); else 404.

    Defined at module level, and the routes kept on the HTTP server itself, so a test's server
    leaves no reference cycle for a later test's garbage collection to find
    (``test_torch_front_end_leaves_no_reference_cycles`` counts them)."""

    def do_GET(self):
        self.server.hits.append(self.path)
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
        elif callable(route):
            route(self)
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(route)))
            self.end_headers()
            self.wfile.write(route)

    def log_message(self, *a):
        pass


class _Server:
    """A 127.0.0.1 server; ``routes[path]`` is bytes (served whole) or a callable(handler).
    A handler that stalls waits on ``done``, which :meth:`close` sets before it joins every
    handler thread, so no thread outlives its test."""

    def __init__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = False
        self.httpd.block_on_close = True
        self.httpd.routes = self.routes = {}
        self.httpd.hits = self.hits = []
        self.done = threading.Event()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self):
        self.done.set()
        self.httpd.shutdown()
        self.httpd.server_close()  # joins the handler threads
        self._thread.join(10)
        self.routes.clear()


@pytest.fixture
def server(monkeypatch):
    srv = _Server()
    monkeypatch.setenv("NNMETER_NAS_MIRROR", srv.url)
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def release_zip(tmp_path_factory) -> bytes:
    d = tmp_path_factory.mktemp("release")
    return device_release_zip(d / f"{DEVICE}.zip", DEVICE).read_bytes()


def _cache_state() -> list[str]:
    """Everything in the cache but lock files (a failed install must leave nothing)."""
    root = installed_dir()
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if not p.name.endswith(".lock"))


def _installed_ok() -> None:
    pkg = PredictorPackage.load(installed_dir() / DEVICE / "1.0")
    assert pkg.name == DEVICE and "conv-bn-relu" in pkg.regressors


# ------------------------------------------------------------------ downloads
def test_an_html_page_sent_with_status_200_names_the_url_and_a_retry_succeeds(
        nnmeter_home, server, release_zip):
    """A mirror or proxy answering with an error page used to be reported against the removed
    temporary file: ``.../.install-XXXX/cortexA76cpu_tflite21.zip: not a predictor package``."""
    path = f"/{DEVICE}.zip"
    server.routes[path] = b"<html><body>Rate limit exceeded</body></html>"
    with pytest.raises(DownloadError) as err:
        install_predictor(DEVICE)
    msg = str(err.value)
    assert server.url + DEVICE + ".zip" in msg and "an HTML page" in msg
    assert ".install-" not in msg and "try again" in msg
    assert _cache_state() == []
    server.routes[path] = release_zip
    install_predictor(DEVICE)
    _installed_ok()


def test_a_download_cut_short_without_content_length_names_the_url(nnmeter_home, server,
                                                                   release_zip):
    def cut(handler):
        handler.send_response(200)
        handler.end_headers()  # no Content-Length: the end of the body is the closed socket
        handler.wfile.write(release_zip[: len(release_zip) // 2])
        handler.close_connection = True

    server.routes[f"/{DEVICE}.zip"] = cut
    with pytest.raises(DownloadError) as err:
        install_predictor(DEVICE)
    msg = str(err.value)
    assert f"{DEVICE}.zip sent {len(release_zip) // 2} bytes" in msg
    assert "zip file cut short" in msg and ".install-" not in msg
    assert _cache_state() == []


def test_a_bad_package_behind_a_url_names_the_url(nnmeter_home, server, tmp_path):
    """A package zip whose checksum fails (or any other package error) names the URL it came
    from, not the temporary file it was downloaded to."""
    d = write_package(tmp_path / "pkg", name="tiny", version="1.0", device="tiny",
                      framework="test", fusion_rules=FusionRules.default(),
                      regressors={"relu": grid_tree([0, 1], [[7, 14], [16, 64]],
                                                    lambda p: 1e-6 * p[0] * p[1], 2)})
    f = d / "kernels" / "relu.npz"
    data = f.read_bytes()
    f.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    server.routes["/tiny.zip"] = zip_package(d, tmp_path / "tiny.zip").read_bytes()
    with pytest.raises(PackageError, match="checksum mismatch") as err:
        install_predictor(server.url + "tiny.zip")
    assert str(err.value).startswith(server.url + "tiny.zip: ")
    assert ".install-" not in str(err.value)
    # an nn-Meter release whose pickle is broken: the URL is named too
    files = release_files(["relu"])
    files["relu.pkl"] = files["relu.pkl"][:50]
    server.routes["/rel.zip"] = make_zip(tmp_path / "rel.zip", files, top="rel").read_bytes()
    with pytest.raises(PackageError, match="relu.pkl: not a readable predictor pickle") as err:
        install_predictor(server.url + "rel.zip")
    assert f"downloaded from {server.url}rel.zip" in str(err.value)
    assert _cache_state() == []


def test_http_errors_redirects_and_a_redirect_loop(nnmeter_home, server, release_zip):
    path = f"/{DEVICE}.zip"

    def error_500(handler):
        handler.send_error(500)

    def loop(handler):
        handler.send_response(302)
        handler.send_header("Location", handler.path)
        handler.end_headers()

    def moved(handler):
        handler.send_response(302)
        handler.send_header("Location", "/objects/release-asset")
        handler.end_headers()

    server.routes[path] = error_500
    with pytest.raises(DownloadError, match=r"cortexA76cpu_tflite21\.zip: HTTP 500"):
        install_predictor(DEVICE)
    server.routes[path] = loop
    with pytest.raises(DownloadError, match="HTTP 302") as err:
        install_predictor(DEVICE)
    assert "\n" not in str(err.value)  # urllib's reason spans three lines
    assert _cache_state() == []
    server.routes[path] = moved  # GitHub's release downloads redirect like this
    server.routes["/objects/release-asset"] = release_zip
    install_predictor(DEVICE)
    _installed_ok()


def _stalling(server, body: bytes):
    """A route that announces ``body`` whole, sends its first 1,000 bytes and then nothing
    until the server shuts down."""
    def stall(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[:1000])
        handler.wfile.flush()
        server.done.wait(10)
    return stall


def test_a_stalled_download_times_out_and_leaves_no_part_file(server, tmp_path, release_zip):
    server.routes["/slow.zip"] = _stalling(server, release_zip)
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="slow.zip: timed out"):
        download_mod.download(server.url + "slow.zip", tmp_path / "slow.zip", timeout=0.3,
                              progress=False)
    assert time.monotonic() - t0 < 5
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_a_download_leaves_nothing_and_a_retry_succeeds(
        nnmeter_home, server, release_zip, monkeypatch, capsys):
    import hashlib

    server.routes[f"/{DEVICE}.zip"] = release_zip
    monkeypatch.setattr(download_mod, "_CHUNK", 4096)
    calls = []

    class Interrupting:
        def __init__(self):
            self._h = hashlib.sha256()

        def update(self, b):
            calls.append(len(b))
            if len(calls) == 3:  # mid-body: a .part file with data is on disk
                assert list(installed_dir().rglob("*.part"))
                raise KeyboardInterrupt
            self._h.update(b)

        def hexdigest(self):
            return self._h.hexdigest()

    monkeypatch.setattr(download_mod, "hashlib", types.SimpleNamespace(sha256=Interrupting))
    with pytest.raises(KeyboardInterrupt):
        install_predictor(DEVICE)
    assert _cache_state() == []
    calls.clear()
    assert main(["predictors", "install", DEVICE]) == 130  # the shell's status for Ctrl-C
    assert "nnmeter-nas: interrupted" in capsys.readouterr().err
    assert _cache_state() == []
    monkeypatch.setattr(download_mod, "hashlib", hashlib)
    install_predictor(DEVICE)
    _installed_ok()


def test_cli_install_of_an_installed_device_does_not_download_it_again(nnmeter_home, server,
                                                                       release_zip, capsys):
    """`predictors install DEVICE` a second time used to download and convert it again."""
    server.routes[f"/{DEVICE}.zip"] = release_zip
    assert main(["predictors", "install", DEVICE]) == 0
    assert server.hits == [f"/{DEVICE}.zip"]
    capsys.readouterr()
    assert main(["predictors", "install", DEVICE]) == 0
    assert server.hits == [f"/{DEVICE}.zip"]
    out = capsys.readouterr().out
    assert "already installed" in out and "--force" in out
    assert main(["predictors", "install", DEVICE, "--force"]) == 0
    assert server.hits == [f"/{DEVICE}.zip"] * 2
    _installed_ok()


# ------------------------------------------------------------------ archives and imports
def _symlink_entry(z: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    z.writestr(info, target)


def test_zip_entries_that_are_symlinks_are_refused(nnmeter_home, tmp_path):
    """A symlink member used to be read as a file holding its target path: as a pickle
    ("invalid load key '/'") or, unlisted, accepted without a word."""
    z = make_zip(tmp_path / "sym.zip", release_files(["relu"]), top="sym")
    with zipfile.ZipFile(z, "a") as zf:
        _symlink_entry(zf, "sym/add.pkl", "/etc/passwd")
    with pytest.raises(PackageError, match=r"sym\.zip: zip entry 'sym/add\.pkl' is a symbolic "
                                           "link"):
        install_predictor(z)
    d = write_package(tmp_path / "pkg", name="tiny", version="1.0", device="tiny",
                      framework="test", fusion_rules=FusionRules.default(),
                      regressors={"relu": grid_tree([0, 1], [[7, 14], [16, 64]],
                                                    lambda p: 1e-6 * p[0] * p[1], 2)})
    pz = zip_package(d, tmp_path / "tiny.zip")
    with zipfile.ZipFile(pz, "a") as zf:
        _symlink_entry(zf, "notes.txt", "/etc/passwd")
    with pytest.raises(PackageError, match=r"tiny\.zip: zip entry 'notes\.txt' is a symbolic "
                                           "link"):
        install_predictor(pz)
    assert _cache_state() == []


def test_a_pickle_for_an_unknown_kernel_type_is_named_in_a_warning(tmp_path):
    files = release_files(["relu", "add"])
    files["conv.pkl"] = files["relu.pkl"]     # nn-Meter's name is conv-bn-relu
    files["addd.pkl"] = files["add.pkl"]      # a typo
    z = make_zip(tmp_path / "mine.zip", files, top="mine")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import_nnmeter_package(z, tmp_path / "out", progress=False)
    msgs = sorted(str(w.message) for w in caught if issubclass(w.category, UnknownKernelWarning))
    assert len(msgs) == 2, [str(w.message) for w in caught]
    assert msgs[0].startswith("mine.zip:mine/addd.pkl: 'addd' is not a kernel type")
    assert "Did you mean 'add'" in msgs[0]
    assert msgs[1].startswith("mine.zip:mine/conv.pkl: 'conv' is not a kernel type")
    assert "serves no kernel (kernels of type 'conv' use 'conv-bn-relu')" in msgs[1]
    assert issubclass(UnknownKernelWarning, NnMeterNasWarning)
    # nn-Meter's own names import without a warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import_nnmeter_package(make_zip(tmp_path / "ok.zip", release_files(["relu", "add"]),
                                        top="ok"), tmp_path / "out2", progress=False)
    assert [w for w in caught if issubclass(w.category, UnknownKernelWarning)] == []
    assert Path(tmp_path / "out2" / "manifest.json").is_file()


def test_a_killed_install_leaves_a_temp_folder_that_the_next_install_removes(
        nnmeter_home, server, release_zip):
    """SIGKILL, SIGTERM or a closed terminal run no ``finally``: the ``.install-*`` folder with
    its ``.part`` download stayed in the cache for good. A later install removes such folders
    once nothing in them changed for hours, and leaves a running install's folder alone."""
    import os
    import signal
    import subprocess
    import sys

    server.routes[f"/{DEVICE}.zip"] = _stalling(server, release_zip)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                         env.get("PYTHONPATH", "")])
    proc = subprocess.Popen([sys.executable, "-m", "nnmeter_nas.cli", "predictors", "install",
                             DEVICE], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        while not list(installed_dir().glob(".install-*/*.part")):
            assert time.monotonic() - t0 < 60 and proc.poll() is None
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    stale = list(installed_dir().glob(".install-*"))
    assert len(stale) == 1 and list(stale[0].glob("*.part"))
    running = installed_dir() / ".install-running"
    running.mkdir()
    (running / "x.part").write_bytes(b"x")
    old = time.time() - 7 * 3600
    for p in [stale[0], *stale[0].rglob("*")]:
        os.utime(p, (old, old))
    server.routes[f"/{DEVICE}.zip"] = release_zip
    install_predictor(DEVICE)
    _installed_ok()
    assert not stale[0].exists()
    assert (running / "x.part").is_file()  # recent: another install may be using it


@pytest.mark.parametrize("obey", ["false", "no", None, 2, [True]])
def test_a_fusion_rule_whose_obey_is_not_a_boolean_is_refused(tmp_path, obey):
    """``"obey": "false"`` (a hand-edited or YAML-converted file) used to count as true for a
    ``BF_`` rule: the kernels were fused against the file's word, without an error."""
    import json

    files = release_files(["relu"])
    rules = json.loads(files["fusion_rules.json"])
    rules["BF_conv_bn"]["obey"] = obey
    files["fusion_rules.json"] = json.dumps(rules).encode()
    z = make_zip(tmp_path / "fr.zip", files, top="fr")
    with pytest.raises(PackageError, match=r"fr\.zip: fusion_rules\.json is not a valid fusion "
                                           r"rules file: fusion rule 'BF_conv_bn': 'obey' is "):
        import_nnmeter_package(z, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert FusionRules.from_dict({"BF_conv_bn": {"obey": False}, "MON": {"obey": 1}}).pairs \
        == set()
