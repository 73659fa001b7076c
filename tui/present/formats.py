"""Every number format the command line and the explorer print, and the explorer's title line.

The explorer writes an unknown value as "–"; the command line's tables as "-" (ASCII, for scripts that
cut columns), so the formatters that can meet one take the placeholder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

if TYPE_CHECKING:
    from ..viewmodel import SummaryInfo

MISSING = "–"  # an unknown value in the explorer
CLI_MISSING = "-"  # ... and in the command line's tables


def fmt_rate(rate: float) -> str:
    """A firing rate: three significant digits, 0 as "0"."""
    return "0" if rate == 0 else f"{rate:.3g}"


def fmt_count(value: float) -> str:
    """A count: exact integers as such, thousands as k, millions as M (estimates keep 3 digits)."""
    if value >= 1e6:
        return f"{value / 1e6:.3g}M"
    if value >= 1e4:
        return f"{value / 1e3:.3g}k"
    return f"{value:,.0f}"


def percent(frac: float, digits: int = 1) -> str:
    return f"{100 * frac:.{digits}f}%"


def share_text(frac: float) -> str:
    """A share of a layer as the overview prints it: whole percents from 10%, one decimal below."""
    return percent(frac, 0) if frac >= 0.095 or frac == 0 else percent(frac, 1)


def rank_text(rank: int | None, missing: str = MISSING) -> str:
    """A 1-based suppression rank as every screen shows it: #1 is the most suppressed token."""
    return missing if rank is None else f"#{rank}"


def count_text(value: int | None, missing: str = MISSING) -> str:
    return missing if value is None else f"{value:,}"


def mi_text(mi: float | None, missing: str = MISSING) -> str:
    """I(fired; position) in nats."""
    return missing if mi is None else f"{mi:.3f}"


def p_text(p: float | None, missing: str = MISSING) -> str:
    """P(fire | token)."""
    return missing if p is None else f"{p:.2f}"


def title_bar(info: SummaryInfo | None, text: str) -> Text:
    """The one-line title of every screen: the app's name, what the screen shows, PARTIAL for a
    summary still being collected (`info` None: not open yet)."""
    out = Text(no_wrap=True, overflow="ellipsis")
    out.append(" neuron-tui ", style="bold reverse")
    out.append(" " + text)
    if info is not None and not info.complete:
        out.append("  PARTIAL", style="bold red")
    return out
