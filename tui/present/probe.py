"""The probe's answer (core.model.probe.probe_text): the `probe` command's table of every token, and
the probe screen's shaded text, token under the cursor, neurons firing there and ablation. Both say
the same things the same way: a firing on a recorded trigger (●), a firing on a token that is not
one (news, !), a recorded trigger that did not fire (·); a neuron with its categories; an ablation's
KL divergence, loss change and probability moves."""

from __future__ import annotations

from itertools import zip_longest

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from neuron_tui.core.read.records import FiringNeuron, Move, ProbeResult, ProbeToken
from neuron_tui.core.read.tokens import inline, visible

from .formats import MISSING, nats_text, prob_text, value_text

MARKS = {"trigger": "●", "news": "!", "missed": "·"}
SAYS = {"trigger": " · fired on a recorded trigger", "news": " · fired, not on one of its recorded triggers: news",
        "missed": " · a recorded trigger, but it did not fire here"}
WORD_JOIN = "¦"  # between two tokens of one word (not "·": the marks and the legends use that)
MOVES_SHOWN = 2  # moves per position in the command line's table (every one is in --json)


def status(tok: ProbeToken) -> str | None:
    """What the probed neuron did on a token, against its recorded triggers: "trigger" (fired on one),
    "news" (fired on a token that is not one), "missed" (one, not fired), None (neither)."""
    if tok["fired"]:
        return "trigger" if tok["trigger"] else "news"
    return "missed" if tok["trigger"] else None


def ablation_label(result: ProbeResult) -> str:
    """`N12 = 0 (zero)`: the neuron, the value the ablation sets it to and the mode."""
    a = result["ablation"]
    value = "0" if a["value"] == 0 else value_text(a["value"])
    return f"N{result['neuron']} = {value} ({a['mode']})"


def ablation_summary(result: ProbeResult) -> str:
    """The whole text's effect: `N12 = 0 (zero): mean KL 0.012, mean Δloss +0.045 nats`."""
    a = result["ablation"]
    return (f"{ablation_label(result)}: mean KL {nats_text(a['mean_kl'])}, "
            f"mean Δloss {nats_text(a['mean_loss_delta'], signed=True)} nats")


def _moved(m: Move, rank: str) -> str:
    """`␣the +21.0%`: a move by the quantity that ranks it (Δp in percentage points, or Δ log p in nats)."""
    change = f"{100 * m['dp']:+.1f}%" if rank == "p" else f"{m['dlogp']:+.2f}"
    return f"{visible(m['text'])} {change}"


def _change_name(rank: str) -> str:
    return "Δp" if rank == "p" else "Δ log p"


_ONE_LINE = {"no_wrap": True, "overflow": "ellipsis"}


def _neuron_tag(n: FiringNeuron) -> str:
    """`N12(T,P)`: a firing neuron and its categories' initials."""
    return f"N{n['neuron']}" + (f"({','.join(c[0].upper() for c in n['categories'])})" if n["categories"] else "")


# ---- the command line ---------------------------------------------------------------------------------------

def probe_table(result: ProbeResult) -> Table:
    """`neuron-tui probe`: per token its text, the neuron's activation and firing (the marks above),
    and the layer's strongest firing neurons or, with --ablate, the KL divergence and loss change of
    the next-token distribution there and the tokens whose probability rises and falls most."""
    neuron = result["neuron"]
    ablated = "ablation" in result
    heading = f"{result['model']} L{result['layer']}" + (f" N{neuron}" if neuron is not None else "")
    heading += f" · fired iff {'|h|' if result['rule'] == 'abs' else 'h'} > {value_text(result['tau'])}"
    if ablated:
        heading += f" · ablation {ablation_summary(result)}"
    caption = None
    if neuron is not None:
        legend = [f"{MARKS['trigger']} fired on a recorded trigger", f"{MARKS['news']} fired on a token that is not one",
                  f"{MARKS['missed']} a recorded trigger that did not fire"]
        if ablated:
            a = result["ablation"]
            legend.append(f"KL, Δloss: of the next token, nats; rises/falls: {_change_name(a['rank'])} of tokens "
                          f"with p >= {a['floor']:g}; --json: every move and the layer's firing neurons")
        caption = Text("; ".join(legend), style="dim")
    # with an ablation each token keeps one line, the long cells sharing the width and ending in "…" when
    # cut (--json has every item)
    table = Table(title=Text(heading), title_justify="left", caption=caption, caption_justify="left",
                  header_style="bold", box=box.SIMPLE_HEAD, padding=(0, 1), expand=ablated)
    table.add_column("t", justify="right", no_wrap=True)
    table.add_column("token", no_wrap=True)
    if neuron is not None:
        table.add_column("h", justify="right", no_wrap=True)
        table.add_column("", no_wrap=True)
    if not ablated:  # with an ablation the effect takes the width (--json keeps the layer's firing neurons)
        table.add_column("fired in the layer (strongest first)", overflow="fold")
    if ablated:
        table.add_column("KL", justify="right", no_wrap=True)
        table.add_column("Δloss", justify="right", no_wrap=True)
        table.add_column("rises", ratio=1, **_ONE_LINE)
        table.add_column("falls", ratio=1, **_ONE_LINE)
    for k, tok in enumerate(result["tokens"]):
        cells: list = [str(k), Text(visible(tok["text"]))]
        if neuron is not None:
            mark = MARKS.get(status(tok) or "", "")
            cells += [value_text(tok["activation"], signed=True), Text(mark, style="bold" if tok["fired"] else "dim")]
        if not ablated:
            cells.append(Text(" ".join(_neuron_tag(n) for n in result["top"][k])))
        else:
            a = result["ablation"]
            here = a["positions"][k]
            cells += [nats_text(here["kl"]), nats_text(here["loss_delta"], signed=True)]
            cells += [Text(", ".join(_moved(m, a["rank"]) for m in here[kind][:MOVES_SHOWN]) or MISSING)
                      for kind in ("rises", "falls")]
        table.add_row(*cells)
    return table


