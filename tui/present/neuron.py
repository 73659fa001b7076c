"""A neuron record as sections: its heading and headline, triggers, n-gram contexts, promoted and
suppressed tokens, firing rate by position and contexts. The neuron screen places each section in a
widget of its own; `neuron_panel` stacks them for `neuron-tui neuron`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from neuron_tui.core.read import kinds
from neuron_tui.core.read.records import Context, NeuronRecord
from neuron_tui.core.read.tokens import inline, token_text, visible

from .formats import MISSING, fmt_count, p_text, rank_text
from .plot import plot

CRITERION, COVERED = "●", "○"  # trigger marks: counted in the detector criterion / covered only
TRIGGER_STYLE = "bold black on yellow"  # a promoted / suppressed token that is also a trigger
FIRING_STYLE = "bold reverse"  # the firing token of a context
ALT_STYLE = "grey62"  # every other context token, so token boundaries show
PLOT_HEIGHT = 5  # lines of the firing rate by position in the command line (the screen's is in app.tcss)


def categories_text(r: NeuronRecord) -> str:
    """The neuron's categories as nouns, a positional one with its type: `positional (strong oscillatory)`."""
    shape = f" ({'strong' if r['pos_strong'] else 'weak'} {r['pos_shape']})" if r["pos_shape"] else ""
    return ", ".join(kinds.BY_NAME[c].noun + (shape if c == "positional" else "") for c in r["categories"])


def heading(r: NeuronRecord) -> str:
    return f"L{r['layer']} N{r['index']} · {categories_text(r) or 'no category'}"


def activation_text(r: NeuronRecord) -> str:
    """A neuron's firing values, labelled: the largest |h| (h for ReLU), the signed mean, and for a
    gated neuron how many firings were positive and negative with the mean of each (a negative firing
    pushes the opposite direction)."""
    a = r["activation"]
    if a["max"] is None:
        return "never fired"
    largest = "|h|" if r["rule"] == "abs" else "h"
    text = f"largest {largest} {a['max']:.3g}, mean h {a['mean']:+.3g}"
    pos, neg = a["positive"], a["negative"]
    if pos is not None and neg is not None and neg["count"]:
        text += f"; {pos['count']:,} positive" + (f" (mean {pos['mean']:+.3g})" if pos["count"] else "")
        text += f", {neg['count']:,} negative (mean {neg['mean']:+.3g})"
    return text


def headline(r: NeuronRecord, note: str | None = None) -> Text:
    """How often it fires and with what values, its kept events, what its triggers explain, its mark."""
    head = Text()
    head.append(f"fires on {100 * r['fire_rate']:.3g}% of tokens ({r['act_count']:,} firings)", style="bold")
    head.append(f" · {activation_text(r)}")
    if r["n_events"]:
        stands = f"1 per {2 ** r['event_level']:,} firings" if r["event_level"] else "all firings"
        head.append(f" · {r['n_events']:,} events kept ({stands})")
    if r["coverage"] is not None and r["triggers"]:
        head.append(f" · {CRITERION} tokens explain {100 * r['coverage']:.0f}% of its firings")
    if note is not None:
        head.append("\n* marked", style="bold yellow")
        head.append(f": {note}" if note else "")
    return head


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", box=None, padding=(0, 1), expand=True, title_style="bold")


def triggers_table(r: NeuronRecord, rows: int | None = None, narrow: bool = False) -> Table:
    """Its first `rows` triggers (all: None): count (~ estimated), P(fire | token), occurrences,
    suppression rank; ● counted in the detector criterion, ○ covered only."""
    legend = f"  {CRITERION} criterion {COVERED} covered" if any(t["covered"] for t in r["triggers"]) else ""
    t = _table("Top triggers" + legend + ("" if r["analysis"] == "stored" else " · computed now"))
    t.add_column("token", ratio=1, no_wrap=True, overflow="ellipsis")
    t.add_column("fired", justify="right", no_wrap=True)
    t.add_column("P(f|t)" if narrow else "P(fire|tok)", justify="right", no_wrap=True)
    t.add_column("occ", justify="right", no_wrap=True)
    t.add_column("supp", justify="right", no_wrap=True)
    approx = "~" if r["event_level"] else ""
    for tr in r["triggers"][:rows]:
        token = Text()
        # the mark before the text, so a narrow column never cuts it off
        if tr["explains"]:
            token.append(CRITERION + " ", style="bold green")
        elif tr["covered"]:
            token.append(COVERED + " ", style="green")
        token.append(visible(tr["text"]))
        rank = tr["supp_rank"]
        t.add_row(token, approx + fmt_count(tr["count"]), p_text(tr["p_fire"]), fmt_count(tr["occurrences"]),
                  Text(rank_text(rank), style="bold green" if rank is not None and rank <= 10 else ""))
    if not r["triggers"]:
        t.add_row(Text("none (never fired)", style="dim"), "", "", "", "")
    return t


def ngrams_table(r: NeuronRecord, rows: int | None = None) -> Table:
    """Its first `rows` (previous token → token) contexts; a token that is also a trigger in bold."""
    t = _table("N-gram contexts")
    t.add_column("previous → token", ratio=1, no_wrap=True, overflow="ellipsis")
    t.add_column("fired", justify="right", no_wrap=True)
    trig = {tr["token"] for tr in r["triggers"]}
    for g in r["ngrams"][:rows]:
        ctx = Text(visible(g["prev_text"]) if g["prev"] >= 0 else g["prev_text"], style="dim")
        ctx.append(" → ")
        ctx.append(visible(g["text"]), style="bold" if g["token"] in trig else "")
        t.add_row(ctx, ("~" if r["event_level"] else "") + fmt_count(g["count"]))
    if not r["ngrams"]:
        t.add_row(Text("none", style="dim"), "")
    return t


