"""The model card (``README.md``) of an export: Hugging Face YAML front matter and a body of what was measured.

The front matter carries ``library_name``, ``tags``, ``pipeline_tag`` and ``base_model`` when the source
is a published checkpoint (never a license: the exporter cannot know it). Values are written as JSON
strings, which are valid YAML scalars, so no YAML library is needed to write it and any parser reads it.
The body says what was pruned (per-block widths), what was measured (parameters, FLOPs, kNN, latency with
the device), how the scores were made and searched, and how to load the export.
"""

from __future__ import annotations

import json
from pathlib import Path

PIPELINE_TAG = "image-feature-extraction"
TAGS = ("snapvit", "pruned", "vision-transformer", "image-feature-extraction", "custom_code")


def base_model(source: str | None, random_init: bool) -> str | None:
    """The Hugging Face repo the weights came from, when known: timm pretrained tags and ``hf:`` repos."""
    if not source or random_init:
        return None
    if source.startswith("hf:"):
        repo = source[3:].strip()
        looks_local = repo.startswith((".", "/", "~")) or Path(repo).expanduser().exists()
        return None if looks_local or repo.count("/") != 1 else repo
    if "." in source and "/" not in source and not Path(source).exists():  # timm name with a pretrained tag
        return f"timm/{source}"
    return None


def _front_matter(config: dict) -> str:
    pruning = config["pruning"]
    lines = ["---", "library_name: transformers", "tags:"]
    family = "timm" if config.get("family") != "hf" else "transformers-vit"
    lines += [f"- {json.dumps(tag)}" for tag in (*TAGS, family)]
    lines.append(f"pipeline_tag: {json.dumps(PIPELINE_TAG)}")
    base = base_model(pruning.get("source_model"), bool(pruning.get("random_init")))
    if base:
        lines.append(f"base_model: {json.dumps(base)}")
    lines.append("---")
    return "\n".join(lines)


def _realised(kept: list[int], total: int | None) -> str:
    return "n/a" if not total else f"{100 * (1 - sum(kept) / total):.1f} %"


def _metrics_lines(metrics: dict) -> list[str]:
    lines = ["| metric | pruned | unpruned |", "|---|---:|---:|"]
    if metrics.get("params") is not None:
        lines.append(f"| parameters (embedding path) | {metrics['params']:,} | {metrics.get('params_unpruned', 0):,} |")
    if metrics.get("flops") is not None:
        lines.append(
            f"| FLOPs per image (analytic) | {metrics['flops'] / 1e9:.3f} G | "
            f"{metrics.get('flops_unpruned', 0) / 1e9:.3f} G |"
        )
    knn = metrics.get("knn")
    if knn:
        lines.append(f"| kNN top-1 ({knn['data']}, k={knn['k']}, {knn['vote']} vote) | {knn['top1']:.2f} % | "
                     f"{knn.get('unpruned_top1', float('nan')):.2f} % |")  # fmt: skip
    latency = metrics.get("latency")
    if latency:
        measured = latency.get("measured_ms")
        lines.append(
            f"| latency, batch {latency['batch']}, measured on {latency['device']} ({latency['dtype']}, "
            f"{latency['threads']} threads) | {measured:.2f} ms | {latency.get('unpruned_ms', float('nan')):.2f} ms |"
        )
        if latency.get("predicted_ms") is not None:
            lines.append(
                f"| latency, batch {latency['batch']}, predicted by the latency model "
                f"({latency.get('predicted_on', latency['device'])}) | {latency['predicted_ms']:.2f} ms | |"
            )
    if not knn:
        lines.append("| kNN top-1 | not measured at export (`python -m snapvit_core evaluate` measures it) | |")
    return lines


def _scores_lines(scores_metadata: dict) -> list[str]:
    method = scores_metadata.get("method", "unknown")
    base = scores_metadata.get("base_method")
    lines = [f"- Importance scores: `{method}`" + (f" (search over `{base}` gradient scores)" if base else "") + "."]
    for key in ("samples", "data", "model_id", "device", "saved_at"):
        if isinstance(scores_metadata.get(key), (str, int, float)):
            lines.append(f"  - {key}: {str(scores_metadata[key])[:80]}")
    search = scores_metadata.get("search")
    if isinstance(search, dict) and isinstance(search.get("fitness"), list):
        lines.append(f"  - evolutionary search (xNES) over per-block multipliers: {len(search['fitness'])} evaluations")
    return lines


def model_card(config: dict, metrics: dict, scores_metadata: dict | None, name: str) -> str:
    """The README.md text of an export whose config.json is ``config``."""
    pruning = config["pruning"]
    heads, neurons = pruning["kept_heads"], pruning["kept_neurons"]
    source = pruning.get("source_model") or "unknown"
    align = pruning.get("align", 1)
    widths = ["| block | kept heads | kept MLP neurons |", "|---:|---:|---:|"]
    widths += [f"| {i} | {h} | {n} |" for i, (h, n) in enumerate(zip(heads, neurons))]
    body = [
        f"# {name}: {source} pruned with SnapViT",
        "",
        "Whole attention heads and MLP hidden neurons were removed by importance score (SnapViT: single-shot, "
        "label-free, no retraining), so this is a smaller dense ViT, not a masked one.",
        "",
        f"- Source model: `{source}`" + (" (random initialisation)" if pruning.get("random_init") else ""),
        f"- MLP sparsity requested {pruning.get('mlp_sparsity', 'n/a')}, realised "
        f"{_realised(neurons, metrics.get('mlp_total'))}; head sparsity requested "
        f"{pruning.get('head_sparsity', 'n/a')}, realised {_realised(heads, metrics.get('heads_total'))}",
        f"- MLP widths aligned to multiples of {align}" + (" (no alignment: the published rule)" if align == 1 else ""),
        f"- Weight correction (SparseGPT-style): {'yes' if pruning.get('corrected') else 'no'}",
        "",
        "## Per-block widths",
        "",
        *widths,
        "",
        "## Measured",
        "",
        *_metrics_lines(metrics),
        "",
        "## How it was scored and searched",
        "",
        *_scores_lines(scores_metadata or {}),
        "- Keep counts: a global threshold over all blocks' scores per unit type, each block protected by a "
        "minimum keep ratio" + (f", then each block's MLP width rounded to a multiple of {align}" if align > 1 else ""),
        "",
        "## How to load",
        "",
        "```python",
        "from transformers import AutoModel",
        f'model = AutoModel.from_pretrained("{name}", trust_remote_code=True)  # or the folder path',
        "embedding = model(pixel_values).pooler_output",
        "```",
        "",
        "Without transformers (torch, timm and safetensors only):",
        "",
        "```python",
        "from load_pruned import load_pruned, embed  # the loader in this folder",
        f'model = load_pruned("{name}")',
        "embedding = embed(model, images)",
        "```",
        "",
        "With SnapViT Explorer: `snapvit_core.export.load_pruned(folder)`. "
        '`timm.create_model("local-dir:...")` cannot rebuild the pruned widths and refuses this folder with these '
        "instructions. Preprocessing (mean, std, input size) is in `config.json` under `pretrained_cfg`.",
        "",
    ]
    return _front_matter(config) + "\n\n" + "\n".join(body)
