"""Fairness across users: which clients the shared model serves well, and whether data size decides it.

Pure tables from a test report's `per_client` entries (fedlab.results.metrics.per_client_accuracy:
client id -> {"accuracy", "examples", "checkins"}). The HTML report and the dashboard both use them;
the figure that goes with them is fedlab.results.charts.accuracy_vs_checkins.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

FAIRNESS_CLIENTS = 5  # best and worst served clients listed per run
COLUMNS = ["client", "accuracy", "examples", "checkins"]
_ORDER = ["accuracy", "examples", "client"]


def client_table(per_client: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """One row per client with test targets: client, accuracy, examples (targets scored), checkins.

    Sorted best served first; ties go to the client with more targets, then by id, so the order is stable.
    """
    rows = [
        {
            "client": str(client),
            "accuracy": float(c["accuracy"]),
            "examples": int(c.get("examples", 0)),
            "checkins": int(c.get("checkins", 0)),
        }
        for client, c in per_client.items()
        if c.get("examples", 0) > 0
    ]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.sort_values(_ORDER, ascending=[False, False, True], ignore_index=True)


def best_and_worst(table: pd.DataFrame, *, count: int = FAIRNESS_CLIENTS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The `count` best served clients, and up to `count` worst (worst first) that are not among the best."""
    best = table.head(count)
    rest = table.iloc[len(best) :]
    worst = rest.tail(count).sort_values(_ORDER, ascending=[True, False, True])
    return best, worst


def accuracy_checkins_correlation(table: pd.DataFrame) -> float | None:
    """Spearman rank correlation of client accuracy with check-ins; None when too few distinct clients."""
    if len(table) < 3 or table["checkins"].nunique() < 2 or table["accuracy"].nunique() < 2:
        return None
    return float(table["accuracy"].corr(table["checkins"], method="spearman"))


def correlation_text(table: pd.DataFrame) -> str:
    """One sentence on whether clients with more check-ins are served better."""
    rho = accuracy_checkins_correlation(table)
    if rho is None:
        return "Too few distinct clients to relate accuracy to data size."
    return (
        f"Rank correlation (Spearman) of accuracy with check-ins: {rho:+.2f} "
        "(0: data size does not matter; +1: more data, always better served)."
    )
