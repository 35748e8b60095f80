"""Runs: every run of every session; open one, rename, delete, export, download its model."""
import streamlit as st

from fedlab import charts
from pages import common

common.ensure_navigation()


@st.cache_data(max_entries=4, show_spinner="Building the report…")
def report_html(run_id: str, finished_at: str) -> str:  # finished_at: a new result makes a new report
    from fedlab.report import run_report_html

    store = common.run_store()
    return run_report_html(store.get_run(run_id), store.rounds(run_id))


st.title("Runs")
st.markdown("Every run on this server, newest first, from every browser session.")

store = common.run_store()
runs = store.list_runs()
if not runs:
    st.info("No runs yet. Start one on the Train or Compare page.")
    st.stop()

st.dataframe(common.runs_table(store, runs), hide_index=True, key="runs_table",
             column_config=common.RUNS_COLUMNS)
st.caption("Best val accuracy: the highest validation accuracy of any round. Test accuracy (acc@1): the kept "
           "model (lowest validation loss) on the held-out last 20% of every client's check-ins.")

run = common.run_picker(runs)
st.divider()
common.run_actions(run)
if not run.is_active:
    st.download_button("Download report (HTML)", data=report_html(run.id, str(run.finished_at)),
                       file_name=f"fedlab-report-{run.id}.html", mime="text/html", key=f"report_{run.id}",
                       icon=":material/description:",
                       help="One self-contained page (opens offline): settings, curves, metrics with baselines, "
                            "confusion matrix, per-client accuracy and fairness.")
common.run_panel(run.id)
if run.test:
    with st.expander("Per-category accuracy and confusion matrix"):
        common.class_details({run.name: run.test}, colors=charts.distinct_colors([run.name]),
                             key=f"runs_{run.id}")
