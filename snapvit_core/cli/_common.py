"""Arguments and output helpers shared by the commands (model, scores, sparsity, correction, --out, JSON)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from snapvit_core.engine.backbones import describe_model_ids, load_backbone
from snapvit_core.engine.devices import resolve_device
from snapvit_core.errors import SnapViTError, printable
from snapvit_core.explorer import Explorer
from snapvit_core.files.atomic import check_writable
from snapvit_core.scoring.data_free import DATA_FREE_METHODS, data_free_scores

MAX_BATCH = 4096  # images per forward pass: 4096 x 3 x 224 x 224 float32 is 2.5 GB
MAX_SEED = 2**32 - 1  # numpy's SeedSequence and torch.manual_seed both take [0, 2**32) everywhere


def seed_value(text: str) -> int:
    """argparse type of --seed: an integer in [0, 2**32)."""
    value = _int(text, "a seed")
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed {text} is outside 0 .. {MAX_SEED}")
    return value


def positive_int(text: str) -> int:
    """argparse type of counts such as --k, --latency-batch, --samples: an integer >= 1."""
    value = _int(text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer (use 1 or more)")
    return value


def batch_size(text: str) -> int:
    """argparse type of batch sizes (--latency-batch): 1 .. MAX_BATCH, so a typo cannot ask for 600 GB of images."""
    value = positive_int(text)
    if value > MAX_BATCH:
        raise argparse.ArgumentTypeError(f"{text} is larger than the largest batch, {MAX_BATCH}")
    return value


def _int(text: str, what: str) -> int:
    digits = text.strip()
    if len(digits) > 40 or not digits.lstrip("+-").isdigit():
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not {what}")
    return int(digits)


def warn(message: str) -> None:
    """One ``warning: ...`` line on stderr for the person running the command.

    Part of the command line's own output, like its ``error:`` line and progress bars, so it reaches the
    user whatever the logging level (``logging`` carries the library's messages, shown with --verbose).
    """
    sys.stderr.write(f"warning: {printable(message)}\n")


def capped_k(k: int, bank_size: int) -> int:
    """The k kNN really uses (at most the bank size); warns when it is smaller than asked."""
    if k > bank_size:
        warn(f"--k {k} is larger than the kNN bank ({bank_size} images); using k={bank_size}.")
    return min(k, bank_size)


def add_knn_arguments(parser: argparse.ArgumentParser, *, k_help: str, limit_help: str) -> None:
    """--k, --weighted-vote and --limit of the kNN that attach_knn_from_args builds."""
    from snapvit_core.evaluation.knn import DEFAULT_K

    parser.add_argument("--k", type=positive_int, default=DEFAULT_K, help=k_help)
    parser.add_argument("--weighted-vote", action="store_true", help="DINO's weighted vote (T=0.07) instead of uniform")
    parser.add_argument("--limit", type=positive_int, default=None, help=limit_help)


def add_latency_arguments(
    parser: argparse.ArgumentParser, *, modes: tuple[str, str], batch_help: str, latency_help: str, table_help: str
) -> None:
    """--latency-batch, --latency (one of ``modes``, the first by default) and --latency-table."""
    parser.add_argument("--latency-batch", type=batch_size, default=32, help=batch_help)
    parser.add_argument("--latency", choices=modes, default=modes[0], help=latency_help)
    parser.add_argument("--latency-table", default=None, help=table_help)


def attach_knn_from_args(explorer: Explorer, args: argparse.Namespace) -> None:
    """Attach the kNN of --data (at most --limit images per split), --k (capped at the bank) and --weighted-vote."""
    from snapvit_core.data import load_knn_splits
    from snapvit_core.evaluation.features import KnnEvaluator

    splits = load_knn_splits(args.data, explorer.backbone.data_config, limit_per_split=args.limit, stream=True)
    args.k = capped_k(args.k, len(splits.train_labels))  # say so when k exceeds the bank
    explorer.attach_knn(KnnEvaluator.from_splits(splits, k=args.k, weighted=args.weighted_vote, device=explorer.device))


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="embedded", help=f"model id: {describe_model_ids()} (default: embedded)")
    parser.add_argument(
        "--random-init", action="store_true", help="build the architecture without loading weights (timing, tests)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    # Checked by the library (precision.autocast_dtype) so an unknown or unsupported value gets its message.
    parser.add_argument(
        "--precision",
        default="auto",
        help="auto (bf16 autocast on CUDA, fp32 on the CPU), fp32, or bf16 (also on a CPU with native bf16: "
        "about 2x faster there, results differ at bf16 round-off) (default: auto)",
    )


def add_sparsity_arguments(parser: argparse.ArgumentParser) -> None:
    # Parsed as text and checked by the library, so a bad value gets the library's clear message.
    parser.add_argument("--mlp-sparsity", required=True, help="fraction of MLP neurons removed, in [0, 1)")
    parser.add_argument("--head-sparsity", required=True, help="fraction of attention heads removed, in [0, 1)")


def add_align_argument(parser: argparse.ArgumentParser) -> None:
    # Checked by the library (elastic.check_align) so a bad value gets its message.
    parser.add_argument(
        "--align",
        default="auto",
        help="round each block's kept MLP neurons to a multiple of N (1 = the published rule exactly); "
        "auto = the measured default for --device (README 'Width alignment') (default: auto)",
    )


def align_from_args(args: argparse.Namespace, device: str) -> int:
    """The --align value as an int (``auto`` resolved for ``device``)."""
    from snapvit_core.engine.elastic import check_align

    return check_align(getattr(args, "align", 1), device)


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def add_linear_arguments(parser: argparse.ArgumentParser) -> None:
    """--linear-epochs / --linear-lr of the linear probe (DINOv1 linear evaluation; linear_probe.py)."""
    from snapvit_core.evaluation.linear_probe import DEFAULT_EPOCHS

    group = parser.add_argument_group("linear probe (the 'linear' metric: DINOv1 linear evaluation on frozen features)")
    group.add_argument(
        "--linear-epochs", type=positive_int, default=DEFAULT_EPOCHS, help=f"epochs (default: {DEFAULT_EPOCHS})"
    )
    group.add_argument("--linear-lr", type=float, default=None, help="peak lr (default: 0.001 x batch / 256, DINO's)")


def linear_probe_from_args(args: argparse.Namespace):
    """The LinearProbe settings of --linear-epochs / --linear-lr (validated: a bad value is one clear line)."""
    from snapvit_core.evaluation.linear_probe import LinearProbe

    return LinearProbe(epochs=args.linear_epochs, lr=args.linear_lr)


def add_correction_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("weight correction (SparseGPT-style, DESIGN section 6)")
    group.add_argument("--correct", action="store_true", help="correct fc2 and attn.proj of the pruned model")
    group.add_argument(
        "--correction-samples", type=positive_int, default=1000, help="calibration images (default: 1000)"
    )
    group.add_argument("--correction-data", default=None, help="calibration data source (default: --data)")
    group.add_argument("--damping", default="mean", help="mean (default), max or percentile")
    group.add_argument("--damping-fraction", type=float, default=0.01, help="damping fraction (default: 0.01)")


def correction_from_args(args: argparse.Namespace, data_config: dict) -> tuple | None:
    """(CorrectionConfig, calibration images) when --correct is given, else None."""
    if not args.correct:
        return None
    from snapvit_core.data import load_images, preprocess
    from snapvit_core.engine.correction import CorrectionConfig

    config = CorrectionConfig(
        samples=args.correction_samples, damping=args.damping, damping_fraction=args.damping_fraction
    )
    source = args.correction_data or getattr(args, "data", None) or "embedded"
    images = load_images(source, "train", limit=config.samples, seed=0)
    return config, preprocess(images.images, data_config)


def add_scores_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--scores", help="importance scores file (.safetensors, or a published SnapViT .pt)")
    source.add_argument(
        "--method",
        choices=sorted(DATA_FREE_METHODS),
        help="data-free scores to use when no --scores is given (default: magnitude)",
    )
    parser.add_argument("--seed", type=seed_value, default=0, help="seed of the random method (default: 0)")
    parser.add_argument(
        "--allow-other-backbone",
        action="store_true",
        help="use --scores recorded for another backbone (with a warning) instead of refusing them",
    )


def build_explorer(args: argparse.Namespace, device: str) -> Explorer:
    from snapvit_core.runtime.distributed import broadcast_module
    from snapvit_core.scoring.scores import check_scores_backbone
    from snapvit_core.scoring.scores_io import load_scores

    scores = load_scores(args.scores) if args.scores else None
    if scores is not None:  # refuse another backbone's scores (before the model loads) unless allowed
        warning = check_scores_backbone(scores, args.model, args.allow_other_backbone)
        if warning:
            warn(warning)
    backbone = load_backbone(args.model, args.random_init, device)
    broadcast_module(backbone.model)  # torchrun: every rank evaluates the same weights
    if scores is None:
        scores = data_free_scores(args.method or "magnitude", backbone.model, args.seed)
    return Explorer(backbone, scores, device, align_from_args(args, device))


def scores_out_path(value: str) -> Path:
    """``--out`` of a command that writes a scores file, checked before the (long) pass, not after it."""
    from snapvit_core.scoring.scores_io import SUFFIX

    out = Path(value)
    if out.suffix.lower() != SUFFIX:
        raise SnapViTError(
            f"--out {out}: a scores file name must end in {SUFFIX}.", f"Use e.g. {out.with_suffix(SUFFIX)}."
        )
    check_writable(out, "--out")  # a read-only folder or full disk fails now, not at the end
    return out


def emit(payload: dict, as_json: bool, lines: list[str]) -> None:
    """Print ``payload`` as JSON, or ``lines`` for people (names from files, e.g. a latency table's device,
    with their control characters escaped: a terminal never receives an escape sequence or a bidi override)."""
    if as_json:
        json.dump(payload, sys.stdout, indent=2)  # escapes control characters and non-ASCII itself
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n".join(printable(line) for line in lines) + "\n")


__all__ = [
    "batch_size",
    "capped_k",
    "positive_int",
    "seed_value",
    "add_align_argument",
    "add_correction_arguments",
    "add_linear_arguments",
    "linear_probe_from_args",
    "add_json_argument",
    "add_knn_arguments",
    "add_latency_arguments",
    "add_model_arguments",
    "add_scores_arguments",
    "add_sparsity_arguments",
    "align_from_args",
    "attach_knn_from_args",
    "build_explorer",
    "correction_from_args",
    "emit",
    "resolve_device",
    "scores_out_path",
]
