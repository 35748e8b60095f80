"""Ablation sweeps in the dashboard: the Train page's one-click sweep, and one view of each sweep (Runs page):
acc@1, loss and MB of every run against the reference run, with the baselines and the sweep's total time."""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import streamlit as st

from fedlab.config import KNOWN_FEATURES
from fedlab.dashboard.presentation import show_chart
from fedlab.dashboard.settings import config_from_settings
from fedlab.dashboard.state import (
    POLL_SECONDS,
    data_source,
    job_manager,
    run_store,
    session_id,
    show_error,
    skip_bad_rows,
)
from fedlab.results import charts
from fedlab.results.sweep_table import stored_sweep, sweep_text
from fedlab.runs.store import ACTIVE_STATUSES
from fedlab.runs.sweeps import KINDS, get_sweep, list_sweeps, new_sweep_id, plan_sweep, record_sweep

SWEEP_HELP = (
    "Queues, with the settings above, the full run and one run without each chosen feature (leave-one-out), or "
    "the base run and one run with each chosen feature added (add-one). They train one after the other and count "
    "as one request in the queue; the Runs page shows them together."
)
COLUMNS = {
    "run": st.column_config.TextColumn("run"),
    "status": st.column_config.TextColumn("status"),
    "accuracy": st.column_config.NumberColumn("acc@1", format="percent"),
    "accuracy_delta": st.column_config.NumberColumn("Δ acc@1", format="percent", help="Minus the reference run's."),
    "loss": st.column_config.NumberColumn("test loss", format="%.4f"),
    "loss_delta": st.column_config.NumberColumn("Δ loss", format="%+.4f"),
    "megabytes": st.column_config.NumberColumn("MB sent", format="%.2f", help="Down and up, all rounds."),
    "megabytes_delta": st.column_config.NumberColumn("Δ MB", format="%+.2f"),
    "seconds": st.column_config.NumberColumn("seconds", format="%.1f", help="From its start to its end."),
}


def sweep_controls(values: Mapping) -> str | None:
    """The Train page's sweep: which kind, which features, one button. Returns the queued reference run's id."""
    with st.expander("Ablation sweep: which features matter", icon=":material/science:"):
        kind = st.radio(
            "Sweep",
            KINDS,
            key="train_sweep_kind",
            horizontal=True,
            help="Leave-one-out: the full run, and one run without each feature. Add-one: the base run (these "
            "features), and one run with each feature added.",
        )
        chosen = list(values.get("features") or ())
        options = chosen if kind == "leave-one-out" else [f for f in KNOWN_FEATURES if f not in chosen]
        features = st.multiselect(
            "Features to leave out" if kind == "leave-one-out" else "Features to add",
            options,
            default=options if kind == "leave-one-out" else [],
            help="One run per feature chosen here, "
            + ("without it." if kind == "leave-one-out" else "with it added to the features above."),
            key=f"train_sweep_features_{kind}_{zlib.crc32(','.join(options).encode()):08x}",  # new options, new widget
        )
        if not st.button("Queue the sweep", key="train_btn_sweep", icon=":material/science:", help=SWEEP_HELP):
            return None
        return queue_sweep(values, features, kind=kind)


def queue_sweep(values: Mapping, features: list[str], *, kind: str) -> str | None:
    """Queues every run of the sweep (all or none) and stores the group; shows a short error on a refusal."""
    try:
        config = config_from_settings(values, data_source(), skip_bad_rows())
        plan = plan_sweep(config.replace(name=""), features, kind=kind)
        manager, sweep_id = job_manager(), new_sweep_id()
        manager.check_room(session_id())
        ids = [manager.submit(p.config, session_id=session_id(), name=p.config.name, group=sweep_id) for p in plan.runs]
        record_sweep(run_store(), plan, ids, session_id=session_id(), sweep_id=sweep_id)
    except Exception as exc:
        show_error(exc)
        return None
    st.session_state["runs_sweep"] = sweep_id
    st.success(f"Queued {len(ids)} runs: {plan.name}. The Runs page shows them together.")
    return ids[0]


def sweeps_section() -> None:
    """The Runs page's sweeps: pick one, see its table and chart (live while its runs train)."""
    sweeps = list_sweeps(run_store())
    if not sweeps:
        return
    st.divider()
    st.subheader("Ablation sweeps")
    ids = [s.id for s in sweeps]
    if st.session_state.get("runs_sweep") not in ids:
        st.session_state["runs_sweep"] = ids[0]
    labels = {s.id: f"{s.name} · {len(s.members)} runs · {s.created_at:%Y-%m-%d %H:%M}" for s in sweeps}
    sweep_id = st.selectbox("Sweep", ids, key="runs_sweep", format_func=labels.get)
    sweep = get_sweep(run_store(), sweep_id)
    active = any((r := run_store().get_run(i)) is not None and r.status in ACTIVE_STATUSES for i in sweep.run_ids)
    if active:
        st.fragment(run_every=POLL_SECONDS)(sweep_panel)(sweep_id)
    else:
        sweep_panel(sweep_id)


def sweep_panel(sweep_id: str) -> None:
    sweep = get_sweep(run_store(), sweep_id)
    if sweep is None:
        st.info("That sweep no longer exists.")
        return
    table, baselines, seconds = stored_sweep(run_store(), sweep)
    st.dataframe(table, hide_index=True, column_order=list(COLUMNS), column_config=COLUMNS, key=f"sweep_{sweep.id}")
    total = f"{seconds:.1f} s" if seconds is not None else "not started"
    finished = int((table["status"] == "finished").sum())
    st.caption(f"{sweep_text(table, sweep.kind)} {finished} of {len(table)} runs finished; total time {total}.")
    if table["accuracy"].notna().any():
        show_chart(charts.sweep_accuracy(table, baselines or {}), key=f"sweep_{sweep.id}_accuracy")
        st.caption(
            "The reference run (dark bar, dashed line) against each ablation, and the baselines (grey) on the "
            "reference run's test targets. Retraining without a feature shows what the model cannot make up from "
            "the others; permutation importance (on each run's results) shows what the kept model leans on."
        )
