"""A device package from a :class:`~.device_fit.DeviceLatencyFit`, and the one-call user API.

:func:`write_device_package` writes one :class:`~nnmeter_nas.regressors.KernelCostModel` per
kernel type with its domain (the ranges of its cost terms over the configurations the
measurements held: :meth:`~nnmeter_nas.regressors.KernelCostModel.in_domain`), each type's
``feature_range`` (their box, for information), the fitted source factors and the validation
figures.

:func:`fit_device_package` is what a user calls with networks of their own measured on their
device (a CSV of ONNX paths and latencies, :func:`read_networks_csv`), alone or with the
built-in measurements of nn-Meter's four devices; ``nnmeter-nas predictors fit`` runs it.
"""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import MeasurementDataError
from ..features.extract import FEATURE_NAMES
from ..kernels.fusion_rules import FusionRules
from ..packages.format import check_replaceable, feature_range_of, write_package
from .device_fit import (BORROWED_SOURCES, FREE_TYPES, MIN_CALIBRATING_FACTOR,
                         DeviceLatencyFit, NetworkSample, factor_group)
from .lookup_tree import empty_feature_range
from .nb201_package import FEATURE_SET

#: multi-6: the Adreno 630 refitted with the "shared-conv-launch" term set (issue 14 round 6);
#: the other three devices' coefficients are multi-5's (multi-5: the VPU refitted with the
#: "bandwidth" term set, round 4; the Cortex-A76 and Adreno 640 are multi-4's).
PACKAGE_VERSION = "multi-6"

#: Kernel types every package gets a cost model for (those the data never held: their
#: family's shared terms, an empty feature range, always ``in_domain=False``).
KERNEL_TYPES = tuple(sorted(set(FEATURE_NAMES) | {"mul", "sigmoid", "hsigmoid"}))

METHOD = (
    "Kernel cost models fitted to whole-network latencies (nnmeter_nas.fitting.device_fit). "
    "Each measured network is split into kernels with this package's fusion rules; its latency "
    "is modelled as network_overhead_ms + the sum of its kernels' costs. A kernel's cost is a "
    "non-negative sum of monomial terms in its shape (launch; MACs per kernel-size class; "
    "MACs/cin and MACs/cout for the lost efficiency of thin layers; elements read and written; "
    "weights), so it never decreases as a kernel grows and keeps growing in proportion to its "
    "work far outside the data (no plateau). Sources measured with another runtime on the same "
    "hardware get their own fitted factor and overhead (source.factors). Coefficients are "
    "fitted by bounded least squares on relative errors, each source's rows sharing one total "
    "weight; a bounded (x1/1.5 to x1.5) ridge-penalised correction per measured configuration "
    "of the device's own networks refines the fit where the data pin it down and applies to "
    "those exact configurations only.")


def _n_features(reg: str) -> int:
    return len(FEATURE_NAMES.get(reg, ("hw", "cin")))


def kernel_ranges(samples: Sequence[NetworkSample], fit: DeviceLatencyFit | None = None
                  ) -> dict[str, tuple[np.ndarray, dict]]:
    """``{regressor: (feature rows seen, {source: n networks})}`` over the samples; rows of a
    borrowed source (another device's, :data:`.device_fit.BORROWED_SOURCES`) are counted by
    source but never enter the rows seen (they do not calibrate a kernel on this device), nor
    do the kernels of a group whose factor ``fit`` fitted below
    :data:`.device_fit.MIN_CALIBRATING_FACTOR` for their source (a runtime that fused them
    away measured next to nothing of them)."""
    factors = getattr(fit, "factors_", None) or {}
    rows: dict[str, set] = {}
    srcs: dict[str, Counter] = {}
    for s in samples:
        for reg in {c[0] for c in s.configs}:
            srcs.setdefault(reg, Counter())[s.source] += 1
        if s.source in BORROWED_SOURCES:
            continue
        f = factors.get(s.source, {})
        for cfg in s.configs:
            if f.get(factor_group(cfg), 1.0) < MIN_CALIBRATING_FACTOR:
                continue
            reg, x = cfg
            rows.setdefault(reg, set()).add(x)
    return {r: (np.asarray(sorted(v), dtype=float), dict(srcs[r])) for r, v in rows.items()}


