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
    app.session_state["job_unpruned_knn"].wait(timeout=TIMEOUT)  # embedded in the background, with progress
    app.run()
    knn = float(metric(app, "Unpruned kNN top-1").rstrip(" %"))
    assert knn >= 90.0
    assert any("kNN on all 1,797 images" in c.value for c in app.caption)
    assert not app.error


def test_backbone_page_embedding_can_be_cancelled(monkeypatch):
    import threading
    import time

    from snapvit_core.evaluation import KnnEvaluator

    gate, original = threading.Event(), KnnEvaluator.features

    def slow_features(self, model, key=None, *, progress=None, cancel=None):
        if progress is not None:
            progress(64, 1797)
        gate.wait(timeout=60)
        if cancel is not None:
            cancel()
        return original(self, model, key, progress=progress, cancel=cancel)

    from ui import session

    monkeypatch.setattr(KnnEvaluator, "features", slow_features)
    monkeypatch.setattr(session, "UNPRUNED_JOBS", {})  # the pass is shared: start a fresh one
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.run()
    job = app.session_state["job_unpruned_knn"]
    deadline = time.time() + 60
    while job.snapshot().extra.get("done") != 64 and time.time() < deadline:
        time.sleep(0.05)
    app.run()
    bar = app.get("progress")
    assert bar and "Embedding the kNN data: 64 of 1,797 images" in bar[0].proto.text and "left" in bar[0].proto.text
    next(b for b in app.button if b.label == "Cancel").click().run()
    gate.set()
    app.session_state["job_unpruned_knn"].wait(timeout=TIMEOUT)
    app.run()
    assert not app.exception
    assert any("cancelled" in w.value for w in app.warning)
    assert any(b.label == "Embed the kNN data" for b in app.button)


def test_random_weights_skip_knn_on_the_backbone_page():
    app = start()
    next(c for c in app.checkbox if c.label.startswith("Random weights")).check()
    next(b for b in app.button if b.label == "Load").click().run()
    assert not app.exception
    assert any("kNN accuracy is skipped" in i.value for i in app.info)
    assert "job_unpruned_knn" not in app.session_state


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


def settle(app: AppTest, worker: str = "main") -> AppTest:
    """Let the session's background worker finish (kNN, latency model), then rerun the page."""
    live = app.session_state["live_workers"][worker]
    for _ in range(3):  # a rerun may ask for another kNN set size (measured under load): let that finish too
        assert live.wait_idle(timeout=TIMEOUT)
        app.run()
        assert not app.exception, [e.value for e in app.exception]
        if live.wait_idle(timeout=0.01):
            break
    return app


def test_explorer_sliders_change_the_metrics():
    app = settle(start("pages/3_explorer.py"))
    before = {m.label: m.value for m in app.metric}
    assert float(before["kNN top-1 (%)"]) >= 90.0 and len(app.get("plotly_chart")) == 4
    app.slider(key="mlp_sparsity").set_value(0.6).run()
    app.slider(key="head_sparsity").set_value(0.5).run()
    assert not app.exception
    after = {m.label: m.value for m in app.metric}  # the cost cards follow at once, without the worker
    assert after["FLOPs (MFLOPs)"] != before["FLOPs (MFLOPs)"] and after["Params (M)"] != before["Params (M)"]
    assert float(after["FLOPs (MFLOPs)"]) < float(before["FLOPs (MFLOPs)"])
    titles = [json.loads(chart.proto.spec)["layout"]["title"]["text"] for chart in app.get("plotly_chart")]
    kept = app.session_state["explorer"].cost(0.6, 0.5).kept_heads
    assert f"Heads: {sum(kept)} of 36 kept" in titles[0]
    assert "MLP neurons:" in titles[1]
    settle(app)
    final = {m.label: m.value for m in app.metric}
    assert float(final["kNN top-1 (%)"]) < float(before["kNN top-1 (%)"])
    assert not any("updating" in c.value for c in app.caption)
    assert len(app.get("plotly_chart")) == 4  # the similarity histogram is back


