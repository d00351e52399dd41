"""Running NNI 3 experiments from scripts and tests: the sequential engine with a budget of
evaluated architectures, NNI's files kept under a chosen directory.

- :func:`run_sequential_experiment`: run a ``NasExperiment`` until ``max_models`` architectures
  have been evaluated (or the strategy stops);
- :func:`nni_home`: keep NNI's experiment manifest (normally ``~/nni-experiments/.experiment``)
  under a directory;
- :func:`evaluated_models`: the architectures the engine evaluated.
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any, Iterator

__all__ = ["run_sequential_experiment", "evaluated_models", "nni_home"]


@contextlib.contextmanager
def nni_home(path: str | Path) -> Iterator[Path]:
    """Make NNI keep its experiment manifest (normally ``~/nni-experiments/.experiment``) under
    ``path`` while the context is open. Use with ``experiment_working_directory`` in tests and
    benchmarks that must not write to the home directory."""
    from nni.nas.experiment import experiment as nas_experiment_module
    from nni.tools.nnictl.config_utils import Experiments

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    original = nas_experiment_module.Experiments
    nas_experiment_module.Experiments = functools.partial(Experiments, home_dir=str(path))
    try:
        yield path
    finally:
        nas_experiment_module.Experiments = original


def run_sequential_experiment(model_space: Any, evaluator: Any, strategy: Any, *,
                              max_models: int, workdir: str | Path,
                              model_format: str = "simplified") -> Any:
    """Run a ``NasExperiment`` with NNI's sequential engine until ``max_models`` architectures have
    been evaluated (or the strategy stops), keeping NNI's files (logs, checkpoint, manifest) under
    ``workdir``. Returns the stopped experiment; ``experiment.strategy.list_models()`` and the
    engine's history hold the results, also when the strategy raised (the exception propagates
    after the experiment is stopped).
    """
    from nni.nas.experiment import NasExperiment, NasExperimentConfig

    workdir = Path(workdir)
    config = NasExperimentConfig("sequential", model_format)
    config.execution_engine.max_model_count = int(max_models)
    config.experiment_working_directory = str(workdir)
    exp = NasExperiment(model_space, evaluator, strategy, config)
    with nni_home(workdir):
        try:
            exp.run()
        finally:
            exp.stop()
    return exp


def evaluated_models(experiment: Any) -> list:
    """Architectures the engine evaluated, in order (filtered-out ones are not included)."""
    return list(experiment._engine.list_models()) if experiment._engine is not None else []
