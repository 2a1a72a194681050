"""Loading a backbone by model id: ``embedded``, a timm name, a local checkpoint directory, or
``hf:REPO_OR_PATH`` for a Hugging Face transformers ViT / DINOv2 (see ``hf_vit.py``).

Hub weights are only ever read from the local Hugging Face cache unless the hub answers a quick
connection probe; an offline machine without cached weights gets an immediate, clear error with
the pre-download command instead of a minute of retries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from snapvit_core.engine.adapter import ArchitectureShape, ViTAdapter
from snapvit_core.errors import SnapViTError
from snapvit_core.files.guards import check_regular, read_bounded
from snapvit_core.presets import BACKBONE_PRESETS, EMBEDDED_MODEL_ID, EMBEDDED_MODEL_IDS, REMOVED_MODEL_IDS

log = logging.getLogger(__name__)

EMBEDDED_ID = EMBEDDED_MODEL_ID  # the earlier name, kept importable
MAX_CONFIG_BYTES = 1 << 20  # a config.json is a few KB
MAX_WEIGHTS_BYTES = 1 << 40  # model.safetensors: a regular file (mapped, not read whole); ViT-22B is 88 GB
HF_PREFIX = "hf:"  # hf:REPO_OR_PATH: a transformers vision model from the local cache or a saved directory


@dataclass
class Backbone:
    """A loaded backbone in eval mode, with what is needed to feed it images."""

    model: nn.Module
    model_id: str  # what the user asked for: 'embedded', a timm name or a directory
    data_config: dict = field(default_factory=dict)  # timm data config: input_size, mean, std ...
    random_init: bool = False  # weights are random (architecture only)

    @property
    def shape(self) -> ArchitectureShape:
        return ViTAdapter(self.model).shape()

    @property
    def image_size(self) -> int:
        return int(self.data_config.get("input_size", (3, self.shape.image_size, 0))[1])


def describe_model_ids() -> str:
    """One line listing what ``--model`` accepts, for help texts and errors."""
    presets = ", ".join(v for v in BACKBONE_PRESETS.values())
    return (
        f"'embedded', a preset ({presets}), any timm ViT name, a local checkpoint directory, "
        "or hf:REPO_OR_PATH for a transformers ViT / DINOv2"
    )


def load_backbone(model_id: str, random_init: bool = False, device: str | torch.device = "cpu") -> Backbone:
    """Load a backbone (eval mode, gradients off) by id.

    Args:
        model_id: 'embedded', a timm model name (optionally with a pretrained tag), a directory
            holding a timm-style ``config.json`` plus ``model.safetensors`` (or a transformers
            ``save_pretrained`` directory), or ``hf:REPO_OR_PATH`` (transformers ViT / DINOv2 from
            the local Hugging Face cache, the hub, or a saved directory).
        random_init: build the architecture only, without loading weights (timing and tests).
        device: where to put the model.
    """
    model_id = (model_id or "").strip()
    if not model_id:
        raise SnapViTError("No model id given.", f"Use {describe_model_ids()}.")
    if model_id in REMOVED_MODEL_IDS:
        raise SnapViTError(
            f"'{model_id}' is no longer shipped: {REMOVED_MODEL_IDS[model_id]}.", f"Use {describe_model_ids()}."
        )
    if model_id in EMBEDDED_MODEL_IDS:
        backbone = _load_embedded(model_id, random_init)
    elif model_id.startswith(HF_PREFIX):
        backbone = _load_hf(model_id[len(HF_PREFIX) :].strip(), random_init)
    elif Path(model_id).expanduser().is_dir():
        backbone = _load_directory(Path(model_id).expanduser(), random_init)
    elif os.sep in model_id or model_id.startswith("."):
        raise SnapViTError(
            f"Checkpoint directory '{model_id}' does not exist.",
            "Check the path, or use a timm model name / 'embedded'.",
        )
    else:
        backbone = _load_timm(model_id, random_init)
    ViTAdapter(backbone.model)  # refuses non-ViTs with a clear message
    backbone.model.eval().requires_grad_(False).to(device)
    return backbone


def _load_embedded(model_id: str, random_init: bool) -> Backbone:
    from snapvit_core.engine import embedded  # deferred: the asset read is only needed for these ids

    if random_init:
        model = embedded.build_embedded_architecture(model_id=model_id)
    else:
        model = embedded.load_embedded_model(model_id)
    return Backbone(model, model_id, backbone_data_config(model), random_init)


def backbone_data_config(model: nn.Module) -> dict:
    """How images are fed to a timm ``model``: its pretrained config's mean, std, interpolation and crop,
    at the size the model itself takes.

    timm resolves ``input_size`` from the pretrained config (224 px for ``vit_*_224``) even when the
    model was built with another ``img_size`` (e.g. ``model_args.img_size: 32`` in a checkpoint folder's
    config.json); such a model refuses 224 px images. Every command reads ``Backbone.data_config``,
    which comes from here (transformers models: ``hf_vit.hf_data_config``).
    """
    from timm.data import resolve_data_config

    config = dict(resolve_data_config({}, model=model))
    patch_embed = getattr(model, "patch_embed", None)
    size = getattr(patch_embed, "img_size", None)
    if size is not None and not getattr(patch_embed, "dynamic_img_size", False):
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        config["input_size"] = (int(config["input_size"][0]), int(height), int(width))
    return config


def _timm_name_known(name: str) -> bool:
    import timm

    architecture = name.split(".", 1)[0]
    return architecture in timm.list_models() or name in timm.list_models(pretrained=True)


def _load_timm(name: str, random_init: bool) -> Backbone:
    import timm

    if not _timm_name_known(name):
        raise SnapViTError(
            f"Unknown model id '{name}': not a timm model, not a directory.",
            f"Use {describe_model_ids()}.",
        )
    cached = False if random_init else _ensure_weights_available(name)
    try:
        with _hub_offline(cached):
            model = timm.create_model(name, pretrained=not random_init)
    except SnapViTError:
        raise
    except Exception as error:  # hub and checkpoint errors come in many types
        raise SnapViTError(
            f"Could not load the weights of '{name}': {type(error).__name__}: {error}",
            _predownload_hint(name),
        ) from error
    return Backbone(model, name, backbone_data_config(model), random_init)


def _hub_id(name: str) -> str | None:
    import timm

    try:
        config = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - an unknown tag simply has no hub id
        return None
    return getattr(config, "hf_hub_id", None) if config is not None else None


def _predownload_hint(name: str) -> str:
    hub_id = _hub_id(name) or name
    return (
        "Pre-download on a machine with network access: "
        f"`python -c \"import timm; timm.create_model('{name}', pretrained=True)\"` "
        f"(or `hf download {hub_id}`), then copy the Hugging Face cache (~/.cache/huggingface) to "
        "this machine; or pass --random-init to use the architecture without weights."
    )


def weights_cached(name: str) -> bool:
    """Whether the pretrained weights of timm model ``name`` are in the local Hugging Face cache (no network)."""
    hub_id = _hub_id(name)
    return hub_id is not None and _in_local_cache(hub_id)


def _in_local_cache(hub_id: str) -> bool:
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(hub_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - any miss means "not cached"
        return False
    return True


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """A quick TCP probe of the hub endpoint (the hub client itself retries for about a minute)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    host = urllib.parse.urlparse(constants.ENDPOINT).hostname or ""
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline(enabled: bool) -> Iterator[None]:
    """Make the hub client read only its cache (it otherwise re-checks online and retries)."""
    if not enabled:
        yield
        return
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def _ensure_weights_available(name: str) -> bool:
    """True if the weights are cached locally; raises if they are neither cached nor reachable."""
    hub_id = _hub_id(name)
    if hub_id is None:
        return False
    if _in_local_cache(hub_id):
        return True
    if not _hub_reachable():
        raise SnapViTError(
            f"The weights of '{name}' are not in the local Hugging Face cache ({hub_id}) and the hub "
            "cannot be reached from this machine.",
            _predownload_hint(name),
        )
    return False


