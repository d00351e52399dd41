import numpy as np
import pytest
from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingRegressor, RandomForestRegressor
from sklearn.tree import DecisionTreeRegressor

from nnmeter_nas.regressors import TreeEnsemble


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 200, (600, 7))
    y = 0.01 * X[:, 0] * X[:, 1] / 50 + rng.normal(0, 0.5, 600) + 5
    Xt = rng.uniform(-10, 220, (300, 7))
    # values exactly on a float32 boundary exercise scikit-learn's float32 comparison
    Xt[:20] = X[:20].astype(np.float32)
    return X, y, Xt


@pytest.mark.parametrize("est", [
    RandomForestRegressor(n_estimators=15, max_depth=12, random_state=0),
    ExtraTreesRegressor(n_estimators=10, random_state=1),
    DecisionTreeRegressor(max_depth=8, random_state=0),
])
def test_forest_matches_sklearn_exactly(est, data):
    X, y, Xt = data
    est.fit(X, y)
    te = TreeEnsemble.from_sklearn(est)
    assert np.array_equal(te.predict(Xt), est.predict(Xt))
    assert te.n_features == 7


def test_repeated_rows_and_leaves_match_sklearn(data):
    """Equal rows are evaluated once (kernels repeat across a batch of networks): the
    outputs, in order, and the leaves are scikit-learn's, row by row."""
    X, y, Xt = data
    rf = RandomForestRegressor(n_estimators=12, max_depth=10, random_state=2).fit(X, y)
    te = TreeEnsemble.from_sklearn(rf)
    rng = np.random.default_rng(3)
    Xr = Xt[rng.integers(0, 40, 200)]  # 200 rows, at most 40 distinct, shuffled
    Xr[::7] = Xr[::7].astype(np.float32)  # equal after the float32 cast only
    assert np.array_equal(te.predict(Xr), rf.predict(Xr))
    one_by_one = np.array([te.predict(r[None, :])[0] for r in Xr])
    assert np.array_equal(te.predict(Xr), one_by_one)
    leaves = te.apply(Xt)
    sk_leaves = rf.apply(Xt.astype(np.float32))
    for t, est in enumerate(rf.estimators_):  # local sklearn leaf ids -> values
        assert np.array_equal(te.value[leaves[:, t]], est.tree_.value[sk_leaves[:, t], 0, 0])
    assert te.predict(Xt[:0]).shape == (0,)


def test_boosting_matches_sklearn(data):
    X, y, Xt = data
    gb = GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0).fit(X, y)
    te = TreeEnsemble.from_sklearn(gb)
    np.testing.assert_allclose(te.predict(Xt), gb.predict(Xt), rtol=1e-12, atol=1e-12)


def test_log_target_and_roundtrip(data):
    X, y, Xt = data
    rf = RandomForestRegressor(n_estimators=5, random_state=0).fit(X, np.log(y))
    te = TreeEnsemble.from_sklearn(rf, target_transform="log", meta={"a": 1})
    np.testing.assert_allclose(te.predict(Xt), np.exp(rf.predict(Xt)))
    back = TreeEnsemble.load(te.to_npz_bytes())
    assert np.array_equal(back.predict(Xt), te.predict(Xt))
    assert back.meta["a"] == 1 and back.target_transform == "log"


def test_npz_is_loaded_without_pickle(tmp_path, data):
    X, y, _ = data
    te = TreeEnsemble.from_sklearn(DecisionTreeRegressor(max_depth=3).fit(X, y))
    p = tmp_path / "t.npz"
    te.save(p)
    with np.load(p, allow_pickle=False) as z:  # would raise if anything needed pickle
        assert set(z.files) >= {"left", "right", "feature", "threshold", "value", "roots"}


