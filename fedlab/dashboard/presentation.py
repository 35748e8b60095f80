"""Presentation mode: a sidebar switch (kept across pages) that enlarges text and charts and hides the
settings controls, so a projector shows only the charts and results.
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from fedlab.results import charts

KEY = "presentation"
_NEXT = "_presentation_next"  # set by present_next_page
# Streamlit sizes its text in rem, so a larger root font enlarges all of it; the page also uses the full width.
CSS = """<style>
html { font-size: 21px; }
[data-testid="stMainBlockContainer"] { max-width: 100%; padding-left: 2.5rem; padding-right: 2.5rem; }
[data-testid="stMetricValue"] { font-size: 2.6rem; }
[data-testid="stCaptionContainer"] { font-size: 0.95rem; }
</style>"""


def kept_keys() -> list[str]:
    """The switch's key, kept across pages by app.py."""
    return [KEY]


def presenting() -> bool:
    return bool(st.session_state.get(KEY, False))


def present_next_page() -> None:
    """Switches presentation mode on from the next script run (the switch is already drawn in this one)."""
    st.session_state[_NEXT] = True


def presentation_toggle() -> None:
    """The sidebar switch; while it is on, the page gets the larger styles."""
    if st.session_state.pop(_NEXT, False):
        st.session_state[KEY] = True
    with st.sidebar:
        st.toggle(
            "Presentation mode",
            key=KEY,
            help="Larger text and charts, settings hidden: for a projector "
            "in a class or a meeting. Switch off to change settings.",
        )
    if presenting():
        st.html(CSS)


def show_chart(fig: go.Figure, *, key: str, place=None) -> None:
    """st.plotly_chart (or `place`.plotly_chart), enlarged in presentation mode."""
    place = st if place is None else place
    if presenting():
        # Streamlit's chart theme sets its own small fonts; without it the figure's enlarged fonts apply.
        place.plotly_chart(charts.presentation_figure(fig), key=key, theme=None)
    else:
        place.plotly_chart(fig, key=key)
