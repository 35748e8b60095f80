"""Two runs side by side (the Compare page): live while they train, then results, fairness, what an attack or
defence did beside each run's clean reference, and the comparison report; and which two runs to show.
"""

from __future__ import annotations

import html

import streamlit as st

from fedlab.dashboard.history import report_download
from fedlab.dashboard.importance_view import importance_section
from fedlab.dashboard.presentation import show_chart
from fedlab.dashboard.results import (
    attack_results,
    class_details,
    clean_references,
    curves,
    fairness_view,
    reference_rounds,
    results_table,
    run_labels,
    settings_summary,
    status_line,
    stop_button,
)
from fedlab.dashboard.state import POLL_SECONDS, demo_names, run_store, show_error
from fedlab.results import charts
from fedlab.runs.store import Run


def kept_keys() -> list[str]:
    """The Compare page's own choices (new or history, and the two runs picked), kept across pages by app.py."""
    return ["cmp_mode", "cmp_hist_a", "cmp_hist_b"]


def compare_panel(run_ids: list[str]) -> None:
    """Two (or more) runs side by side; refreshes every second while any of them is queued or running."""
    store = run_store()
    runs = [run for run in map(store.get_run, run_ids) if run is not None]
    if not runs:
        st.info("Those runs no longer exist (deleted). Start new ones or pick others from history.")
        return
    if any(run.is_active for run in runs):
        st.fragment(run_every=POLL_SECONDS)(_live_compare)(run_ids)
    else:
        _compare_view(runs)


def _live_compare(run_ids: list[str]) -> None:
    runs = [run for run in map(run_store().get_run, run_ids) if run is not None]
    if not any(run.is_active for run in runs):
        st.rerun()  # all ended: redraw once without polling, with the results
    try:
        _compare_view(runs)
    except Exception as exc:  # a fragment would otherwise show a traceback
        show_error(exc)


def _compare_view(runs: list[Run]) -> None:
    store = run_store()
    labels = run_labels(runs)
    by_label = {labels[run.id]: run for run in runs}
    rounds = {label: store.rounds(run.id) for label, run in by_label.items()}
    colors = charts.distinct_colors(by_label)
    for column, (label, run) in zip(st.columns(len(by_label)), by_label.items()):
        with column:
            st.markdown(
                f"<span style='color:{colors[label]}'>●</span> <b>{html.escape(label)}</b>", unsafe_allow_html=True
            )
            st.caption(settings_summary(run.config))
            status_line(run, rounds[label])
            if run.can_stop:
                stop_button(run.id)
    most = max(run.config.rounds for run in runs)
    curves(
        rounds,
        max_rounds=most,
        colors=colors,
        reference=reference_rounds(store, {r.id for r in runs}),
        key="compare",
        defended=tuple(label for label, run in by_label.items() if run.config.defense != "none"),
    )
    tested = {label: run for label, run in by_label.items() if run.test}
    if not tested:
        return
    if len(runs) == 2:
        report_download([run.id for run in runs], key="compare_report", label="Download comparison report (HTML)")
    st.subheader("Test results")
    clean = clean_references(tested)
    st.table(results_table(tested, rounds, clean))
    st.caption(
        "Each run's baselines are scored on that run's own test targets (they differ only when the data "
        "settings differ: users, N, grouping)."
    )
    first = next(iter(tested.values()))
    fig = charts.metrics_vs_baselines(
        {label: run.test["accuracy"] for label, run in tested.items()}, first.baselines or {}, colors=colors
    )
    show_chart(fig, key="compare_baselines")
    reports = {label: run.test for label, run in tested.items()}
    importance_section(reports, colors=colors, key="compare")
    attack_results(tested, clean, colors=colors, key="compare")
    class_details(reports, colors=colors, key="compare")
    show_chart(charts.per_client_accuracy(reports, colors=colors), key="compare_clients")
    st.caption("How test accuracy spreads over clients, for each run. Overlap shows where the two models agree.")
    fairness_view(reports, colors=colors, key="compare")


def compare_run_ids() -> list[str]:
    """The runs the Compare page shows: the URL's pair, else the pair this session started last."""
    from_url = [r for r in (st.query_params.get("runs") or "").split(",") if r]
    return from_url or list(st.session_state.get("compare_runs", []))


def history_runs() -> list[Run]:
    """The runs Compare can take from history: finished or stopped, with test results; newest first."""
    return [run for run in run_store().list_runs(statuses=("finished", "stopped")) if run.test]


def history_picker() -> list[str]:
    """Two selectboxes over runs that have test results; returns the chosen ids (empty when too few)."""
    runs = history_runs()
    if len(runs) < 2:
        st.info("Comparing from history needs two runs with test results; train some first.")
        return []
    labels = run_labels(runs)
    ids = list(labels)
    for key, default in zip(("cmp_hist_a", "cmp_hist_b"), default_pair(runs)):
        if st.session_state.get(key) not in ids:  # unset, or that run was deleted
            st.session_state[key] = default
    left, right = st.columns(2)
    a = left.selectbox("Run A", ids, key="cmp_hist_a", format_func=labels.get, help="A finished or stopped run.")
    b = right.selectbox("Run B", ids, key="cmp_hist_b", format_func=labels.get, help="A finished or stopped run.")
    if a == b:
        st.warning("Pick two different runs.")
        return [a]
    return [a, b]


def default_pair(runs: list[Run]) -> tuple[str, str]:
    """Run ids for A and B: the newest finished demo runs (central, biggest), else the two newest runs."""
    finished = [run for run in runs if run.status == "finished"]
    demos = [next((run.id for run in finished if run.name == name), None) for name in demo_names()]
    if len(demos) == 2 and None not in demos:
        return demos[0], demos[1]
    newest = (finished + [run for run in runs if run not in finished])[:2]
    return newest[1].id, newest[0].id
