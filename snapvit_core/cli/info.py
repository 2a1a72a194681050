"""``info``: the backbone's shape, parameters and FLOPs."""

from __future__ import annotations

import argparse

from snapvit_core.cli._common import add_json_argument, add_model_arguments, emit, resolve_device
from snapvit_core.engine.backbones import load_backbone
from snapvit_core.evaluation.metrics import analytic_flops, count_parameters


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="show a backbone's architecture, parameters and FLOPs")
    add_model_arguments(parser)
    add_json_argument(parser)
    parser.set_defaults(run=run)


def describe(model_id: str, random_init: bool = False, device: str = "cpu") -> dict:
    backbone = load_backbone(model_id, random_init, device)
    shape = backbone.shape
    return {
        "model": backbone.model_id,
        "random_init": random_init,
        "num_blocks": shape.num_blocks,
        "num_heads": shape.num_heads,
        "head_dim": shape.head_dim,
        "embed_dim": shape.embed_dim,
        "mlp_hidden": shape.mlp_hidden,
        "mlp_kind": shape.mlp_kind,
        "num_tokens": shape.num_tokens,
        "image_size": backbone.image_size,
        "params": count_parameters(backbone.model),
        "flops": analytic_flops(backbone.model),
    }


def run(args: argparse.Namespace) -> int:
    payload = describe(args.model, args.random_init, resolve_device(args.device))
    lines = [
        f"model        {payload['model']}" + ("  (random init)" if args.random_init else ""),
        f"blocks       {payload['num_blocks']} x {payload['num_heads']} heads of width {payload['head_dim']}",
        f"embed width  {payload['embed_dim']}",
        f"MLP hidden   {payload['mlp_hidden']} ({payload['mlp_kind']})",
        f"tokens       {payload['num_tokens']} at {payload['image_size']} px",
        f"parameters   {payload['params']:,}",
        f"FLOPs/image  {payload['flops'] / 1e9:.3f} GFLOPs",
    ]
    emit(payload, args.json, lines)
    return 0
