"""Home: what fedlab does, which data is loaded, and how one FedAvg round works."""
import streamlit as st

from fedlab import charts
from pages import common

common.ensure_navigation()

st.title("fedlab · federated next-place prediction")
st.markdown(
    "Predict the **category of the next place** a person checks in at (café, gym, office, …) from their "
    "recent Foursquare check-ins — **without collecting anyone's check-ins in one place**. Each user is one "
    "client of **federated learning** (FedAvg, run with TensorFlow Federated); the model is a small GRU.\n\n"
    "1. **Data** — look at the check-ins: who, what, when, where, and how different the users are.\n"
    "2. **Train** — pick input features and settings, train, and watch loss and accuracy per round.\n"
    "3. **Compare** — two feature sets side by side (the study's *central* and *biggest* models).\n"
    "4. **Runs** — every run so far: open, rename, export, download the trained model.")

st.subheader("Data in use")
common.source_banner()
try:
    overview = common.explore_data("overview")
except Exception as exc:
    common.show_error(exc)
else:
    cols = st.columns(4)
    for column, (label, key) in zip(cols, (("check-ins", "rows"), ("users", "users"), ("venues", "venues"),
                                           ("categories", "categories"))):
        column.metric(label, f"{overview[key]:,}")
    if overview["first_time"] is not None:
        st.caption(f"From {overview['first_time']:%d %b %Y} to {overview['last_time']:%d %b %Y} (UTC). "
                   "Change the data in the sidebar.")

st.subheader("How federated averaging (FedAvg) works")
st.plotly_chart(charts.fedavg_diagram(), key="home_fedavg")
st.markdown(
    "Each **round**: the server sends the current model to the clients; each client trains it for a few "
    "**local epochs** on its own check-ins; the clients send back only their **model updates**; the server "
    "averages them, weighting each client by how many training sequences it has. Raw check-ins never leave "
    "the client. Because every person's habits differ (the data are **non-IID**), the average is a "
    "compromise — the Data and Compare pages show how much that matters.")
