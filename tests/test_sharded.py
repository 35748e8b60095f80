"""Shards of users per TFF client call: the same FedAvg as TFF's own, one TFF client per user."""

from __future__ import annotations

import numpy as np
import pytest

from fedlab.config import ExperimentConfig
from fedlab.learning import sharded
from tests.helpers import TINY

# Users' batch counts -> shards of nearly equal work, users in their order within each shard.


def test_users_go_to_the_least_loaded_shard_most_batches_first():
    assert sharded.assign_shards([5, 1, 4, 2, 3], 2) == [[0, 1, 3], [2, 4]]  # loads 5+2+1 and 4+3
    assert sharded.assign_shards([1, 1, 1], 1) == [[0, 1, 2]]


def test_more_shards_than_users_leaves_no_empty_shard():
    assert sharded.assign_shards([3, 2], 4) == [[0], [1]]


def test_one_shard_per_core_or_per_remote_worker_never_more_than_users():
    assert sharded.shard_count(100, cores=2) == 2
    assert sharded.shard_count(100, cores=16, workers=3) == 3
    assert sharded.shard_count(1, cores=2) == 1
    assert sharded.shard_count(5, cores=0) == 1


def _weights(learning, state):
    w = learning.get_model_weights(state)
    return [np.asarray(t) for t in list(w.trainable) + list(w.non_trainable)]


@pytest.fixture(scope="module")
def runtime():
    from fedlab.learning.runtime import Runtime

    with Runtime() as opened:
        yield opened


@pytest.fixture(scope="module")
def tiny_setup(tiny_data):
    from fedlab.learning.engine import Experiment

    # Centralized only so that build() makes the model's spec and the clients' datasets without TFF processes.
    config = ExperimentConfig(
        data=tiny_data.config, mode="centralized", gru_units=8, embedding_dim=4, epochs=2, batch_size=8, dropout=0.0
    )
    experiment = Experiment(config, data=tiny_data)
    experiment.build()
    return experiment


@pytest.mark.tff
@pytest.mark.parametrize(
    "client, server",
    [
        # A stateless and a stateful optimizer on each side (the client's is fresh for every user of a shard).
        (("sgd", 0.3), ("sgd", 1.0)),
        (("adam", 0.01), ("adam", 0.05)),
    ],
)
def test_one_round_equals_tff_fed_avg_with_one_client_per_user(tiny_setup, runtime, client, server):
    import tensorflow_federated as tff

    from fedlab.learning import federated

    experiment = tiny_setup
    model_fn = federated.make_model_fn(experiment.spec, seed=3)
    client_opt, server_opt = federated.optimizer(*client), federated.optimizer(*server)
    reference = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn, client_optimizer_fn=client_opt, server_optimizer_fn=server_opt
    )
    shards = sharded.build_sharded_fed_avg(model_fn, client_optimizer=client_opt, server_optimizer=server_opt)
    users = experiment.round_datasets(experiment.train_clients, 1)
    with runtime.activate():
        start = reference.initialize()
        expected = _weights(reference, reference.next(start, users).state)
        state = shards.set_model_weights(shards.initialize(), reference.get_model_weights(start))
        got = _weights(
            shards, shards.next(state, [sharded.shard_dataset(users[:2]), sharded.shard_dataset(users[2:])]).state
        )
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7)


def _run(config, tiny_data, build_cache):
    from fedlab.learning.engine import Experiment

    experiment = Experiment(config, data=tiny_data, cache=build_cache)
    try:
        experiment.prepare()
        records = list(experiment.rounds())
        return records, experiment.test(), experiment.summary()
    finally:
        experiment.close()


@pytest.mark.tff
def test_three_rounds_on_shards_validate_and_test_as_one_client_per_user(tiny_data, build_cache):
    # The engine tests' tiny FedAvg (client Adam, server SGD 1), so its shard process comes from the session's cache.
    config = ExperimentConfig(data=tiny_data.config, **{**TINY, "rounds": 3})
    shards, shards_test, shards_summary = _run(config, tiny_data, build_cache)
    per_user, per_user_test, per_user_summary = _run(config.replace(one_client_per_user=True), tiny_data, build_cache)
    assert shards_summary["training_path"] == "shards" and per_user_summary["training_path"] == "per user"
    assert per_user_summary["training_path_reason"] == "one TFF client per user was asked for"
    for got, expected in zip(shards, per_user):
        assert got.clients == expected.clients and got.bytes_up == expected.bytes_up
        for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert getattr(got, name) == pytest.approx(getattr(expected, name), rel=1e-4, abs=1e-6), name
    assert shards_test.accuracy == pytest.approx(per_user_test.accuracy, abs=1e-6)
    assert shards_test.loss == pytest.approx(per_user_test.loss, rel=1e-4)
