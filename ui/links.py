"""Shareable links: the explorer's configuration (backbone, scores, MLP and head sparsity) in the page URL.

``restore()`` runs once per browser session, on the first explorer run: it applies what the link
names and keeps one note per part this server does not have. ``publish()`` writes the current
configuration back to ``st.query_params`` (only when it changed), and ``share_box()`` shows the link
with a copy button.
"""

from __future__ import annotations

import math
from urllib.parse import urlencode

import streamlit as st

from snapvit_core.errors import SnapViTError
from ui import config_state, session
from ui.sliders import MAX_SPARSITY

RESTORED_KEY = "link_restored"
NOTES_KEY = "link_notes"
PARAMS = ("model", "scores", "mlp", "head")


def _sparsity(text: str | None) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and 0.0 <= value <= MAX_SPARSITY + 1e-9 else None


def restore() -> None:
    """Apply the link's backbone, scores and configuration (once per session); note what is missing."""
    if st.session_state.get(RESTORED_KEY):
        return
    st.session_state[RESTORED_KEY] = True
    params = {name: st.query_params.get(name) for name in PARAMS}
    if not any(params.values()):
        return
    notes = []
    model = params["model"]
    if model and model != session.selection().model_id:
        candidate = session.Selection(model_id=model, data=session.selection().data)
        try:
            session.shared_backbone(candidate.model_id, candidate.random_init, candidate.resolved_device)
            session.set_selection(candidate)
        except SnapViTError as error:
            notes.append(
                f"This server cannot load the link's backbone `{model}` ({error.problem}); showing "
                f"`{session.selection().model_id}` instead."
            )
    scores_id = params["scores"]
    if scores_id and scores_id != session.current().scores_id:
        try:
            found = session.scores_for_id(scores_id)
        except SnapViTError:
            found = None
        if found is None:
            notes.append(
                f"This server does not have the link's scores `{scores_id}`; showing "
                f"**{session.current().scores_label}** instead (load them on the Scores page)."
            )
        else:
            session.set_scores(found[0], found[1], scores_id=scores_id)
    mlp, head = _sparsity(params["mlp"]), _sparsity(params["head"])
    if (params["mlp"] and mlp is None) or (params["head"] and head is None):
        notes.append(
            f"The link's sparsity (mlp={params['mlp']}, head={params['head']}) is not a number in "
            f"0..{MAX_SPARSITY}; the configuration was not changed."
        )
    elif mlp is not None or head is not None:
        now = config_state.current()
        config_state.set_config(
            mlp if mlp is not None else now.mlp_sparsity, head if head is not None else now.head_sparsity
        )
    st.session_state[NOTES_KEY] = notes


def show_notes() -> None:
    for note in st.session_state.get(NOTES_KEY, []):
        st.warning(note, icon=":material/link_off:")


def query(config: tuple[float, float]) -> dict[str, str]:
    state = session.current()
    return {
        "model": state.selection.model_id,
        "scores": state.scores_id,
        "mlp": f"{config[0]:.3f}".rstrip("0").rstrip("."),
        "head": f"{config[1]:.3f}".rstrip("0").rstrip("."),
    }


def publish(config: tuple[float, float]) -> None:
    """Mirror the configuration into the page URL (sent to the browser only when it changed)."""
    wanted = query(config)
    if {name: st.query_params.get(name) for name in PARAMS} != wanted:
        st.query_params.update(wanted)


def share_box(config: tuple[float, float]) -> None:
    """The link to this configuration, with a copy button."""
    try:
        base = (st.context.url or "").split("?")[0]
    except Exception:  # noqa: BLE001 - outside a browser session (tests) there is no URL
        base = ""
    with st.popover("Share link", icon=":material/link:"):
        st.caption("Anyone with access to this server opens the explorer at this configuration:")
        st.code(f"{base}?{urlencode(query(config))}", language=None)
