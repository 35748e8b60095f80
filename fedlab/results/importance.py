"""Permutation importance: how much acc@1 a model loses when one input feature is shuffled.

Pure arithmetic over hit counts (fedlab.learning.importance scores the model). Each client shuffles a feature
among its own test sequences (whole sequences' values of that feature, the others kept), scores the kept model
again on the same targets, and counts its hits. What a client reports is summable: per feature and repeat, its
hits with the feature shuffled, beside its hits unshuffled and its number of targets. So in a real deployment the
server would only ever see sums of these counts (one number per client per feature, added up as updates are,
securely if need be), and the share of clients helped is the sum of one 0/1 per client and feature.

Inputs every function here shares:
- `base_hits` (C,): per client, targets the kept model gets right (acc@1) on its own test sequences;
- `shuffled_hits` (F, R, C): the same with feature f shuffled, in repeat r;
- `examples` (C,): per client, targets scored. Clients with no targets are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

METRIC = "acc@1"
COLUMNS = ["feature", "drop", "spread", "helped", "hurt", "client_spread", "clients"]


def _checked(base_hits, shuffled_hits, examples, features) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    base = np.asarray(base_hits, dtype=np.float64)
    shuffled = np.asarray(shuffled_hits, dtype=np.float64)
    examples = np.asarray(examples, dtype=np.float64)
    if base.ndim != 1 or examples.shape != base.shape:
        raise ValueError(f"base_hits {base.shape} and examples {examples.shape} must be the same (clients,) shape")
    if shuffled.ndim != 3 or shuffled.shape[0] != len(features) or shuffled.shape[2] != base.size:
        raise ValueError(
            f"shuffled_hits must be (features={len(features)}, repeats, clients={base.size}), got {shuffled.shape}"
        )
    if shuffled.shape[1] < 1:
        raise ValueError("permutation importance needs at least one repeat")
    if (base > examples).any() or (shuffled > examples).any() or (base < 0).any() or (shuffled < 0).any():
        raise ValueError("hits must lie between 0 and each client's number of targets")
    keep = examples > 0
    return base[keep], shuffled[:, :, keep], examples[keep]


def pooled_drops(base_hits, shuffled_hits, examples) -> np.ndarray:
    """(F, R): the drop in pooled acc@1 (every target weighs the same) in each repeat; 0 over no targets."""
    total = float(np.sum(examples))
    if total == 0:
        return np.zeros(np.shape(shuffled_hits)[:2])
    return (float(np.sum(base_hits)) - np.asarray(shuffled_hits).sum(axis=2)) / total


def client_drops(base_hits, shuffled_hits, examples) -> np.ndarray:
    """(F, C): each client's own drop in acc@1, averaged over the repeats (clients with targets only)."""
    examples = np.asarray(examples, dtype=np.float64)
    return (np.asarray(base_hits)[None, :] - np.asarray(shuffled_hits).mean(axis=1)) / examples[None, :]


def importance_summary(*, base_hits, shuffled_hits, examples, features: Sequence[str]) -> dict:
    """The run's permutation importance, as stored in its test report (`test.importance`):

    {"metric": "acc@1", "repeats": R, "clients": C, "features": {feature: {
        "drop": mean pooled drop over the repeats, "spread": its standard deviation over the repeats,
        "helped": share of clients whose own acc@1 drops (the feature helps them), "hurt": share whose rises,
        "client_spread": standard deviation of the clients' own drops}}}
    """
    features = list(features)
    base, shuffled, examples = _checked(base_hits, shuffled_hits, examples, features)
    pooled = pooled_drops(base, shuffled, examples)
    per_client = client_drops(base, shuffled, examples) if base.size else np.zeros((len(features), 0))
    out = {}
    for i, feature in enumerate(features):
        own = per_client[i]
        out[feature] = {
            "drop": float(pooled[i].mean()),
            "spread": float(pooled[i].std()),
            "helped": float((own > 0).mean()) if own.size else 0.0,
            "hurt": float((own < 0).mean()) if own.size else 0.0,
            "client_spread": float(own.std()) if own.size else 0.0,
        }
    return {"metric": METRIC, "repeats": int(shuffled.shape[1]), "clients": int(base.size), "features": out}


def importance_table(importance: Mapping | None) -> pd.DataFrame:
    """One row per feature (most important first; ties by name): drop, spread, helped, hurt, client_spread,
    clients. Empty for a run without importance (stored before it existed)."""
    if not importance or not importance.get("features"):
        return pd.DataFrame(columns=COLUMNS)
    clients = int(importance.get("clients", 0))
    rows = [
        {"feature": name, **{key: float(entry.get(key, 0.0)) for key in COLUMNS[1:-1]}, "clients": clients}
        for name, entry in importance["features"].items()
    ]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.sort_values(["drop", "feature"], ascending=[False, True], ignore_index=True)


def importance_text(table: pd.DataFrame) -> str:
    """One sentence naming the feature the model leans on most, and whether shuffling any feature helps."""
    if table.empty:
        return "No permutation importance for this run (it was tested before fedlab measured it)."
    top = table.iloc[0]
    line = (
        f"Shuffling **{top['feature']}** costs the most: {top['drop'] * 100:+.1f} pts of acc@1 lost "
        f"(± {top['spread'] * 100:.1f} over the repeats); it helps {top['helped']:.0%} of the clients."
    )
    useless = table[table["drop"] <= 0]["feature"].tolist()
    if useless:
        line += f" Shuffling {', '.join(useless)} costs nothing: the model does not rely on {_them(useless)}."
    return line


def _them(names: list[str]) -> str:
    return "it" if len(names) == 1 else "them"


def importance_line(importance: Mapping | None, *, top: int = 5) -> str | None:
    """The CLI's line: the `top` features whose shuffling costs the most acc@1, with their spread."""
    table = importance_table(importance)
    if table.empty:
        return None
    parts = [
        f"{r.feature} {r.drop * 100:+.1f} ± {r.spread * 100:.1f} pts (helps {r.helped:.0%} of clients)"
        for r in table.head(top).itertuples(index=False)
    ]
    more = f", {len(table) - top} more in test.importance" if len(table) > top else ""
    return "acc@1 lost when a feature is shuffled: " + ", ".join(parts) + more
