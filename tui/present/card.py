"""`neuron-tui neuron`: the neuron screen's sections in one panel (present.neuron draws the paper's,
present.families the later families')."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from neuron_tui.core.read.records import NeuronRecord

from .families import families_text
from .neuron import (
    PLOT_HEIGHT,
    AtWidth,
    contexts_text,
    heading,
    headline,
    ngrams_table,
    position_title,
    position_values,
    scored_table,
    triggers_table,
)
from .plot import plot


def neuron_panel(r: NeuronRecord, vocab: Sequence[str], has_projection: bool = True, plain: bool = False) -> Panel:
    """The sections of the neuron screen, one under the other, in a panel as wide as the terminal
    (promoted and suppressed tokens side by side); `plain` for a file or a pipe (the firing token of
    each context marked with characters)."""
    updates = Table.grid(padding=(0, 1), expand=True)
    updates.add_column(ratio=1)
    updates.add_column(ratio=1)
    updates.add_row(scored_table(r, "promoted", has_projection), scored_table(r, "suppressed", has_projection))
    plotted = AtWidth(lambda width: plot(position_values(r), width, PLOT_HEIGHT, bar="cyan", axis="dim"))
    gap = Text()
    parts = [Text(heading(r), style="bold"), headline(r), gap, triggers_table(r), gap, ngrams_table(r), gap,
             updates, gap, position_title(r), plotted, gap, AtWidth(lambda width: contexts_text(r, vocab, width, plain))]
    if families_text(r, vocab, 80) is not None:
        parts += [gap, AtWidth(lambda width: families_text(r, vocab, width, plain))]
    return Panel(Group(*parts), title="neuron")
