"""Test-set metrics: small pure functions over numpy arrays, and one TestReport tying them together.

Conventions every function here shares:
- `probs` is (M, K) class scores (softmax probabilities), `targets` is (M,) int class ids in [0, K).
- Ties between scores are broken by the lowest class id, exactly as `np.argmax` does. The class
  ranked first is therefore the predicted class, so accuracy == top-1 accuracy ==
  trace(confusion) / examples, and a tie earns a rank only when the true class has the lower id.
- A metric over zero examples is 0.0 rather than NaN, so a report stays valid JSON; `examples`
  (or `support`) says how many examples stood behind it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedlab.records import TestReport

LOSS_CLIP = 1e-7  # smallest probability the loss takes a log of, so a confident miss stays finite


def _checked_scores(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shapes and class ids must agree, or every metric below would silently index the wrong class."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets)
    if probs.ndim != 2:
        raise ValueError(f"probs must be 2-D (examples, classes), got shape {probs.shape}")
    if targets.shape != (probs.shape[0],):
        raise ValueError(f"targets must have shape ({probs.shape[0]},) to match probs, got {targets.shape}")
    return probs, _checked_class_ids(targets, probs.shape[1], "targets")


def _checked_class_ids(ids: np.ndarray, num_classes: int, name: str) -> np.ndarray:
    """Class ids must be integers in [0, num_classes); returns them as a platform index array."""
    ids = np.asarray(ids)
    if ids.size == 0:
        return ids.astype(np.intp)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must be integer class ids, got dtype {ids.dtype}")
    if ids.min() < 0 or ids.max() >= num_classes:
        raise ValueError(f"{name} must lie in [0, {num_classes}), got [{ids.min()}, {ids.max()}]")
    return ids.astype(np.intp)


def _mean_or_zero(values: np.ndarray) -> float:
    """Mean that is 0.0 over nothing (see the module docstring)."""
    return float(values.mean()) if values.size else 0.0


def true_class_rank(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each true class among its row's scores; a tie goes to the lower class id.

    Rank = 1 + classes scored higher + classes scored equal with a lower id, so rank 1 is
    exactly the `np.argmax` prediction.
    """
    probs, targets = _checked_scores(probs, targets)
    true_scores = probs[np.arange(targets.size), targets][:, None]
    lower_id = np.arange(probs.shape[1])[None, :] < targets[:, None]
    ahead = (probs > true_scores) | ((probs == true_scores) & lower_id)
    return 1 + ahead.sum(axis=1)


def top_k_accuracy(probs: np.ndarray, targets: np.ndarray, *, k: int) -> float:
    """Share of examples whose true class ranks within the first k; 1.0 whenever k >= K."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return _mean_or_zero(true_class_rank(probs, targets) <= k)


def mean_reciprocal_rank(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean of 1 / rank of the true class: rewards near misses that top-1 accuracy ignores."""
    return _mean_or_zero(1.0 / true_class_rank(probs, targets))


