"""fedlab.results.fairness: per-client tables, best and worst served clients, and the data-size correlation."""

from __future__ import annotations

import pandas as pd

from fedlab.results.fairness import (
    FAIRNESS_CLIENTS,
    accuracy_checkins_correlation,
    best_and_worst,
    client_table,
    correlation_text,
)


def per_client(count: int) -> dict:
    # c<i>: accuracy i/20, 10 targets, 40 + 10 i check-ins; c0 has no test targets.
    clients = {f"c{i}": {"accuracy": i / 20, "examples": 10, "checkins": 40 + 10 * i} for i in range(1, count + 1)}
    clients["c0"] = {"accuracy": 0.0, "examples": 0, "checkins": 5}
    return clients


def test_client_table_keeps_scored_clients_best_first_with_their_check_ins():
    table = client_table(per_client(3))
    assert list(table.columns) == ["client", "accuracy", "examples", "checkins"]
    assert list(table["client"]) == ["c3", "c2", "c1"] and list(table["checkins"]) == [70, 60, 50]


def test_ties_go_to_more_targets_then_to_the_client_id():
    table = client_table(
        {
            "b": {"accuracy": 0.5, "examples": 3, "checkins": 9},
            "a": {"accuracy": 0.5, "examples": 3, "checkins": 9},
            "z": {"accuracy": 0.5, "examples": 7, "checkins": 9},
        }
    )
    assert list(table["client"]) == ["z", "a", "b"]


def test_best_and_worst_never_overlap_and_the_worst_comes_first():
    best, worst = best_and_worst(client_table(per_client(12)))
    assert len(best) == FAIRNESS_CLIENTS and list(best["client"]) == ["c12", "c11", "c10", "c9", "c8"]
    assert list(worst["client"]) == ["c1", "c2", "c3", "c4", "c5"]
    best, worst = best_and_worst(client_table(per_client(3)))
    assert len(best) == 3 and worst.empty


def test_correlation_needs_three_distinct_clients():
    assert accuracy_checkins_correlation(client_table(per_client(2))) is None
    assert "Too few distinct clients" in correlation_text(client_table(per_client(2)))
    assert accuracy_checkins_correlation(client_table(per_client(6))) == 1.0
    falling = pd.DataFrame(
        {"client": list("abcd"), "accuracy": [0.9, 0.7, 0.5, 0.1], "examples": 5, "checkins": [10, 20, 30, 40]}
    )
    assert "-1.00" in correlation_text(falling)
