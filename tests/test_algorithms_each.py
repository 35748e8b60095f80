"""Every algorithm, and their mixes with compression and DP, trains a round on a tiny model, and every server
optimizer steps against the gradient (apart from tests/test_algorithms.py so the test workers can run the two files
side by side)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from fedlab.config import SERVER_OPTIMIZERS
from tests.test_algorithms import config, moved, run


@pytest.mark.tff
@pytest.mark.parametrize(
    "changes",
    [
        # FedProx alone trains in tests/test_algorithms.py; MIME-lite alone is the base of its two mixes below.
        {"server_optimizer": "yogi", "server_lr": 0.05},
        {"algorithm": "mime", "compression_bits": 8},
        {"algorithm": "mime", "dp_clip": 1.0, "dp_noise": 0.1},
        {"algorithm": "fedprox", "dp_clip": 1.0, "dp_noise": 0.1, "compression_bits": 4},
    ],
)
def test_each_algorithm_and_server_optimizer_trains_a_round(changes, tiny_data, build_cache):
    records, experiment = run(config(tiny_data, **changes), tiny_data, build_cache)
    assert len(records) == 1 and math.isfinite(records[0].train_loss) and math.isfinite(records[0].val_loss)
    assert moved(experiment) > 0


@pytest.mark.parametrize("name", SERVER_OPTIMIZERS)
def test_each_server_optimizer_steps_the_weights_against_the_gradient(name):
    # The server applies the averaged update as a gradient: each optimizer's first step moves every weight the
    # other way (the full round with a server optimizer is trained above with yogi, and adam in test_sharded.py).
    from fedlab.learning.federated import optimizer

    server = optimizer(name, 0.05, momentum=0.9)
    weights = (tf.constant([1.0, -2.0]), tf.constant([[0.5]]))
    gradient = (tf.constant([0.3, -0.7]), tf.constant([[-1.0]]))
    state = server.initialize(tuple(tf.TensorSpec(w.shape, w.dtype) for w in weights))
    _, stepped = server.next(state, weights, gradient)
    for w, g, new in zip(weights, gradient, stepped):
        assert np.all(np.sign(new.numpy() - w.numpy()) == -np.sign(g.numpy()))
