"""ExpectedLatency and LatencyPenalty: values, gradients, forms, and searches they steer."""
from __future__ import annotations

import itertools
import math
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nni")
from nni.nas.oneshot.pytorch.profiler import ExpectationProfilerPenalty  # noqa: E402

from nnmeter_nas.nni import ExpectedLatency, LatencyPenalty, LatencyProfiler  # noqa: E402
from nnmeter_nas.nni.errors import SampleError  # noqa: E402
from nnmeter_nas.nni.table import LatencyTable, TablePoint  # noqa: E402
from test_nni_filter import LCSpace  # noqa: E402
from test_nni_spaces import TinySpace  # noqa: E402

warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")
SHAPE = (1, 3, 16, 16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_profiler(dummy_predictor):
    return LatencyProfiler(TinySpace(), dummy_predictor, SHAPE)


@pytest.fixture(scope="module")
def lc_profiler(dummy_predictor):
    return LatencyProfiler(LCSpace(), dummy_predictor, SHAPE)


def _random_probs(table, seed, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    logits = {label: torch.randn(len(table.values_of(label)), generator=g, dtype=torch.float64,
                                 requires_grad=requires_grad) for label in table.labels}
    return logits, {k: torch.softmax(v, -1) for k, v in logits.items()}


def test_expected_latency_is_the_expectation_over_all_architectures(tiny_profiler):
    table = tiny_profiler.table
    exp = ExpectedLatency(tiny_profiler)
    _, probs = _random_probs(table, 0)
    labels = table.labels
    brute = 0.0
    for combo in itertools.product(*(table.values_of(label) for label in labels)):
        w = 1.0
        for label, v in zip(labels, combo):
            w *= float(probs[label][table.values_of(label).index(v)])
        brute += w * tiny_profiler.profile(dict(zip(labels, combo)))
    assert float(exp(probs)) == pytest.approx(brute, rel=1e-10)


def test_one_hot_and_nni_formats(tiny_profiler):
    exp = ExpectedLatency(tiny_profiler.table)
    s = {"b1": "k5", "depth": 2, "r0": "k3", "r1": "k5", "r2": "k3", "w": 16}
    assert float(exp(s)) == pytest.approx(tiny_profiler.profile(s), rel=1e-12)
    nni_style = {label: {v: (1.0 if v == s[label] else 0.0)
                         for v in tiny_profiler.table.values_of(label)} for label in s}
    assert float(exp(nni_style)) == pytest.approx(tiny_profiler.profile(s), rel=1e-12)
    with pytest.raises(SampleError, match=r"\['w'\]"):
        exp({k: v for k, v in s.items() if k != "w"})
    with pytest.raises(SampleError, match="'b1'.*4 entries"):
        exp({**s, "b1": torch.ones(4) / 4})
    with pytest.raises(SampleError, match="unknown values"):
        exp({**s, "b1": {"k9": 1.0}})


@pytest.mark.parametrize("form,kw", [
    ("add#linear", {}), ("mul#log", {}), ("fbnet", {}), ("hinge", {}),
])
def test_gradients_match_finite_differences(form, kw):
    # a hand-made table in the multi-ms range so that the log forms are well defined
    points = [TablePoint(f"p{i}", f"p{i}", "LayerChoice", (f"l{i}",),
                         [("a",), ("b",), ("c",)], [[3.0 + i], [5.5], [9.0 - i]],
                         [True] * 3) for i in range(3)]
    table = LatencyTable(devices=["dev"], input_shape=[1, 3, 8, 8],
                         space={"class": "Hand", "labels": {f"l{i}": ["a", "b", "c"]
                                                            for i in range(3)}},
                         points=points, fixed_ms={"dev": 4.0})
    pen = LatencyPenalty(table, form, target_ms=15.0, **kw)
    loss0 = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    g = torch.Generator().manual_seed(1)
    logits = [torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
              for _ in range(3)]

    def fn(loss, *ls):
        probs = {f"l{i}": torch.softmax(v, -1) for i, v in enumerate(ls)}
        return pen(loss, probs)[0]

    assert torch.autograd.gradcheck(fn, (loss0, *logits), eps=1e-6, atol=1e-6)
    # and the gradient is not trivially zero
    out = fn(loss0, *logits)
    grads = torch.autograd.grad(out, logits)
    assert max(float(gr.abs().max()) for gr in grads) > 1e-4


def test_forms_compute_the_published_formulas():
    points = [TablePoint("p", "p", "LayerChoice", ("l",), [("a",), ("b",)], [[2.0], [6.0]],
                         [True, True])]
    table = LatencyTable(devices=["d"], input_shape=[1], space={"class": "H", "labels":
                                                                {"l": ["a", "b"]}},
                         points=points, fixed_ms={"d": 10.0})
    probs = {"l": torch.tensor([0.5, 0.5], dtype=torch.float64, requires_grad=True)}
    e = 14.0  # 10 + 0.5 * 2 + 0.5 * 6
    loss = torch.tensor(2.0, dtype=torch.float64)
    ref = 12.0
    got = lambda form, **kw: float(LatencyPenalty(table, form, target_ms=ref, **kw)(loss, probs)[0])  # noqa: E731
    assert got("add#linear", strength=0.3) == pytest.approx(2.0 + 0.3 * (e - ref) / ref)
    assert got("mul#log", alpha=0.2, beta=0.3) == pytest.approx(
        0.2 * 2.0 * (math.log(e) / math.log(ref)) ** 0.3)
    assert got("fbnet", alpha=0.2, beta=0.6) == pytest.approx(2.0 * 0.2 * math.log(e) ** 0.6)
    assert got("hinge", strength=2.0) == pytest.approx(2.0 + 2.0 * (e / ref - 1))
    assert float(LatencyPenalty(table, "hinge", target_ms=20.0)(loss, probs)[0]) == 2.0
    details = LatencyPenalty(table, "hinge", target_ms=ref)(loss, probs)[1]
    assert float(details["expected_latency_ms"]) == pytest.approx(e)
    with pytest.raises(ValueError, match="target_ms"):
        LatencyPenalty(table, "hinge")
    with pytest.raises(ValueError, match="above log_unit_ms"):
        LatencyPenalty(table, "mul#log", target_ms=0.5)
    # logs of microseconds: same formula on latency / 0.001 ms
    assert float(LatencyPenalty(table, "fbnet", log_unit_ms=0.001)(loss, probs)[0]) == \
        pytest.approx(2.0 * 0.2 * math.log(e / 0.001) ** 0.6)
    with pytest.raises(ValueError, match="unknown latency penalty form"):
        LatencyPenalty(table, "squared")
    assert isinstance(LatencyPenalty(table, "fbnet"), ExpectationProfilerPenalty)


def test_hinge_drives_a_plain_search_under_target(tiny_profiler):
    table = tiny_profiler.table
    lo, hi = table.bounds()
    target = lo + 0.25 * (hi - lo)
    pen = LatencyPenalty(table, "hinge", target_ms=target, strength=5.0)
    logits = {label: torch.zeros(len(table.values_of(label)), requires_grad=True)
              for label in table.labels}
    opt = torch.optim.Adam(logits.values(), lr=0.1)

    def probs():
        return {k: torch.softmax(v, -1) for k, v in logits.items()}

    start = float(pen.expected(probs()).detach())
    assert start > target
    for _ in range(200):
        # a task loss that prefers the expensive choices, so only the penalty pulls latency down
        task = -sum(p[-1] for p in probs().values() if len(p) == 2) * 0.01
        loss, _ = pen(task, probs())
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = float(pen.expected(probs()).detach())
    assert end <= target * 1.01 < start


def test_log_forms_refuse_sub_millisecond_tables(lc_profiler):
    fastest = lc_profiler.table.bounds()[0]
    assert fastest < 1.0  # the synthetic predictor's tiny networks
    with pytest.raises(ValueError, match="log would be <= 0"):
        LatencyPenalty(lc_profiler, "fbnet")
    with pytest.raises(ValueError, match="log would be <= 0"):
        LatencyPenalty(lc_profiler, "mul#log", target_ms=2.0)
    pen = LatencyPenalty(lc_profiler, "fbnet", log_unit_ms=fastest / 10)
    probs = {f"b{i}": torch.ones(3, requires_grad=True) / 3 for i in range(3)}
    assert float(pen(torch.tensor(1.0), probs)[0]) > 0


def test_no_gradient_and_no_module_warns(lc_profiler):
    pen = LatencyPenalty(lc_profiler, "hinge", target_ms=1e-6)
    floats = {f"b{i}": {"k3": 0.2, "k5": 0.3, "k7": 0.5} for i in range(3)}
    with pytest.warns(RuntimeWarning, match="bind"):
        pen(torch.tensor(1.0), floats)


def _one_shot_search(strategy_name, pen, tmp_path):
    import nni.nas.strategy as strategies
    from nni.nas.evaluator.pytorch import Classification, DataLoader
    from nni.nas.experiment import NasExperiment
    from torch.utils.data import TensorDataset

    torch.manual_seed(0)

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64, 3, 16, 16, generator=g),
                         torch.randint(0, 10, (64,), generator=g))
    evaluator = Classification(train_dataloaders=DataLoader(data, batch_size=8),
                               val_dataloaders=DataLoader(data, batch_size=8), max_epochs=2,
                               num_classes=10, learning_rate=1e-3, logger=False,
                               enable_checkpointing=False, enable_progress_bar=False,
                               enable_model_summary=False, export_onnx=False)
    strategy = getattr(strategies, strategy_name)(penalty=pen, arc_learning_rate=0.1)
    exp = NasExperiment(LCSpace(), evaluator, strategy)
    exp.config.experiment_working_directory = str(tmp_path)
    try:
        exp.run()
    finally:
        exp.stop()
    return strategy


