"""The `?` screen: every key with what it does (the rows come from the bindings, tui/keys.py), and what
the marks, ranks and shades on the screens mean."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from neuron_tui.core.read import kinds
from neuron_tui.core.read.positional import TYPE_MEANINGS

Rows = Sequence[tuple[str, str]]

LEGEND = [
    *((f"{k.letter} {k.name}", k.definition) for k in kinds.KINDS),
    ("#1 #2 …", "rank among the neuron's suppressed tokens, 1-based: #1 is the most suppressed; supp = its "
                "triggers' best rank"),
    ("● ○", "● a trigger counted in the token-detector criterion; ○ a covered token (fires on >= 95% of its "
            "occurrences) beyond those"),
    ("~12", "an estimated count: the neuron's firing events were sampled (each kept one stands for 2^level)"),
    ("◆ trigger", "a promoted / suppressed token that is also one of the neuron's triggers"),
    *((name, f"positional type: {meaning}") for name, meaning in TYPE_MEANINGS.items()),
    ("strong, weak", "a positional pattern is strong when its firing rate reaches 0 or 1 somewhere, weak when it "
                     "only comes close"),
    ("cat TR", "layer table: the letters of the kinds a neuron is (above), only those it has"),
    ("bars", "overview: every bar on one scale, so columns and depths compare; a full bar is the largest share of "
             "any kind in any layer, which the title gives: bars to 71% (of a layer)"),
    ("|5.45|", "a context's activation as |h|: a summary made before the pass kept the sign of h there; else the "
               "signed h (+5.45, -4.78)"),
    ("probe", "tokens shaded by the neuron's activation (green positive, magenta negative), firings underlined; "
              "¦ marks a token boundary inside a word; a firing off its recorded triggers is news"),
    ("ablation", "probe, z: the neuron set to 0 (zero) or to its mean h over the corpus (mean) at every position; "
                 "KL and Δloss of the next token; rises / falls: the likely next tokens whose probability moves most"),
]


def keys_table(sections: Sequence[tuple[str, Rows]]) -> Table:
    """(section, [(keys, what they do)]) as one table: a section's title, then its rows."""
    t = Table(box=None, padding=(0, 1), expand=True, show_header=False)
    t.add_column(style="bold cyan", no_wrap=True, min_width=12)
    t.add_column(ratio=1)
    for title, keys in sections:
        t.add_row(Text(title, style="bold underline"), "")
        for key, desc in keys:
            t.add_row(Text(key), Text(desc))
    return t
