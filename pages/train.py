"""Train: choose features and settings, run, and watch the run round by round."""
import streamlit as st

from pages import common

common.ensure_navigation()

st.title("Train")
st.markdown("Choose what the model sees and how it trains, then press **Run**. Runs train one at a time in "
            "the background; you can leave this page and come back.")
common.source_banner()

settings, results = st.columns([2, 3], gap="large")
with settings:
    values = common.settings_form("train", preset="central", columns=2)
    workers = st.text_input(
        "Workers", key="train_workers", placeholder="off: train on this machine",
        help="Train across TFF workers, as host:port,host:port. Start each with "
             "`python -m fedlab worker --port 8000 --allow-remote` on a private network (see the README). "
             "Empty = this machine.")
    if st.button("Run", type="primary", key="train_btn_run", icon=":material/play_arrow:",
                 help="Queue a run with these settings. It trains in the background; results appear on the right."):
        run_id = common.submit({**values, "workers": workers})
        if run_id is not None:
            common.open_train_run(run_id)

with results:
    run_id = common.train_run_id()
    if run_id is None:
        st.info("No run yet. For a quick demo set GRU units to 8–32, rounds to 3 and users to 20, then press Run. "
                "The first run of a session also builds the federated computation, which takes a minute.",
                icon=":material/info:")
    else:
        common.run_panel(run_id, narrow=True)
