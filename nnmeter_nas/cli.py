"""The ``nnmeter-nas`` command line.

::

    nnmeter-nas predictors list | import PATH | install URL_OR_FILE_OR_DEVICE | build ...
    nnmeter-nas predict MODEL.onnx|MODEL.json --device D [--input-shape 1,3,224,224] [--kernels]
    nnmeter-nas lut --space spos|nb201|MODULE:CLASS --device D --out table.json
    nnmeter-nas score --space spos --devices all --n 100000 --out scores.parquet [--address ...]

Exit status: 0 success, 1 runtime error, 2 usage error. Errors are printed as one line
(``nnmeter-nas: error: ...``; an error that lists several items, such as the bad rows of a CSV,
gives each its own indented line below it), warnings as ``nnmeter-nas: warning: ...``;
``--debug`` shows the traceback and Python's warning format instead. Everything heavy (torch,
NNI, Ray, pandas) is imported by the command that needs it, so ``--help`` answers at once.

Each command has a handler ``_cmd_*`` (parsed arguments -> exit status) and a function ``_add_*``
that adds its parser, options and handler (:func:`_command`); :func:`build_parser` calls them.
A new ``predictors`` action is one more ``add(actions, common)`` in :data:`PREDICTOR_ACTIONS`;
every example its ``--help`` prints is run by tests/test_cli_help_examples.py.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from typing import Any, Callable, NoReturn, Sequence

from .errors import UsageError

PROG = "nnmeter-nas"

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse with one error format for every subcommand: ``nnmeter-nas: error: ...``."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[name-defined] # noqa: F821
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{PROG}: error: {message}\n")


_FORMATTER = argparse.RawDescriptionHelpFormatter


def _input_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(x) for x in text.replace("x", ",").split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"input shape must be comma-separated ints such as "
                                         f"1,3,224,224, not {text!r}") from None
    if len(shape) != 4 or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"input shape must be 4 positive ints N,C,H,W (e.g. "
                                         f"1,3,224,224), not {text!r}")
    return shape


def _count(text: str) -> int | str:
    if text == "all":
        return "all"
    try:
        value = int(float(text)) if "e" in text.lower() else int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of candidates or 'all', not "
                                         f"{text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"the number of candidates must be at least 1, "
                                         f"not {value}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, not {text!r}")
    return value


def _devices(values: Sequence[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


# ---------------------------------------------------------------------------- predictors
def _cmd_predictors_list(args: argparse.Namespace) -> int:
    from .packages.registry import list_predictors

    rows = list_predictors()
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=1))
        return EXIT_OK
    if not rows:
        print("no predictors")
        return EXIT_OK
    header = ("name", "version", "source", "status", "calibrations", "location")
    table = [(r.name, r.version, r.source, r.status, ",".join(r.calibrations) or "-",
              r.path or r.url or "") for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header[:-1])]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths + [0])).rstrip())
    for t in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(t, widths + [0])).rstrip())
    return EXIT_OK


def _cmd_predictors_import(args: argparse.Namespace) -> int:
    if not os.path.exists(args.path):
        raise FileNotFoundError(f"no such file or directory: {args.path}")
    if args.out:
        from .packages.nnmeter_import import import_nnmeter_package

        dest = import_nnmeter_package(args.path, args.out, name=args.name,
                                      version=args.version or "1.0",
                                      overwrite=args.overwrite, progress=not args.quiet)
        print(f"imported {args.path} -> {dest}")
        return EXIT_OK
    from pathlib import Path

    from .errors import PackageError
    from .packages.registry import install_predictor

    folder = Path(args.path)
    if folder.is_dir() and not (folder / "manifest.json").is_file() and \
            not any(folder.rglob("*.pkl")):
        raise PackageError(f"{folder}: no <kernel>.pkl files in the folder, so not an "
                           "nn-Meter predictor release (nor a predictor package: no "
                           "manifest.json); give the folder or zip nn-Meter's release unpacks "
                           "to (<kernel>.pkl files and fusion_rules.json)")
    dest = install_predictor(args.path, name=args.name, version=args.version)
    print(f"imported and installed {args.path} -> {dest}")
    return EXIT_OK


def _cmd_predictors_install(args: argparse.Namespace) -> int:
    from .packages.registry import (NNMETER_PREDICTORS, NNMETER_VERSION, install_predictor,
                                    installed_dir)

    if args.source in NNMETER_PREDICTORS and not args.force:
        # An nn-Meter device already installed is not downloaded again unless asked.
        have = installed_dir() / args.source / (args.version or NNMETER_VERSION)
        if (have / "manifest.json").is_file():
            print(f"{args.source} is already installed in {have}; pass --force to download "
                  "and install it again")
            return EXIT_OK
    dest = install_predictor(args.source, name=args.name, version=args.version)
    print(f"installed {args.source} -> {dest}")
    return EXIT_OK


def _cmd_predictors_calibrate(args: argparse.Namespace) -> int:
    from .builder.calibrate import (calibrate_on_device, check_calibration_name,
                                    measurement_backend, store_calibration)
    from .graph.torch_export import export_onnx
    from .packages.registry import load_predictor_spec

    if (args.space is None) == (not args.models):
        raise UsageError("give either --space (a built-in search space) or --models (ONNX "
                         "files of your networks)")
    if args.name is not None:
        check_calibration_name(args.name)  # before measuring, not when it is stored
    pred = load_predictor_spec(args.predictor)
    missing = [m for m in args.models or () if not os.path.exists(m)]
    if missing:
        raise FileNotFoundError(f"no such model file: {missing[0]}")
    if args.models:
        from .graph import load_graph

        for m in args.models:  # a file the predictor cannot read is named before measuring
            load_graph(m)
    backend = measurement_backend(pred)  # refuses another host before any network is exported
    if args.models:
        from pathlib import Path

        models = [Path(m).read_bytes() for m in args.models]
        space = args.name or "custom"
    else:
        from .search_spaces.sampling import random_networks

        space = args.name or args.space
        nets = list(random_networks(args.space, args.networks, args.seed))
        models = []
        for _, make, shape in _progress(nets, "exporting", not args.quiet):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # NNI's notes on freezing a model space
                models.append(export_onnx(make(), shape).SerializeToString())
    cal, truth = calibrate_on_device(pred, models, space=space, passes=args.passes,
                                     pause_s=args.pause, seed=args.seed,
                                     progress=not args.quiet, backend=backend)
    replaced = space in (pred.package.manifest.get("calibrations") or {})
    dest = store_calibration(pred, space, cal)
    info = cal.info
    print(f"calibration {space!r} of {pred.name} fitted on {len(models)} networks measured "
          f"here ({min(truth):.3f}-{max(truth):.3f} ms): RMSPE "
          f"{info['uncalibrated_rmspe']:.1%} uncalibrated -> {info['fit_rmspe']:.1%} calibrated"
          f"; per kernel {cal.per_kernel_ms * 1e3:+.2f} us, scales "
          + ", ".join(f"{k} {v:.2f}" for k, v in sorted(cal.scales.items()))
          + f", others {cal.default_scale:.2f}")
    print(f"stored in {dest}"
          + (f", replacing the calibration {space!r} stored there before" if replaced else "")
          + f"; use it as {pred.name}@{space} (CLI, score) or "
          f"load_predictor({pred.name!r}, calibration={space!r})")
    return EXIT_OK


def _cmd_predictors_fit(args: argparse.Namespace) -> int:
    """Fit or refine a device package from measured networks (issue 14)."""
    import tempfile
    from pathlib import Path

    from .fitting.device_package import fit_device_package

    if args.out:
        dest = fit_device_package(args.device, args.networks, args.out, base=args.base,
                                  builtin_data=not args.only_mine, version=args.version,
                                  overwrite=args.overwrite)
        print(f"fitted {args.device} -> {dest}")
        _print_fit_figures(dest)
        return EXIT_OK
    from .packages.registry import install_predictor, writable_installed_dir

    writable_installed_dir()  # before the fit, not after it
    with tempfile.TemporaryDirectory() as tmp:
        pkg = fit_device_package(args.device, args.networks, Path(tmp) / args.device,
                                 base=args.base, builtin_data=not args.only_mine,
                                 version=args.version)
        dest = install_predictor(pkg)
    print(f"fitted and installed {args.device} -> {dest} (it now takes precedence over the "
          "built-in package of that name)")
    _print_fit_figures(dest)
    return EXIT_OK


def _print_fit_figures(package: Any) -> None:
    """How close the fitted package comes to the measured latencies it was fitted on, per
    source (``validation.train_by_source`` of the manifest): a CSV in the wrong unit or a
    mistyped latency shows here rather than in a later search."""
    from pathlib import Path

    try:
        by_source = json.loads((Path(package) / "manifest.json").read_text())[
            "validation"]["train_by_source"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    for src, r in sorted(by_source.items(), key=lambda kv: kv[0] != "user"):
        who = "your networks" if src == "user" else f"{src} networks"
        print(f"  {who} ({r['n']}): {r['within_10pct']:.0%} predicted within +-10% of the "
              f"measured latency, RMSPE {r['rmspe']:.1%} (fitted on them, not held out)")


def _add_predictors_fit(psub: Any, common: argparse.ArgumentParser) -> None:
    p = psub.add_parser(
        "fit", parents=[common], formatter_class=_FORMATTER,
        help="fit or refine a device predictor from networks measured on the device",
        description="Fit a predictor package from whole-network latencies: a CSV with columns "
                    "model (ONNX file, relative to the CSV) and latency_ms. For one of "
                    "nn-Meter's four devices your networks refine the built-in measurements; "
                    "for any other device give --base (a predictor whose fusion rules fit "
                    "your runtime). Every row is checked first; bad rows are listed and "
                    "nothing is written.",
        epilog="examples:\n"
               "  nnmeter-nas predictors fit cortexA76cpu_tflite21 --networks measured.csv\n"
               "  nnmeter-nas predictors fit myphone_tflite --networks m.csv "
               "--base cortexA76cpu_tflite21 --out ./myphone\n")
    p.add_argument("device", metavar="DEVICE", help="package name (device)")
    p.add_argument("--networks", required=True, metavar="CSV",
                   help="measured networks: columns model,latency_ms[,input_shape]")
    p.add_argument("--base", default=None, help="take fusion rules and framework from this "
                                                 "predictor (name or package path)")
    p.add_argument("--only-mine", action="store_true",
                   help="fit on your networks alone (not the built-in measurements)")
    p.add_argument("--version", default=None, help="package version (default user-1)")
    p.add_argument("--out", metavar="DIR", help="write the package here instead of installing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(_handler=_cmd_predictors_fit)


def _progress(items: Sequence[Any], desc: str, enabled: bool) -> Any:
    """``items`` with a progress bar when ``enabled``."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, disable=not enabled, dynamic_ncols=True)


