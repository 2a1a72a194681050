"""Metric cards and chart marks that follow the explorer's sliders in the browser, before the server answers.

Everything the explorer's cards and the marks over its charts show for a grid configuration is known
in advance: the cost and the kept neurons and heads from the plan, kNN and cosine from the shared
landscape. So the cards and the marks go to the browser together with a table of what they show at
every grid configuration, and one script (``instant_cards.js``) redraws them from that table the
moment a slider's value changes, with no round trip: a viewer does not wait for the server's queue of
other viewers' runs, nor for the browser to re-render the fragment (results/sessions.md). A
configuration a cards table lacks (not yet exact, or off the grid) shows ``missing`` until the server's
run draws its own cards.

Both are one Streamlit custom component (``st.components.v2``: plain DOM in the page, no iframe),
mounted once per group of cards (``show``) and once per chart (``show_marks``). Python formats every
value (this module's ``Card``, ``ui.chart_overlay.MarkView``) and sends each chart's geometry
(``ui.chart_overlay.ChartMarks``); the script only chooses what to show and places the marks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from snapvit_core.landscape.grid import grid_key
from ui import state
from ui.chart_overlay import ChartMarks, MarkView
from ui.labels import CARD_WIDTH

HERE = Path(__file__).resolve().parent
DELTA_COLORS = ("normal", "inverse", "off")


@dataclass(frozen=True)
class Card:
    """One metric card: a label (with the unit), a short value, an optional delta and a tooltip.

    ``delta_color`` follows ``st.metric``: 'normal' (up is good), 'inverse' (down is good), 'off' (grey,
    no arrow: a range or a ratio, not a change).
    """

    label: str
    value: str
    delta: str | None = None
    delta_color: str = "normal"
    help: str | None = None

    def __post_init__(self) -> None:
        if self.delta_color not in DELTA_COLORS:
            raise ValueError(f"delta_color must be one of {DELTA_COLORS}, got {self.delta_color!r}")


@dataclass(frozen=True)
class CardView:
    """The cards shown for one configuration, and the caption under them."""

    cards: tuple[Card, ...]
    caption: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"cards": [asdict(card) for card in self.cards], "caption": self.caption}


@dataclass(frozen=True)
class SliderLink:
    """How the browser reads the configuration from the explorer's sliders.

    ``labels``: the (overall, MLP, head) sliders' labels; ``shown``: their values as the server drew them
    ('%.2f', as the sliders print them); ``path``: the overall slider's value -> the (MLP, head) grid key
    it moves both sliders to.
    """

    labels: tuple[str, str, str]
    shown: tuple[str, str, str]
    path: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "shown": list(self.shown), "path": dict(self.path)}


CARD_FIELDS = ("label", "value", "delta", "delta_color", "help")


def table_json(views: Iterable[tuple[tuple[float, float], CardView]]) -> dict[str, Any]:
    """The browser's table of views: {grid key: view}, compact.

    Sent with every run of the cards (about 40-60 KB for 400 configurations), so what every view
    shares is sent once: ``common`` holds each card's fields that are equal in every view, ``varying``
    names the others, and each entry of ``views`` is [[varying values of each card], caption or None].
    ``caption`` is the caption shared by every view (None when they differ); ``id`` names the content.
    """
    views = [(grid_key(*config), view) for config, view in views]
    if not views:
        return _with_id({"common": [], "varying": [], "caption": None, "views": {}})
    count = len(views[0][1].cards)
    if any(len(view.cards) != count for _, view in views):
        raise ValueError("every view in a table must have the same cards")
    rows = [[asdict(card) for card in view.cards] for _, view in views]
    common, varying = [], []
    for i in range(count):
        first = rows[0][i]
        same = {f: first[f] for f in CARD_FIELDS if all(row[i][f] == first[f] for row in rows)}
        common.append(same)
        varying.append([f for f in CARD_FIELDS if f not in same])
    captions = {view.caption for _, view in views}
    caption = captions.pop() if len(captions) == 1 else None
    return _with_id(
        {
            "common": common,
            "varying": varying,
            "caption": caption,
            "views": {
                key: [
                    [[row[i][f] for f in varying[i]] for i in range(count)],
                    None if caption is not None else view.caption,
                ]
                for (key, view), row in zip(views, rows)
            },
        }
    )


def marks_table(views: Iterable[MarkView]) -> dict[str, Any]:
    """The browser's table of the marks over the charts at each grid configuration, compact.

    Most configurations share their kept neurons with the others of the same MLP sparsity, and their
    pruned heads with those of the same head sparsity, so each distinct set is sent once: ``neurons``
    holds [kept neurons per block, title] and ``heads`` [pruned heads per block, title], and each entry
    of ``views`` is [MLP, head, index in ``neurons``, index in ``heads``], by grid key. ``id`` names it.
    """
    neurons: dict[tuple, int] = {}
    heads: dict[tuple, int] = {}
    entries = {}
    for view in views:
        kept = neurons.setdefault((view.kept_neurons, view.neurons_title), len(neurons))
        pruned = heads.setdefault((view.pruned_heads, view.heads_title), len(heads))
        entries[grid_key(*view.at)] = [float(view.at[0]), float(view.at[1]), kept, pruned]
    return _with_id(
        {
            "neurons": [[list(kept), title] for kept, title in neurons],
            "heads": [[[list(block) for block in pruned], title] for pruned, title in heads],
            "views": entries,
        }
    )


def table_marks(table: Mapping[str, Any], key: str) -> MarkView | None:
    """The marks that ``table`` (from ``marks_table``) holds for grid key ``key`` (what the browser draws)."""
    entry = table["views"].get(key)
    if entry is None:
        return None
    mlp, head, kept, pruned = entry
    (neurons, neurons_title), (heads, heads_title) = table["neurons"][kept], table["heads"][pruned]
    return MarkView((mlp, head), tuple(neurons), tuple(tuple(block) for block in heads), neurons_title, heads_title)


def _with_id(table: dict[str, Any]) -> dict[str, Any]:
    """The table with ``id``: a digest of its content (the browser keeps tables by it)."""
    digest = hashlib.sha1(json.dumps(table, sort_keys=True).encode(), usedforsecurity=False).hexdigest()
    return {**table, "id": digest[:16]}


def table_view(table: Mapping[str, Any], key: str) -> CardView | None:
    """The view that ``table`` holds for grid key ``key`` (what the browser shows), or None."""
    entry = table["views"].get(key)
    if entry is None:
        return None
    cards = []
    for i, values in enumerate(entry[0]):
        fields = dict(table["common"][i])
        fields.update(zip(table["varying"][i], values))
        cards.append(Card(**fields))
    return CardView(tuple(cards), table["caption"] if table["caption"] is not None else entry[1])


_COMPONENT = None


def _component():
    global _COMPONENT
    if _COMPONENT is None:
        _COMPONENT = st.components.v2.component(
            "snapvit_instant_cards",
            html="",
            css=(HERE / "instant_cards.css").read_text(),
            js=(HERE / "instant_cards.js").read_text(),
            isolate_styles=False,  # plain DOM: page-wide tests and benchmarks read the cards like any text
        )
    return _COMPONENT


def must_send_table(sent: tuple[str, int] | None, table_id: str, report: Any) -> bool:
    """Whether a run sends the table itself, not only its id.

    The browser keeps the tables it got by id (instant_cards.js), so each table, tens of kilobytes, goes
    to a session once, not with every move. ``sent``: (id, report number) of the last table sent to this
    component; ``report``: the component's state, where the browser says which table it lacks
    ({"lacks": {"id": id, "n": count}}; a page that lost its tables, or a send that did not arrive).
    """
    if sent is None or sent[0] != table_id:
        return True
    lacks = _lacks(report)
    return lacks is not None and lacks.get("id") == table_id and _report_number(report) != sent[1]


def _lacks(report: Any) -> dict | None:
    lacks = report.get("lacks") if isinstance(report, Mapping) else None
    return lacks if isinstance(lacks, dict) else None


def _report_number(report: Any) -> int:
    """The count of the browser's latest report (-1: none)."""
    number = (_lacks(report) or {}).get("n")
    return number if isinstance(number, int) else -1


