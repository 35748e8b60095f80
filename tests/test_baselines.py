"""fedlab.results.baselines on hand-built histories whose answers are worked out in each test."""

from __future__ import annotations

import numpy as np
import pytest

from fedlab.results.baselines import (
    BASELINE_LABELS,
    compute_baselines,
    fit_modes,
    majority_class,
    markov_predict,
    predict_modes,
    user_markov_predict,
    user_most_frequent_predict,
    within_client_pairs,
)

# Three classes, two clients.
#   u1 history 0 1 0 1 0 2: counts [3, 2, 1] -> own most frequent 0
#      transitions 0->1 x2, 1->0 x2, 0->2 x1: rows 0:[0,2,1]->1, 1:[2,0,0]->0, 2: empty
#   u2 history 2 0 2 0 2 2 1: counts [2, 1, 4] -> own most frequent 2
#      transitions 2->0 x2, 0->2 x2, 2->2 x1, 2->1 x1: rows 0:[0,0,2]->2, 1: empty, 2:[2,1,1]->0
#   all: counts [5, 3, 5] -> majority 0 (tie with 2, lowest id wins)
#      transitions rows 0:[0,2,3]->2, 1:[2,0,0]->0, 2:[2,1,1]->0
HISTORY = {
    "u1": np.array([0, 1, 0, 1, 0, 2], dtype=np.int32),
    "u2": np.array([2, 0, 2, 0, 2, 2, 1], dtype=np.int32),
}
INPUTS = {"u1": np.array([[0, 1, 2, 0]], dtype=np.int32), "u2": np.array([[2, 1, 0]], dtype=np.int32)}
TARGETS = {"u1": np.array([[1, 0, 0, 1]], dtype=np.int32), "u2": np.array([[0, 0, 0]], dtype=np.int32)}


def _baselines(inputs=INPUTS, targets=TARGETS, history=HISTORY, num_classes=3):
    return compute_baselines(test_inputs=inputs, test_targets=targets, history=history, num_classes=num_classes)


def test_returns_one_accuracy_per_labelled_baseline():
    assert list(_baselines()) == list(BASELINE_LABELS)


def test_majority_predicts_most_frequent_class_over_all_histories():
    # predicts 0 everywhere: u1 targets 1 0 0 1 -> 2 hits, u2 targets 0 0 0 -> 3 hits
    assert _baselines()["majority"] == pytest.approx(5 / 7)


def test_repeat_last_predicts_input_at_same_position():
    # u1 0 1 2 0 vs 1 0 0 1 -> 0 hits; u2 2 1 0 vs 0 0 0 -> 1 hit
    assert _baselines()["repeat_last"] == pytest.approx(1 / 7)


def test_user_most_frequent_predicts_each_clients_own_mode():
    # u1 predicts 0 -> 2 hits; u2 predicts 2 -> 0 hits
    assert _baselines()["user_most_frequent"] == pytest.approx(2 / 7)


def test_markov_predicts_most_frequent_successor_over_all_histories():
    # next = [2, 0, 0]: u1 2 0 0 2 vs 1 0 0 1 -> 2 hits; u2 0 0 2 vs 0 0 0 -> 2 hits
    assert _baselines()["markov"] == pytest.approx(4 / 7)


def test_user_markov_uses_each_clients_own_successors():
    # u1 own rows [1, 0, -]: 1 0 (backoff 0) 1 vs 1 0 0 1 -> 4 hits
    # u2 own rows [2, -, 0]: 0 (backoff 0) 2 vs 0 0 0 -> 2 hits
    assert _baselines()["user_markov"] == pytest.approx(6 / 7)


def test_changing_one_target_changes_accuracies_by_one_target():
    targets = {**TARGETS, "u1": np.array([[0, 0, 0, 1]], dtype=np.int32)}  # first u1 target 1 -> 0
    result = _baselines(targets=targets)
    assert result["majority"] == pytest.approx(6 / 7)  # majority 0 now right there
    assert result["user_markov"] == pytest.approx(5 / 7)  # u1's own chain predicted 1 there
    assert result["repeat_last"] == pytest.approx(2 / 7)  # the input there is 0


