"""What the speed work relies on: the worker's allocator, evaluation's metrics, and the bench's figures."""

from pathlib import Path

import numpy as np
import pytest

from fedlab.bench import round_vs_keras
from fedlab.config import ExperimentConfig
from fedlab.learning.engine import Experiment
from fedlab.learning.runtime import (
    Runtime,
    local_workers,
    running_worker_pids,
    worker_allocator,
    worker_environment,
)
from tests.helpers import TINY


def test_the_allocator_named_in_the_environment_is_preloaded(tmp_path):
    library = tmp_path / "libjemalloc.so.2"
    library.write_bytes(b"")
    env = worker_environment({"FEDLAB_WORKER_MALLOC": str(library), "LD_PRELOAD": "libother.so"})
    assert env["LD_PRELOAD"].split() == [str(library), "libother.so"]


def test_system_means_no_preload():
    env = worker_environment({"FEDLAB_WORKER_MALLOC": "system"})
    assert "LD_PRELOAD" not in env
    assert worker_allocator({"FEDLAB_WORKER_MALLOC": "system"}) is None


def test_a_missing_allocator_file_is_not_preloaded(tmp_path):
    assert worker_allocator({"FEDLAB_WORKER_MALLOC": str(tmp_path / "absent.so")}) is None


@pytest.mark.tff
@pytest.mark.skipif(worker_allocator({}) is None, reason="libjemalloc2 is not installed")
def test_the_local_worker_runs_on_jemalloc():
    runtime = Runtime()
    try:
        (pid,) = running_worker_pids()
        assert "libjemalloc" in Path(f"/proc/{pid}/maps").read_text()
    finally:
        runtime.close()


def worker_environ() -> dict[str, str]:
    (pid,) = running_worker_pids()
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


@pytest.mark.tff
def test_the_local_worker_runs_each_op_on_one_thread_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    with Runtime():  # its client calls (a shard per core) fill the cores already
        assert worker_environ()["TF_NUM_INTRAOP_THREADS"] == "1"
    with local_workers(1):  # a worker that gets one shard: its ops keep TensorFlow's threads
        assert "TF_NUM_INTRAOP_THREADS" not in worker_environ()
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "2")
    with Runtime():
        assert worker_environ()["TF_NUM_INTRAOP_THREADS"] == "2"


@pytest.mark.tff
def test_federated_validation_equals_keras_on_the_pooled_validation_data(tiny_data, build_cache):
    # Evaluation loops over each client's batches; FedAvg's validation figures must still be those of
    # the whole validation set, as plain Keras computes them.
    experiment = Experiment(
        ExperimentConfig(data=tiny_data.config, **{**TINY, "rounds": 1}), data=tiny_data, cache=build_cache
    )
    try:
        experiment.prepare()
        (record,) = list(experiment.rounds())
        model = experiment.trained_model()
    finally:
        experiment.close()
    from fedlab.learning.model import loss_fn, metrics_fn

    model.compile(loss=loss_fn(), metrics=metrics_fn())
    inputs, targets = experiment.pooled("val")
    loss, accuracy = model.evaluate(inputs, targets, batch_size=len(targets), verbose=0)
    assert record.val_loss == pytest.approx(loss, rel=1e-4)
    assert record.val_accuracy == pytest.approx(accuracy, abs=1e-6)


@pytest.mark.tff
@pytest.mark.slow
def test_bench_times_a_round_against_keras_on_the_same_batches(tiny_data, build_cache):
    config = ExperimentConfig(data=tiny_data.config, **TINY)
    result = round_vs_keras(config, repeats=1, data=tiny_data, cache=build_cache)
    sizes = tiny_data.train.client_sizes()
    assert result["batches_per_round"] == int(np.ceil(sizes[sizes > 0] / config.batch_size).sum())
    # The seconds are rounded to 1 ms, so the ratio lies between what the rounding allows (plus its own 0.01).
    fed, keras, half_ms = result["fedavg_round_seconds"], result["keras_same_work_seconds"], 0.0005
    assert (
        (fed - half_ms) / (keras + half_ms) - 0.01
        <= result["ratio"]
        <= (fed + half_ms) / max(keras - half_ms, 1e-9) + 0.01
    )
    per_user = result["per_user_round_seconds"]
    assert (
        (per_user - half_ms) / (keras + half_ms) - 0.01
        <= result["per_user_ratio"]
        <= (per_user + half_ms) / max(keras - half_ms, 1e-9) + 0.01
    )
    assert result["path"] == "shards"  # the default path is timed as `ratio`, one client per user as `per_user_ratio`
    assert result["validation_seconds"] > 0 and result["worker_cpu_seconds_per_round"] > 0
    assert result["per_user_validation_seconds"] > 0 and result["per_user_worker_cpu_seconds_per_round"] > 0
    assert result["worker_allocator"] == (Path(worker_allocator()).name if worker_allocator() else "system")
    assert len(running_worker_pids()) <= 1  # the shared cache keeps the last run's runtime warm, no more
    build_cache.close()
    assert running_worker_pids() == []
