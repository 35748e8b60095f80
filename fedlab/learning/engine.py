"""One experiment: prepare, then a generator of per-round records, then the test of the kept model.

The caller owns the loop (as in TFF's simple_fedavg): the CLI, the dashboard's job manager and the
tests all iterate `rounds()` and may stop at any round. TensorFlow Federated stays behind
fedlab.learning.federated: here weights are plain numpy lists in Keras order.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import functools
import gc
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import psutil
import tensorflow as tf

from fedlab.config import HABIT_FEATURES, DataConfig, ExperimentConfig, training_path
from fedlab.data import attacks, pipeline
from fedlab.errors import ConfigError
from fedlab.learning.compiled import CompiledComputations
from fedlab.learning.importance import PREDICT_BATCH, ClientHits, batched_logits, shuffled_hits
from fedlab.learning.model import ModelSpec, build_model, local_layer_names, loss_fn, metrics_fn
from fedlab.learning.stopping import early_stopping
from fedlab.records import RoundRecord, TestReport
from fedlab.results import metrics
from fedlab.results.baselines import compute_baselines


class BuildCache:
    """Prepared data per data config and built TFF processes per model shape, shared by runs in one process, so a
    second run with the same data and shapes starts at once; their compiled forms too, so a new runtime does not
    compile them again. With `keep_runtime` (the dashboard, which trains run after run) it also keeps the last
    run's local TFF runtime for the next run of the same processes; `close()` stops it."""

    def __init__(self, *, max_datasets: int = 4, keep_runtime: bool = False):
        self._lock = threading.Lock()
        self._processes: dict[tuple, object] = {}
        self._evaluations: dict[ModelSpec, object] = {}
        self._compiled = CompiledComputations()
        self._keep_runtime = keep_runtime
        self._warm: tuple | None = None  # (processes, Runtime): a finished run's idle local runtime
        self._datasets: collections.OrderedDict = collections.OrderedDict()
        self._max_datasets = max_datasets

    def data(self, config: DataConfig, *, habits: bool = False, seed: int = 0) -> pipeline.SequenceData:
        # The seed only reshuffles IID clients, so it is part of the key only then.
        key = (config, habits, seed if config.iid else None)
        with self._lock:
            if key in self._datasets:
                self._datasets.move_to_end(key)
                return self._datasets[key]
        data = pipeline.load_and_prepare(config, habits=habits, seed=seed)
        with self._lock:
            self._datasets[key] = data
            while len(self._datasets) > self._max_datasets:
                self._datasets.popitem(last=False)
        return data

    def processes(self, spec: ModelSpec, config: ExperimentConfig, *, clients_per_round: int):
        from fedlab.learning.federated import build_evaluation, build_processes

        key = (
            spec,
            config.model_shape_key,
            config.seed,
            clients_per_round if config.dp_clip is not None or config.defense == "norm-bound" else None,
        )
        with self._lock:
            if key not in self._processes:
                # One evaluation per model shape serves every algorithm and seed (a third of a build's time).
                if not config.reconstruction and spec not in self._evaluations:
                    self._evaluations[spec] = build_evaluation(spec)
                self._processes[key] = build_processes(
                    spec, config, clients_per_round=clients_per_round, evaluation=self._evaluations.get(spec)
                )
            return self._processes[key]

    def runtime(self, processes, config: ExperimentConfig):
        """The TFF runtime for a run of these processes: the last run's, kept warm, when it ran the same processes
        on this machine (its context has them compiled and its worker has their functions ready: a tiny run's
        rounds cost a fifth of a fresh runtime's); else a new one."""
        from fedlab.learning.runtime import Runtime

        with self._lock:
            warm, self._warm = self._warm, None
        if warm is not None:
            if warm[0] is processes and not config.workers:
                return warm[1]
            _close_runtime(warm[1])
        return Runtime(workers=config.workers, secure_sum=config.secure_aggregation, compiled=self._compiled)

    @property
    def keeps_runtime(self) -> bool:
        return self._keep_runtime

    def keep_warm(self, processes, runtime) -> None:
        """With `keep_runtime`, keeps a finished run's local runtime idle for the next run of the same processes;
        one at most, as a worker that ran other processes keeps their functions (about 25 MB each). Otherwise,
        or when it failed or spans remote workers, closes it."""
        if not self._keep_runtime or runtime.failed or runtime.workers:
            _close_runtime(runtime)
            return
        with self._lock:
            previous, self._warm = self._warm, (processes, runtime)
        if previous is not None:
            _close_runtime(previous[1])

    def close(self) -> None:
        """Stops the idle runtime, if any (its worker also stops when this process ends)."""
        with self._lock:
            warm, self._warm = self._warm, None
        if warm is not None:
            _close_runtime(warm[1])


