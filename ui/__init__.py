"""Streamlit-side helpers shared by the pages: cached resources, session state, background jobs.

All computation lives in ``snapvit_core``; this package only wires it to widgets and session state.
"""
