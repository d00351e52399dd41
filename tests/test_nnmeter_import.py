"""nn-Meter predictor import: legacy scikit-learn pickles convert exactly and safely."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import warnings
import zipfile

import numpy as np
import pytest

from legacy_release import (FIXTURES, FUSION, LEGACY_023, LEGACY_SETS, expected, make_zip,
                            release_files)
from nnmeter_nas.errors import PackageError
from nnmeter_nas.packages.format import PredictorPackage, sha256_bytes
from nnmeter_nas.packages.nnmeter_import import (UnsafePickleError, ensemble_from_pickle,
                                                 import_nnmeter_package, safe_load_pickle)


def _info(tag):
    return json.loads((FIXTURES / f"expected-{tag}.json").read_text())


# ------------------------------------------------------------------ parity with old sklearn
@pytest.mark.parametrize("tag", LEGACY_SETS)
def test_converted_predictions_equal_old_sklearn(tag):
    exp = expected(tag)
    info = _info(tag)
    pkls = sorted((FIXTURES / tag).glob("*.pkl"))
    assert {p.stem for p in pkls} == set(info["kernels"])
    for p in pkls:
        ens, facts = ensemble_from_pickle(p.read_bytes(), filename=p.name)
        X = exp[f"X__{p.stem}"]
        got = ens.predict(X)
        # With n_jobs > 1 the old scikit-learn adds trees in thread order; y1 was recorded
        # with n_jobs=1 (trees added in order), which the conversion reproduces exactly.
        ref = exp.get(f"y1__{p.stem}", exp[f"y__{p.stem}"])
        assert np.array_equal(got, ref), (tag, p.stem, np.abs(got - ref).max())
        np.testing.assert_allclose(got, exp[f"y__{p.stem}"], rtol=1e-14, atol=0)
        assert ens.n_features == info["kernels"][p.stem]["n_features"]
        assert ens.n_trees == info["kernels"][p.stem]["n_estimators"]
        assert facts["sklearn_version"] == info["sklearn"]
        assert facts["n_train"] == info["n_train"]
        assert facts["estimator"] == "RandomForestRegressor"


def test_fixtures_reproduce_the_sklearn_incompatibility():
    """Plain pickle.load of the fixtures fails under today's scikit-learn (nn-Meter issue 131),
    while the conversion reads them. Should a scikit-learn release read them again, this test
    fails: then check that its predictions agree with the conversion's and update it."""
    p = LEGACY_023 / "conv-bn-relu.pkl"
    ens, _ = ensemble_from_pickle(p.read_bytes())
    assert ens.n_trees > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="incompatible dtype"):
            pickle.loads(p.read_bytes())


@pytest.mark.parametrize("kind", ["RandomForestRegressor", "ExtraTreesRegressor",
                                  "DecisionTreeRegressor"])
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_current_sklearn_pickles_convert(kind, protocol):
    from sklearn import ensemble, tree

    cls = getattr(ensemble, kind, None) or getattr(tree, kind)
    rng = np.random.RandomState(0)
    X = rng.rand(80, 3) * [224, 512, 7]
    y = X[:, 0] * X[:, 1] / 1e4 + rng.rand(80)
    params = {"n_estimators": 5} if kind != "DecisionTreeRegressor" else {}
    model = cls(max_depth=6, random_state=0, **params).fit(X, y)
    ens, facts = ensemble_from_pickle(pickle.dumps(model, protocol=protocol))
    Xq = rng.rand(50, 3) * [224, 512, 7]
    assert np.array_equal(ens.predict(Xq), model.predict(Xq))
    assert facts["estimator"] == kind
    assert facts["n_train"] == 80


# ------------------------------------------------------------------ unpickling is safe
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    for payload in (_Evil(marker), [np.arange(3), {"x": _Evil(marker)}]):
        with pytest.raises(UnsafePickleError, match=r"(posix|os|nt)\.system"):
            safe_load_pickle(pickle.dumps(payload), filename="evil.pkl")
    with pytest.raises(UnsafePickleError, match=r"builtins\.eval"):
        ensemble_from_pickle(pickle.dumps(_EvalEvil(), protocol=2), filename="evil.pkl")
    assert not marker.exists()


def test_other_sklearn_models_and_joblib_are_refused(tmp_path):
    from sklearn.ensemble import GradientBoostingRegressor

    X = np.random.RandomState(0).rand(30, 2)
    gb = GradientBoostingRegressor(n_estimators=2, max_depth=2).fit(X, X.sum(1))
    with pytest.raises(UnsafePickleError, match="GradientBoostingRegressor"):
        ensemble_from_pickle(pickle.dumps(gb), filename="gb.pkl")
    import joblib

    joblib.dump({"a": np.arange(1000)}, tmp_path / "j.pkl")
    with pytest.raises(UnsafePickleError, match="joblib"):
        ensemble_from_pickle((tmp_path / "j.pkl").read_bytes(), filename="j.pkl")