@pytest.mark.parametrize("strategy_name", ["DARTS", "GumbelDARTS", "Proxyless"])
def test_penalty_steers_nni_one_shot_strategies(strategy_name, lc_profiler, tmp_path):
    table = lc_profiler.table
    lo, hi = table.bounds()
    target = lo + 0.2 * (hi - lo)
    pen = LatencyPenalty(lc_profiler, "hinge", target_ms=target, strength=5.0)
    uniform = {label: torch.ones(3) / 3 for label in table.labels}
    start = float(pen.expected(uniform))
    assert start > target
    strategy = _one_shot_search(strategy_name, pen, tmp_path)
    # the penalty found the one-shot module calling it and differentiated through its alphas
    assert pen._bound is not None and pen._bound() is strategy.oneshot_module
    end = float(pen.expected(strategy.oneshot_module.export_probs()))
    assert end < target < start
    if strategy_name == "DARTS":  # control: the same search without the latency term
        control = LatencyPenalty(lc_profiler, "hinge", target_ms=target, strength=0.0)
        strategy = _one_shot_search(strategy_name, control, tmp_path / "control")
        assert float(control.expected(strategy.oneshot_module.export_probs())) > target


def test_an_input_choice_takes_nni_one_shot_probabilities_per_input():
    """NNI's one-shot strategies give an InputChoice (one input of two) probabilities per input
    index ({0: p, 1: q} from export_probs; an alpha over the inputs in the supernet), while the
    table's values of the label are [0] and [1]: both forms are read (they were refused with
    'unknown values [0, 1]', which stopped DARTS and Proxyless on any space with an
    InputChoice), and the gradient reaches the InputChoice's alpha."""
    import torch.nn as nn
    from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace
    from nni.nas.strategy import DARTS

    from nnmeter_nas.nni import architecture_probabilities

    points = [TablePoint("pick", "pick", "InputChoice", ("pick",), [((0,),), ((1,),)],
                         [[2.0], [6.0]], [True, True])]
    table = LatencyTable(devices=["d"], input_shape=[1, 3, 8, 8],
                         space={"class": "H", "labels": {"pick": [[0], [1]]}},
                         points=points, fixed_ms={"d": 10.0})
    exp = ExpectedLatency(table)
    assert float(exp({"pick": {0: 0.25, 1: 0.75}})) == pytest.approx(10.0 + 0.5 + 4.5)
    assert float(exp({"pick": [1]})) == float(exp({"pick": 1})) == pytest.approx(16.0)
    assert float(exp({"pick": ([1, 0], torch.tensor([0.75, 0.25]))})) == pytest.approx(15.0)
    with pytest.raises(SampleError, match="unknown values"):
        exp({"pick": {2: 1.0}})

    class Space(ModelSpace):
        def __init__(self):
            super().__init__()
            self.a = LayerChoice([nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 3, padding=1)], label="op")
            self.b = nn.Conv2d(3, 4, 1)
            self.pick = InputChoice(2, 1, label="pick")

        def forward(self, x):
            return self.pick([self.a(x), self.b(x)])

    supernet = DARTS().mutate_model(Space())
    probs = architecture_probabilities(supernet)
    values, p = probs["pick"]
    assert values == [0, 1] and p.requires_grad
    alpha = next(m._arch_alpha for m in supernet.modules()
                 if getattr(m, "label", None) == "pick" and hasattr(m, "_arch_alpha"))
    exp(probs).backward()
    assert alpha.grad is not None and float(alpha.grad.abs().sum()) > 0
