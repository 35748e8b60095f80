"""Home: what fedlab does, which data is loaded, and how one FedAvg round works."""

import streamlit as st

from fedlab.dashboard import history, presentation, sources, state
from fedlab.results import charts

state.ensure_navigation()

st.title("fedlab · federated next-place prediction")
st.markdown(
    "Predict the **category of the next place** a person checks in at (café, gym, office, …) from their "
    "recent Foursquare check-ins — **without collecting anyone's check-ins in one place**. Each user is one "
    "client of **federated learning** (FedAvg, run with TensorFlow Federated); the model is a small GRU.\n\n"
    "1. **Data** — look at the check-ins: who, what, when, where, and how different the users are.\n"
    "2. **Train** — pick input features and settings, train, and watch loss and accuracy per round.\n"
    "3. **Compare** — two feature sets side by side (the study's *central* and *biggest* models).\n"
    "4. **Lessons** — one federated-learning topic at a time (non-IID data, client drift, FedProx, privacy, "
    "secure aggregation, poisoning, …): prepared runs side by side and what to notice in them.\n"
    "5. **Runs** — every run so far: open, rename, export, download the trained model and a report.\n\n"
    "Showing it to a class or a meeting? Switch on **Presentation mode** in the sidebar: larger charts, "
    "no settings."
)


def demo_section() -> None:
    """The demo runs queued at start, the newest of each name: being prepared (refreshing every second),
    finished, interrupted or failed, each said as it is."""
    runs = state.demo_runs()
    if not runs:
        return
    latest = list(state.latest_by_name(runs).values())
    st.subheader("Demo runs")
    active = [run for run in latest if run.is_active]
    if active:
        st.info(
            "Demo runs are being prepared: the study's two models on a tiny synthetic city, so every page has "
            "something to show. They train in the background, one after the other; your own runs queue "
            "behind them.",
            icon=":material/hourglass_top:",
        )
    for run in active:
        earlier = next((r for r in runs[runs.index(run) + 1 :] if r.name == run.name), None)  # newest first
        if earlier is not None and earlier.status in state.REQUEUED_STATUSES:
            st.caption(f"{run.name} {_how_it_ended(earlier)}; it is queued again.")
    for run in latest:
        if run.status in state.REQUEUED_STATUSES:
            st.warning(f"{run.name} {_how_it_ended(run)}. {_next_time()}", icon=":material/warning:")
        elif run.status == "stopped":
            st.caption(f"{run.name} was stopped before it finished; `python -m fedlab demo` trains it.")
    finished = [run.name for run in latest if run.status == "finished"]
    if len(finished) == len(latest):
        st.caption("The demo runs have finished: Compare shows them side by side, Runs opens each one.")
    elif finished:
        st.caption(f"{', '.join(finished)} finished: Runs opens it.")
    st.dataframe(
        history.runs_table(state.run_store(), latest),
        hide_index=True,
        key="home_demo_runs",
        column_config=history.RUNS_COLUMNS,
    )


def _how_it_ended(run) -> str:
    if run.status == "interrupted":
        return "was interrupted: the app stopped before it finished"
    return f"failed: {run.error}" if run.error else "failed"


def _next_time() -> str:
    if state.demo_runs_switched_on():
        return "It is queued again when the app next starts."
    return f"Demo runs are switched off ({state.DEMO_SWITCH}=0); `python -m fedlab demo` trains it."


def live_demo_section() -> None:
    if not any(run.is_active for run in state.demo_runs()):
        st.rerun()  # all done: redraw the page once, without polling
    demo_section()


if any(run.is_active for run in state.demo_runs()):
    st.fragment(run_every=state.POLL_SECONDS)(live_demo_section)()
else:
    demo_section()

st.subheader("Data in use")
sources.source_banner()
try:
    overview = sources.explore_data("overview")
except Exception as exc:
    state.show_error(exc)
else:
    cols = st.columns(4)
    for column, (label, key) in zip(
        cols, (("check-ins", "rows"), ("users", "users"), ("venues", "venues"), ("categories", "categories"))
    ):
        column.metric(label, f"{overview[key]:,}")
    if overview["first_time"] is not None:
        st.caption(
            f"From {overview['first_time']:%d %b %Y} to {overview['last_time']:%d %b %Y} (UTC). "
            "Change the data in the sidebar."
        )

st.subheader("How federated averaging (FedAvg) works")
presentation.show_chart(charts.fedavg_diagram(), key="home_fedavg")
st.markdown(
    "Each **round**: the server sends the current model to the clients; each client trains it for a few "
    "**local epochs** on its own check-ins; the clients send back only their **model updates**; the server "
    "averages them, weighting each client by how many training sequences it has. Raw check-ins never leave "
    "the client. Because every person's habits differ (the data are **non-IID**), the average is a "
    "compromise — the Data and Compare pages show how much that matters."
)
