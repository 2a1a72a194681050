"""Command line: ``python -m snapvit_core COMMAND ...`` (``--help`` on each command).

Each command lives in its own module exposing ``register(subparsers)``; errors a user can cause
exit with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
from collections.abc import Sequence

from .. import distributed
from ..errors import SnapViTError
from . import evaluate, export, info, plan, score, search

COMMANDS = (info, evaluate, plan, export, score, search)


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (plus a pointer to --help)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="python -m snapvit_core",
        description="SnapViT Explorer: retraining-free elastic pruning of Vision Transformers.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        # torchrun: join the process group; only rank 0 prints (and, in the commands, writes files)
        distributed.init_from_env(getattr(args, "device", None))
        quiet = contextlib.redirect_stdout(io.StringIO()) if not distributed.is_main() else contextlib.nullcontext()
        with quiet:
            return int(args.run(args) or 0)
    except SnapViTError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written.", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()
