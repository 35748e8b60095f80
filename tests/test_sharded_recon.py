"""FedRecon on shards of users: the same FedRecon as TFF's own with one TFF client per user."""

from __future__ import annotations

import numpy as np
import pytest

from fedlab.config import PRESETS, ExperimentConfig
from fedlab.learning import federated, plans, sharded_recon
from tests.helpers import TINY

PASSES = 2  # reconstruction passes: more than one, so a user's phases are told apart by position, not by pass


def _targets(dataset) -> list[list[int]]:
    return [np.asarray(y).ravel().tolist() for _, y in dataset.as_numpy_iterator()]


def _rows(n: int):
    return {"x": np.arange(n * 2, dtype=np.int32).reshape(n, 2)}, np.arange(n, dtype=np.int32)[:, None]


def test_each_pass_is_its_own_seeded_order_cut_into_batches():
    batches = plans.pass_batches(5, passes=3, batch_size=2, seed=4)
    assert [len(b) for b in batches] == [2, 2, 1] * 3  # each pass batched on its own: its last batch is short
    passes = [np.concatenate(batches[i : i + 3]) for i in (0, 3, 6)]
    assert all(sorted(p.tolist()) == list(range(5)) for p in passes)  # every pass holds every row once
    assert len({tuple(p) for p in passes}) > 1  # in different orders
    assert [b.tolist() for b in batches] == [b.tolist() for b in plans.pass_batches(5, passes=3, batch_size=2, seed=4)]
    assert [b.tolist() for b in plans.pass_batches(3, passes=2, batch_size=2)] == [[0, 1], [2], [0, 1], [2]]


def test_a_planned_dataset_gives_the_same_batches_on_every_iteration():
    inputs, targets = _rows(5)
    ds = plans.planned_dataset(inputs, targets, plans.pass_batches(5, passes=2, batch_size=2, seed=1))
    assert _targets(ds) == _targets(ds)  # TFF iterates a client's data once per phase


def test_both_paths_reconstruct_on_the_same_batches_and_train_on_the_rest():
    inputs, targets = _rows(5)
    plan = plans.training_plan(inputs, targets, epochs=2, reconstruction_passes=PASSES, batch_size=2, seed=1)
    batches = [targets[b].ravel().tolist() for b in plan.batches]
    assert len(batches) == 3 * 2 * (PASSES + 1) and plan.phases == [plans.RECONSTRUCT] * 12 + [plans.TRAIN] * 6
    reconstruct, train = federated.split_reconstruction_data(plans.marked_dataset(plan))
    assert _targets(reconstruct) == batches[:12] and _targets(train) == batches[12:]
    tagged = [
        (np.ravel(y).tolist(), int(u), int(p)) for (_, y), u, p in plans.shard_dataset([plan]).as_numpy_iterator()
    ]
    assert tagged == [(b, 0, phase) for b, phase in zip(batches, plan.phases)]


def test_a_shard_tags_each_batch_with_its_users_position_and_phase():
    one, two = _rows(2), ({"x": np.array([[7, 7]], np.int32)}, np.array([[9]], np.int32))
    plan = plans.validation_plan(one, two, epochs=1, reconstruction_passes=2, batch_size=1)
    assert [b.tolist() for b in plan.batches] == [[0], [1], [0], [1], [2]]  # the training rows twice, then val
    other = plans.validation_plan(two, one, epochs=1, reconstruction_passes=1, batch_size=2)
    shard = plans.shard_dataset([plan, other])
    tags = [(np.ravel(y).tolist(), int(u), int(p)) for (_, y), u, p in shard.as_numpy_iterator()]
    r, s = plans.RECONSTRUCT, plans.SCORE
    assert tags == [([0], 0, r), ([1], 0, r), ([0], 0, r), ([1], 0, r), ([9], 0, s), ([9], 1, r), ([0, 1], 1, s)]


@pytest.fixture(scope="module")
def recon_setup(tiny_data):
    from fedlab.learning.engine import Experiment
    from fedlab.learning.model import local_layer_names

    # Centralized only so that build() makes the model's spec without TFF processes.
    config = ExperimentConfig(
        data=tiny_data.config, mode="centralized", features=PRESETS["habits"], **{**TINY, "epochs": 2}
    )
    experiment = Experiment(config, data=tiny_data)
    experiment.build()
    spec = experiment.spec
    model_fn = federated.make_reconstruction_model_fn(spec, local_layer_names(spec), seed=3)
    users = []
    for i in experiment.train_clients:
        inputs, targets = tiny_data.train.client(int(i))
        inputs = {f: inputs[f] for f in spec.features}
        users.append(
            plans.training_plan(inputs, targets, epochs=2, reconstruction_passes=PASSES, batch_size=8, seed=int(i))
        )
    assert max(len(p.batches) for p in users) > 2 * (PASSES + 1)  # some user has several batches a pass
    return experiment, model_fn, users


