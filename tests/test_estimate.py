"""The run-duration estimate of the Train page, from hand-built earlier rounds."""

import pandas as pd
import pytest

from fedlab.config import ExperimentConfig
from fedlab.runs.estimate import DEFAULT_CLIENT_SECONDS, duration_text, estimate_duration


def rounds(seconds, clients):
    return pd.DataFrame({"seconds": seconds, "clients": clients})


def test_without_earlier_runs_a_default_cost_per_client_and_round():
    config = ExperimentConfig(rounds=10, epochs=2).replace(top_users=20)
    estimate = estimate_duration(config, [])
    assert estimate.seconds == pytest.approx(10 * 20 * DEFAULT_CLIENT_SECONDS)
    assert "default" in estimate.basis


def test_runs_of_the_same_model_shape_come_first():
    config = ExperimentConfig(rounds=4, epochs=1, gru_units=16).replace(top_users=10)
    same = ExperimentConfig(rounds=3, epochs=2, gru_units=16).replace(top_users=5)
    other = ExperimentConfig(rounds=3, epochs=1, gru_units=256).replace(top_users=5)
    # The first round of a run warms up and is left out: 0.2 s per client and round after it.
    history = [(other, rounds([50.0, 9.0, 9.0], [5, 5, 5])), (same, rounds([30.0, 1.0, 1.0], [5, 5, 5]))]
    estimate = estimate_duration(config, history)
    assert estimate.seconds == pytest.approx(4 * 10 * 0.2)
    assert "same model shape" in estimate.basis


def test_else_any_run_of_the_mode_and_clients_per_round_count():
    config = ExperimentConfig(rounds=5, epochs=3, clients_per_round=4).replace(top_users=100)
    other = ExperimentConfig(rounds=2, epochs=1, gru_units=8)
    estimate = estimate_duration(config, [(other, rounds([2.0, 2.0], [10, 10]))])
    assert estimate.seconds == pytest.approx(5 * 4 * 0.2)  # local epochs barely change TFF's cost per client
    assert "other model shapes" in estimate.basis


def test_a_centralized_round_covers_every_client_and_learns_from_centralized_runs():
    config = ExperimentConfig(mode="centralized", rounds=2, clients_per_round=5).replace(top_users=50)
    centralized = ExperimentConfig(mode="centralized", rounds=2).replace(top_users=50)
    federated = ExperimentConfig(rounds=2).replace(top_users=50)
    history = [(federated, rounds([20.0, 20.0], [50, 50])), (centralized, rounds([5.0, 5.0], [50, 50]))]
    assert estimate_duration(config, history).seconds == pytest.approx(2 * 50 * 0.1)


def test_all_users_counts_the_clients_an_earlier_run_of_all_users_had():
    config = ExperimentConfig(rounds=1).replace(top_users=None)
    earlier = ExperimentConfig(rounds=2, gru_units=8).replace(top_users=None)
    assert estimate_duration(config, [(earlier, rounds([1.0, 4.0], [40, 40]))]).seconds == pytest.approx(4.0)


def test_durations_read_as_seconds_minutes_or_hours():
    assert duration_text(12.4) == "12 s" and duration_text(600) == "10 min" and duration_text(9000) == "2.5 h"
