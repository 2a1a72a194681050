"""Computing importance scores from images: the label-free SnapViT method and its baselines (DESIGN section 3).

``compute_scores`` runs one pass over the images and returns ``ImportanceScores``. The gradient methods
work on private copies of the caller's model (a frozen teacher and a student whose fc1 and qkv weights
take gradients), so the caller's model is never touched. Data-free methods delegate to ``data_free.py``.

Crops are drawn from an explicit ``torch.Generator`` seeded by ``ScoringConfig.seed``, one image at a
time, so the scores do not depend on ``batch_size`` splitting or on ``crop_micro_batch`` (up to float
round-off), and the same seed, data and device give identical scores on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from snapvit_core._version import __version__
from snapvit_core.data import ImageSet
from snapvit_core.engine.adapter import ViTAdapter, prepare_private_copy
from snapvit_core.engine.precision import autocast_context, autocast_dtype
from snapvit_core.errors import CancelledError, SnapViTError
from snapvit_core.runtime import distributed
from snapvit_core.scoring.config import (  # noqa: F401 (re-exported: the scoring API in one place)
    CROSS_ENTROPY,
    FISHER,
    GRADIENT_METHODS,
    LABEL_FREE,
    METHODS,
    SNIP,
    SQUARED_GRADIENTS,
    ScoringConfig,
)
from snapvit_core.scoring.crops import CropDataset, crop_generator, crop_workers, make_crops, sample_crop_box  # noqa: F401 (re-exported)
from snapvit_core.scoring.data_free import DATA_FREE_METHODS
from snapvit_core.scoring.scores import ImportanceScores

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, float, float], None]  # (fraction done, images per second, ETA seconds)
Autocast = Callable[[], contextlib.AbstractContextManager]  # a fresh autocast (or null) context per forward


def compute_scores(
    model: nn.Module,
    images: Sequence[Image.Image] | ImageSet | None,
    data_config: dict,
    config: ScoringConfig | None = None,
    labels: Sequence[int] | np.ndarray | None = None,
    device: str | torch.device = "cpu",
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    model_id: str | None = None,
    workers: int | None = None,
) -> ImportanceScores:
    """Importance scores of ``model``'s MLP neurons and attention heads.

    Args:
        model: a timm ViT; never modified (the gradient methods work on deep copies).
        images: RGB PIL images (or an ``ImageSet``); at most ``config.samples`` are used. Ignored, and
            may be None, for the data-free methods.
        data_config: the backbone's timm data config (``input_size``, ``mean``, ``std``, ``interpolation``).
        config: method and settings; default: the published SnapViT settings.
        labels: class indices for the cross-entropy methods; default: the ``ImageSet``'s labels.
        device: where the pass runs.
        progress: called after each batch with (fraction done, images per second, ETA in seconds).
        cancel: polled before each batch; returning True raises ``CancelledError``.
        model_id: the backbone id, recorded in the metadata.
        workers: crop-making processes (None: 0 on the CPU, up to 8 on CUDA); never changes the scores.

    Returns:
        Scores with metadata: method, config, samples, data, model_id, device, seconds, library_version.
    """
    config = config or ScoringConfig()
    start = time.perf_counter()
    source = images.name if isinstance(images, ImageSet) else ("images" if images is not None else None)
    if config.method in DATA_FREE_METHODS:
        scores, used, source = DATA_FREE_METHODS[config.method](model, config.seed), 0, None
    else:
        image_list, label_tensor = _select_inputs(model, images, labels, config)
        used = len(image_list)
        scores = _gradient_scores(
            model, image_list, label_tensor, data_config, config, device, progress, cancel, workers
        )
    metadata = {
        "method": config.method,
        "config": asdict(config),
        "samples": used,
        "data": source,
        "model_id": model_id,
        "device": str(device),
        "seconds": round(time.perf_counter() - start, 3),
        "library_version": __version__,
    }
    return ImportanceScores(scores.mlp, scores.heads, config.min_mlp_keep_ratio, config.min_head_keep_ratio, metadata)


def _select_inputs(
    model: nn.Module,
    images: Sequence[Image.Image] | ImageSet | None,
    labels: Sequence[int] | np.ndarray | None,
    config: ScoringConfig,
) -> tuple[Sequence[Image.Image], torch.Tensor | None]:
    """The first ``config.samples`` images, and their labels when the method needs them (checked)."""
    if isinstance(images, ImageSet):
        labels = images.labels if labels is None else labels
        images = images.images
    if not images:
        raise SnapViTError(
            f"The '{config.method}' method needs images, but none were given.",
            "Choose a data source with images (e.g. procedural), or a data-free method (lamp, magnitude, random).",
        )
    chosen = images[: config.samples]  # a list, or a LazyImages sequence that decodes one image at a time
    if len(chosen) < config.samples:
        logger.info("scoring on %d images (fewer than the %d samples asked for)", len(chosen), config.samples)
    if not config.needs_labels:
        return chosen, None
    classes = _num_classes(model)
    if classes == 0:
        raise SnapViTError(
            f"The '{config.method}' method needs a classification head, but this backbone has none.",
            "Use the label-free 'snapvit' (or 'snip-magnitude-dino') method, or a backbone with a head.",
        )
    if labels is None:
        raise SnapViTError(
            f"The '{config.method}' method needs class labels, but the images have none.",
            "Use labelled data (folder:PATH with class sub-folders, hf:NAME, embedded) or the label-free 'snapvit'.",
        )
    label_tensor = torch.as_tensor(np.asarray(labels)[: len(chosen)], dtype=torch.long)
    if label_tensor.numel() != len(chosen):
        raise SnapViTError(f"Got {label_tensor.numel()} labels for {len(chosen)} images.", "Pass one label per image.")
    if label_tensor.min() < 0 or label_tensor.max() >= classes:
        raise SnapViTError(
            f"Labels range over [{int(label_tensor.min())}, {int(label_tensor.max())}] but the head has {classes} "
            "classes.",
            "The data's classes must be the ones the head was trained on; otherwise use the label-free 'snapvit'.",
        )
    return chosen, label_tensor


def _num_classes(model: nn.Module) -> int:
    head = getattr(model, "head", None)
    if head is None or isinstance(head, nn.Identity):
        return 0
    return int(getattr(model, "num_classes", 0) or 0)


# ---------------------------------------------------------------------------------------------
# Losses: each returns one loss term per crop; their sum over a batch, divided by the number of
# images, is the batch loss, so micro-batches of crops can be backpropagated separately.


def _embedding_distribution(adapter: ViTAdapter, crops: torch.Tensor, log: bool, autocast: Autocast) -> torch.Tensor:
    """(N, 3, S, S) -> (N, D) softmax (or log-softmax) over the L2-normalised embedding, temperature 1."""
    with autocast():
        embedding = adapter.embed(crops)
    embedding = F.normalize(embedding.float(), dim=-1)
    return F.log_softmax(embedding, dim=-1) if log else F.softmax(embedding, dim=-1)


def _label_free_targets(
    teacher: ViTAdapter, crops: torch.Tensor, config: ScoringConfig, micro: int, autocast: Autocast
) -> torch.Tensor:
    """(N * V, D) summed teacher distributions every student crop is compared with.

    Student view s of image i is compared with every teacher view t != s, so its target is
    sum_t p_t minus p_s when s is itself a teacher (global) view.
    """
    views, globals_ = config.crops_per_image, config.global_crops
    teacher_crops = crops.unflatten(0, (-1, views))[:, :globals_].flatten(0, 1)  # (N * G, 3, S, S)
    with torch.no_grad():
        chunks = teacher_crops.split(micro)
        probs = torch.cat([_embedding_distribution(teacher, chunk, False, autocast) for chunk in chunks])
    probs = probs.unflatten(0, (-1, globals_))  # (N, G, D)
    targets = probs.sum(dim=1, keepdim=True).repeat(1, views, 1)  # (N, V, D)
    targets[:, :globals_] -= probs
    return targets.flatten(0, 1)


def _label_free_loss(
    student: ViTAdapter, crops: torch.Tensor, targets: torch.Tensor, autocast: Autocast
) -> torch.Tensor:
    """Per crop: sum over its teacher views of the cross-entropy -sum(p_t * log p_s)."""
    return -(targets * _embedding_distribution(student, crops, True, autocast)).sum(dim=-1)


def _cross_entropy_loss(
    student: ViTAdapter, crops: torch.Tensor, targets: torch.Tensor, views: int, autocast: Autocast
) -> torch.Tensor:
    """Per crop: classification cross-entropy / views, so an image's loss is the mean over its crops."""
    with autocast():
        logits = student.model(crops)
    return F.cross_entropy(logits.float(), targets, reduction="none") / views