# ---------------------------------------------------------------------------- predict
def _cmd_predict(args: argparse.Namespace) -> int:
    from .graph import load_graph

    if not os.path.exists(args.model):
        raise FileNotFoundError(f"no such model file: {args.model}")
    ext = os.path.splitext(args.model)[1].lower()
    if ext not in (".onnx", ".json"):
        raise UsageError(f"MODEL must be an ONNX file (.onnx) or an nn-Meter IR file (.json), "
                         f"not {args.model!r}")
    if ext == ".json" and args.input_shape is not None:
        raise UsageError(f"--input-shape applies to ONNX files; the nn-Meter IR file "
                         f"{args.model} records the shape of every node: leave it out")
    devices = _devices(args.device)
    if not devices:
        raise UsageError("name at least one device: --device NAME (see `nnmeter-nas "
                         "predictors list`)")
    from .parallel.api import resolve_devices

    predictors = resolve_devices("all" if devices == ["all"] else devices)
    graph = load_graph(args.model, input_shape=args.input_shape)
    results = []
    for pred in predictors:
        bd = pred.predict_kernels(graph)
        results.append((pred, bd))
    if args.json:
        print(json.dumps({"model": args.model, "predictions": [
            {"device": p.device, "predictor": p.name, "version": p.version,
             "latency_ms": bd.latency_ms, "in_domain": bd.in_domain,
             "missing_kernel_types": bd.missing_kernel_types,
             **({"weight_mib": bd.weight_mib, "cold_share": bd.cold_share}
                if bd.cold_share is not None else {}),
             **({"kernels": [{"name": k.name, "type": k.kernel_type, "regressor": k.regressor,
                              "latency_ms": k.latency_ms, "status": k.status,
                              "in_domain": k.in_domain, "features": k.features}
                             for k in bd]} if args.kernels else {})}
            for p, bd in results]}, indent=1))
        return EXIT_OK
    width = max(len(p.device) for p, _ in results)
    for pred, bd in results:
        note = ""
        if bd.missing_kernel_types:
            note = f"  (no regressor for {', '.join(bd.missing_kernel_types)}: counted as 0 ms)"
        elif bd.in_domain is False:
            note = "  (some kernels outside the predictor's training range)"
        print(f"{pred.device.ljust(width)}  {bd.latency_ms:10.4f} ms{note}")
        if args.kernels:
            print(bd.table())
            print()
    return EXIT_OK


