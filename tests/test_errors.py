"""One home for the package's exceptions, all deriving from NnMeterNasError."""
import ast
import importlib
import inspect
import warnings
from pathlib import Path

import pytest

import nnmeter_nas.errors as errors

PKG = Path(__file__).resolve().parents[1] / "nnmeter_nas"
# defined beside their data reader (datasets/ is restructured separately); both derive from the base
_ELSEWHERE = {("datasets/nb201.py", "NB201DataError"), ("datasets/nb201.py", "ArchStrError")}


def _exception_classes(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            bases = [ast.unparse(b) for b in node.bases]
            if any(b.endswith(("Error", "Exception", "Warning")) for b in bases):
                names.append(node.name)
    return names


def test_public_exceptions_are_defined_only_in_errors_py():
    strays = [(str(f.relative_to(PKG)), name) for f in sorted(PKG.rglob("*.py"))
              if f.name != "errors.py" or f.parent != PKG
              for name in _exception_classes(f)]
    assert not set(strays) - _ELSEWHERE, f"define exceptions in nnmeter_nas/errors.py: {strays}"


def test_every_error_derives_from_the_package_base():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, BaseException) and not issubclass(c, Warning)]
    assert len(classes) > 10
    for cls in classes:
        assert issubclass(cls, errors.NnMeterNasError), cls


def test_every_warning_derives_from_the_package_warning_base():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, Warning)]
    assert {errors.ConvergenceWarning, errors.LatencyWarning,
            errors.TorchFallbackWarning, errors.PackageWarning} <= set(classes)
    for cls in classes:
        assert issubclass(cls, errors.NnMeterNasWarning), cls
        assert not issubclass(cls, errors.NnMeterNasError), cls


@pytest.mark.parametrize("module, name", [
    ("nnmeter_nas.nni.errors", "SampleError"),
    ("nnmeter_nas.nni.errors", "TableMismatchError"),
    ("nnmeter_nas.nni.errors", "UnsupportedSpaceError"),
    ("nnmeter_nas.parallel.store", "ResumeError"),
    ("nnmeter_nas.parallel.spaces", "SpaceSpecError"),
    ("nnmeter_nas.parallel.api", "ScoringError"),
    ("nnmeter_nas.builder.calibrate", "HostMismatchError"),
    ("nnmeter_nas.builder.store", "StoreMismatchError"),
    ("nnmeter_nas.builder.measure", "KernelMismatchError"),
    ("nnmeter_nas.packages.nnmeter_import", "UnsafePickleError"),
    ("nnmeter_nas.cli", "UsageError"),
    ("nnmeter_nas.predictor", "LatencyWarning"),
    ("nnmeter_nas.graph", "TorchFallbackWarning"),
    ("nnmeter_nas.packages.registry", "PackageWarning"),
])
def test_old_import_paths_still_work(module, name):
    assert getattr(importlib.import_module(module), name) is getattr(errors, name)


def test_sample_code_error_is_a_deprecated_alias_of_sample_error():
    from nnmeter_nas.parallel import codes

    with pytest.warns(DeprecationWarning, match="SampleError"):
        alias = codes.SampleCodeError
    assert alias is errors.SampleError
    space = codes.LabelSpace.from_label_values({"a": [1, 2]})
    with pytest.raises(errors.SampleError, match="a=3"):
        space.encode([{"a": 3}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert codes.LabelSpace  # ordinary names do not warn


def test_a_bad_space_name_is_a_usage_error():
    from nnmeter_nas.parallel.spaces import resolve_space

    with pytest.raises(errors.UsageError, match="unknown search space"):
        resolve_space("no-such-space")
