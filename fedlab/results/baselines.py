"""Simple next-category predictors, scored on exactly the test targets the model is scored on.

They say what a model's accuracy is worth: a GRU that cannot beat "repeat the last category"
or a first-order Markov chain has learned little. Every predictor is fitted only on `history`
(each client's train + validation categories, in order) and never sees a test target.

Conventions:
- Ties are broken by the lowest class id (as `np.argmax` does), so results are deterministic.
- Transitions are counted within one client's history only, never across two clients.
- All clients are pooled into flat arrays first, with a parallel array of client indices, so
  fitting and predicting are a handful of numpy calls however many clients there are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# Keys of `compute_baselines`, in display order, with short descriptions for the dashboard.
BASELINE_LABELS: dict[str, str] = {
    "majority": "Majority class",
    "repeat_last": "Repeat last category",
    "user_most_frequent": "User's most frequent",
    "markov": "Markov (all users)",
    "user_markov": "Markov per user, backs off to all users",
}
# fit_modes counts densely up to this many (key, value) cells even for few pairs (0.5 MiB).
DENSE_COUNT_MIN_CELLS = 1 << 16


@dataclass(frozen=True)
class ModeTable:
    """For each key seen while fitting (sorted), the value seen most often with it."""

    keys: np.ndarray
    modes: np.ndarray


def fit_modes(keys: np.ndarray, values: np.ndarray) -> ModeTable:
    """Most frequent value per key (lowest value on ties), from parallel non-negative int arrays.

    Counts in a dense (key, value) table when it has at most 8 cells per pair (or
    DENSE_COUNT_MIN_CELLS), else sorts the (key, value) codes; the same answer either way, with
    memory that stays proportional to the pairs however many keys (clients x classes) there are.
    """
    keys = np.asarray(keys, dtype=np.int64).ravel()
    values = np.asarray(values, dtype=np.int64).ravel()
    if keys.size == 0:
        return ModeTable(keys=np.zeros(0, dtype=np.int64), modes=np.zeros(0, dtype=np.int64))
    span = int(values.max()) + 1
    codes = keys * span + values
    if (int(keys.max()) + 1) * span <= max(8 * keys.size, DENSE_COUNT_MIN_CELLS):
        return _dense_modes(codes, span)
    return _sparse_modes(codes, span)


def _dense_modes(codes: np.ndarray, span: int) -> ModeTable:
    """fit_modes by one bincount: fast while keys x values cells are few."""
    num_keys = int(codes.max()) // span + 1
    counts = np.bincount(codes, minlength=num_keys * span).reshape(num_keys, span)
    seen = np.flatnonzero(counts.any(axis=1))
    return ModeTable(keys=seen, modes=np.argmax(counts[seen], axis=1))


def _sparse_modes(codes: np.ndarray, span: int) -> ModeTable:
    """fit_modes by sorting codes: memory grows with pairs seen, not with keys x values."""
    codes, counts = np.unique(codes, return_counts=True)  # sorted by key, then value
    code_keys = codes // span
    starts = np.flatnonzero(np.r_[True, code_keys[1:] != code_keys[:-1]])
    key_max = np.maximum.reduceat(counts, starts)
    at_max = np.flatnonzero(counts == np.repeat(key_max, np.diff(np.r_[starts, codes.size])))
    first_at_max = at_max[np.searchsorted(at_max, starts)]  # lowest value reaching the max
    return ModeTable(keys=code_keys[starts], modes=codes[first_at_max] % span)


def predict_modes(table: ModeTable, keys: np.ndarray, *, fallback: int | np.ndarray) -> np.ndarray:
    """The table's mode for each key; `fallback` (one value, or one per key) for keys never seen."""
    keys = np.asarray(keys, dtype=np.int64)
    found = np.zeros(keys.shape, dtype=bool)
    modes = np.zeros(keys.shape, dtype=np.int64)
    if table.keys.size:
        positions = np.minimum(np.searchsorted(table.keys, keys), table.keys.size - 1)
        found = table.keys[positions] == keys
        modes = table.modes[positions]
    return np.where(found, modes, fallback)


