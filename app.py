"""fedlab dashboard: `streamlit run app.py`. Lists the pages; each page lives in pages/."""

from __future__ import annotations

import os

import streamlit as st

from fedlab.dashboard import comparison, lessons_view, presentation, settings, signin, sources, state

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # training imports TensorFlow later; keep its log short

# A local file, sent inline: with a ":material/...:" page icon the browser fetched the icon from Google's servers.
ICON = state.APP_ROOT / "assets" / "icon.svg"
st.set_page_config(page_title="fedlab · federated next-place prediction", page_icon=str(ICON), layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/map:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("pages/lessons.py", title="Lessons", icon=":material/school:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/history:"),
]
# Settings typed on one page survive a visit to another page (and a spell in presentation mode).
KEPT_WIDGETS = [
    *settings.kept_keys(),
    *sources.kept_keys(),
    *comparison.kept_keys(),
    *presentation.kept_keys(),
    *lessons_view.kept_keys(),
]

state.init_session()
signin.restore()  # a shared server: a signed-in browser's new session is that user again
state.start_demo_runs()  # once per process, into an empty run store only
page = st.navigation(PAGES)
# Which kept widgets a run draws depends on the page and these modes only.
state.keep_widget_state(KEPT_WIDGETS, view=(page.url_path, presentation.presenting(), st.session_state.get("cmp_mode")))
presentation.presentation_toggle()
signin.sidebar()
sources.data_source_sidebar()
try:
    with state.through_app():  # tells the page's ensure_navigation it runs through app.py
        page.run()
except Exception as exc:  # an unexpected error: a short message instead of a traceback
    state.show_error(exc)
