"""Data poisoning by malicious clients, and what it did to the test: pure functions, no TFF.

An attack lives only in the malicious clients' training targets, so TFF's client training stays TFF's. The
malicious clients are drawn once per run from the run's seed; validation and test data are never poisoned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedlab.config import ATTACK_HELP, ATTACKS, parse_pair  # noqa: F401 (the names live with the config)
from fedlab.errors import ConfigError

# Seeds of the run's random draws, kept apart from the sampling of clients per round.
_CHOICE_STREAM, _PERMUTATION_STREAM, _RANDOM_LABELS_STREAM = 17, 23, 29


@dataclass(frozen=True)
class Attack:
    """A run's attack, resolved against its data: who attacks and how their targets change."""

    kind: str  # one of ATTACKS
    malicious: frozenset[int]  # client indices
    num_classes: int
    seed: int
    pair: tuple[int, int] | None = None  # targeted: (class A, class B)

    def poisons(self, client: int) -> bool:
        return client in self.malicious

    def poison(self, targets: np.ndarray, *, client: int) -> np.ndarray:
        """This client's training targets as it sends them: changed when it is malicious, else as they are."""
        if not self.poisons(client):
            return targets
        if self.kind == "label-flip":
            return label_permutation(self.num_classes, seed=self.seed)[targets].astype(targets.dtype)
        if self.kind == "random-labels":
            # One draw per client and run: the client keeps the same wrong labels every round.
            rng = np.random.default_rng([self.seed, _RANDOM_LABELS_STREAM, client])
            return rng.integers(0, self.num_classes, size=targets.shape).astype(targets.dtype)
        a, b = self.pair
        return np.where(targets == a, b, targets).astype(targets.dtype)


def choose_malicious(clients: np.ndarray, *, share: float, seed: int) -> frozenset[int]:
    """round(share × clients) of these clients (at least one when the share is above 0), drawn with the seed."""
    if share <= 0 or len(clients) == 0:
        return frozenset()
    count = min(max(1, round(share * len(clients))), len(clients))
    rng = np.random.default_rng([seed, _CHOICE_STREAM])
    return frozenset(int(c) for c in rng.choice(np.asarray(clients), size=count, replace=False))


def label_permutation(num_classes: int, *, seed: int) -> np.ndarray:
    """A seeded permutation of the classes that moves every class (a cyclic shift of a shuffled order)."""
    order = np.random.default_rng([seed, _PERMUTATION_STREAM]).permutation(num_classes)
    mapping = np.empty(num_classes, dtype=np.int64)
    mapping[order] = np.roll(order, -1)
    return mapping


def resolve_pair(text: str, class_names: Sequence[str]) -> tuple[int, int]:
    """Class indices of "A:B" in this data's class names (case does not matter)."""
    index = {name.lower(): i for i, name in enumerate(class_names)}
    pair = []
    for name in parse_pair(text):
        if name.lower() not in index:
            raise ConfigError(
                f"unknown class {name!r} in the targeted attack; this data's classes: {', '.join(class_names)}"
            )
        pair.append(index[name.lower()])
    return pair[0], pair[1]


def targeted_success(confusion: Sequence[Sequence[int]], pair: tuple[int, int]) -> float | None:
    """The share of true-A test targets predicted as B (None when the test has no A)."""
    a, b = pair
    row = np.asarray(confusion)[a]
    return None if row.sum() == 0 else float(row[b] / row.sum())


def honest_accuracy(per_client: Mapping[str, Mapping[str, float]], malicious_ids: set[str]) -> tuple[float, int]:
    """(accuracy, examples) over the test targets of the clients not in `malicious_ids`."""
    kept = [stats for client, stats in per_client.items() if client not in malicious_ids]
    examples = int(sum(s["examples"] for s in kept))
    hits = sum(s["accuracy"] * s["examples"] for s in kept)
    return (float(hits / examples) if examples else 0.0), examples


def attack_summary(
    *,
    attack: Attack,
    client_ids: Sequence[str],
    class_names: Sequence[str],
    per_client: Mapping[str, Mapping[str, float]],
    confusion: Sequence[Sequence[int]],
) -> dict[str, Any]:
    """What the test says about the attack: who attacked, the honest clients' accuracy, and (targeted) how often
    the model said B where the truth was A."""
    malicious_ids = sorted(str(client_ids[i]) for i in attack.malicious)
    accuracy, examples = honest_accuracy(per_client, set(malicious_ids))
    summary: dict[str, Any] = {
        "kind": attack.kind,
        "malicious_clients": malicious_ids,
        "honest_accuracy": accuracy,
        "honest_examples": examples,
    }
    if attack.pair is not None:
        summary["pair"] = [class_names[attack.pair[0]], class_names[attack.pair[1]]]
        summary["success"] = targeted_success(confusion, attack.pair)
    return summary
