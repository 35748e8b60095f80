"""Train: choose features and settings, run, and watch the run round by round."""

import streamlit as st

from fedlab.dashboard import history, presentation, results, settings, sources, state, sweep_view

state.ensure_navigation()

st.title("Train")
presenting = presentation.presenting()
if not presenting:
    st.markdown(
        "Choose what the model sees and how it trains, then press **Run**. Runs train one at a time in "
        "the background; you can leave this page and come back."
    )
    sources.source_banner()


def settings_column() -> None:
    values = settings.settings_form("train", preset="central", columns=2, workers=True)
    with st.container(horizontal=True):
        clicked = st.button(
            "Run",
            type="primary",
            key="train_btn_run",
            icon=":material/play_arrow:",
            help="Queue a run with these settings. It trains in the background; results appear on the right.",
        )
        st.caption(settings.estimate_caption(values))
    if clicked:
        run_id = settings.submit(values)
        if run_id is not None:
            history.open_train_run(run_id)
    if (reference := sweep_view.sweep_controls(values)) is not None:
        history.open_train_run(reference)


def results_column(*, narrow: bool) -> None:
    run_id = history.train_run_id()
    if run_id is None:
        st.info(
            "No run yet. For a quick demo press **Quick demo**, then **Run**. "
            "The first run of a session also builds the federated computation, which takes a minute.",
            icon=":material/info:",
        )
    else:
        results.run_panel(run_id, narrow=narrow, explain=True)


if presenting:  # charts and results only, across the whole width
    results_column(narrow=False)
else:
    left, right = st.columns([2, 3], gap="large")
    with left:
        settings_column()
    with right:
        results_column(narrow=True)
