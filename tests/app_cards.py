"""What an AppTest run's cards and captions show: ``st.metric`` cards and the explorer's instant cards.

The explorer's cards are a custom component (ui/instant_cards.py), which AppTest lists only as an
unknown element; its data holds the view the server drew (cards and caption).
"""

from __future__ import annotations

import json
from typing import Any


def _components(app: Any, field: str) -> list[dict[str, Any]]:
    """The data of every explorer component the run drew whose data has ``field``, in page order."""
    found = []
    for element in app.get("bidi_component"):
        data = json.loads(element.proto.json) if element.proto.json else {}
        if isinstance(data, dict) and field in data:
            found.append(data)
    return found


def instant_data(app: Any) -> list[dict[str, Any]]:
    """The data of every instant-card component the run drew, in page order (view, link, table, missing)."""
    return _components(app, "view")


def instant_marks(app: Any) -> list[dict[str, Any]]:
    """The data of every chart-marks component the run drew, in page order (chart, marks, link, table)."""
    return _components(app, "chart")


def instant_views(app: Any) -> list[dict[str, Any]]:
    """The instant-card views the run drew, in page order."""
    return [data["view"] for data in instant_data(app)]


def cards(app: Any) -> list[tuple[str, str]]:
    """(label, value) of every card on the page: metrics first, then the instant cards."""
    shown = [(m.label, m.value) for m in app.metric]
    return shown + [(card["label"], card["value"]) for view in instant_views(app) for card in view["cards"]]


def card_values(app: Any) -> dict[str, str]:
    """label -> value (the last card of a label wins; use ``cards`` where labels repeat)."""
    return dict(cards(app))


def metric(app: Any, label: str) -> str:
    return next(value for name, value in cards(app) if name == label)


def captions(app: Any) -> list[str]:
    """Every caption on the page, the instant cards' included."""
    return [c.value for c in app.caption] + [view["caption"] for view in instant_views(app) if view["caption"]]


def state_of(app: Any):
    """The session's state value (``ui.state.SessionState``) after the app's last run."""
    from ui.state import STATE_KEY, SessionState

    return app.session_state[STATE_KEY] if STATE_KEY in app.session_state else SessionState()


def set_state(app: Any, **changes: Any) -> None:
    """Replace the session's state with ``changes`` applied (as a page would, through ``ui.state``)."""
    from dataclasses import replace
    from types import MappingProxyType

    from ui.state import STATE_KEY

    frozen = {k: MappingProxyType(dict(v)) if isinstance(v, dict) else v for k, v in changes.items()}
    app.session_state[STATE_KEY] = replace(state_of(app), **frozen)


def shared_of(app: Any):
    """The session's shared explorer (explorer, landscape, filler), from the server's registry."""
    from ui import shared

    now = state_of(app)
    return shared.shared_explorer(now.selection, now.scores.scores, now.align)