def test_bad_arrays_and_inputs_raise():
    with pytest.raises(ValueError, match="feature index"):
        TreeEnsemble(left=[1, -1, -1], right=[2, -1, -1], feature=[5, -1, -1],
                     threshold=[0, 0, 0], value=[0, 1, 2], roots=[0], n_features=2)
    with pytest.raises(ValueError, match="one child"):
        TreeEnsemble(left=[1, -1, -1], right=[-1, -1, -1], feature=[0, -1, -1],
                     threshold=[0, 0, 0], value=[0, 1, 2], roots=[0], n_features=2)
    te = TreeEnsemble(left=[1, -1, -1], right=[2, -1, -1], feature=[0, -1, -1],
                      threshold=[0.5, 0, 0], value=[0, 1, 2], roots=[0], n_features=2)
    assert te.predict([[0, 0], [1, 0]]).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="2 features"):
        te.predict(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="not a tree-ensemble"):
        TreeEnsemble.load(b"garbage")


def _numpy_only(monkeypatch):
    import nnmeter_nas.regressors.forest as forest

    monkeypatch.setattr(forest, "_COMPILED_MIN_PAIRS", 1 << 62)


@pytest.mark.parametrize("est", [
    RandomForestRegressor(n_estimators=37, max_depth=14, random_state=0),
    GradientBoostingRegressor(n_estimators=9, max_depth=3, random_state=0),
    DecisionTreeRegressor(max_depth=6, random_state=0),
    DecisionTreeRegressor(max_depth=1, min_samples_split=10_000),  # a single-leaf tree
])
def test_compiled_walk_equals_numpy_walk(est, data, monkeypatch):
    """The compiled walk (scikit-learn's tree code under a tree-selecting root) reaches the
    numpy walk's leaves, so predictions are identical, for NaN, infinities and values on a
    float32 boundary too, and in chunks."""
    import nnmeter_nas.regressors.forest as forest

    X, y, Xt = data
    est.fit(X, y)
    Xt = np.vstack([Xt, np.full((1, 7), np.nan), np.full((1, 7), np.inf),
                    np.full((1, 7), -np.inf), X[:5].astype(np.float32)])
    Xt[3, 2] = np.nan
    te = TreeEnsemble.from_sklearn(est)
    monkeypatch.setattr(forest, "_COMPILED_MIN_PAIRS", 1)
    monkeypatch.setattr(forest, "_COMPILE_AFTER_PAIRS", 0)
    monkeypatch.setattr(forest, "_CHUNK_PAIRS", 50)
    leaves, pred = te.apply(Xt), te.predict(Xt)
    assert te._compiled not in (None, False)  # the compiled walk answered
    _numpy_only(monkeypatch)
    fresh = TreeEnsemble.from_sklearn(est)
    assert np.array_equal(leaves, fresh.apply(Xt))
    assert np.array_equal(pred, fresh.predict(Xt))
    assert fresh._compiled is None  # (numpy answered)
    if not isinstance(est, GradientBoostingRegressor):
        finite = np.isfinite(Xt).all(axis=1)
        assert np.array_equal(pred[finite], est.predict(Xt[finite]))


def test_compiled_walk_waits_for_work_and_is_not_pickled(data, monkeypatch):
    """Without scikit-learn imported, small batches never build the compiled form (importing
    scikit-learn costs more than they do); a pickled ensemble leaves it behind."""
    import pickle
    import sys

    import nnmeter_nas.regressors.forest as forest

    X, y, Xt = data
    te = TreeEnsemble.from_sklearn(RandomForestRegressor(n_estimators=20, max_depth=8,
                                                         random_state=0).fit(X, y))
    monkeypatch.delitem(sys.modules, "sklearn.tree._tree")
    monkeypatch.setattr(forest, "_COMPILED_MIN_PAIRS", 1)
    te.predict(Xt[:10])
    assert te._compiled is None and te._walked == 200
    monkeypatch.setattr(forest, "_COMPILE_AFTER_PAIRS", 300)
    te.predict(Xt[:10])  # 400 pairs walked: now compiled (scikit-learn re-imported)
    assert te._compiled not in (None, False)
    assert pickle.loads(pickle.dumps(te))._compiled is None


