"""Run one experiment to the end (the CLI's driver); the dashboard's job manager iterates the same rounds."""
from __future__ import annotations

from collections.abc import Callable

from fedlab.config import ExperimentConfig
from fedlab.engine import BuildCache, Experiment
from fedlab.records import RoundRecord


def run_to_completion(config: ExperimentConfig, *, on_round: Callable[[RoundRecord], None] | None = None,
                      on_ready: Callable[[dict], None] | None = None, cache: BuildCache | None = None) -> dict:
    """Train, test the kept model and score the baselines; returns the run as a JSON-able dict."""
    experiment = Experiment(config, cache=cache)
    try:
        experiment.prepare()
        if on_ready:
            on_ready(dict(experiment.timing))
        rounds = []
        for record in experiment.rounds():
            rounds.append(record.to_dict())
            if on_round:
                on_round(record)
        test = experiment.test().to_dict()
        return {"config": config.to_dict(), "rounds": rounds, "test": test, "baselines": experiment.baselines(),
                "timing": dict(experiment.timing), "data": experiment.summary()}
    finally:
        experiment.close()