def write_device_package(dest: str | Path, fit: DeviceLatencyFit,
                         samples: Sequence[NetworkSample], *, name: str, device: str,
                         framework: str, fusion_rules: FusionRules | Mapping,
                         description: str, hardware: str = "",
                         version: str = PACKAGE_VERSION,
                         validation: Mapping[str, Any] | None = None,
                         data: Mapping[str, Any] | None = None,
                         built_by: str = "", overwrite: bool = True) -> Path:
    """Write the package of a fitted :class:`DeviceLatencyFit` (atomically)."""
    seen = kernel_ranges(samples, fit)
    types = sorted((set(KERNEL_TYPES) | set(seen)) - set(FREE_TYPES))
    regs = fit.regressors({r: (seen[r][0].shape[1] if r in seen else _n_features(r))
                           for r in types}, meta={"device": device, "package_version": version})
    kernel_info = {}
    for r in types:
        # calibrated where the cost terms were measured (KernelCostModel.in_domain)
        regs[r].set_domain(seen[r][0] if r in seen else np.zeros((0, regs[r].n_features)))
        if r in seen:
            X, by_source = seen[r]
            kernel_info[r] = {"feature_range": feature_range_of(X), "n_train": int(len(X)),
                              "n_train_unit": "distinct kernel configurations",
                              "networks_by_source": by_source,
                              "n_corrected": int(regs[r].corr_factor.size)}
        else:
            kernel_info[r] = {"feature_range": empty_feature_range(regs[r].n_features),
                              "n_train": 0, "calibrated": False,
                              "note": "no measured network held this kernel type: its cost is "
                                      "its family's shared terms, never calibrated; the empty "
                                      "feature range flags every such kernel in_domain=False"}
    source = {"kind": "fitted from whole-network measurements", "method": METHOD,
              "data": dict(data or {}),
              "n_networks_by_source": dict(Counter(s.source for s in samples
                                                   if s.whole_network)),
              "n_operators_by_source": dict(Counter(s.source for s in samples
                                                    if not s.whole_network)),
              "factors": {s: {"meaning": "latency this source measured = factor x this "
                                         "device's kernel sum + its own overhead",
                              "factor": f, "overhead_ms": fit.overhead_ms_.get(s, 0.0)}
                          for s, f in fit.factors_.items()},
              "alternation": {"rounds": int(fit.n_alternations) if fit.factors_ else 1,
                              "last_factor_change": float(fit.factor_change_),
                              "converged": bool(fit.converged_),
                              "meaning": "the fit alternates between kernel costs and the "
                                         "foreign sources' factors; last_factor_change is "
                                         "the largest relative change of a factor in the "
                                         "last round (converged: <= FACTOR_TOL)"},
              "fit": {k: v for k, v in fit.__dict__.items()
                      if not k.endswith("_") and not k.startswith("_")},
              "terms_not_fitted": {"keys": list(getattr(fit, "unidentified_", [])),
                                   "why": "a kernel type's own size-dependent term whose "
                                          "measured values span less than min_excess_span: "
                                          "kept at 0, the type scales with its family's "
                                          "shared terms"},
              "built_by": built_by, "docs": "docs/four_devices.md"}
    extra = {"network_overhead_ms": float(fit.overhead_ms_.get("native", 0.0)),
             "network_overhead_note": "a constant per inference that the fit attributes to no "
                                      "kernel; the engine adds it once per network",
             "validation": dict(validation or {}), "hardware": hardware}
    return write_package(dest, name=name, version=version, device=device, framework=framework,
                         regressors=regs, fusion_rules=fusion_rules, feature_set=FEATURE_SET,
                         description=description, kernel_info=kernel_info,
                         free_kernel_types=list(FREE_TYPES), source=source, extra=extra,
                         overwrite=overwrite)


