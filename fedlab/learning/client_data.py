"""The TFF client datasets of a federated run: one per user, or a few shards of users; FedRecon's planned batches.

Training data is each chosen user's, shuffled with a seed of the run, the round and the user, its targets poisoned
when the user is malicious. Validation is every client's validation data; under Federated Reconstruction each client
first re-learns its user part on its (unpoisoned) training data, as before its test.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from fedlab.config import ExperimentConfig
from fedlab.data import attacks
from fedlab.learning import plans, sharded
from fedlab.learning.federated import client_dataset, lean_options, reconstruction_eval_dataset
from fedlab.learning.model import ModelSpec


@dataclass(frozen=True)
class ClientData:
    data: object  # fedlab.data.pipeline.SequenceData
    spec: ModelSpec
    config: ExperimentConfig
    attack: attacks.Attack | None
    shards: bool  # the shard path: a TFF client is a shard of users

    # -- training -----------------------------------------------------------------------------------------------
    def round(self, chosen: np.ndarray, number: int) -> list[tf.data.Dataset]:
        """Round `number`'s TFF client datasets: one per chosen user, or a few shards of them."""
        if self.config.reconstruction:
            users = self.reconstruction_plans(chosen, number)
            if self.shards:
                return self._plan_shards(users)
            return [plans.marked_dataset(p).with_options(lean_options()) for p in users]
        datasets = self.round_datasets(chosen, number)
        if not self.shards:
            return datasets
        batches = self._batches(self.data.train.client_sizes()[chosen]) * self.config.epochs
        return self._shards(datasets, batches, sharded.shard_dataset)

    def round_datasets(self, clients: np.ndarray, number: int) -> list[tf.data.Dataset]:
        """The FedAvg training data of round `number`, one dataset per client, reshuffled on every local epoch."""
        return self._datasets("train", clients, shuffle_seed=self._round_seed(number))

    def reconstruction_plans(self, chosen: np.ndarray, number: int) -> list[plans.UserPlan]:
        """Each chosen user's round under FedRecon: its reconstruction passes, then its local epochs, each pass in its
        own order drawn from the run, round and user (`plans.training_plan`; the same batches on both paths)."""
        config, out = self.config, []
        for i in chosen:
            inputs, targets = self._train_rows(int(i))
            out.append(
                plans.training_plan(
                    inputs,
                    targets,
                    epochs=config.epochs,
                    reconstruction_passes=config.reconstruction_epochs,
                    batch_size=config.batch_size,
                    seed=self._round_seed(number) + int(i),
                )
            )
        return out

    # -- validation ---------------------------------------------------------------------------------------------
    def validation(self, clients: np.ndarray | None = None) -> list[tf.data.Dataset]:
        """Every client's validation data (clients with a validation sequence; or these), as TFF client datasets."""
        clients = self.validation_clients() if clients is None else clients
        config = self.config
        if not config.reconstruction:
            val = self._datasets("val", clients)
            if not self.shards:
                return val
            return self._shards(val, self._batches(self.data.val.client_sizes()[clients]), sharded.pooled_dataset)
        own = [self._rows(self.data.train, int(i)) for i in clients]
        scored = [self._rows(self.data.val, int(i)) for i in clients]
        if self.shards:
            passes = {"epochs": config.epochs, "reconstruction_passes": config.reconstruction_epochs}
            return self._plan_shards(
                [plans.validation_plan(t, v, batch_size=config.batch_size, **passes) for t, v in zip(own, scored)]
            )
        batched = functools.partial(client_dataset, spec=self.spec, batch_size=config.batch_size)
        return [
            reconstruction_eval_dataset(batched(*t, epochs=config.epochs), batched(*v)) for t, v in zip(own, scored)
        ]

    def validation_clients(self) -> np.ndarray:
        return np.flatnonzero(self.data.val.client_sizes() > 0)

    # -- helpers ------------------------------------------------------------------------------------------------
    def _round_seed(self, number: int) -> int:
        return self.config.seed * 100_003 + number

    def _rows(self, split, client: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        inputs, targets = split.client(client)
        return {f: inputs[f] for f in self.spec.features}, targets

    def _train_rows(self, client: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """A client's training sequences, its targets poisoned if it is malicious."""
        inputs, targets = self._rows(self.data.train, client)
        return inputs, targets if self.attack is None else self.attack.poison(targets, client=client)

    def _datasets(self, split: str, clients: np.ndarray, *, shuffle_seed: int | None = None) -> list:
        epochs = self.config.epochs if split == "train" else 1
        out = []
        for i in clients:
            # Validation and test data are never poisoned.
            inputs, targets = (
                self._train_rows(int(i)) if split == "train" else self._rows(self.data.split(split), int(i))
            )
            seed = None if shuffle_seed is None else shuffle_seed + int(i)
            out.append(
                client_dataset(
                    inputs, targets, self.spec, batch_size=self.config.batch_size, epochs=epochs, shuffle_seed=seed
                )
            )
        return out

    def _batches(self, sizes: np.ndarray) -> np.ndarray:
        return np.ceil(np.asarray(sizes) / self.config.batch_size).astype(int)

    def _shards(self, users: list, batches, join: Callable) -> list:
        """Per-user datasets or plans joined (`join`) into the shard path's few TFF client datasets, balanced by
        `batches`."""
        return sharded.group_users(
            users, [int(b) for b in batches], workers=len(self.config.workers), join=join, options=lean_options()
        )

    def _plan_shards(self, users: list[plans.UserPlan]) -> list:
        """Users' plans in the shard path's few TFF client datasets, balanced by their batches."""
        return self._shards(users, [len(p.batches) for p in users], plans.shard_dataset)
