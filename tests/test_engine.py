"""The training engine on tiny models: three clients, two rounds."""
import numpy as np
import pytest

from fedlab.config import PRESETS, DataConfig, ExperimentConfig
from fedlab.engine import BuildCache, Experiment
from fedlab.pipeline import prepare
from fedlab.runtime import running_worker_pids

TINY = dict(gru_units=8, embedding_dim=4, rounds=2, epochs=2, batch_size=8, client_lr=0.05, dropout=0.0)


@pytest.fixture(scope="module")
def data(small_city):
    return prepare(small_city, DataConfig(top_users=3, n=9))


@pytest.fixture(scope="module")
def cache():
    return BuildCache()


def _run(config, data, cache):
    experiment = Experiment(config, data=data, cache=cache)
    try:
        experiment.prepare()
        records = list(experiment.rounds())
        return records, experiment.test(), experiment.baselines()
    finally:
        experiment.close()


@pytest.fixture(scope="module")
def federated_run(data, cache):
    return _run(ExperimentConfig(data=data.config, **TINY), data, cache)


def test_generator_yields_one_record_per_round(federated_run):
    records, _, _ = federated_run
    assert [r.round for r in records] == [1, 2]
    assert all(r.clients == 3 and r.seconds > 0 for r in records)
    assert records[0].is_best


def test_training_loss_falls(federated_run):
    records, _, _ = federated_run
    assert records[1].train_loss < records[0].train_loss


def test_same_seed_same_metrics(federated_run, data, cache):
    again, _, _ = _run(ExperimentConfig(data=data.config, **TINY), data, cache)
    first, _ = federated_run[0], None
    np.testing.assert_allclose([r.val_loss for r in again], [r.val_loss for r in first], rtol=1e-4)


def test_test_scores_every_test_target(federated_run, data):
    _, report, baselines = federated_run
    assert report.examples == data.test.targets.size
    assert 0 <= report.accuracy <= report.top5_accuracy <= 1
    assert set(report.per_client) <= set(data.client_ids)
    assert set(baselines) == {"majority", "repeat_last", "user_most_frequent", "markov", "user_markov"}


def test_no_tff_worker_survives_a_run(federated_run):
    assert running_worker_pids() == []


def test_biggest_preset_trains(data, cache):
    records, report, _ = _run(ExperimentConfig(data=data.config, features=PRESETS["biggest"], **{**TINY, "rounds": 1}),
                              data, cache)
    assert len(records) == 1 and report.examples > 0


def test_centralized_twin_yields_one_record_per_epoch(data, cache):
    records, report, _ = _run(ExperimentConfig(data=data.config, mode="centralized", **{**TINY, "rounds": 3}),
                              data, cache)
    assert [r.round for r in records] == [1, 2, 3]
    assert records[-1].train_loss < records[0].train_loss
    assert report.examples == data.test.targets.size


def test_client_sampling_takes_the_asked_number(data, cache):
    records, _, _ = _run(ExperimentConfig(data=data.config, clients_per_round=2, **{**TINY, "rounds": 1}), data, cache)
    assert records[0].clients == 2


def test_early_stopping_keeps_the_best_round(data):
    """The loop itself, without TFF: validation losses 1.0, 0.5, 0.6, 0.7, 0.8 with patience 2."""
    experiment = Experiment(ExperimentConfig(data=data.config, mode="centralized", rounds=5, patience=2), data=data)
    losses = [1.0, 0.5, 0.6, 0.7, 0.8]

    def fake_epochs():
        for i, loss in enumerate(losses):
            yield 1.0, 0.5, loss, 0.5, 3, (lambda i=i: [np.full(1, i)]), 0.01

    experiment._centralized_epochs = fake_epochs
    records = list(experiment.rounds())
    assert [r.round for r in records] == [1, 2, 3, 4]
    assert [r.is_best for r in records] == [True, True, False, False]
    assert experiment._best_weights[0][0] == 1  # the weights of round 2
