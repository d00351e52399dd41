"""Settings tried for the two Adreno GPUs (and a few for the Cortex-A76 and the VPU) in issue
14's rounds 3 and 4, against the shipped ones: each variant changes one thing in the built-in
fit (:mod:`nnmeter_nas.fitting.builtin`: a setting of :class:`DeviceLatencyFit`, the rows
fitted on, the term set, or one more cost term of a kernel type) and is scored as
``benchmarks/four_devices.py`` scores the packages.

    python benchmarks/four_devices_variants.py            # every variant
    python benchmarks/four_devices_variants.py --only 640-no-pixel4 630-joint
    python benchmarks/four_devices_variants.py --only 'vpu-*' --heldout 'vpu-*'

Per variant: leave-one-network-out over nn-Meter's reference networks (the left-out network
leaves every source, a sibling device's rows included) with each network's error, and, where
``--heldout`` asks for it, the Pixel 4 held-out split and the NAS-Bench-201 held-out split of
the fit on everything. Names may be shell-style patterns. Results:
``benchmarks/results/four_devices_variants.txt`` (round 3),
``benchmarks/results/four_devices_variants_vpu.txt`` (round 4, the VPU; round 5's
per-network Pixel 4 factors and round 6's fits without the per-configuration correction
are appended to the first).
"""
from __future__ import annotations

import argparse
import fnmatch
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from four_devices import fmt, report  # noqa: E402

from nnmeter_nas.fitting.builtin import BuiltinData, fit_params  # noqa: E402
from nnmeter_nas.fitting.device_fit import DeviceLatencyFit, NetworkSample  # noqa: E402

A76, A640, A630 = "cortexA76cpu_tflite21", "adreno640gpu_tflite21", "adreno630gpu_tflite21"
VPU = "myriadvpu_openvino2019r2"


def sibling(data: BuiltinData, device: str, nb201: bool = False) -> list[NetworkSample]:
    """Another device's reference networks (and NAS-Bench-201 training split) as a foreign
    source ``"sibling"`` (``"sibling-nb201"``)."""
    out = [NetworkSample(s.name, "sibling", s.configs, s.latency_ms)
           for s in data.references(device)]
    if nb201:
        out += [NetworkSample(s.name, "sibling-nb201", s.configs, s.latency_ms)
                for s in data.nb201(device)[0]]
    return out


def dw_strided(quantity: str):
    """Cost terms with one more own term of depthwise convolutions, gated on stride >= 2
    (``quantity``: ``"macs"`` or ``"elements_in"``): the TFLite GPU delegate runs 3x3 stride-1
    depthwise convolutions with a specialised kernel (two by two outputs per work item) and
    every other one with the generic kernel, so a strided one may cost more per unit of work
    than the kernel-size class says."""
    from nnmeter_nas.fitting import cost_terms
    from nnmeter_nas.regressors.cost_model import Term

    powers = {"macs": {"macs_1e6": 1}, "elements_in": {"area_in": 1, "cin": 1}}[quantity]
    base = cost_terms.terms_of

    def terms_of(reg, term_set="default"):
        out = base(reg, term_set)
        if reg == "dwconv-bn-relu":
            out = out + [(f"excess:{reg}:{quantity}_s2", Term(f"{quantity}_s2", powers,
                                                               (4, 1.5, float("inf"))))]
        return out
    return terms_of


def with_shared_conv_launch():
    """The device's own term set with the convolutions' terms of ``"shared-conv-launch"``
    (for the VPU, whose term set is ``"bandwidth"``)."""
    from nnmeter_nas.fitting import cost_terms

    base = cost_terms.terms_of

    def terms_of(reg, term_set="default"):
        if reg in ("conv-bn-relu", "dwconv-bn-relu"):
            return base(reg, "shared-conv-launch")
        return base(reg, term_set)
    return terms_of


