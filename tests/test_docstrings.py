"""The public API's docstrings: one dialect (numpy style, ``name : type, default=...``),
Examples sections that run, and no benchmark figures (they go stale; benchmarks/results/ holds
them)."""
from __future__ import annotations

import doctest
import importlib
import inspect
import re
import warnings

import pytest

#: Packages whose ``__all__`` is the public API, and public names that live elsewhere.
PUBLIC_PACKAGES = ["nnmeter_nas", "nnmeter_nas.nni", "nnmeter_nas.parallel",
                   "nnmeter_nas.strategies"]
PUBLIC_EXTRA = ["nnmeter_nas.builder.kernel_specs:register_kernel_spec",
                "nnmeter_nas.fitting:fit_device_package"]

#: Public objects whose docstrings carry an Examples section that must run.
WITH_EXAMPLES = [
    "nnmeter_nas:LatencyPredictor",
    "nnmeter_nas:LatencyPredictor.predict",
    "nnmeter_nas:LatencyPredictor.predict_kernels",
    "nnmeter_nas:load_predictor",
    "nnmeter_nas:list_predictors",
    "nnmeter_nas.nni:LatencyProfiler",
    "nnmeter_nas.nni:LatencyFilter",
    "nnmeter_nas.nni:LatencyPenalty",
    "nnmeter_nas.strategies:ConstrainedEvolution",
    "nnmeter_nas.strategies:MultiObjectiveEvolution",
    "nnmeter_nas.strategies:ConstrainedRandom",
    "nnmeter_nas.strategies:MnasNetReward",
    "nnmeter_nas.parallel:score",
    "nnmeter_nas.builder.kernel_specs:register_kernel_spec",
    "nnmeter_nas.fitting:fit_device_package",
]

# "name : type" or "a, b : type" (numpydoc), or "**options"
_ENTRY = re.compile(r"^(\*\*\w+|[A-Za-z_]\w*(, [A-Za-z_]\w*)* : \S.*)$")
_SECTION_RULE = re.compile(r"^-{3,}$")
_FIGURES = re.compile(r"\d+(\.\d+)?x (faster|slower)|(candidates|networks|samples) per second|"
                      r"millions of candidates|candidates/s\b|"
                      r"about (a|\d+(\.\d+)?(-\d+(\.\d+)?)?) ?(ms|s|second) (per|on|instead|without)\b|"
                      r"\d+(\.\d+)?(-\d+(\.\d+)?)? ?(ms|s) per (network|candidate)\b|"
                      r"\d+(\.\d+)?(-\d+(\.\d+)?)? ?% (cross-validated|RMSPE|more|slower|faster|on a \d+x\d+)\b")


def _resolve(name: str):
    module, _, attr = name.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _public_objects():
    seen = set()
    names = [f"{pkg}:{n}" for pkg in PUBLIC_PACKAGES
             for n in importlib.import_module(pkg).__all__ if not n.startswith("__")]
    for name in names + PUBLIC_EXTRA:
        obj = _resolve(name)
        found = [(name, obj)]
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if attr.startswith("_") and attr not in ("__init__", "__call__"):
                    continue
                if isinstance(value, (staticmethod, classmethod)):
                    value = value.__func__
                if isinstance(value, property):
                    value = value.fget
                if callable(value):
                    found.append((f"{name}.{attr}", value))
        for n, o in found:
            if id(o) not in seen and getattr(o, "__doc__", None):
                seen.add(id(o))
                yield n, o


def dialect_problems(doc: str) -> list[str]:
    """Lines of ``doc`` outside the numpy dialect: Google/Sphinx section headers or fields,
    and parameter entries without ``name : type``."""
    lines = inspect.cleandoc(doc).splitlines()
    out = [line.strip() for line in lines
           if re.match(r"\s*(Args|Arguments|Returns|Raises|Yields|Example|Examples):\s*$", line)
           or re.match(r"\s*:(param|type|returns?|rtype|raises)\b", line)]
    for i, line in enumerate(lines[:-1]):
        if line.strip() not in ("Parameters", "Other Parameters", "Attributes") or \
                not _SECTION_RULE.match(lines[i + 1].strip()):
            continue
        indent = len(line) - len(line.lstrip())
        for j in range(i + 2, len(lines)):
            entry = lines[j]
            if not entry.strip() or len(entry) - len(entry.lstrip()) != indent:
                continue
            if j + 1 < len(lines) and _SECTION_RULE.match(lines[j + 1].strip()):
                break  # the next section
            if not _ENTRY.match(entry.strip()):
                out.append(entry.strip())
    return out


