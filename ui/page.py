"""The start every explorer page shares: the selected backbone and the session's explorer view, or a stopped page."""

from __future__ import annotations

import streamlit as st

from snapvit_core.errors import SnapViTError
from ui import session


def explorer_view_or_stop() -> session.ExplorerSession:
    """The session's explorer view; the page stops, after saying why, when the backbone or the view cannot be loaded."""
    if session.guarded_backbone() is None:
        st.stop()
    try:
        return session.current()
    except SnapViTError as error:
        session.show_error(error)
        st.stop()
