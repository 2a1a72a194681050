"""DINO self-distillation of the embedded ViT (``train_embedded.py --objective dino``): no labels.

A student ViT and an EMA teacher of the same architecture (no class head: ``num_classes=0``) each feed
their pre-logits CLS feature to a DINO projection head (3-layer MLP -> L2-normalised bottleneck ->
weight-normalised prototypes). Every train glyph gives 2 global crops (24 px, random resized crop)
and ``local_crops`` smaller crops (12 px: 2 x 2 patches + CLS, with the position embedding
resampled), each with its own colour jitter. The glyph is placed once per image (size, position,
tilt) and every view composites that same ink onto its OWN fresh cluttered background
(``render_digits`` of an empty glyph: gradient, blobs, distractors, noise) in its own ink colour.
Crops of one rendered scene share its background and distractors, and a first version trained that
way learned those: teacher kNN stayed at chance (11-13 %, as a random-init ViT). Fully independent
renderings per view (fresh placement too) share nothing low-level to bootstrap from and also stayed
at chance within 5 epochs. Labels are never read. The teacher sees the global crops only; its outputs are centred
(running mean, momentum ``center_momentum``) and sharpened (``teacher_temp``); the loss is the
cross-entropy between each teacher view and every other student view (DINO, Caron et al. 2021).
The shipped model is the teacher backbone: the kNN embedding is its pre-logits CLS feature.

Everything random comes from ``torch.manual_seed(seed)`` (initialisation) and one
``torch.Generator`` seeded with ``seed`` (renderings, batch order, crops, jitter), so a run is
bit-reproducible for a given seed, torch build and thread count.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from snapvit_core import embedded


@dataclass(frozen=True)
class DinoConfig:
    """DINO settings (recorded verbatim in the asset JSON)."""

    seed: int = 0  # torch.manual_seed and the augmentation generator seed
    epochs: int = 6  # each epoch = one pass over the 1257 train glyphs (limited by the shared CPU, see README)
    batch_size: int = 64  # images per step
    lr: float = 1e-3  # AdamW peak learning rate (student backbone and head)
    min_lr: float = 1e-5  # cosine schedule floor
    warmup_epochs: int = 1  # linear warm-up from 0
    weight_decay: float = 0.05  # AdamW decay on matrices only
    grad_clip: float = 3.0  # max global gradient norm (DINO: 3.0)
    curriculum_epochs: int = 3  # clutter ramps linearly from 0 to RENDER.clutter over these first epochs
    out_dim: int = 256  # prototypes of the projection head
    hidden_dim: int = 256  # projection MLP width
    bottleneck_dim: int = 64  # L2-normalised bottleneck before the prototypes
    local_crops: int = 4  # small crops per image (besides the 2 global ones)
    local_size: int = 12  # local crop side in px (2 x 2 patches of 6 px)
    global_scale: tuple[float, float] = (0.4, 1.0)  # area fraction of a global crop
    local_scale: tuple[float, float] = (0.1, 0.4)  # area fraction of a local crop
    student_temp: float = 0.1  # student softmax temperature
    teacher_temp: float = 0.04  # teacher softmax temperature (sharpening)
    center_momentum: float = 0.9  # running mean of the teacher outputs (centering)
    ema_momentum: float = 0.99  # teacher EMA momentum at the start, cosine-increased to 1.0
    koleo_weight: float = 0.1  # KoLeo spreading term on the student's CLS features (DINOv2); 0 = plain DINO
    freeze_last_layer_epochs: int = 1  # prototypes fixed in the first epoch(s) (DINO)
    threads: int = 1  # torch.set_num_threads (1: on a shared 2-core machine 2 threads ran 20x slower)


class DinoHead(nn.Module):
    """Projection head: MLP -> L2-normalised bottleneck -> prototypes with unit-norm rows (weight norm, g = 1)."""

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        self.prototypes = nn.Parameter(torch.randn(out_dim, bottleneck_dim) * bottleneck_dim**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.mlp(x), dim=-1)  # (N, bottleneck)
        return F.linear(z, F.normalize(self.prototypes, dim=-1))  # (N, out_dim) cosine logits


def embed_views(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, D) pre-logits CLS features of normalised views at the model's size or smaller.

    Smaller views (the local crops) reuse the model's modules with the (1 + G*G)-token position
    embedding resampled to the smaller patch grid, so the shipped architecture stays a fixed-size ViT.
    """
    size = model.patch_embed.img_size[0]
    if x.shape[-1] == size:
        return model.forward_head(model.forward_features(x), pre_logits=True)
    n, patch = x.shape[0], model.patch_embed.patch_size[0]
    grid, full = x.shape[-1] // patch, size // patch
    tokens = model.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (N, g*g, D)
    dim = tokens.shape[-1]
    pos_cls, pos_patch = model.pos_embed[:, :1], model.pos_embed[:, 1:]  # (1, 1, D), (1, G*G, D)
    pos_patch = pos_patch.reshape(1, full, full, dim).permute(0, 3, 1, 2)  # (1, D, G, G)
    pos_patch = F.interpolate(pos_patch, size=(grid, grid), mode="bilinear", align_corners=False)
    pos_patch = pos_patch.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)  # (1, g*g, D)
    cls = model.cls_token.expand(n, -1, -1) + pos_cls
    h = torch.cat([cls, tokens + pos_patch], dim=1)  # (N, 1 + g*g, D)
    h = model.norm(model.blocks(model.norm_pre(h)))
    return model.fc_norm(h[:, 0])