# ---------------------------------------------------------------------------- lut
def _cmd_lut(args: argparse.Namespace) -> int:
    import warnings

    devices = _devices(args.device)
    if not devices:
        raise UsageError("name at least one device: --device NAME")
    from .parallel.api import resolve_devices
    from .parallel.spaces import resolve_space

    spec = resolve_space(args.space, args.input_shape)
    predictors = resolve_devices("all" if devices == ["all"] else devices)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NNI's torch-version notice
        space = spec.build()
        from .nni.profiler import LatencyProfiler

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            prof = LatencyProfiler(space, predictors, spec.input_shape,
                                   progress=not args.quiet, allow_missing=args.allow_missing)
    for w in caught:
        if "NNI" not in str(w.message) and "not a nn.Module" not in str(w.message):
            print(f"{PROG}: warning: {w.message}", file=sys.stderr)
    path = prof.save(args.out)
    table = prof.table
    n_entries = sum(len(p.combos) for p in table.points)
    print(f"wrote {path}: {len(table.points)} choice points, {n_entries} entries, "
          f"{len(table.devices)} device(s), input {tuple(table.input_shape)}, "
          f"{time.perf_counter() - t0:.1f} s")
    for d in table.devices:
        lo, hi = table.bounds(d)
        print(f"  {d}: fixed {table.fixed_ms[d]:.4f} ms, candidates {lo:.4f} .. {hi:.4f} ms")
    return EXIT_OK


