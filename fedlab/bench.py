"""`python -m fedlab bench`: what a FedAvg round costs next to the same work in plain Keras.

Both sides train the same model on exactly the same batches, in one process, on the synthetic city.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from fedlab.config import PRESETS, DataConfig, ExperimentConfig
from fedlab.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="time a FedAvg round against the same work in plain Keras")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--n", type=int, default=17)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--gru-units", type=int, default=256)
    p.add_argument("--preset", choices=sorted(PRESETS), default="central")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--data", help="check-in file (default: the synthetic city)")
    p.add_argument(
        "--workers",
        default="",
        help="time the round on TFF workers next to the local runtime: 'local' = 1, 2 and 4 workers "
        "started on loopback by the bench, '1,2,8' = those counts, or host:port,... of running workers",
    )
    p.add_argument(
        "--end-to-end",
        action="store_true",
        help="the study's full experiment: both presets, 100 clients, N 17, 4 epochs, batch 16, 10 rounds",
    )
    p.add_argument("--runs", type=int, default=1, help="with --end-to-end: repeat the experiment in one process")
    p.add_argument(
        "--rounds",
        type=int,
        default=10,
        help="with --end-to-end: rounds per model (10 as the study; fewer to check memory over many runs)",
    )
    p.add_argument(
        "--first-round",
        action="store_true",
        help="seconds from Run (experiment made) to the first finished round, for the Train page's "
        "default settings: cold (nothing built), after the dashboard's pre-build, and the same settings run again "
        "(the warm runtime); --repeats of each",
    )
    p.add_argument(
        "--shared-load",
        action="store_true",
        help="a class under load: --users simulated students sign in and queue a Quick demo at once on a shared "
        "server started on 127.0.0.1 (fedlab.dashboard.class_load); waits, CPU, memory and checks",
    )
    p.add_argument("--users", type=int, default=30, help="with --shared-load: how many students (at most 60)")
    p.add_argument(
        "--experiment",
        default="",
        help="with --shared-load: FEDLAB_EXPERIMENT for the server ('module:Factory'; default the real engine)",
    )
    p.add_argument("--limit", type=float, default=1800.0, help="with --shared-load: seconds to wait for the runs")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_bench)


def run_bench(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.shared_load:
        from fedlab.dashboard.class_load import shared_load

        result = shared_load(args.users, experiment=args.experiment, limit_s=args.limit)
    elif args.end_to_end:
        result = end_to_end(data=args.data, runs=args.runs, rounds=args.rounds)
    elif args.first_round:
        result = time_to_first_round(ExperimentConfig(data=DataConfig(data=args.data)), repeats=args.repeats)
    else:
        config = ExperimentConfig(
            data=DataConfig(data=args.data, top_users=args.clients, n=args.n),
            features=PRESETS[args.preset],
            epochs=args.epochs,
            batch_size=args.batch_size,
            gru_units=args.gru_units,
        )
        if args.workers:
            result = workers_scaling(config, workers=args.workers, repeats=args.repeats)
        else:
            result = round_vs_keras(config, repeats=args.repeats)
    print(json.dumps(result) if args.json else _format(result))
    return 0


def _format(result: dict) -> str:
    return "\n".join(f"{k:<28} {v}" for k, v in result.items())


def round_vs_keras(config: ExperimentConfig, *, repeats: int, data=None, cache=None) -> dict:
    """Median seconds of one FedAvg round's training (`learning.next` over every client) on the default path
    (shards of users per TFF client call) and on one TFF client per user, and of Keras training over the same
    batches; their ratios (`ratio`: the default path, `per_user_ratio`: one client per user). Each round's
    validation (federated evaluation on every client) is timed apart, as is the TFF worker's CPU during
    training. The first, warm-up round of each is left out."""
    from fedlab.config import training_path

    # Every client every round (no sampling, no dropout) and no early stop, so each round is the same work.
    config = config.replace(rounds=repeats + 1, patience=repeats + 1, clients_per_round=None, client_dropout=0.0)
    default, experiment = _path_rounds(config, data=data, cache=cache)
    per_user, _ = _path_rounds(config.replace(one_client_per_user=True), data=data, cache=cache)
    keras = statistics.median(_keras_same_work(experiment, repeats=repeats))
    fed = statistics.median(t.train_seconds for t in default)
    return {
        "fedavg_round_seconds": round(fed, 3),
        "keras_same_work_seconds": round(keras, 3),
        "ratio": round(fed / keras, 2),
        "path": training_path(config)[0],
        "per_user_round_seconds": round(statistics.median(t.train_seconds for t in per_user), 3),
        "per_user_ratio": round(statistics.median(t.train_seconds for t in per_user) / keras, 2),
        "validation_seconds": round(statistics.median(t.validation_seconds for t in default), 3),
        "per_user_validation_seconds": round(statistics.median(t.validation_seconds for t in per_user), 3),
        "worker_cpu_seconds_per_round": round(statistics.median(t.worker_cpu_seconds for t in default), 3),
        "per_user_worker_cpu_seconds_per_round": round(statistics.median(t.worker_cpu_seconds for t in per_user), 3),
        "worker_allocator": _allocator_name(),
        "clients": len(experiment.train_clients),
        "batches_per_round": _batches_per_round(experiment),
        "repeats": repeats,
        "cpu_cores": os.cpu_count(),
        "fedavg_round_all_seconds": [round(t.train_seconds, 3) for t in default],
        "per_user_round_all_seconds": [round(t.train_seconds, 3) for t in per_user],
    }


def _path_rounds(config: ExperimentConfig, *, data, cache) -> tuple[list, object]:
    """The round timings of one run of `config` after its warm-up round, and its (closed) experiment."""
    from fedlab.learning.engine import experiment_factory

    experiment = experiment_factory(cache)(config, data=data)
    try:
        experiment.prepare()
        for _ in experiment.rounds():
            pass
    finally:
        experiment.close()
    return experiment.round_timings[1:], experiment


def _allocator_name() -> str:
    from fedlab.learning.runtime import worker_allocator

    library = worker_allocator()
    return Path(library).name if library else "system"


LOCAL_WORKER_COUNTS = (1, 2, 4)


def parse_workers_option(text: str) -> tuple[int, ...] | tuple[str, ...]:
    """'local' -> (1, 2, 4); '1,2,8' -> counts of local workers; 'host:port,...' -> those workers."""
    items = [w.strip() for w in text.split(",") if w.strip()]
    if items == ["local"]:
        return LOCAL_WORKER_COUNTS
    if items and all(i.isdigit() and int(i) >= 1 for i in items):
        return tuple(int(i) for i in items)
    ExperimentConfig(workers=tuple(items))  # ConfigError unless each looks like host:port
    return tuple(items)


def workers_scaling(config: ExperimentConfig, *, workers: str, repeats: int) -> dict:
    """Median round seconds (training and validation, as in a run) on the local runtime and across workers.

    Local counts start that many workers on loopback; on one machine each worker already uses every
    core, so this measures the overhead of splitting, not a speed-up (that needs several machines).
    Every setup trains the same seeded rounds; their metrics are compared with the local runtime's.
    """
    from fedlab.learning.engine import BuildCache
    from fedlab.learning.runtime import check_workers, local_workers

    if repeats < 1:
        raise ConfigError(f"repeats must be at least 1, not {repeats}")
    plan = parse_workers_option(workers)
    if isinstance(plan[0], str):
        check_workers(plan)  # fail in seconds, before building anything
        setups = [(",".join(plan), plan)]
    else:
        setups = [(f"{count} local", count) for count in plan]
    # Dropout 0: with GRU dropout TFF's masks depend on thread scheduling, so metrics could not be compared.
    config = config.replace(rounds=repeats + 1, patience=repeats + 1, dropout=0.0)
    cache = BuildCache()
    local, local_metrics, experiment = _timed_rounds(config, cache)
    seconds, all_seconds, worst = {}, {"local runtime": local}, 0.0
    for label, setup in setups:
        if isinstance(setup, int):
            with local_workers(setup) as targets:
                times, metrics, _ = _timed_rounds(config.replace(workers=tuple(targets)), cache)
        else:
            times, metrics, _ = _timed_rounds(config.replace(workers=setup), cache)
        seconds[label], all_seconds[label] = round(statistics.median(times), 3), times
        worst = max(worst, float(np.max(np.abs(metrics - local_metrics) / np.maximum(np.abs(local_metrics), 1e-12))))
    base = statistics.median(local)
    return {
        "local_runtime_round_seconds": round(base, 3),
        "workers_round_seconds": seconds,
        "relative_to_local_runtime": {k: round(v / base, 2) for k, v in seconds.items()},
        "max_relative_metric_difference": float(f"{worst:.3g}"),
        "metrics_match_local": worst <= 1e-5,
        "clients": len(experiment.train_clients),
        "batches_per_round": _batches_per_round(experiment),
        "repeats": repeats,
        "dropout": 0.0,
        "cpu_cores": os.cpu_count(),
        "round_seconds_all": {k: [round(t, 3) for t in v] for k, v in all_seconds.items()},
    }


def _timed_rounds(config: ExperimentConfig, cache) -> tuple[list[float], np.ndarray, object]:
    """Round seconds (the first, warm-up round left out) and every round's metrics, for one setup."""
    from fedlab.learning.engine import experiment_factory

    experiment = experiment_factory(cache)(config)
    try:
        experiment.prepare()
        records = list(experiment.rounds())
    finally:
        experiment.close()
    metrics = np.array([[r.train_loss, r.train_accuracy, r.val_loss, r.val_accuracy] for r in records])
    return [r.seconds for r in records][1:], metrics, experiment