def test_speedup_reads_exactly_one_at_zero_sparsity():
    app = start("pages/3_explorer.py")
    assert metric(app, "Speed-up (predicted)") == "1.00 x"  # before the latency model is ready ...
    settle(app)
    assert app.session_state["explorer"].latency_model is not None
    assert metric(app, "Speed-up (predicted)") == "1.00 x"  # ... and after
    assert float(metric(app, "Latency (ms, predicted)")) > 0
    app.slider(key="mlp_sparsity").set_value(0.6).run()
    assert metric(app, "Speed-up (predicted)") != "1.00 x"
    next(b for b in app.button if b.label == "Measure now").click().run()
    assert any(m.value.startswith("**Measured now:** measured") for m in app.markdown)
    app.slider(key="mlp_sparsity").set_value(0.3).run()  # the measurement is for another configuration now
    assert any("not the sliders' configuration" in c.value for c in app.caption)


def test_cost_cards_stay_short_enough_not_to_be_cut():
    app = start("pages/3_explorer.py")
    for card in app.metric:
        if card.label in ("Params (M)", "FLOPs (MFLOPs)", "Latency (ms, predicted)", "Speed-up (predicted)"):
            assert len(card.value) <= 9, card


def test_a_stale_result_is_marked_as_updating(monkeypatch):
    from ui import live

    app = settle(start("pages/3_explorer.py"))
    worker = app.session_state["live_workers"]["main"]
    release = __import__("threading").Event()
    original = worker.explorer.evaluate

    def slow_evaluate(*args, **kwargs):
        release.wait(timeout=60)
        return original(*args, **kwargs)

    monkeypatch.setattr(worker.explorer, "evaluate", slow_evaluate)
    app.slider(key="mlp_sparsity").set_value(0.4).run()
    assert metric(app, "kNN top-1 (%)") == "updating…"
    stale = [c.value for c in app.caption if "not the sliders' configuration" in c.value]
    assert stale and "(MLP 0.00, head 0.00)" in stale[0]
    release.set()
    settle(app)
    assert metric(app, "kNN top-1 (%)") != "updating…"
    assert isinstance(worker, live.LiveWorker)


def test_sliders_survive_page_switches_and_export_uses_them():
    app = start("pages/3_explorer.py")
    app.slider(key="mlp_sparsity").set_value(0.35).run()
    app.slider(key="head_sparsity").set_value(0.2).run()
    app.switch_page("pages/5_export.py").run()
    assert not app.exception
    assert any("MLP sparsity 0.35, head sparsity 0.20" in m.value for m in app.markdown)
    name = next(t for t in app.text_input if t.label.startswith("Export folder")).value
    assert name.endswith("m0.35_h0.20")
    app.switch_page("pages/1_backbone.py").run()
    app.switch_page("pages/3_explorer.py").run()
    assert not app.exception
    assert app.slider(key="mlp_sparsity").value == pytest.approx(0.35)
    assert app.slider(key="head_sparsity").value == pytest.approx(0.2)


def test_learn_page_runs_with_the_live_model():
    app = start("pages/6_learn.py")
    assert app.title[0].value.startswith("Learn")
    assert len(app.header) == 5 and len(app.get("plotly_chart")) == 3
    assert 0 < float(metric(app, "Half the neurons (% FLOPs)")) < 100
    assert 0 <= float(metric(app, "Heads kept by both (%)")) <= 100


def test_side_by_side_shows_a_second_method():
    app = start("pages/3_explorer.py")
    app.slider(key="mlp_sparsity").set_value(0.5).run()
    app.selectbox(key="side_by_side_method").set_value("magnitude").run()
    settle(app)
    settle(app, "comparison")
    accuracies = [m.value for m in app.metric if m.label == "kNN top-1 (%)"]
    assert len(accuracies) == 3 and "updating…" not in accuracies  # main + both sides
    titles = [json.loads(chart.proto.spec)["layout"]["title"]["text"] for chart in app.get("plotly_chart")]
    assert sum(t.startswith("Heads:") for t in titles) == 3


