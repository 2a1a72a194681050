"""Search checkpoints: refused early when they cannot be written, and clear when they cannot be read (issue 16)."""

from __future__ import annotations

import errno
import io

import pytest
import torch
from conftest import make_vit

from snapvit_core import search
from snapvit_core.data_free import magnitude_scores
from snapvit_core.errors import SnapViTError
from snapvit_core.search import SearchConfig, run_search

SMALL = SearchConfig(evaluations=30, pca_components=16)


@pytest.fixture(scope="module")
def setup():
    model = make_vit().eval()
    images = torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    return model, magnitude_scores(model), images


def _run(setup, path, resume=False, **kwargs):
    model, scores, images = setup
    return run_search(model, scores, images, SMALL, checkpoint_path=path, resume=resume, **kwargs)


@pytest.fixture(scope="module")
def good_checkpoint(setup, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "good.pt"
    _run(setup, path)
    return torch.load(path, weights_only=True)


def test_unwritable_checkpoint_folder_fails_before_any_evaluation(setup, tmp_path, monkeypatch):
    """Item 9: a read-only folder was only found after the first generation."""
    evaluations = []

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(search.tempfile, "mkstemp", read_only)
    with pytest.raises(SnapViTError, match="Cannot write the search checkpoint .*Read-only"):
        _run(setup, tmp_path / "ro" / "c.pt", progress=lambda *a: evaluations.append(a))
    assert evaluations == []


def test_full_disk_is_refused_up_front_and_mid_search(setup, tmp_path, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    with monkeypatch.context() as patch:
        patch.setattr(search.shutil, "disk_usage", lambda folder: usage(10, 10, 0))
        with pytest.raises(SnapViTError, match="Not enough disk space"):
            _run(setup, tmp_path / "c.pt")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(search.torch, "save", full)
    with pytest.raises(SnapViTError, match="Could not write the search checkpoint .*No space left"):
        _run(setup, tmp_path / "c.pt")
    assert [p.name for p in tmp_path.iterdir()] == []  # no temp file left behind


def test_checkpoint_that_is_a_folder(setup, tmp_path):
    (tmp_path / "c.pt").mkdir()
    with pytest.raises(SnapViTError, match="is a folder"):
        _run(setup, tmp_path / "c.pt")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "empty (0 bytes)"),
        (b"garbage that is not a zip", "is not a search checkpoint"),
        (b"PK\x03\x04truncated zip", "is not a search checkpoint"),
    ],
)
def test_empty_or_garbage_checkpoint_says_what_it_is(setup, tmp_path, content, words):
    """Item 16: no vague message and never torch's advice to retry with weights_only=False."""
    path = tmp_path / "c.pt"
    path.write_bytes(content)
    with pytest.raises(SnapViTError) as info:
        _run(setup, path, resume=True)
    message = str(info.value)
    assert words in message and "weights_only" not in message and "--resume" in message, message


def test_checkpoint_with_code_is_refused_without_quoting_torch(setup, tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"version": 1, "model": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(SnapViTError) as info:
        _run(setup, path, resume=True)
    assert "weights_only" not in str(info.value) and "not a search checkpoint" in str(info.value)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda s: s.pop("optimizer"), "'optimizer' is missing"),
        (lambda s: s["optimizer"].pop("generator"), "'optimizer.generator' is missing"),
        (lambda s: s["history"].pop("best_multipliers"), "'history.best_multipliers' is missing"),
        (lambda s: s.__setitem__("cka_seconds", "x"), "'cka_seconds' is a str"),
        (lambda s: s["optimizer"].__setitem__("shape", torch.eye(2)), "shape matrix"),
    ],
)
def test_checkpoint_missing_a_key_is_a_clear_error(setup, tmp_path, good_checkpoint, damage, words):
    """Item 9: a checkpoint missing a key used to raise KeyError."""
    import copy

    state = copy.deepcopy(good_checkpoint)
    damage(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = tmp_path / "c.pt"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(SnapViTError, match="damaged") as info:
        _run(setup, path, resume=True)
    assert words in str(info.value)


def test_good_checkpoint_still_resumes(setup, tmp_path, good_checkpoint):
    path = tmp_path / "c.pt"
    torch.save(good_checkpoint, path)
    result = _run(setup, path, resume=True)
    assert result.evaluations >= len(good_checkpoint["history"]["fitness"]) > 0
