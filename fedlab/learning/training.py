"""Run one experiment to the end (the CLI's driver); the dashboard's job manager iterates the same rounds."""

from __future__ import annotations

import os
from collections.abc import Callable

from fedlab.config import ExperimentConfig
from fedlab.learning.engine import BuildCache, experiment_factory
from fedlab.records import RoundRecord
from fedlab.runs.tblog import BestEffortLog


def run_to_completion(
    config: ExperimentConfig,
    *,
    on_round: Callable[[RoundRecord], None] | None = None,
    on_ready: Callable[[dict], None] | None = None,
    on_testing: Callable[[ExperimentConfig], None] | None = None,
    cache: BuildCache | None = None,
    tensorboard_log_dir: str | os.PathLike | None = None,
) -> dict:
    """Train, test the kept model and score the baselines; returns the run as a JSON-able dict.

    With `tensorboard_log_dir`, each round also goes to a TensorBoard log in exactly that folder; a failure
    to write it is logged and leaves training alone.
    """
    experiment = experiment_factory(cache)(config)
    board = BestEffortLog(tensorboard_log_dir) if tensorboard_log_dir is not None else None
    try:
        experiment.prepare()
        if on_ready:
            on_ready(dict(experiment.timing))
        rounds = []
        for record in experiment.rounds():
            rounds.append(record.to_dict())
            if board is not None:
                board.write(record)
            if on_round:
                on_round(record)
        if on_testing:
            on_testing(config)
        test = experiment.test().to_dict()
        return {
            "config": config.to_dict(),
            "rounds": rounds,
            "test": test,
            "baselines": experiment.baselines(),
            "timing": dict(experiment.timing),
            "data": experiment.summary(),
        }
    finally:
        if board is not None:
            board.close()
        experiment.close()
