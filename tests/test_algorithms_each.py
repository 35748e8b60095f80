"""Every algorithm and server optimizer, and their mixes with compression and DP, trains a round on a tiny model
(apart from tests/test_algorithms.py so the test workers can run the two files side by side)."""

from __future__ import annotations

import math

import pytest

from fedlab.config import SERVER_OPTIMIZERS
from tests.test_algorithms import config, moved, run


@pytest.mark.tff
@pytest.mark.parametrize(
    "changes",
    [
        {"algorithm": "fedprox", "prox_mu": 0.1},
        {"algorithm": "mime"},
        *({"server_optimizer": name, "server_lr": 0.05} for name in SERVER_OPTIMIZERS if name != "sgd"),
        {"algorithm": "mime", "compression_bits": 8},
        {"algorithm": "mime", "dp_clip": 1.0, "dp_noise": 0.1},
        {"algorithm": "fedprox", "dp_clip": 1.0, "dp_noise": 0.1, "compression_bits": 4},
    ],
)
def test_each_algorithm_and_server_optimizer_trains_a_round(changes, tiny_data, build_cache):
    records, experiment = run(config(tiny_data, **changes), tiny_data, build_cache)
    assert len(records) == 1 and math.isfinite(records[0].train_loss) and math.isfinite(records[0].val_loss)
    assert moved(experiment) > 0