def within_client_pairs(history: np.ndarray, history_client: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(client, previous, following) of consecutive history entries that belong to the same client."""
    same = history_client[1:] == history_client[:-1]
    return history_client[:-1][same], history[:-1][same], history[1:][same]


def majority_class(history: np.ndarray) -> int:
    """Most frequent class in all history (lowest id on ties; 0 when there is no history)."""
    return int(np.argmax(np.bincount(np.asarray(history, dtype=np.int64), minlength=1)))


def user_most_frequent_predict(
    *, history: np.ndarray, history_client: np.ndarray, client: np.ndarray, fallback: int
) -> np.ndarray:
    """For each target's client, its most frequent history class; `fallback` if it has no history."""
    return predict_modes(fit_modes(history_client, history), client, fallback=fallback)


def markov_predict(
    *, previous: np.ndarray, following: np.ndarray, current: np.ndarray, fallback: int | np.ndarray
) -> np.ndarray:
    """The class that most often followed each `current` class in the (previous, following) pairs.

    `fallback` where that class was never followed by anything.
    """
    return predict_modes(fit_modes(previous, following), current, fallback=fallback)


def user_markov_predict(
    *,
    pair_client: np.ndarray,
    previous: np.ndarray,
    following: np.ndarray,
    client: np.ndarray,
    current: np.ndarray,
    fallback: int | np.ndarray,
) -> np.ndarray:
    """Like `markov_predict`, but from the target's own client's pairs only.

    `fallback` (e.g. the all-users Markov prediction per target) fills in where nothing ever
    followed the current class in that client's history.
    """
    span = 1 + max(int(np.max(previous, initial=0)), int(np.max(current, initial=0)))
    per_client_row = np.asarray(pair_client, dtype=np.int64) * span + previous
    table = fit_modes(per_client_row, following)
    return predict_modes(table, np.asarray(client, dtype=np.int64) * span + current, fallback=fallback)


def _pooled(
    arrays: Mapping[str, np.ndarray], order: list[str], index: Mapping[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The arrays of `order`'s clients flattened end to end, with each entry's client index."""
    flat = [np.ravel(arrays[c]) for c in order]
    values = np.concatenate([*flat, np.zeros(0, dtype=np.int64)])
    clients = np.repeat(np.array([index[c] for c in order], dtype=np.int64), [a.size for a in flat])
    return values, clients


def _check_class_ids(arrays: Mapping[str, np.ndarray], pooled: np.ndarray, num_classes: int) -> None:
    """Class ids must be integers in [0, num_classes); on failure, name the first client at fault."""
    if pooled.size == 0 or (
        np.issubdtype(pooled.dtype, np.integer) and pooled.min() >= 0 and pooled.max() < num_classes
    ):
        return
    for client, ids in arrays.items():
        ids = np.asarray(ids)
        integer = np.issubdtype(ids.dtype, np.integer)
        if ids.size and (not integer or ids.min() < 0 or ids.max() >= num_classes):
            raise ValueError(f"client {client!r}: class ids must be integers in [0, {num_classes})")


def _check_clients(
    test_inputs: Mapping[str, np.ndarray],
    test_targets: Mapping[str, np.ndarray],
    history: Mapping[str, np.ndarray],
) -> None:
    """Inputs, targets and history must describe the same clients, position by position."""
    if set(test_inputs) != set(test_targets):
        raise ValueError(
            "test_inputs and test_targets must name the same clients; differ in "
            f"{sorted(set(test_inputs) ^ set(test_targets))}"
        )
    missing = sorted(set(test_targets) - set(history))
    if missing:
        raise ValueError(f"no history for test clients {missing}")
    for client, targets in test_targets.items():
        if np.shape(test_inputs[client]) != np.shape(targets):
            raise ValueError(
                f"client {client!r}: inputs {np.shape(test_inputs[client])} and targets "
                f"{np.shape(targets)} differ in shape"
            )


def compute_baselines(
    *,
    test_inputs: Mapping[str, np.ndarray],
    test_targets: Mapping[str, np.ndarray],
    history: Mapping[str, np.ndarray],
    num_classes: int,
) -> dict[str, float]:
    """Accuracy of each baseline in BASELINE_LABELS, pooled over every client's test targets.

    `test_inputs[c]` holds the category before each target at the same position (the last known
    category), `test_targets[c]` the category to predict. Pooling weighs each target equally,
    like the model's test accuracy. Clients in `history` without test data still count towards
    the all-users fits. With no targets at all every accuracy is 0.0.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    _check_clients(test_inputs, test_targets, history)
    index = {c: i for i, c in enumerate(history)}
    tested = list(test_targets)
    past, past_client = _pooled(history, list(history), index)
    current, client = _pooled(test_inputs, tested, index)
    targets, _ = _pooled(test_targets, tested, index)
    for arrays, pooled in ((history, past), (test_inputs, current), (test_targets, targets)):
        _check_class_ids(arrays, pooled, num_classes)
    if targets.size == 0:
        return dict.fromkeys(BASELINE_LABELS, 0.0)

    pair_client, previous, following = within_client_pairs(past, past_client)
    majority = majority_class(past)
    markov = markov_predict(previous=previous, following=following, current=current, fallback=majority)
    predictions = {
        "majority": majority,
        "repeat_last": current,
        "user_most_frequent": user_most_frequent_predict(
            history=past, history_client=past_client, client=client, fallback=majority
        ),
        "markov": markov,
        "user_markov": user_markov_predict(
            pair_client=pair_client,
            previous=previous,
            following=following,
            client=client,
            current=current,
            fallback=markov,
        ),
    }
    return {name: float(np.mean(predictions[name] == targets)) for name in BASELINE_LABELS}