def _global_weights(process, state):
    w = process.get_model_weights(state)
    return [np.asarray(t) for t in list(w.trainable) + list(w.non_trainable)]


@pytest.mark.tff
# Client SGD with server Adam here; client Adam (its state fresh for each user of a shard) with server SGD in
# tests/test_reconstruction.py, through the engine.
@pytest.mark.parametrize("client, server", [(("sgd", 0.3), ("adam", 0.05))])
def test_one_round_equals_tff_fed_recon_with_one_client_per_user(recon_setup, client, server):
    import tensorflow_federated as tff

    from fedlab.learning.model import loss_fn, metrics_fn
    from fedlab.learning.runtime import Runtime

    _, model_fn, users = recon_setup
    optimizers = dict(
        client_optimizer=federated.optimizer(*client),
        server_optimizer=federated.optimizer(*server),
        reconstruction_optimizer=federated.optimizer("sgd", 0.1),
    )
    reference = tff.learning.algorithms.build_fed_recon(
        model_fn,
        loss_fn=loss_fn,
        metrics_fn=metrics_fn,
        client_optimizer_fn=optimizers["client_optimizer"],
        server_optimizer_fn=optimizers["server_optimizer"],
        reconstruction_optimizer_fn=optimizers["reconstruction_optimizer"],
        dataset_split_fn=federated.split_reconstruction_data,
    )
    shards = sharded_recon.build_sharded_fed_recon(model_fn, loss_fn=loss_fn, metrics_fn=metrics_fn, **optimizers)
    per_user = [plans.marked_dataset(p) for p in users]
    with Runtime() as runtime, runtime.activate():
        start = reference.initialize()
        expected = reference.next(start, per_user)
        state = shards.set_model_weights(shards.initialize(), reference.get_model_weights(start))
        got = shards.next(state, [plans.shard_dataset(users[:2]), plans.shard_dataset(users[2:])])
        before, expected_weights = _global_weights(reference, start), _global_weights(reference, expected.state)
        got_weights = _global_weights(shards, got.state)
    for e, g in zip(expected_weights, got_weights):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7)
    assert any(not np.array_equal(e, b) for e, b in zip(expected_weights, before))  # the round moved the model
    train, train_expected = got.metrics["client_work"]["train"], expected.metrics["client_work"]["train"]
    assert train == pytest.approx(train_expected, rel=1e-5)


@pytest.mark.tff
def test_validation_on_shards_equals_tff_fed_recon_eval_per_user(recon_setup, tiny_data):
    import tensorflow_federated as tff

    from fedlab.learning.model import loss_fn, metrics_fn
    from fedlab.learning.runtime import Runtime

    experiment, model_fn, users = recon_setup
    reconstruct = federated.optimizer("sgd", 0.3)
    reference = tff.learning.algorithms.build_fed_recon_eval(
        model_fn,
        loss_fn=loss_fn,
        metrics_fn=metrics_fn,
        reconstruction_optimizer_fn=reconstruct,
        dataset_split_fn=lambda ds: federated.split_reconstruction_data(ds, passes=PASSES),
    )
    shards = sharded_recon.build_sharded_fed_recon_eval(
        model_fn, loss_fn=loss_fn, metrics_fn=metrics_fn, reconstruction_optimizer=reconstruct
    )
    spec, rows = experiment.spec, {"batch_size": 8, "epochs": 2}
    train = [tiny_data.train.client(int(i)) for i in experiment.train_clients]
    val = [tiny_data.val.client(int(i)) for i in experiment.train_clients]
    with Runtime() as runtime, runtime.activate():
        weights = reference.get_model_weights(reference.initialize())
        per_user = [
            federated.reconstruction_eval_dataset(
                federated.client_dataset(*t, spec, **rows), federated.client_dataset(*v, spec, batch_size=8)
            )
            for t, v in zip(train, val)
        ]
        expected = reference.next(reference.set_model_weights(reference.initialize(), weights), per_user)
        only = lambda r: ({f: r[0][f] for f in spec.features}, r[1])  # noqa: E731
        joined = [
            plans.validation_plan(only(t), only(v), reconstruction_passes=PASSES, **rows) for t, v in zip(train, val)
        ]
        assert max(len(p.batches) for p in joined) > 2 * PASSES + 1  # several batches to reconstruct on
        got = shards.next(
            shards.set_model_weights(shards.initialize(), weights),
            [plans.shard_dataset(joined[:1]), plans.shard_dataset(joined[1:])],
        )
    current = got.metrics["client_work"]["eval"]["current_round_metrics"]
    assert current == pytest.approx(expected.metrics["client_work"]["eval"]["current_round_metrics"], rel=1e-5)
