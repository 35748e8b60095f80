"""The training engine on tiny models: three clients, two rounds."""
import numpy as np
import pytest

from fedlab.config import PRESETS, ExperimentConfig
from fedlab.engine import Experiment
from fedlab.runtime import running_worker_pids

TINY = dict(gru_units=8, embedding_dim=4, rounds=2, epochs=2, batch_size=8, client_lr=0.05, dropout=0.0)


def _run(config, tiny_data, build_cache):
    experiment = Experiment(config, data=tiny_data, cache=build_cache)
    try:
        experiment.prepare()
        records = list(experiment.rounds())
        return records, experiment.test(), experiment.baselines()
    finally:
        experiment.close()


@pytest.fixture(scope="module")
def federated_run(tiny_data, build_cache):
    return _run(ExperimentConfig(data=tiny_data.config, **TINY), tiny_data, build_cache)


def test_generator_yields_one_record_per_round(federated_run):
    records, _, _ = federated_run
    assert [r.round for r in records] == [1, 2]
    assert all(r.clients == 3 and r.seconds > 0 for r in records)
    assert records[0].is_best


def test_training_loss_falls(federated_run):
    records, _, _ = federated_run
    assert records[1].train_loss < records[0].train_loss


def test_same_seed_same_metrics(federated_run, tiny_data, build_cache):
    again, _, _ = _run(ExperimentConfig(data=tiny_data.config, **TINY), tiny_data, build_cache)
    first, _ = federated_run[0], None
    np.testing.assert_allclose([r.val_loss for r in again], [r.val_loss for r in first], rtol=1e-4)


def test_test_scores_every_test_target(federated_run, tiny_data):
    _, report, baselines = federated_run
    assert report.examples == tiny_data.test.targets.size
    assert 0 <= report.accuracy <= report.top5_accuracy <= 1
    assert set(report.per_client) <= set(tiny_data.client_ids)
    assert report.personalized is None  # no fine-tuning asked for
    assert set(baselines) == {"majority", "repeat_last", "user_most_frequent", "markov", "user_markov"}


def test_no_tff_worker_survives_a_run(federated_run):
    assert running_worker_pids() == []


def test_habits_preset_trains_federated(tiny_data, build_cache):
    # Every feature of the study plus the per-step habit vectors, through TFF.
    records, report, _ = _run(ExperimentConfig(data=tiny_data.config, features=PRESETS["habits"], **{**TINY, "rounds": 1}),
                              tiny_data, build_cache)
    assert len(records) == 1 and report.examples == tiny_data.test.targets.size


def test_habits_need_data_prepared_with_them(small_city, build_cache):
    from fedlab.config import DataConfig
    from fedlab.errors import ConfigError
    from fedlab.pipeline import prepare

    data = prepare(small_city, DataConfig(top_users=3, n=9))
    experiment = Experiment(ExperimentConfig(data=data.config, features=PRESETS["habits"], **TINY), data=data,
                            cache=build_cache)
    with pytest.raises(ConfigError, match="user_habits"):
        experiment.prepare()


def test_centralized_twin_yields_one_record_per_epoch(tiny_data, build_cache):
    config = ExperimentConfig(data=tiny_data.config, mode="centralized", personalize_epochs=1, **{**TINY, "rounds": 3})
    records, report, _ = _run(config, tiny_data, build_cache)
    assert [r.round for r in records] == [1, 2, 3]
    assert records[-1].train_loss < records[0].train_loss
    assert report.examples == tiny_data.test.targets.size
    # Fine-tuned figures come beside the shared model's, on the same targets.
    tuned = report.personalized
    assert tuned["examples"] == report.examples and tuned["epochs"] == 1 and tuned["loss"] != report.loss


def test_client_sampling_takes_the_asked_number(tiny_data, build_cache):
    records, _, _ = _run(ExperimentConfig(data=tiny_data.config, clients_per_round=2, **{**TINY, "rounds": 1}), tiny_data, build_cache)
    assert records[0].clients == 2


def test_early_stopping_keeps_the_best_round(tiny_data):
    """The loop itself, without TFF: validation losses 1.0, 0.5, 0.6, 0.7, 0.8 with patience 2."""
    experiment = Experiment(ExperimentConfig(data=tiny_data.config, mode="centralized", rounds=5, patience=2), data=tiny_data)
    losses = [1.0, 0.5, 0.6, 0.7, 0.8]

    def fake_epochs():
        for i, loss in enumerate(losses):
            yield 1.0, 0.5, loss, 0.5, 3, (lambda i=i: [np.full(1, i)]), 0.01

    experiment._centralized_epochs = fake_epochs
    records = list(experiment.rounds())
    assert [r.round for r in records] == [1, 2, 3, 4]
    assert [r.is_best for r in records] == [True, True, False, False]
    assert experiment._best_weights[0][0] == 1  # the weights of round 2