def variants(data: BuiltinData) -> dict:
    """``{name: (device, fit settings over the built-in ones, drop(sample) -> bool,
    extra rows)}``."""
    pix_nets = lambda t: t.source == "pixel4" and t.whole_network  # noqa: E731
    sib_fg = {"pixel4": "conv1x1", "sibling": True, "sibling-nb201": True}
    return {
        "640-shipped": (A640, {}, None, []),
        "640-no-pixel4": (A640, {}, pix_nets, []),
        "640-pixel4-weight-0.3": (A640, {"source_weights": {"nb201": 1.0, "pixel4": 0.3}},
                                  None, []),
        "640-factor-add": (A640, {"factor_groups": "conv1x1+add"}, None, []),
        "640-factor-add-3x3": (A640, {"factor_groups": "conv1x1+add+3x3"}, None, []),
        "640-factor-add-3x3-dw": (A640, {"factor_groups": "conv1x1+add+3x3+dw"}, None, []),
        "640-joint": (A640, {"factor_groups": sib_fg}, None, sibling(data, A630)),
        "640-joint-nb201": (A640, {"factor_groups": sib_fg}, None,
                            sibling(data, A630, nb201=True)),
        # round 4: a per-term-class factor of the Pixel 4 source beside the 1x1 one
        "640-factor-launch": (A640, {"factor_terms": ("launch",)}, None, []),
        "640-factor-memory": (A640, {"factor_terms": ("memory",)}, None, []),
        "640-factor-thin": (A640, {"factor_terms": ("thin",)}, None, []),
        "640-factor-launch-memory": (A640, {"factor_terms": ("launch", "memory")}, None, []),
        "640-factor-launch-thin": (A640, {"factor_terms": ("launch", "thin")}, None, []),
        "640-one-factor-launch": (A640, {"factor_groups": False, "factor_terms": ("launch",)},
                                  None, []),
        "640-ref-weight-3": (A640, {"source_weights": {"nb201": 1.0,
                                                       "nnmeter-reference": 3.0}}, None, []),
        "640-dw-strided-macs": (A640, {"_terms": dw_strided("macs")}, None, []),
        "640-dw-strided-elements": (A640, {"_terms": dw_strided("elements_in")}, None, []),
        "630-shipped": (A630, {}, None, []),
        "630-nb201-weight-0.5": (A630, {"source_weights": {"nb201": 0.5}}, None, []),
        "630-nb201-weight-1": (A630, {"source_weights": {"nb201": 1.0}}, None, []),
        "630-nb201-weight-2": (A630, {"source_weights": {"nb201": 2.0}}, None, []),
        "630-dw-strided-macs": (A630, {"_terms": dw_strided("macs")}, None, []),
        "630-dw-strided-elements": (A630, {"_terms": dw_strided("elements_in")}, None, []),
        "630-ref-weight-3": (A630, {"source_weights": {"nb201": 3.0,
                                                       "nnmeter-reference": 3.0}}, None, []),
        "630-joint": (A630, {"factor_groups": {"sibling": True}}, None, sibling(data, A640)),
        "a76-factor-add": (A76, {"factor_groups": "add"}, None, []),
        "a76-dw-strided-macs": (A76, {"_terms": dw_strided("macs")}, None, []),
        "vpu-dw-strided-macs": (VPU, {"_terms": dw_strided("macs")}, None, []),
        # issue 14 round 4, the Myriad VPU ("vpu-bandwidth": the shipped settings since then;
        # the others each change the term set or the identifiability rule of multi-4's fit)
        "vpu-multi-4": (VPU, {"term_set": "default"}, None, []),
        "vpu-min-networks-2": (VPU, {"term_set": "default", "min_excess_networks": 2}, None,
                               []),
        "vpu-memory": (VPU, {"term_set": "memory"}, None, []),
        "vpu-memory-min-networks-2": (VPU, {"term_set": "memory", "min_excess_networks": 2},
                                      None, []),
        "vpu-memory-copies": (VPU, {"term_set": "memory-copies"}, None, []),
        "vpu-bandwidth": (VPU, {"term_set": "bandwidth"}, None, []),
        "vpu-se-parts": (VPU, {"term_set": "se-parts"}, None, []),
        "vpu-se-parts-own": (VPU, {"term_set": "se-parts-own"}, None, []),
        # issue 14 round 5: each Pixel 4 network its own factor over the source's, shrunk
        # towards it by a ridge on its log (DeviceLatencyFit(network_factor_ridge=lambda));
        # lambda picked by the Pixel 4 held-out RMSPE (rule fixed before scoring,
        # docs/four_devices.md); "-alt30", "-alt100": 30 or 100 alternations instead of 10
        **{f"640-netfactor-{lam:g}": (A640, {"network_factor_ridge": lam}, None, [])
           for lam in (0.0, 0.3, 1.0, 3.0)},
        **{f"640-alternations-{n}": (A640, {"n_alternations": n}, None, [])
           for n in (5, 15, 20, 30, 100)},
        "a76-alternations-30": (A76, {"n_alternations": 30}, None, []),
        "630-alternations-30": (A630, {"n_alternations": 30}, None, []),
        "vpu-alternations-30": (VPU, {"n_alternations": 30}, None, []),
        **{f"640-netfactor-{lam:g}-alt{n}": (A640, {"network_factor_ridge": lam,
                                                    "n_alternations": n}, None, [])
           for n in (30, 100) for lam in (0.0, 0.3, 1.0, 3.0)},
        # the VPU's adopted term set on the other three devices (information, not adopted)
        "a76-bandwidth": (A76, {"term_set": "bandwidth"}, None, []),
        "640-bandwidth": (A640, {"term_set": "bandwidth"}, None, []),
        "630-bandwidth": (A630, {"term_set": "bandwidth"}, None, []),
        # round 6: one launch shared by dense and depthwise convolutions (term set
        # "shared-conv-launch": the Adreno 630's shipped settings since multi-6; "630-multi-5"
        # is the fit before)
        **{f"{d}-shared-conv-launch": (dev, {"term_set": "shared-conv-launch"}, None, [])
           for d, dev in (("a76", A76), ("640", A640), ("630", A630))},
        "vpu-shared-conv-launch": (VPU, {"_terms": with_shared_conv_launch()}, None, []),
        "630-multi-5": (A630, {"term_set": "default"}, None, []),
        # round 6: without the bounded per-configuration correction (information)
        **{f"{d}-no-corrections": (dev, {"corrections": False}, None, [])
           for d, dev in (("a76", A76), ("640", A640), ("630", A630), ("vpu", VPU))},
    }