def read_networks_csv(path: str | Path, rules: FusionRules, *,
                      source: str = "user") -> list[NetworkSample]:
    """Measured networks from a CSV with columns ``model`` (an ONNX file, relative to the CSV's
    folder or absolute) and ``latency_ms`` (> 0); optional ``input_shape`` (``1x3x224x224``)
    for ONNX files without static shapes.

    Every row is checked before anything is fitted; all bad rows are reported together in one
    :class:`~nnmeter_nas.errors.MeasurementDataError` naming the file, the row number and what
    to fix (missing file, non-positive or non-numeric latency, a row with more or fewer fields
    than the header, a malformed input_shape, a network listed twice, a network that fails
    to load)."""
    from ..graph import load_graph
    from .configs import kernel_configs

    path = Path(path)
    if not path.is_file():
        what = "a directory, not a CSV file" if path.is_dir() else "no such file"
        raise MeasurementDataError(f"{path}: {what} (give a CSV with columns "
                                   "model,latency_ms)")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            if "model" not in cols or "latency_ms" not in cols:
                raise MeasurementDataError(f"{path}: needs the columns 'model' (ONNX file) "
                                           f"and 'latency_ms'; it has {cols}")
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise MeasurementDataError(f"{path}: not a text CSV (byte {exc.start} is not UTF-8); "
                                   "give a UTF-8 text file with columns model,latency_ms"
                                   ) from None
    if not rows:
        raise MeasurementDataError(f"{path}: no measured networks in the file")
    errors, out = [], []
    first_row: dict[tuple, int] = {}
    for i, row in enumerate(rows, start=2):  # row 1 is the header
        where = f"{path}, row {i}"
        extra = row.get(None) or []  # csv.DictReader: fields past the header's
        n_fields = len(cols) + len(extra) if extra else sum(v is not None for v in
                                                             row.values())
        if n_fields != len(cols):
            hint = ("; write input_shape as 1x3x224x224 (a comma starts a new field)"
                    if "input_shape" in cols and extra else "")
            errors.append(f"{where}: {n_fields} fields, the header has {len(cols)}{hint}")
            continue
        model = (row.get("model") or "").strip()
        try:
            ms = float(row.get("latency_ms") or "nan")
        except ValueError:
            errors.append(f"{where}: latency_ms {row.get('latency_ms')!r} is not a number")
            continue
        if not np.isfinite(ms) or ms <= 0:
            errors.append(f"{where}: latency_ms must be a positive number of ms, got "
                          f"{row.get('latency_ms')!r}")
            continue
        file = Path(model)
        if not file.is_absolute():
            file = path.parent / file
        if model and file.is_dir():
            errors.append(f"{where}: model {model!r} is a directory, not an ONNX file "
                          f"({file})")
            continue
        if not model or not file.is_file():
            errors.append(f"{where}: model file {model!r} not found (looked for {file})")
            continue
        shape = (row.get("input_shape") or "").strip()
        dims = _csv_input_shape(shape)
        if shape and dims is None:
            errors.append(f"{where}: input_shape {shape!r} is not positive ints written like "
                          "1x3x224x224")
            continue
        key = (str(file.resolve()), dims)
        if key in first_row:
            errors.append(f"{where}: {model} is listed again (row {first_row[key]}); list "
                          "each network once (the median of repeated measurements)")
            continue
        first_row[key] = i
        try:
            graph = load_graph(str(file), input_shape=list(dims) if dims else None)
            cnt = kernel_configs(graph, rules, feature_set=FEATURE_SET)
        except Exception as exc:  # any failure to read this network is this row's error
            errors.append(f"{where}: {model} could not be loaded: {type(exc).__name__}: {exc}")
            continue
        out.append(NetworkSample(model, source, cnt, ms))
    if errors:
        raise MeasurementDataError(f"{len(errors)} bad row(s) in {path}; fix or remove them, "
                                   "nothing was fitted:\n  " + "\n  ".join(errors))
    return out


def _csv_input_shape(text: str) -> tuple[int, ...] | None:
    """``"1x3x224x224"`` (or ``"1,3,224,224"`` in a quoted cell) -> ``(1, 3, 224, 224)``;
    None for an empty cell or anything that is not positive ints."""
    parts = [p.strip() for p in text.lower().replace(",", "x").split("x")]
    if not text or not all(p.isdigit() for p in parts):
        return None
    dims = tuple(int(p) for p in parts)
    return dims if all(d > 0 for d in dims) else None