def test_random_weights_skip_knn_by_default():
    from ui import session

    app = start("pages/3_explorer.py")
    app.session_state["selection"] = session.Selection("embedded", True, "auto", "embedded")
    app.run()
    assert not app.exception
    assert any("kNN skipped: random weights" in i.value for i in app.info)
    assert "kNN top-1 (%)" not in [m.label for m in app.metric]
    next(c for c in app.checkbox if c.label.startswith("Run kNN anyway")).check().run()
    settle(app)
    assert float(metric(app, "kNN top-1 (%)")) >= 0.0


def test_overall_slider_follows_the_published_path():
    app = start("pages/3_explorer.py")
    app.slider(key="overall_sparsity").set_value(0.35).run()
    assert app.slider(key="mlp_sparsity").value == pytest.approx(0.35)
    assert app.slider(key="head_sparsity").value == pytest.approx(0.2)
    assert not any("Set by hand" in c.value for c in app.caption)
    app.slider(key="mlp_sparsity").set_value(0.5).run()  # a manual move leaves the others where they are
    assert app.slider(key="overall_sparsity").value == pytest.approx(0.35)
    assert app.slider(key="head_sparsity").value == pytest.approx(0.2)
    assert any("Set by hand: (MLP 0.50, head 0.20)" in c.value for c in app.caption)
    app.slider(key="overall_sparsity").set_value(0.65).run()  # back on the path
    assert (app.slider(key="mlp_sparsity").value, app.slider(key="head_sparsity").value) == pytest.approx((0.65, 0.5))
    assert not any("Set by hand" in c.value for c in app.caption)


def test_sessions_are_isolated():
    first = start("pages/3_explorer.py")
    second = start("pages/3_explorer.py")
    first.slider(key="mlp_sparsity").set_value(0.8).run()
    second.run()
    assert first.session_state["explorer"] is not second.session_state["explorer"]
    second_params = {m.label: m.value for m in second.metric}["Params (M)"]
    first_params = {m.label: m.value for m in first.metric}["Params (M)"]
    assert second_params != first_params
    shared = second.session_state["explorer"].backbone.model
    assert shared is first.session_state["explorer"].backbone.model  # one cached model ...
    assert shared.blocks[0].mlp.fc1.out_features == 384  # ... that pruning never touched


def _finish_job(app: AppTest, key: str) -> None:
    job = app.session_state[key]
    job.wait(timeout=300)
    app.run()  # the progress fragment applies the result and reruns the app
    assert not app.exception, [e.value for e in app.exception]


def test_scores_page_computes_scores_in_the_background():
    app = start("pages/2_scores.py")
    method = next(s for s in app.selectbox if s.label == "Method")
    method.set_value("magnitude")
    next(b for b in app.button if b.label == "Compute scores").click().run()
    _finish_job(app, "job_scores")
    assert app.session_state["scores_label"].startswith("magnitude")
    assert any("finished" in s.value for s in app.success)


def test_scores_page_per_image_squared_gradients():
    app = start("pages/2_scores.py")
    selectbox = {s.label: s for s in app.selectbox}
    selectbox["Method"].set_value("lamp")
    selectbox["Squared gradients"].set_value("per-image")
    next(b for b in app.button if b.label == "Compute scores").click().run()
    assert not app.exception
    assert any("not to 'lamp'" in e.value for e in app.error)  # a clear message ...
    assert "job_scores" not in app.session_state  # ... and no job started
    selectbox = {s.label: s for s in app.selectbox}
    selectbox["Method"].set_value("snapvit")
    next(n for n in app.number_input if n.label == "Images").set_value(4)
    next(b for b in app.button if b.label == "Compute scores").click().run()
    _finish_job(app, "job_scores")
    assert app.session_state["scores_label"] == "snapvit (4 images, per-image squared gradients)"


def test_scores_page_refuses_bf16_where_it_would_be_emulated(monkeypatch):
    import snapvit_core.precision as precision

    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    app = start("pages/2_scores.py")
    {s.label: s for s in app.selectbox}["Precision"].set_value("bf16")
    next(b for b in app.button if b.label == "Compute scores").click().run()
    assert not app.exception
    assert any("no native bfloat16" in e.value and "fp32" in e.value for e in app.error)
    assert "job_scores" not in app.session_state
    {s.label: s for s in app.selectbox}["Precision "].set_value("bf16")
    next(b for b in app.button if b.label == "Run search").click().run()
    assert not app.exception and "job_scores" not in app.session_state


