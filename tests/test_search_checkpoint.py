"""Search checkpoints: refused early when they cannot be written, and clear when they cannot be read (issue 16)."""

from __future__ import annotations

import errno
import io

import pytest
import torch
from conftest import make_vit

from snapvit_core.errors import SnapViTError
from snapvit_core.scoring.data_free import magnitude_scores
from snapvit_core.search import checkpoint as search_checkpoint
from snapvit_core.search.evolution import SearchConfig, run_search

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

    monkeypatch.setattr(search_checkpoint.tempfile, "mkstemp", read_only)
    with pytest.raises(SnapViTError, match="Cannot write the search checkpoint .*Read-only"):
        _run(setup, tmp_path / "ro" / "c.pt", progress=lambda *a: evaluations.append(a))
    assert evaluations == []


def test_full_disk_is_refused_up_front_and_mid_search(setup, tmp_path, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    with monkeypatch.context() as patch:
        patch.setattr(search_checkpoint.shutil, "disk_usage", lambda folder: usage(10, 10, 0))
        with pytest.raises(SnapViTError, match="Not enough disk space"):
            _run(setup, tmp_path / "c.pt")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(search_checkpoint.torch, "save", full)
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


def _write(state, path):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())
    return path


def _stride0(rows: int, cols: int | None = None) -> torch.Tensor:
    """One stored float posing as a rows x cols tensor (torch.save keeps the view: a tiny file)."""
    return torch.zeros(1, dtype=torch.float64).expand(rows) if cols is None else torch.zeros(1).expand(rows, cols)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda s, d: s["history"].__setitem__("best_multipliers", _stride0(30000, 30000)), "has shape [30000, 30000]"),
        (lambda s, d: s["history"].__setitem__("best_multipliers", _stride0(d)), "larger than its storage"),
        (lambda s, d: s["optimizer"].__setitem__("shape", torch.zeros(1, dtype=torch.float64).expand(d, d)), "storage"),
        (lambda s, d: s["history"].__setitem__("best_multipliers", None), "'history.best_multipliers' is a NoneType"),
        (lambda s, d: s["history"]["fitness"].__setitem__(1, "0.5"), "'history.fitness' holds a str"),
        (lambda s, d: s["history"]["best"].__setitem__(0, float("nan")), "not a finite number"),
        (lambda s, d: s["optimizer"].__setitem__("generation", 7), "does not match generation"),
        (lambda s, d: s["optimizer"].__setitem__("generator", s["optimizer"]["generator"].float()), "is float32"),
        (lambda s, d: s["optimizer"]["mean"].__setitem__(0, float("inf")), "'optimizer.mean' holds NaN or infinite"),
        (lambda s, d: s["optimizer"].__setitem__("sigma", -1.0), "step size"),
        (lambda s, d: s["optimizer"].__setitem__("mean", torch.zeros(d + 1, dtype=torch.float64)), "xNES mean"),
        (lambda s, d: s["optimizer"].__setitem__("population_size", 3), "population size"),
    ],
)
def test_checkpoint_values_are_checked_before_use(setup, tmp_path, good_checkpoint, damage, words):
    """Issue 23 item 3: values, not only keys: shapes, dtypes, strides, element types, finiteness."""
    import copy

    state = copy.deepcopy(good_checkpoint)
    damage(state, state["optimizer"]["mean"].numel())
    path = _write(state, tmp_path / "c.pt")
    assert path.stat().st_size < 100_000
    with pytest.raises(SnapViTError, match="damaged") as info:
        _run(setup, path, resume=True)
    assert words in str(info.value), str(info.value)


def test_checkpoint_of_another_backbone_or_other_scores_is_refused(setup, tmp_path):
    """Issue 23 item 3: a checkpoint of another backbone with the same dimension resumed silently."""
    model, scores, images = setup
    path = tmp_path / "c.pt"
    _run(setup, path, model_id="backbone-a")
    assert torch.load(path, weights_only=True)["backbone"] == "backbone-a"
    with pytest.raises(SnapViTError, match="search on 'backbone-a', not 'backbone-b'"):
        _run(setup, path, resume=True, model_id="backbone-b")
    other = type(scores)(scores.mlp.flip(1), scores.heads, scores.min_mlp_keep_ratio, scores.min_head_keep_ratio)
    with pytest.raises(SnapViTError, match="other base scores"):
        run_search(model, other, images, SMALL, checkpoint_path=path, resume=True, model_id="backbone-a")
    assert _run(setup, path, resume=True, model_id="backbone-a").evaluations > 0  # the same backbone resumes


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cli_resume_from_a_stride0_checkpoint_stays_within_memory(tmp_path):
    """Issue 23 item 3: the 23 KB checkpoint took `search --resume` to 7.65 GB; one line, exit 2, bounded memory."""
    from conftest import run_limited

    common = ["-m", "snapvit_core", "search", "--data", "procedural", "--evaluations", "6", "--eval-images", "4"]
    common += ["--covariance", "identity", "--population-size", "4", "--quiet", "--checkpoint", str(tmp_path / "c.pt")]
    scores = tmp_path / "s.safetensors"
    first = run_limited(["-m", "snapvit_core", "score", "--method", "magnitude", "--out", str(scores)], 8 << 30)
    assert first.returncode == 0, first.stderr
    done = run_limited([*common, "--scores", str(scores), "--out", str(tmp_path / "o.safetensors")], 8 << 30)
    assert done.returncode == 0, done.stderr
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    state["history"]["best_multipliers"] = _stride0(30000, 30000)
    _write(state, tmp_path / "c.pt")
    done = run_limited(
        [*common, "--resume", "--scores", str(scores), "--out", str(tmp_path / "o.safetensors")], 5632 << 20
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "damaged" in done.stderr and "unexpected" not in done.stderr
