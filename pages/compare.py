"""Compare: two runs side by side, either two new ones or two from history."""

import streamlit as st

from fedlab.dashboard import comparison, presentation, settings, sources, state

state.ensure_navigation()

st.title("Compare")
presenting = presentation.presenting()
if not presenting:
    st.markdown(
        "Put two models side by side on shared axes. By default the study's **central** model (category + "
        "time) against the **biggest** one (every feature)."
    )
    sources.source_banner()

MODE_CHOSEN = "_cmp_mode_chosen"  # set once the user picks a mode themselves


def nothing_chosen() -> bool:
    """Nothing picked on Compare yet: mode untouched, no pair started, both forms still at their defaults."""
    if st.session_state.get(MODE_CHOSEN) or comparison.compare_run_ids():
        return False
    return all(
        st.session_state.get(f"{prefix}_{field}", value) == value
        for prefix, preset in (("cmp_a", "central"), ("cmp_b", "biggest"))
        for field, value in settings.default_settings(preset).items()
    )


def mark_mode_chosen() -> None:
    st.session_state[MODE_CHOSEN] = True


# A new user sees results at once: two finished runs (the demo runs) from history rather than empty forms.
if nothing_chosen():
    st.session_state["cmp_mode"] = "history" if len(comparison.history_runs()) >= 2 else "new"
state.set_default("cmp_mode", "new")
if presenting:  # the settings stay hidden; the runs shown are the ones chosen before
    mode = st.session_state["cmp_mode"]
else:
    mode = st.radio(
        "What to compare",
        ["new", "history"],
        key="cmp_mode",
        horizontal=True,
        format_func={"new": "Two new runs", "history": "Two finished runs from history"}.get,
        on_change=mark_mode_chosen,
        help="Train two new runs with the settings below, or pick any two runs that already have results.",
    )

if mode == "new":
    if not presenting:
        left, right = st.columns(2, border=True)
        with left:
            st.subheader("Run A")
            values_a = settings.settings_form("cmp_a", preset="central", columns=2)
        with right:
            st.subheader("Run B")
            values_b = settings.settings_form("cmp_b", preset="biggest", columns=2)
        if st.button(
            "Run both",
            type="primary",
            key="cmp_btn_run",
            icon=":material/play_arrow:",
            help="Queue run A, then run B. They train one after the other.",
        ):
            settings.submit_pair(values_a, values_b)
    run_ids = comparison.compare_run_ids()
else:
    run_ids = comparison.history_picker()

if run_ids:
    st.divider()
    comparison.compare_panel(run_ids)
elif presenting:
    st.info("Nothing to compare yet. Switch presentation mode off to start two runs or pick two from history.")