def test_user_markov_backs_off_to_all_users_row_not_majority():
    # u1 never left class 2; u2 went 2->1 twice. Majority over all is 0 (counts [4, 2, 2]).
    history = {"u1": np.array([0, 0, 0, 0]), "u2": np.array([2, 1, 2, 1])}
    result = _baselines(inputs={"u1": np.array([[2]])}, targets={"u1": np.array([[1]])}, history=history)
    assert result["user_markov"] == 1.0  # global row 2 says 1
    assert result["majority"] == 0.0


def test_user_most_frequent_falls_back_to_majority_for_empty_history():
    history = {"u1": np.array([1, 1, 0]), "u2": np.array([], dtype=np.int32)}
    result = _baselines(inputs={"u2": np.array([[0, 0]])}, targets={"u2": np.array([[1, 0]])}, history=history)
    assert result["user_most_frequent"] == 0.5  # predicts majority 1


def test_transitions_do_not_cross_from_one_client_to_the_next():
    # Joined, u1 [0] + u2 [1] would look like 0->1; apart there are no transitions, so markov
    # falls back to majority 0 (tie between 0 and 1) and misses.
    history = {"u1": np.array([0]), "u2": np.array([1])}
    result = _baselines(inputs={"u1": np.array([[0]])}, targets={"u1": np.array([[1]])}, history=history)
    assert result["markov"] == 0.0


def test_no_targets_gives_zero_accuracies():
    empty = np.zeros((0, 16), dtype=np.int32)
    result = _baselines(inputs={"u1": empty}, targets={"u1": empty})
    assert result == dict.fromkeys(BASELINE_LABELS, 0.0)


def test_missing_history_is_an_error():
    with pytest.raises(ValueError, match="u3"):
        _baselines(inputs={"u3": np.array([[0]])}, targets={"u3": np.array([[0]])})


def test_class_ids_outside_num_classes_are_an_error():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        _baselines(num_classes=2)


def test_inputs_and_targets_must_match_in_shape():
    with pytest.raises(ValueError, match="differ in shape"):
        _baselines(inputs={**INPUTS, "u1": np.array([[0, 1, 2]])})


# fit_modes counts densely for small keys and sorts for huge ones; both must agree.
DENSE, SPARSE = 0, 10**9


@pytest.mark.parametrize("offset", [DENSE, SPARSE])
def test_fit_modes_takes_most_frequent_value_per_key(offset):
    table = fit_modes(np.array([5, 5, 5, 2, 2]) + offset, np.array([1, 0, 1, 3, 3]))
    assert table.keys.tolist() == [2 + offset, 5 + offset]
    assert table.modes.tolist() == [3, 1]


@pytest.mark.parametrize("offset", [DENSE, SPARSE])
def test_fit_modes_breaks_ties_by_lowest_value(offset):
    table = fit_modes(np.array([0, 0, 0, 0, 1, 1]) + offset, np.array([2, 1, 2, 1, 4, 0]))
    assert table.modes.tolist() == [1, 0]


def test_fit_modes_dense_and_sparse_agree_on_random_pairs():
    rng = np.random.default_rng(0)
    keys, values = rng.integers(0, 40, size=500), rng.integers(0, 6, size=500)
    dense, sparse = fit_modes(keys, values), fit_modes(keys + SPARSE, values)
    assert (sparse.keys - SPARSE).tolist() == dense.keys.tolist()
    assert sparse.modes.tolist() == dense.modes.tolist()


def test_predict_modes_uses_fallback_per_position_for_unseen_keys():
    table = fit_modes(np.array([1]), np.array([4]))
    fallback = np.array([9, 7, 8])  # e.g. another predictor's answers for the same positions
    assert predict_modes(table, np.array([0, 1, 2]), fallback=fallback).tolist() == [9, 4, 8]


def test_predict_modes_on_empty_table_is_all_fallback():
    table = fit_modes(np.array([], dtype=int), np.array([], dtype=int))
    assert predict_modes(table, np.array([3, 0]), fallback=6).tolist() == [6, 6]


