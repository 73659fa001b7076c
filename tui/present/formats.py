"""Every number format the command line and the explorer print, one function per kind of number, and
the explorer's title line.

A kind of number reads the same on every screen and in every command, so two numbers side by side
compare at a glance: an exact count `2,159`; an estimated or squeezed count `34.6k`; a firing rate
`0.0365`; a share of a layer `71%` / `0.8%`; an activation or score `+2.66` / `+2.60` / `14.0` / `15.6`
(three significant digits, trailing zeros kept, so a column's decimals line up); a rank `#34609` /
`#123k`. Each formatter has a bounded width where a column needs one, and no formatter ever cuts a
digit: a number too wide for its column is abbreviated here, never truncated by a table.

The explorer writes an unknown value as "–"; the command line's tables as "-" (ASCII, for scripts that
cut columns), so the formatters that can meet one take the placeholder.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.text import Text

if TYPE_CHECKING:
    from ..viewmodel import SummaryInfo

MISSING = "–"  # an unknown value in the explorer
CLI_MISSING = "-"  # ... and in the command line's tables
RANK_WIDTH = 6  # the widest rank_text: "#99999", "#999k", "#1.2M"


def count_text(value: int | None, missing: str = MISSING) -> str:
    """An exact count: every digit, thousands separated (`2,159`)."""
    return missing if value is None else f"{int(value):,}"


def fmt_count(value: float) -> str:
    """A count in at most 6 cells: exact below 10,000 (`2,159`), then thousands (`34.6k`) and millions
    (`1.23M`) with 3 significant digits (estimates have no more)."""
    if value >= 999_500:
        return f"{value / 1e6:.3g}M"
    if value >= 1e4:
        return f"{value / 1e3:.3g}k"
    return f"{value:,.0f}"


def fmt_rate(rate: float) -> str:
    """A firing rate (firings / tokens): three significant digits, trailing zeros kept (`0.900`,
    `1.00`), 0 as "0"."""
    return "0" if rate == 0 else f"{rate:#.3g}"


def share_text(frac: float) -> str:
    """A share (of a layer's neurons, of its detectors): whole percents from 10%, one decimal below,
    `<0.1%` for a share that is not 0 but would print as 0.0%."""
    if frac == 0:
        return "0%"
    if frac < 0.0005:
        return "<0.1%"
    return f"{100 * frac:.0f}%" if frac >= 0.095 else f"{100 * frac:.1f}%"


def value_text(value: float | None, signed: bool = False, missing: str = MISSING) -> str:
    """An activation h or an update score: three significant digits with trailing zeros kept (`2.60`,
    `14.0`, `0.0571`), whole numbers from 1,000; `signed` writes + before positive values."""
    if value is None or not math.isfinite(value):
        return missing
    size = abs(value)
    if size >= 999.5:
        text = f"{value:,.0f}"
    elif size >= 99.95:
        text = f"{value:.0f}"
    elif size >= 9.995:
        text = f"{value:.1f}"
    elif size >= 0.9995 or size == 0:
        text = f"{value:.2f}"
    else:
        text = f"{value:#.3g}"
    return f"+{text}" if signed and value > 0 else text


def prob_text(p: float) -> str:
    """A next-token probability: two significant digits (`0.31`, `0.0042`, `3.1e-06`)."""
    return f"{p:.2g}"


def nats_text(value: float | None, signed: bool = False) -> str:
    """A KL divergence or a loss change in nats: three decimals, so a column lines up and an effect
    below a thousandth of a nat reads as none (`0.000`); --json has the exact value."""
    if value is None:
        return MISSING
    text = f"{value:.3f}"
    return f"+{text}" if signed and text.strip("-0.") and value > 0 else text.replace("-0.000", "0.000")


def rank_text(rank: int | None, missing: str = MISSING) -> str:
    """A 1-based suppression rank (#1 is the most suppressed token) in at most RANK_WIDTH cells: every
    digit up to #99999, then thousands (`#123k`) and millions (`#1.2M`), never cut."""
    if rank is None:
        return missing
    if rank >= 999_500:
        return f"#{rank / 1e6:.2g}M"
    if rank >= 100_000:
        return f"#{rank / 1e3:.0f}k"
    return f"#{rank}"


def mi_text(mi: float | None, missing: str = MISSING) -> str:
    """I(fired; position) in nats."""
    return missing if mi is None else f"{mi:.3f}"


def p_text(p: float | None, missing: str = MISSING) -> str:
    """P(fire | token)."""
    return missing if p is None else f"{p:.2f}"


def depth_text(depth: float) -> str:
    """A relative depth layer / (L - 1)."""
    return f"{depth:.2f}"


def title_bar(info: SummaryInfo | None, text: str) -> Text:
    """The one-line title of every screen: the app's name, what the screen shows, PARTIAL for a
    summary still being collected (`info` None: not open yet)."""
    out = Text(no_wrap=True, overflow="ellipsis")
    out.append(" neuron-tui ", style="bold reverse")
    out.append(" " + text)
    if info is not None and not info.complete:
        out.append("  PARTIAL", style="bold red")
    return out
