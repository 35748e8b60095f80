"""TFF's algorithms, server optimizers, compression and secure aggregation on tiny models with three clients:
each trains, FedProx pulls towards the global model, compression sends fewer bytes, byte counts match the model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedlab.config import ExperimentConfig
from fedlab.learning import federated
from fedlab.learning.engine import Experiment
from tests.helpers import TINY

ONE_ROUND = {**TINY, "rounds": 1}


def run(config: ExperimentConfig, tiny_data, build_cache):
    experiment = Experiment(config, data=tiny_data, cache=build_cache)
    try:
        experiment.prepare()
        records = list(experiment.rounds())
        return records, experiment
    finally:
        experiment.close()


def config(tiny_data, **changes) -> ExperimentConfig:
    return ExperimentConfig(data=tiny_data.config, **{**ONE_ROUND, **changes})


def moved(experiment: Experiment) -> float:
    """How far the round moved the model from its initial weights (L2 norm of the change)."""
    start, end = experiment.initial_model().get_weights(), experiment.trained_model().get_weights()
    return math.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(start, end)))


@pytest.mark.tff
def test_fedprox_with_a_large_mu_moves_the_weights_less_than_fedavg(tiny_data, build_cache):
    # fedlab's proximal client work adds mu * (w - w_global) to the gradient (TFF 0.87's adds the opposite).
    options = dict(client_optimizer="sgd", client_lr=0.5, epochs=3)  # lr × mu below 1 keeps the pull stable
    _, fedavg = run(config(tiny_data, **options), tiny_data, build_cache)
    _, fedprox = run(config(tiny_data, algorithm="fedprox", prox_mu=1.0, **options), tiny_data, build_cache)
    assert moved(fedprox) < 0.8 * moved(fedavg)


@pytest.mark.tff
def test_fedprox_at_mu_0_trains_the_same_weights_as_fedavg(tiny_data, build_cache):
    # Weighted by examples, as TFF's build_weighted_fed_avg.
    options = dict(client_optimizer="sgd", client_lr=0.5, epochs=2)
    _, fedavg = run(config(tiny_data, **options), tiny_data, build_cache)
    _, fedprox = run(config(tiny_data, algorithm="fedprox", prox_mu=0.0, **options), tiny_data, build_cache)
    assert fedprox._processes.evaluation is fedavg._processes.evaluation  # one per model shape, built once
    assert moved(fedavg) > 0
    for a, b in zip(fedavg.trained_model().get_weights(), fedprox.trained_model().get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_proximal_gradient_pulls_towards_the_global_model():
    from fedlab.learning.proximal import proximal_gradient

    gradient = proximal_gradient([np.array([0.5, 0.0])], [np.array([2.0, -1.0])], [np.array([1.0, 1.0])], 0.1)
    np.testing.assert_allclose(gradient[0], [0.5 + 0.1, -0.2])  # mu·(w - w0) = (0.1, -0.2)


@pytest.mark.tff
def test_fewer_bits_send_fewer_bytes_up_and_the_same_bytes_down(tiny_data, build_cache, caplog):
    bytes_up, bytes_down = {}, {}
    for bits in (0, 8, 4):
        records, _ = run(config(tiny_data, compression_bits=bits), tiny_data, build_cache)
        bytes_up[bits], bytes_down[bits] = records[0].bytes_up, records[0].bytes_down
    assert bytes_up[4] < bytes_up[8] < bytes_up[0]
    assert bytes_down[4] == bytes_down[8] == bytes_down[0]
    assert "temporarily allocate extra memory" not in caplog.text  # bit packing's note, once per tensor, is dropped


@pytest.mark.tff
def test_byte_counts_equal_what_the_model_size_predicts(tiny_data, build_cache):
    records, experiment = run(config(tiny_data, rounds=2), tiny_data, build_cache)
    model = experiment.initial_model()
    clients = records[0].clients
    assert records[0].bytes_down == 4 * model.count_params() * clients
    assert records[0].bytes_up == 4 * sum(int(np.prod(w.shape)) for w in model.trainable_weights) * clients
    assert records[1].bytes_down == records[0].bytes_down


@pytest.mark.tff
def test_a_seeded_run_with_the_new_settings_repeats(tiny_data, build_cache):
    settings = dict(algorithm="fedprox", prox_mu=0.01, server_optimizer="sgdm", server_lr=0.5)
    first, _ = run(config(tiny_data, **settings), tiny_data, build_cache)
    second, _ = run(config(tiny_data, **settings), tiny_data, build_cache)
    assert [r.val_loss for r in first] == [r.val_loss for r in second]


@pytest.mark.tff
def test_a_compressed_seeded_run_repeats_its_bytes_and_nearly_its_loss(tiny_data, build_cache):
    # TFF's quantisation rounds stochastically with seeds of its own, so the losses agree only closely.
    first, _ = run(config(tiny_data, compression_bits=4), tiny_data, build_cache)
    second, _ = run(config(tiny_data, compression_bits=4), tiny_data, build_cache)
    assert [r.bytes_up for r in first] == [r.bytes_up for r in second]
    assert first[0].val_loss == pytest.approx(second[0].val_loss, rel=0.05)


def test_compressed_tensor_sizes_follow_the_rotation_and_the_bit_packing():
    assert federated.tensor_update_bytes(100, 0) == 400
    assert federated.tensor_update_bytes(100, 4) == 4 * 128  # padded to 128, below the threshold: float32
    assert federated.tensor_update_bytes(1000, 8) == 4 * math.ceil(1024 * 8 / 28) + 8
    assert federated.tensor_update_bytes(1024, 4) < federated.tensor_update_bytes(1024, 8) < 4 * 1024


@pytest.mark.tff
def test_dropped_clients_receive_the_model_but_send_nothing_up(tiny_data, build_cache):
    records, experiment = run(config(tiny_data, rounds=3, client_dropout=0.6), tiny_data, build_cache)
    model = experiment.initial_model()
    update = 4 * sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    for record in records:
        assert record.bytes_down == 4 * model.count_params() * len(experiment.train_clients)
        assert record.bytes_up == update * record.clients
    assert any(record.clients < len(experiment.train_clients) for record in records)