def _batches_per_round(experiment) -> int:
    sizes = experiment.data.train.client_sizes()
    per_client = np.ceil(sizes[sizes > 0] / experiment.config.batch_size)
    return int(per_client.sum() * experiment.config.epochs)


def _keras_same_work(experiment, *, repeats: int) -> list[float]:
    """Plain Keras over each client's batches in turn (same model, same batch boundaries). The pipeline runs
    without tf.data's autotuning and graph rewrites, as the clients' own datasets do: with autotuning on, `fit`
    was seen to stall for about a second after its last batch in some runs."""
    import tensorflow as tf

    from fedlab.learning.federated import lean_options
    from fedlab.learning.model import loss_fn, metrics_fn

    model = experiment.initial_model()
    model.compile(optimizer=tf.keras.optimizers.Adam(experiment.config.client_lr), loss=loss_fn(), metrics=metrics_fn())
    parts = experiment.round_datasets(experiment.train_clients, 0)
    data = parts[0]
    for part in parts[1:]:
        data = data.concatenate(part)
    data = data.with_options(lean_options())
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        model.fit(data, epochs=1, verbose=0)
        times.append(time.perf_counter() - started)
    return times[1:]


class PeakMemory:
    """Samples the resident memory of this process and its children (the TFF worker) every 0.2 s."""

    def __init__(self):
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_bytes = max(self.peak_bytes, tree_rss_bytes(os.getpid()))


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (a child that ends meanwhile counts 0)."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