def _close_runtime(runtime) -> None:
    from fedlab.learning.federated import forget_compiled_computations

    runtime.close()
    forget_compiled_computations()


def experiment_factory(cache: BuildCache | None = None) -> Callable[[ExperimentConfig], Experiment]:
    """config -> Experiment; every experiment it makes shares one BuildCache (this one, or a new one), so data is
    prepared once and TFF processes are built once per shape. The CLI, the demo runs, the bench and the
    dashboard all make their experiments with it."""
    return functools.partial(Experiment, cache=BuildCache() if cache is None else cache)


def prebuild(config: ExperimentConfig, cache: BuildCache, *, warm: bool = False) -> dict[str, float]:
    """Prepares this config's data and (when federated) builds its TFF processes into `cache`, so that a run of it
    made with the same cache skips both. With `warm` and a cache that keeps a runtime (the dashboard's), also runs
    the processes once on a sliver of the data (`Experiment.warm_up`), so the next run starts on a runtime that has
    them compiled. Returns the timing (preprocess and build seconds)."""
    experiment = Experiment(config, cache=cache)
    experiment.build()
    if warm and cache.keeps_runtime:
        experiment.warm_up()
    return dict(experiment.timing)


def release_run_memory() -> None:
    """Frees what a finished run leaves behind in this thread: Keras' global graph (every GRU built adds its
    functions to it, a few MB a run), models caught in reference cycles (freed only by a full collection),
    and the heap glibc keeps in its per-thread arenas (handed back to the OS, so resident memory shows it)."""
    tf.keras.backend.clear_session()
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # another C library: nothing to hand back
        return
    libc.malloc_trim(0)


@dataclass(frozen=True)
class RoundTiming:
    """Where a round's time went: training (FedAvg's `next`, or a Keras epoch) and validation."""

    train_seconds: float
    validation_seconds: float
    worker_cpu_seconds: float  # CPU the local TFF workers used during training (0 when centralized or remote)


@dataclass(frozen=True)
class _Step:
    """One finished round (or epoch), before early stopping looks at it."""

    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    clients: int
    weights: list[np.ndarray]  # Keras get_weights() order
    seconds: float  # the whole round: data, training and validation
    timing: RoundTiming
    bytes_down: int = 0
    bytes_up: int = 0
    bytes_saved: int = 0
    clipped: int = 0
    zeroed: int = 0