def test_scores_page_runs_a_short_search_with_a_fitness_curve():
    app = start("pages/2_scores.py")
    next(n for n in app.number_input if n.label == "Fitness evaluations").set_value(16)
    next(n for n in app.number_input if n.label == "Evaluation images").set_value(32)
    next(b for b in app.button if b.label == "Run search").click().run()
    job = app.session_state["job_scores"]
    snapshot = job.wait(timeout=300)
    assert snapshot.state == "done", snapshot.error
    assert len(snapshot.extra["best"]) == 16
    assert all(b >= a for a, b in zip(snapshot.extra["best"][1:], snapshot.extra["best"]))  # never increases
    app.run()
    app.run()
    assert app.session_state["scores_label"].startswith("xnes search")
    assert app.session_state["scores"].metadata["method"] == "xnes"


def _hostile_pickle() -> bytes:
    import io
    import zipfile

    payload = b"\x80\x02cos\nsystem\nq\x00X\x07\x00\x00\x00echo hiq\x01\x85q\x02Rq\x03."
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.safetensors", b"this is not a scores file", "scores"),
        ("evil.pt", _hostile_pickle(), "refused"),
    ],
    ids=["garbage", "hostile-pickle"],
)
def test_bad_uploads_get_a_clear_message(name, content, message):
    app = start("pages/2_scores.py")
    app.file_uploader[0].set_value((name, content, "application/octet-stream")).run()
    next(b for b in app.button if b.label == "Use uploaded scores").click().run()
    assert not app.exception
    assert app.error, "expected an error box"
    assert message in app.error[0].value.lower() or message in app.error[0].value


def test_scores_for_another_architecture_are_refused_in_the_app(tmp_path):
    import torch

    from snapvit_core.scores import ImportanceScores
    from snapvit_core.scores_io import save_scores

    path = save_scores(ImportanceScores(torch.rand(12, 1536), torch.rand(12, 6)), tmp_path / "vit_s.safetensors")
    app = start("pages/2_scores.py")
    app.file_uploader[0].set_value(("vit_s.safetensors", path.read_bytes(), "application/octet-stream")).run()
    next(b for b in app.button if b.label == "Use uploaded scores").click().run()
    assert not app.exception and "do not fit" in app.error[0].value


def test_compare_page_sweeps_with_predicted_latency():
    app = start("pages/4_compare.py")
    next(b for b in app.button if b.label == "Run sweep").click().run()
    _finish_job(app, "job_sweep")
    table = app.session_state["sweep_table"]
    assert len(table) == 14 and set(table["scores"]) == {next(iter(table["scores"])), "magnitude (data-free)"}
    assert set(table["latency_source"]) == {"predicted"}
    unpruned = table[(table["MLP sparsity"] == 0) & (table["head sparsity"] == 0)]
    assert (unpruned["speed-up (x)"] == 1.0).all()  # exactly, from the latency model
    assert len(app.get("plotly_chart")) == 2
    titles = [json.loads(c.proto.spec)["layout"]["xaxis"]["title"]["text"] for c in app.get("plotly_chart")]
    assert titles == ["FLOPs (% of unpruned)", "latency at batch 1 (ms)"]


def _find_budget(app: AppTest, target: str, limit: float):
    app.selectbox[0].set_value(target).run()
    next(n for n in app.number_input if n.label.startswith("Maximum")).set_value(limit)
    next(b for b in app.button if b.label == "Find the best configuration").click().run()
    _finish_job(app, "job_budget")
    return app.session_state["budget_answer"]


