"""Exports for the ecosystem (issue 24): model card, transformers AutoModel, timm local-dir, standalone loaders."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch
from conftest import make_vit
from test_families import FAMILIES

from snapvit_core.engine.adapter import ViTAdapter
from snapvit_core.engine.backbones import Backbone, load_backbone
from snapvit_core.engine.elastic import ElasticViT
from snapvit_core.export.writer import TIMM_REFUSAL, architecture_spec, export_pruned, load_pruned
from snapvit_core.scoring.data_free import magnitude_scores

# Runs first in the fresh interpreters: makes snapvit_core unimportable (it is installed editable in the venv).
BLOCK_LIBRARY = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "snapvit_core" or name.startswith("snapvit_core."):
            raise ImportError("snapvit_core is blocked in this test")
sys.meta_path.insert(0, _Block())
try:
    import snapvit_core
    raise SystemExit("snapvit_core is importable")
except ImportError:
    pass
"""


def _export(model, tmp_path, name, architecture, model_args, data_config, align=1, **kwargs):
    elastic = ElasticViT(model, magnitude_scores(model), align=align)
    pruned = elastic.prune_to(0.45, 0.3)
    report = export_pruned(
        pruned,
        tmp_path / name,
        architecture=architecture,
        model_args=model_args,
        data_config=data_config,
        pruning={
            "source_model": "vit_small_patch16_224.dino",
            "mlp_sparsity": 0.45,
            "head_sparsity": 0.3,
            "align": align,
        },
        plan=elastic.plan_for(0.45, 0.3),
        **kwargs,
    )
    return pruned, report


@pytest.fixture(scope="module")
def embedded_export(tmp_path_factory):
    backbone = load_backbone("embedded")
    architecture, args = architecture_spec(backbone)
    metrics = {"knn": {"top1": 91.5, "unpruned_top1": 96.5, "data": "embedded", "k": 20, "vote": "uniform"}}
    return _export(
        backbone.model, tmp_path_factory.mktemp("e"), "card", architecture, args, backbone.data_config, 16,
        metrics=metrics,
    )  # fmt: skip


def test_model_card_front_matter_is_hugging_face_yaml(embedded_export):
    import yaml

    pruned, report = embedded_export
    text = (report.directory / "README.md").read_text()
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-feature-extraction"
    assert "snapvit" in meta["tags"] and "pruned" in meta["tags"]
    assert meta["base_model"] == "timm/vit_small_patch16_224.dino" and "license" not in meta
    heads, neurons = [b.num_heads for b in ViTAdapter(pruned).blocks], [b.mlp_hidden for b in ViTAdapter(pruned).blocks]
    for i, (h, n) in enumerate(zip(heads, neurons)):
        assert f"| {i} | {h} | {n} |" in body
    assert "91.50 %" in body and "trust_remote_code=True" in body and "load_pruned" in body
    assert f"{report.params:,}" in body and "multiples of 16" in body


def test_card_has_no_base_model_for_random_or_local_sources(tmp_path):
    from snapvit_core.export.model_card import base_model

    assert base_model("vit_base_patch16_224.dino", random_init=True) is None
    assert base_model("embedded", False) is None and base_model(str(tmp_path), False) is None
    assert base_model("hf:facebook/dinov2-small", False) == "facebook/dinov2-small"


def _run_fresh(script: str, *args: str, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", BLOCK_LIBRARY + script, *args], capture_output=True, text=True, timeout=300,
        cwd=cwd, env=env,
    )  # fmt: skip


