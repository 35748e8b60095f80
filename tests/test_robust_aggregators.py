"""Median, trimmed mean, multi-Krum and norm bounding: the rules on tiny hand-built matrices, their TFF factories on
a few hand-built updates, and a tiny real run with each."""

from __future__ import annotations

import numpy as np
import pytest

from fedlab.config import GATHERING_DEFENSES, ExperimentConfig
from fedlab.errors import ConfigError
from tests.test_cli import fedlab

tf = pytest.importorskip("tensorflow")
ra = pytest.importorskip("fedlab.learning.robust_aggregators")

HONEST = [[1.0, 2.0], [1.2, 1.8], [0.8, 2.2], [1.1, 2.1]]


def matrix(rows) -> tf.Tensor:
    return tf.constant(rows, tf.float32)


def test_the_median_of_each_value_ignores_one_huge_outlier():
    assert ra.coordinate_median(matrix([*HONEST[:3], [1e6, -1e6]])).numpy().tolist() == pytest.approx([1.1, 1.9])
    assert ra.coordinate_median(matrix([[3.0, 0.0], [1.0, 5.0], [2.0, 1.0]])).numpy().tolist() == [2.0, 1.0]


def test_the_trimmed_mean_cuts_beta_of_the_clients_at_each_end_of_each_value():
    rows = [[0.0, 10.0], [1.0, 20.0], [2.0, 30.0], [3.0, 40.0], [100.0, -90.0]]
    assert ra.trimmed_mean(matrix(rows), 0.2).numpy().tolist() == pytest.approx([2.0, 20.0])  # one cut at each end
    assert ra.trimmed_mean(matrix(rows), 0.0).numpy().tolist() == pytest.approx(np.mean(rows, axis=0))
    assert int(ra.trimmed_count(5, 0.49)) == 2 and int(ra.trimmed_count(2, 0.49)) == 0  # always one value left


def test_krum_scores_the_honest_cluster_lowest_and_multi_krum_averages_it():
    attackers = [[-5.0, 9.0], [-5.2, 9.1]]  # two colluding updates far from the crowd
    updates = matrix([*HONEST, *attackers])
    scores = ra.krum_scores(updates, 2).numpy()
    assert scores[:4].max() < scores[4:].min()
    mean, chosen = ra.multi_krum(updates, 2)
    assert sorted(chosen.numpy().tolist()) == [0, 1, 2, 3]
    assert mean.numpy().tolist() == pytest.approx(np.mean(HONEST, axis=0))
    # With no attacker assumed, every update is kept: the plain mean.
    assert ra.multi_krum(updates, 0)[1].shape == (6,)
    assert int(ra.assumed_byzantine(100, 0.3)) == 30


@pytest.fixture(scope="module")
def runtime():
    """One TFF runtime for this module's factory tests."""
    from fedlab.learning.runtime import Runtime

    runtime = Runtime()
    yield runtime
    runtime.close()


def aggregate(runtime, factory, values):
    """One round of the factory's process over these client values (lists of float32 arrays)."""
    import tensorflow_federated as tff

    value_type = tff.types.to_type([tff.types.TensorType(np.float32, np.shape(v)) for v in values[0]])
    process = factory.create(value_type)
    with runtime.activate():
        return process.next(process.initialize(), values)


def client(scale: float) -> list[np.ndarray]:
    return [np.array([1.0, -2.0, 3.0], np.float32) * scale, np.full((2, 2), scale, np.float32)]


