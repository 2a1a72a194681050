"""``search``: correct a scores file's cross-block structure with xNES (label-free) and save the result."""

from __future__ import annotations

import argparse
import sys

from snapvit_core.cli import _common
from snapvit_core.data import DATA_SPEC_HELP
from snapvit_core.errors import SnapViTError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("search", help="learn per-block / per-head score multipliers with xNES")
    _common.add_model_arguments(parser)
    parser.add_argument("--data", default="embedded", help=f"images: {DATA_SPEC_HELP} (default: embedded)")
    parser.add_argument("--scores", required=True, help="base importance scores file (.safetensors or published .pt)")
    parser.add_argument(
        "--evaluations", type=_common.positive_int, default=50, help="fitness evaluations (default: 50, as published)"
    )
    parser.add_argument(
        "--pairs",
        nargs="+",
        default=None,
        metavar="MLP,HEAD",
        help="sparsity pairs the fitness averages (default: 0.15,0 0.35,0.2 0.55,0.4 0.65,0.5, as published)",
    )
    parser.add_argument(
        "--seed", type=_common.seed_value, default=0, help="seed of the image subset and the sampler (default: 0)"
    )
    parser.add_argument(
        "--covariance", default="cka", help="initial covariance: cka (published) or identity (default: cka)"
    )
    parser.add_argument(
        "--eval-images", type=_common.positive_int, default=1000, help="images per evaluation (default: 1000)"
    )
    parser.add_argument(
        "--population-size", type=_common.positive_int, default=None, help="candidates per generation (4 + 3 ln d)"
    )
    parser.add_argument("--checkpoint", default=None, help="checkpoint file written after every generation")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument(
        "--allow-other-backbone", action="store_true", help="search from --scores recorded for another backbone"
    )
    _common.add_precision_argument(parser)
    parser.add_argument("--out", required=True, help="scores file to write (.safetensors), replaced atomically")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr (shown by default)")
    _common.add_json_argument(parser)
    parser.set_defaults(run=run)


def parse_pairs(texts: list[str]) -> tuple[tuple[float, float], ...]:
    """``["0.15,0", "0.35,0.2"]`` -> ((0.15, 0.0), (0.35, 0.2)); ranges are checked by the library."""
    pairs = []
    for text in texts:
        parts = text.split(",")
        try:
            if len(parts) != 2:
                raise ValueError
            pairs.append((float(parts[0]), float(parts[1])))
        except ValueError:
            raise SnapViTError(
                f"--pairs: '{text}' is not an MLP,HEAD sparsity pair.", "Write pairs like 0.35,0.2 0.55,0.4"
            ) from None
    return tuple(pairs)


def _progress(done: int, total: int, best: float) -> None:
    """One stderr line per fitness evaluation (default; ``--quiet`` turns it off)."""
    sys.stderr.write(f"evaluation {done}/{total}  best fitness {best:.5f}\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    from snapvit_core.data import load_images, parse_data_spec, preprocess
    from snapvit_core.engine.backbones import load_backbone
    from snapvit_core.engine.precision import autocast_dtype
    from snapvit_core.presets import SEARCH_FITNESS_PAIRS
    from snapvit_core.runtime.distributed import broadcast_module, is_main
    from snapvit_core.scoring.scores import check_scores_backbone
    from snapvit_core.scoring.scores_io import load_scores, save_scores
    from snapvit_core.search.evolution import SearchConfig, run_search

    config = SearchConfig(
        evaluations=args.evaluations,
        eval_images=args.eval_images,
        covariance=args.covariance,
        pairs=parse_pairs(args.pairs) if args.pairs else SEARCH_FITNESS_PAIRS,
        seed=args.seed,
        population_size=args.population_size,
        precision=args.precision,
    )
    out = _common.scores_out_path(args.out)
    if args.resume and not args.checkpoint:
        raise SnapViTError("--resume needs --checkpoint FILE.", "Name the checkpoint of the interrupted search.")
    parse_data_spec(args.data)  # a typo fails before the model loads
    scores = load_scores(args.scores)
    # scores recorded for another backbone: refused, or a warning with --allow-other-backbone
    warning = check_scores_backbone(scores, args.model, args.allow_other_backbone)
    if warning:
        _common.warn(warning)
    device = _common.resolve_device(args.device)
    autocast_dtype(config.precision, device)  # bf16 where emulated: refused before loading
    backbone = load_backbone(args.model, args.random_init, device)
    broadcast_module(backbone.model)  # torchrun: every rank searches the same weights
    image_set = load_images(args.data, "train", limit=args.eval_images, seed=args.seed)
    images = preprocess(image_set.images, backbone.data_config)
    result = run_search(
        backbone.model,
        scores,
        images,
        config,
        device=device,
        progress=None if args.quiet else _progress,  # stderr, so --json output on stdout stays clean
        checkpoint_path=args.checkpoint,
        resume=args.resume,
        model_id=backbone.model_id,
    )
    scored = result.scores.with_metadata(random_init=backbone.random_init, data=args.data)
    path = save_scores(scored, out) if is_main() else out  # torchrun: rank 0 writes
    payload = {
        "out": str(path),
        "evaluations": result.evaluations,
        "best_fitness": result.best_fitness,
        "initial_fitness": result.initial_fitness,
        "seconds": result.seconds,
        "cka_seconds": result.cka_seconds,
        "multipliers": result.multipliers.tolist(),
        "precision": config.precision,
    }
    lines = [
        f"model        {backbone.model_id}" + (" (random init)" if backbone.random_init else ""),
        f"images       {image_set.describe()}",
        f"evaluations  {result.evaluations} ({config.covariance} covariance)",
        f"fitness      {result.initial_fitness:.5f} (initial mean) -> {result.best_fitness:.5f} (best)",
        f"seconds      {result.seconds:.1f} (CKA {result.cka_seconds:.1f})",
        f"scores       {result.scores.shape_summary} -> {path}",
    ]
    _common.emit(payload, args.json, lines)
    return 0
