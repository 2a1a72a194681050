"""Train an embedded ViT on cluttered digits and write it to snapvit_core/assets/ (CPU).

Reproduce the shipped assets with::

    python scripts/train_embedded.py                     # "embedded": supervised, ~7 min on 2 cores

Every epoch draws a fresh rendering of each of the 1257 train digits (``render_digits`` with a
generator seeded from ``--seed``); the test digits are never seen. The backbone is trained with a
linear 10-way head and cross-entropy; the kNN embedding used by the app is the pre-logits CLS
feature. At the end the script measures kNN top-1 (k=20, train split = bank, test split =
queries) unpruned and after magnitude pruning, writes ``embedded_vit.safetensors`` and
``embedded_vit.json`` atomically, and prints the wall time. Results are bit-reproducible for a
given seed, thread count and torch build.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, no install

import timm  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from snapvit_core.engine import embedded  # noqa: E402
from snapvit_core.engine.elastic import ElasticViT  # noqa: E402
from snapvit_core.evaluation.knn import knn_top1  # noqa: E402
from snapvit_core.files.atomic import atomic_path, write_text_atomic  # noqa: E402
from snapvit_core.scoring.data_free import magnitude_scores  # noqa: E402

ARCHITECTURE = {
    "img_size": embedded.RENDER.image_size,  # 24 px images
    "patch_size": 6,  # 4 x 4 = 16 patch tokens + CLS: keeps a full-split forward well under 1 s
    "in_chans": 3,
    "num_classes": 10,  # the training head; kNN ignores it (pre_logits=True)
    "global_pool": "token",
    "class_token": True,
    "embed_dim": 96,
    "depth": 6,
    "num_heads": 6,  # head_dim 16
    "mlp_ratio": 4.0,  # 384 hidden GELU neurons per block
    "qkv_bias": True,
}
PRUNING_POINTS = ((0.35, 0.2), (0.65, 0.5))  # (MLP sparsity, head sparsity) reported in the JSON


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (recorded verbatim in the asset JSON)."""

    seed: int = 0  # torch.manual_seed and the augmentation generator seed
    epochs: int = 150  # each epoch = one fresh rendering of every train digit
    batch_size: int = 32  # images per step
    lr: float = 1e-3  # AdamW peak learning rate
    min_lr: float = 1e-5  # cosine schedule floor
    warmup_epochs: int = 5  # linear warm-up from 0
    weight_decay: float = 0.05  # AdamW decay on matrices only (not biases, norms, tokens)
    label_smoothing: float = 0.1  # cross-entropy label smoothing
    grad_clip: float = 1.0  # max global gradient norm
    curriculum_epochs: int = 40  # clutter ramps linearly from 0 to RENDER.clutter over these first epochs
    threads: int = 2  # torch.set_num_threads


def input_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, 3, S, S) images on the [0, 1] scale."""
    x = images.float() / 255.0
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).tolist()


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay weight matrices only; biases, LayerNorms, pos_embed and cls_token stay undecayed."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (decay if parameter.ndim >= 2 and "pos_embed" not in name and "cls_token" not in name else no_decay).append(
            parameter
        )
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, total: int, warmup: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine decay to ``min_lr``."""
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


@torch.inference_mode()
def embed(model: torch.nn.Module, images: torch.Tensor, config: dict, chunk: int = 512) -> torch.Tensor:
    """(N, D) pre-logits CLS embeddings of uint8 images, in fixed-size chunks."""
    model.eval()
    out = []
    for batch in images.split(chunk):
        x = embedded.normalize_images(batch, config)
        out.append(model.forward_head(model.forward_features(x), pre_logits=True))
    return torch.cat(out)


def knn_accuracy(model: torch.nn.Module, splits: dict, config: dict) -> float:
    """kNN top-1 (k=20): train split as the bank, test split as the queries."""
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    return knn_top1(embed(model, train_x, config), train_y, embed(model, test_x, config), test_y, k=20)


