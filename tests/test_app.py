"""Streamlit pages through streamlit.testing.v1.AppTest (no browser)."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT
from streamlit.testing.v1 import AppTest

APP = str(ROOT / "app.py")
TIMEOUT = 180


def start(page: str | None = None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.run()
    if page:
        app.switch_page(page)
        app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def metric(app: AppTest, label: str) -> str:
    return next(m.value for m in app.metric if m.label == label)


def test_backbone_page_shows_the_embedded_summary():
    app = start()
    assert app.title[0].value == "Backbone & data"
    assert metric(app, "Blocks x heads") == "6 x 6"
    assert metric(app, "Width") == "96 / 384"
    knn = float(metric(app, "Unpruned kNN top-1").rstrip(" %"))
    assert knn >= 90.0
    assert not app.error


def test_backbone_page_reports_an_unknown_model_clearly():
    app = start()
    app.selectbox[0].set_value("Other timm ViT name ...")
    app.text_input[0].set_value("definitely_not_a_model")
    app.button[0].click().run()
    assert not app.exception
    assert app.error and "Unknown model id" in app.error[0].value


def test_backbone_page_reports_a_missing_folder_clearly(tmp_path):
    app = start()
    app.selectbox[2].set_value("folder")
    app.text_input[1].set_value(str(tmp_path / "missing"))
    app.button[0].click().run()
    assert not app.exception
    assert any("does not exist" in e.value for e in app.error)


def test_explorer_sliders_change_the_metrics():
    app = start("pages/3_explorer.py")
    before = {m.label: m.value for m in app.metric}
    assert before["kNN top-1"].endswith("%") and len(app.get("plotly_chart")) == 4
    app.slider(key="mlp_sparsity").set_value(0.6).run()
    app.slider(key="head_sparsity").set_value(0.5).run()
    assert not app.exception
    after = {m.label: m.value for m in app.metric}
    assert after["FLOPs"] != before["FLOPs"] and after["Parameters"] != before["Parameters"]
    assert float(after["FLOPs"].split()[0]) < float(before["FLOPs"].split()[0])
    titles = [json.loads(chart.proto.spec)["layout"]["title"]["text"] for chart in app.get("plotly_chart")]
    kept = app.session_state["explorer"].elastic.plan.kept_heads
    assert f"Attention heads: {sum(kept)} of 36 kept" in titles[0]
    assert "MLP neurons per block" in titles[1]


def test_overall_slider_follows_the_published_path():
    app = start("pages/3_explorer.py")
    app.slider(key="overall_sparsity").set_value(0.35).run()
    assert app.slider(key="mlp_sparsity").value == pytest.approx(0.35)
    assert app.slider(key="head_sparsity").value == pytest.approx(0.2)


def test_sessions_are_isolated():
    first = start("pages/3_explorer.py")
    second = start("pages/3_explorer.py")
    first.slider(key="mlp_sparsity").set_value(0.8).run()
    second.run()
    assert first.session_state["explorer"] is not second.session_state["explorer"]
    second_params = {m.label: m.value for m in second.metric}["Parameters"]
    first_params = {m.label: m.value for m in first.metric}["Parameters"]
    assert second_params != first_params
    shared = second.session_state["explorer"].backbone.model
    assert shared is first.session_state["explorer"].backbone.model  # one cached model ...
    assert shared.blocks[0].mlp.fc1.out_features == 384  # ... that pruning never touched