# ---------------------------------------------------------------------------- score
def _read_samples(path: str) -> list[dict]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such samples file: {path}")
    if path.endswith(".jsonl"):
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    if path.endswith(".json"):
        with open(path) as f:
            data = json.load(f)
        if not isinstance(data, list) or not all(isinstance(s, dict) for s in data):
            raise ValueError(f"{path} must hold a JSON list of samples ({{label: value}})")
        return data
    if path.endswith(".csv"):
        import csv

        with open(path, newline="") as f:
            return [dict(row) for row in csv.DictReader(f)]
    raise UsageError(f"--samples must be a .json (list), .jsonl or .csv file, not {path!r}")


def _cmd_score(args: argparse.Namespace) -> int:
    if (args.n is None) == (args.samples is None):
        raise UsageError("give either --n (random candidates, or 'all') or --samples FILE")
    if args.kernels and args.mode != "full":
        raise UsageError("--kernels needs --mode full")
    from .parallel.api import latency_column, score

    samples = _read_samples(args.samples) if args.samples else None
    if samples is not None and args.samples.endswith(".csv"):
        samples = _coerce_csv_samples(args.space, samples)
    in_process = True if args.in_process else (False if args.ray else None)
    t0 = time.perf_counter()
    df = score(args.space, samples, n=args.n, devices=_devices(args.devices) or "all",
               mode=args.mode, address=args.address, num_workers=args.workers, seed=args.seed,
               out=args.out, input_shape=args.input_shape, kernels=args.kernels,
               table=args.table, chunk_size=args.chunk_size, in_process=in_process,
               overwrite=args.overwrite, progress=not args.quiet)
    seconds = time.perf_counter() - t0
    info = df.attrs.get("nnmeter_nas", {})
    devices = [c[:-3] for c in df.columns if c.endswith("_ms")]
    print(f"wrote {args.out}: {len(df)} candidates x {len(devices)} device(s), mode "
          f"{args.mode}, {info.get('backend', '?')}, {seconds:.1f} s "
          f"({len(df) / max(seconds, 1e-9):,.0f} candidates/s); seed {info.get('seed')}")
    for d in devices:
        col = df[latency_column(d)]
        print(f"  {d}: min {col.min():.4f}  median {col.median():.4f}  max {col.max():.4f} ms")
    if len(df):
        print(f"  flops: median {df['flops'].median():.4g}, params: median "
              f"{df['params'].median():.4g}")
    return EXIT_OK


def _coerce_csv_samples(space: str, samples: list[dict]) -> list[dict]:
    """CSV cells are strings: map them back to the space's values (``"3"`` -> ``3``)."""
    import warnings

    from .nni.choice_points import find_choice_points
    from .parallel.spaces import resolve_space

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        layout = find_choice_points(resolve_space(space).build())
    by_text = {label: {str(v): v for v in vs} for label, vs in layout.label_values.items()}
    out = []
    for s in samples:
        out.append({k: by_text.get(k, {}).get(v, v) for k, v in s.items()
                    if k in by_text})
    return out