def scored_table(r: NeuronRecord, kind: str, has_projection: bool = True) -> RenderableType:
    """Its `kind` ("promoted" or "suppressed") tokens, rank #1 first; its own triggers highlighted."""
    if not has_projection:
        return Text(f"{kind.capitalize()}: no projection group in this summary", style="dim")
    t = _table(f"{kind.capitalize()} tokens")
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("token", ratio=1, no_wrap=True, overflow="ellipsis")
    t.add_column("score", justify="right", no_wrap=True)
    for rank, s in enumerate(r[kind], start=1):  # type: ignore[literal-required]
        label = Text(visible(s["text"]))
        if s["is_trigger"]:
            label.stylize(TRIGGER_STYLE)
            label.append(" ◆ trigger", style="bold yellow")
        t.add_row(str(rank), label, MISSING if s["score"] is None else f"{s['score']:+.3g}")
    return t


def position_values(r: NeuronRecord) -> np.ndarray:
    """The firing rate at each position, 0 where no token was seen."""
    return np.nan_to_num(np.array([np.nan if v is None else v for v in r["position_rate"]], dtype=np.float64))


def position_title(r: NeuronRecord) -> Text:
    """The plot's title: its scale, peak and mean, I(fired; position), the main firing run."""
    values = position_values(r)
    title = Text("Firing rate by position", style="bold")
    if len(values) and values.max() > 0:
        peak = int(values.argmax())
        title.append(f"  scale 0 … {values.max():.3g} (peak at t={peak}), mean {values.mean():.3g}")
        if r["pos_mi"] is not None:
            title.append(f" · MI {r['pos_mi']:.3f} nats")
        if r["pos_range"]:
            title.append(f" · fires most on t={r['pos_range'][0]}..{r['pos_range'][1]}")
    else:
        title.append("  never fired", style="dim")
    return title


def context_line(c: Context, vocab: Sequence[str], width: int) -> Text:
    """One context in `width` cells: the activation, the tokens before (cut on the left), the firing
    token highlighted, the tokens after; tokens alternate between two shades so their boundaries show
    even without spaces."""
    value = "" if c["value"] is None else f"{c['value']:6.3g} "
    room = width - len(value)
    texts = [token_text(vocab, t) for t in c["ids"]]
    raw = texts[c["at"]]
    lead = raw[: len(raw) - len(raw.lstrip(" "))] if raw.strip() else ""
    tok = visible(raw) if not raw.strip() else inline(raw.strip(" "))
    left = [(inline(t), k % 2) for k, t in enumerate(texts[: c["at"]])]
    if lead:
        left.append((lead, 0))
    right = [(inline(t), k % 2) for k, t in enumerate(texts[c["at"] + 1 :])]
    max_left = max(4, int(room * 0.6) - len(tok))
    used, kept = 0, []
    for text, shade in reversed(left):
        if used + len(text) > max_left - 1:
            kept.append((("…" + text[len(text) - (max_left - 1 - used) :]) if max_left - 1 - used > 0 else "…", shade))
            break
        kept.append((text, shade))
        used += len(text)
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(value, style="dim")
    for text, shade in reversed(kept):
        line.append(text, style=ALT_STYLE if shade else "")
    line.append(tok, style=FIRING_STYLE if c["fired"] else "reverse dim")
    for text, shade in right:
        line.append(text, style=ALT_STYLE if shade else "")
    line.truncate(width)
    return line


def contexts_text(r: NeuronRecord, vocab: Sequence[str], width: int) -> Text:
    """Its contexts (strongest activations, one per sequence), one line each of `width` cells."""
    out = Text()
    out.append("Contexts", style="bold")
    if any(c["fired"] for c in r["contexts"]) or not r["contexts"]:
        out.append("  (strongest activations, one per sequence; firing token highlighted)\n", style="dim")
    else:
        out.append(f"  strongest activations, none above tau = {r['tau']:.3g}\n", style="dim")
    if not r["contexts"]:
        out.append("none: the neuron never fired", style="dim")
        return out
    for c in r["contexts"]:
        out.append_text(context_line(c, vocab, max(30, width)))
        out.append("\n")
    out.rstrip()
    return out


class AtWidth:
    """A renderable drawn for the width the console gives it (a plot, lines cut to fit)."""

    def __init__(self, draw: Callable[[int], RenderableType]):
        self.draw = draw

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.draw(options.max_width)


def neuron_panel(r: NeuronRecord, vocab: Sequence[str], has_projection: bool = True) -> Panel:
    """`neuron-tui neuron`: the sections of the neuron screen, one under the other, in a panel as wide
    as the terminal (promoted and suppressed tokens side by side)."""
    updates = Table.grid(padding=(0, 1), expand=True)
    updates.add_column(ratio=1)
    updates.add_column(ratio=1)
    updates.add_row(scored_table(r, "promoted", has_projection), scored_table(r, "suppressed", has_projection))
    plotted = AtWidth(lambda width: plot(position_values(r), width, PLOT_HEIGHT, bar="cyan", axis="dim"))
    gap = Text()
    return Panel(Group(Text(heading(r), style="bold"), headline(r), gap, triggers_table(r), gap, ngrams_table(r), gap,
                       updates, gap, position_title(r), plotted, gap,
                       AtWidth(lambda width: contexts_text(r, vocab, width))), title="neuron")
