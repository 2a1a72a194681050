"""Text from links, files and users shown as literal text in elements that render Markdown.

Streamlit renders the text of ``st.warning``, ``st.error``, ``st.caption`` ... as Markdown (images,
links, LaTeX, coloured text, icons). A value that comes from a link, a file name or a file's content
goes through :func:`code` (a code span: nothing inside it is interpreted) or :func:`escape` (the
characters that start a link, image, tag, code span, formula or table cell backslash-escaped), and is
one line (control characters escaped) of bounded length either way.
"""

from __future__ import annotations

import re

from snapvit_core.errors import printable

MAX_CHARS = 120  # a value shown in a message; longer ones are cut, with an ellipsis
_MARKDOWN = re.compile(r"([\\`*\[\]<>!|~$&:])")


def _line(value: object, limit: int) -> str:
    text = printable(value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def escape(value: object, limit: int | None = None) -> str:
    """``value`` as Markdown text that shows exactly its characters (one line; cut to ``limit`` if given)."""
    text = printable(value) if limit is None else _line(value, limit)
    return _MARKDOWN.sub(r"\\\1", text)


def code(value: object, limit: int = MAX_CHARS) -> str:
    """``value`` as a Markdown code span (literal text), however many backticks it holds."""
    text = _line(value, limit)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"