def test_dialect_check_finds_untyped_and_google_style_entries():
    numpy = "Do.\n\nParameters\n----------\nx : int, default=1\n    X.\nb, c : float\n    B.\n"
    assert dialect_problems(numpy) == []
    assert dialect_problems("Do.\n\nParameters\n----------\nx\n    X.\n") == ["x"]
    assert dialect_problems("Do.\n\nParameters\n----------\nx:\n    X.\n") == ["x:"]
    assert dialect_problems("Do.\n\nArgs:\n    x: X.\n") == ["Args:"]


def test_public_docstrings_use_the_numpy_dialect():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad = {name: problems for name, obj in _public_objects()
               if (problems := dialect_problems(obj.__doc__))}
    assert not bad, f"docstrings outside the numpy dialect (name : type, default=...): {bad}"


def test_public_docstrings_hold_no_benchmark_figures():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad = {name: m.group(0) for name, obj in _public_objects()
               if (m := _FIGURES.search(obj.__doc__))}
    assert not bad, f"benchmark figures in docstrings (put them in benchmarks/results/): {bad}"


def test_figure_check_finds_measured_figures():
    """Phrases that once stood in docstrings and help text, and text that must pass."""
    for stale in ("about 1 s per network", "(0.5-5 s per network)", "in about 20 ms without",
                  "(about 1 ms instead of a", "about a second per candidate",
                  "reaches 1.7-5.3 % cross-validated RMSPE",
                  "(+40-60% on a 112x112 layer)", "costs it 40% more", "millions of candidates/s",
                  "3.2x faster"):
        assert _FIGURES.search(stale), stale
    for fine in ("counted as 0 ms", "within +-10 % of the measured latency", "never trains an "
                 "architecture over 5 ms", "(0.95 = 95 %)", "about 1 MiB of weights"):
        assert not _FIGURES.search(fine), fine


def _source_docstrings():
    """``(where, docstring)`` of every module, class and function under nnmeter_nas/, read
    with ``ast`` (no imports)."""
    import ast
    from pathlib import Path

    import nnmeter_nas

    root = Path(nnmeter_nas.__file__).parent
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in [tree, *ast.walk(tree)]:
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    yield f"{path.relative_to(root.parent)}:{getattr(node, 'name', '')}", doc


def test_module_docstrings_and_cli_help_hold_no_benchmark_figures():
    """Every docstring of the package (not only the public API's) and the CLI's help text:
    measured figures go stale there; they belong in benchmarks/results/ or docs/."""
    import argparse

    from nnmeter_nas.cli import build_parser

    bad = {where: m.group(0) for where, doc in _source_docstrings()
           if (m := _FIGURES.search(" ".join(doc.split())))}

    def helps(parser, name):
        yield name, parser.format_help()
        # argparse has no public way to list a parser's subcommands; tests may look inside.
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, p in action.choices.items():
                    yield from helps(p, f"{name} {sub}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad.update({f"nnmeter-nas{name} --help": m.group(0)
                    for name, text in helps(build_parser(), "")
                    if (m := _FIGURES.search(" ".join(text.split())))})
    assert not bad, f"benchmark figures in docstrings or help (put them in benchmarks/results/): {bad}"


@pytest.fixture
def kernel_spec_registry(monkeypatch):
    """register_kernel_spec's example registers a spec: keep it out of the other tests."""
    from nnmeter_nas.builder import kernel_specs

    monkeypatch.setattr(kernel_specs, "_REGISTRY", dict(kernel_specs._REGISTRY))


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_public_api_examples_run(name, kernel_spec_registry, one_torch_thread):
    obj = _resolve(name)
    doc = inspect.getdoc(obj) or ""
    assert re.search(r"^Examples\n-{8}$", doc, re.M), f"{name} has no Examples section"
    assert "doctest: +SKIP" not in doc, f"{name}'s example is skipped, not run"
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, globs={})
    assert tests and tests[0].examples, f"{name}'s Examples section has no >>> lines"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for test in tests:
            runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
