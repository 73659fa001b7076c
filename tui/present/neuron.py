"""A neuron record as sections: its heading and headline, triggers, n-gram contexts, promoted and
suppressed tokens, firing rate by position and contexts. The neuron screen places each section in a
widget of its own; present.card.neuron_panel stacks them for `neuron-tui neuron`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from neuron_tui.core.read import kinds
from neuron_tui.core.read.records import Context, NeuronRecord
from neuron_tui.core.read.tokens import inline, token_text, visible

from .formats import count_text, fmt_count, fmt_rate, mi_text, p_text, rank_text, share_text, value_text

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
    """A neuron's firing values, labelled: the largest |h| (h for ReLU) and the signed mean h."""
    a = r["activation"]
    if a["max"] is None:
        return "never fired"
    largest = "|h|" if r["rule"] == "abs" else "h"
    return f"largest {largest} {value_text(a['max'])} · mean h {value_text(a['mean'], signed=True)}"


def sign_text(r: NeuronRecord) -> str | None:
    """A gated neuron's firings by sign with the mean h of each (a negative firing pushes the opposite
    direction); None when every firing is positive."""
    pos, neg = r["activation"]["positive"], r["activation"]["negative"]
    if pos is None or neg is None or not neg["count"]:
        return None
    text = f"by sign: {count_text(pos['count'])} positive"
    text += f" (mean {value_text(pos['mean'], signed=True)})" if pos["count"] else ""
    return text + f" · {count_text(neg['count'])} negative (mean {value_text(neg['mean'], signed=True)})"


def headline(r: NeuronRecord, note: str | None = None) -> Text:
    """How often it fires, its values and their signs, its kept events, what its triggers explain, its
    mark: one fact a line, so no line wraps in 80 columns."""
    head = Text()
    head.append(f"fires at rate {fmt_rate(r['fire_rate'])} ({count_text(r['act_count'])} firings)", style="bold")
    head.append(f" · {activation_text(r)}")
    signs = sign_text(r)
    if signs:
        head.append(f"\n{signs}")
    facts = []
    if r["n_events"]:
        stands = f"1 per {count_text(2 ** r['event_level'])} firings" if r["event_level"] else "all firings"
        facts.append(f"{count_text(r['n_events'])} events kept ({stands})")
    if r["coverage"] is not None and r["triggers"]:
        facts.append(f"{CRITERION} tokens explain {share_text(r['coverage'])} of its firings")
    if facts:
        head.append("\n" + " · ".join(facts))
    if note is not None:
        head.append("\n* marked", style="bold yellow")
        head.append(f": {note}" if note else "")
    return head


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", box=None, padding=(0, 1), expand=True, title_style="bold",
                 collapse_padding=True, pad_edge=False)


def triggers_table(r: NeuronRecord, rows: int | None = None, narrow: bool = False) -> Table:
    """Its first `rows` triggers (all: None): count (~ estimated), P(fire | token), occurrences,
    suppression rank; ● counted in the detector criterion, ○ covered only. Every number has a bounded
    width (tui.present.formats), so the token keeps the rest of the line: `narrow` only shortens a
    header."""
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
        t.add_row(str(rank), label, value_text(s["score"], signed=True))
    return t


def position_values(r: NeuronRecord) -> np.ndarray:
    """The firing rate at each position, 0 where no token was seen."""
    return np.nan_to_num(np.array([np.nan if v is None else v for v in r["position_rate"]], dtype=np.float64))


def position_title(r: NeuronRecord) -> Text:
    """The plot's title: its peak (the top of the plot's scale) and where, the mean, I(fired;
    position), the main firing run."""
    values = position_values(r)
    title = Text("Rate by position", style="bold")
    if len(values) and values.max() > 0:
        peak = int(values.argmax())
        title.append(f" · peak {fmt_rate(values.max())} at t={peak} · mean {fmt_rate(values.mean())}")
        if r["pos_mi"] is not None:
            title.append(f" · MI {mi_text(r['pos_mi'])} nats")
        if r["pos_range"]:
            title.append(f" · fires most on t={r['pos_range'][0]}..{r['pos_range'][1]}")
    else:
        title.append("  never fired", style="dim")
    return title


FIRING_MARKS = ("[[", "]]")  # the firing token of a context in plain text (a file, a pipe)
VALUE_WIDTH = 7  # a context's activation: "-12.3", "+0.571", "|5.45|"


def context_value(c: Context) -> str:
    """A context's activation: the signed h (`+5.45`, `-4.78`), or |h| as `|5.45|` where the summary
    keeps no sign; "" for a sampled event."""
    if c["value"] is None:
        return ""
    return value_text(c["value"], signed=True) if c["signed"] else f"|{value_text(c['value'])}|"


def context_line(c: Context, vocab: Sequence[str], width: int, plain: bool = False, valued: bool = True) -> Text:
    """One context in `width` cells: the activation (a blank as wide where `valued` contexts are
    listed with it), the tokens before (cut on the left), the firing token highlighted (`plain`:
    between [[ ]], for a file or a pipe, where highlights do not show), the tokens after; tokens
    alternate between two shades so their boundaries show even without spaces."""
    value = context_value(c).rjust(VALUE_WIDTH) + " " if valued else ""
    room = width - len(value)
    texts = [token_text(vocab, t) for t in c["ids"]]
    raw = texts[c["at"]]
    lead = raw[: len(raw) - len(raw.lstrip(" "))] if raw.strip() else ""
    tok = visible(raw) if not raw.strip() else inline(raw.strip(" "))
    if plain:
        tok = FIRING_MARKS[0] + tok + FIRING_MARKS[1]
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


def contexts_text(r: NeuronRecord, vocab: Sequence[str], width: int, plain: bool = False) -> Text:
    """Its contexts (strongest |h| first, one per sequence), one line each of `width` cells; `plain`
    marks the firing token with characters (context_line)."""
    out = Text()
    out.append("Contexts", style="bold")
    fired = any(c["fired"] for c in r["contexts"]) or not r["contexts"]
    size = "|h|" if r["rule"] == "abs" else "h"
    about = f"strongest {size} first, one per sequence" if fired else \
        f"strongest {size}, none above tau = {value_text(r['tau'])}"
    out.append(f"  {about}\n", style="dim")
    notes = [f"{FIRING_MARKS[0]} {FIRING_MARKS[1]} mark the firing token"] if plain else []
    if any(c["value"] is not None and not c["signed"] for c in r["contexts"]):
        notes.append("|5.45|: |h|, this summary keeps no sign of h there")
    if notes:
        out.append(" · ".join(notes) + "\n", style="dim")
    if not r["contexts"]:
        out.append("none: the neuron never fired", style="dim")
        return out
    valued = any(c["value"] is not None for c in r["contexts"])
    for c in r["contexts"]:
        out.append_text(context_line(c, vocab, max(30, width), plain, valued))
        out.append("\n")
    out.rstrip()
    return out


class AtWidth:
    """A renderable drawn for the width the console gives it (a plot, lines cut to fit)."""

    def __init__(self, draw: Callable[[int], RenderableType]):
        self.draw = draw

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.draw(options.max_width)