# ---------------------------------------------------------------------------- parser
# One function per command (group) adds its parser and handler; build_parser calls them. A new
# `predictors` action is one entry in PREDICTOR_ACTIONS, a new command one call in build_parser.
_EXAMPLES_MAIN = (
    "examples:\n"
    "  nnmeter-nas predictors list\n"
    "  nnmeter-nas predictors install cortexA76cpu_tflite21\n"
    "  nnmeter-nas predict model.onnx --device cortexA76cpu_tflite21 --kernels\n"
    "  nnmeter-nas lut --space spos --device cortexA76cpu_tflite21 --out spos.json\n"
    "  nnmeter-nas score --space spos --devices cortexA76cpu_tflite21,adreno640gpu_tflite21 "
    "--n 100000 --out scores.parquet\n"
    "\n"
    "exit status: 0 success, 1 runtime error, 2 usage error; --debug shows tracebacks.\n")

#: ``add(subparsers, common)``: adds one command to ``subparsers``; ``common`` is the parent
#: parser holding the options every command takes (``--debug``).
AddCommand = Callable[[Any, argparse.ArgumentParser], None]


def _common_options() -> argparse.ArgumentParser:
    """The parent parser of every command: the options it takes after its name."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of errors")
    return common


def _command(subparsers: Any, name: str, common: argparse.ArgumentParser,
             handler: Callable[[argparse.Namespace], int], **texts: Any
             ) -> argparse.ArgumentParser:
    """Add command ``name`` (``help``, ``description``, ``epilog`` in ``texts``), taking the
    common options and run by ``handler``; returns its parser for the command's own options."""
    p = subparsers.add_parser(name, parents=[common], formatter_class=_FORMATTER, **texts)
    p.set_defaults(_handler=handler)
    return p


# predictors -----------------------------------------------------------------
def _add_predictors_list(actions: Any, common: argparse.ArgumentParser) -> None:
    p = _command(actions, "list", common, _cmd_predictors_list,
                 help="installed, built-in and downloadable predictors",
                 description="List predictors: installed (user cache), built-in and "
                             "downloadable; 'in use' marks the one each name loads.",
                 epilog="examples:\n  nnmeter-nas predictors list\n"
                        "  nnmeter-nas predictors list --json\n")
    p.add_argument("--json", action="store_true", help="print JSON")