def _send(key: str, data: dict[str, Any], table: Mapping[str, Any]) -> None:
    """Mount the component as ``key`` with ``data`` and ``table``: the table itself when this session's
    browser lacks it (``must_send_table``), else only its id."""
    report = st.session_state.get(key)  # the browser's state for this component (set by instant_cards.js)
    send = must_send_table(state.get().tables_sent.get(key), table["id"], report)
    _component()(
        key=key,
        data={**data, "table_id": table["id"], "table": table if send else None},
        on_lacks_change=_ignore,  # the report is read before the next run's send
    )
    if send:
        state.update(tables_sent={**state.get().tables_sent, key: (table["id"], _report_number(report))})


def show(
    key: str,
    view: CardView,
    link: SliderLink,
    table: Mapping[str, Any] | None = None,
    missing: CardView | None = None,
) -> None:
    """Draw ``view`` (the server's configuration); in the browser, follow the sliders through ``table``.

    ``table``: from ``table_json``, sent to this session once (then only its id). ``missing``: what a
    configuration that ``table`` lacks shows until the server answers; its caption may contain
    '{where}', replaced by '(MLP m, head h)'. None = keep the cards but mark them as being updated.
    """
    data = {
        "view": view.to_json(),
        "link": link.to_json(),
        "missing": None if missing is None else missing.to_json(),
        "card_width": CARD_WIDTH,
    }
    _send(key, data, table or _EMPTY_TABLE)


def show_marks(key: str, chart: ChartMarks, marks: MarkView, table: Mapping[str, Any], link: SliderLink) -> None:
    """Lay ``marks`` (the server's configuration) over ``chart``; in the browser, follow the sliders through
    ``table`` (from ``marks_table``, sent to this session once), from where ``link`` says the sliders were.
    Call it inside the chart's overlay slot."""
    _send(key, {"chart": chart.to_json(), "marks": marks.to_json(), "link": link.to_json()}, table)


_EMPTY_TABLE = table_json(())


def _ignore() -> None:
    """The browser's report needs no callback: ``show`` reads it from the session state."""