def train(
    cfg: TrainConfig, architecture: dict, asset_config: dict, log_every: int = 10, max_steps: int | None = None
) -> torch.nn.Module:
    """Train a fresh model; ``asset_config`` supplies the input normalisation. ``max_steps`` stops
    early (quick reproducibility tests; the schedule still spans ``cfg.epochs``)."""
    torch.manual_seed(cfg.seed)
    model = embedded.build_embedded_architecture({**asset_config, "architecture": architecture})
    glyphs, labels = embedded.load_digit_glyphs("train")
    labels = torch.from_numpy(labels)
    augment = torch.Generator().manual_seed(cfg.seed)  # renderings and batch order
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    steps_per_epoch = math.ceil(len(labels) / cfg.batch_size)
    total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    step, start = 0, time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        # A fresh scene for every digit; plain scenes first, since a ViT trained from scratch
        # on full clutter sits at chance for hundreds of steps before it finds the digits.
        ramp = min(1.0, epoch / cfg.curriculum_epochs) if cfg.curriculum_epochs else 1.0
        render = dataclasses.replace(embedded.RENDER, clutter=embedded.RENDER.clutter * ramp)
        images = embedded.render_digits(glyphs, augment, render)
        order = torch.randperm(len(labels), generator=augment)
        loss_sum, correct = 0.0, 0
        for batch in order.split(cfg.batch_size):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, warmup, cfg)
            logits = model(embedded.normalize_images(images[batch], asset_config))
            loss = F.cross_entropy(logits, labels[batch], label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            loss_sum += float(loss.detach()) * len(batch)
            correct += int((logits.argmax(1) == labels[batch]).sum())
            step += 1
            if max_steps is not None and step >= max_steps:
                return model.eval()
        if (epoch + 1) % log_every == 0 or epoch + 1 == cfg.epochs:
            print(
                f"epoch {epoch + 1:4d}/{cfg.epochs}  loss {loss_sum / len(labels):.3f}  "
                f"train acc {correct / len(labels):.3f}  {time.perf_counter() - start:6.1f}s",
                flush=True,
            )
    return model.eval()


def pruned_accuracies(model: torch.nn.Module, splits: dict, config: dict) -> dict[str, float]:
    """kNN top-1 after magnitude pruning at each of ``PRUNING_POINTS``."""
    elastic = ElasticViT(model, magnitude_scores(model), model_name="the embedded ViT")
    return {
        f"mlp{mlp}_heads{heads}": knn_accuracy(elastic.prune_to(mlp, heads), splits, config)
        for mlp, heads in PRUNING_POINTS
    }


def time_forward(model: torch.nn.Module, splits: dict, config: dict, repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds to embed the whole train + test split."""
    images = torch.cat([splits["train"][0], splits["test"][0]])
    embed(model, images[:256], config)  # warm-up
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        embed(model, images, config)
        timings.append(time.perf_counter() - start)
    return min(timings)


def write_assets(model: torch.nn.Module, config: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write the weights and the JSON config of ``config["model_id"]`` atomically (temp file + rename)."""
    stem = embedded.EMBEDDED_ASSET_STEMS[config["model_id"]]
    weights_path = out_dir / f"{stem}.safetensors"
    config_path = out_dir / f"{stem}.json"
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(weights_path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "model_id": config["model_id"]})
    write_text_atomic(config_path, json.dumps(config, indent=2) + "\n")
    return weights_path, config_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="torch + augmentation seed")
    parser.add_argument("--out-dir", type=Path, default=embedded.ASSETS_DIR, help="where the assets go")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch CPU threads")
    parser.add_argument("--num-heads", type=int, default=ARCHITECTURE["num_heads"], help="heads per block")
    parser.add_argument("--mlp-ratio", type=float, default=ARCHITECTURE["mlp_ratio"], help="MLP width / embed width")
    return parser.parse_args(argv)


def training_setup(args: argparse.Namespace) -> tuple[TrainConfig, dict]:
    """(optimisation settings, VisionTransformer kwargs) for ``args``; the defaults are the shipped ones."""
    architecture = {**ARCHITECTURE, "num_heads": args.num_heads, "mlp_ratio": args.mlp_ratio}
    return TrainConfig(seed=args.seed, epochs=args.epochs, threads=args.threads), architecture


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg, architecture = training_setup(args)
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    wall_start = time.perf_counter()

    splits = {name: embedded.load_embedded_split(name) for name in embedded.SPLITS}
    mean, std = input_stats(splits["train"][0])
    config = {
        "format_version": 1,
        "model_id": embedded.EMBEDDED_MODEL_ID,
        "architecture": architecture,
        "preprocessing": {
            "input_size": [3, architecture["img_size"], architecture["img_size"]],
            "scale": "uint8 / 255, then (x - mean) / std",
            "mean": [round(v, 4) for v in mean],
            "std": [round(v, 4) for v in std],
            "interpolation": "bilinear",
            "crop_pct": 1.0,
        },
        "embedding": "model.forward_head(model.forward_features(x), pre_logits=True): CLS after the final norm",
        "dataset": {
            "name": "cluttered sklearn digits",
            "source": "sklearn.datasets.load_digits (1797 8x8 glyphs, 10 classes, bundled, offline)",
            "split": (
                f"train_test_split(range(1797), test_size={embedded.SPLIT_TEST_SIZE}, stratify=labels, "
                f"random_state={embedded.SPLIT_RANDOM_STATE})"
            ),
            "sizes": {name: int(len(splits[name][1])) for name in embedded.SPLITS},
            "render_seeds": embedded.SPLIT_RENDER_SEEDS,
            "render": embedded.render_config_dict(),
            "class_names": list(embedded.EMBEDDED_CLASS_NAMES),
            "training_augmentation": "a fresh render_digits scene of every train digit each epoch",
        },
        "training": {
            **asdict(cfg),
            "objective": "supervised",
            "optimizer": "AdamW",
            "loss": "cross-entropy on the 10-way head",
        },
    }

    print(f"Training {architecture} on {config['dataset']['sizes']} images, {cfg}", flush=True)
    train_start = time.perf_counter()
    model = train(cfg, architecture, config)
    train_seconds = time.perf_counter() - train_start

    unpruned = knn_accuracy(model, splits, config)
    pruned = pruned_accuracies(model, splits, config)
    forward_seconds = time_forward(model, splits, config)
    config["metrics"] = {
        "knn_k": 20,
        "knn_top1_unpruned": round(unpruned, 4),
        "knn_top1_magnitude": {key: round(value, 4) for key, value in pruned.items()},
        "train_seconds": round(train_seconds, 1),
        "forward_full_split_seconds": round(forward_seconds, 3),
        "threads": cfg.threads,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
    }
    weights_path, config_path = write_assets(model, config, args.out_dir)

    size_mb = (weights_path.stat().st_size + config_path.stat().st_size) / 1e6
    print(f"kNN top-1 unpruned: {unpruned:.4f}")
    for (mlp, heads), value in zip(PRUNING_POINTS, pruned.values()):
        print(f"kNN top-1 magnitude-pruned (MLP {mlp}, heads {heads}): {value:.4f}  (drop {unpruned - value:+.4f})")
    print(f"forward of all {sum(len(s[1]) for s in splits.values())} images: {forward_seconds:.3f}s")
    print(f"wrote {weights_path} and {config_path} ({size_mb:.2f} MB)")
    print(f"training {train_seconds:.1f}s, wall time {time.perf_counter() - wall_start:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
