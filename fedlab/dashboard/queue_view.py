"""The queue as the Train and Runs pages show it: each waiting run's place and expected start, and the admin's
"Move to front". The order is the job manager's (users in turn, fedlab.runs.schedule)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from fedlab.dashboard import access
from fedlab.dashboard.state import job_manager, run_store
from fedlab.runs.estimate import duration_text, estimate_duration
from fedlab.runs.schedule import expected_starts
from fedlab.runs.users import user_of

ESTIMATE_RUNS = 20  # the newest finished runs the estimates learn from (as the Train page's estimate)
PLAN_TTL_S = 5  # pages poll every second; the plan is worked out at most this often per queue


@dataclass(frozen=True)
class Planned:
    run_id: str
    place: int  # 1 = next to start
    name: str
    owner: str
    starts_in: float  # seconds from when the plan was made
    ahead: int  # runs that start before it, the one training included


def owner_label(owner: str) -> str:
    user = user_of(owner)
    if user is not None:
        return user
    return "a browser session" if owner else "this server (demo)"


def plan() -> list[Planned]:
    """Every queued run in the order it will start, with its expected start."""
    active = tuple(job_manager().active())
    return _plan(active, job_manager().owners(), int(time.time() // PLAN_TTL_S))


@st.cache_data(show_spinner=False, max_entries=8)
def _plan(active: tuple[str, ...], owners: dict[str, str], tick: int) -> list[Planned]:
    del tick  # part of the cache key only: the plan is worked out again every PLAN_TTL_S
    store = run_store()
    runs = {run_id: store.get_run(run_id) for run_id in active}
    if not active or any(run is None for run in runs.values()):
        return []
    history = [(run.config, store.rounds(run.id)) for run in store.list_runs(statuses=("finished",))[:ESTIMATE_RUNS]]
    first = runs[active[0]]
    queued = list(active)
    running_left, training = 0.0, 0
    if first.status != "queued":  # training (or testing): its time left
        queued, training = queued[1:], 1
        rounds = store.rounds(first.id)
        if len(rounds):
            running_left = max(first.config.rounds - len(rounds), 0) * float(rounds["seconds"].mean())
        else:
            running_left = estimate_duration(first.config, history).seconds
    durations = [estimate_duration(runs[run_id].config, history).seconds for run_id in queued]
    starts = expected_starts(durations, running_left)
    return [
        Planned(run_id, place, runs[run_id].name, owners.get(run_id, ""), start, place - 1 + training)
        for place, (run_id, start) in enumerate(zip(queued, starts), start=1)
    ]


def queued_line(run_id: str) -> str:
    """A queued run's place and expected start, in one line."""
    entry = next((p for p in plan() if p.run_id == run_id), None)
    if entry is None:
        return "Queued (waiting for the training thread). One run trains at a time; it starts by itself."
    return (
        f"Queued ({entry.ahead} run(s) ahead of it): place {entry.place} in the queue, expected "
        f"to start in about {duration_text(entry.starts_in)}. One run trains at a time, users take turns."
    )


def queue_section() -> None:
    """The Runs page's queue: place, run, user and expected start of every waiting run; the admin may move one
    to the front (the run to show on the projector next)."""
    entries = plan()
    if not entries:
        return
    with st.expander(f"Queue: {len(entries)} run(s) waiting", icon=":material/queue:"):
        table = pd.DataFrame(
            {
                "place": [p.place for p in entries],
                "run": [p.name for p in entries],
                "user": [owner_label(p.owner) for p in entries],
                "expected start": [f"in about {duration_text(p.starts_in)}" for p in entries],
            }
        )
        st.dataframe(table, hide_index=True, key="queue_table")
        st.caption("Users take turns: everyone's first run before anyone's second. Estimates come from earlier runs.")
        if not access.is_admin():
            return
        labels = {p.run_id: f"{p.place}. {p.name} ({owner_label(p.owner)})" for p in entries}
        chosen = st.selectbox("Run to start next", list(labels), format_func=labels.get, key="queue_pick")
        if st.button("Move to front", key="queue_btn_front", icon=":material/vertical_align_top:"):
            job_manager().move_to_front(chosen)
            _plan.clear()
            st.rerun()