def test_garbage_and_wrong_objects_are_clear_errors():
    data = (LEGACY_023 / "relu.pkl").read_bytes()
    with pytest.raises(PackageError, match="relu.pkl: not a readable predictor pickle"):
        ensemble_from_pickle(data[: len(data) // 2], filename="relu.pkl")
    with pytest.raises(PackageError, match="not a readable"):
        ensemble_from_pickle(b"\x1f\x8b\x08 gzip", filename="z.pkl")
    with pytest.raises(PackageError, match="holds a dict"):
        ensemble_from_pickle(pickle.dumps({"estimators_": []}), filename="d.pkl")


# ------------------------------------------------------------------ release -> package
def _check_package(pkg: PredictorPackage, name: str, kernels: list[str]):
    m = pkg.manifest
    assert pkg.name == name and pkg.version == "1.0"
    assert pkg.feature_set == "nnmeter-2.0"
    assert sorted(pkg.regressors) == sorted(kernels)
    assert pkg.free_kernel_types == {"reshape"}
    assert m["source"]["kind"] == "nnmeter-import"
    src_files = m["source"]["files"]
    for k in kernels:
        assert src_files[f"{k}.pkl"] == sha256_bytes((LEGACY_023 / f"{k}.pkl").read_bytes())
        info = m["kernels"][k]
        assert info["feature_range"] is None and pkg.feature_range(k) is None
        assert info["n_train"] == 48
        assert info["original"]["sklearn_version"] == "0.23.2"
        # split_range lies inside the fixture's feature domain
        lo = [v for v in info["split_range"]["min"] if v is not None]
        assert lo and min(lo) >= 0
    assert src_files[FUSION] == sha256_bytes((LEGACY_023 / FUSION).read_bytes())
    assert pkg.fusion_rules.is_fusible("conv", "bn")
    assert not pkg.fusion_rules.is_fusible("avgpool", "relu")
    exp = expected("sklearn-0.23.2")
    for k in kernels:
        ref = exp.get(f"y1__{k}", exp[f"y__{k}"])
        assert np.array_equal(pkg.regressors[k].predict(exp[f"X__{k}"]), ref)


KERNELS_023 = ["add", "concat", "conv-bn-relu", "fc", "maxpool", "relu"]


def test_import_folder(tmp_path):
    dest = import_nnmeter_package(LEGACY_023, tmp_path / "pkg", name="legacy", progress=False)
    pkg = PredictorPackage.load(dest)
    _check_package(pkg, "legacy", KERNELS_023)
    assert pkg.manifest["framework"] == "unknown"


@pytest.mark.parametrize("top", ["legacy_cpu", None])
def test_import_zip(tmp_path, top):
    z = make_zip(tmp_path / "legacy_cpu.zip", release_files(KERNELS_023), top=top)
    dest = import_nnmeter_package(z, tmp_path / "pkg", progress=False)
    pkg = PredictorPackage.load(dest)
    _check_package(pkg, "legacy_cpu", KERNELS_023)  # name from the top folder or zip name
    assert pkg.manifest["source"]["archive_sha256"] == sha256_bytes(z.read_bytes())


def test_import_folder_with_one_top_folder(tmp_path):
    shutil.copytree(LEGACY_023, tmp_path / "outer" / "mydev")
    dest = import_nnmeter_package(tmp_path / "outer", tmp_path / "pkg", progress=False)
    _check_package(PredictorPackage.load(dest), "mydev", KERNELS_023)


def test_known_device_gets_its_metadata_and_must_be_complete(tmp_path):
    from legacy_release import device_release_zip

    z = device_release_zip(tmp_path / "a.zip", "adreno640gpu_tflite21")
    pkg = PredictorPackage.load(import_nnmeter_package(z, tmp_path / "pkg", progress=False))
    assert pkg.name == pkg.device == "adreno640gpu_tflite21"
    assert pkg.manifest["framework"] == "TFLite 2.1"
    assert "Adreno 640" in pkg.manifest["hardware"]
    files = release_files(["conv-bn-relu", "relu"])
    z2 = make_zip(tmp_path / "b.zip", files, top="adreno640gpu_tflite21")
    with pytest.raises(PackageError, match=r"lacks the regressor files \['avgpool.pkl'"):
        import_nnmeter_package(z2, tmp_path / "pkg2", progress=False)
    assert not (tmp_path / "pkg2").exists()


def test_misnamed_kernel_file_is_refused(tmp_path):
    files = release_files([])
    files["conv-bn-relu.pkl"] = (LEGACY_023 / "relu.pkl").read_bytes()
    z = make_zip(tmp_path / "x.zip", files, top="x")
    with pytest.raises(PackageError, match=r"conv-bn-relu.pkl takes 2 features"):
        import_nnmeter_package(z, tmp_path / "pkg", progress=False)
    assert not (tmp_path / "pkg").exists()


def test_bad_releases(tmp_path):
    dest = tmp_path / "pkg"
    files = release_files(["relu"])
    # a zip entry escaping its folder
    z = tmp_path / "slip.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("x/relu.pkl", files["relu.pkl"])
        zf.writestr("x/fusion_rules.json", files[FUSION])
        zf.writestr("../evil.pkl", b"boom")
    with pytest.raises(PackageError, match=r"'\.\./evil\.pkl' escapes"):
        import_nnmeter_package(z, dest, progress=False)
    # truncated download
    good = make_zip(tmp_path / "good.zip", files, top="x")
    cut = tmp_path / "cut.zip"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(PackageError, match="cut.zip: not an nn-Meter predictor release"):
        import_nnmeter_package(cut, dest, progress=False)
    # no fusion rules / no pickles / invalid fusion rules
    with pytest.raises(PackageError, match="no fusion_rules.json"):
        import_nnmeter_package(make_zip(tmp_path / "nf.zip", {"relu.pkl": b"x"}), dest)
    with pytest.raises(PackageError, match="no <kernel>.pkl"):
        import_nnmeter_package(make_zip(tmp_path / "np.zip", {FUSION: b"{}"}), dest)
    bad_rules = dict(files, **{FUSION: b'{"BF_conv_bn": true}'})
    with pytest.raises(PackageError, match="fusion_rules.json is not a valid"):
        import_nnmeter_package(make_zip(tmp_path / "br.zip", bad_rules), dest, progress=False)
    with pytest.raises(PackageError, match="not found"):
        import_nnmeter_package(tmp_path / "nope.zip", dest)
    assert not dest.exists()
    assert not (tmp_path.parent / "evil.pkl").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_existing_destination_is_kept_unless_overwrite(tmp_path):
    dest = import_nnmeter_package(LEGACY_023, tmp_path / "pkg", name="a", progress=False)
    with pytest.raises(PackageError, match="already exists"):
        import_nnmeter_package(LEGACY_023, dest, name="b", progress=False)
    assert PredictorPackage.load(dest).name == "a"
    import_nnmeter_package(LEGACY_023, dest, name="b", overwrite=True, progress=False)
    assert PredictorPackage.load(dest).name == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def _ir_node(t, ins, outs, inb, outb, **attr):
    return {"attr": {"type": t, "attr": attr, "input_shape": ins, "output_shape": outs},
            "inbounds": inb, "outbounds": outb}


def _ir(middle_type="reshape"):
    """nn-Meter IR of conv-bn-relu -> maxpool -> flatten (or another layout op) -> fc."""
    n = _ir_node
    return {
        "input": n("Placeholder", [], [[1, 32, 32, 3]], [], ["conv"]),
        "conv": n("conv", [[1, 32, 32, 3]], [[1, 32, 32, 16]], ["input"], ["bn"],
                  kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], group=1),
        "bn": n("bn", [[1, 32, 32, 16]], [[1, 32, 32, 16]], ["conv"], ["relu"]),
        "relu": n("relu", [[1, 32, 32, 16]], [[1, 32, 32, 16]], ["bn"], ["pool"]),
        "pool": n("maxpool", [[1, 32, 32, 16]], [[1, 16, 16, 16]], ["relu"], ["mid"],
                  kernel_shape=[2, 2], strides=[2, 2]),
        "mid": n(middle_type, [[1, 16, 16, 16]], [[1, 4096]], ["pool"], ["fc"]),
        "fc": n("fc", [[1, 4096]], [[1, 10]], ["mid"], []),
    }


def test_imported_predictor_end_to_end(tmp_path):
    """The flatten (reshape) is declared free; conv, pool and fc are predicted by the
    converted regressors; a transpose, which nn-Meter also counts as 0 ms, is reported."""
    from nnmeter_nas.errors import MissingRegressorError
    from nnmeter_nas.predictor import LatencyPredictor, LatencyWarning

    dest = import_nnmeter_package(LEGACY_023, tmp_path / "pkg", name="legacy", progress=False)
    pred = LatencyPredictor.from_path(dest, strict=True)
    bd = pred.predict_kernels(_ir())
    assert [(k.regressor, k.status) for k in bd] == [
        ("conv-bn-relu", "predicted"), ("maxpool", "predicted"), ("reshape", "free"),
        ("fc", "predicted")]
    assert bd.missing_kernel_types == []
    conv = bd[0]
    assert conv.in_domain is None  # imported packages record no training range
    assert conv.features == [32, 3, 16, 3, 1, 2 * 32 * 32 * 448 / 2e6, 448 / 1e6]
    for k in bd:
        if k.status == "predicted":
            ref = pred.predict_kernel_features(k.regressor, np.array([k.features]))[0]
            assert k.latency_ms == ref > 0
    with pytest.raises(MissingRegressorError, match="transpose"):
        pred.predict_kernels(_ir("transpose"))
    lenient = LatencyPredictor.from_path(dest)
    with pytest.warns(LatencyWarning, match="transpose"):
        total = lenient.predict(_ir("transpose"))
    assert total == bd.latency_ms
