"""A benchmark's markdown report: printed, and written atomically to its file under results/ (or --out)."""

from __future__ import annotations

from pathlib import Path

from snapvit_core.files.atomic import write_text_atomic


def write_report(lines: list[str], out: str | Path) -> str:
    """Join ``lines`` into the report, print it, write it to ``out`` (its folder made if missing); returns it."""
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, text)
    return text
