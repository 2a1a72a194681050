"""The explorer's instant cards: the compact table the browser follows the sliders with (ui/instant_cards)."""

from __future__ import annotations

import json

import pytest

from snapvit_core.landscape.grid import grid_key, value_text
from ui.instant_cards import Card, CardView, must_send_table, table_json, table_view


def _view(params: str, help_text: str, caption: str | None) -> CardView:
    return CardView(
        (
            Card("Params (M)", params, f"-{params} %", "inverse", help_text),
            Card("Latency (ms, predicted)", "1.2", "1.1–1.3 ms", "off", "batch 1"),
        ),
        caption,
    )


def test_the_table_sends_what_views_share_once_and_gives_every_view_back():
    views = [
        ((0.0, 0.0), _view("0.683", "same", "kNN for {where}")),
        ((0.05, 0.25), _view("0.61", "same", "kNN for {where}")),
    ]
    table = table_json(views)
    assert table["common"][0] == {"label": "Params (M)", "delta_color": "inverse", "help": "same"}
    assert table["varying"] == [["value", "delta"], []]
    assert table["caption"] == "kNN for {where}"
    assert set(table["views"]) == {"0.00|0.00", "0.05|0.25"}
    for config, view in views:
        assert table_view(table, grid_key(*config)) == view
    assert table_view(table, "0.10|0.10") is None
    json.dumps(table)  # what the component sends


def test_captions_and_fields_that_differ_stay_per_view():
    views = [((0.1, 0.0), _view("0.6", "a", "first")), ((0.2, 0.0), _view("0.5", "b", None))]
    table = table_json(views)
    assert table["caption"] is None and "help" in table["varying"][0]
    assert [table_view(table, grid_key(*c)) for c, _ in views] == [v for _, v in views]


def test_views_with_different_cards_are_refused_and_an_empty_table_is_empty():
    one = CardView((Card("a", "1"),))
    two = CardView((Card("a", "1"), Card("b", "2")))
    with pytest.raises(ValueError, match="same cards"):
        table_json([((0.0, 0.0), one), ((0.05, 0.0), two)])
    assert table_json([])["views"] == {}
    with pytest.raises(ValueError, match="delta_color"):
        Card("a", "1", delta_color="green")


def test_keys_use_the_sliders_own_format():
    assert grid_key(0.1, 0.35) == "0.10|0.35"  # as the slider prints it (format %.2f, its aria-valuetext)
    assert value_text(0.15000000000000002) == "0.15"


def test_a_table_goes_to_a_session_once_unless_the_browser_says_it_lacks_it():
    first = table_json([((0.0, 0.0), _view("0.683", "h", None))])
    second = table_json([((0.0, 0.0), _view("0.5", "h", None))])
    assert first["id"] != second["id"] and first["id"] == table_json([((0.0, 0.0), _view("0.683", "h", None))])["id"]
    assert must_send_table(None, first["id"], None)  # never sent
    assert not must_send_table((first["id"], -1), first["id"], None)  # sent: the browser keeps it
    assert must_send_table((first["id"], -1), second["id"], None)  # another table
    lacks = {"lacks": {"id": first["id"], "n": 1}}  # the page lost it (or the send did not arrive)
    assert must_send_table((first["id"], -1), first["id"], lacks)
    assert not must_send_table((first["id"], 1), first["id"], lacks)  # that report was answered
    assert not must_send_table((first["id"], -1), first["id"], {"lacks": {"id": second["id"], "n": 2}})
    assert not must_send_table((first["id"], -1), first["id"], {"lacks": "garbage"})


def test_the_marks_table_sends_each_kept_set_once_and_gives_every_configurations_marks_back():
    from ui.chart_overlay import MarkView
    from ui.instant_cards import marks_table, table_marks

    def view(mlp: float, head: float) -> MarkView:
        kept = (16, 10) if mlp else (16, 16)
        pruned = ((1,), ()) if head else ((), ())
        return MarkView((mlp, head), kept, pruned, f"MLP neurons: {sum(kept)} of 32 kept", f"heads {head}")

    views = [view(mlp, head) for mlp in (0.0, 0.05) for head in (0.0, 0.25)]
    table = marks_table(views)
    assert len(table["neurons"]) == 2 and len(table["heads"]) == 2  # one per distinct set, not per configuration
    assert table["views"]["0.05|0.25"] == [0.05, 0.25, 1, 1]
    for marks in views:
        assert table_marks(table, grid_key(*marks.at)) == marks
    assert table_marks(table, "0.10|0.10") is None
    assert marks_table(views)["id"] == table["id"] != marks_table(views[:2])["id"]
    json.dumps(table)  # what the component sends
