"""The probe's answer (core.model.probe.probe_text): the `probe` command's table of every token, and
the probe screen's shaded text, token under the cursor, neurons firing there and ablation. Both say
the same things the same way: a firing on a recorded trigger (●), a firing on a token that is not
one (news, !), a recorded trigger that did not fire (·); a neuron with its categories; a move of the
next-token log-probability."""

from __future__ import annotations

from itertools import zip_longest

from rich import box
from rich.table import Table
from rich.text import Text

from neuron_tui.core.read.records import FiringNeuron, Move, ProbeResult, ProbeToken
from neuron_tui.core.read.tokens import inline, visible

from .formats import MISSING

MARKS = {"trigger": "●", "news": "!", "missed": "·"}
SAYS = {"trigger": " · fired on a recorded trigger", "news": " · fired, not on one of its recorded triggers: news",
        "missed": " · a recorded trigger, but it did not fire here"}


def status(tok: ProbeToken) -> str | None:
    """What the probed neuron did on a token, against its recorded triggers: "trigger" (fired on one),
    "news" (fired on a token that is not one), "missed" (one, not fired), None (neither)."""
    if tok["fired"]:
        return "trigger" if tok["trigger"] else "news"
    return "missed" if tok["trigger"] else None


def ablation_label(result: ProbeResult) -> str:
    a = result["ablation"]
    return f"N{result['neuron']} = {a['value']:.3g} ({a['mode']})"


def _neuron_tag(n: FiringNeuron) -> str:
    """`N12(T,P)`: a firing neuron and its categories' initials."""
    return f"N{n['neuron']}" + (f"({','.join(c[0].upper() for c in n['categories'])})" if n["categories"] else "")


def _move_text(m: Move) -> str:
    return f"{visible(m['text'])} {m['delta']:+.2f}"


# ---- the command line ---------------------------------------------------------------------------------------

def probe_table(result: ProbeResult) -> Table:
    """`neuron-tui probe`: per token its text, the neuron's activation and firing (the marks above),
    the layer's strongest firing neurons, and with --ablate the tokens whose log-probability rises and
    falls most at that position."""
    neuron = result["neuron"]
    ablated = "ablation" in result
    heading = f"{result['model']} L{result['layer']}" + (f" N{neuron}" if neuron is not None else "")
    heading += f" · fired iff {'|h|' if result['rule'] == 'abs' else 'h'} > {result['tau']:.3g}"
    if ablated:
        heading += f" · ablation: {ablation_label(result)}"
    caption = None
    if neuron is not None:
        caption = Text(f"{MARKS['trigger']} fired on a recorded trigger · {MARKS['news']} fired on a token that is not "
                       f"one · {MARKS['missed']} a recorded trigger that did not fire"
                       + (" · rises/falls: next-token Δ log p" if ablated else ""), style="dim")
    table = Table(title=Text(heading), title_justify="left", caption=caption, caption_justify="left",
                  header_style="bold", box=box.SIMPLE_HEAD, padding=(0, 1))
    table.add_column("t", justify="right")
    table.add_column("token", no_wrap=True)
    if neuron is not None:
        table.add_column("h", justify="right")
        table.add_column("", no_wrap=True)
    table.add_column("fired in the layer (strongest first)", overflow="fold")
    if ablated:
        table.add_column("rises", overflow="fold")
        table.add_column("falls", overflow="fold")
    for k, tok in enumerate(result["tokens"]):
        cells: list = [str(k), Text(visible(tok["text"]))]
        if neuron is not None:
            mark = MARKS.get(status(tok) or "", "")
            cells += [f"{tok['activation']:+.3g}", Text(mark, style="bold" if tok["fired"] else "dim")]
        cells.append(Text(" ".join(_neuron_tag(n) for n in result["top"][k])))
        if ablated:
            moves = result["ablation"]["positions"][k]
            cells += [Text(" ".join(_move_text(m) for m in moves[kind][:3]) or MISSING) for kind in ("rises", "falls")]
        table.add_row(*cells)
    return table


# ---- the probe screen -----------------------------------------------------------------------------------------

