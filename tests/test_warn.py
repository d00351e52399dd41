"""The package's warnings name the user's line of code, however deep inside nnmeter_nas they
are raised (nnmeter_nas.warn)."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from nnmeter_nas.errors import ConvergenceWarning, LatencyWarning

HERE = Path(__file__).resolve()


def _from_here(records) -> bool:
    return any(Path(r.filename).resolve() == HERE for r in records)


def test_warn_skips_every_frame_of_the_package(monkeypatch):
    """A warning issued three package frames deep is attributed to the test's line."""
    from nnmeter_nas import warn as warn_mod

    def inner():
        warn_mod.warn("deep", LatencyWarning)

    # make the helper's frames look like package code: compile them under the package's path
    code = compile("def middle(f):\n    f()\n\ndef outer(f):\n    middle(f)\n",
                   str(Path(warn_mod.__file__).with_name("fake_module.py")), "exec")
    ns: dict = {}
    exec(code, ns)
    inner.__code__ = inner.__code__.replace(co_filename=ns["outer"].__code__.co_filename)
    with pytest.warns(LatencyWarning, match="deep") as rec:
        ns["outer"](inner)
    assert _from_here(rec), [r.filename for r in rec]


def test_a_fit_that_stops_early_warns_at_the_users_fit_call():
    from test_fit_networks import _two_family_samples

    from nnmeter_nas.fitting.device_fit import DeviceLatencyFit

    with pytest.warns(ConvergenceWarning) as rec:
        DeviceLatencyFit(n_alternations=2, corrections=False).fit(_two_family_samples())
    assert _from_here(rec), [r.filename for r in rec]


def test_a_latency_table_warning_names_the_users_profiler_call():
    pytest.importorskip("nni")
    from test_nni_table import SHAPE, _ActSpace

    from nnmeter_nas.nni import LatencyProfiler
    from nnmeter_nas.testing import make_dummy_predictor

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*is found to be not a nn.Module.*")
        with pytest.warns(LatencyWarning, match="allow_missing") as rec:
            LatencyProfiler(_ActSpace(), make_dummy_predictor(), SHAPE, allow_missing=True)
    assert _from_here([r for r in rec if "allow_missing" in str(r.message)])
