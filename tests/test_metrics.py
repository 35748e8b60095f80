"""fedlab.results.metrics on tiny hand-built arrays whose answers are worked out in each test."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fedlab.results.metrics import (
    build_test_report,
    confusion_matrix,
    mean_cross_entropy,
    mean_reciprocal_rank,
    per_class_precision_recall,
    per_client_accuracy,
    top_k_accuracy,
    true_class_rank,
)

# Three examples, four classes; the true class ranks 1st, 2nd and 4th.
PROBS = np.array(
    [
        [0.1, 0.6, 0.2, 0.1],  # target 1: highest -> rank 1
        [0.5, 0.2, 0.3, 0.0],  # target 2: only 0.5 above it -> rank 2
        [0.4, 0.3, 0.2, 0.1],  # target 3: lowest -> rank 4
    ]
)
TARGETS = np.array([1, 2, 3], dtype=np.int32)


def test_true_class_rank_counts_higher_scores():
    assert true_class_rank(PROBS, TARGETS).tolist() == [1, 2, 4]


@pytest.mark.parametrize("k, expected", [(1, 1 / 3), (2, 2 / 3), (3, 2 / 3), (4, 1.0)])
def test_top_k_accuracy_counts_true_class_within_first_k(k, expected):
    assert top_k_accuracy(PROBS, TARGETS, k=k) == pytest.approx(expected)


def test_top_k_accuracy_is_one_when_fewer_classes_than_k():
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]])  # K = 3, both top-1 predictions wrong
    targets = np.array([2, 1])
    assert top_k_accuracy(probs, targets, k=1) == 0.0
    assert top_k_accuracy(probs, targets, k=5) == 1.0


def test_top_k_accuracy_rejects_k_below_one():
    with pytest.raises(ValueError, match="k must be"):
        top_k_accuracy(PROBS, TARGETS, k=0)


def test_mean_reciprocal_rank_averages_inverse_ranks():
    assert mean_reciprocal_rank(PROBS, TARGETS) == pytest.approx((1 + 1 / 2 + 1 / 4) / 3)


def test_tied_scores_rank_the_lower_class_id_first_like_argmax():
    probs = np.array([[0.4, 0.4, 0.2], [0.4, 0.4, 0.2]])
    targets = np.array([0, 1])  # class 0 wins the tie: ranks 1 and 2
    assert true_class_rank(probs, targets).tolist() == [1, 2]
    assert mean_reciprocal_rank(probs, targets) == pytest.approx((1 + 1 / 2) / 2)
    assert top_k_accuracy(probs, targets, k=1) == 0.5
    assert np.argmax(probs, axis=1).tolist() == [0, 0]  # the same winner as the prediction


def test_mean_cross_entropy_is_mean_negative_log_of_true_probability():
    probs = np.array([[0.5, 0.5], [0.75, 0.25]])
    targets = np.array([0, 1])
    # (-ln 0.5 - ln 0.25) / 2 = (ln 2 + 2 ln 2) / 2
    assert mean_cross_entropy(probs, targets) == pytest.approx(1.5 * math.log(2))


def test_mean_cross_entropy_clips_zero_probability():
    probs = np.array([[1.0, 0.0]])
    assert mean_cross_entropy(probs, np.array([1])) == pytest.approx(-math.log(1e-7))


def test_metrics_reject_targets_outside_the_classes():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        mean_reciprocal_rank(PROBS, np.array([1, 2, 4]))


def test_confusion_matrix_rows_are_true_columns_predicted():
    targets = np.array([0, 0, 1, 2, 2, 2])
    predictions = np.array([0, 1, 1, 2, 0, 2])
    expected = [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert confusion_matrix(targets, predictions, num_classes=3).tolist() == expected


def test_per_class_precision_recall_from_confusion():
    confusion = np.array([[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]])
    result = per_class_precision_recall(confusion, ["a", "b", "c", "d"])
    # a: 1 of 2 predicted a are right, 1 of 2 true a found; b: 1 of 2 predicted, 1 of 1 true
    assert result["a"] == {"precision": 0.5, "recall": 0.5, "support": 2}
    assert result["b"] == {"precision": 0.5, "recall": 1.0, "support": 1}
    assert result["c"]["precision"] == 1.0 and result["c"]["recall"] == pytest.approx(2 / 3)
    assert result["d"] == {"precision": 0.0, "recall": 0.0, "support": 0}  # undefined -> 0


def test_per_class_precision_recall_rejects_wrong_name_count():
    with pytest.raises(ValueError, match="class names"):
        per_class_precision_recall(np.zeros((3, 3), dtype=int), ["a", "b"])


def test_per_client_accuracy_omits_clients_without_targets():
    result = per_client_accuracy(
        {"a": (np.array([1, 2]), np.array([1, 0])), "b": (np.array([]), np.array([]))},
        {"a": 10, "b": 4},
    )
    assert result == {"a": {"accuracy": 0.5, "examples": 2, "checkins": 10}}


def test_per_client_accuracy_requires_checkins_of_scored_clients():
    with pytest.raises(ValueError, match="'a'"):
        per_client_accuracy({"a": (np.array([1]), np.array([1]))}, {})


def _two_client_report():
    # u1: target 0 ranked 1st (predicted 0), target 1 ranked 2nd (predicted 2);
    # u2: target 2 ranked 2nd (predicted 1); u3 has no test targets.
    return build_test_report(
        probs_by_client={
            "u1": np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]),
            "u2": np.array([[0.2, 0.5, 0.3]]),
            "u3": np.zeros((0, 3)),
        },
        targets_by_client={"u1": np.array([0, 1]), "u2": np.array([2]), "u3": np.array([], dtype=np.int32)},
        class_names=["food", "shop", "work"],
        checkins={"u1": 20, "u2": 11, "u3": 3},
    )


def test_report_pools_scalar_metrics_over_all_clients():
    report = _two_client_report()
    assert report.examples == 3
    assert report.accuracy == pytest.approx(1 / 3)
    assert report.top5_accuracy == 1.0  # K = 3 <= 5
    assert report.mrr == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    assert report.loss == pytest.approx(-(math.log(0.7) + math.log(0.3) + math.log(0.3)) / 3)


def test_report_confusion_and_per_class_use_argmax_predictions():
    report = _two_client_report()
    assert report.confusion == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    assert report.class_names == ["food", "shop", "work"]
    assert report.per_class["food"] == {"precision": 1.0, "recall": 1.0, "support": 1}
    assert report.per_class["shop"] == {"precision": 0.0, "recall": 0.0, "support": 1}
    assert report.accuracy == pytest.approx(np.trace(report.confusion) / report.examples)


def test_report_per_client_omits_client_without_targets():
    report = _two_client_report()
    assert report.per_client == {
        "u1": {"accuracy": 0.5, "examples": 2, "checkins": 20},
        "u2": {"accuracy": 0.0, "examples": 1, "checkins": 11},
    }


def test_report_is_plain_json():
    json.dumps(_two_client_report().to_dict(), allow_nan=False)


def test_report_accepts_sequence_shaped_arrays():
    probs = np.array([[[0.9, 0.1], [0.2, 0.8]], [[0.6, 0.4], [0.3, 0.7]]])  # (S=2, T=2, K=2)
    targets = np.array([[0, 1], [1, 1]])  # predictions [[0, 1], [0, 1]]: 3 of 4 right
    report = build_test_report(
        probs_by_client={"u": probs}, targets_by_client={"u": targets}, class_names=["a", "b"], checkins={"u": 5}
    )
    assert report.examples == 4
    assert report.accuracy == 0.75
    assert report.per_client["u"]["examples"] == 4


def test_report_rejects_probs_that_do_not_match_targets():
    with pytest.raises(ValueError, match="'u'"):
        build_test_report(
            probs_by_client={"u": np.ones((2, 3)) / 3},
            targets_by_client={"u": np.array([0])},
            class_names=["a", "b", "c"],
            checkins={"u": 1},
        )


def test_report_without_targets_is_all_zero():
    report = build_test_report(probs_by_client={}, targets_by_client={}, class_names=["a", "b"], checkins={})
    assert (report.examples, report.accuracy, report.mrr, report.loss) == (0, 0.0, 0.0, 0.0)
    assert report.confusion == [[0, 0], [0, 0]]
    assert report.per_client == {}
