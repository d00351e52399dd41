"""Helpers shared by the package tests: nn-Meter-style releases built from the committed
legacy fixtures (pickles written by scikit-learn 0.23.2, see fixtures/nnmeter_legacy/)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures" / "nnmeter_legacy"
LEGACY_SETS = ("sklearn-0.23.2", "sklearn-1.2.2")
LEGACY_023 = FIXTURES / "sklearn-0.23.2"

# nn-Meter regressor -> fixture pickle taking the same number of features (a stand-in, so a
# complete release of one of nn-Meter's devices can be served from the small fixtures).
_SAME_WIDTH = {"conv-bn-relu": "conv-bn-relu", "dwconv-bn-relu": "conv-bn-relu", "fc": "fc",
               "maxpool": "maxpool", "avgpool": "maxpool", "add": "add", "addrelu": "add",
               "concat": "concat"}


def expected(tag: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"expected-{tag}.npz") as z:
        return {k: z[k] for k in z.files}


def release_files(kernels: list[str] | None = None, src: Path = LEGACY_023) -> dict[str, bytes]:
    """``{file name: bytes}`` of an nn-Meter release folder holding ``kernels``."""
    files = {FUSION: (src / FUSION).read_bytes()}
    if kernels is None:
        kernels = [p.stem for p in src.glob("*.pkl")]
    for k in kernels:
        files[f"{k}.pkl"] = (src / f"{_SAME_WIDTH.get(k, 'relu')}.pkl").read_bytes()
    return files


FUSION = "fusion_rules.json"


def make_zip(path: Path, files: dict[str, bytes], top: str | None = None) -> Path:
    """Zip ``files`` (optionally inside one top folder, as nn-Meter's downloads are)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        if top:
            z.writestr(top + "/", b"")
        for name, data in files.items():
            z.writestr(f"{top}/{name}" if top else name, data)
    return path


def device_release_zip(path: Path, device: str) -> Path:
    """A complete release zip of one of nn-Meter's devices, named and laid out like nn-Meter's."""
    from nnmeter_nas.packages.registry import NNMETER_PREDICTORS

    return make_zip(path, release_files(NNMETER_PREDICTORS[device]["kernels"]), top=device)
