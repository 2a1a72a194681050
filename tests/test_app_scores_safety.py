"""The scores page with hostile or mismatched uploads (issue 16, items 1, 2 and 12), through AppTest."""

from __future__ import annotations

import io
import zipfile

import pytest
from app_cards import set_state, state_of
from conftest import ROOT
from streamlit.testing.v1 import AppTest

APP = str(ROOT / "app.py")
TIMEOUT = 180


def _scores_page() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.run()
    app.switch_page("app_pages/2_scores.py").run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _upload(app: AppTest, name: str, content: bytes) -> None:
    app.file_uploader[0].set_value((name, content, "application/octet-stream")).run()
    next(b for b in app.button if b.label == "Use uploaded scores").click().run()


def _embedded_scores_for(backbone_id: str) -> bytes:
    """Scores with the embedded backbone's shapes whose metadata names ``backbone_id``."""
    import tempfile
    from pathlib import Path

    from snapvit_core.engine.backbones import load_backbone
    from snapvit_core.scoring.data_free import magnitude_scores
    from snapvit_core.scoring.scores_io import save_scores

    scores = magnitude_scores(load_backbone("embedded").model).with_metadata(backbone=backbone_id)
    with tempfile.TemporaryDirectory() as folder:
        return save_scores(scores, Path(folder) / "s.safetensors").read_bytes()


def test_scores_of_another_backbone_are_refused_then_allowed_with_a_warning():
    app = _scores_page()
    _upload(app, "dino.safetensors", _embedded_scores_for("vit_base_patch16_224.dino"))
    assert not app.exception
    assert app.error and "made for 'vit_base_patch16_224.dino'" in app.error[0].value
    assert "dino.safetensors" not in state_of(app).scores.label
    next(c for c in app.checkbox if c.key == "scores_allow_other_backbone").check().run()
    next(b for b in app.button if b.label == "Use uploaded scores").click().run()
    assert not app.exception and not app.error
    assert "made for another backbone" in state_of(app).scores.label
    assert any("vit_base_patch16_224.dino" in w.value for w in app.warning)


def test_scores_of_this_backbone_load_without_a_warning():
    app = _scores_page()
    _upload(app, "mine.safetensors", _embedded_scores_for("embedded"))
    assert not app.exception and not app.error and not app.warning
    assert state_of(app).scores.label == "mine.safetensors (uploaded)"


def _zip(pickle_bytes: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a/data.pkl", pickle_bytes)
        archive.writestr("a/version", b"3\n")
    return buffer.getvalue()


@pytest.mark.timeout(120)
def test_self_referencing_upload_is_refused_quickly():
    body = b"".join(b"](h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"eq" + bytes([i]) for i in range(1, 61))
    app = _scores_page()
    _upload(app, "hang.pt", _zip(b"\x80\x02]q\x00" + body + b"Q."))
    assert not app.exception and app.error and "shares one container" in app.error[0].value


class _FinishedJob:
    """Stands in for ui.jobs.Job: a scoring job that finished with ``scores``."""

    def __init__(self, scores) -> None:
        from types import SimpleNamespace

        self._snap = SimpleNamespace(
            state="done",
            fraction=1.0,
            message="",
            seconds=1.0,
            extra={},
            result={"scores": scores, "label": "snapvit (8 images)"},
            error=None,
            name="scoring",
        )

    running = False

    def snapshot(self):
        return self._snap


def test_a_finished_job_for_another_backbone_is_reported_not_a_traceback():
    """Scores computed for a backbone the user has since left are not applied, with a message."""
    from snapvit_core.engine.backbones import load_backbone
    from snapvit_core.scoring.data_free import magnitude_scores
    from ui.score_jobs import JOB_NAME

    scores = magnitude_scores(load_backbone("embedded").model).with_metadata(model_id="vit_small_patch16_224.dino")
    app = _scores_page()
    set_state(app, jobs={JOB_NAME: _FinishedJob(scores)})
    app.run()
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert any("not applied" in e.value and "vit_small_patch16_224.dino" in e.value for e in app.error)
    assert "snapvit (8 images)" not in state_of(app).scores.label