def _load_directory(path: Path, random_init: bool) -> Backbone:
    """A timm-style checkpoint folder: config.json (with 'architecture') + model.safetensors."""
    import timm
    from safetensors.torch import load_file

    config_path = path / "config.json"
    if not config_path.is_file():
        raise SnapViTError(
            f"Directory '{path}' has no config.json.",
            "A checkpoint directory needs a timm config.json (with 'architecture') and model.safetensors, "
            "as written by timm's push_to_hf_hub/save_for_hf or by `python -m snapvit_core export`.",
        )
    raw = read_bounded(config_path, MAX_CONFIG_BYTES, "the checkpoint config", "Fix or re-create the file.")
    try:
        config = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise SnapViTError(f"{config_path} is not valid JSON ({error}).", "Fix or re-create the file.") from error
    architecture = config.get("architecture") if isinstance(config, dict) else None
    if architecture is None and isinstance(config, dict) and "model_type" in config:
        return _load_hf_directory(path, f"{HF_PREFIX}{path}", random_init)  # a transformers save_pretrained dir
    if not isinstance(architecture, str) or not _timm_name_known(architecture):
        raise SnapViTError(
            f"{config_path} names no known timm architecture (got {architecture!r}).",
            "Set 'architecture' to a timm ViT name such as vit_small_patch16_224.",
        )
    kwargs = check_model_args(config.get("model_args", {}), config_path)
    if "num_classes" in config:
        kwargs.setdefault(
            "num_classes", check_model_args({"num_classes": config["num_classes"]}, config_path)["num_classes"]
        )
    pretrained_cfg = config.get("pretrained_cfg")
    if pretrained_cfg is not None and not isinstance(pretrained_cfg, dict):
        raise SnapViTError(
            f"{config_path}: 'pretrained_cfg' must be an object, got {_short(pretrained_cfg)}.", _FIX_CONFIG
        )
    try:
        model = timm.create_model(architecture, pretrained=False, pretrained_cfg_overlay=pretrained_cfg, **kwargs)
    except Exception as error:  # noqa: BLE001 - values timm rejects (e.g. embed_dim not divisible by num_heads)
        raise SnapViTError(
            f"{config_path}: timm cannot build {architecture} from its model_args: "
            f"{type(error).__name__}: {_short(str(error))}",
            _FIX_CONFIG,
        ) from error
    if not random_init:
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise SnapViTError(f"Directory '{path}' has no model.safetensors.", "Add the weights file.")
        check_regular(weights, MAX_WEIGHTS_BYTES, "the checkpoint weights", "Add the weights file.")
        try:
            state = load_file(str(weights))
            model.load_state_dict(state, strict=True)
        except Exception as error:  # corrupt file or mismatched architecture
            raise SnapViTError(
                f"Could not load {weights}: {error}".splitlines()[0],
                "The weights must match config.json's architecture; re-export the checkpoint.",
            ) from error
    return Backbone(model, str(path), backbone_data_config(model), random_init)


