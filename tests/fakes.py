"""A fake Experiment: the engine's protocol (fedlab.runs.recording.Trainable), rounds in milliseconds, no TensorFlow.

Pages pick it up through FEDLAB_EXPERIMENT=tests.fakes:FakeExperiment. Job manager tests make them with a
FakeFactory, whose hooks let a test act at a given point and whose counters show overlap and cleanup.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from fedlab.config import ExperimentConfig
from fedlab.records import RoundRecord
from fedlab.records import TestReport as Report  # not a pytest test class
from fedlab.results.baselines import BASELINE_LABELS
from fedlab.results.importance import importance_summary

CLASSES = ("Food", "Home", "Work")
CLIENTS = ("1", "2", "3", "4")  # the clients averaged each round
# Test results per client: u<i> has accuracy 0.2 + 0.05 i, 5 + i targets and 20 i check-ins (u8 served best).
TEST_CLIENTS = {
    f"u{i}": {"accuracy": round(0.2 + 0.05 * i, 2), "examples": 5 + i, "checkins": 20 * i} for i in range(1, 9)
}
ROUND_SECONDS = 0.02
IMPORTANCE_REPEATS = 2


def fake_importance(features: tuple[str, ...]) -> dict:
    """Permutation importance from hand-made hit counts over TEST_CLIENTS: the k-th feature costs each client k
    hits when shuffled (one more in the second repeat), except on the first client, where it gains one."""
    examples = [entry["examples"] for entry in TEST_CLIENTS.values()]
    base = [examples[0] - 2, *(n - 1 for n in examples[1:])]
    shuffled = [
        [[base[0] + 1, *(max(b - k - r, 0) for b in base[1:])] for r in range(IMPORTANCE_REPEATS)]
        for k in range(len(features))
    ]
    return importance_summary(base_hits=base, shuffled_hits=shuffled, examples=examples, features=features)


class FakeFactory:
    """Makes FakeExperiments (config -> experiment) and remembers them; its hooks run inside them."""

    def __init__(self, *, round_seconds: float | None = None):
        self.round_seconds = round_seconds  # None: ROUND_SECONDS, read as each round runs
        self.lock = threading.Lock()
        self.made: list[FakeExperiment] = []
        self.running = 0
        self.most_running = 0
        self.prepare_error: BaseException | None = None
        self.save_error: BaseException | None = None
        # Called before each round is computed: (experiment, round number).
        self.before_round: Callable[[FakeExperiment, int], None] = lambda experiment, number: None
        self.on_test: Callable[[FakeExperiment], None] = lambda experiment: None

    def __call__(self, config: ExperimentConfig) -> FakeExperiment:
        experiment = FakeExperiment(config, factory=self)
        self.made.append(experiment)
        return experiment

    def seconds_per_round(self) -> float:
        return ROUND_SECONDS if self.round_seconds is None else self.round_seconds


class FakeExperiment:
    """Yields `config.rounds` records with falling loss and rising accuracy, then a fixed test report."""

    def __init__(self, config: ExperimentConfig, factory: FakeFactory | None = None):
        self.config = config
        self.timing: dict[str, float] = {}
        self.factory = factory if factory is not None else FakeFactory()
        self.closed = False
        self.saved_to: str | None = None
        self.started = self.ended = 0.0

    def prepare(self) -> None:
        self.started = time.monotonic()
        with self.factory.lock:
            self.factory.running += 1
            self.factory.most_running = max(self.factory.most_running, self.factory.running)
        self.timing.update(preprocess_seconds=0.001, build_seconds=0.001)
        if self.factory.prepare_error is not None:
            raise self.factory.prepare_error

    def rounds(self) -> Iterator[RoundRecord]:
        seconds = 0.0
        for number in range(1, self.config.rounds + 1):
            self.factory.before_round(self, number)
            seconds = self.factory.seconds_per_round()
            time.sleep(seconds)
            yield RoundRecord(
                round=number,
                train_loss=2.0 / number,
                train_accuracy=0.2 + 0.05 * number,
                val_loss=2.2 / number,
                val_accuracy=0.15 + 0.05 * number,
                clients=len(CLIENTS),
                seconds=seconds,
                is_best=True,
            )
        self.timing["train_seconds"] = seconds * self.config.rounds

    def test(self) -> Report:
        self.factory.on_test(self)
        per_client = {client: dict(entry) for client, entry in TEST_CLIENTS.items()}
        per_class = {
            name: {"precision": 0.5, "recall": 0.4 + 0.1 * i, "support": 10 + i} for i, name in enumerate(CLASSES)
        }
        tuned = None
        if self.config.personalize_epochs:
            tuned = {
                "epochs": self.config.personalize_epochs,
                "learning_rate": self.config.personalize_lr,
                "accuracy": 0.5012,
                "top5_accuracy": 0.93,
                "mrr": 0.66,
                "loss": 1.1,
                "examples": 40,
            }
        return Report(
            accuracy=0.4567,
            top5_accuracy=0.9,
            mrr=0.61,
            loss=1.23,
            examples=40,
            per_client=per_client,
            per_class=per_class,
            confusion=[[5, 3, 2], [1, 8, 2], [2, 2, 8]],
            class_names=list(CLASSES),
            personalized=tuned,
            importance=fake_importance(self.config.features),
        )

    def baselines(self) -> dict[str, float]:
        return {key: 0.1 + 0.05 * i for i, key in enumerate(BASELINE_LABELS)}

    def save_model(self, path: str) -> None:
        if self.factory.save_error is not None:
            raise self.factory.save_error
        Path(path).write_bytes(b"fake keras model")
        self.saved_to = path

    def summary(self) -> dict:
        return {"clients": len(CLIENTS), "train_clients": len(CLIENTS), "train_sequences": 40}

    def close(self) -> None:
        self.closed = True
        self.ended = time.monotonic()
        with self.factory.lock:
            self.factory.running -= 1


def slow_fake_experiment(config: ExperimentConfig) -> FakeExperiment:
    """A FakeExperiment whose rounds take 2 s each: runs stay queued or training long enough for a load bench
    (`fedlab bench --shared-load --experiment tests.fakes:slow_fake_experiment`) to meet the queue cap."""
    return FakeExperiment(config, factory=FakeFactory(round_seconds=2.0))


class SlowFactory(FakeFactory):
    """A FakeFactory whose rounds take a second each: a lesson run lasts long enough to be caught training."""

    def __init__(self):
        super().__init__(round_seconds=1.0)