def mean_cross_entropy(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log probability of the true class, clipped at LOSS_CLIP to stay finite."""
    probs, targets = _checked_scores(probs, targets)
    true_probs = np.clip(probs[np.arange(targets.size), targets], LOSS_CLIP, 1.0)
    return _mean_or_zero(-np.log(true_probs))


def confusion_matrix(targets: np.ndarray, predictions: np.ndarray, *, num_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    targets = _checked_class_ids(targets, num_classes, "targets").ravel()
    predictions = _checked_class_ids(predictions, num_classes, "predictions").ravel()
    if targets.shape != predictions.shape:
        raise ValueError(f"targets and predictions differ in size: {targets.size} vs {predictions.size}")
    codes = targets * num_classes + predictions
    return np.bincount(codes, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio_or_zero(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ratio that is 0.0 where the denominator is 0 (an undefined precision or recall)."""
    out = np.zeros(numerator.shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def per_class_precision_recall(confusion: np.ndarray, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall and support (true examples) per class; 0.0 where undefined."""
    confusion = np.asarray(confusion)
    names = list(class_names)
    if confusion.shape != (len(names), len(names)):
        raise ValueError(
            f"confusion must be ({len(names)}, {len(names)}) for {len(names)} class names, got {confusion.shape}"
        )
    if len(set(names)) != len(names):
        raise ValueError("class names must be distinct, or per-class rows would overwrite each other")
    hits = np.diag(confusion)
    support = confusion.sum(axis=1)
    precision = _ratio_or_zero(hits, confusion.sum(axis=0))
    recall = _ratio_or_zero(hits, support)
    return {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "support": int(support[i])}
        for i, name in enumerate(names)
    }


def per_client_accuracy(
    predictions_by_client: Mapping[str, tuple[np.ndarray, np.ndarray]], checkins: Mapping[str, int]
) -> dict[str, dict[str, float]]:
    """Accuracy, scored examples and check-ins per client, from (predictions, targets) pairs.

    Clients with no targets are left out: an accuracy over nothing would read as a real 0.
    """
    report: dict[str, dict[str, float]] = {}
    for client, (predictions, targets) in predictions_by_client.items():
        predictions, targets = np.asarray(predictions), np.asarray(targets)
        if predictions.shape != targets.shape:
            raise ValueError(
                f"client {client!r}: predictions {predictions.shape} and targets {targets.shape} differ in shape"
            )
        if targets.size == 0:
            continue
        if client not in checkins:
            raise ValueError(f"client {client!r} has test targets but no check-in count")
        report[client] = {
            "accuracy": float((predictions == targets).mean()),
            "examples": int(targets.size),
            "checkins": int(checkins[client]),
        }
    return report


def _flattened_scores(
    client: str, probs: np.ndarray, targets: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One client's scores as (M, K) and targets as (M,); also accepts (S, T, K) with (S, T)."""
    probs, targets = np.asarray(probs), np.asarray(targets)
    if probs.shape[-1:] != (num_classes,) or probs.shape[:-1] != targets.shape:
        raise ValueError(
            f"client {client!r}: probs {probs.shape} must be targets {targets.shape} "
            f"plus a last axis of {num_classes} classes"
        )
    return probs.reshape(-1, num_classes), targets.reshape(-1)


def build_test_report(
    *,
    probs_by_client: Mapping[str, np.ndarray],
    targets_by_client: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    checkins: Mapping[str, int],
) -> TestReport:
    """One model's test metrics, pooled over all clients' targets, with per-client and per-class views.

    Pooled (micro) averages weigh each scored check-in equally, whichever client it belongs to.
    Per-client arrays may be (M, K) with (M,) targets or (S, T, K) with (S, T) targets.
    Clients with no test targets are skipped (their probs unread) and left out of `per_client`.
    """
    if set(probs_by_client) != set(targets_by_client):
        raise ValueError(
            "probs_by_client and targets_by_client must name the same clients; differ in "
            f"{sorted(set(probs_by_client) ^ set(targets_by_client))}"
        )
    names = list(class_names)
    num_classes = len(names)
    if num_classes == 0:
        raise ValueError("class_names is empty; a report needs at least one class")
    clients = sorted(c for c in targets_by_client if np.size(targets_by_client[c]) > 0)
    flat = {c: _flattened_scores(c, probs_by_client[c], targets_by_client[c], num_classes) for c in clients}
    probs = np.concatenate([flat[c][0] for c in clients]) if clients else np.zeros((0, num_classes))
    targets = np.concatenate([flat[c][1] for c in clients]) if clients else np.zeros(0, dtype=np.intp)
    predictions = np.argmax(probs, axis=1)
    confusion = confusion_matrix(targets, predictions, num_classes=num_classes)
    predictions_by_client = {c: (np.argmax(flat[c][0], axis=1), flat[c][1]) for c in clients}
    return TestReport(
        accuracy=top_k_accuracy(probs, targets, k=1),
        top5_accuracy=top_k_accuracy(probs, targets, k=5),
        mrr=mean_reciprocal_rank(probs, targets),
        loss=mean_cross_entropy(probs, targets),
        examples=int(targets.size),
        per_client=per_client_accuracy(predictions_by_client, checkins),
        per_class=per_class_precision_recall(confusion, names),
        confusion=confusion.tolist(),
        class_names=names,
    )