@pytest.mark.tff
def test_each_gathering_factory_sees_every_update_and_an_update_scaled_by_a_million_does_not_move_it(runtime):
    honest = [client(s) for s in (0.9, 1.0, 1.1, 1.2)]
    values = [*honest, client(1e6)]
    median = aggregate(runtime, ra.GatheringFactory("median"), values)
    assert np.allclose(median.result[0], client(1.1)[0]) and np.allclose(median.result[1], client(1.1)[1])
    assert median.measurements["updates"] == 5
    trimmed = aggregate(runtime, ra.GatheringFactory("trimmed-mean", beta=0.2), values)
    assert np.allclose(trimmed.result[1], np.full((2, 2), 1.1))  # 0.9 and 1e6 cut
    assert trimmed.measurements["trimmed_each_end"] == 1
    krum = aggregate(runtime, ra.GatheringFactory("multi-krum", share=0.2), values)
    assert np.allclose(krum.result[0], client(1.05)[0])  # the four honest ones, averaged
    assert (krum.measurements["zeroed_count"], krum.measurements["byzantine"]) == (1, 1)


@pytest.mark.tff
def test_norm_bounding_clips_each_update_and_adds_only_a_little_noise(runtime):
    from fedlab.learning.federated import defense_counts

    values = [client(1.0), client(-1.0), client(1e6)]
    quiet = aggregate(runtime, ra.norm_bound_factory(clip_norm=0.5, noise=0.0, clients_per_round=3), values)
    assert defense_counts(quiet.measurements) == (3, 0)
    norm = np.sqrt(sum(np.sum(np.square(part)) for part in quiet.result))
    assert norm == pytest.approx(0.5 / 3, rel=1e-4)  # only the huge one is left: clipped to 0.5, over 3 clients
    noisy = aggregate(runtime, ra.norm_bound_factory(clip_norm=0.5, noise=0.01, clients_per_round=3), values)
    moved = np.concatenate([(a - b).ravel() for a, b in zip(noisy.result, quiet.result)])
    assert 0 < np.abs(moved).max() < 0.1


@pytest.mark.parametrize("defense", GATHERING_DEFENSES)
def test_defences_that_need_every_update_are_refused_with_secure_aggregation_dp_and_compression(defense):
    for changes, words in (
        ({"secure_aggregation": True}, "needs every update at the server, so it cannot be combined with secure"),
        ({"dp_clip": 1.0}, "cannot be combined with differential privacy"),
        ({"compression_bits": 8}, "cannot be combined with compression"),
    ):
        with pytest.raises(ConfigError, match=words) as caught:
            ExperimentConfig(defense=defense, **changes)
        assert "\n" not in str(caught.value)


def test_the_cli_refuses_a_beta_of_one_half_with_status_2():
    done = fedlab("run", "--no-store", "--defense", "trimmed-mean", "--trim-beta", "0.5")
    assert done.returncode == 2 and "trimmed mean beta must be a number below 0.5" in done.stderr


@pytest.mark.tff
def test_a_tiny_multi_krum_run_trains_and_counts_the_update_it_left_out(tiny_data, build_cache):
    from tests.test_defenses import trained

    records, report, _ = trained(tiny_data, build_cache, rounds=1, malicious_clients=0.34, defense="multi-krum")
    assert np.isfinite(report.accuracy) and records[0].clients == 3
    assert (records[0].clipped, records[0].zeroed) == (0, 1)  # one attacker assumed among three: one left out


def test_the_explain_panel_says_what_each_defence_needs_and_left_out():
    from fedlab.results.explain import round_explanation

    latest = {"round": 2, "clients": 10, "zeroed": 3, "clipped": 0, "train_loss": 1.0, "train_accuracy": 0.1}
    latest |= {"val_loss": 1.0, "val_accuracy": 0.1, "is_best": True}
    krum = round_explanation(ExperimentConfig(malicious_clients=0.3, defense="multi-krum", krum_byzantine=3), latest)
    assert "(attackers assumed: 3)" in krum and "left out 3 of the 10 updates" in krum
    assert "cannot run under secure aggregation" in krum
    trimmed = round_explanation(ExperimentConfig(defense="trimmed-mean", trim_beta=0.2), latest)
    assert "(beta 0.2)" in trimmed and "counts stay 0" in trimmed
    bounded = round_explanation(ExperimentConfig(defense="norm-bound", clip_norm=2.0), latest)
    assert "(clipping norm 2)" in bounded and "clipped 0 and zeroed 3" in bounded
