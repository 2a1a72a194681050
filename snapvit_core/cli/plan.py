"""``plan``: per-block keep counts from a scores file alone (no model needed)."""

from __future__ import annotations

import argparse

from snapvit_core.cli import _common
from snapvit_core.engine.elastic import plan_pruning


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan", help="per-block kept heads / neurons at a sparsity, from a scores file (project or published)"
    )
    parser.add_argument("--scores", required=True, help="scores file (.safetensors, or a published SnapViT .pt)")
    _common.add_sparsity_arguments(parser)
    _common.add_align_argument(parser)
    parser.add_argument(
        "--device", default="cpu", help="the device the plan is for: what --align auto picks (default: cpu)"
    )
    _common.add_json_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from snapvit_core.scoring.scores_io import load_scores

    scores = load_scores(args.scores)
    plan = plan_pruning(scores, args.mlp_sparsity, args.head_sparsity, _common.align_from_args(args, args.device))
    payload = {"scores": args.scores, "shape": scores.shape_summary, **plan.to_dict()}
    lines = [
        f"scores   {args.scores} ({scores.shape_summary})",
        f"request  MLP sparsity {plan.mlp_sparsity:.3f}, head sparsity {plan.head_sparsity:.3f}",
        f"realised MLP sparsity {plan.realised_mlp_sparsity:.3f}, head sparsity {plan.realised_head_sparsity:.3f}"
        f" (MLP widths aligned to {plan.align})",
        "block  kept heads  kept neurons",
        *(f"{i:5d}  {h:10d}  {n:12d}" for i, (h, n) in enumerate(zip(plan.kept_heads, plan.kept_neurons))),
    ]
    _common.emit(payload, args.json, lines)
    return 0
