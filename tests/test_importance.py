"""Permutation importance: the sums on hand-built hit counts, and the kept model of a real (tiny) run scored with
each feature shuffled within each client."""

import numpy as np
import pytest

from fedlab.config import ExperimentConfig
from fedlab.results.importance import (
    client_drops,
    importance_summary,
    importance_table,
    importance_text,
    pooled_drops,
)

# Two features, two repeats, three clients with 10, 20 and 0 targets.
EXAMPLES = [10, 20, 0]
BASE = [8, 10, 0]
SHUFFLED = [
    [[6, 10, 0], [4, 10, 0]],  # "a": client 0 loses 2 then 4 hits, client 1 nothing
    [[9, 7, 0], [9, 9, 0]],  # "b": client 0 gains 1, client 1 loses 3 then 1
]


def test_pooled_drop_weighs_every_target_alike_and_its_spread_is_over_the_repeats():
    summary = importance_summary(base_hits=BASE, shuffled_hits=SHUFFLED, examples=EXAMPLES, features=["a", "b"])
    a, b = summary["features"]["a"], summary["features"]["b"]
    # "a": 2 and 4 of 30 targets lost -> drops 1/15 and 2/15, mean 0.1, standard deviation 1/30.
    assert a["drop"] == pytest.approx(0.1) and a["spread"] == pytest.approx(1 / 30)
    # "b": 2 and 0 of 30 lost (client 0 gains one each time) -> 1/30 ± 1/30.
    assert b["drop"] == pytest.approx(1 / 30) and b["spread"] == pytest.approx(1 / 30)
    assert summary["repeats"] == 2 and summary["clients"] == 2  # the client without targets is left out
    assert summary["metric"] == "acc@1"


def test_share_helped_and_the_spread_across_clients_come_from_each_clients_own_drop():
    summary = importance_summary(base_hits=BASE, shuffled_hits=SHUFFLED, examples=EXAMPLES, features=["a", "b"])
    a, b = summary["features"]["a"], summary["features"]["b"]
    # Own drops, averaged over repeats: a -> (0.3, 0.0); b -> (-0.1, 0.1).
    assert a["helped"] == 0.5 and a["hurt"] == 0.0 and a["client_spread"] == pytest.approx(0.15)
    assert b["helped"] == 0.5 and b["hurt"] == 0.5 and b["client_spread"] == pytest.approx(0.1)
    own = client_drops(np.array(BASE[:2]), np.array(SHUFFLED)[:, :, :2], np.array(EXAMPLES[:2]))
    np.testing.assert_allclose(own, [[0.3, 0.0], [-0.1, 0.1]])


def test_summable_counts_give_the_same_drop_as_pooling_everything():
    # What a deployment's server would add up: per client lost hits and targets. Splitting a client in two
    # changes nothing in the pooled drop.
    whole = pooled_drops([5], [[[3]]], [10])
    split = pooled_drops([2, 3], [[[1, 2]]], [4, 6])
    np.testing.assert_allclose(whole, split)


@pytest.mark.parametrize(
    "base, shuffled, examples",
    [
        ([11, 0], [[[1, 0]]], [10, 0]),  # more hits than targets
        ([1, 0], [[[1, 0, 0]]], [10, 0]),  # clients disagree
        ([1, 0], np.zeros((1, 0, 2)), [10, 0]),  # no repeat
    ],
)
def test_inconsistent_counts_are_refused(base, shuffled, examples):
    with pytest.raises(ValueError):
        importance_summary(base_hits=base, shuffled_hits=shuffled, examples=examples, features=["a"])


def test_table_puts_the_most_important_feature_first_and_the_text_names_it():
    summary = importance_summary(base_hits=BASE, shuffled_hits=SHUFFLED, examples=EXAMPLES, features=["a", "b"])
    table = importance_table(summary)
    assert table["feature"].tolist() == ["a", "b"]
    assert "**a**" in importance_text(table) and "+10.0 pts" in importance_text(table)
    assert importance_table(None).empty and "No permutation importance" in importance_text(importance_table(None))


def test_the_within_client_permutation_keeps_every_sequence_with_its_client():
    from fedlab.learning.importance import within_client_permutation

    offsets = np.array([0, 3, 3, 7, 8])
    order = within_client_permutation(offsets, np.random.default_rng(0))
    assert sorted(order) == list(range(8))
    for lo, hi in zip(offsets[:-1], offsets[1:]):
        assert set(order[lo:hi]) == set(range(lo, hi))


