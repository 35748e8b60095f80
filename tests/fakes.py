"""A fake Experiment for dashboard tests: the engine's protocol, a few rounds in milliseconds, no TensorFlow.

Pages pick it up through FEDLAB_EXPERIMENT=tests.fakes:FakeExperiment.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from fedlab.baselines import BASELINE_LABELS
from fedlab.config import ExperimentConfig
from fedlab.records import RoundRecord
from fedlab.records import TestReport as Report  # not a pytest test class

CLASSES = ("Food", "Home", "Work")
CLIENTS = ("1", "2", "3", "4")  # the clients averaged each round
# Test results per client: u<i> has accuracy 0.2 + 0.05 i, 5 + i targets and 20 i check-ins (u8 served best).
TEST_CLIENTS = {f"u{i}": {"accuracy": round(0.2 + 0.05 * i, 2), "examples": 5 + i, "checkins": 20 * i}
                for i in range(1, 9)}
ROUND_SECONDS = 0.02


class FakeExperiment:
    """Yields `config.rounds` records with falling loss and rising accuracy, then a fixed test report."""

    def __init__(self, config: ExperimentConfig):
        self.config = config
        self.timing: dict[str, float] = {}

    def prepare(self) -> None:
        self.timing["preprocess_seconds"] = 0.001

    def rounds(self) -> Iterator[RoundRecord]:
        for number in range(1, self.config.rounds + 1):
            time.sleep(ROUND_SECONDS)
            yield RoundRecord(round=number, train_loss=2.0 / number, train_accuracy=0.2 + 0.05 * number,
                              val_loss=2.2 / number, val_accuracy=0.15 + 0.05 * number, clients=len(CLIENTS),
                              seconds=ROUND_SECONDS, is_best=True)
        self.timing["train_seconds"] = ROUND_SECONDS * self.config.rounds

    def test(self) -> Report:
        per_client = {client: dict(entry) for client, entry in TEST_CLIENTS.items()}
        per_class = {name: {"precision": 0.5, "recall": 0.4 + 0.1 * i, "support": 10 + i}
                     for i, name in enumerate(CLASSES)}
        tuned = None
        if self.config.personalize_epochs:
            tuned = {"epochs": self.config.personalize_epochs, "learning_rate": self.config.personalize_lr,
                     "accuracy": 0.5012, "top5_accuracy": 0.93, "mrr": 0.66, "loss": 1.1, "examples": 40}
        return Report(accuracy=0.4567, top5_accuracy=0.9, mrr=0.61, loss=1.23, examples=40, per_client=per_client,
                      per_class=per_class, confusion=[[5, 3, 2], [1, 8, 2], [2, 2, 8]], class_names=list(CLASSES),
                      personalized=tuned)

    def baselines(self) -> dict[str, float]:
        return {key: 0.1 + 0.05 * i for i, key in enumerate(BASELINE_LABELS)}

    def save_model(self, path: str) -> None:
        Path(path).write_bytes(b"fake keras model")

    def summary(self) -> dict:
        return {"clients": len(CLIENTS), "train_clients": len(CLIENTS), "train_sequences": 40}

    def close(self) -> None:
        pass
