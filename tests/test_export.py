"""Export: safetensors + config.json that rebuild the pruned model with timm alone; ONNX; atomicity."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import export_from, make_vit

from snapvit_core.cli import main
from snapvit_core.engine.adapter import ViTAdapter
from snapvit_core.engine.backbones import load_backbone
from snapvit_core.engine.elastic import ElasticViT
from snapvit_core.errors import SnapViTError
from snapvit_core.export import writer as export
from snapvit_core.export.writer import architecture_spec, export_pruned, load_pruned, shrink_to_plan
from snapvit_core.scoring.data_free import magnitude_scores, random_scores


def _export_embedded(tmp_path, onnx=False, name="out"):
    backbone = load_backbone("embedded")
    scores = magnitude_scores(backbone.model)
    elastic = ElasticViT(backbone.model, scores)
    pruned = elastic.prune_to(0.35, 0.2)
    pruning = {"mlp_sparsity": 0.35, "head_sparsity": 0.2}
    plan = elastic.plan_for(0.35, 0.2)
    return pruned, export_from(backbone, pruned, tmp_path / name, plan=plan, pruning=pruning, scores=scores, onnx=onnx)


def test_export_round_trips_through_the_library_and_the_standalone_loader(tmp_path):
    pruned, report = _export_embedded(tmp_path, onnx=True)
    assert set(report.files) == {
        "README.md",
        "config.json",
        "configuration_snapvit.py",
        "load_pruned.py",
        "model.onnx",
        "model.safetensors",
        "modeling_snapvit.py",
        "scores.safetensors",
    }
    assert report.onnx_max_abs_diff is not None and report.onnx_max_abs_diff < 1e-4
    images = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        expected = ViTAdapter(pruned).embed(images)
        loaded = load_pruned(report.directory)
        # atol 1e-5: the explorer's CPU copy of this 17-token model uses timm's explicit attention path,
        # the loaded model timm's default fused kernel (same maths, measured difference 1.8e-6)
        torch.testing.assert_close(ViTAdapter(loaded).embed(images), expected, atol=1e-5, rtol=0)
    config = json.loads((report.directory / "config.json").read_text())
    assert config["pruning"]["kept_heads"] == [b.num_heads for b in ViTAdapter(pruned).blocks]
    # The standalone loader needs only torch + timm + safetensors (run in a fresh interpreter).
    script = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); from load_pruned import load_pruned; "
        "m = load_pruned(sys.argv[1]); x = torch.load(sys.argv[2], weights_only=True); "
        "y = torch.load(sys.argv[3], weights_only=True); "
        "print(float((m.forward_head(m.forward_features(x), pre_logits=True) - y).abs().max()))"
    )
    torch.save(images, tmp_path / "x.pt")
    torch.save(expected, tmp_path / "y.pt")
    result = subprocess.run(
        [sys.executable, "-c", script, str(report.directory), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-1500:]
    assert float(result.stdout.strip()) < 1e-5  # fused kernel vs the explorer copy's explicit path (above)
    assert "import snapvit_core" not in (report.directory / "load_pruned.py").read_text()


@pytest.mark.parametrize("mlp", ["standard", "swiglu", "glu-packed"])
def test_shrink_to_plan_matches_every_mlp_kind(mlp):
    model = make_vit(mlp=mlp)
    pruned = ElasticViT(model, random_scores(model, 1)).prune_to(0.5, 0.4)
    heads, neurons = export.kept_widths(pruned)
    rebuilt = shrink_to_plan(make_vit(mlp=mlp), heads, neurons)
    rebuilt.load_state_dict({k: v.clone() for k, v in pruned.state_dict().items()}, strict=True)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ViTAdapter(rebuilt).embed(images), ViTAdapter(pruned).embed(images))


def test_existing_folder_is_refused_and_a_failed_export_leaves_nothing(tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("user data")
    with pytest.raises(SnapViTError, match="not empty"):
        _export_embedded(tmp_path)
    assert (tmp_path / "out" / "keep.txt").read_text() == "user data"

    def broken(*args, **kwargs):
        raise SnapViTError("ONNX export failed: simulated.")

    monkeypatch.setattr(export, "export_onnx", broken)
    with pytest.raises(SnapViTError, match="simulated"):
        _export_embedded(tmp_path, onnx=True, name="fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no half-written folder, no staging left


def test_timm_backbone_export_records_its_architecture(tmp_path):
    backbone = load_backbone("vit_tiny_patch16_224", random_init=True)
    architecture, args = architecture_spec(backbone)
    assert architecture == "vit_tiny_patch16_224" and args["img_size"] == [224, 224]
    elastic = ElasticViT(backbone.model, magnitude_scores(backbone.model))
    pruned = elastic.prune_to(0.5, 0.34)
    report = export_from(backbone, pruned, tmp_path / "tiny", plan=elastic.plan_for(0.5, 0.34))
    loaded = load_pruned(report.directory)
    assert export.kept_widths(loaded) == export.kept_widths(pruned)


def test_corrupt_export_is_a_clear_error(tmp_path):
    with pytest.raises(SnapViTError, match="no config.json"):
        load_pruned(tmp_path)
    _, report = _export_embedded(tmp_path)
    (report.directory / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(SnapViTError, match="Could not load the export"):
        load_pruned(report.directory)


def test_cli_export(tmp_path, capsys):
    code = main(["export", "--mlp-sparsity", "0.5", "--head-sparsity", "0.3", "--out", str(tmp_path / "e"), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and "model.safetensors" in payload["files"] and len(payload["kept_heads"]) == 6
    code = main(["export", "--mlp-sparsity", "0.5", "--head-sparsity", "0.3", "--out", str(tmp_path / "e")])
    assert code == 2 and "not empty" in capsys.readouterr().err


def test_cli_export_with_correction(tmp_path, capsys):
    args = ["export", "--mlp-sparsity", "0.65", "--head-sparsity", "0.5", "--correct", "--correction-samples", "64"]
    code = main([*args, "--out", str(tmp_path / "c"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert config["pruning"]["corrected"] is True and config["pruning"]["correction"]["samples"] == 64
    plain = main(["export", "--mlp-sparsity", "0.65", "--head-sparsity", "0.5", "--out", str(tmp_path / "p")])
    assert plain == 0
    corrected, truncated = load_pruned(tmp_path / "c"), load_pruned(tmp_path / "p")
    assert export.kept_widths(corrected) == export.kept_widths(truncated)
    fc2 = [(b.mlp.fc2.weight - t.mlp.fc2.weight).abs().max() for b, t in zip(corrected.blocks, truncated.blocks)]
    assert max(fc2) > 0  # the correction changed the consuming layers


def test_the_export_carries_the_repository_loader_and_it_runs_as_a_script(tmp_path):
    """load_pruned.py is a real module of the package, copied verbatim; run alone it loads its own folder."""
    _, report = _export_embedded(tmp_path)
    copied = report.directory / "load_pruned.py"
    assert copied.read_bytes() == export.LOADER_PATH.read_bytes()
    result = subprocess.run([sys.executable, str(copied)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-1500:]
    assert result.stdout.strip() == "loaded; embedding shape (1, 96)"


# --- issue 16: destinations, crash-safe swap, stale temps, modes -----------------------------------


@pytest.fixture(scope="module")
def pruned_embedded():
    backbone = load_backbone("embedded")
    elastic = ElasticViT(backbone.model, magnitude_scores(backbone.model))
    plan = elastic.plan_for(0.35, 0.2)
    return elastic.pruned(plan), architecture_spec(backbone), backbone.data_config, plan


def _write(pruned_embedded, target, tag="new", **kwargs):
    model, (architecture, args), data_config, plan = pruned_embedded
    return export_pruned(
        model,
        target,
        architecture=architecture,
        model_args=args,
        data_config=data_config,
        pruning={"tag": tag},
        plan=plan,
        **kwargs,
    )


def _tag(folder):
    """The 'tag' of the complete export in ``folder`` (None if it is not a complete export)."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    complete = all((folder / name).is_file() for name in ("model.safetensors", "load_pruned.py"))
    return config["pruning"]["tag"] if complete else None


