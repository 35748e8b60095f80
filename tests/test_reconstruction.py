"""Federated Reconstruction (TFF's FedRecon): the user_id embedding and the habit path stay on the clients.

A tiny real run trains and tests; the server never holds the user part, so it sends and receives exactly that
part's bytes less than the same run without it; combinations TFF cannot build are refused in one line."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from fedlab.config import PRESETS, ExperimentConfig
from fedlab.errors import ConfigError
from fedlab.learning.engine import Experiment
from fedlab.learning.model import ModelSpec, build_model, local_layer_names, user_layer_names
from tests.helpers import TINY
from tests.pages_support import app, db  # noqa: F401
from tests.test_cli import fedlab

HABITS = PRESETS["habits"]


def run(config: ExperimentConfig, tiny_data, build_cache):
    experiment = Experiment(config, data=tiny_data, cache=build_cache)
    try:
        experiment.prepare()
        records = list(experiment.rounds())
        return records, experiment.test(), experiment
    finally:
        experiment.close()


def user_part(experiment: Experiment, weights: list[np.ndarray]) -> list[np.ndarray]:
    """The weights of the user layers (user_id embedding, habit path), from a Keras-ordered list."""
    model = build_model(experiment.spec)
    names = set(user_layer_names(experiment.spec))
    index = {id(v): i for i, v in enumerate(model.weights)}
    return [weights[index[id(v)]] for layer in model.layers if layer.name in names for v in layer.weights]


@pytest.fixture(scope="module")
def shards_run(tiny_data, build_cache):
    """A tiny FedRecon run on the default path (shards), with its test: read by the two tests below."""
    config = ExperimentConfig(data=tiny_data.config, features=HABITS, reconstruction=True, **TINY)
    return config, *run(config, tiny_data, build_cache)


@pytest.mark.tff
@pytest.mark.slow
def test_a_reconstruction_run_keeps_the_user_part_local_and_sends_exactly_that_much_less(
    shards_run, tiny_data, build_cache
):
    config, records, report, experiment = shards_run

    assert len(records) == 2 and all(math.isfinite(r.train_loss) and math.isfinite(r.val_loss) for r in records)
    # Scored like every run: every test target, each client with its own user part re-learnt first.
    assert report.examples == tiny_data.test.targets.size and 0 < report.accuracy <= 1
    # Its permutation importance comes from each client's own re-learnt model, for every feature it was given.
    assert set(report.importance["features"]) == set(HABITS) and report.importance["clients"] == len(report.per_client)
    # The server never held a trained user part: the kept model's user layers are still their initial values,
    # while its global layers moved.
    initial, kept = experiment.initial_model().get_weights(), experiment.trained_model().get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(user_part(experiment, initial), user_part(experiment, kept)))
    assert any(not np.array_equal(a, b) for a, b in zip(initial, kept))
    # Neither the model sent down nor the updates sent up carry the user part: each way, exactly its bytes less than
    # the whole model (every run sends its weights down and its trainable weights' update up, tests/test_algorithms.py).
    model, clients = experiment.initial_model(), records[0].clients
    local_bytes = sum(w.nbytes for w in user_part(experiment, initial)) * clients
    assert local_bytes > 0
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert 4 * trainable * clients - records[0].bytes_up == local_bytes
    assert 4 * model.count_params() * clients - records[0].bytes_down == local_bytes
    # A seeded run repeats: the same local starting values on every client, every round and at the test.
    again, again_report, _ = run(config, tiny_data, build_cache)
    assert [r.val_loss for r in again] == [r.val_loss for r in records] and again_report.loss == report.loss


@pytest.mark.tff
def test_reconstruction_on_shards_validates_and_tests_as_with_one_client_per_user(shards_run, tiny_data, build_cache):
    # tests/test_sharded_recon.py checks the TFF processes themselves (several batches a user, more reconstruction
    # passes, other optimizers).
    config, shards, shards_report, on_shards = shards_run
    per_user, per_user_report, per_user_run = run(config.replace(one_client_per_user=True), tiny_data, build_cache)
    assert (on_shards.summary()["training_path"], per_user_run.summary()["training_path"]) == ("shards", "per user")
    for got, expected in zip(shards, per_user):
        assert got.clients == expected.clients and got.bytes_up == expected.bytes_up
        for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert getattr(got, name) == pytest.approx(getattr(expected, name), rel=1e-4, abs=1e-6), name
    assert shards_report.loss == pytest.approx(per_user_report.loss, rel=1e-4)


@pytest.mark.tff
def test_reconstruction_trains_under_dp_with_compressed_updates(tiny_data, build_cache):
    # TFF's FedRecon builder takes fedlab's aggregator as it is: DP-FedAvg around the compressed sum, unweighted.
    config = ExperimentConfig(data=tiny_data.config, features=PRESETS["biggest"], reconstruction=True, **TINY)
    changes = {"rounds": 1, "dp_clip": 1.0, "dp_noise": 0.5, "compression_bits": 4}
    records, report, _ = run(config.replace(**changes), tiny_data, build_cache)
    assert math.isfinite(records[0].val_loss) and report.examples > 0
    assert 0 < records[0].bytes_up and records[0].bytes_saved > 0


@pytest.mark.tff
def test_the_servers_state_holds_the_global_layers_only(tiny_data, build_cache):
    from fedlab.learning import federated
    from fedlab.learning.runtime import Runtime

    config = ExperimentConfig(data=tiny_data.config, features=HABITS, reconstruction=True, **TINY)
    spec = ModelSpec.from_data(config, tiny_data)
    processes = build_cache.processes(spec, config, clients_per_round=3)  # built by the run above
    assert processes.local_layers == ("user_id_embedding", "user_habits_prior")
    model = build_model(spec)
    runtime = Runtime()
    try:
        with runtime.activate():
            learning_state, _ = federated.unwrap_state(federated.initial_state(processes, model.get_weights()))
            held = processes.learning.get_model_weights(learning_state)
    finally:
        runtime.close()
    global_layers, _ = federated.split_layers(model, user_layer_names(spec))
    expected = [v for layer in global_layers for v in layer.trainable_weights + layer.non_trainable_weights]
    assert sorted(np.shape(w) for w in [*held.trainable, *held.non_trainable]) == sorted(
        tuple(v.shape) for v in expected
    )
    assert len(expected) == len(model.weights) - 3  # the user_id embedding, the habit path's kernel and bias


@pytest.mark.tff
def test_a_chosen_local_part_with_more_reconstruction_passes_keeps_exactly_those_layers_local(tiny_data, build_cache):
    config = ExperimentConfig(data=tiny_data.config, features=HABITS, reconstruction=True, **TINY).replace(rounds=1)
    chosen = config.replace(local_part="user+output", reconstruction_epochs=2, reconstruction_lr=0.05)
    records, report, experiment = run(chosen, tiny_data, build_cache)
    assert math.isfinite(records[0].val_loss) and 0 < report.accuracy <= 1
    processes = build_cache.processes(experiment.spec, chosen, clients_per_round=records[0].clients)
    assert processes.local_layers == ("user_id_embedding", "user_habits_prior", "next_category")
    # Each client sends the update of the global trainable weights only: the output layer stays home too.
    model = build_model(experiment.spec)
    sent = [w for layer in model.layers if layer.name not in processes.local_layers for w in layer.trainable_weights]
    assert records[0].bytes_up == 4 * sum(int(np.prod(w.shape)) for w in sent) * records[0].clients


def test_each_local_part_names_its_layers_and_one_whose_feature_is_missing_is_refused():
    spec = ModelSpec(HABITS, 4, 5, (("user_id", 3),), (), 8, 0.0, 2)
    assert local_layer_names(spec, "user") == ("user_id_embedding", "user_habits_prior")
    assert local_layer_names(spec, "user-embedding") == ("user_id_embedding",)
    assert local_layer_names(spec, "habit-path") == ("user_habits_prior",)
    assert local_layer_names(spec, "user+output")[-1] == "next_category"
    with pytest.raises(ConfigError, match="the local part habit-path needs the feature user_habits"):
        ExperimentConfig(features=PRESETS["biggest"], reconstruction=True, local_part="habit-path")
    with pytest.raises(ConfigError, match="reconstruction passes must be a whole number of at least 1"):
        ExperimentConfig(features=HABITS, reconstruction=True, reconstruction_epochs=0)


def test_validation_repeats_the_reconstruction_batches_for_each_pass():
    from fedlab.learning.federated import reconstruction_eval_dataset, split_reconstruction_data

    data = tf.data.Dataset.from_tensor_slices(({"x": np.zeros((2, 1))}, np.array([[1], [2]]))).batch(1)
    reconstruct, scored = split_reconstruction_data(reconstruction_eval_dataset(data, data), passes=3)
    assert [int(y[0, 0]) for _, y in reconstruct.as_numpy_iterator()] == [1, 2] * 3
    assert [int(y[0, 0]) for _, y in scored.as_numpy_iterator()] == [1, 2]


def test_validation_reconstructs_on_the_training_batches_and_scores_the_validation_batches():
    from fedlab.learning.federated import reconstruction_eval_dataset, split_reconstruction_data

    def batches(targets):
        return tf.data.Dataset.from_tensor_slices(({"x": np.zeros((len(targets), 2))}, np.array(targets))).batch(2)

    train, val = batches([[0, 1], [2, 0], [1, 1]]), batches([[2, 2], [0, 1]])
    reconstruct, scored = split_reconstruction_data(reconstruction_eval_dataset(train, val))
    assert [y.tolist() for _, y in reconstruct.as_numpy_iterator()] == [[[0, 1], [2, 0]], [[1, 1]]]
    assert [y.tolist() for _, y in scored.as_numpy_iterator()] == [[[2, 2], [0, 1]]]


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"features": PRESETS["central"]}, "needs user_id or user_habits among the features"),
        ({"features": HABITS, "mode": "centralized"}, "federated runs only"),
        ({"features": HABITS, "algorithm": "fedprox"}, "no FedProx or MIME-lite form"),
        ({"features": HABITS, "algorithm": "mime"}, "no FedProx or MIME-lite form"),
        ({"features": HABITS, "personalize_epochs": 2}, "reconstruction and fine-tuning cannot be combined"),
    ],
)
def test_what_reconstruction_cannot_run_with_is_refused_in_one_line(changes, words):
    with pytest.raises(ConfigError) as refused:
        ExperimentConfig(reconstruction=True, **changes)
    assert words in str(refused.value) and "\n" not in str(refused.value)


def test_reconstruction_runs_with_the_user_features_and_with_dp():
    for features in (PRESETS["biggest"], HABITS, ("cat_id", "user_id")):
        assert ExperimentConfig(features=features, reconstruction=True).reconstruction
    assert ExperimentConfig(features=HABITS, reconstruction=True, dp_clip=1.0, dp_noise=0.5).model_shape_key != (
        ExperimentConfig(features=HABITS, dp_clip=1.0, dp_noise=0.5).model_shape_key
    )


def test_the_cli_refuses_reconstruction_with_the_central_features_with_exit_status_2():
    out = fedlab("run", "--preset", "central", "--reconstruction", "--no-store", timeout=120)
    assert out.returncode == 2
    assert "reconstruction keeps the user part on the client, so it needs user_id or user_habits" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_explain_panel_says_what_stays_on_the_clients():
    from fedlab.results.explain import round_explanation

    text = round_explanation(ExperimentConfig(features=HABITS, reconstruction=True), None, total_clients=10)
    assert "**The user part stayed local**" in text and "never left the clients" in text
    assert "stayed local" not in round_explanation(ExperimentConfig(features=HABITS), None, total_clients=10)


def test_the_train_page_has_the_switch_and_refuses_it_with_the_central_features_in_one_sentence(db):  # noqa: F811
    at = app("train")
    switch = at.checkbox(key="train_reconstruction")
    assert switch.value is False and "never sent or averaged" in switch.help
    switch.check()
    at.button(key="train_btn_run").click().run()
    assert any("so it needs user_id or user_habits among the features" in e.value for e in at.error)
