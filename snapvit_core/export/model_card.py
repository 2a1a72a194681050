"""The model card (``README.md``) of an export: Hugging Face YAML front matter and a body of what was measured.

The front matter carries ``library_name``, ``tags``, ``pipeline_tag`` and ``base_model`` when the source
is a published checkpoint (never a license: the exporter cannot know it). Values are written as JSON
strings, which are valid YAML scalars, so no YAML library is needed to write it and any parser reads it.
The body says what was pruned (per-block widths), what was measured (parameters, FLOPs, kNN, latency with
the device), how the scores were made and searched, and how to load the export.

The card is data, not code: every value that comes from metadata, a file or a name (scores method and
data, device names, the folder's name) is one line with its control characters escaped, cut to
``MAX_VALUE_CHARS``, and has the characters that make Markdown or HTML (links, images, tags, table
cells, code spans) backslash-escaped; the front matter's values are JSON strings (``base_model`` only a
repo id of the usual shape); the loading snippets quote the folder with ``repr``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from snapvit_core.errors import printable

PIPELINE_TAG = "image-feature-extraction"
TAGS = ("snapvit", "pruned", "vision-transformer", "image-feature-extraction", "custom_code")
MAX_VALUE_CHARS = 80  # a value from metadata or a name on the card (longer ones are cut, with an ellipsis)
_MARKDOWN = re.compile(r"([\\`*\[\]<>!|~$&])")  # what can start a link, image, tag, code span or table cell
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")  # a Hugging Face repo id
_TIMM_NAME = re.compile(r"[a-z0-9][\w-]{0,95}\.[\w-]{1,95}")  # a timm model name with a pretrained tag


def inert(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    """``value`` as Markdown that shows its text and nothing else: one line, at most ``limit`` characters."""
    text = printable(value)
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return _MARKDOWN.sub(r"\\\1", text)


def _inert_values(value: object) -> object:
    """Every string in a metadata structure (dicts, lists) made :func:`inert`; numbers and the rest kept."""
    if isinstance(value, str):
        return inert(value)
    if isinstance(value, dict):
        return {key: _inert_values(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_inert_values(item) for item in value]
    return value


def _quoted(name: str) -> str:
    """The export folder as a Python string literal for the snippets (a fixed placeholder if it is unusual)."""
    return repr(name) if name.isprintable() and len(name) <= 100 else repr("path/to/export")


def base_model(source: str | None, random_init: bool) -> str | None:
    """The Hugging Face repo the weights came from, when known: timm pretrained tags and ``hf:`` repos."""
    if not source or random_init:
        return None
    if source.startswith("hf:"):
        repo = source[3:].strip()
        looks_local = repo.startswith((".", "/", "~")) or Path(repo).expanduser().exists()
        return None if looks_local or not _REPO_ID.fullmatch(repo) else repo
    if _TIMM_NAME.fullmatch(source) and not Path(source).exists():  # timm name with a pretrained tag
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
    linear = metrics.get("linear")
    if linear:
        probe = linear.get("probe") or {}
        lines.append(
            f"| linear-probe top-1 ({linear['data']}, DINOv1 protocol: {probe.get('epochs', '?')} epochs, "
            f"lr {probe.get('lr', '?')}) | {linear['top1']:.2f} % | {linear.get('unpruned_top1', float('nan')):.2f} % |"
        )
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
    """The scores' provenance, every value inert."""
    method = scores_metadata.get("method", "unknown")
    base = scores_metadata.get("base_method")
    searched = f" (search over {inert(base)} gradient scores)" if base else ""
    lines = [f"- Importance scores: {inert(method)}{searched}."]
    for key in ("samples", "data", "model_id", "device", "saved_at"):
        if isinstance(scores_metadata.get(key), (str, int, float)):
            lines.append(f"  - {key}: {inert(scores_metadata[key])}")
    search = scores_metadata.get("search")
    if isinstance(search, dict) and isinstance(search.get("fitness"), list):
        lines.append(f"  - evolutionary search (xNES) over per-block multipliers: {len(search['fitness'])} evaluations")
    return lines


def model_card(config: dict, metrics: dict, scores_metadata: dict | None, name: str) -> str:
    """The README.md text of an export whose config.json is ``config`` (every value from metadata or a name inert)."""
    pruning = config["pruning"]
    heads, neurons = [int(h) for h in pruning["kept_heads"]], [int(n) for n in pruning["kept_neurons"]]
    source = inert(pruning.get("source_model") or "unknown")
    align = pruning.get("align", 1)
    align = align if isinstance(align, int) and not isinstance(align, bool) else 1
    metrics = _inert_values(metrics)  # device names, data specs ... (numbers are formatted by the lines)
    scores_metadata = {key: value for key, value in (scores_metadata or {}).items() if isinstance(key, str)}
    title, snippet_path = inert(name, 100), _quoted(name)
    widths = ["| block | kept heads | kept MLP neurons |", "|---:|---:|---:|"]
    widths += [f"| {i} | {h} | {n} |" for i, (h, n) in enumerate(zip(heads, neurons))]
    body = [
        f"# {title}: {source} pruned with SnapViT",
        "",
        "Whole attention heads and MLP hidden neurons were removed by importance score (SnapViT: single-shot, "
        "label-free, no retraining), so this is a smaller dense ViT, not a masked one.",
        "",
        f"- Source model: {source}" + (" (random initialisation)" if pruning.get("random_init") else ""),
        f"- MLP sparsity requested {inert(pruning.get('mlp_sparsity', 'n/a'))}, realised "
        f"{_realised(neurons, metrics.get('mlp_total'))}; head sparsity requested "
        f"{inert(pruning.get('head_sparsity', 'n/a'))}, realised {_realised(heads, metrics.get('heads_total'))}",
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
        *_scores_lines(scores_metadata),
        "- Keep counts: a global threshold over all blocks' scores per unit type, each block protected by a "
        "minimum keep ratio" + (f", then each block's MLP width rounded to a multiple of {align}" if align > 1 else ""),
        "",
        "## How to load",
        "",
        "```python",
        "from transformers import AutoModel",
        f"model = AutoModel.from_pretrained({snippet_path}, trust_remote_code=True)  # or the folder path",
        "embedding = model(pixel_values).pooler_output",
        "```",
        "",
        "Without transformers (torch, timm and safetensors only):",
        "",
        "```python",
        "from load_pruned import load_pruned, embed  # the loader in this folder",
        f"model = load_pruned({snippet_path})",
        "embedding = embed(model, images)",
        "```",
        "",
        "With SnapViT Explorer: `snapvit_core.export.writer.load_pruned(folder)`. "
        '`timm.create_model("local-dir:...")` cannot rebuild the pruned widths and refuses this folder with these '
        "instructions. Preprocessing (mean, std, input size) is in `config.json` under `pretrained_cfg`.",
        "",
    ]
    return _front_matter(config) + "\n\n" + "\n".join(body)
