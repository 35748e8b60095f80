"""One experiment: prepare, then a generator of per-round records, then the test of the kept model.

The caller owns the loop (as in TFF's simple_fedavg): the CLI, the dashboard's job manager and the
tests all iterate `rounds()` and may stop at any round.
"""
from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from fedlab import metrics, pipeline
from fedlab.baselines import compute_baselines
from fedlab.config import HABIT_FEATURES, DataConfig, ExperimentConfig
from fedlab.errors import ConfigError
from fedlab.model import ModelSpec, build_model, loss_fn, metrics_fn
from fedlab.records import RoundRecord, TestReport

PREDICT_BATCH = 1024


class BuildCache:
    """Prepared data per data config and built TFF processes per model shape, shared by runs in one
    process, so a second run with the same data and shapes starts at once."""

    def __init__(self, *, max_datasets: int = 4):
        self._lock = threading.Lock()
        self._processes: dict[tuple, object] = {}
        self._datasets: collections.OrderedDict = collections.OrderedDict()
        self._max_datasets = max_datasets

    def data(self, config: DataConfig, *, habits: bool = False) -> pipeline.SequenceData:
        key = (config, habits)
        with self._lock:
            if key in self._datasets:
                self._datasets.move_to_end(key)
                return self._datasets[key]
        data = pipeline.load_and_prepare(config, habits=habits)
        with self._lock:
            self._datasets[key] = data
            while len(self._datasets) > self._max_datasets:
                self._datasets.popitem(last=False)
        return data

    def processes(self, spec: ModelSpec, config: ExperimentConfig, *, clients_per_round: int):
        from fedlab.federated import build_processes

        key = (spec, config.model_shape_key, config.seed, clients_per_round if config.dp_clip is not None else None)
        with self._lock:
            if key not in self._processes:
                self._processes[key] = build_processes(spec, config, clients_per_round=clients_per_round)
            return self._processes[key]


