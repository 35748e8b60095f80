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
    p.add_argument("--workers", default="",
                   help="time the round on TFF workers next to the local runtime: 'local' = 1, 2 and 4 workers "
                        "started on loopback by the bench, '1,2,8' = those counts, or host:port,... of running workers")
    p.add_argument("--end-to-end", action="store_true",
                   help="the study's full experiment: both presets, 100 clients, N 17, 4 epochs, batch 16, 10 rounds")
    p.add_argument("--runs", type=int, default=1, help="with --end-to-end: repeat the experiment in one process")
    p.add_argument("--rounds", type=int, default=10,
                   help="with --end-to-end: rounds per model (10 as the study; fewer to check memory over many runs)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_bench)


def run_bench(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.end_to_end:
        result = end_to_end(data=args.data, runs=args.runs, rounds=args.rounds)
    else:
        config = ExperimentConfig(
            data=DataConfig(data=args.data, top_users=args.clients, n=args.n), features=PRESETS[args.preset],
            epochs=args.epochs, batch_size=args.batch_size, gru_units=args.gru_units)
        if args.workers:
            result = workers_scaling(config, workers=args.workers, repeats=args.repeats)
        else:
            result = round_vs_keras(config, repeats=args.repeats)
    print(json.dumps(result) if args.json else _format(result))
    return 0


def _format(result: dict) -> str:
    return "\n".join(f"{k:<28} {v}" for k, v in result.items())


def round_vs_keras(config: ExperimentConfig, *, repeats: int, data=None, cache=None) -> dict:
    """Median seconds of one FedAvg round (`learning.next`) and of Keras training over the same batches;
    their ratio. The round's validation (federated evaluation on every client) is timed apart."""
    from fedlab.engine import Experiment

    experiment = Experiment(config, data=data, cache=cache)
    try:
        experiment.prepare()
        fed_times, validation_times, worker_cpu = _fedavg_round_times(experiment, repeats=repeats)
        keras_times = _keras_same_work(experiment, repeats=repeats)
    finally:
        experiment.close()
    fed, keras = statistics.median(fed_times), statistics.median(keras_times)
    return {"fedavg_round_seconds": round(fed, 3), "keras_same_work_seconds": round(keras, 3),
            "ratio": round(fed / keras, 2), "validation_seconds": round(statistics.median(validation_times), 3),
            "worker_cpu_seconds_per_round": round(statistics.median(worker_cpu), 3),
            "worker_allocator": _allocator_name(), "clients": len(experiment._train_clients),
            "batches_per_round": _batches_per_round(experiment), "repeats": repeats,
            "fedavg_round_all_seconds": [round(t, 3) for t in fed_times]}


def _fedavg_round_times(experiment, *, repeats: int) -> tuple[list[float], list[float], list[float]]:
    """Seconds of `learning.next` over all training clients and of `evaluation.next` over the validation
    clients, per round, and the TFF worker's CPU seconds per training round; the first, warm-up round left out."""
    from fedlab.runtime import running_worker_pids

    learning, evaluation = experiment._processes.learning, experiment._processes.evaluation
    clients = experiment._train_clients
    val_data = experiment._datasets("val", np.flatnonzero(experiment.data.val.client_sizes() > 0))
    train, validation, cpu = [], [], []
    with experiment._runtime.activate():
        state = learning.set_model_weights(learning.initialize(), experiment._model_weights())
        eval_state = evaluation.initialize()
        workers = running_worker_pids()
        for number in range(repeats + 1):
            data = experiment.round_datasets(clients, number)
            cpu_before, started = _cpu_seconds(workers), time.perf_counter()
            state = learning.next(state, data).state
            train.append(time.perf_counter() - started)
            cpu.append(_cpu_seconds(workers) - cpu_before)
            started = time.perf_counter()
            eval_state = evaluation.set_model_weights(eval_state, learning.get_model_weights(state))
            evaluation.next(eval_state, val_data)
            validation.append(time.perf_counter() - started)
    return train[1:], validation[1:], cpu[1:]


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (0 for any that is gone)."""
    ticks = sum(int(fields[11]) + int(fields[12]) for fields in map(_stat_fields, pids) if fields)
    return ticks / os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state first); [] when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _allocator_name() -> str:
    from fedlab.runtime import worker_allocator

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
    from fedlab.engine import BuildCache
    from fedlab.runtime import check_workers, local_workers

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
    return {"local_runtime_round_seconds": round(base, 3), "workers_round_seconds": seconds,
            "relative_to_local_runtime": {k: round(v / base, 2) for k, v in seconds.items()},
            "max_relative_metric_difference": float(f"{worst:.3g}"), "metrics_match_local": worst <= 1e-5,
            "clients": len(experiment._train_clients), "batches_per_round": _batches_per_round(experiment),
            "repeats": repeats, "dropout": 0.0, "cpu_cores": os.cpu_count(),
            "round_seconds_all": {k: [round(t, 3) for t in v] for k, v in all_seconds.items()}}


def _timed_rounds(config: ExperimentConfig, cache) -> tuple[list[float], np.ndarray, object]:
    """Round seconds (the first, warm-up round left out) and every round's metrics, for one setup."""
    from fedlab.engine import Experiment

    experiment = Experiment(config, cache=cache)
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
    """Plain Keras over each client's batches in turn (same model, same batch boundaries)."""
    import tensorflow as tf

    from fedlab.federated import client_dataset
    from fedlab.model import loss_fn, metrics_fn

    cfg = experiment.config
    model = experiment._fresh_model()
    model.compile(optimizer=tf.keras.optimizers.Adam(cfg.client_lr), loss=loss_fn(), metrics=metrics_fn())
    parts = []
    for i in experiment._train_clients:
        inputs, targets = experiment.data.train.client(int(i))
        parts.append(client_dataset(inputs, targets, experiment.spec, batch_size=cfg.batch_size, epochs=cfg.epochs,
                                    shuffle_seed=int(i)))
    data = parts[0]
    for part in parts[1:]:
        data = data.concatenate(part)
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

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_bytes = max(self.peak_bytes, tree_rss_bytes(os.getpid()))


def tree_rss_bytes(pid: int) -> int:
    total = 0
    for entry in Path("/proc").iterdir():
        fields = _stat_fields(entry.name) if entry.name.isdigit() else []
        if fields and (int(entry.name) == pid or int(fields[1]) == pid):
            total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return total


def end_to_end(*, data: str | None, runs: int = 1, rounds: int = 10) -> dict:
    """The study's experiment, both presets, start to finish, as a user of the CLI would run it."""
    from fedlab.engine import BuildCache
    from fedlab.training import run_to_completion

    cache = BuildCache()
    results = []
    with PeakMemory() as memory:
        for run in range(runs):
            started = time.perf_counter()
            first_round = {}
            accuracy = {}
            for preset in ("central", "biggest"):
                config = ExperimentConfig(data=DataConfig(data=data, top_users=100, n=17), features=PRESETS[preset],
                                          epochs=4, batch_size=16, rounds=rounds, patience=rounds)
                t0 = time.perf_counter()
                out = run_to_completion(config, cache=cache,
                                        on_round=lambda r, p=preset, t0=t0: first_round.setdefault(p, time.perf_counter() - t0))
                accuracy[preset] = round(out["test"]["accuracy"], 4)
            results.append({"total_seconds": round(time.perf_counter() - started, 1),
                            "first_round_seconds": {k: round(v, 1) for k, v in first_round.items()},
                            "test_accuracy": accuracy, "rss_after_bytes": tree_rss_bytes(os.getpid())})
    return {"rounds": rounds, "runs": results, "peak_memory_bytes": memory.peak_bytes,
            "total_seconds_median": statistics.median(r["total_seconds"] for r in results)}
