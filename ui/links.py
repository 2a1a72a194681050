"""Shareable links: the explorer's configuration (backbone, scores, MLP and head sparsity) in the page URL.

``restore()`` runs once per browser session, on the first explorer run: it applies what the link
names and keeps one note per part this server does not have. ``publish()`` writes the current
configuration back to ``st.query_params`` (only when it changed), and ``share_box()`` shows the link
with a copy button.

A link is untrusted input to a shared server: it restores only what the server offers
(:func:`offered_selection`: the embedded backbone, cached presets and backbones already loaded here;
the ``SNAPVIT_LINKS_ANY_MODEL`` flag allows more), never loads a path or downloads, says the same thing
about a folder that exists and one that does not, refuses values longer than ``MAX_VALUE_CHARS``, and
shows every value it names as literal text (``ui.literal``), never as Markdown.
"""

from __future__ import annotations

import os
from dataclasses import replace
from urllib.parse import urlencode

import streamlit as st

from snapvit_core.errors import SnapViTError
from snapvit_core.landscape.grid import MAX_SPARSITY, in_range
from snapvit_core.presets import BACKBONE_PRESETS, EMBEDDED_MODEL_IDS
from ui import config_state, session, shared, state
from ui.literal import code, escape

PARAMS = ("model", "scores", "mlp", "head")
MAX_VALUE_CHARS = 200  # a link value longer than this is ignored (model and scores ids are far shorter)
ANY_MODEL_ENV = "SNAPVIT_LINKS_ANY_MODEL"  # the server flag: "1" lets links name any model id (off by default)


def links_may_name_any_model() -> bool:
    """The server flag: links may name any model id the Backbone page accepts (a timm name, a folder ...)."""
    return os.environ.get(ANY_MODEL_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def offered_selection(model_id: str) -> state.Selection | None:
    """The selection a link naming ``model_id`` may open, or None when this server does not offer it.

    Offered: a backbone already loaded on this server (as it was loaded), the embedded backbone, and a
    preset whose weights are already in the local cache. Nothing else (no path, no download, and no
    answer about which files exist) unless the server flag ``ANY_MODEL_ENV`` is set.
    """
    from snapvit_core.engine.backbones import weights_cached

    data = session.selection().data
    loaded = shared.loaded_selection(model_id)
    if loaded is not None:
        return replace(loaded, data=data)
    if model_id in EMBEDDED_MODEL_IDS or links_may_name_any_model():
        return state.Selection(model_id=model_id, data=data)
    if model_id in BACKBONE_PRESETS.values() and weights_cached(model_id):
        return state.Selection(model_id=model_id, data=data)
    return None


def _sparsity(text: str | None) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if in_range(value) else None


def restore() -> None:
    """Apply the link's backbone, scores and configuration (once per session); note what is missing."""
    if state.get().link_restored:
        return
    state.update(link_restored=True)
    params = {name: st.query_params.get(name) for name in PARAMS}
    if not any(params.values()):
        return
    notes = []
    for name, value in params.items():
        if value and len(value) > MAX_VALUE_CHARS:
            notes.append(
                f"The link's {name} value is {len(value):,} characters long, more than the {MAX_VALUE_CHARS} a "
                "link may carry; it was ignored."
            )
            params[name] = None
    model = params["model"]
    if model and model != session.selection().model_id:
        showing = code(session.selection().model_id)
        candidate = offered_selection(model)
        if candidate is None:  # not tried: no path is read, nothing downloaded, no existence told
            notes.append(
                f"This server does not offer the link's backbone {code(model)} to links; showing {showing} "
                "instead (the Backbone page loads others)."
            )
        else:
            try:
                shared.selection_backbone(candidate)
                session.set_selection(candidate)
            except SnapViTError as error:
                notes.append(
                    f"This server cannot load the link's backbone {code(model)} ({escape(error.problem, 200)}); "
                    f"showing {showing} instead."
                )
    scores_id = params["scores"]
    if scores_id and scores_id != session.current().scores_id:
        try:
            found = session.scores_for_id(scores_id)
        except SnapViTError:
            found = None
        if found is None:
            notes.append(
                f"This server does not have the link's scores {code(scores_id)}; showing "
                f"**{escape(session.current().scores_label)}** instead (load them on the Scores page)."
            )
        else:
            session.set_scores(found[0], found[1], scores_id=scores_id)
    mlp, head = _sparsity(params["mlp"]), _sparsity(params["head"])
    if (params["mlp"] and mlp is None) or (params["head"] and head is None):
        notes.append(
            f"The link's sparsity (mlp={code(params['mlp'] or '')}, head={code(params['head'] or '')}) is not a "
            f"number in 0..{MAX_SPARSITY}; the configuration was not changed."
        )
    elif mlp is not None or head is not None:
        now = config_state.current()
        config_state.set_config(
            mlp if mlp is not None else now.mlp_sparsity, head if head is not None else now.head_sparsity
        )
    state.update(link_notes=tuple(notes))


def show_notes() -> None:
    for note in state.get().link_notes:
        st.warning(note, icon=":material/link_off:")


def query(config: tuple[float, float]) -> dict[str, str]:
    view = session.current()
    return {
        "model": view.selection.model_id,
        "scores": view.scores_id,
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
