"""Hyperparameter search on Ray Tune: the evaluation harness's tuning trials, run in parallel.

:func:`llmrec.eval.runner.evaluate_models` tunes each scorer over its grid by fitting every config on the
validation split. :class:`RayTuneTrials` runs those trials as Ray Tune trials (a grid over the configs, at most
``workers`` at a time, each reserving ``cpus_per_worker``), locally or on a cluster; each trial calls the
harness's own trial function, so the numbers, and the config chosen from them, are those of the serial search.
The split and data travel once, through Ray's object store (``tune.with_parameters``).

    evaluate_models(data, ["ease", "itemknn"], trials=RayTuneTrials(RayOptions(workers=2)))
    llmrec evaluate --models ease,itemknn --ray [--address auto]
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from typing import Any

from llmrec.errors import ConfigError
from llmrec.eval.runner import TrialFn
from llmrec.scale._ray import RayOptions, ray_session

__all__ = ["RayTuneTrials"]

log = logging.getLogger(__name__)

_PREFIX = "llmrec/"


def _trial(config: dict[str, Any], fn: TrialFn, configs: list[dict[str, Any]]) -> None:
    """One Ray Tune trial: the harness's trial function on the config at ``config["index"]``."""
    from ray import tune

    metrics = fn(configs[int(config["index"])])
    tune.report({_PREFIX + key: float(value) for key, value in metrics.items()})


class RayTuneTrials:
    """Tuning trials as a Ray Tune grid search (see the module docstring).

    Args:
        options: Where Ray runs (``address=None``: a private local Ray for the search), how many trials at once
            (``workers``) and the CPUs each reserves.
    """

    def __init__(self, options: RayOptions | None = None) -> None:
        self.options = options or RayOptions()

    def map(self, fn: TrialFn, configs: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
        """Each config's validation metrics, in the configs' order.

        Raises:
            ConfigError: Ray is missing or unreachable, or a trial failed (its error named).

        """
        configs = [dict(c) for c in configs]
        if not configs:
            return []
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no TensorBoard/CSV files per trial
        with ray_session(self.options):
            from ray import tune

            trainable = tune.with_resources(
                tune.with_parameters(_trial, fn=fn, configs=configs), {"cpu": self.options.cpus_per_worker}
            )
            with tempfile.TemporaryDirectory(prefix="llmrec-tune-") as storage:
                tuner = tune.Tuner(
                    trainable,
                    param_space={"index": tune.grid_search(list(range(len(configs))))},
                    tune_config=tune.TuneConfig(max_concurrent_trials=self.options.workers),
                    run_config=tune.RunConfig(storage_path=storage, name="llmrec-search", verbose=0),
                )
                grid = tuner.fit()
        out: list[dict[str, float] | None] = [None] * len(configs)
        for result in (grid[i] for i in range(len(grid))):
            index = int((result.config or {})["index"])
            if result.error is not None:
                raise ConfigError(
                    f"tuning trial {configs[index]} failed on Ray: {result.error}",
                    fix="run the search without Ray to see the error in this process",
                )
            out[index] = {
                k[len(_PREFIX) :]: float(v) for k, v in (result.metrics or {}).items() if k.startswith(_PREFIX)
            }
        missing = [configs[i] for i, m in enumerate(out) if m is None]
        if missing:
            raise ConfigError(f"Ray Tune returned no result for {missing}", fix="run the search without Ray")
        log.info("ray tune: %d trials", len(configs))
        return [m for m in out if m is not None]