def shaded_text(result: ProbeResult, cursor: int) -> Text:
    """The text, each token shaded by the neuron's activation (green positive, magenta negative),
    firings underlined and bold, `·` between tokens inside a word, the token under the cursor reversed."""
    tokens = result["tokens"]
    peak = max((abs(t["activation"]) for t in tokens if t["activation"] is not None), default=0.0) or 1.0
    text = Text()
    for i, tok in enumerate(tokens):
        piece = inline(tok["text"]) or "∅"
        if i and not piece[:1].isspace() and not inline(tokens[i - 1]["text"])[-1:].isspace():
            text.append("·", style="dim")  # a boundary inside a word (or between words without spaces)
        style = ""
        if tok["activation"] is not None:
            shade = int(40 + 160 * min(1.0, abs(tok["activation"]) / peak))
            style = f"on rgb({shade // 3},{shade},{shade // 3})" if tok["activation"] >= 0 else \
                f"on rgb({shade},{shade // 3},{shade})"
            if tok["fired"]:
                style += " bold underline"
        if i == cursor:
            style += " reverse"
        text.append(piece, style=style.strip())
    return text


def token_line(result: ProbeResult, cursor: int) -> Text:
    """The token under the cursor: the neuron's h there and what that firing means; then the neuron's
    categories and recorded triggers."""
    tok, neuron = result["tokens"][cursor], result["neuron"]
    line = Text(f"t={cursor} {visible(tok['text'])}", style="bold")
    if tok["activation"] is not None:
        line.append(f" · N{neuron} h = {tok['activation']:+.3g}")
        said = status(tok)
        if said is not None:
            line.append(SAYS[said], style="yellow" if said == "missed" else "bold")
    if result.get("triggers") is not None:
        categories = ", ".join(result["categories"]) or "no category"
        line.append(f"\nN{neuron}: {categories} · recorded triggers: ", style="dim")
        line.append(", ".join(visible(t["text"]) for t in result["triggers"]) or "none", style="dim")
    return line


def firing_table(result: ProbeResult, cursor: int, pick: int) -> Table:
    """The layer's neurons firing on the token under the cursor, strongest first, the picked one marked."""
    table = Table(title=f"Firing on t={cursor} (strongest first)", title_justify="left", box=None, padding=(0, 1),
                  expand=True, title_style="bold")
    table.add_column("", no_wrap=True)
    table.add_column("neuron", no_wrap=True)
    table.add_column("h", justify="right", no_wrap=True)
    table.add_column("categories", ratio=1, no_wrap=True, overflow="ellipsis")
    top = result["top"][cursor]
    for j, n in enumerate(top):
        table.add_row("▶" if j == pick else "", f"N{n['neuron']}", f"{n['activation']:+.3g}",
                      ", ".join(n["categories"]) or MISSING)
    if not top:
        table.add_row("", Text("none", style="dim"), "", "")
    return table


def ablation_table(result: ProbeResult, cursor: int) -> Table | Text:
    """With an ablation: the next tokens whose log-probability rises and falls most after the cursor."""
    if result["neuron"] is None:
        return Text("ablation: open the probe from a neuron", style="dim")
    if "ablation" not in result:
        return Text("ablation: z sets the neuron to 0, again clamps it to its mean firing value", style="dim")
    table = Table(title=f"{ablation_label(result)}: next token after t={cursor}", title_justify="left", box=None,
                  padding=(0, 1), expand=True, title_style="bold")
    table.add_column("rises", ratio=1, no_wrap=True, overflow="ellipsis")
    table.add_column("Δ log p", justify="right", no_wrap=True)
    table.add_column("falls", ratio=1, no_wrap=True, overflow="ellipsis")
    table.add_column("Δ log p", justify="right", no_wrap=True)
    moves = result["ablation"]["positions"][cursor]
    for up, down in zip_longest(moves["rises"], moves["falls"]):
        table.add_row(*(cells for m in (up, down) for cells in
                        ((Text(visible(m["text"])), f"{m['delta']:+.3f}") if m else ("", ""))))
    if not moves["rises"] and not moves["falls"]:
        table.add_row(Text("no change here", style="dim"), "", "", "")
    return table
