"""Export a pruned ViT: safetensors weights + a JSON config that rebuilds it with timm alone.

The export directory holds::

    model.safetensors   the pruned weights (embedding path plus any classification head)
    config.json         how to rebuild: timm architecture (or VisionTransformer kwargs, or a transformers
                        config), data config, the per-block kept heads / MLP neurons; plus the
                        transformers keys (model_type, auto_map) of the custom-code model
    README.md           the model card: Hugging Face front matter, widths, measurements, how to load
    load_pruned.py      a standalone loader that needs only torch, timm and safetensors (+ transformers
                        for its families)
    configuration_snapvit.py, modeling_snapvit.py
                        ``transformers.AutoModel.from_pretrained(EXPORT, trust_remote_code=True)``
    scores.safetensors  the importance scores used (optional)
    model.onnx          the embedding model in ONNX (optional; checked against PyTorch)

``timm.create_model("local-dir:EXPORT")`` cannot rebuild pruned widths: config.json's ``architecture``
(the key timm reads) is a sentence naming the supported ways to load, which timm's "Unknown model"
error repeats.

Rebuilding is: create the unpruned architecture with timm, shrink each block's qkv/proj/fc1/fc2 to
the kept widths (:func:`shrink_to_plan`), load the state dict strictly. Every file is written to a
hidden staging folder that is swapped with the destination in one step at the end (``_atomic.py``),
so a failed or killed export never leaves a half-written directory, and an overwritten export is
there, complete, until the new one replaces it.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from snapvit_core.engine.adapter import EmbeddingModule, ViTAdapter
from snapvit_core.engine.surgery import resize_model, widths
from snapvit_core.errors import SnapViTError, optional_import
from snapvit_core.files.atomic import finish_folder, staging_folder, swap_folder_into_place
from snapvit_core.presets import EMBEDDED_MODEL_IDS

FORMAT_NAME = "snapvit-pruned-vit"
FORMAT_VERSION = 1  # readers accept format 1 exports without the keys added since (timm_architecture ...)
HF_ARCHITECTURE = "transformers"  # architecture_spec's name for the transformers families
TIMM_REFUSAL = (
    "snapvit-pruned-vit export, not a timm architecture: load it with load_pruned.py in this folder, "
    "snapvit_core.export.writer.load_pruned(folder), or transformers AutoModel.from_pretrained(folder, "
    "trust_remote_code=True)"
)
ONNX_TOLERANCE = 1e-4  # max |onnxruntime - torch| accepted for the exported embedding
# The self-check of every export: the written file, loaded back, must give the embedding of the library's
# pruned model at the configuration within this (max abs difference over CHECK_IMAGES random images, in
# units of the reference's largest value when that exceeds 1). Float32 on the CPU: a compact copy and the
# engine's sliced views agree to about 1e-6 there (tests/test_export_configuration.py measures it).
EXPORT_TOLERANCE = 1e-5
EXPORT_TOLERANCE_ACCELERATOR = 1e-3  # a reference computed on a GPU, in its own kernels, against the CPU file
CHECK_IMAGES = 4

# The standalone loader and the transformers custom code every export carries: real modules of this
# package, copied verbatim.
LOADER_PATH = Path(__file__).with_name("load_pruned.py")
LOADER_SOURCE = LOADER_PATH.read_text(encoding="utf-8")
CARRIED_FILES = ("load_pruned.py", "configuration_snapvit.py", "modeling_snapvit.py")
AUTO_MAP = {"AutoConfig": "configuration_snapvit.SnapViTConfig", "AutoModel": "modeling_snapvit.SnapViTModel"}


@dataclass
class ExportReport:
    """What an export wrote and checked."""

    directory: Path
    files: list[str]
    params: int
    kept_heads: list[int]
    kept_neurons: list[int]
    onnx_max_abs_diff: float | None = None
    notes: list[str] = field(default_factory=list)
    latency: dict | None = None  # measured here beside the latency model's prediction (see export_pruned)
    knn: dict | None = None  # kNN top-1 (%) of the exported model and the unpruned one, as on the model card
    linear: dict | None = None  # linear-probe top-1 (%) likewise (export --linear)

    def to_dict(self) -> dict:
        return {
            "latency": self.latency,
            "knn": self.knn,
            "linear": self.linear,
            "directory": str(self.directory),
            "files": self.files,
            "params": self.params,
            "kept_heads": self.kept_heads,
            "kept_neurons": self.kept_neurons,
            "onnx_max_abs_diff": self.onnx_max_abs_diff,
            "notes": self.notes,
        }


def architecture_spec(backbone) -> tuple[str | None, dict]:
    """(timm architecture name or None, constructor kwargs) that rebuild ``backbone``'s model unpruned.

    ``None`` means ``timm.models.vision_transformer.VisionTransformer(**kwargs)`` (the embedded ViT);
    ``HF_ARCHITECTURE`` a transformers ViT / DINOv2 (kwargs: model type, class, config, image size).
    """
    from snapvit_core.engine import embedded
    from snapvit_core.engine.hf_vit import HF_MODEL_CLASSES, HFVisionBackbone

    if backbone.model_id in EMBEDDED_MODEL_IDS:
        return None, dict(embedded.read_embedded_config(backbone.model_id)["architecture"])
    model = backbone.model
    if isinstance(model, HFVisionBackbone):
        config = json.loads(model.hf.config.to_json_string(use_diff=False))
        return HF_ARCHITECTURE, {
            "model_type": model.model_type,
            "model_class": HF_MODEL_CLASSES[model.model_type],
            "config": config,
            "image_size": model.image_size,
        }
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    architecture = cfg.get("architecture")
    if not architecture:
        raise SnapViTError(
            f"Cannot tell which timm architecture {type(model).__name__} is.",
            "Export models loaded by name, from a checkpoint directory, or the embedded backbone.",
        )
    args = {"num_classes": int(getattr(model, "num_classes", 0))}
    patch = getattr(model, "patch_embed", None)
    if patch is not None and getattr(patch, "img_size", None) is not None:
        args["img_size"] = list(patch.img_size)
    return architecture, args


def shrink_to_plan(model: nn.Module, kept_heads: list[int], kept_neurons: list[int]) -> nn.Module:
    """Resize an unpruned model's prunable layers in place to the kept widths (weights uninitialised)."""
    return resize_model(model, kept_heads, kept_neurons)


