"""Attacks and defences in tiny real TFF runs: poisoning costs accuracy, TFF's robust factories clip and zero,
and each round records the aggregator's own counts."""

from __future__ import annotations

import numpy as np
import pytest

from fedlab.config import PRESETS, DataConfig, ExperimentConfig
from fedlab.learning import federated
from fedlab.learning.engine import Experiment
from fedlab.records import RoundRecord
from fedlab.runs.store import RunStore
from tests.helpers import TINY


def trained(tiny_data, build_cache, **changes):
    config = ExperimentConfig(data=tiny_data.config, **{**TINY, **changes})
    experiment = Experiment(config, data=tiny_data, cache=build_cache)
    try:
        experiment.prepare()
        records = list(experiment.rounds())
        return records, experiment.test(), experiment
    finally:
        experiment.close()


def first_round(**changes) -> RoundRecord:
    """A stored round 1 of 10 clients with these counts."""
    common = dict(train_loss=1.0, train_accuracy=0.1, val_loss=1.0, val_accuracy=0.1, clients=10, seconds=0.1)
    return RoundRecord(round=1, **common, **changes)


@pytest.fixture(scope="module")
def twelve_clients(small_city):
    """Every user of the small city as a client, N=5: enough for a small model to learn something in 4 rounds."""
    from fedlab.data.pipeline import prepare

    return prepare(small_city, DataConfig(top_users=12, n=5), habits=False)


@pytest.mark.tff
def test_label_flipping_clients_lower_the_accuracy_of_the_same_seeded_run(twelve_clients, build_cache):
    options = dict(features=PRESETS["central"], rounds=4, epochs=3, client_lr=0.02, gru_units=16, batch_size=16, seed=5)
    _, clean, _ = trained(twelve_clients, build_cache, **options)
    _, attacked, experiment = trained(twelve_clients, build_cache, malicious_clients=0.5, **options)
    assert len(experiment.attack.malicious) == 6
    assert attacked.accuracy < clean.accuracy - 0.05
    assert clean.attack is None and len(attacked.attack["malicious_clients"]) == 6
    assert attacked.attack["honest_examples"] < attacked.examples


@pytest.mark.tff
def test_a_targeted_attack_reports_how_often_a_is_called_b(tiny_data, build_cache):
    pair = f"{tiny_data.class_names[0]}:{tiny_data.class_names[1]}"
    _, report, _ = trained(
        tiny_data, build_cache, rounds=1, malicious_clients=0.34, attack="targeted", attack_classes=pair
    )
    assert report.attack["pair"] == list(tiny_data.class_names[:2])
    row = report.confusion[0]
    assert report.attack["success"] == pytest.approx(row[1] / sum(row))


@pytest.mark.tff
@pytest.mark.parametrize(("norm", "clipped"), [(1e-6, "all"), (1000.0, "none")])
def test_each_round_records_how_many_updates_the_clip_defence_clipped(norm, clipped, tiny_data, build_cache):
    records, _, _ = trained(tiny_data, build_cache, rounds=2, defense="clip", clip_norm=norm)
    for record in records:
        assert record.clipped == (record.clients if clipped == "all" else 0)
        assert record.zeroed == 0


@pytest.mark.tff
def test_the_robust_defence_trains_and_counts_within_the_clients(tiny_data, build_cache):
    records, report, _ = trained(tiny_data, build_cache, rounds=2, defense="robust")
    assert all(0 <= r.clipped <= r.clients and 0 <= r.zeroed <= r.clients for r in records)
    assert np.isfinite(report.accuracy)


@pytest.mark.tff
def test_zeroing_drops_an_update_scaled_far_out():
    import tensorflow_federated as tff

    from fedlab.learning.runtime import Runtime

    factory = federated.defense_aggregator("zeroing", clip_norm=None)
    process = factory.create(tff.types.TensorType(np.float32, [3]), tff.types.TensorType(np.float32))
    honest = [np.array([0.1, -0.2, 0.3], np.float32), np.array([0.2, 0.0, -0.1], np.float32)]
    scaled_out = np.array([1e6, 1e6, -1e6], np.float32)
    runtime = Runtime()
    try:
        with runtime.activate():
            output = process.next(process.initialize(), [*honest, scaled_out], [1.0, 1.0, 1.0])
    finally:
        runtime.close()
    assert federated.defense_counts(output.measurements) == (0, 1)
    assert np.allclose(output.result, (honest[0] + honest[1]) / 3)  # zeroed, its weight still counted


def test_the_store_keeps_each_rounds_defence_counts(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run(ExperimentConfig(defense="robust"))
    store.add_round(run_id, first_round(clipped=4, zeroed=1))
    rounds = store.rounds(run_id)
    assert rounds[["clipped", "zeroed"]].values.tolist() == [[4, 1]]


def test_a_store_from_before_defences_opens_with_no_update_clipped(tmp_path):
    import sqlite3

    from fedlab.runs.store import SCHEMA_VERSION

    path = tmp_path / "runs.db"
    store = RunStore(path)
    run_id = store.create_run(ExperimentConfig())
    store.add_round(run_id, first_round(bytes_up=5))
    with sqlite3.connect(path) as conn:  # back to what schema 2 had
        for column in ("clipped", "zeroed"):
            conn.execute(f"ALTER TABLE rounds DROP COLUMN {column}")
        conn.execute("PRAGMA user_version = 2")
    frame = RunStore(path).rounds(run_id)
    assert frame[["bytes_up", "clipped", "zeroed"]].values.tolist() == [[5, 0, 0]]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