def random_resized_crops(
    images: torch.Tensor, g: torch.Generator, size: int, scale: tuple[float, float]
) -> torch.Tensor:
    """(N, 3, S, S) float images -> (N, 3, size, size): one random box per image (area fraction in
    ``scale``, aspect ratio log-uniform in [3/4, 4/3]), bilinearly resampled."""
    n = images.shape[0]
    area = scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=g)
    log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * torch.rand(n, generator=g)
    width = (area * log_ratio.exp()).sqrt().clamp(max=1.0)  # box side / image side
    height = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    centre = (torch.rand(n, 2, generator=g) * 2 - 1) * torch.stack([1 - width, 1 - height], 1)  # box inside
    zero = torch.zeros(n)
    theta = torch.stack(
        [torch.stack([width, zero, centre[:, 0]], 1), torch.stack([zero, height, centre[:, 1]], 1)], 1
    )  # (N, 2, 3): output [-1, 1] -> input box
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def colour_jitter(views: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Per-view brightness, contrast, channel shuffle (p 0.5) and greyscale (p 0.2) on [0, 1] images, so that
    two crops of one scene cannot be matched by their colours alone."""
    n = views.shape[0]
    brightness = 0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=g)
    contrast = 0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=g)
    mean = views.mean(dim=(1, 2, 3), keepdim=True)
    views = ((views - mean) * contrast + mean) * brightness
    permutation = torch.argsort(torch.rand(n, 3, generator=g), dim=1)  # (N, 3) a random channel order each
    shuffle = torch.rand(n, generator=g) < 0.5
    shuffled = torch.gather(views, 1, permutation[:, :, None, None].expand_as(views))
    views = torch.where(shuffle[:, None, None, None], shuffled, views)
    grey = torch.rand(n, generator=g) < 0.2
    views = torch.where(grey[:, None, None, None], views.mean(dim=1, keepdim=True).expand_as(views), views)
    return views.clamp(0.0, 1.0)


def multi_crop(
    glyphs: torch.Tensor | np.ndarray,
    g: torch.Generator,
    cfg: DinoConfig,
    config: dict,
    render: embedded.RenderConfig = embedded.RENDER,
) -> list[torch.Tensor]:
    """(N, 8, 8) glyphs -> [2 global (N, 3, 24, 24), ``local_crops`` local (N, 3, 12, 12)] model inputs:
    the same placed ink on a fresh background per view (``embedded._place_glyphs``, ``render_digits``)."""
    full = render.image_size
    specs = [(full, cfg.global_scale)] * 2 + [(cfg.local_size, cfg.local_scale)] * cfg.local_crops
    preprocessing = config["preprocessing"]
    mean = torch.tensor(preprocessing["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing["std"]).view(1, 3, 1, 1)
    glyphs = torch.as_tensor(np.asarray(glyphs), dtype=torch.float32)
    n = glyphs.shape[0]
    ink = embedded._place_glyphs((glyphs / 16.0).clamp(0.0, 1.0)[:, None], g, render)  # (N, 1, S, S), shared
    empty = torch.zeros_like(glyphs)
    views = []
    for size, scale in specs:
        background = embedded.render_digits(empty, g, render).float() / 255.0  # (N, 3, S, S) fresh clutter
        dark = render.dark_range[0] + (render.dark_range[1] - render.dark_range[0]) * torch.rand(
            n, 3, 1, 1, generator=g
        )
        grey = dark.mean(dim=1, keepdim=True)
        colour = grey + render.saturation * (dark - grey)  # muted dark ink, as render_digits paints it
        scene = background * (1 - ink) + colour * ink
        views.append((colour_jitter(random_resized_crops(scene, g, size, scale), g) - mean) / std)
    return views


def dino_loss(
    student: list[torch.Tensor],
    teacher: list[torch.Tensor],
    center: torch.Tensor,
    cfg: DinoConfig,
) -> torch.Tensor:
    """Mean over (teacher global view t, student view s != t) of the batch-mean cross-entropy."""
    targets = [F.softmax((t - center) / cfg.teacher_temp, dim=-1) for t in teacher]
    log_probs = [F.log_softmax(s / cfg.student_temp, dim=-1) for s in student]
    terms = [(-p * lp).sum(-1).mean() for i, p in enumerate(targets) for j, lp in enumerate(log_probs) if i != j]
    return torch.stack(terms).mean()


def koleo_loss(features: torch.Tensor) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimate (DINOv2): -mean log distance of each L2-normalised feature to
    its nearest neighbour in the batch. Without it the tiny-data, short-schedule runs collapsed: kNN at chance."""
    x = F.normalize(features, dim=-1)
    similarity = x @ x.T  # (N, N)
    similarity.fill_diagonal_(-2.0)  # never its own neighbour
    nearest = similarity.argmax(dim=1)
    distance = (x - x[nearest]).norm(dim=-1)
    return -torch.log(distance + 1e-8).mean()


def _schedule(step: int, total: int, warmup: int, peak: float, floor: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_dino(
    cfg: DinoConfig,
    architecture: dict,
    asset_config: dict,
    param_groups,
    log_every: int = 5,
    max_steps: int | None = None,
    monitor=None,
) -> nn.Module:
    """Train a fresh student / teacher pair; returns the teacher backbone in eval mode.

    ``param_groups(module, weight_decay)`` splits parameters into decayed / undecayed groups;
    ``max_steps`` stops early (for quick reproducibility tests; the schedules still span ``epochs``);
    ``monitor(epoch, teacher)`` is called after every epoch (diagnostics; must not draw random numbers).
    """
    torch.manual_seed(cfg.seed)
    student = embedded.build_embedded_architecture({**asset_config, "architecture": architecture})
    width = architecture["embed_dim"]
    student_head = DinoHead(width, cfg.hidden_dim, cfg.bottleneck_dim, cfg.out_dim)
    teacher, teacher_head = copy.deepcopy(student), copy.deepcopy(student_head)
    for module in (teacher, teacher_head):
        module.requires_grad_(False)
    glyphs, _ = embedded.load_digit_glyphs("train")  # labels are never read
    glyphs = torch.from_numpy(glyphs)
    augment = torch.Generator().manual_seed(cfg.seed)  # renderings, batch order, crops, jitter
    student_params = nn.ModuleList([student, student_head])
    optimizer = torch.optim.AdamW(param_groups(student_params, cfg.weight_decay), lr=cfg.lr)
    count = len(glyphs)
    steps_per_epoch = math.ceil(count / cfg.batch_size)
    total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    center = torch.zeros(1, cfg.out_dim)
    student_pairs = list(zip(student_params.parameters(), nn.ModuleList([teacher, teacher_head]).parameters()))
    step, start = 0, time.perf_counter()
    for epoch in range(cfg.epochs):
        student_params.train()
        ramp = min(1.0, epoch / cfg.curriculum_epochs) if cfg.curriculum_epochs else 1.0
        render = dataclasses.replace(embedded.RENDER, clutter=embedded.RENDER.clutter * ramp)
        order = torch.randperm(count, generator=augment)
        loss_sum = 0.0
        for batch in order.split(cfg.batch_size):
            for group in optimizer.param_groups:
                group["lr"] = _schedule(step, total, warmup, cfg.lr, cfg.min_lr)
            views = multi_crop(glyphs[batch], augment, cfg, asset_config, render)
            with torch.no_grad():
                teacher_out = [teacher_head(embed_views(teacher, v)) for v in views[:2]]
            student_features = [embed_views(student, v) for v in views]  # (B, D) CLS per view
            student_out = [student_head(f) for f in student_features]
            loss = dino_loss(student_out, teacher_out, center, cfg)
            if cfg.koleo_weight:
                loss = loss + cfg.koleo_weight * sum(koleo_loss(f) for f in student_features[:2]) / 2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if epoch < cfg.freeze_last_layer_epochs:
                student_head.prototypes.grad = None
            torch.nn.utils.clip_grad_norm_(student_params.parameters(), cfg.grad_clip)
            optimizer.step()
            with torch.no_grad():
                momentum = 1.0 - (1.0 - cfg.ema_momentum) * (math.cos(math.pi * step / total) + 1) / 2
                for p_student, p_teacher in student_pairs:
                    p_teacher.mul_(momentum).add_(p_student.detach(), alpha=1.0 - momentum)
                batch_center = torch.cat(teacher_out).mean(dim=0, keepdim=True)
                center = center * cfg.center_momentum + batch_center * (1 - cfg.center_momentum)
            loss_sum += float(loss.detach()) * len(batch)
            step += 1
            if max_steps is not None and step >= max_steps:
                return teacher.eval()
        if monitor is not None:
            monitor(epoch, teacher)
        if (epoch + 1) % log_every == 0 or epoch + 1 == cfg.epochs:
            print(
                f"epoch {epoch + 1:4d}/{cfg.epochs}  dino loss {loss_sum / count:.3f}  "
                f"centre norm {float(center.norm()):.3f}  {time.perf_counter() - start:6.1f}s",
                flush=True,
            )
    return teacher.eval()