def end_to_end(*, data: str | None, runs: int = 1, rounds: int = 10) -> dict:
    """The study's experiment, both presets, start to finish, as a user of the CLI would run it."""
    from fedlab.learning.engine import BuildCache
    from fedlab.learning.training import run_to_completion

    cache = BuildCache()
    results = []
    with PeakMemory() as memory:
        for _ in range(runs):
            started = time.perf_counter()
            first_round = {}
            accuracy = {}
            for preset in ("central", "biggest"):
                config = ExperimentConfig(
                    data=DataConfig(data=data, top_users=100, n=17),
                    features=PRESETS[preset],
                    epochs=4,
                    batch_size=16,
                    rounds=rounds,
                    patience=rounds,
                )
                t0 = time.perf_counter()

                def on_round(record, preset=preset, t0=t0, first_round=first_round):
                    first_round.setdefault(preset, time.perf_counter() - t0)

                out = run_to_completion(config, cache=cache, on_round=on_round)
                accuracy[preset] = round(out["test"]["accuracy"], 4)
            results.append(
                {
                    "total_seconds": round(time.perf_counter() - started, 1),
                    "first_round_seconds": {k: round(v, 1) for k, v in first_round.items()},
                    "test_accuracy": accuracy,
                    "rss_after_bytes": tree_rss_bytes(os.getpid()),
                }
            )
    return {
        "rounds": rounds,
        "runs": results,
        "peak_memory_bytes": memory.peak_bytes,
        "rss_after_run_mb": [round(r["rss_after_bytes"] / 2**20) for r in results],
        "total_seconds_median": statistics.median(r["total_seconds"] for r in results),
    }


def time_to_first_round(config: ExperimentConfig, *, repeats: int = 3) -> dict:
    """Seconds from Run (the experiment made) to its first finished round, `repeats` times each: cold (a new
    cache: data, model and TFF processes built in the run), after `engine.prebuild` into the cache, and again
    (the same settings run once more on the dashboard's cache, which kept the first run's runtime warm)."""
    from fedlab.learning.engine import BuildCache, prebuild

    if repeats < 1:
        raise ConfigError(f"repeats must be at least 1, not {repeats}")
    cold, prebuilt, again, prebuild_seconds = [], [], [], []
    for _ in range(repeats):
        cold.append(_seconds_to_first_round(config, BuildCache()))
        cache, started = BuildCache(keep_runtime=True), time.perf_counter()
        try:
            prebuild(config, cache, warm=True)
            prebuild_seconds.append(time.perf_counter() - started)
            prebuilt.append(_seconds_to_first_round(config, cache))
            again.append(_seconds_to_first_round(config, cache))
        finally:
            cache.close()
    return {
        "cold_seconds": round(statistics.median(cold), 1),
        "prebuilt_seconds": round(statistics.median(prebuilt), 1),
        "again_seconds": round(statistics.median(again), 1),
        "prebuild_seconds": round(statistics.median(prebuild_seconds), 1),
        "cold_all_seconds": [round(t, 1) for t in cold],
        "prebuilt_all_seconds": [round(t, 1) for t in prebuilt],
        "again_all_seconds": [round(t, 1) for t in again],
        "clients": config.data.top_users,
        "gru_units": config.gru_units,
        "epochs": config.epochs,
        "repeats": repeats,
        "cpu_cores": os.cpu_count(),
    }


def _seconds_to_first_round(config: ExperimentConfig, cache) -> float:
    from fedlab.learning.engine import experiment_factory

    started = time.perf_counter()
    experiment = experiment_factory(cache)(config)
    try:
        experiment.prepare()
        rounds = experiment.rounds()
        next(rounds)
        seconds = time.perf_counter() - started
        rounds.close()
    finally:
        experiment.close()
    return seconds
