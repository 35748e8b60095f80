"""fedlab dashboard: `streamlit run app.py`. Lists the pages; each page lives in pages/."""
from __future__ import annotations

import os

import streamlit as st

from pages import common

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # training imports TensorFlow later; keep its log short

st.set_page_config(page_title="fedlab · federated next-place prediction", page_icon=":material/hub:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/map:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/history:"),
]
# Settings typed on one page survive a visit to another page.
KEPT_WIDGETS = [*common.setting_keys("train"), *common.setting_keys("cmp_a"), *common.setting_keys("cmp_b"),
                "data_grouping", "data_top_users", "data_n", "cmp_mode", "cmp_hist_a", "cmp_hist_b"]

common.init_session()
common.keep_widget_state(KEPT_WIDGETS)
page = st.navigation(PAGES)
common.data_source_sidebar()
try:
    page.run()
except Exception as exc:  # an unexpected error: a short message instead of a traceback
    common.show_error(exc)