def test_nan_goes_left_whatever_the_batch_size(data):
    """A NaN feature sends a row left in every walk: its prediction does not depend on the
    rows it is batched with (the small-batch walk used to send it right)."""
    X, y, Xt = data
    te = TreeEnsemble.from_sklearn(RandomForestRegressor(n_estimators=30, max_depth=8,
                                                         random_state=0).fit(X, y))
    rows = Xt[:60].copy()
    rows[::3, 1] = np.nan
    alone = np.array([te.predict(r[None, :])[0] for r in rows])  # 30 pairs: lockstep walk
    assert np.array_equal(te.predict(rows), alone)               # 1800 pairs: active set


def test_tree_walk_option_selects_the_walk_with_identical_bits(data, monkeypatch):
    """``tree_walk`` picks the walk whatever the process state: "numpy" never compiles (even
    with scikit-learn imported), "compiled" compiles on the first large batch (even with it
    not imported and nothing walked yet); both give the same leaves and bits, and "auto"
    keeps the state-dependent choice. An unknown value is refused, at construction and when
    set later."""
    import sys

    X, y, Xt = data
    est = RandomForestRegressor(n_estimators=40, max_depth=12, random_state=0).fit(X, y)
    Xt = np.vstack([Xt, np.full((1, 7), np.nan), X[:5].astype(np.float32)])
    numpy_walk = TreeEnsemble.from_sklearn(est)
    numpy_walk.tree_walk = "numpy"
    assert "sklearn.tree._tree" in sys.modules
    leaves_np, pred_np = numpy_walk.apply(Xt), numpy_walk.predict(Xt)
    assert numpy_walk._compiled is None
    monkeypatch.delitem(sys.modules, "sklearn.tree._tree")
    auto = TreeEnsemble.from_sklearn(est)
    pred_auto = auto.predict(Xt)
    assert auto._compiled is None  # fresh process state: numpy
    compiled = TreeEnsemble.from_sklearn(est)
    compiled.tree_walk = "compiled"
    leaves_c, pred_c = compiled.apply(Xt), compiled.predict(Xt)
    assert compiled._compiled not in (None, False)
    assert Xt.shape[0] * 40 >= 2048  # a batch the compiled walk answers
    assert np.array_equal(leaves_np, leaves_c)
    assert np.array_equal(pred_np, pred_c) and np.array_equal(pred_np, pred_auto)
    finite = np.isfinite(Xt).all(axis=1)
    assert np.array_equal(pred_c[finite], est.predict(Xt[finite]))
    one = {"left": [-1], "right": [-1], "feature": [-2], "threshold": [0.0], "value": [1.0]}
    with pytest.raises(ValueError, match="tree_walk"):
        TreeEnsemble(**{k: np.asarray(v) for k, v in one.items()}, roots=[0], n_features=1,
                     tree_walk="fast")
    compiled.tree_walk = "fast"
    with pytest.raises(ValueError, match="tree_walk"):
        compiled.predict(Xt)


def test_compiled_tree_walk_without_scikit_learn_says_so(data, monkeypatch):
    """tree_walk="compiled" where scikit-learn's tree cannot be built raises a UsageError
    naming the cause ("auto" falls back to numpy silently, with the same results)."""
    from nnmeter_nas.errors import UsageError

    X, y, Xt = data
    est = RandomForestRegressor(n_estimators=40, max_depth=8, random_state=0).fit(X, y)

    def no_sklearn(self):
        raise ImportError("No module named 'sklearn'")

    monkeypatch.setattr(TreeEnsemble, "_compile", no_sklearn)
    te = TreeEnsemble.from_sklearn(est, meta={})
    assert np.array_equal(te.predict(Xt), est.predict(Xt))  # auto, sklearn imported: numpy
    te.tree_walk = "compiled"
    with pytest.raises(UsageError, match="No module named 'sklearn'"):
        te.predict(Xt)
