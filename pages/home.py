"""Home: what fedlab does, which data is loaded, and how one FedAvg round works."""
import streamlit as st

from fedlab import charts
from pages import history, presentation, sources, state

state.ensure_navigation()

st.title("fedlab · federated next-place prediction")
st.markdown(
    "Predict the **category of the next place** a person checks in at (café, gym, office, …) from their "
    "recent Foursquare check-ins — **without collecting anyone's check-ins in one place**. Each user is one "
    "client of **federated learning** (FedAvg, run with TensorFlow Federated); the model is a small GRU.\n\n"
    "1. **Data** — look at the check-ins: who, what, when, where, and how different the users are.\n"
    "2. **Train** — pick input features and settings, train, and watch loss and accuracy per round.\n"
    "3. **Compare** — two feature sets side by side (the study's *central* and *biggest* models).\n"
    "4. **Runs** — every run so far: open, rename, export, download the trained model and a report.\n\n"
    "Showing it to a class or a meeting? Switch on **Presentation mode** in the sidebar: larger charts, "
    "no settings.")


def demo_section() -> None:
    """The demo runs queued at first start: being prepared (refreshing every second) or ready to open."""
    runs = state.demo_runs()
    if not runs:
        return
    st.subheader("Demo runs")
    if any(run.is_active for run in runs):
        st.info("Demo runs are being prepared: the study's two models on a tiny synthetic city, so every page has "
                "something to show. They train in the background, one after the other; your own runs queue "
                "behind them.", icon=":material/hourglass_top:")
    else:
        st.caption("The demo runs have finished: open them on Runs, or put them side by side on Compare "
                   "(two finished runs from history).")
    st.dataframe(history.runs_table(state.run_store(), runs), hide_index=True, key="home_demo_runs",
                 column_config=history.RUNS_COLUMNS)


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
    for column, (label, key) in zip(cols, (("check-ins", "rows"), ("users", "users"), ("venues", "venues"),
                                           ("categories", "categories"))):
        column.metric(label, f"{overview[key]:,}")
    if overview["first_time"] is not None:
        st.caption(f"From {overview['first_time']:%d %b %Y} to {overview['last_time']:%d %b %Y} (UTC). "
                   "Change the data in the sidebar.")

st.subheader("How federated averaging (FedAvg) works")
presentation.show_chart(charts.fedavg_diagram(), key="home_fedavg")
st.markdown(
    "Each **round**: the server sends the current model to the clients; each client trains it for a few "
    "**local epochs** on its own check-ins; the clients send back only their **model updates**; the server "
    "averages them, weighting each client by how many training sequences it has. Raw check-ins never leave "
    "the client. Because every person's habits differ (the data are **non-IID**), the average is a "
    "compromise — the Data and Compare pages show how much that matters.")