def _hidden(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_out_dot_home_and_parents_are_refused(tmp_path, monkeypatch, capsys, pruned_embedded):
    """Item 4: `export --out . --overwrite` deleted the current folder's files."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "precious.txt").write_text("mine")
    monkeypatch.chdir(work)
    for out in (".", "..", str(work), str(tmp_path), "./"):
        with pytest.raises(SnapViTError) as info:
            _write(pruned_embedded, out, overwrite=True, force=True)
        assert "current folder" in str(info.value), str(info.value)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes").write_text("x")
    with pytest.raises(SnapViTError, match="home"):
        _write(pruned_embedded, "~", overwrite=True, force=True)
    code = main(["export", "--mlp-sparsity", "0.5", "--head-sparsity", "0.3", "--out", ".", "--overwrite"])
    assert code == 2 and capsys.readouterr().err.count("\n") == 1
    assert (work / "precious.txt").read_text() == "mine" and (tmp_path / "home" / "notes").exists()
    assert _hidden(work) == [] and _hidden(tmp_path) == []


def test_overwrite_needs_an_export_or_force(tmp_path, pruned_embedded):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_text("x")
    with pytest.raises(SnapViTError, match="does not look like an export"):
        _write(pruned_embedded, folder, overwrite=True)
    assert (folder / "a.jpg").exists()
    _write(pruned_embedded, folder, overwrite=True, force=True)
    assert _tag(folder) == "new" and not (folder / "a.jpg").exists()
    _write(pruned_embedded, folder, tag="again", overwrite=True)  # now it is an export: no force needed
    assert _tag(folder) == "again"


def test_files_and_symlinks_are_refused(tmp_path, pruned_embedded):
    """Item 9: --overwrite onto a file, a symlink, a dangling symlink."""
    (tmp_path / "file").write_text("data")
    with pytest.raises(SnapViTError, match="is a file"):
        _write(pruned_embedded, tmp_path / "file", overwrite=True, force=True)
    _write(pruned_embedded, tmp_path / "real", tag="old")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for name in ("link", "dangling"):
        with pytest.raises(SnapViTError, match="symbolic link"):
            _write(pruned_embedded, tmp_path / name, overwrite=True, force=True)
    assert (tmp_path / "file").read_text() == "data" and _tag(tmp_path / "real") == "old"
    assert not (tmp_path / "nowhere").exists()


def test_read_only_folder_and_full_disk_are_one_clear_error(tmp_path, monkeypatch, pruned_embedded):
    import errno

    import safetensors.torch

    from snapvit_core.files import atomic as _atomic

    _write(pruned_embedded, tmp_path / "out", tag="old")

    def overwrite_failing(module, name: str, error: OSError, message: str) -> None:
        """Overwrite the export while ``module.name`` raises ``error``: one SnapViTError matching ``message``."""

        def fail(*args, **kwargs):
            raise error

        with monkeypatch.context() as patch:
            patch.setattr(module, name, fail)
            with pytest.raises(SnapViTError, match=message):
                _write(pruned_embedded, tmp_path / "out", overwrite=True)

    read_only = OSError(errno.EROFS, "Read-only file system")
    overwrite_failing(_atomic.tempfile, "mkdtemp", read_only, "Cannot write in .*Read-only")
    full = OSError(errno.ENOSPC, "No space left on device")
    overwrite_failing(safetensors.torch, "save_file", full, "No space left on device")
    assert _tag(tmp_path / "out") == "old" and _hidden(tmp_path) == []
    monkeypatch.setattr(export.os, "access", lambda *a: False)
    with pytest.raises(SnapViTError, match="read-only"):
        _write(pruned_embedded, tmp_path / "new")


@pytest.mark.parametrize("crash_at", ["exchange", "delete old"])
def test_overwrite_swap_keeps_one_complete_export(tmp_path, monkeypatch, pruned_embedded, crash_at):
    """Item 5: a crash at any step leaves a complete export (old or new) at the destination."""
    from snapvit_core.files import atomic as _atomic

    target = tmp_path / "out"
    _write(pruned_embedded, target, tag="old")
    seen = []
    real_exchange, real_rmtree = _atomic.exchange, _atomic.shutil.rmtree

    def exchange(first, second):
        seen.append(_tag(second))
        if crash_at == "exchange":
            raise OSError(5, "Input/output error")
        done = real_exchange(first, second)
        seen.append(_tag(second))
        return done

    def rmtree(path, *args, **kwargs):
        seen.append(_tag(target))
        if crash_at == "delete old":
            raise KeyboardInterrupt  # a kill right after the swap
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(_atomic, "exchange", exchange)
    monkeypatch.setattr(_atomic.shutil, "rmtree", rmtree)
    with pytest.raises((SnapViTError, KeyboardInterrupt)):
        _write(pruned_embedded, target, overwrite=True)
    assert seen and all(tag in ("old", "new") for tag in seen), seen
    assert _tag(target) == ("old" if crash_at == "exchange" else "new")


def test_fallback_swap_restores_or_recovers_the_old_export(tmp_path, monkeypatch, pruned_embedded):
    """Without RENAME_EXCHANGE: a failed second rename puts the old one back; a kill is recovered next time."""
    from snapvit_core.files import atomic as _atomic

    target = tmp_path / "out"
    _write(pruned_embedded, target, tag="old")
    monkeypatch.setattr(_atomic, "exchange", lambda first, second: False)
    real_rename = _atomic.os.rename

    def rename(source, destination):
        if str(source).startswith(str(tmp_path / ".out.snapvit-staging-")) and destination == target:
            raise OSError(28, "No space left on device")
        return real_rename(source, destination)

    with monkeypatch.context() as patch:
        patch.setattr(_atomic.os, "rename", rename)
        with pytest.raises(SnapViTError, match="No space left"):
            _write(pruned_embedded, target, overwrite=True)
    assert _tag(target) == "old" and _hidden(tmp_path) == []
    # what a kill -9 between the two renames leaves: no target, the old export under a backup name
    real_rename(target, tmp_path / ".out.snapvit-old-abc123")
    _write(pruned_embedded, target, tag="newer", overwrite=True)
    assert _tag(target) == "newer" and _hidden(tmp_path) == []


def test_stale_temps_of_killed_writers_are_cleaned(tmp_path, pruned_embedded):
    """Item 6: old hidden temp files and staging folders of this destination go; fresh and foreign ones stay."""
    import os
    import time

    from snapvit_core.scoring.scores_io import save_scores

    old = time.time() - 2 * 3600
    stale = [tmp_path / ".out.snapvit-staging-k1ll3d", tmp_path / ".out.snapvit-old-zz"]
    for folder in stale:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x")
        os.utime(folder / "model.safetensors", (old, old))
        os.utime(folder, (old, old))
    stale_file = tmp_path / ".s.safetensors.abcd1234.tmp"
    stale_file.write_bytes(b"half")
    os.utime(stale_file, (old, old))
    fresh = tmp_path / ".out.snapvit-staging-busy"
    fresh.mkdir()
    foreign = tmp_path / ".other.abcd1234.tmp"
    foreign.write_bytes(b"x")
    os.utime(foreign, (old, old))
    _write(pruned_embedded, tmp_path / "out")
    save_scores(magnitude_scores(make_vit()), tmp_path / "s.safetensors")
    assert _hidden(tmp_path) == sorted([fresh.name, foreign.name])


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_modes_follow_the_umask_without_touching_it(tmp_path, monkeypatch, pruned_embedded, umask):
    """Item 15: export folders were 0700 and model.safetensors 0600; os.umask must not be called."""
    import os

    from snapvit_core.scoring.scores_io import save_scores

    previous = os.umask(umask)
    try:
        monkeypatch.setattr(os, "umask", lambda *a: pytest.fail("os.umask was called"))
        report = _write(pruned_embedded, tmp_path / "out", scores=magnitude_scores(make_vit()))
        saved = save_scores(magnitude_scores(make_vit()), tmp_path / "s.safetensors")
    finally:
        monkeypatch.undo()
        os.umask(previous)
    assert (report.directory.stat().st_mode & 0o777) == 0o777 & ~umask
    for path in [*report.directory.iterdir(), saved]:
        assert (path.stat().st_mode & 0o777) == 0o666 & ~umask, path


def test_export_under_a_file_is_one_clear_error(tmp_path, pruned_embedded):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SnapViTError, match="is a file"):
        _write(pruned_embedded, tmp_path / "file" / "sub")