def _add_predictors_import(actions: Any, common: argparse.ArgumentParser) -> None:
    p = _command(actions, "import", common, _cmd_predictors_import,
                 help="convert an nn-Meter predictor (zip or folder) and install it",
                 description="Convert an nn-Meter release (<kernel>.pkl files + "
                             "fusion_rules.json, zipped or in a folder) into a package "
                             "and install it in the user cache, or write it to --out.",
                 epilog="examples:\n"
                        "  nnmeter-nas predictors import cortexA76cpu_tflite21.zip\n"
                        "  nnmeter-nas predictors import ./adreno640gpu_tflite21/ "
                        "--out ./packages/adreno640\n")
    p.add_argument("path", metavar="PATH", help="nn-Meter predictor zip or folder")
    p.add_argument("--name", help="predictor name (default: from the release)")
    p.add_argument("--version", help="predictor version (default 1.0)")
    p.add_argument("--out", metavar="DIR", help="write the package here instead of installing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_predictors_install(actions: Any, common: argparse.ArgumentParser) -> None:
    p = _command(actions, "install", common, _cmd_predictors_install,
                 help="install a predictor from a URL, a file or an nn-Meter device name",
                 description="Install a predictor package (our format or an nn-Meter "
                             "release; zip or folder) from a URL or a local path, or "
                             "download one of nn-Meter's devices by name.",
                 epilog="examples:\n"
                        "  nnmeter-nas predictors install cortexA76cpu_tflite21\n"
                        "  nnmeter-nas predictors install ./mydevice-1.0.zip\n"
                        "  nnmeter-nas predictors install https://example.org/p.zip\n")
    p.add_argument("source", metavar="URL_OR_FILE_OR_DEVICE")
    p.add_argument("--name", help="name to install under (nn-Meter releases)")
    p.add_argument("--version", help="version to install under (nn-Meter releases)")
    p.add_argument("--force", action="store_true",
                   help="download an nn-Meter device again even if it is installed (a file or "
                        "URL always replaces the installed package of its name and version)")


def _add_predictors_calibrate(actions: Any, common: argparse.ArgumentParser) -> None:
    p = _command(
        actions, "calibrate", common, _cmd_predictors_calibrate,
        help="measure networks of a search space here and store a per-space calibration",
        description="Fit a per-space calibration of a predictor the builder made for this "
                    "host: measure random networks of a built-in search space (--space) or "
                    "your own ONNX networks of one (--models) with the predictor's own "
                    "backend settings, fit scale[kernel type] * ms + per-kernel ms, and store "
                    "it in the package (a built-in package is first installed into the user "
                    "cache). The host must be the predictor's build host.",
        epilog="examples:\n"
               "  nnmeter-nas predictors calibrate x86avx512cpu_onnxruntime --space spos\n"
               "  nnmeter-nas predictors calibrate x86avx2cpu_onnxruntime --space nb201 "
               "--networks 40\n"
               "  nnmeter-nas predictors calibrate ./mydevice --models nets/*.onnx "
               "--name myspace\n")
    p.add_argument("predictor", metavar="PREDICTOR", help="predictor name or package path")
    p.add_argument("--space", choices=["spos", "spos-small", "nb201"],
                   help="measure random networks of this built-in search space")
    p.add_argument("--models", nargs="+", metavar="ONNX",
                   help="measure these ONNX files (networks of your search space)")
    p.add_argument("--name", default=None,
                   help="calibration name (default: the space, or 'custom' with --models)")
    p.add_argument("--networks", type=_positive, default=30,
                   help="random networks to measure with --space (default 30)")
    p.add_argument("--passes", type=_positive, default=10,
                   help="interleaved visits per network; the median is its latency (default 10)")
    p.add_argument("--pause", type=_seconds, default=1.0, metavar="SECONDS",
                   help="pause between passes, to spread them over the machine's drift")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _build_unavailable(reason: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        raise RuntimeError(f"`predictors build` is not available in this installation "
                           f"({reason}); the predictor builder ships with nnmeter_nas.builder")
    return run


def _add_predictors_build(actions: Any, common: argparse.ArgumentParser, wanted: bool) -> None:
    """The builder's own ``build`` command (:func:`nnmeter_nas.builder.cli.add_build_parser`)
    when the command line asks for ``predictors build`` (so other commands never import the
    builder), else a placeholder that explains."""
    reason = "not requested"
    if wanted:
        try:
            from .builder.cli import add_build_parser, run_build
        except ImportError as exc:
            reason = f"nnmeter_nas.builder.cli cannot be imported: {exc}"
        else:
            add_build_parser(actions, parents=[common]).set_defaults(_handler=run_build)
            return
    p = _command(actions, "build", common, _build_unavailable(reason),
                 help="measure kernels on a device and fit a new predictor",
                 description="Build a predictor package: measure kernels with a backend, "
                             "detect fusion rules, fit regressors.\n\n"
                             "Run `nnmeter-nas predictors build --help` for its options.")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


#: The ``predictors`` actions in the order ``nnmeter-nas predictors --help`` lists them (``build``
#: comes last, from the builder); add one by appending its ``add(actions, common)``.
PREDICTOR_ACTIONS: list[AddCommand] = [
    _add_predictors_list, _add_predictors_import, _add_predictors_install,
    _add_predictors_calibrate, _add_predictors_fit,
]


def _add_predictors(commands: Any, common: argparse.ArgumentParser, with_builder: bool) -> None:
    group = commands.add_parser(
        "predictors", parents=[common], formatter_class=_FORMATTER,
        help="list, import, install, calibrate, fit or build latency predictors",
        description="Manage latency predictors (one package per device).",
        epilog="examples:\n"
               "  nnmeter-nas predictors list\n"
               "  nnmeter-nas predictors import ~/Downloads/cortexA76cpu_tflite21.zip\n"
               "  nnmeter-nas predictors install cortexA76cpu_tflite21\n"
               "  nnmeter-nas predictors install https://example.org/mydevice-1.0.zip\n"
               "  nnmeter-nas predictors calibrate x86avx512cpu_onnxruntime --space spos\n"
               "  nnmeter-nas predictors fit myphone_tflite --networks m.csv "
               "--base cortexA76cpu_tflite21 --out ./myphone\n"
               "  nnmeter-nas predictors build --help\n")
    actions = group.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    for add in PREDICTOR_ACTIONS:
        add(actions, common)
    _add_predictors_build(actions, common, wanted=with_builder)


# predict, lut, score -----------------------------------------------------------
def _add_predict(commands: Any, common: argparse.ArgumentParser) -> None:
    p = _command(
        commands, "predict", common, _cmd_predict,
        help="predict a model's latency on devices",
        description="Predict the inference latency (ms) of an ONNX model or an nn-Meter IR "
                    "graph (.json) on one or more devices.",
        epilog="examples:\n"
               "  nnmeter-nas predict resnet18.onnx --device cortexA76cpu_tflite21\n"
               "  nnmeter-nas predict model.onnx --device cortexA76cpu_tflite21,"
               "adreno640gpu_tflite21 --input-shape 1,3,224,224\n"
               "  nnmeter-nas predict model.json --device all --kernels --json\n"
               "  nnmeter-nas predict spos.onnx --device x86avx512cpu_onnxruntime@spos\n")
    p.add_argument("model", metavar="MODEL", help="MODEL.onnx or nn-Meter IR MODEL.json")
    p.add_argument("--device", "-d", action="append", metavar="D",
                   help="predictor name or package path, NAME@CALIBRATION for one of its "
                        "per-space calibrations; repeat or comma-separate; 'all' for every "
                        "installed/built-in one")
    p.add_argument("--input-shape", type=_input_shape, metavar="N,C,H,W",
                   help="input shape for models with dynamic dimensions (e.g. 1,3,224,224)")
    p.add_argument("--kernels", action="store_true", help="show the per-kernel breakdown")
    p.add_argument("--json", action="store_true", help="print JSON")


def _add_lut(commands: Any, common: argparse.ArgumentParser) -> None:
    p = _command(
        commands, "lut", common, _cmd_lut,
        help="build the latency lookup table of a search space",
        description="Build the latency lookup table of an NNI model space on one or more "
                    "devices (fixed part + one latency per choice), for LatencyProfiler and "
                    "`score --table`.",
        epilog="spaces: spos (224x224), spos-small (32x32), toy (16x16), or MODULE:CLASS of\n"
               "an NNI 3 model space (give --input-shape unless the class has an input_shape\n"
               "attribute). nb201 cannot be tabulated (its freeze lays networks out anew):\n"
               "score it with `score --mode full`.\n\n"
               "examples:\n"
               "  nnmeter-nas lut --space spos --device cortexA76cpu_tflite21 --out spos.json\n"
               "  nnmeter-nas lut --space spos-small --device all --out spos_small_all.json\n"
               "  nnmeter-nas lut --space mypkg.spaces:MySpace --input-shape 1,3,64,64 "
               "--device cortexA76cpu_tflite21 --out t.json\n")
    p.add_argument("--space", required=True, help="spos, spos-small, nb201, toy or MODULE:CLASS")
    p.add_argument("--device", "-d", action="append", metavar="D",
                   help="predictor name or path; repeat or comma-separate; 'all'")
    p.add_argument("--out", required=True, metavar="TABLE.json", help="where to write the table")
    p.add_argument("--input-shape", type=_input_shape, metavar="N,C,H,W",
                   help="input shape (default: the space's)")
    p.add_argument("--allow-missing", action="store_true",
                   help="count kernels a device has no regressor for as 0 ms, with a warning "
                        "(default: refuse, naming them)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_score(commands: Any, common: argparse.ArgumentParser) -> None:
    p = _command(
        commands, "score", common, _cmd_score,
        help="score many candidates of a space on many devices (Ray)",
        description="Latency on each device (ms), FLOPs and parameters of many candidates of a "
                    "search space, in parallel with Ray, written incrementally to Parquet or "
                    "CSV. Rerunning the same command resumes an interrupted run.\n\n"
                    "mode table: one lookup table per device, then vectorised lookups "
                    "(a sum per candidate).\n"
                    "mode full: every candidate frozen, read and predicted kernel by kernel "
                    "(exact; far slower: docs/results.md, 'Ray scoring', has both rates).",
        epilog="examples:\n"
               "  nnmeter-nas score --space spos --devices cortexA76cpu_tflite21,"
               "adreno640gpu_tflite21 --n 100000 --out scores.parquet\n"
               "  nnmeter-nas score --space nb201 --devices cortexA76cpu_tflite21,"
               "adreno640gpu_tflite21 --n 20 --mode full --out nb201.csv\n"
               "  nnmeter-nas score --space spos-small --devices all --n 10 --mode full "
               "--out full.parquet\n"
               "  nnmeter-nas score --space spos --devices cortexA76cpu_tflite21 --samples "
               "archs.json --mode full --kernels --out k.parquet\n\n"
               "Small jobs run in this process; bigger ones start a local Ray with all cores\n"
               "(--workers N), or join a cluster with --address auto | ray://HOST:10001.\n")
    p.add_argument("--space", required=True, help="spos, spos-small, nb201, toy or MODULE:CLASS")
    p.add_argument("--devices", "--device", "-d", action="append", metavar="D",
                   help="'all' (default: installed and built-in predictors), names or paths; "
                        "repeat or comma-separate")
    p.add_argument("--n", type=_count, metavar="N",
                   help="number of uniformly random candidates, or 'all' (small spaces)")
    p.add_argument("--samples", metavar="FILE",
                   help="candidates to score: JSON list / JSONL of {label: value}, or CSV with "
                        "one column per label")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="results file, *.parquet or *.csv (written incrementally, resumable)")
    p.add_argument("--mode", choices=["table", "full"], default="table",
                   help="table (default) or full")
    p.add_argument("--address", metavar="ADDR",
                   help="Ray cluster to join: auto or ray://HOST:PORT (default: local)")
    p.add_argument("--workers", type=_positive, metavar="N",
                   help="Ray workers (default: all CPUs of the machine or cluster)")
    p.add_argument("--seed", type=int, help="random seed of --n (default: random; a resumed run "
                                            "reuses its seed)")
    p.add_argument("--input-shape", type=_input_shape, metavar="N,C,H,W",
                   help="input shape (default: the space's)")
    p.add_argument("--table", metavar="TABLE.json",
                   help="table mode: use this lookup table (from `nnmeter-nas lut`)")
    p.add_argument("--kernels", action="store_true",
                   help="full mode: add a per-kernel breakdown column per device")
    p.add_argument("--chunk-size", type=_positive, metavar="N",
                   help="candidates per unit of work (default 65536 table, 8 full)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--in-process", action="store_true", help="never start Ray")
    g.add_argument("--ray", action="store_true", help="always use Ray, even for small jobs")
    p.add_argument("--overwrite", action="store_true",
                   help="start over instead of resuming / refusing an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


# the program --------------------------------------------------------------------
def _asks_for_build(argv: Sequence[str]) -> bool:
    return "predictors" in argv and "build" in argv[list(argv).index("predictors") + 1:]


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser (``argv`` only decides whether the builder's options are loaded)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from . import __version__

    parser = _Parser(prog=PROG, formatter_class=_FORMATTER,
                     description="Kernel-level latency prediction for edge devices and "
                                 "hardware-aware NAS with NNI 3.",
                     epilog=_EXAMPLES_MAIN)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="show the full traceback of errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    common = _common_options()
    _add_predictors(commands, common, with_builder=_asks_for_build(argv))
    _add_predict(commands, common)
    _add_lut(commands, common)
    _add_score(commands, common)
    return parser


def _one_line(exc: BaseException) -> str:
    """The error's message for ``nnmeter-nas: error: ...``: each line's whitespace collapsed;
    a message of several lines (a list of bad rows) keeps one item per line, indented."""
    lines = [" ".join(ln.split()) for ln in str(exc).splitlines()]
    text = "\n  ".join(ln for ln in lines if ln)
    if isinstance(exc, FileNotFoundError) and exc.filename and not text.startswith("no such"):
        text = f"no such file or directory: {exc.filename}"
    if isinstance(exc, KeyError) and text.startswith("'") and text.endswith("'"):
        text = text[1:-1]
    return text or type(exc).__name__


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Warnings as ``nnmeter-nas: warning: ...`` (one line), not Python's ``FILE:LINE:
    Category: ...`` with a line of our source; ``--debug`` keeps Python's format."""
    text = " ".join(str(message).split())
    try:
        print(f"{PROG}: warning: {text}", file=sys.stderr if file is None else file)
    except OSError:
        pass


def _is_usage_error(exc: BaseException) -> bool:
    """Bad arguments found after parsing: a :class:`~nnmeter_nas.errors.UsageError`, such as a
    search-space name that does not resolve (``SpaceSpecError``: a typo in --space is a usage
    error, not a runtime failure)."""
    return isinstance(exc, UsageError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 runtime error, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.showwarning = _show_warning
            status = args._handler(args)
        return EXIT_OK if status is None else int(status)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:
        if debug:
            raise
        if not _is_usage_error(exc):
            print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_ERROR
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
