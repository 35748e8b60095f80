"""Runs: every run of every session; open one, rename, delete, export, download its model and report."""

import streamlit as st

from fedlab.dashboard import access, history, presentation, queue_view, results, state, sweep_view, teacher
from fedlab.results import charts

state.ensure_navigation()

st.title("Runs")
st.markdown("Every run on this server, newest first, from every browser session.")

store = state.run_store()
store.mark_interrupted()  # a `fedlab run` killed in its terminal shows as interrupted, not running forever
runs = store.list_runs()
if not runs:
    st.info("No runs yet. Start one on the Train or Compare page.")
    st.stop()

st.dataframe(history.runs_table(store, runs), hide_index=True, key="runs_table", column_config=history.RUNS_COLUMNS)
st.caption(
    "Best val accuracy: the highest validation accuracy of any round. Test accuracy (acc@1): the kept "
    "model (lowest validation loss) on the held-out last 20% of every client's check-ins."
)

queue_view.queue_section()

run = history.run_picker(runs)
st.divider()
if not presentation.presenting():  # renaming, deleting and downloads are not for the projector
    access.admin_unlock()
    teacher.teacher_view()
    history.run_actions(run)
    history.report_download([run.id], key=f"report_{run.id}")
results.run_panel(run.id)
if run.test:
    with st.expander("Per-category accuracy and confusion matrix"):
        results.class_details({run.name: run.test}, colors=charts.distinct_colors([run.name]), key=f"runs_{run.id}")
sweep_view.sweeps_section()
