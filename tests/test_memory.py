"""Resident memory stays flat over real runs in one process: the dashboard trains run after run in one."""

import gc

import numpy as np
import psutil
import pytest

from fedlab.config import ExperimentConfig
from fedlab.learning.engine import BuildCache, experiment_factory

RUNS = 7  # the first two warm up (TensorFlow's and TFF's one-off caches); the trend is fitted over the rest
MAX_GROWTH_MB_PER_RUN = 2.0


@pytest.mark.tff
@pytest.mark.slow
def test_runs_one_after_another_keep_resident_memory_flat(tiny_data):
    """Least-squares slope of resident memory after runs 3..7 of a tiny federated model.

    Before the fix every run left its TFF execution context with its compiled computations (TFF's class-wide
    cache) and its GRU's functions in Keras' global graph: about 4-6 MB a run at this size (10-20 MB at the
    study's), against under 1 MB after. Garbage is collected before each reading, so only memory still
    referenced counts."""
    cache = BuildCache(keep_runtime=True)  # as the dashboard's: each run reuses the runtime of the run before
    make = experiment_factory(cache)
    config = ExperimentConfig(
        data=tiny_data.config, gru_units=8, embedding_dim=4, rounds=1, epochs=1, batch_size=64, dropout=0.0
    )
    rss = []
    for _ in range(RUNS):
        experiment = make(config, data=tiny_data)
        try:
            experiment.prepare()
            list(experiment.rounds())
            experiment.test()
        finally:
            experiment.close()
        del experiment
        gc.collect()
        rss.append(psutil.Process().memory_info().rss / 2**20)
    cache.close()
    slope = np.polyfit(np.arange(2, RUNS), rss[2:], 1)[0]
    assert slope < MAX_GROWTH_MB_PER_RUN, [round(mb) for mb in rss]
