"""The what-if controls: client dropout, DP-FedAvg noise and the settings that record them.

The IID reshuffle keeping client sizes is covered in test_pipeline.py.
TFF runs here are tiny (three clients, one round) and share the session's build cache.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedlab.cli import build_parser, experiment_config_from
from fedlab.config import DataConfig, ExperimentConfig
from fedlab.learning.engine import Experiment
from fedlab.runs.store import RunStore
from tests.helpers import TINY

WHAT_IF = dict(client_dropout=0.25, dp_clip=0.5, dp_noise=0.8)


def train(config: ExperimentConfig, tiny_data, build_cache):
    """The run's records and the kept model's weights (after one round: that round's)."""
    experiment = Experiment(config, data=tiny_data, cache=build_cache)
    try:
        experiment.prepare()
        records = list(experiment.rounds())
        return records, experiment.trained_model().get_weights()
    finally:
        experiment.close()


# ----- client dropout -----


@pytest.fixture(scope="module")
def dropout_run(tiny_data, build_cache):
    # With 0.9 most sampled clients fail to report; a round still keeps at least one.
    config = ExperimentConfig(data=tiny_data.config, client_dropout=0.9, **{**TINY, "rounds": 1})
    return train(config, tiny_data, build_cache)[0]


@pytest.mark.tff
def test_client_dropout_lowers_the_clients_that_report(dropout_run):
    (record,) = dropout_run
    assert 1 <= record.clients < 3  # of the three clients, all sampled each round


@pytest.mark.tff
def test_a_round_with_dropped_clients_still_trains(dropout_run):
    assert all(np.isfinite([r.train_loss, r.val_loss, r.train_accuracy, r.val_accuracy]).all() for r in dropout_run)


# ----- DP noise -----


@pytest.fixture(scope="module")
def dp_runs(tiny_data, build_cache):
    """One round with clip 1 and no noise, trained twice from the same seed, and one with noise multiplier 1.

    The repeat re-runs the rounds of the same prepared experiment: training starts again from the seeded
    initial weights and client order, and the TFF worker it already started saves a second start-up.
    """
    quiet = ExperimentConfig(data=tiny_data.config, dp_clip=1.0, **{**TINY, "rounds": 1})
    experiment = Experiment(quiet, data=tiny_data, cache=build_cache)
    try:
        experiment.prepare()
        first = list(experiment.rounds()), experiment.trained_model().get_weights()
        again = list(experiment.rounds()), experiment.trained_model().get_weights()
    finally:
        experiment.close()
    noisy = train(quiet.replace(dp_noise=1.0), tiny_data, build_cache)
    return first, again, noisy


@pytest.mark.tff
def test_dp_without_noise_repeats_with_the_same_seed(dp_runs):
    (first_records, first_weights), (again_records, again_weights), _ = dp_runs
    for a, b in zip(first_weights, again_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert first_records[0].val_loss == pytest.approx(again_records[0].val_loss, rel=1e-4)


@pytest.mark.tff
def test_dp_noise_changes_the_update(dp_runs):
    (quiet_records, quiet_weights), _, (noisy_records, noisy_weights) = dp_runs
    assert len(noisy_weights) == len(quiet_weights)
    largest = max(float(np.abs(a - b).max()) for a, b in zip(quiet_weights, noisy_weights))
    assert largest > 1e-3
    assert noisy_records[0].val_loss != pytest.approx(quiet_records[0].val_loss, rel=1e-4)


# ----- the settings record the controls -----


def what_if_config() -> ExperimentConfig:
    return ExperimentConfig(data=DataConfig(iid=True, n=9), **WHAT_IF)


def test_controls_survive_a_dict_round_trip():
    config = what_if_config()
    raw = config.to_dict()
    assert (raw["client_dropout"], raw["dp_clip"], raw["dp_noise"], raw["data"]["iid"]) == (0.25, 0.5, 0.8, True)
    assert ExperimentConfig.from_dict(raw) == config


def test_controls_survive_the_run_store(tmp_path):
    store = RunStore(tmp_path / "fedlab.db")
    config = what_if_config()
    assert store.get_run(store.create_run(config)).config == config


def test_cli_options_set_the_controls():
    args = build_parser().parse_args(
        ["run", "--n", "9", "--iid", "--client-dropout", "0.25", "--dp-clip", "0.5", "--dp-noise", "0.8"]
    )
    assert experiment_config_from(args).replace(name="") == what_if_config()


def test_without_options_every_control_is_off():
    config = experiment_config_from(build_parser().parse_args(["run"]))
    assert (config.client_dropout, config.dp_clip, config.dp_noise, config.data.iid) == (0.0, None, 0.0, False)