def test_a_finished_runs_test_holds_the_importance_of_its_model_inputs(tiny_data, build_cache):
    from fedlab.learning.engine import Experiment

    features = ("cat_id", "user_id", "clock_sin", "clock_cos")
    config = ExperimentConfig(
        data=tiny_data.config, mode="centralized", features=features, gru_units=8, embedding_dim=4, rounds=2
    )
    experiment = Experiment(config, data=tiny_data, cache=build_cache)
    try:
        experiment.prepare()
        list(experiment.rounds())
        report = experiment.test()
    finally:
        experiment.close()
    importance = report.importance
    assert list(importance["features"]) == list(features) and importance["clients"] == len(report.per_client)
    # A user's id is the same in every one of its sequences: shuffling it within the client changes nothing.
    assert importance["features"]["user_id"] == {"drop": 0, "spread": 0, "helped": 0, "hurt": 0, "client_spread": 0}
    # The previous category is what a next-category model leans on: shuffling it costs accuracy.
    assert importance["features"]["cat_id"]["drop"] > 0
    assert experiment.timing["importance_seconds"] > 0


def test_the_importance_chart_draws_each_run_with_its_spread_on_one_feature_axis():
    from fedlab.results import charts
    from tests.fakes import fake_importance

    a = importance_table(fake_importance(("cat_id", "clock_sin")))
    b = importance_table(fake_importance(("cat_id", "venue_id", "clock_sin")))
    fig = charts.feature_importance({"central": a, "biggest": b})
    central, biggest = fig.data
    assert list(central.y) == list(biggest.y) == ["clock_sin", "cat_id", "venue_id"]  # central's order first
    assert central.marker.color == charts.CENTRAL_COLOR and biggest.marker.color == charts.BIGGEST_COLOR
    assert list(central.error_x.array)[:2] == pytest.approx(a["spread"].tolist())
    helped = charts.feature_helped({"central": a})
    assert list(helped.data[0].x) == a["helped"].tolist() and helped.layout.xaxis.tickformat == ".0%"


def test_the_cli_line_lists_the_costliest_features_first():
    from fedlab.results.importance import importance_line

    summary = importance_summary(base_hits=BASE, shuffled_hits=SHUFFLED, examples=EXAMPLES, features=["a", "b"])
    line = importance_line(summary, top=1)
    assert line.startswith("acc@1 lost when a feature is shuffled: a +10.0 ± 3.3 pts (helps 50% of clients)")
    assert line.endswith("1 more in test.importance") and importance_line(None) is None


def _echo_model():
    """Keras model whose top class is its input "a" (input "b" is ignored): hits are rows where a == target."""
    import tensorflow as tf

    a, b = tf.keras.Input((1,), name="a", dtype="int32"), tf.keras.Input((1,), name="b", dtype="int32")
    logits = tf.keras.layers.Flatten()(tf.keras.layers.Embedding(5, 5, embeddings_initializer="identity")(a))
    return tf.keras.Model({"a": a, "b": b}, logits + 0.0 * tf.cast(b, "float32"))


def test_a_clients_shuffled_copies_score_what_each_copy_scores_alone():
    from fedlab.learning.importance import client_hits

    rng = np.random.default_rng(3)
    inputs = {"a": rng.integers(0, 5, (40, 1)).astype("int32"), "b": rng.integers(0, 5, (40, 1)).astype("int32")}
    targets = inputs["a"][:, 0].copy()
    base, shuffled = client_hits(_echo_model(), inputs, targets, ["a", "b"], repeats=2, rng=np.random.default_rng(7))
    orders = np.random.default_rng(7)  # the same draws, in the same order: feature by feature, repeat by repeat
    expected_a = [int((inputs["a"][orders.permutation(40), 0] == targets).sum()) for _ in range(2)]
    assert base == 40 and shuffled.tolist() == [expected_a, [40.0, 40.0]]
    assert max(expected_a) < 40  # shuffling "a" costs hits, shuffling "b" none


def test_a_client_without_test_sequences_scores_nothing():
    from fedlab.learning.importance import client_hits

    empty = {"a": np.zeros((0, 1), "int32"), "b": np.zeros((0, 1), "int32")}
    base, shuffled = client_hits(
        _echo_model(), empty, np.zeros(0, "int64"), ["a", "b"], repeats=3, rng=np.random.default_rng(0)
    )
    assert base == 0 and shuffled.shape == (2, 3) and not shuffled.any()
