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
    p.add_argument("--workers", default="", help="host:port,... of TFF workers to time as well")
    p.add_argument("--end-to-end", action="store_true",
                   help="the study's full experiment: both presets, 100 clients, N 17, 4 epochs, batch 16, 10 rounds")
    p.add_argument("--runs", type=int, default=1, help="with --end-to-end: repeat the experiment in one process")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_bench)


def run_bench(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.end_to_end:
        result = end_to_end(data=args.data, runs=args.runs)
    else:
        config = ExperimentConfig(
            data=DataConfig(data=args.data, top_users=args.clients, n=args.n), features=PRESETS[args.preset],
            epochs=args.epochs, batch_size=args.batch_size, gru_units=args.gru_units)
        result = round_vs_keras(config, repeats=args.repeats)
    print(json.dumps(result) if args.json else _format(result))
    return 0


def _format(result: dict) -> str:
    return "\n".join(f"{k:<28} {v}" for k, v in result.items())


def round_vs_keras(config: ExperimentConfig, *, repeats: int) -> dict:
    """Median seconds of one FedAvg round and of Keras training over the same batches; their ratio."""
    from fedlab.engine import Experiment

    experiment = Experiment(config)
    try:
        experiment.prepare()
        rounds = experiment.rounds()
        fed_times = [next(rounds).seconds for _ in range(repeats + 1)][1:]  # the first round warms up
        rounds.close()
        keras_times = _keras_same_work(experiment, repeats=repeats)
    finally:
        experiment.close()
    fed, keras = statistics.median(fed_times), statistics.median(keras_times)
    return {"fedavg_round_seconds": round(fed, 3), "keras_same_work_seconds": round(keras, 3),
            "ratio": round(fed / keras, 2), "clients": len(experiment._train_clients),
            "batches_per_round": _batches_per_round(experiment), "repeats": repeats,
            "fedavg_round_all_seconds": [round(t, 3) for t in fed_times]}


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
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(entry.name) == pid or int(fields[1]) == pid:
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    return total


def end_to_end(*, data: str | None, runs: int = 1) -> dict:
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
                                          epochs=4, batch_size=16, rounds=10, patience=10)
                t0 = time.perf_counter()
                out = run_to_completion(config, cache=cache,
                                        on_round=lambda r, p=preset, t0=t0: first_round.setdefault(p, time.perf_counter() - t0))
                accuracy[preset] = round(out["test"]["accuracy"], 4)
            results.append({"total_seconds": round(time.perf_counter() - started, 1),
                            "first_round_seconds": {k: round(v, 1) for k, v in first_round.items()},
                            "test_accuracy": accuracy, "rss_after_bytes": tree_rss_bytes(os.getpid())})
    return {"runs": results, "peak_memory_bytes": memory.peak_bytes,
            "total_seconds_median": statistics.median(r["total_seconds"] for r in results)}