def test_within_client_pairs_skips_the_seam_between_clients():
    history = np.array([0, 1, 2, 2, 0])
    history_client = np.array([0, 0, 0, 1, 1])
    pair_client, previous, following = within_client_pairs(history, history_client)
    assert pair_client.tolist() == [0, 0, 1]
    assert previous.tolist() == [0, 1, 2]
    assert following.tolist() == [1, 2, 0]


def test_majority_class_breaks_ties_by_lowest_id():
    assert majority_class(np.array([2, 1, 2, 1, 0])) == 1


def test_markov_predict_takes_most_frequent_follower():
    # 0 -> 2 twice, 0 -> 1 once; 1 never followed by anything -> fallback
    predicted = markov_predict(
        previous=np.array([0, 0, 0]), following=np.array([2, 1, 2]), current=np.array([0, 1]), fallback=5
    )
    assert predicted.tolist() == [2, 5]


def test_user_markov_predict_prefers_own_pairs_over_fallback():
    # client 0: 1 -> 0; client 1: 1 -> 2. Client 1 has no pair from 0 -> fallback.
    predicted = user_markov_predict(
        pair_client=np.array([0, 1]),
        previous=np.array([1, 1]),
        following=np.array([0, 2]),
        client=np.array([0, 1, 1]),
        current=np.array([1, 1, 0]),
        fallback=np.array([7, 7, 7]),
    )
    assert predicted.tolist() == [0, 2, 7]


def test_user_most_frequent_predict_per_client():
    predicted = user_most_frequent_predict(
        history=np.array([3, 3, 1, 2]), history_client=np.array([0, 0, 0, 2]), client=np.array([2, 0, 1]), fallback=9
    )
    assert predicted.tolist() == [2, 3, 9]  # client 1 has no history


def _reference_baselines(inputs, targets, history, num_classes):
    """Per-target loops, written for clarity, to check the vectorised version against."""
    counts = np.zeros(num_classes, dtype=int)
    pairs = np.zeros((num_classes, num_classes), dtype=int)
    own_counts, own_pairs = {}, {}
    for client, seq in history.items():
        own_counts[client] = np.zeros(num_classes, dtype=int)
        own_pairs[client] = np.zeros((num_classes, num_classes), dtype=int)
        for i, c in enumerate(seq):
            counts[c] += 1
            own_counts[client][c] += 1
            if i:
                pairs[seq[i - 1], c] += 1
                own_pairs[client][seq[i - 1], c] += 1
    majority = int(np.argmax(counts))

    def global_next(c):
        return int(np.argmax(pairs[c])) if pairs[c].sum() else majority

    hits = dict.fromkeys(BASELINE_LABELS, 0)
    total = 0
    for client in targets:
        user_mode = int(np.argmax(own_counts[client])) if own_counts[client].sum() else majority
        for c, t in zip(inputs[client].ravel(), targets[client].ravel()):
            row = own_pairs[client][c]
            predicted = {
                "majority": majority,
                "repeat_last": c,
                "user_most_frequent": user_mode,
                "markov": global_next(c),
                "user_markov": int(np.argmax(row)) if row.sum() else global_next(c),
            }
            for name, p in predicted.items():
                hits[name] += int(p == t)
            total += 1
    return {name: hits[name] / total for name in BASELINE_LABELS}


@pytest.mark.parametrize("seed", range(4))
def test_matches_per_target_reference_on_random_data(seed):
    rng = np.random.default_rng(seed)
    num_classes = 3 + seed  # few classes make ties common
    history = {f"u{i}": rng.integers(0, num_classes, size=rng.integers(0, 12)) for i in range(8)}
    tested = list(history)[:6]  # u6 and u7 only feed the all-users fits
    inputs = {c: rng.integers(0, num_classes, size=(5, 8)) for c in tested}
    targets = {c: rng.integers(0, num_classes, size=(5, 8)) for c in tested}
    expected = _reference_baselines(inputs, targets, history, num_classes)
    result = _baselines(inputs=inputs, targets=targets, history=history, num_classes=num_classes)
    assert result == pytest.approx(expected)
