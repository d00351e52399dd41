"""Parallel scoring (nnmeter_nas.parallel): codes, lookup tables, resume, Ray.

In-process tests use the 54-candidate ``toy`` space (exports in milliseconds) and, once, the
SPOS space. The Ray tests share one two-node local cluster (one CPU per node) for the module.
"""
from __future__ import annotations

import os
import signal
import warnings

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from nnmeter_nas.parallel import CodeTable, LabelSpace, score  # noqa: E402
from nnmeter_nas.parallel.store import ResumeError  # noqa: E402
from nnmeter_nas.testing import make_dummy_predictor  # noqa: E402

LABELS = ["op1", "op2", "depth", "head"]


@pytest.fixture(scope="module")
def predictors(tmp_path_factory):
    """Two dummy devices with different latencies (dev_b = 2.5 x dev_a per kernel)."""
    d = tmp_path_factory.mktemp("preds")
    a = make_dummy_predictor("dev_a", directory=d)
    b = make_dummy_predictor("dev_b", directory=d)
    for reg in b.package.regressors.values():
        reg.value *= 2.5
    return [a, b]


@pytest.fixture(scope="module")
def toy_full(predictors):
    """Every toy candidate scored in full mode, in this process (the reference)."""
    return score("toy", n="all", devices=predictors, mode="full", in_process=True,
                 progress=False)


# ---------------------------------------------------------------------------- codes, tables
def test_label_space_codes_roundtrip_and_determinism():
    space = LabelSpace.from_label_values({"a": ["x", "y", "z"], "b": [1, 2], "c": [[1], [2, 3]]})
    assert space.size == 12
    codes = space.enumerate_codes(0, 12)
    assert len({tuple(r) for r in codes}) == 12
    samples = space.decode(codes)
    assert samples[1] == {"a": "x", "b": 1, "c": [2, 3]}
    np.testing.assert_array_equal(space.encode(samples), codes)
    r1 = space.random_codes(1000, seed=7, chunk=3)
    np.testing.assert_array_equal(r1, space.random_codes(1000, seed=7, chunk=3))
    assert not np.array_equal(r1, space.random_codes(1000, seed=7, chunk=4))
    assert set(r1[:, 0]) == {0, 1, 2} and set(r1[:, 1]) == {0, 1}
    with pytest.raises(ValueError, match="not a value of that label"):
        space.encode([{"a": "w", "b": 1, "c": [1]}])
    with pytest.raises(ValueError, match="missing labels"):
        space.encode([{"a": "x"}])


def test_code_table_matches_naive_sum_including_multi_label_points():
    rng = np.random.default_rng(0)
    space = LabelSpace.from_label_values({"a": ["p", "q", "r"], "b": ["u", "v"], "c": [1, 2, 3, 4]})
    points = [
        ("pa", ("a",), [("p",), ("q",), ("r",)], rng.random((3, 2)).tolist()),
        ("pbc", ("b", "c"), [(b, c) for b in "uv" for c in (1, 2, 3, 4)],
         rng.random((8, 2)).tolist()),
        ("pc", ("c",), [(1,), (2,), (3,), (4,)], rng.random((4, 2)).tolist()),
    ]
    table = CodeTable.from_points(space, ["x", "y"], [1.5, -0.5], points)
    codes = space.random_codes(20000, seed=1, chunk=0)  # spans several internal blocks
    got = table.evaluate(codes)
    samples = space.decode(codes[:500])
    for i, s in enumerate(samples):
        want = np.array([1.5, -0.5])
        for _, labels, combos, rows in points:
            want = want + rows[combos.index(tuple(s[label] for label in labels))]
        np.testing.assert_allclose(got[i], want, rtol=1e-12)
    import pickle

    np.testing.assert_array_equal(pickle.loads(pickle.dumps(table)).evaluate(codes), got)