def _automodel_output(directory, images, tmp_path) -> tuple[str, float]:
    """The class transformers.AutoModel loads ``directory`` as (in a fresh interpreter without the library), and
    the largest difference between its pooler output and the library's embedding of ``images``."""
    with torch.no_grad():
        expected = ViTAdapter(load_pruned(directory)).embed(images)
    torch.save(images, tmp_path / "x.pt")
    torch.save(expected, tmp_path / "y.pt")
    script = (
        "import torch, transformers\n"
        "m = transformers.AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()\n"
        "x, y = torch.load(sys.argv[2]), torch.load(sys.argv[3])\n"
        "with torch.no_grad(): out = m(pixel_values=x).pooler_output\n"
        "print(type(m).__name__, float((out - y).abs().max()))\n"
    )
    result = _run_fresh(script, str(directory), str(tmp_path / "x.pt"), str(tmp_path / "y.pt"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    name, diff = result.stdout.split()[-2:]
    return name, float(diff)


def test_transformers_automodel_loads_the_export_without_the_library(embedded_export, tmp_path):
    pruned, report = embedded_export
    images = torch.randn(3, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    name, diff = _automodel_output(report.directory, images, tmp_path)
    assert name == "SnapViTModel" and diff < 1e-5
    config = json.loads((report.directory / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_snapvit.SnapViTModel" and config["model_type"] == "snapvit"


def test_timm_local_dir_names_the_supported_loaders(embedded_export):
    import timm

    _, report = embedded_export
    with pytest.raises(RuntimeError) as error:
        timm.create_model(f"local-dir:{report.directory}")
    message = str(error.value)
    assert "load_pruned.py" in message and "trust_remote_code=True" in message and message.endswith(TIMM_REFUSAL + ")")


def _standalone(directory):
    """The export's own load_pruned.py, imported from the export folder (not the library's module)."""
    spec = importlib.util.spec_from_file_location(f"standalone_{directory.name}", directory / "load_pruned.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "import snapvit_core" not in (directory / "load_pruned.py").read_text()
    return module


def _family_export(family, tmp_path):
    model = FAMILIES[family]()
    shape = ViTAdapter(model).shape()
    data_config = {"input_size": (3, shape.image_size, shape.image_size), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    if family.startswith("hf-"):
        architecture, args = architecture_spec(Backbone(model, family, data_config))
    else:  # the test models are shallower and smaller than their timm defaults: record that
        architecture = model.pretrained_cfg["architecture"]
        args = {"depth": 2, "img_size": 64, "num_classes": int(model.num_classes)}
    return _export(model, tmp_path, family, architecture, args, data_config)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_standalone_loader_matches_the_library_for_every_family(family, tmp_path):
    pruned, report = _family_export(family, tmp_path)
    images = torch.randn(2, *json.loads((report.directory / "config.json").read_text())["pretrained_cfg"]["input_size"])
    standalone = _standalone(report.directory)
    with torch.no_grad():
        library = ViTAdapter(load_pruned(report.directory)).embed(images)
        alone = standalone.embed(standalone.load_pruned(report.directory), images)
        original = ViTAdapter(pruned).embed(images)
    torch.testing.assert_close(alone, library, atol=1e-5, rtol=0)
    torch.testing.assert_close(library, original, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mlp", ["swiglu", "glu-packed"])
def test_standalone_resizing_handles_every_mlp_kind(mlp, embedded_export):
    """GLU MLPs cannot be named in VisionTransformer JSON kwargs; the loader's block resizing is checked directly."""
    standalone = _standalone(embedded_export[1].directory)
    model = make_vit(mlp=mlp)
    pruned = ElasticViT(model, magnitude_scores(model)).prune_to(0.5, 0.3)
    rebuilt = make_vit(mlp=mlp)
    kind = ViTAdapter(model).shape().mlp_kind
    for block, layers in zip(rebuilt.blocks, ViTAdapter(pruned).blocks):
        standalone._resize_block(block.attn, block.mlp, layers.num_heads, layers.mlp_hidden, layers.head_dim, kind)
    rebuilt.load_state_dict({k: v.clone() for k, v in pruned.state_dict().items()}, strict=True)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(standalone.embed(rebuilt, images), ViTAdapter(pruned).embed(images))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["dinov3-qkv-bias", "hf-dinov2"])
def test_transformers_automodel_loads_other_families(family, tmp_path):
    pruned, report = _family_export(family, tmp_path)
    size = json.loads((report.directory / "config.json").read_text())["pretrained_cfg"]["input_size"]
    images = torch.randn(2, *size, generator=torch.Generator().manual_seed(0))
    _, diff = _automodel_output(report.directory, images, tmp_path)
    assert diff < 1e-5


def test_cli_export_card_reports_measured_latency_beside_the_prediction(tmp_path, capsys):
    from snapvit_core.cli import main

    table = tmp_path / "t.json"
    assert main(["calibrate", "--out", str(table), "--budget-s", "0.01", "--min-rounds", "2"]) == 0
    capsys.readouterr()
    argv = ["export", "--mlp-sparsity", "0.45", "--head-sparsity", "0.3", "--align", "16", "--knn"]
    code = main([*argv, "--latency-table", str(table), "--out", str(tmp_path / "e"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    latency = json.loads(out)["latency"]
    assert latency["measured_ms"] > 0 and latency["unpruned_ms"] > 0 and latency["device"].startswith("cpu")
    assert latency["predicted_on"].startswith("latency table: cpu") and latency["predicted_ms"] > 0
    card = (tmp_path / "e" / "README.md").read_text()
    assert "measured on cpu" in card and "predicted by the latency model" in card and "kNN top-1 (embedded" in card
    assert "multiples of 16" in card and "realised n/a" not in card
