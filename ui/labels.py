"""How the app writes numbers: short card values (units go in the labels), budget targets, FLOPs units.

Card values stay short (about 8 characters) so a metric card is never truncated at 800 px.
"""

from __future__ import annotations

# Budget targets: label -> (table column the library's budget search and sweep use).
BUDGET_TARGETS: dict[str, str] = {
    "FLOPs (% of unpruned)": "flops_pct",
    "Latency (ms at batch 1, predicted)": "latency_ms",
    "Parameters (millions)": "params_m",
}


def format_flops(flops: float) -> str:
    """FLOPs per image in the unit that keeps 3 significant digits readable (M below 1 G)."""
    return f"{flops / 1e9:.2f} GFLOPs" if flops >= 1e9 else f"{flops / 1e6:.1f} MFLOPs"


def flops_unit(flops: float) -> tuple[float, str]:
    """(value, unit) for a FLOPs card: 'GFLOPs' from 1e9 on, else 'MFLOPs'."""
    return (flops / 1e9, "GFLOPs") if flops >= 1e9 else (flops / 1e6, "MFLOPs")


def short_number(value: float) -> str:
    """Three significant digits, no unit: 23.6, 0.512, 1.43."""
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def speedup_text(speedup: float) -> str:
    """'1.00 x' (two decimals: the unpruned plan reads exactly 1.00 x)."""
    return f"{speedup:.2f} x"


def sparsity_text(value: float) -> str:
    """'0.35' on the slider grid, '0.475' for a finer budget answer (never rounded away)."""
    text = f"{value:.3f}"
    return text[:-1] if text.endswith("0") else text


CARD_WIDTH = 170  # px: four cards fit in a row at 1400 px, two per row at 800 px (the row wraps)


def card_row():
    """A horizontal, wrapping container for metric cards (``st.columns`` would squeeze and cut them)."""
    import streamlit as st

    return st.container(horizontal=True, wrap=True, gap="small")


def card(row, *args, **kwargs) -> None:
    """One metric card of fixed width in a ``card_row``."""
    row.metric(*args, width=CARD_WIDTH, **kwargs)