# ---------------------------------------------------------------------------- in-process scoring
@pytest.mark.slow
def test_table_mode_agrees_with_profiler_and_full_mode(predictors, toy_full):
    from nnmeter_nas.nni.profiler import LatencyProfiler
    from nnmeter_nas.parallel.toy_space import ToySpace

    df = score("toy", n="all", devices=predictors, in_process=True, progress=False)
    assert list(df.columns) == ["index", *LABELS, "flops", "params", "dev_a_ms", "dev_b_ms"]
    assert len(df) == 54 and df["index"].tolist() == list(range(54))
    assert len(df[LABELS].astype(str).drop_duplicates()) == 54  # n="all": every candidate once
    # Table mode == the profiler's own lookups, sample by sample.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prof = LatencyProfiler(ToySpace(), predictors, (1, 3, 16, 16))
    samples = [{"op1": r.op1, "op2": r.op2, "depth": int(r.depth), "head": r.head}
               for r in df.itertuples()]
    for dev in ("dev_a", "dev_b"):
        want = [prof.profile(s, dev) for s in samples]
        np.testing.assert_allclose(df[f"{dev}_ms"], want, rtol=1e-9)
    # ... and == exporting and predicting every candidate (the toy space is exactly additive).
    pd.testing.assert_frame_equal(df[["index", *LABELS]], toy_full[["index", *LABELS]])
    for col in ("flops", "params"):
        np.testing.assert_array_equal(df[col], toy_full[col])
    for col in ("dev_a_ms", "dev_b_ms"):
        np.testing.assert_allclose(df[col], toy_full[col], rtol=1e-9)
    np.testing.assert_allclose(df["dev_b_ms"], 2.5 * df["dev_a_ms"], rtol=1e-9)
    assert df["flops"].nunique() > 10 and (df["params"] > 0).all()


@pytest.mark.slow
def test_spos_table_scores_match_full_mode_on_samples(predictors):
    dev = predictors[:1]
    table = score("spos-small", n=3000, seed=5, devices=dev, in_process=True, progress=False)
    assert len(table) == 3000 and table["dev_a_ms"].nunique() > 100
    labels = [f"layer_{i}" for i in range(1, 21)]
    picks = table.iloc[[0, 1234]]
    samples = picks[labels].astype(str).to_dict("records")
    full = score("spos-small", samples, devices=dev, mode="full", in_process=True,
                 progress=False, kernels=True)
    np.testing.assert_allclose(full["dev_a_ms"], picks["dev_a_ms"], rtol=1e-9)
    np.testing.assert_array_equal(full["flops"], picks["flops"])
    np.testing.assert_array_equal(full["params"], picks["params"])
    import json

    kernels = json.loads(full["dev_a_kernels"].iloc[0])
    assert len(kernels) > 20
    assert sum(k[2] for k in kernels) == pytest.approx(full["dev_a_ms"].iloc[0], rel=1e-6)


def test_same_seed_same_candidates_and_a_progress_bar(predictors, capsys):
    a = score("toy", n=500, seed=3, devices=predictors, in_process=True, progress=True,
              chunk_size=64)
    bar = capsys.readouterr().err
    assert "500/500" in bar and "cand/s" in bar and "<" in bar  # count, rate, ETA
    b = score("toy", n=500, seed=3, devices=predictors, in_process=True, progress=False,
              chunk_size=64)
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs["nnmeter_nas"]["seed"] == 3
    c = score("toy", n=500, seed=4, devices=predictors, in_process=True, progress=False,
              chunk_size=64)
    assert not c["op1"].equals(a["op1"])


# ---------------------------------------------------------------------------- resume
class _Stop(Exception):
    pass


def _stop_after(rows):
    def cb(done, total):
        if done >= rows:
            raise _Stop
    return cb


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_interrupted_run_resumes_without_duplicates_or_losses(tmp_path, predictors, suffix):
    out = tmp_path / f"scores.{suffix}"
    kw = dict(n=700, seed=11, devices=predictors, in_process=True, progress=False,
              chunk_size=50)
    reference = score("toy", **kw)
    with pytest.raises(_Stop):
        # flush_seconds=0: every finished chunk is written at once
        score("toy", out=out, flush_seconds=0, on_progress=_stop_after(300), **kw)
    parts = out.with_name(out.name + ".parts")
    assert not out.exists() and len(list(parts.glob(f"part-*.{suffix}"))) == 6
    (parts / f".tmp-part-999-x.{suffix}").write_text("half written")  # a torn write
    seen = []
    resumed = score("toy", out=out, on_progress=lambda d, t: seen.append(d), **kw)
    assert seen[0] == 350  # only the 8 missing chunks were scored
    assert resumed.attrs["nnmeter_nas"]["resumed_chunks"] == 6
    assert not parts.exists() and out.exists()
    pd.testing.assert_frame_equal(resumed, reference)
    stored = pd.read_parquet(out) if suffix == "parquet" else pd.read_csv(out)
    assert stored["index"].tolist() == list(range(700))
    np.testing.assert_array_equal(stored["dev_a_ms"], reference["dev_a_ms"])
    # A finished job is read back, not recomputed; another job refuses to touch the file.
    again = score("toy", out=out, on_progress=lambda d, t: pytest.fail("recomputed"), **kw)
    pd.testing.assert_frame_equal(again, reference)
    with pytest.raises(ResumeError, match="another job"):
        score("toy", out=out, **{**kw, "seed": 12})
    fresh = score("toy", out=out, overwrite=True, **{**kw, "seed": 12})
    assert not fresh["dev_a_ms"].equals(reference["dev_a_ms"])