# ---- the probe screen -----------------------------------------------------------------------------------------

def continues_word(previous: str, token: str) -> bool:
    """Whether `token` continues the word `previous` ends: no leading space, and a letter or digit on
    both sides of the boundary (`wall` + `,` does not; `neur` + `ons` does)."""
    return bool(previous) and bool(token) and previous[-1].isalnum() and token[0].isalnum()


def shaded_text(result: ProbeResult, cursor: int) -> Text:
    """The text, each token shaded by the neuron's activation (green positive, magenta negative),
    firings underlined and bold, WORD_JOIN between two tokens of one word, the token under the cursor
    reversed."""
    tokens = result["tokens"]
    peak = max((abs(t["activation"]) for t in tokens if t["activation"] is not None), default=0.0) or 1.0
    text = Text()
    for i, tok in enumerate(tokens):
        piece = inline(tok["text"]) or "∅"
        if i and continues_word(tokens[i - 1]["text"], tok["text"]):
            text.append(WORD_JOIN, style="dim")
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
        line.append(f" · N{neuron} h = {value_text(tok['activation'], signed=True)}")
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
        table.add_row("▶" if j == pick else "", f"N{n['neuron']}", value_text(n["activation"], signed=True),
                      ", ".join(n["categories"]) or MISSING)
    if not top:
        table.add_row("", Text("none", style="dim"), "", "")
    return table


def ablation_table(result: ProbeResult, cursor: int) -> RenderableType:
    """With an ablation, for the next token after the cursor: the KL divergence and the loss change,
    the actual next token's probability before and after, the most probable tokens before and after,
    and the tokens whose probability rises and falls most (among those above the ablation's floor)."""
    if result["neuron"] is None:
        return Text("ablation: open the probe from a neuron", style="dim")
    if "ablation" not in result:
        return Text("ablation: z sets the neuron to 0, again to its mean over the corpus", style="dim")
    a = result["ablation"]
    here = a["positions"][cursor]

    def line(*parts: tuple[str, str]) -> Text:
        return Text.assemble(*parts, no_wrap=True, overflow="ellipsis")

    rows = [line((f"{ablation_label(result)}: next token after t={cursor}", "bold")),
            line(("KL ", "dim"), (nats_text(here["kl"]), ""), (" nats · Δloss ", "dim"),
                 (nats_text(here["loss_delta"], signed=True), ""))]
    if here["next"] is not None:
        nxt = here["next"]
        rows.append(line(("next ", "dim"), (visible(nxt["text"]), "bold"), (" p ", "dim"),
                         (f"{prob_text(nxt['p_before'])} → {prob_text(nxt['p_after'])}", "")))
    table = Table(box=None, padding=(0, 1), expand=True, header_style="dim", pad_edge=False)
    table.add_column("before", ratio=1, no_wrap=True, overflow="ellipsis")
    table.add_column("p", justify="right", no_wrap=True)
    table.add_column("after", ratio=1, no_wrap=True, overflow="ellipsis")
    table.add_column("p", justify="right", no_wrap=True)
    for was, now in zip_longest(here["top_before"], here["top_after"]):
        table.add_row(*(cell for t in (was, now) for cell in
                        ((Text(visible(t["text"])), prob_text(t["p"])) if t else ("", ""))))
    rows.append(table)
    change = _change_name(a["rank"])
    for kind in ("rises", "falls"):
        moved = ", ".join(_moved(m, a["rank"]) for m in here[kind])
        rows.append(line((f"{kind} ({change}) ", "dim"), (moved or "none", "" if moved else "dim")))
    return Group(*rows)