_FIX_CONFIG = "Fix config.json (or re-export the checkpoint with `python -m snapvit_core export`)."
# model_args a checkpoint directory may never set: weights come only from its own model.safetensors,
# and the model is built on CPU in float32.
_REFUSED_MODEL_ARGS = frozenset(
    {"pretrained", "checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "pretrained_strict",
     "features_only", "cache_dir", "device", "dtype"}
)  # fmt: skip
# Upper bounds on size arguments (ViT-22B: depth 48, embed_dim 6144, 48 heads): beyond them a typo
# or a hostile config would allocate a model larger than memory.
_MODEL_ARG_LIMITS = {
    "depth": 256, "num_heads": 256, "embed_dim": 16384, "img_size": 4096, "patch_size": 1024, "in_chans": 64,
    "num_classes": 1_000_000, "reg_tokens": 1024, "mlp_ratio": 64,
}  # fmt: skip
_POSITIVE_MODEL_ARGS = frozenset({"depth", "num_heads", "embed_dim", "img_size", "patch_size", "in_chans", "mlp_ratio"})


def _short(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return " ".join(text[:200].split())[:120]


def check_model_args(model_args: object, where: str | os.PathLike) -> dict:
    """``model_args`` of a checkpoint directory's config.json, checked against timm's VisionTransformer.

    Only constructor arguments of ``VisionTransformer`` with JSON values of the default's type and
    sizes within ``_MODEL_ARG_LIMITS`` pass; loading arguments (``checkpoint_path``, ``pretrained``,
    ``device`` ...) are refused, never passed through.
    """
    import inspect

    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model_args, dict):
        raise SnapViTError(f"{where}: 'model_args' must be an object, got {_short(model_args)}.", _FIX_CONFIG)
    parameters = inspect.signature(VisionTransformer.__init__).parameters
    checked = {}
    for key, value in model_args.items():
        if key in _REFUSED_MODEL_ARGS:
            raise SnapViTError(
                f"{where}: model_args sets '{key}', which a checkpoint directory may not set "
                "(its weights come only from the model.safetensors next to it).",
                f"Remove '{key}' from config.json.",
            )
        parameter = parameters.get(key) if isinstance(key, str) and key != "self" else None
        if parameter is None:
            raise SnapViTError(f"{where}: unknown model argument {_short(key)}.", _FIX_CONFIG)
        _check_model_arg(key, value, parameter.default, where)
        checked[key] = value
    return checked


