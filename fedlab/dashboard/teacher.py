"""The teacher's view on the Runs page of a shared server, for the admin: every user's runs with Stop, Delete
and "Show on the projector", and clearing the room after class (every user's runs deleted; the demo runs and
the lessons' prepared runs, which belong to no user, kept)."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from fedlab.dashboard import access
from fedlab.dashboard.presentation import present_next_page
from fedlab.dashboard.queue_view import owner_label
from fedlab.dashboard.state import job_manager, run_store
from fedlab.runs.access import room_runs
from fedlab.runs.store import Run

STOP_WAIT_S = 15.0  # how long clearing waits for a training run to end its round


def teacher_view() -> None:
    """Draws nothing unless this is a shared server and the admin unlocked it in this session."""
    if not access.shared() or not access.is_admin():
        return
    runs = room_runs(run_store().list_runs())
    with st.expander(f"Teacher's view: {len(runs)} run(s) of the class", icon=":material/school:", expanded=True):
        if not runs:
            st.caption("No user has a run on this server.")
            return
        table = pd.DataFrame(
            {
                "user": [owner_label(run.session_id) for run in runs],
                "run": [run.name for run in runs],
                "status": [run.status for run in runs],
                "started": [run.created_at.strftime("%H:%M") for run in runs],
            }
        )
        st.dataframe(table, hide_index=True, key="teacher_table")
        by_id = {run.id: run for run in runs}
        chosen = st.selectbox(
            "Run",
            list(by_id),
            format_func=lambda i: f"{owner_label(by_id[i].session_id)} · {by_id[i].name} · {by_id[i].status}",
            key="teacher_pick",
        )
        _run_buttons(by_id[chosen])
        st.divider()
        _clear_room(runs)


def _run_buttons(run: Run) -> None:
    with st.container(horizontal=True):
        if st.button(
            "Show on the projector",
            key="teacher_btn_show",
            icon=":material/slideshow:",
            type="primary",
            help="Presentation mode on, and this run opened on the Train page: charts and results only.",
        ):
            present_next_page()
            st.session_state["train_run_id"] = run.id
            st.switch_page("pages/train.py", query_params={"run": run.id})
        if run.can_stop and st.button("Stop", key="teacher_btn_stop", icon=":material/stop:"):
            job_manager().stop(run.id)
            st.toast(f"Stopping {run.name}…")
        if st.button("Delete", key="teacher_btn_delete", icon=":material/delete:"):
            st.session_state["teacher_confirm"] = ("one", run.id)
    if st.session_state.get("teacher_confirm") == ("one", run.id):
        _confirm(f"Delete **{run.name}** of {owner_label(run.session_id)}, with its rounds and model?", [run])


def _clear_room(runs: list[Run]) -> None:
    users = {run.session_id for run in runs}
    st.caption("After class: delete every user's runs. The demo runs and the lessons' prepared runs stay.")
    if st.button("Clear the room…", key="teacher_btn_clear", icon=":material/delete_sweep:"):
        st.session_state["teacher_confirm"] = ("room", None)
    if st.session_state.get("teacher_confirm") == ("room", None):
        _confirm(f"Delete all {len(runs)} run(s) of {len(users)} user(s)? This cannot be undone.", runs)


def _confirm(question: str, runs: list[Run]) -> None:
    st.warning(question)
    yes, no, _ = st.columns([1, 1, 4])
    if yes.button("Yes, delete", key="teacher_btn_yes", type="primary") and access.is_admin():
        left = delete_runs([run.id for run in runs])
        st.session_state.pop("teacher_confirm", None)
        st.toast(f"Deleted {len(runs) - len(left)} run(s)" + (f"; {len(left)} still stopping" if left else ""))
        st.rerun()
    if no.button("Cancel", key="teacher_btn_no"):
        st.session_state.pop("teacher_confirm", None)
        st.rerun()


def delete_runs(run_ids: list[str]) -> list[str]:
    """Stops the active ones, then deletes them all; returns those still training after STOP_WAIT_S (kept)."""
    store, manager = run_store(), job_manager()
    for run_id in run_ids:
        manager.stop(run_id)  # a queued run stops at once; the training one after its round
    deadline = time.monotonic() + STOP_WAIT_S
    while any(manager.is_active(run_id) for run_id in run_ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = []
    for run_id in run_ids:
        run = store.get_run(run_id)
        if run is None:
            continue
        if manager.is_active(run_id) or run.status in ("running", "testing"):
            left.append(run_id)
            continue
        store.delete(run_id)
    return left