class Experiment:
    """A federated (TFF FedAvg) or centralized (plain Keras) run of one config."""

    def __init__(self, config: ExperimentConfig, *, data: pipeline.SequenceData | None = None,
                 cache: BuildCache | None = None):
        self.config = config
        self.data = data
        self.timing: dict[str, float] = {}
        self._cache = cache or BuildCache()
        self._runtime = None
        self._best_weights: list[np.ndarray] | None = None

    # -- set-up -----------------------------------------------------------------------------------
    def prepare(self) -> None:
        started = time.perf_counter()
        if self.data is None:
            self.data = self._cache.data(self.config.data, habits=any(f in HABIT_FEATURES for f in self.config.features))
        self.timing["preprocess_seconds"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        self._check_fits_data()
        self.spec = ModelSpec.from_data(self.config, self.data)
        self._train_clients = np.flatnonzero(self.data.train.client_sizes() > 0)
        self._initial_weights = self._fresh_model(seeded=True).get_weights()
        if self.config.mode == "federated":
            from fedlab.runtime import Runtime

            per_round = min(self.config.clients_per_round or len(self._train_clients), len(self._train_clients))
            self._per_round = per_round
            self._processes = self._cache.processes(self.spec, self.config, clients_per_round=per_round)
            self._runtime = Runtime(workers=self.config.workers)
        self.timing["build_seconds"] = round(time.perf_counter() - started, 3)

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

    # -- training ---------------------------------------------------------------------------------
    def rounds(self) -> Iterator[RoundRecord]:
        """One record per round (or epoch); keeps the lowest-validation-loss weights; stops early."""
        started = time.perf_counter()
        steps = self._federated_rounds() if self.config.mode == "federated" else self._centralized_epochs()
        best_loss, since_best = np.inf, 0
        try:
            for number, (train_loss, train_acc, val_loss, val_acc, clients, weights, seconds) in enumerate(steps, 1):
                is_best = val_loss < best_loss
                if is_best:
                    best_loss, since_best, self._best_weights = val_loss, 0, weights()
                else:
                    since_best += 1
                yield RoundRecord(round=number, train_loss=train_loss, train_accuracy=train_acc, val_loss=val_loss,
                                  val_accuracy=val_acc, clients=clients, seconds=round(seconds, 3), is_best=is_best)
                if since_best >= self.config.patience:
                    break
        finally:
            steps.close()
            self.timing["train_seconds"] = round(time.perf_counter() - started, 3)

    def _federated_rounds(self):
        from fedlab import federated

        learning, evaluation = self._processes.learning, self._processes.evaluation
        rng = np.random.default_rng(self.config.seed)
        val_data = self._datasets("val", np.flatnonzero(self.data.val.client_sizes() > 0))
        with self._runtime.activate():
            state = learning.initialize()
            state = learning.set_model_weights(state, self._model_weights())
            eval_state = evaluation.initialize()
        for number in range(1, self.config.rounds + 1):
            started = time.perf_counter()
            chosen = self._sample_clients(rng)
            train_data = self.round_datasets(chosen, number)
            with self._runtime.activate():
                output = learning.next(state, train_data)
                state = output.state
                weights = learning.get_model_weights(state)
                eval_state = evaluation.set_model_weights(eval_state, weights)
                val_loss, val_acc = federated.eval_metrics(evaluation.next(eval_state, val_data))
            train_loss, train_acc = federated.train_metrics(output)
            yield (train_loss, train_acc, val_loss, val_acc, len(chosen),
                   lambda w=weights: [np.array(v) for v in w.trainable] + [np.array(v) for v in w.non_trainable],
                   time.perf_counter() - started)

    def _model_weights(self):
        import tensorflow_federated as tff

        model = self._fresh_model()
        model.set_weights(self._initial_weights)
        return tff.learning.models.ModelWeights.from_model(model)

    def _sample_clients(self, rng: np.random.Generator) -> np.ndarray:
        """Seeded sample of clients for a round; each then fails to report with the dropout probability."""
        chosen = np.sort(rng.choice(self._train_clients, size=self._per_round, replace=False))
        if self.config.client_dropout > 0:
            reported = rng.random(len(chosen)) >= self.config.client_dropout
            if not reported.any():  # a round needs at least one update
                reported[rng.integers(len(chosen))] = True
            chosen = chosen[reported]
        return chosen

    def round_datasets(self, clients: np.ndarray, number: int) -> list:
        """The training data of round `number` for these clients, shuffled with a seed of the run and round."""
        return self._datasets("train", clients, shuffle_seed=self.config.seed * 100_003 + number)

    def _datasets(self, split: str, clients: np.ndarray, *, shuffle_seed: int | None = None) -> list:
        from fedlab.federated import client_dataset

        arrays = self.data.split(split)
        epochs = self.config.epochs if split == "train" else 1
        out = []
        for i in clients:
            inputs, targets = arrays.client(int(i))
            out.append(client_dataset(inputs, targets, self.spec, batch_size=self.config.batch_size, epochs=epochs,
                                      shuffle_seed=None if shuffle_seed is None else shuffle_seed + int(i)))
        return out

    def _centralized_epochs(self):
        """The same model in plain Keras on the pooled training data of the same clients."""
        model = self._fresh_model()
        model.set_weights(self._initial_weights)
        opt = {"adam": tf.keras.optimizers.Adam, "sgd": tf.keras.optimizers.SGD}[self.config.client_optimizer]
        model.compile(optimizer=opt(learning_rate=self.config.client_lr), loss=loss_fn(), metrics=metrics_fn())
        train_x, train_y = self._pooled("train")
        val_x, val_y = self._pooled("val")
        clients = len(self._train_clients)
        for _ in range(self.config.rounds):
            started = time.perf_counter()
            history = model.fit(train_x, train_y, batch_size=self.config.batch_size, epochs=1, shuffle=True, verbose=0)
            val_loss, val_acc = model.evaluate(val_x, val_y, batch_size=PREDICT_BATCH, verbose=0)
            yield (float(history.history["loss"][0]), float(history.history["accuracy"][0]), float(val_loss),
                   float(val_acc), clients, model.get_weights, time.perf_counter() - started)

    def _pooled(self, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        arrays = self.data.split(split)
        return {f: arrays.inputs[f] for f in self.spec.features}, arrays.targets

    # -- results ----------------------------------------------------------------------------------
    def trained_model(self) -> tf.keras.Model:
        """The Keras model holding the kept (lowest validation loss) weights."""
        if self._best_weights is None:
            raise ConfigError("the run has no finished round yet, so there is no model to test")
        model = self._fresh_model()
        if self.config.mode == "federated":
            # TFF keeps trainable then non-trainable variables; Keras orders weights by layer.
            for var, value in zip(model.trainable_weights + model.non_trainable_weights, self._best_weights):
                var.assign(value)
        else:
            model.set_weights(self._best_weights)
        return model

    def test(self) -> TestReport:
        """The kept model on every test sequence; with `personalize_epochs`, also after local fine-tuning."""
        model = self.trained_model()
        test = self.data.test
        probs, targets = {}, {}
        for i, client in enumerate(self.data.client_ids):
            inputs, y = test.client(i)
            if len(y) == 0:
                continue
            logits = model.predict({f: inputs[f] for f in self.spec.features}, batch_size=PREDICT_BATCH, verbose=0)
            probs[client], targets[client] = tf.nn.softmax(logits).numpy(), y
        report = metrics.build_test_report(probs_by_client=probs, targets_by_client=targets,
                                           class_names=self.data.class_names, checkins=self.data.checkins)
        if self.config.personalize_epochs == 0:
            return report
        return dataclasses.replace(report, personalized=self._personalized_summary(model))

    def _personalized_summary(self, model: tf.keras.Model) -> dict[str, float]:
        from fedlab.personalize import personalized_probs

        started = time.perf_counter()
        probs, targets = personalized_probs(
            model, self.data, features=self.spec.features, epochs=self.config.personalize_epochs,
            learning_rate=self.config.personalize_lr, batch_size=self.config.batch_size, seed=self.config.seed)
        tuned = metrics.build_test_report(probs_by_client=probs, targets_by_client=targets,
                                          class_names=self.data.class_names, checkins=self.data.checkins)
        self.timing["personalize_seconds"] = round(time.perf_counter() - started, 3)
        return {"epochs": self.config.personalize_epochs, "learning_rate": self.config.personalize_lr,
                "accuracy": tuned.accuracy, "top5_accuracy": tuned.top5_accuracy, "mrr": tuned.mrr,
                "loss": tuned.loss, "examples": tuned.examples}

    def baselines(self) -> dict[str, float]:
        test = self.data.test
        inputs, targets = {}, {}
        for i, client in enumerate(self.data.client_ids):
            x, y = test.client(i)
            inputs[client], targets[client] = x["cat_id"], y
        return compute_baselines(test_inputs=inputs, test_targets=targets, history=self.data.history,
                                 num_classes=len(self.data.class_names))

    def save_model(self, path: str) -> None:
        self.trained_model().save(path)

    def summary(self) -> dict:
        if self.data is None:
            return {}
        return {**self.data.summary, "train_clients": int(len(self._train_clients))}

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None
