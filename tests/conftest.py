"""Test isolation: no test reads or writes the user's predictor cache or ~/nni-experiments."""
from __future__ import annotations

import os
import tempfile

import pytest

# Set before any test module imports nnmeter_nas or nni.
_SESSION_HOME = tempfile.mkdtemp(prefix="nnmeter-nas-test-home-")
# Assigned, not setdefault: a user's exported NNMETER_NAS_HOME must not leak into the tests.
os.environ["NNMETER_NAS_HOME"] = os.path.join(_SESSION_HOME, "cache")
# NNI writes to ~/nni-experiments (through Path.home() in places that take no option), so the
# whole test session runs with HOME in a temporary directory.
os.environ["HOME"] = os.path.join(_SESSION_HOME, "home")
os.makedirs(os.environ["HOME"], exist_ok=True)


@pytest.fixture
def nnmeter_home(tmp_path, monkeypatch):
    """A fresh, empty predictor cache for one test."""
    from nnmeter_nas.packages import registry

    home = tmp_path / "nnmeter_home"
    monkeypatch.setenv("NNMETER_NAS_HOME", str(home))
    # the built-in packages would otherwise answer for nn-Meter's device names
    monkeypatch.setattr(registry, "builtin_dir", lambda: tmp_path / "no_builtin")
    return home


@pytest.fixture(scope="session")
def dummy_predictor():
    from nnmeter_nas.testing import make_dummy_predictor

    return make_dummy_predictor(directory=tempfile.mkdtemp(prefix="nnmeter-nas-dummy-"))


@pytest.fixture
def one_torch_thread():
    """Run a test with torch on one thread (batch-1 tracing on 2 shared cores is much faster)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def no_proxy(monkeypatch):
    """No HTTP(S) proxy from the environment (tests that download from a local server)."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