@pytest.mark.slow
def test_budget_finder_searches_the_plane_and_never_exceeds_the_budget():
    from snapvit_core.presets import PUBLISHED_SPARSITY_PAIRS

    app = start("pages/4_compare.py")
    explorer = app.session_state["explorer"]
    column, limit, answer = _find_budget(app, "FLOPs (% of unpruned)", 50.0)
    assert (column, limit) == ("flops_pct", 50.0)
    flops_pct = explorer.cost(answer.mlp_sparsity, answer.head_sparsity).cost.flops_pct
    assert flops_pct <= 50.0 and answer.cost <= 50.0
    # between the published (0.55, 0.4) = 51.4 % and (0.65, 0.5) = 41.1 % points, and not one of them
    assert 41.1 < flops_pct and (answer.mlp_sparsity, answer.head_sparsity) not in PUBLISHED_SPARSITY_PAIRS
    assert any("Best within" in s.value for s in app.success)
    assert len(answer.candidates) >= 2 and (answer.candidates["flops_pct"] <= 50.0).all()
    for target, value in (("Parameters (millions)", 0.3), ("Latency (ms at batch 1, predicted)", None)):
        if value is None:
            value = 0.9 * explorer.ensure_latency_model().predict([6] * 6, [384] * 6).ms
        column, limit, answer = _find_budget(app, target, value)
        cost = explorer.cost(answer.mlp_sparsity, answer.head_sparsity)
        spent = cost.cost.params / 1e6 if column == "params_m" else cost.latency.ms
        assert spent <= limit, (target, spent, limit)
    column, limit, answer = _find_budget(app, "FLOPs (% of unpruned)", 0.5)  # nothing can be that small
    assert answer is None and any("Nothing fits" in w.value for w in app.warning)


def test_budget_answer_opens_in_the_explorer_and_exports():
    app = start("pages/4_compare.py")
    _, _, answer = _find_budget(app, "FLOPs (% of unpruned)", 60.0)
    next(b for b in app.button if b.label == "Open in the explorer").click().run()
    assert not app.exception
    from ui import config_state

    assert app.session_state[config_state.CONFIG_KEY].pair == (answer.mlp_sparsity, answer.head_sparsity)
    assert app.slider(key="mlp_sparsity").value == pytest.approx(round(answer.mlp_sparsity / 0.05) * 0.05)
    app.switch_page("pages/4_compare.py").run()
    next(b for b in app.button if b.label == "Export it").click().run()
    assert not app.exception
    suffix = next(t for t in app.text_input if t.label.startswith("Export folder")).value.split("_m")[-1]
    assert suffix.startswith(f"{answer.mlp_sparsity:.3f}".rstrip("0")[:4])


def test_export_page_writes_a_loadable_model(tmp_path, monkeypatch):
    app = start("pages/3_explorer.py")
    app.slider(key="mlp_sparsity").set_value(0.5).run()
    app.switch_page("pages/5_export.py").run()
    next(t for t in app.text_input if t.label.startswith("Export folder")).set_value("test_export_app")
    next(c for c in app.checkbox if c.label.startswith("Replace")).check()
    next(b for b in app.button if b.label == "Export").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    report = app.session_state["last_export"]
    try:
        from snapvit_core.export import kept_widths, load_pruned

        assert kept_widths(load_pruned(report.directory))[1] == report.kept_neurons
        assert sum(report.kept_neurons) < 6 * 384
    finally:
        import shutil

        shutil.rmtree(report.directory, ignore_errors=True)


def test_saving_scores_never_overwrites_silently(monkeypatch, tmp_path):
    from ui import session

    app = start("pages/2_scores.py")
    name_box = next(t for t in app.text_input if t.label == "File name in scores/")
    existing = tmp_path / "mine.safetensors"
    existing.write_bytes(b"user data")
    monkeypatch.setattr(session, "SCORES_DIR", tmp_path)
    name_box.set_value("mine.safetensors")
    next(b for b in app.button if b.label == "Save to scores/").click().run()
    assert "already exists" in app.error[0].value and existing.read_bytes() == b"user data"
    next(t for t in app.text_input if t.label == "File name in scores/").set_value("../escape.safetensors")
    next(b for b in app.button if b.label == "Save to scores/").click().run()
    assert "not a plain file name" in app.error[0].value
