"""Which features matter: a run's permutation importance (Train, Runs, Compare side by side), and who each
feature helps (in the fairness view)."""

from __future__ import annotations

from collections.abc import Mapping

import streamlit as st

from fedlab.dashboard.presentation import show_chart
from fedlab.results import charts
from fedlab.results.importance import importance_table, importance_text

IMPORTANCE_HELP = (
    "Each client shuffles one feature among its own test sequences (the whole sequence's values move together, "
    "every other feature stays) and scores the kept model again on the same targets; the bar is the acc@1 lost, "
    "the error bar its spread over the repeats. The server only needs each client's count of hits lost, "
    "summed. A feature that is the same in all of a client's sequences (its user id) cannot be shuffled this way "
    "and scores 0: an ablation sweep (leave it out and retrain) measures it instead."
)


def _tables(reports: Mapping[str, Mapping]) -> dict:
    tables = {label: importance_table((report or {}).get("importance")) for label, report in reports.items()}
    return {label: table for label, table in tables.items() if not table.empty}


def importance_section(reports: Mapping[str, Mapping], *, colors: Mapping[str, str], key: str) -> None:
    """The permutation importance of each test report that has one, on shared axes."""
    tables = _tables(reports)
    if not tables:
        return
    st.markdown("**Which features matter**")
    show_chart(charts.feature_importance(tables, colors=colors), key=f"{key}_importance")
    for label, table in tables.items():
        prefix = f"*{label}:* " if len(tables) > 1 else ""
        repeats = (reports[label].get("importance") or {}).get("repeats")
        st.caption(f"{prefix}{importance_text(table)} ({repeats} shuffles per feature)")
    st.caption(IMPORTANCE_HELP)


def who_helps(reports: Mapping[str, Mapping], *, colors: Mapping[str, str], key: str) -> None:
    """For each feature, the share of clients it helps and how far the clients' own drops spread."""
    tables = _tables(reports)
    if not tables:
        return
    st.markdown("**Who each feature helps**")
    show_chart(charts.feature_helped(tables, colors=colors), key=f"{key}_helped")
    st.caption(
        "A feature helps a client when shuffling it lowers that client's own acc@1. A feature that helps few "
        "clients, with a wide spread, serves some users and not others; a server would learn this share by "
        "summing one 0/1 per client."
    )
