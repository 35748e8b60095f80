"""Two small demo runs, so a fresh dashboard has curves and results to show before anyone trains.

Both use the synthetic city and differ only in the feature preset (the study's comparison). They are
sized to finish in well under a minute each on two cores, and still show falling losses and rising accuracy.
`python -m fedlab demo` (or `make demo-runs`) trains those not yet in the store; the dashboard queues
them itself when it starts with an empty store, and again at a later start when one was interrupted
(the app stopped while preparing it) or failed (fedlab/dashboard/state.py decides).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from fedlab.config import PRESETS, DataConfig, ExperimentConfig
from fedlab.runs.jobs import JobManager
from fedlab.runs.recording import Trainable
from fedlab.runs.store import RunStore

# The synthetic city's 100 busiest users, as the Train page's default: on the shard path many users train in a few
# TFF calls, so a fresh dashboard has both demo runs within about two minutes of its start (docs/performance.md).
DEMO_DATA = DataConfig(top_users=100)
# Few rounds of a small GRU; three local epochs so each round visibly learns. GRU dropout 0 repeats exactly.
DEMO_SETTINGS = dict(rounds=4, patience=4, epochs=3, gru_units=64, dropout=0.0, seed=0)
DEMO_PRESETS = (("Demo · central", "central"), ("Demo · biggest", "biggest"))


def demo_runs() -> list[tuple[str, ExperimentConfig]]:
    """(run name, config) of every demo run, in the order they are trained."""
    return [
        (name, ExperimentConfig(data=DEMO_DATA, features=PRESETS[preset], name=name, **DEMO_SETTINGS))
        for name, preset in DEMO_PRESETS
    ]


def missing_demo_runs(store: RunStore) -> list[tuple[str, ExperimentConfig]]:
    """The demo runs that have no finished run of their name in the store (failed or stopped ones count as missing)."""
    finished = {run.name for run in store.list_runs(statuses=("finished",))}
    return [(name, config) for name, config in demo_runs() if name not in finished]


def engine_factory() -> Callable[[ExperimentConfig], Trainable]:
    """config -> the real engine's Experiment; the runs share one BuildCache, so data is prepared once."""
    from fedlab.learning.engine import experiment_factory  # TensorFlow loads here

    return experiment_factory()


def run_demos(
    store: RunStore,
    *,
    model_dir: str | os.PathLike | None = None,
    tensorboard_dir: str | os.PathLike | None = None,
    experiment_factory: Callable[[ExperimentConfig], Trainable] | None = None,
    on_finished: Callable[[str], None] | None = None,
) -> list[str]:
    """Trains the missing demo runs to their end, one after the other; returns their run ids.

    `on_finished(run_id)` is called as each one ends (whatever its status). The default factory is the
    real engine; tests pass a fake one.
    """
    missing = missing_demo_runs(store)
    if not missing:
        return []
    manager = JobManager(
        store,
        experiment_factory=experiment_factory or engine_factory(),
        model_dir=model_dir,
        tensorboard_dir=tensorboard_dir,
    )
    run_ids: list[str] = []
    try:
        # One at a time, so an interrupted command leaves no queued run behind it.
        for name, config in missing:
            run_ids.append(manager.submit(config, name=name))
            manager.wait_idle()
            if on_finished is not None:
                on_finished(run_ids[-1])
    finally:
        manager.shutdown()
    return run_ids