def test_resume_reuses_stored_seed(tmp_path, predictors):
    out = tmp_path / "s.parquet"
    kw = dict(n=300, devices=predictors, in_process=True, progress=False, chunk_size=100)
    with pytest.raises(_Stop):
        score("toy", out=out, flush_seconds=0, on_progress=_stop_after(100), **kw)
    df = score("toy", out=out, **kw)  # seed=None: the interrupted run's seed is reused
    seed = df.attrs["nnmeter_nas"]["seed"]
    pd.testing.assert_frame_equal(df, score("toy", seed=seed, **kw))


# ---------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def two_node_cluster():
    """A local Ray cluster of two nodes with one CPU each; tests join it with address=."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _join(cluster):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return dict(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": root}})


@pytest.mark.xdist_group("ray-cluster")  # one cluster at a time under pytest-xdist
@pytest.mark.slow
def test_ray_table_mode_spreads_over_nodes_and_equals_serial(two_node_cluster, predictors):
    import ray

    kw = dict(n=3000, seed=21, devices=predictors, progress=False, chunk_size=250)
    serial = score("toy", in_process=True, **kw)
    parallel = score("toy", **kw, **_join(two_node_cluster))
    assert not ray.is_initialized()  # score() disconnects from the cluster it joined
    info = parallel.attrs["nnmeter_nas"]
    assert info["backend"] == "ray"
    # One table-building task per device, one on each node (one CPU per node).
    assert sorted(info["table_nodes"]) == ["dev_a", "dev_b"]
    assert len(set(info["table_nodes"].values())) == 2, info
    assert sum(info["nodes"].values()) == 12  # 12 chunk tasks
    pd.testing.assert_frame_equal(parallel, serial)


@pytest.mark.xdist_group("ray-cluster")  # one cluster at a time under pytest-xdist
@pytest.mark.slow
def test_ray_full_mode_survives_a_killed_worker(two_node_cluster, predictors, toy_full, tmp_path):
    psutil = pytest.importorskip("psutil")
    killed = []

    def kill_a_busy_actor(done, total):
        """After the first stored chunk, SIGKILL an actor process while it scores a chunk."""
        if killed:
            return
        for proc in psutil.Process().children(recursive=True):
            try:
                title = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            if "FullActor.score" in title:  # the process title of a busy actor
                os.kill(proc.pid, signal.SIGKILL)  # a Ray worker of this test's own cluster
                killed.append(proc.pid)
                return

    out = tmp_path / "full.parquet"
    df = score("toy", n="all", devices=predictors, mode="full", progress=False, chunk_size=3,
               out=out, flush_seconds=0, on_progress=kill_a_busy_actor,
               **_join(two_node_cluster))
    assert killed, "no busy actor process found to kill"
    info = df.attrs["nnmeter_nas"]
    assert info["backend"] == "ray" and len(info["nodes"]) == 2, info
    # Ray restarted the killed actor in a new process, which redid the lost chunk.
    assert len(set(info["pids"]) - {killed[0]}) >= 2, (killed, info)
    pd.testing.assert_frame_equal(df, toy_full)
    assert pd.read_parquet(out)["index"].tolist() == list(range(54))


def test_a_count_given_as_the_samples_argument_says_to_use_n(tmp_path):
    """``score("toy", 300)`` used to fail with "TypeError: 'int' object is not iterable" from
    inside the label encoder."""
    from nnmeter_nas.errors import NnMeterNasError

    with pytest.raises(NnMeterNasError, match=r"for random candidates pass n=300"):
        score("toy", 300, devices=["cortexA76cpu_tflite21"], in_process=True, out=tmp_path / "a")
    with pytest.raises(NnMeterNasError, match="one sample"):
        score("toy", {"op1": "k3"}, devices=["cortexA76cpu_tflite21"], in_process=True,
              out=tmp_path / "b")