def fit_device_package(device: str, networks: str | Path | Sequence[NetworkSample] | None,
                       dest: str | Path, *, builtin_data: bool = True,
                       base: str | Path | None = None, version: str | None = None,
                       overwrite: bool = False, fit_params: Mapping[str, Any] | None = None
                       ) -> Path:
    """Fit (or refine) the package of ``device`` from measured networks and write it to
    ``dest``; returns ``dest``.

    Parameters
    ----------
    device : str
        Package name. One of nn-Meter's four devices (``cortexA76cpu_tflite21``...) gets its
        fusion rules and, with ``builtin_data``, the built-in measurements as well (NAS-Bench-201
        training split, nn-Meter's reference networks, Pixel 4 networks where they apply), so
        your networks refine it; any other name needs ``base``.
    networks : path or list of NetworkSample or None
        Your measured networks: a CSV (:func:`read_networks_csv`) or samples.
    dest : path
        Package directory to write (atomically; an existing one only with ``overwrite``).
    builtin_data : bool, default=True
        For one of the four devices, fit on its built-in measurements too.
    base : str or path, default=None
        A predictor (name or package path) whose fusion rules and framework the new package
        takes; default: the four devices' own.
    version : str, default=None
        The package's version (None: ``"user-1"``).
    overwrite : bool, default=False
        Replace an existing ``dest``.
    fit_params : dict, default=None
        Keyword arguments of :class:`DeviceLatencyFit`.

    Returns
    -------
    pathlib.Path
        ``dest``, loadable with ``load_predictor(path=dest)``.

    Raises
    ------
    MeasurementDataError
        For bad rows of the CSV (all named at once, nothing written), an existing ``dest``
        or an unknown device without ``base``.
    PackageError
        ``overwrite`` and ``dest`` is neither a package folder nor an empty folder (checked
        before fitting), or ``dest`` cannot be written.

    Examples
    --------
    Four networks measured on the device (here small convolution stacks with made-up
    latencies), listed in a CSV beside their ONNX files:

    >>> import tempfile, onnx, torch
    >>> from pathlib import Path
    >>> from nnmeter_nas import load_predictor
    >>> from nnmeter_nas.fitting import fit_device_package
    >>> from nnmeter_nas.graph.torch_export import export_onnx
    >>> work = Path(tempfile.mkdtemp())
    >>> rows = ["model,latency_ms"]
    >>> for c in (8, 16, 32, 64):
    ...     net = torch.nn.Sequential(torch.nn.Conv2d(3, c, 3, padding=1), torch.nn.ReLU(),
    ...                               torch.nn.Conv2d(c, c, 1), torch.nn.ReLU())
    ...     onnx.save(export_onnx(net, (1, 3, 56, 56)), work / f"conv{c}.onnx")
    ...     rows.append(f"conv{c}.onnx,{0.05 * c}")
    >>> _ = (work / "measured.csv").write_text("\\n".join(rows))
    >>> dest = fit_device_package("cortexA76cpu_tflite21", work / "measured.csv",
    ...                           work / "my_a76", builtin_data=False)
    >>> predictor = load_predictor(path=dest)
    >>> predictor.version
    'user-1'
    >>> abs(predictor.predict(work / "conv32.onnx") / 1.6 - 1) < 0.2   # measured 1.6 ms
    True
    """
    from .nb201_devices import DEVICES

    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise MeasurementDataError(f"{dest} already exists; choose another destination or "
                                   "pass overwrite=True (--overwrite)")
    check_replaceable(dest)  # before the fit: --overwrite never replaces a user's own files
    if base is not None:
        from ..packages.registry import load_predictor_spec

        pkg = load_predictor_spec(str(base)).package
        rules, framework = pkg.fusion_rules, pkg.manifest.get("framework", "")
        hardware = pkg.manifest.get("hardware", "")
    elif device in DEVICES:
        spec = DEVICES[device]
        rules, framework, hardware = spec.rules(), spec.framework, spec.hardware
    else:
        from ..packages.registry import did_you_mean

        raise MeasurementDataError(
            f"device {device!r} is not one of nn-Meter's four ({sorted(DEVICES)});"
            f"{did_you_mean(device, DEVICES)} For another device give base= (--base) a "
            "predictor whose fusion rules fit your runtime")
    samples: list[NetworkSample] = []
    if networks is not None:
        samples += (read_networks_csv(networks, rules) if isinstance(networks, (str, Path))
                    else list(networks))
    params = dict(fit_params or {})
    if builtin_data and device in DEVICES and base is None:
        # the same samples and settings as the shipped package (benchmarks/four_devices.py)
        from .builtin import builtin_training_samples
        from .builtin import fit_params as builtin_fit_params

        samples += builtin_training_samples(device, missing_ok=True)
        params = {**builtin_fit_params(device), **params}
    if not samples:
        raise MeasurementDataError(f"no measured networks to fit {device!r} on")
    fit = DeviceLatencyFit(**params).fit(samples)
    pred = fit.predict(samples)
    y = np.array([s.latency_ms for s in samples])
    from .metrics import accuracy_report

    sources = np.array([s.source if s.whole_network else "" for s in samples])
    validation = {"train": accuracy_report(pred, y),
                  "train_by_source": {src: accuracy_report(pred[sources == src],
                                                           y[sources == src])
                                      for src in sorted(set(sources) - {""})},
                  "note": "fit on all the networks listed in source.n_networks_by_source; "
                          "figures are on those same networks (not held out)"}
    used = dict(Counter(s.source if s.whole_network else f"{s.source} operators"
                        for s in samples))
    counts = ", ".join(f"{k}: {v}" for k, v in used.items())
    desc = (f"Latency of {device} ({hardware or framework}) fitted by nnmeter-nas predictors "
            f"fit on {len(samples)} measured networks ({counts}). "
            "A kernel whose cost terms lie within the ranges the measured kernels of its type "
            "gave them is calibrated; outside, the cost terms extrapolate in proportion to the "
            "work (flagged in_domain=False).")
    return write_device_package(dest, fit, samples, name=device, device=device,
                                framework=framework, fusion_rules=rules, description=desc,
                                hardware=hardware, version=version or "user-1",
                                validation=validation, data=used,
                                built_by="nnmeter_nas.fitting.fit_device_package",
                                overwrite=overwrite)
