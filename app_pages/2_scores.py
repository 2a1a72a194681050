"""Page 2: compute importance scores and run the search (background jobs), or load / import / save scores."""

from __future__ import annotations

import re

import streamlit as st

from snapvit_core.errors import SnapViTError
from snapvit_core.scoring.scores_io import load_scores, load_scores_bytes, save_scores
from ui import session
from ui.score_jobs import render_jobs

st.title("Scores & search")
backbone = session.guarded_backbone()
if backbone is None:
    st.stop()
scores, scores_label = session.scores()
st.caption(f"Current scores: **{scores_label}** - {scores.shape_summary}")
if session.scores_warning():
    st.warning(session.scores_warning(), icon=":material/warning:")

render_jobs(backbone)

st.subheader("Load scores")
allow_other = st.checkbox(
    "Allow scores made for another backbone",
    key="scores_allow_other_backbone",
    help="Scores record the backbone they were made for; another model's scores are refused unless this is ticked.",
)
from_dir, upload = st.columns(2)
with from_dir:
    files = sorted(session.SCORES_DIR.glob("*.safetensors")) if session.SCORES_DIR.is_dir() else []
    if files:
        picked = st.selectbox("From scores/", files, format_func=lambda p: p.name)
        if st.button("Load selected file"):
            try:
                session.set_scores(load_scores(picked), picked.name, allow_other, scores_id=f"file:{picked.name}")
                st.rerun()
            except SnapViTError as error:
                session.show_error(error)
    else:
        st.caption("No files in scores/ yet.")
with upload:
    uploaded = st.file_uploader(
        "Upload a scores file (.safetensors) or import a published SnapViT file (.pt)", type=["safetensors", "pt"]
    )
    if uploaded is not None and st.button("Use uploaded scores"):
        try:
            loaded = load_scores_bytes(uploaded.getvalue(), uploaded.name)
            session.set_scores(loaded, f"{uploaded.name} (uploaded)", allow_other)
            st.rerun()
        except SnapViTError as error:
            session.show_error(error)

st.subheader("Save the current scores")
default_name = re.sub(
    r"[^A-Za-z0-9_.-]+", "_", f"{session.selection().model_id}.{scores.metadata.get('method', 'scores')}"
)
name = st.text_input("File name in scores/", value=f"{default_name}.safetensors")
replace = st.checkbox("Replace the file if it exists")
if st.button("Save to scores/"):
    try:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+\.safetensors", name):
            raise SnapViTError(
                f"{name!r} is not a plain file name ending in .safetensors.",
                "Use letters, digits, '.', '_' and '-' only, e.g. embedded.snapvit.safetensors.",
            )
        if (session.SCORES_DIR / name).exists() and not replace:
            raise SnapViTError(
                f"scores/{name} already exists.", "Choose another name, or tick 'Replace the file if it exists'."
            )
        session.SCORES_DIR.mkdir(exist_ok=True)
        path = save_scores(scores, session.SCORES_DIR / name)
        st.success(f"Saved {path.name} (written to a temporary file, then renamed).")
    except SnapViTError as error:
        session.show_error(error)
