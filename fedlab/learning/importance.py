"""Scoring a kept model with one input feature shuffled: the hit counts fedlab.results.importance sums up.

Each client shuffles a feature among its own test sequences only (the whole sequence's values of that feature
move together, every other feature stays), as a client of a real deployment would on its own device; the
server never sees a sequence. For the shared model all clients' shuffled copies are scored together, in one
batched Keras predict per feature and repeat; under Federated Reconstruction each client scores its own
re-learnt model (`client_hits`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

REPEATS = 3  # shuffles per feature: the spread over them says how much one shuffle's luck moves the drop
PREDICT_BATCH = 1024


def within_client_permutation(offsets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row order that permutes the sequences of each client (rows offsets[i]:offsets[i+1]) among themselves."""
    sizes = np.diff(offsets)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    return np.lexsort((rng.random(len(owner)), owner)).astype(np.intp)


def batched_logits(model: tf.keras.Model, inputs: dict[str, np.ndarray], batch: int = PREDICT_BATCH) -> np.ndarray:
    """The model's logits for every row of `inputs`, `batch` rows per call."""
    # predict_on_batch reuses one compiled predict function for the test and each of its shuffles; `predict`
    # sets up a new data pipeline per call (about 70 ms) and traced the model again on a new model.
    rows = len(next(iter(inputs.values())))
    return np.concatenate(
        [
            model.predict_on_batch({f: x[start : start + batch] for f, x in inputs.items()})
            for start in range(0, rows, batch)
        ]
    )


def _step_hits(model: tf.keras.Model, inputs: dict[str, np.ndarray], targets: np.ndarray, batch: int) -> np.ndarray:
    """(sequences,): targets of each sequence whose class the model ranks first (ties: the lowest class id,
    as in the test report)."""
    predictions = np.argmax(tf.nn.softmax(batched_logits(model, inputs, batch)).numpy(), axis=-1)
    return (predictions == targets).reshape(len(targets), -1).sum(axis=1)


def shuffled_hits(
    model: tf.keras.Model,
    split,
    features: Sequence[str],
    *,
    repeats: int = REPEATS,
    seed: int = 0,
    batch: int = PREDICT_BATCH,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base hits (C,), shuffled hits (F, R, C), targets (C,)) of the shared `model` on a split's sequences
    (fedlab.data.pipeline.SplitArrays), each feature shuffled within each client, `repeats` times."""
    features = list(features)
    offsets = np.asarray(split.offsets)
    clients = len(offsets) - 1
    owner = np.repeat(np.arange(clients), np.diff(offsets))
    inputs = {f: split.inputs[f] for f in features}
    targets = np.asarray(split.targets)
    per_sequence = targets.reshape(len(targets), -1).shape[1] if len(targets) else 0
    examples = np.bincount(owner, minlength=clients) * per_sequence
    if len(targets) == 0:
        return np.zeros(clients), np.zeros((len(features), repeats, clients)), examples

    def hits(x: dict[str, np.ndarray]) -> np.ndarray:
        return np.bincount(owner, weights=_step_hits(model, x, targets, batch), minlength=clients)

    rng = np.random.default_rng(seed)
    base = hits(inputs)
    shuffled = np.zeros((len(features), repeats, clients))
    for i, feature in enumerate(features):
        for r in range(repeats):
            order = within_client_permutation(offsets, rng)
            shuffled[i, r] = hits({**inputs, feature: inputs[feature][order]})
    return base, shuffled, examples


def client_hits(
    model: tf.keras.Model,
    inputs: dict[str, np.ndarray],
    targets: np.ndarray,
    features: Sequence[str],
    *,
    repeats: int,
    rng: np.random.Generator,
) -> tuple[int, np.ndarray]:
    """One client's (base hits, (F, R) hits with each feature shuffled among its sequences) for its own model."""
    x = {f: inputs[f] for f in features}
    rows = len(targets)
    # Drawn first, even for no rows: the shared rng moves on as it did with one draw per copy.
    orders = [[rng.permutation(rows) for _ in range(repeats)] for _ in features]
    if rows == 0:
        return 0, np.zeros((len(features), repeats))
    # The client's sequences and all its shuffled copies scored together: a few predict calls instead of one per
    # copy (1 + features x repeats), whose fixed cost dominated a client's small test.
    copies = [x] + [{**x, feature: x[feature][order]} for feature, row in zip(features, orders) for order in row]
    stacked = {f: np.concatenate([copy[f] for copy in copies]) for f in features}
    predictions = np.argmax(tf.nn.softmax(batched_logits(model, stacked)).numpy(), axis=-1)
    by_copy = predictions.reshape(len(copies), rows, *predictions.shape[1:])
    hits = (by_copy == targets).reshape(len(copies), -1).sum(axis=1)
    return int(hits[0]), hits[1:].reshape(len(features), repeats).astype(float)


class ClientHits:
    """Collects `client_hits` of each client's own model during a per-client test (personalized_probs' on_client),
    then gives the same (base (C,), shuffled (F, R, C), targets (C,)) as `shuffled_hits`."""

    def __init__(self, split, features: Sequence[str], *, repeats: int = REPEATS, seed: int = 0):
        self._split, self._features, self._repeats = split, list(features), repeats
        self._rng = np.random.default_rng(seed)
        clients = len(split.offsets) - 1
        self._base = np.zeros(clients)
        self._shuffled = np.zeros((len(self._features), repeats, clients))
        self.seconds = 0.0

    def __call__(self, model: tf.keras.Model, i: int) -> None:
        started = time.perf_counter()
        inputs, targets = self._split.client(i)
        self._base[i], self._shuffled[:, :, i] = client_hits(
            model, inputs, targets, self._features, repeats=self._repeats, rng=self._rng
        )
        self.seconds += time.perf_counter() - started

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        targets = np.asarray(self._split.targets)
        per_sequence = targets.reshape(len(targets), -1).shape[1] if len(targets) else 0
        return self._base, self._shuffled, np.diff(self._split.offsets) * per_sequence
