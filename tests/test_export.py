"""Export: safetensors + config.json that rebuild the pruned model with timm alone; ONNX; atomicity."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import make_vit

from snapvit_core import export
from snapvit_core.adapter import ViTAdapter
from snapvit_core.backbones import load_backbone
from snapvit_core.cli import main
from snapvit_core.data_free import magnitude_scores, random_scores
from snapvit_core.elastic import ElasticViT
from snapvit_core.errors import SnapViTError
from snapvit_core.export import architecture_spec, export_pruned, load_pruned, shrink_to_plan


def _export_embedded(tmp_path, onnx=False, name="out"):
    backbone = load_backbone("embedded")
    scores = magnitude_scores(backbone.model)
    pruned = ElasticViT(backbone.model, scores).prune_to(0.35, 0.2)
    architecture, args = architecture_spec(backbone)
    report = export_pruned(
        pruned,
        tmp_path / name,
        architecture=architecture,
        model_args=args,
        data_config=backbone.data_config,
        pruning={"mlp_sparsity": 0.35, "head_sparsity": 0.2},
        scores=scores,
        onnx=onnx,
    )
    return pruned, report


def test_export_round_trips_through_the_library_and_the_standalone_loader(tmp_path):
    pruned, report = _export_embedded(tmp_path, onnx=True)
    assert set(report.files) == {
        "config.json",
        "load_pruned.py",
        "model.onnx",
        "model.safetensors",
        "scores.safetensors",
    }
    assert report.onnx_max_abs_diff is not None and report.onnx_max_abs_diff < 1e-4
    images = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        expected = ViTAdapter(pruned).embed(images)
        loaded = load_pruned(report.directory)
        torch.testing.assert_close(ViTAdapter(loaded).embed(images), expected, atol=1e-6, rtol=0)
    config = json.loads((report.directory / "config.json").read_text())
    assert config["pruning"]["kept_heads"] == [b.num_heads for b in ViTAdapter(pruned).blocks]
    # The standalone loader needs only torch + timm + safetensors (run in a fresh interpreter).
    script = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); from load_pruned import load_pruned; "
        "m = load_pruned(sys.argv[1]); x = torch.load(sys.argv[2]); "
        "print(float((m.forward_head(m.forward_features(x), pre_logits=True) - torch.load(sys.argv[3])).abs().max()))"
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
    assert float(result.stdout.strip()) < 1e-6
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
    pruned = ElasticViT(backbone.model, magnitude_scores(backbone.model)).prune_to(0.5, 0.34)
    report = export_pruned(
        pruned,
        tmp_path / "tiny",
        architecture=architecture,
        model_args=args,
        data_config=backbone.data_config,
        pruning={},
    )
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