class Experiment:
    """A federated (TFF FedAvg) or centralized (plain Keras) run of one config."""

    def __init__(
        self, config: ExperimentConfig, *, data: pipeline.SequenceData | None = None, cache: BuildCache | None = None
    ):
        self.config = config
        self.data = data
        self.timing: dict[str, float] = {}
        self.round_timings: list[RoundTiming] = []  # one per finished round, as `rounds()` yields them
        self._cache = cache or BuildCache()
        self._runtime = None
        self._processes = None
        self._initial_weights: list[np.ndarray] | None = None
        self._best_weights: list[np.ndarray] | None = None
        self._client_importance_hits: tuple | None = None  # set by a reconstruction test (see _importance)
        self.attack: attacks.Attack | None = None  # set by build() when some clients are malicious

    # -- set-up -----------------------------------------------------------------------------------
    def build(self) -> None:
        """Loads the data and builds the model's shape and (federated) the TFF processes, through the cache;
        starts nothing. `prebuild` stops here; `prepare` goes on."""
        started = time.perf_counter()
        if self.data is None:
            habits = any(f in HABIT_FEATURES for f in self.config.features)
            self.data = self._cache.data(self.config.data, habits=habits, seed=self.config.seed)
        self.timing["preprocess_seconds"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        self._check_fits_data()
        self.spec = ModelSpec.from_data(self.config, self.data)
        self._train_clients = np.flatnonzero(self.data.train.client_sizes() > 0)
        self.attack = self._resolve_attack()
        if self.config.mode == "federated":
            self._processes = self._cache.processes(self.spec, self.config, clients_per_round=self._per_round())
        self.timing["build_seconds"] = round(time.perf_counter() - started, 3)

    def prepare(self) -> None:
        """build(), then the seeded initial weights and (federated) the TFF runtime: ready for `rounds()`."""
        self.build()
        started = time.perf_counter()
        self._initial_weights = self._fresh_model(seeded=True).get_weights()
        if self.config.mode == "federated":
            self._runtime = self._cache.runtime(self._processes, self.config)
        self.timing["build_seconds"] = round(self.timing["build_seconds"] + time.perf_counter() - started, 3)

    @property
    def client_data(self):
        """The run's TFF client datasets (fedlab.learning.client_data), once build() has run."""
        from fedlab.learning.client_data import ClientData

        shards = self._processes is not None and self._processes.shards
        return ClientData(data=self.data, spec=self.spec, config=self.config, attack=self.attack, shards=shards)

    def round_datasets(self, clients: np.ndarray, number: int) -> list:
        """The FedAvg training data of round `number` for these clients, one dataset each."""
        return self.client_data.round_datasets(clients, number)

    def _resolve_attack(self) -> attacks.Attack | None:
        """The run's malicious clients (drawn once from its seed) and how they poison their targets."""
        config = self.config
        if config.mode != "federated" or config.malicious_clients == 0:
            return None
        targeted = config.attack == "targeted"
        return attacks.Attack(
            kind=config.attack,
            malicious=attacks.choose_malicious(self._train_clients, share=config.malicious_clients, seed=config.seed),
            num_classes=len(self.data.class_names),
            seed=config.seed,
            pair=attacks.resolve_pair(config.attack_classes, self.data.class_names) if targeted else None,
        )

    def _per_round(self) -> int:
        return min(self.config.clients_per_round or len(self._train_clients), len(self._train_clients))

    def _check_fits_data(self) -> None:
        sizes = self.data.train.client_sizes()
        if sizes.max(initial=0) == 0:
            raise ConfigError(f"no client has a training sequence of N={self.config.data.n}; choose a smaller N")
        missing = [f for f in self.config.features if f not in self.data.train.inputs]
        if missing:
            raise ConfigError(f"the prepared data has no {', '.join(missing)}; prepare it with habits=True")

    def _fresh_model(self, *, seeded: bool = False) -> tf.keras.Model:
        # Built on demand: tracing TFF processes invalidates Keras models made before it.
        # Seeded initial weights keep runs reproducible even with cached TFF processes.
        if seeded:
            tf.keras.utils.set_random_seed(self.config.seed)
        return build_model(self.spec)

    @property
    def train_clients(self) -> np.ndarray:
        """Indices of the clients with at least one training sequence (the ones rounds sample from)."""
        return self._train_clients

    def initial_model(self) -> tf.keras.Model:
        """A Keras model of this run's shape holding the run's seeded initial weights (after `prepare`)."""
        model = self._fresh_model()
        model.set_weights(self._initial_weights)
        return model

    # -- training ---------------------------------------------------------------------------------
    def rounds(self) -> Iterator[RoundRecord]:
        """One record per round (or epoch); keeps the lowest-validation-loss weights; stops early."""
        started = time.perf_counter()
        steps = self._federated_rounds() if self.config.mode == "federated" else self._centralized_epochs()
        val_losses: list[float] = []
        try:
            for number, step in enumerate(steps, 1):
                val_losses.append(step.val_loss)
                decision = early_stopping(val_losses, patience=self.config.patience)
                is_best = decision.best_round == number
                if is_best:
                    self._best_weights = step.weights
                self.round_timings.append(step.timing)
                yield RoundRecord(
                    round=number,
                    train_loss=step.train_loss,
                    train_accuracy=step.train_accuracy,
                    val_loss=step.val_loss,
                    val_accuracy=step.val_accuracy,
                    clients=step.clients,
                    seconds=round(step.seconds, 3),
                    is_best=is_best,
                    bytes_down=step.bytes_down,
                    bytes_up=step.bytes_up,
                    bytes_saved=step.bytes_saved,
                    clipped=step.clipped,
                    zeroed=step.zeroed,
                )
                if decision.stop:
                    break
        finally:
            steps.close()
            self.timing["train_seconds"] = round(time.perf_counter() - started, 3)

    def _federated_rounds(self) -> Iterator[_Step]:
        from fedlab.learning import federated

        rng = np.random.default_rng(self.config.seed)
        val_data = self.client_data.validation()
        with self._runtime.activate():
            state = federated.initial_state(self._processes, self._initial_weights)
        for number in range(1, self.config.rounds + 1):
            started = time.perf_counter()
            chosen = self._sample_clients(rng)
            train_data = self.client_data.round(chosen, number)
            with self._runtime.activate():
                cpu, training = self._worker_cpu_seconds(), time.perf_counter()
                result = federated.run_round(
                    self._processes,
                    state,
                    train_data,
                    config=self.config,
                    sampled=self._per_round(),
                    reporting=len(chosen),
                )
                cpu, validating = self._worker_cpu_seconds() - cpu, time.perf_counter()
                val_loss, val_acc = federated.evaluate(self._processes, result.weights, val_data)
            state, ended = result.state, time.perf_counter()
            yield _Step(
                train_loss=result.train_loss,
                train_accuracy=result.train_accuracy,
                val_loss=val_loss,
                val_accuracy=val_acc,
                clients=len(chosen),
                weights=result.weights,
                seconds=ended - started,
                timing=RoundTiming(
                    train_seconds=validating - training, validation_seconds=ended - validating, worker_cpu_seconds=cpu
                ),
                bytes_down=result.bytes_down,
                bytes_up=result.bytes_up,
                bytes_saved=result.bytes_saved,
                clipped=result.clipped,
                zeroed=result.zeroed,
            )

    def _worker_cpu_seconds(self) -> float:
        """User + system CPU seconds used so far by this run's local TFF workers (a finished one counts 0)."""
        total = 0.0
        for pid in self._runtime.pids:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def _sample_clients(self, rng: np.random.Generator) -> np.ndarray:
        """Seeded sample of clients for a round; each then fails to report with the dropout probability."""
        chosen = np.sort(rng.choice(self._train_clients, size=self._per_round(), replace=False))
        if self.config.client_dropout > 0:
            reported = rng.random(len(chosen)) >= self.config.client_dropout
            if not reported.any():  # a round needs at least one update
                reported[rng.integers(len(chosen))] = True
            chosen = chosen[reported]
        return chosen

    def _centralized_epochs(self) -> Iterator[_Step]:
        """The same model in plain Keras on the pooled training data of the same clients."""
        model = self.initial_model()
        opt = {"adam": tf.keras.optimizers.Adam, "sgd": tf.keras.optimizers.SGD}[self.config.client_optimizer]
        model.compile(optimizer=opt(learning_rate=self.config.client_lr), loss=loss_fn(), metrics=metrics_fn())
        train_x, train_y = self.pooled("train")
        val_x, val_y = self.pooled("val")
        for _ in range(self.config.rounds):
            started = time.perf_counter()
            history = model.fit(train_x, train_y, batch_size=self.config.batch_size, epochs=1, shuffle=True, verbose=0)
            validating = time.perf_counter()
            val_loss, val_acc = model.evaluate(val_x, val_y, batch_size=PREDICT_BATCH, verbose=0)
            ended = time.perf_counter()
            yield _Step(
                train_loss=float(history.history["loss"][0]),
                train_accuracy=float(history.history["accuracy"][0]),
                val_loss=float(val_loss),
                val_accuracy=float(val_acc),
                clients=len(self._train_clients),
                weights=model.get_weights(),
                seconds=ended - started,
                timing=RoundTiming(
                    train_seconds=validating - started, validation_seconds=ended - validating, worker_cpu_seconds=0.0
                ),
            )

    def pooled(self, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Every client's sequences of one split together: (inputs by feature, targets)."""
        arrays = self.data.split(split)
        return {f: arrays.inputs[f] for f in self.spec.features}, arrays.targets

    # -- results ----------------------------------------------------------------------------------
    def trained_model(self) -> tf.keras.Model:
        """The Keras model holding the kept (lowest validation loss) weights."""
        if self._best_weights is None:
            raise ConfigError("the run has no finished round yet, so there is no model to test")
        model = self._fresh_model()
        model.set_weights(self._best_weights)
        return model

    def test(self) -> TestReport:
        """The kept model on every test sequence (with reconstruction, each client's user part re-learnt first);
        with `personalize_epochs`, also after local fine-tuning."""
        model = self.trained_model()
        probs, targets = self._reconstructed_probs(model) if self.config.reconstruction else self._shared_probs(model)
        report = metrics.build_test_report(
            probs_by_client=probs,
            targets_by_client=targets,
            class_names=self.data.class_names,
            checkins=self.data.checkins,
        )
        report = dataclasses.replace(report, importance=self._importance(model))
        if self.attack is not None:
            report = dataclasses.replace(report, attack=self._attack_summary(report))
        if self.config.personalize_epochs == 0:
            return report
        return dataclasses.replace(report, personalized=self._personalized_summary(model))

    def _shared_probs(self, model: tf.keras.Model) -> tuple[dict, dict]:
        """(probabilities, targets) by client id of the kept model on each client's test sequences."""
        test = self.data.test
        if len(test.targets) == 0:
            return {}, {}
        # All clients' sequences in one pass (each row is scored on its own), as the importance scores them.
        every = tf.nn.softmax(batched_logits(model, {f: test.inputs[f] for f in self.spec.features})).numpy()
        probs, targets = {}, {}
        for i, client in enumerate(self.data.client_ids):
            lo, hi = test.offsets[i], test.offsets[i + 1]
            if hi > lo:
                probs[client], targets[client] = every[lo:hi], test.targets[lo:hi]
        return probs, targets

    def _importance(self, model: tf.keras.Model) -> dict:
        """Permutation importance of the kept model (see fedlab.learning.importance), from each client's own test
        sequences; under reconstruction, from the hits each client's re-learnt model counted during the test."""
        from fedlab.results.importance import importance_summary

        started = time.perf_counter()
        hits = self._client_importance_hits
        if hits is None:
            hits = shuffled_hits(model, self.data.test, self.spec.features, seed=self.config.seed)
        base, shuffled, examples = hits
        summary = importance_summary(
            base_hits=base, shuffled_hits=shuffled, examples=examples, features=self.spec.features
        )
        self.timing["importance_seconds"] = round(
            time.perf_counter() - started + self.timing.pop("reconstructed_importance_seconds", 0.0), 3
        )
        return summary

    def _reconstructed_probs(self, model: tf.keras.Model) -> tuple[dict, dict]:
        """Federated Reconstruction's test: per client, the kept global part with its user part at its initial
        values (as `model` holds them), that part alone re-learnt on the client's earlier check-ins for the local
        epochs (plain SGD, as in training), then its test sequences predicted."""
        from fedlab.learning.personalize import personalized_probs

        started = time.perf_counter()
        collect = ClientHits(self.data.test, self.spec.features, seed=self.config.seed)
        out = personalized_probs(
            model,
            self.data,
            features=self.spec.features,
            epochs=self.config.epochs * self.config.reconstruction_epochs,
            learning_rate=self.config.reconstruction_lr,
            batch_size=self.config.batch_size,
            seed=self.config.seed,
            train_only=local_layer_names(self.spec, self.config.local_part),
            on_client=collect,
        )
        self._client_importance_hits = collect.result()
        self.timing["reconstructed_importance_seconds"] = collect.seconds
        self.timing["reconstruct_seconds"] = round(time.perf_counter() - started - collect.seconds, 3)
        return out

    def _attack_summary(self, report: TestReport) -> dict:
        return attacks.attack_summary(
            attack=self.attack,
            client_ids=self.data.client_ids,
            class_names=self.data.class_names,
            per_client=report.per_client,
            confusion=report.confusion,
        )

    def _personalized_summary(self, model: tf.keras.Model) -> dict[str, float]:
        from fedlab.learning.personalize import personalized_probs

        started = time.perf_counter()
        probs, targets = personalized_probs(
            model,
            self.data,
            features=self.spec.features,
            epochs=self.config.personalize_epochs,
            learning_rate=self.config.personalize_lr,
            batch_size=self.config.batch_size,
            seed=self.config.seed,
        )
        tuned = metrics.build_test_report(
            probs_by_client=probs,
            targets_by_client=targets,
            class_names=self.data.class_names,
            checkins=self.data.checkins,
        )
        self.timing["personalize_seconds"] = round(time.perf_counter() - started, 3)
        return {
            "epochs": self.config.personalize_epochs,
            "learning_rate": self.config.personalize_lr,
            "accuracy": tuned.accuracy,
            "top5_accuracy": tuned.top5_accuracy,
            "mrr": tuned.mrr,
            "loss": tuned.loss,
            "examples": tuned.examples,
        }

    def baselines(self) -> dict[str, float]:
        test = self.data.test
        inputs, targets = {}, {}
        for i, client in enumerate(self.data.client_ids):
            x, y = test.client(i)
            inputs[client], targets[client] = x["cat_id"], y
        return compute_baselines(
            test_inputs=inputs, test_targets=targets, history=self.data.history, num_classes=len(self.data.class_names)
        )

    def save_model(self, path: str) -> None:
        self.trained_model().save(path)

    def summary(self) -> dict:
        if self.data is None:
            return {}
        path, why = training_path(self.config)
        return {
            **self.data.summary,
            "train_clients": int(len(self._train_clients)),
            "training_path": path,
            "training_path_reason": why,
        }

    def warm_up(self) -> None:
        """Runs this config's TFF computations once on a sliver of its data (one user a shard: a round, then their
        validation), recording nothing, then closes: its runtime, kept warm by the cache, has them compiled and its
        worker has their functions ready. Only for federated runs on shards (the dashboard's default)."""
        from fedlab.learning import federated, sharded

        if self._processes is None or not self._processes.shards:
            return
        try:
            self.prepare()
            workers = len(self.config.workers)
            few = self._train_clients[
                : sharded.shard_count(len(self._train_clients), cores=sharded.local_cores(), workers=workers)
            ]
            data = self.client_data
            with self._runtime.activate():
                state = federated.initial_state(self._processes, self._initial_weights)
                result = federated.run_round(self._processes, state, data.round(few, 0), config=self.config)
                federated.evaluate(self._processes, result.weights, data.validation(few))
        finally:
            self.close()

    def close(self) -> None:
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            self._cache.keep_warm(self._processes, runtime)
        release_run_memory()
