"""SnapViT Explorer: one pretrained ViT, elastic to any compute budget. ``streamlit run app.py``."""

from __future__ import annotations

import logging

import streamlit as st

logging.getLogger("snapvit_core").setLevel(logging.INFO)

st.set_page_config(page_title="SnapViT Explorer", page_icon=":material/content_cut:", layout="wide")

PAGES = [
    st.Page(
        "app_pages/1_backbone.py", url_path="backbone", title="Backbone & data", icon=":material/memory:", default=True
    ),
    st.Page("app_pages/2_scores.py", url_path="scores", title="Scores & search", icon=":material/insights:"),
    st.Page("app_pages/3_explorer.py", url_path="explorer", title="Elastic explorer", icon=":material/tune:"),
    st.Page("app_pages/4_compare.py", url_path="compare", title="Compare & budget", icon=":material/scatter_plot:"),
    st.Page("app_pages/5_export.py", url_path="export", title="Export", icon=":material/download:"),
    st.Page("app_pages/6_learn.py", url_path="learn", title="Learn", icon=":material/school:"),
]

st.navigation(PAGES).run()