def _check_model_arg(key: str, value: object, default: object, where: str | os.PathLike) -> None:
    def refuse(expected: str) -> SnapViTError:
        return SnapViTError(f"{where}: model_args '{key}' is {_short(value)}, expected {expected}.", _FIX_CONFIG)

    if callable(default):  # a class (block_fn, mlp_layer ...): not something a JSON file can name
        raise SnapViTError(f"{where}: model_args may not set '{key}'.", f"Remove '{key}' from config.json.")
    values = value if key in ("img_size", "patch_size") and isinstance(value, list) and len(value) == 2 else [value]
    for item in values:
        if isinstance(default, bool) and not isinstance(item, bool):
            raise refuse("true or false")
        if isinstance(default, int) and not isinstance(default, bool) and (type(item) is not int):
            raise refuse("an integer")
        if isinstance(default, float) and (isinstance(item, bool) or not isinstance(item, (int, float))):
            raise refuse("a number")
        if isinstance(default, str) and not isinstance(item, str):
            raise refuse("a string")
        if default is None and not (item is None or isinstance(item, (str, int, float, bool))):
            raise refuse("a string, a number, true/false or null")
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            low = 1 if key in _POSITIVE_MODEL_ARGS else 0
            if not (low <= item <= _MODEL_ARG_LIMITS.get(key, float("inf"))) or item != item:
                raise refuse(f"a value in [{low}, {_MODEL_ARG_LIMITS.get(key, 'inf')}]")


def _load_hf(reference: str, random_init: bool) -> Backbone:
    """``hf:REPO_OR_PATH``: a saved transformers directory, or a hub repo read from the local cache."""
    if not reference:
        raise SnapViTError("Empty transformers model id 'hf:'.", "Use hf:ORG/NAME (a hub repo) or hf:/path/to/saved.")
    path = Path(reference).expanduser()
    if path.is_dir():
        return _load_hf_directory(path, f"{HF_PREFIX}{reference}", random_init)
    if reference.startswith((".", os.sep, "~")) or reference.count("/") > 1:
        raise SnapViTError(
            f"Directory '{reference}' does not exist.",
            "Use hf:ORG/NAME for a hub repo or hf:/path/to/dir for a directory written by save_pretrained.",
        )
    return _load_hf_directory(_hf_snapshot(reference, random_init), f"{HF_PREFIX}{reference}", random_init)


def _load_hf_directory(path: Path, model_id: str, random_init: bool) -> Backbone:
    from snapvit_core.engine.hf_vit import build_hf_backbone

    model, data_config = build_hf_backbone(path, random_init)
    return Backbone(model, model_id, data_config, random_init)


def _hf_predownload_hint(repo: str) -> str:
    return (
        "Pre-download on a machine with network access: "
        f"`huggingface-cli download {repo}` (or `hf download {repo}`, or "
        f"`python -c \"from huggingface_hub import snapshot_download; snapshot_download('{repo}')\"`), "
        "then copy the Hugging Face cache (~/.cache/huggingface) to this machine; or save the model with "
        "save_pretrained and pass hf:/path/to/that/directory."
    )


def _hf_snapshot(repo: str, random_init: bool) -> Path:
    """The local snapshot directory of hub repo ``repo``; downloads only if it is not cached and the hub answers."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json"] if random_init else ["*.json", "*.safetensors"]
    try:
        return Path(snapshot_download(repo, local_files_only=True, allow_patterns=patterns))
    except Exception:  # noqa: BLE001 - any miss means "not cached"
        pass
    if not _hub_reachable():
        raise SnapViTError(
            f"The transformers model '{repo}' is not in the local Hugging Face cache and the hub cannot be "
            "reached from this machine.",
            _hf_predownload_hint(repo),
        )
    try:
        return Path(snapshot_download(repo, allow_patterns=patterns))
    except Exception as error:  # unknown repo, gated repo, network errors
        raise SnapViTError(
            f"Could not download '{repo}' from the Hugging Face hub: {type(error).__name__}: {error}".splitlines()[0],
            _hf_predownload_hint(repo),
        ) from error
