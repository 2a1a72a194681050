"""Command line: ``python -m snapvit_core COMMAND ...`` (``--help`` on each command).

Each command lives in its own module exposing ``register(subparsers)``; errors a user can cause
exit with status 2 and one line on stderr. Any other exception (a bug, or a fault the library does
not anticipate) is the last resort: one line naming it, the traceback in a log file, status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence

from snapvit_core.cli import calibrate, evaluate, export, info, landscape, plan, score, search
from snapvit_core.errors import SnapViTError, printable
from snapvit_core.runtime import distributed

COMMANDS = (info, evaluate, plan, export, score, search, landscape, calibrate)


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
        sys.stderr.write(f"error: {error}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted; nothing was written.\n")
        return 130
    except Exception as error:  # noqa: BLE001 - the last resort: no traceback reaches the user
        log = _write_crash_log(error)
        where = f"; the traceback is in {log}" if log else ""
        sys.stderr.write(f"error: unexpected {_describe(error)}{where}. Please report it with that file.\n")
        return 2
    finally:
        distributed.shutdown()


def _describe(error: BaseException) -> str:
    """'TypeName: first line of the message', bounded (str() of arbitrary args could be huge)."""
    first = error.args[0] if error.args else ""
    text = first if isinstance(first, str) else ""
    text = printable(" ".join(text[:300].split())[:200])
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _write_crash_log(error: BaseException) -> str | None:
    """Write the traceback to a new file in the temp folder; its path, or None if it cannot be written."""
    try:
        fd, path = tempfile.mkstemp(prefix=f"snapvit-error-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"python -m snapvit_core {' '.join(sys.argv[1:])}\n\n")
            handle.write("".join(traceback.format_exception(type(error), error, error.__traceback__, limit=50)))
        return path
    except Exception:  # noqa: BLE001 - a full disk must not turn the report into a traceback
        return None