def run(data, name, dev, params, drop, extra, heldout: bool) -> None:
    from nnmeter_nas.fitting import device_fit

    params = dict(params)
    terms = params.pop("_terms", None)
    if terms is None:
        return _run(data, name, dev, params, drop, extra, heldout)
    saved, saved_fits = device_fit.terms_of, data._fits
    device_fit.terms_of = terms          # this variant's cost terms, for its fits only
    data._fits = {}                      # and its own donor fits (the Adreno 630's borrowed rows)
    try:
        return _run(data, name, dev, params, drop, extra, heldout)
    finally:
        device_fit.terms_of, data._fits = saved, saved_fits


def device_fit_terms_patched() -> bool:
    from nnmeter_nas.fitting import cost_terms, device_fit

    return device_fit.terms_of is not cost_terms.terms_of


def _run(data, name, dev, params, drop, extra, heldout: bool) -> None:
    settings = {**fit_params(dev), **params}

    def train_without(names):
        train = [t for t in data.training_samples(dev, exclude=names)
                 if not (drop and drop(t))]
        return train + [t for t in extra if t.name not in names]
    refs = data.references(dev)
    pred = []
    for s in refs:
        fit = DeviceLatencyFit(**settings).fit(train_without({s.name}))
        pred.append(fit.predict([s])[0])
    y = np.array([s.latency_ms for s in refs])
    print(f"\n{name} ({dev}; {params or 'shipped settings'}"
          + (", own cost terms" if device_fit_terms_patched() else "")
          + (", without the Pixel 4 networks" if drop else "")
          + (f", + {len(extra)} sibling rows" if extra else "") + ")")
    print(f"  leave-one-out  {fmt(report(pred, y))}")
    print("    " + "  ".join(f"{s.name.replace('_0', '')} {100 * (p / s.latency_ms - 1):+.1f}"
                             for s, p in zip(refs, pred)))
    if not heldout:
        return
    pix = [s for s in data.imagenet(dev) if s.source == "pixel4"]
    if pix and not drop:
        order = np.random.default_rng(0).permutation(len(pix))
        p_te = [pix[i] for i in order[:int(round(0.3 * len(pix)))]]
        fit = DeviceLatencyFit(**settings).fit(train_without({s.name for s in p_te}))
        print(f"  Pixel 4 held out {fmt(report(fit.predict(p_te), [s.latency_ms for s in p_te]))}")
    fit = DeviceLatencyFit(**settings).fit(train_without(set()))
    nb_test = data.nb201(dev)[1]
    print(f"  NB201 held out {fmt(report(fit.predict(nb_test), [s.latency_ms for s in nb_test]))}")
    if fit.factors_:
        print("  factors " + "; ".join(f"{src}: " + ", ".join(f"{g} {v:.3f}" for g, v in f.items())
                                      for src, f in fit.factors_.items()))


def main(argv=None) -> int:
    import warnings

    from nnmeter_nas.errors import ConvergenceWarning
    warnings.simplefilter("ignore", ConvergenceWarning)  # variants vary n_alternations on purpose
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", default=None, help="variant names")
    ap.add_argument("--heldout", nargs="*", default=["640-shipped", "640-factor-add"],
                    help="variants also scored on the held-out splits")
    args = ap.parse_args(argv)
    t0 = time.time()
    data = BuiltinData()
    for name, (dev, params, drop, extra) in variants(data).items():
        if args.only and not any(fnmatch.fnmatchcase(name, p) for p in args.only):
            continue
        run(data, name, dev, params, drop, extra,
            any(fnmatch.fnmatchcase(name, p) for p in args.heldout))
    print(f"\ntotal {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