def kept_widths(model: nn.Module) -> tuple[list[int], list[int]]:
    """Current heads and MLP neurons per block of a (possibly pruned) model."""
    return widths(model)


def export_onnx(model: nn.Module, path: Path, image_size: int) -> float:
    """Write the embedding model as ONNX and return max |onnxruntime - torch| on random inputs."""
    onnxruntime = optional_import(
        "onnxruntime", "ONNX export needs onnx and onnxruntime.", "pip install onnx onnxruntime onnxscript"
    )
    wrapper = EmbeddingModule(model).eval()
    example = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    try:
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["embedding"],
            dynamic_axes={"images": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=18,
            dynamo=False,
        )
    except Exception as error:  # noqa: BLE001 - exporter failures have many types
        raise SnapViTError(
            f"ONNX export failed: {type(error).__name__}: {error}".splitlines()[0],
            "Export without ONNX, or report the model family.",
        ) from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    check = torch.randn(3, 3, image_size, image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = wrapper(check).numpy()
    actual = session.run(None, {"images": check.numpy()})[0]
    return float(abs(actual - expected).max())


def _looks_like_export(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("format") == FORMAT_NAME


def check_export_destination(directory: str | Path, overwrite: bool, force: bool = False) -> Path:
    """The absolute export folder for ``directory``, after refusing destinations an overwrite would wreck.

    Never: the current folder or one of its parents, the home folder, a file system root, a file or
    a symbolic link (dangling or not). An existing non-empty folder only with ``overwrite``, and
    only if it looks like an export unless ``force``.
    """
    raw = Path(directory).expanduser()
    if raw.is_symlink():
        raise SnapViTError(
            f"{raw} is a symbolic link{'' if raw.exists() else ' to nothing'}; an export replaces folders, not links.",
            "Give the real folder path, or a new folder name.",
        )
    if raw.name in ("", ".", ".."):
        raise SnapViTError(f"--out {directory} names the current folder or a parent of it.", "Name a new folder.")
    target = Path(os.path.realpath(raw))
    cwd = Path.cwd().resolve()
    if target in {cwd, *cwd.parents, Path.home().resolve(), Path(target.anchor)}:
        raise SnapViTError(
            f"Refusing to export into {target}: it is the current folder, one of its parents, home or a root.",
            "Name a new folder for the export.",
        )
    if target.exists() and not target.is_dir():
        raise SnapViTError(f"{target} is a file, not an export folder.", "Choose a folder name.")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise SnapViTError(
                f"{target} already exists and is not empty.", "Choose a new folder or allow overwriting."
            )
        if not force and not _looks_like_export(target):
            raise SnapViTError(
                f"{target} is not empty and does not look like an export (no {FORMAT_NAME} config.json); "
                "overwriting would delete its files.",
                "Choose a new folder, or force it (--force) if its contents may be deleted.",
            )
    parent = next((p for p in (target.parent, *target.parent.parents) if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise SnapViTError(f"Cannot export to {target}: {parent} is a file.", "Choose a folder path.")
    if parent is None or not os.access(parent, os.W_OK | os.X_OK):
        raise SnapViTError(f"Cannot write in {parent or target.parent}: it is read-only.", "Choose a writable folder.")
    return target


def export_pruned(
    model: nn.Module,
    directory: str | Path,
    *,
    architecture: str | None,
    model_args: dict,
    data_config: dict,
    pruning: dict,
    plan,
    reference: Callable[[torch.Tensor], torch.Tensor] | None = None,
    scores=None,
    onnx: bool = False,
    overwrite: bool = False,
    force: bool = False,
    metrics: dict | None = None,
) -> ExportReport:
    """Write ``model`` (already pruned, and corrected if wanted) as a self-describing directory.

    Before the folder is put in place the export checks itself (:func:`verify_export`): loaded back
    from the staging folder, its per-block widths must equal ``plan``'s, and its embedding of a few
    images must equal ``reference``'s. A mismatch raises and writes nothing.

    Args:
        model: the pruned model (CPU or GPU; exported in float32 on CPU).
        plan: the ``PruningPlan`` the export was asked for (its kept heads and neurons per block).
        reference: images (N, 3, S, S) on the CPU -> the embedding the export must reproduce; default:
            ``model``'s own (a check of the file round trip). Callers pass the library's pruned model
            at the configuration, computed independently of ``model``.
        directory: the export folder; refused if it exists and is not empty unless ``overwrite``.
        architecture, model_args: from :func:`architecture_spec` of the unpruned backbone.
        data_config: the backbone's timm data config (mean, std, input size ...).
        pruning: what produced it (sparsities, scores method, correction ...); recorded as is.
        scores: the ImportanceScores used, saved alongside when given.
        onnx: also export ONNX and check it numerically (raises if it differs by > ONNX_TOLERANCE).
        overwrite: replace an existing export (a folder holding this format's config.json).
        force: with ``overwrite``, also replace a non-empty folder that does not look like an export.
        metrics: measurements for the model card (kNN, unpruned params/FLOPs, ``latency``: measured here
            and predicted; see ``model_card``). Parameters and FLOPs of the export are computed here.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from snapvit_core.evaluation.metrics import analytic_flops
    from snapvit_core.export.model_card import model_card

    target = check_export_destination(directory, overwrite, force)
    size = int(data_config["input_size"][-1])
    check_images = torch.randn(CHECK_IMAGES, 3, size, size, generator=torch.Generator().manual_seed(0))
    tolerance = EXPORT_TOLERANCE if _device_of(model).type == "cpu" else EXPORT_TOLERANCE_ACCELERATOR
    if reference is None:
        source = model
        reference = lambda images: _embed_on(source, images)  # noqa: E731 - before the CPU copy below
    expected = reference(check_images).detach().float().cpu()
    model = copy.deepcopy(model).float().cpu().eval()  # the caller's model keeps its device and dtype
    heads, neurons = kept_widths(model)
    adapter = ViTAdapter(model)
    family = "hf" if architecture == HF_ARCHITECTURE else "timm"
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "architecture": TIMM_REFUSAL,  # what timm's local-dir loader reads: it cannot rebuild pruned widths
        "timm_architecture": None if family == "hf" else architecture,
        "family": family,
        "model_args": model_args,
        "num_classes": int(getattr(model, "num_classes", 0)),
        "pretrained_cfg": {k: (list(v) if isinstance(v, tuple) else v) for k, v in data_config.items()},
        "pruning": {
            **pruning,
            "kept_heads": heads,
            "kept_neurons": neurons,
            "head_dim": adapter.blocks[0].head_dim,
            "mlp_kind": adapter.blocks[0].mlp_kind,
        },
        "embedding": "load_pruned.embed(model, x)",
        "model_type": "snapvit",  # transformers: AutoModel.from_pretrained(folder, trust_remote_code=True)
        "architectures": ["SnapViTModel"],
        "auto_map": AUTO_MAP,
    }
    card_metrics = {
        **(metrics or {}),
        "params": sum(p.numel() for p in model.parameters()),
        "flops": analytic_flops(model),
    }
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = staging_folder(target)
    except OSError as error:
        raise SnapViTError(
            f"Cannot write in {target.parent}: {error.strerror or error}.", "Choose a writable folder."
        ) from error
    try:
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        for name in CARRIED_FILES:
            source = LOADER_SOURCE if name == "load_pruned.py" else LOADER_PATH.with_name(name).read_text("utf-8")
            (staging / name).write_text(source, encoding="utf-8")
        card = model_card(config, card_metrics, getattr(scores, "metadata", None), target.name)
        (staging / "README.md").write_text(card, encoding="utf-8")
        report = ExportReport(target, [], sum(p.numel() for p in model.parameters()), heads, neurons)
        report.latency = (metrics or {}).get("latency")
        report.knn = (metrics or {}).get("knn")
        report.linear = (metrics or {}).get("linear")
        if scores is not None:
            from snapvit_core.scoring.scores_io import save_scores

            save_scores(scores, staging / "scores.safetensors")
        verify_export(staging, plan, check_images, expected, tolerance)
        if onnx:
            report.onnx_max_abs_diff = export_onnx(model, staging / "model.onnx", size)
            if report.onnx_max_abs_diff > ONNX_TOLERANCE:
                raise SnapViTError(
                    f"The ONNX model differs from PyTorch by {report.onnx_max_abs_diff:.2e} (> {ONNX_TOLERANCE}).",
                    "Export without ONNX; the safetensors export is exact.",
                )
        finish_folder(staging)  # umask modes, flushed to disk
        swap_folder_into_place(staging, target)  # one complete export at the destination at every instant
    except (OSError, SafetensorError) as error:  # full disk, read-only mount, permissions
        shutil.rmtree(staging, ignore_errors=True)
        detail = getattr(error, "strerror", None) or str(error)[:200]
        raise SnapViTError(
            f"Could not write the export to {target}: {detail}.", "Check that the folder is writable and has space."
        ) from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report.files = sorted(p.name for p in target.iterdir())
    return report


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _embed_on(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``model``'s embedding of CPU ``images``, computed on the model's device, returned on the CPU."""
    dtype = next(model.parameters()).dtype
    with torch.inference_mode():
        return ViTAdapter(model).embed(images.to(_device_of(model), dtype)).float().cpu()


def verify_export(
    folder: Path, plan, images: torch.Tensor, expected: torch.Tensor, tolerance: float = EXPORT_TOLERANCE
) -> None:
    """Refuse an export folder that is not the model asked for: widths from the plan, embeddings from the library.

    ``folder`` is loaded back as a user would (:func:`load_pruned`); its per-block kept heads and MLP
    neurons must equal ``plan``'s and its embedding of ``images`` must equal ``expected`` within
    ``tolerance`` (relative to the largest expected value when that exceeds 1).
    """
    loaded = load_pruned(folder)
    heads, neurons = kept_widths(loaded)
    if heads != list(plan.kept_heads) or neurons != list(plan.kept_neurons):
        raise SnapViTError(
            f"The export's weights are not the configuration asked for: kept heads {heads} and MLP neurons "
            f"{neurons} per block, the plan {list(plan.kept_heads)} and {list(plan.kept_neurons)}. "
            "Nothing was written.",
            "This is a bug in SnapViT Explorer; please report it with the command you ran.",
        )
    actual = _embed_on(loaded, images)
    scale = max(1.0, float(expected.abs().max()))
    difference = float((actual - expected).abs().max()) / scale if actual.shape == expected.shape else float("inf")
    if not difference <= tolerance:
        raise SnapViTError(
            f"The export's embedding differs from the library's pruned model at this configuration by "
            f"{difference:.2e} (allowed {tolerance:.0e}). Nothing was written.",
            "This is a bug in SnapViT Explorer; please report it with the command you ran.",
        )


def load_pruned(directory: str | Path) -> nn.Module:
    """Load an export with this library (same steps as the standalone load_pruned.py)."""
    import timm
    from safetensors.torch import load_file
    from timm.models.vision_transformer import VisionTransformer

    from snapvit_core.engine.hf_vit import HFVisionBackbone
    from snapvit_core.export.load_pruned import (
        MAX_CONFIG_BYTES,
        ExportError,
        check_config,
        check_weights,
        weight_shapes,
    )
    from snapvit_core.files.guards import check_regular, read_bounded

    path = Path(directory).expanduser()
    config_path, weights = path / "config.json", path / "model.safetensors"
    if not (config_path.exists() or config_path.is_symlink()):
        raise SnapViTError(f"{path} has no config.json.", "Point at a folder written by the export.")
    # Checked before anything is built, as the export's own loaders do: config.json read bounded from a regular
    # file, its values bounded, and its architecture (built on the meta device) equal to the weights' header.
    raw = read_bounded(config_path, MAX_CONFIG_BYTES, "the export's config", "Re-export the model.")
    check_regular(weights, 1 << 40, "the export's weights", "Re-export the model.")
    try:
        config = check_config(json.loads(raw.decode("utf-8")), config_path)
        check_weights(config, weight_shapes(weights), config_path, weights)
    except ExportError as error:
        raise SnapViTError(f"Could not load the export: {error}.", "Re-export the model.") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        detail = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise SnapViTError(f"{config_path} is not valid JSON ({detail}).", "Re-export the model.") from None
    try:
        pruning = config["pruning"]
        # format 1 exports before the transformers keys named the timm architecture "architecture"
        architecture = config["timm_architecture"] if "timm_architecture" in config else config["architecture"]
        if config.get("family") == "hf":
            import transformers

            spec = config["model_args"]
            settings = {k: v for k, v in spec["config"].items() if k != "model_type"}
            hf_config = transformers.AutoConfig.for_model(spec["model_type"], **settings)
            kwargs = {"add_pooling_layer": False} if spec["model_type"] == "vit" else {}
            hf_model = getattr(transformers, spec["model_class"])(hf_config, **kwargs)
            model = HFVisionBackbone(hf_model, int(spec["image_size"]))
        elif architecture:
            model = timm.create_model(architecture, pretrained=False, **config["model_args"])
        else:
            model = VisionTransformer(**config["model_args"])
        shrink_to_plan(model, pruning["kept_heads"], pruning["kept_neurons"])
        model.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
    except SnapViTError:
        raise
    except Exception as error:  # noqa: BLE001 - corrupt/mismatched files
        raise SnapViTError(
            f"Could not load the export in {path}: {error}".splitlines()[0], "Re-export the model."
        ) from None
    cfg = config.get("pretrained_cfg")
    model.pretrained_cfg = dict(cfg) if isinstance(cfg, dict) else {}
    return model.eval()
