"""The Runs page's parts (the run table, picker, rename, pin, delete, downloads), the HTML reports that
the Runs and Compare pages offer, and which run the Train page shows.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import streamlit as st

from fedlab.dashboard import access
from fedlab.dashboard.results import run_labels, settings_summary
from fedlab.dashboard.state import run_store, session_id
from fedlab.runs.store import Run, RunStore

# ----- which run the Train page shows -----


def open_train_run(run_id: str) -> None:
    """Makes `run_id` the run the Train page shows, also after a reload (it goes into the URL)."""
    st.session_state["train_run_id"] = run_id
    st.query_params["run"] = run_id


def train_run_id() -> str | None:
    """The run the Train page shows: the URL's, else this session's chosen one, else its latest."""
    store = run_store()
    store.mark_interrupted()  # a `fedlab run` killed in its terminal shows as interrupted, not running forever
    for candidate in (st.query_params.get("run"), st.session_state.get("train_run_id")):
        if candidate and store.get_run(candidate) is not None:
            return candidate
    mine = store.list_runs(session_id=session_id())
    return mine[0].id if mine else None


# ----- HTML reports -----


def report_download(run_ids: list[str], *, key: str, label: str = "Download report (HTML)") -> None:
    """A download button for the report of one run, or the comparison report of two."""
    store = run_store()
    runs = [store.get_run(run_id) for run_id in run_ids]
    if any(run is None or run.is_active for run in runs):
        return  # a report describes finished work
    stamps = tuple(str(run.finished_at) for run in runs)
    name = "-vs-".join(run.id for run in runs)
    st.download_button(
        label,
        data=report_html(tuple(run_ids), stamps),
        file_name=f"fedlab-report-{name}.html",
        mime="text/html",
        key=key,
        icon=":material/description:",
        help="One self-contained page (opens offline): settings, curves, metrics with baselines, "
        "confusion matrices, per-client accuracy and fairness"
        + (", both runs side by side." if len(runs) > 1 else "."),
    )


@st.cache_data(max_entries=4, show_spinner="Building the report…")
def report_html(run_ids: tuple[str, ...], finished_at: tuple[str, ...]) -> str:  # a new result, a new report
    from fedlab.results.report import store_report_html

    return store_report_html(run_store(), list(run_ids))  # with the clean references the store holds


# ----- the Runs page -----

RUNS_COLUMNS = {
    "best val accuracy": st.column_config.NumberColumn(
        format="%.1f %%", help="Highest validation accuracy of any round."
    ),
    "test accuracy": st.column_config.NumberColumn(format="%.1f %%", help="acc@1 of the kept model on the test part."),
    "settings": st.column_config.TextColumn(width="large"),
    "id": st.column_config.TextColumn(width="small"),
}


def runs_table(store: RunStore, runs: list[Run]) -> pd.DataFrame:
    """One row per run for the Runs page: status, name, settings, best validation and test accuracy."""
    summaries = store.round_summaries()  # one query for every run's rounds, however many runs
    rows = []
    for run in runs:
        summary = summaries.get(run.id)
        rows.append(
            {
                "status": run.status,
                "name": run.name,
                "settings": settings_summary(run.config),
                "rounds": summary.rounds if summary else 0,
                "best val accuracy": _percent(summary.best_val_accuracy if summary else None),
                "test accuracy": _percent((run.test or {}).get("accuracy")),
                "created (UTC)": run.created_at.strftime("%Y-%m-%d %H:%M"),
                "id": run.id,
            }
        )
    return pd.DataFrame(
        rows,
        columns=["status", "name", "settings", "rounds", "best val accuracy", "test accuracy", "created (UTC)", "id"],
    )


def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def run_picker(runs: list[Run]) -> Run:
    """A selectbox of all runs; the choice goes into the URL so a reload opens the same run."""
    by_id = {run.id: run for run in runs}
    labels = run_labels(runs)
    if st.session_state.get("runs_open") not in by_id:
        wanted = st.query_params.get("run")
        st.session_state["runs_open"] = wanted if wanted in by_id else runs[0].id
    chosen = st.selectbox(
        "Open a run",
        list(by_id),
        key="runs_open",
        format_func=lambda i: f"{labels[i]} · {by_id[i].status} · {by_id[i].created_at:%Y-%m-%d %H:%M}",
        help="Shows its curves and results below.",
    )
    st.query_params["run"] = chosen
    return by_id[chosen]


def run_actions(run: Run) -> None:
    """Rename, pin as reference, watch on Train, delete (with a confirmation) and the downloads.

    Rename, pin and delete only for runs this session may change (dashboard.access); the rest for every run.
    """
    store = run_store()
    if not access.can_change(run):
        access.read_only_caption(run)
        with st.container(horizontal=True):
            _watch_button(run)
            _downloads(store, run)
        return
    name, rename = st.columns([4, 1], vertical_alignment="bottom")
    name.text_input(
        "Name",
        value=run.name,
        key=f"runs_name_{run.id}",
        max_chars=80,
        help="A new name for this run; press Rename to keep it.",
    )
    rename.button("Rename", key=f"runs_btn_rename_{run.id}", on_click=_rename, args=(run.id,))
    if st.session_state.get("runs_rename_error"):
        st.error(st.session_state.pop("runs_rename_error"), icon=":material/error:")
    with st.container(horizontal=True):
        _pin_button(store, run)
        _watch_button(run)
        _downloads(store, run)
        if st.button(
            "Delete…",
            key=f"runs_btn_delete_{run.id}",
            disabled=run.is_active,
            icon=":material/delete:",
            help="Stop the run first." if run.is_active else "Delete the run, its rounds and its model file.",
        ):
            st.session_state["runs_confirm_delete"] = run.id
    if st.session_state.get("runs_confirm_delete") == run.id:
        _confirm_delete(store, run)


def _watch_button(run: Run) -> None:
    if st.button(
        "Show on Train page",
        key=f"runs_btn_watch_{run.id}",
        icon=":material/model_training:",
        help="Follow this run on the Train page.",
    ):
        st.session_state["train_run_id"] = run.id
        st.switch_page("pages/train.py", query_params={"run": run.id})


def _rename(run_id: str) -> None:
    # A callback, so the run picker (whose labels change with the name) can be kept on this run.
    run = run_store().get_run(run_id)
    if run is None or not access.can_change(run):  # checked again: the page may be older than a lock
        return
    try:
        run_store().rename(run_id, st.session_state.get(f"runs_name_{run_id}", ""))
    except ValueError:
        st.session_state["runs_rename_error"] = "A run name cannot be empty; type a name first."
    st.session_state["runs_open"] = run_id


def _pin_button(store: RunStore, run: Run) -> None:
    pinned = store.reference() == run.id
    label = "Unpin reference" if pinned else "Pin as reference"
    if st.button(
        label,
        key=f"runs_btn_pin_{run.id}",
        icon=":material/push_pin:",
        help="A pinned run is drawn faint behind the curves on Train and Compare, to compare against.",
    ):
        store.set_reference(None if pinned else run.id)
        st.rerun()


def _confirm_delete(store: RunStore, run: Run) -> None:
    st.warning(f"Delete **{run.name}** with its rounds and model file? This cannot be undone.")
    yes, no, _ = st.columns([1, 1, 4])
    if yes.button("Yes, delete", key=f"runs_btn_confirm_{run.id}", type="primary") and access.can_change(run):
        store.delete(run.id)
        for key in ("runs_confirm_delete", "runs_open"):
            st.session_state.pop(key, None)
        st.query_params.pop("run", None)
        st.toast(f"Deleted {run.name}")
        st.rerun()
    if no.button("Cancel", key=f"runs_btn_cancel_{run.id}"):
        st.session_state.pop("runs_confirm_delete", None)
        st.rerun()


def _downloads(store: RunStore, run: Run) -> None:
    stem = re.sub(r"[^\w\-]+", "_", run.name).strip("_")[:40] or "run"
    st.download_button(
        "Export JSON",
        store.export_json(run.id),
        file_name=f"{stem}-{run.id}.json",
        mime="application/json",
        key=f"runs_dl_json_{run.id}",
        icon=":material/download:",
        help="Settings, every round, test metrics and baselines.",
    )
    st.download_button(
        "Rounds CSV",
        store.export_rounds_csv(run.id),
        file_name=f"{stem}-{run.id}-rounds.csv",
        mime="text/csv",
        key=f"runs_dl_csv_{run.id}",
        icon=":material/download:",
        help="One row per round.",
    )
    model = Path(run.model_path) if run.model_path else None
    if model is not None and model.is_file():
        st.download_button(
            "Model (.keras)",
            model.read_bytes(),
            file_name=f"{stem}-{run.id}.keras",
            mime="application/octet-stream",
            key=f"runs_dl_model_{run.id}",
            icon=":material/download:",
            help="The trained Keras model (lowest validation loss); load it with tf.keras.models.load_model.",
        )