# ---------------------------------------------------------------------------------------------
# The pass and the reduction to unit scores


def _gradient_scores(
    model: nn.Module,
    images: Sequence[Image.Image],
    labels: torch.Tensor | None,
    data_config: dict,
    config: ScoringConfig,
    device: str | torch.device,
    progress: ProgressCallback | None,
    cancel: Callable[[], bool] | None,
    workers: int | None = None,
) -> ImportanceScores:
    """One pass over ``images`` (this process's shard of them under torchrun), then the reduction.

    Accumulated mode computes sum_i w_i grad L_i with w_i = 1 / (size of image i's batch of
    ``config.batch_size``), which is the sum over batches of the batch-mean gradient, whatever order,
    grouping or process computed each term; per-image mode sums each image's reduced scores. Under a
    process group the partial sums are all-reduced before the (non-linear) reduction, so every rank
    returns the single-process scores.

    Speed (the backward dominates, then the forward linears, the teacher's deep copy and crop resizing; the
    profile is in results/code_choices.md): the teacher is the student itself. Gradients only accumulate
    (no optimiser step), so the student's weights stay those of the model and its detached distributions
    on the global crops *are* the teacher's; whole images go into one forward (``micro // views``
    images), and the global crops' rows of that forward give the targets of every crop of those images.
    This drops the teacher's forward (2 of every 12 crops) and its copy of the model. When a micro-batch
    cannot hold one image's crops, a separate no-grad forward of the global crops gives the targets (same
    values).
    """
    objective, reduction = GRADIENT_METHODS[config.method]
    _check_input_size(model, data_config)
    device = torch.device(device)
    dtype = autocast_dtype(config.precision, device)

    def autocast() -> contextlib.AbstractContextManager:
        return autocast_context(dtype, device)

    student = ViTAdapter(_private_copy(model, device))
    for block in student.blocks:  # only the scored weights take gradients
        block.fc1.weight.requires_grad_(True)
        block.qkv.weight.requires_grad_(True)
    label_free = objective == LABEL_FREE
    views, total = config.crops_per_image, len(images)
    per_image = config.squared_gradients == "per-image"
    micro = config.micro_batch(student.shape().num_tokens)  # crops per forward
    whole_images = micro >= views  # one forward holds every crop of an image
    # images per forward/backward (and per progress/cancel step): whole images; the per-image batch
    # weights make any grouping compute the same sum, so a forward may span batches
    group = 1 if per_image else max(1, micro // views)
    shard = distributed.shard_range(total)
    mlp_sum, heads_sum = 0.0, 0.0  # running sums of per-image unit scores (per-image only)
    start = time.perf_counter()
    loader = DataLoader(  # crops are made in `workers` processes (on CUDA, PIL resizing is the bottleneck)
        CropDataset(images, data_config, config, shard),
        batch_size=group,
        num_workers=crop_workers(workers, device),
        pin_memory=device.type == "cuda",
    )
    with distributed.shared_failures():  # a damaged image in one rank's shard fails every rank alike
        for first_index, crops in loader:  # (n,), (n, V, 3, S, S)
            if cancel is not None and cancel():
                raise CancelledError("scoring")
            indices = range(int(first_index[0]), int(first_index[-1]) + 1)
            crops = crops.flatten(0, 1).to(device, non_blocking=True)  # (n * V, 3, S, S), image-major
            weights = (torch.ones(len(indices)) if per_image else _batch_weights(indices, total, config.batch_size)).to(
                device
            )
            crop_weights = weights.repeat_interleave(views)  # (n * V,)
            if label_free and whole_images:
                with autocast():
                    embedding = student.embed(crops)
                normalized = F.normalize(embedding.float(), dim=-1)  # (n * V, D)
                targets = _targets_from_teacher_probs(F.softmax(normalized.detach(), dim=-1), config)
                log_probs = F.log_softmax(normalized, dim=-1)
                ((-(targets * log_probs).sum(dim=-1)) * crop_weights).sum().backward()
            else:
                if label_free:
                    targets = _label_free_targets(student, crops, config, micro, autocast)
                else:
                    targets = labels[list(indices)].repeat_interleave(views).to(device)  # (n * V,)
                for chunk in range(0, len(crops), micro):
                    part = slice(chunk, chunk + micro)
                    if label_free:
                        terms = _label_free_loss(student, crops[part], targets[part], autocast)
                    else:
                        terms = _cross_entropy_loss(student, crops[part], targets[part], views, autocast)
                    (terms * crop_weights[part]).sum().backward()
            if per_image:  # group is one image: its gradient, squared and reduced
                mlp, heads = _reduce(student, reduction, config.snip_alpha)
                mlp_sum, heads_sum = mlp_sum + mlp, heads_sum + heads  # stays on the device: no sync per image
                student.model.zero_grad(set_to_none=True)
            if progress is not None:
                done, elapsed = (indices.stop - shard.start) * total / max(len(shard), 1), time.perf_counter() - start
                rate = done / max(elapsed, 1e-9)
                progress(done / total, rate, (total - done) / rate)
    if per_image:
        mlp_sum, heads_sum = _zeros_if_empty(student, mlp_sum, heads_sum, device)
        distributed.all_reduce_sum(mlp_sum)
        distributed.all_reduce_sum(heads_sum)
        return ImportanceScores((mlp_sum / total).cpu(), (heads_sum / total).cpu())
    for block in student.blocks:  # the accumulated gradients of every rank, summed before squaring
        for weight in (block.fc1.weight, block.qkv.weight):
            if weight.grad is None:  # a rank with no images (more processes than images)
                weight.grad = torch.zeros_like(weight)
            distributed.all_reduce_sum(weight.grad)
    mlp, heads = _reduce(student, reduction, config.snip_alpha)
    return ImportanceScores(mlp.cpu(), heads.cpu())


def _batch_weights(indices: range, total: int, batch_size: int) -> torch.Tensor:
    """(n,) 1 / size of each image's batch: the batch-mean weights of a pass in batches of ``batch_size``."""
    index = torch.arange(indices.start, indices.stop)
    batch_start = index // batch_size * batch_size
    return 1.0 / (torch.clamp(batch_start + batch_size, max=total) - batch_start).float()


def _targets_from_teacher_probs(probs: torch.Tensor, config: ScoringConfig) -> torch.Tensor:
    """(n * V, D) crop distributions -> (n * V, D) summed teacher targets (see ``_label_free_targets``)."""
    views, globals_ = config.crops_per_image, config.global_crops
    teacher = probs.unflatten(0, (-1, views))[:, :globals_]  # (n, G, D)
    targets = teacher.sum(dim=1, keepdim=True).repeat(1, views, 1)  # (n, V, D)
    targets[:, :globals_] -= teacher
    return targets.flatten(0, 1)


def _zeros_if_empty(student: ViTAdapter, mlp, heads, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image sums as tensors; zeros of the right shape on a rank that scored no image."""
    if isinstance(mlp, torch.Tensor):
        return mlp, heads
    shape = student.shape()
    return (
        torch.zeros(shape.num_blocks, shape.mlp_hidden, device=device),
        torch.zeros(shape.num_blocks, shape.num_heads, device=device),
    )


def _check_input_size(model: nn.Module, data_config: dict) -> None:
    """Refuse a data config whose input size the model cannot take (timm would raise a bare assertion)."""
    size = int(data_config["input_size"][-1])
    expected = ViTAdapter(model).shape().image_size
    if size != expected and not getattr(model.patch_embed, "dynamic_img_size", False):
        raise SnapViTError(
            f"The data config's input size {size} px does not match the model's {expected} px.",
            "Pass the backbone's own data config (Backbone.data_config).",
        )


def _private_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A frozen eval-mode deep copy on ``device`` with no gradients carried over."""
    copied = copy.deepcopy(model).to(device).eval().requires_grad_(False)
    for parameter in copied.parameters():
        parameter.grad = None
    prepare_private_copy(copied)  # faster kernels where it runs; the same scores to round-off
    return copied


def _reduce(student: ViTAdapter, reduction: str, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's current gradients -> (B, M) neuron and (B, H) head scores, on the student's device.

    fisher: neuron = mean over its fc1 row of grad^2; head = mean over its value rows of grad^2.
    snip: s = |grad * w| + alpha * w^2; neuron = mean over its fc1 row of s; head = mean over its value
    rows of s^2 (DESIGN: "heads: squared, on the value rows").
    """
    mlp, heads = [], []
    for block in student.blocks:
        rows = student.value_rows(block)
        fc1 = block.fc1.weight[: block.mlp_hidden]  # (M, D); the value half of a packed GLU
        fc1_grad = block.fc1.weight.grad[: block.mlp_hidden]
        values, values_grad = block.qkv.weight[rows], block.qkv.weight.grad[rows]  # (H * d, D)
        if reduction == FISHER:
            neuron, head = fc1_grad.pow(2), values_grad.pow(2)
        else:
            neuron = (fc1_grad * fc1).abs() + alpha * fc1.pow(2)
            head = ((values_grad * values).abs() + alpha * values.pow(2)).pow(2)
        mlp.append(neuron.detach().float().mean(dim=1))
        heads.append(head.detach().float().reshape(block.num_heads, -1).mean(dim=1))  # (H, d * D) per head
    return torch.stack(mlp), torch.stack(heads)
