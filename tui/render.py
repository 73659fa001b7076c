"""How the command line shows the read side's answers: rich tables and panels of `core.read.queries` output.

Every title and cell is a `rich.text.Text`, never markup, so a bracket in a model name or a note
("[partial]") prints as itself. Tables fit 80 columns.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from neuron_tui.core.read import kinds
from neuron_tui.core.read.tokens import inline, visible


class Output(Console):
    """The command line's console: a closed pipe (`| head`) is left to the command line's one handler
    (a quiet exit, status 141), not rich's own exit with status 1."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


# columns of report_table: (row key, header, kind); "count" cells show the share of the layer (the counts
# are in --json), firing rates the median and 99th percentile over the layer's neurons
REPORT_COLUMNS = (
    ("layer", "L", "int"),
    *((k.name, k.report_column, "count") for k in kinds.KINDS),
    ("fire_p50", "rate50", "rate"),
    ("fire_p99", "rate99", "rate"),
    ("covered", "cover", "int"),
    ("new", "new", "int"),
    ("supp_share", "supp", "share"),
    ("neg_share", "neg", "share"),
)


def title(attrs: dict, notes: Sequence[str]) -> Text:
    """`model: N tokens, rule ...` and the summary's notes (core.read.queries.summary_notes), as plain text."""
    text = Text(f"{attrs.get('model')}: {int(attrs.get('n_tokens', 0)):,} tokens, rule {attrs.get('rule')} "
                f"({attrs.get('tau_source')} {attrs.get('threshold')})")
    for note in notes:
        text.append(f" [{note}]")
    return text


def _cell(row: dict, key: str, kind: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if kind == "count":
        frac = row.get(f"{key}_frac")
        return (f"{100 * frac:.1f}%" if value else "-") if frac is not None else str(value)
    if kind == "rate":
        return f"{value:.1e}" if 0 < value < 1e-3 else f"{value:.4f}"
    if kind == "share":
        return f"{100 * value:.0f}%"
    return str(value)


def report_table(rows: Sequence[dict], heading: Text | str = "") -> Table:
    """The per-layer rows (core.read.queries.layer_rows) as a table; columns None in every row are left out."""
    table = Table(title=Text(str(heading)) if isinstance(heading, str) else heading, header_style="bold",
                  box=box.SIMPLE_HEAD, padding=0, pad_edge=False)
    cols = [(k, h, kind) for k, h, kind in REPORT_COLUMNS if any(r.get(k) is not None for r in rows)]
    for key, header, _ in cols:
        table.add_column(header, justify="right" if key != "layer" else "left", no_wrap=True)
    for row in rows:
        table.add_row(*[_cell(row, k, kind) for k, _, kind in cols])
    return table


def metric_text(metric: str, value: Any) -> str:
    if value is None:
        return "-"
    if metric.endswith("_frac") or metric.endswith("_share"):
        return f"{100 * value:.1f}%"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def compare_table(rows: Sequence[dict], metric: str) -> Table:
    """One metric of core.read.queries.compare_rows: a column per model, a row per relative depth."""
    models = list(rows[0]["models"]) if rows else []
    table = Table(title=Text(f"{metric} by relative depth"), header_style="bold")
    table.add_column("depth", justify="right")
    for name in models:
        table.add_column(Text(name), justify="right")
    for row in rows:
        table.add_row(f"{row['depth']:.2f}", *[metric_text(metric, row["models"][m].get(metric)) for m in models])
    return table


def neurons_table(rows: Sequence[dict]) -> Table:
    """`neuron-tui neurons` rows (core.read.queries.LayerTable.row) as a table."""
    table = Table(header_style="bold", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for header, justify in (("L", "right"), ("N", "right"), ("cat", "left"), ("rate", "right"), ("dist", "right"),
                            ("triggers", "left"), ("pos MI", "right"), ("supp", "right")):
        table.add_column(header, justify=justify, no_wrap=header != "triggers", overflow="ellipsis")
    for r in rows:
        table.add_row(str(r["layer"]), str(r["neuron"]), " ".join(r["categories"]) or "-", f"{r['rate']:.3g}",
                      "-" if r["distinct"] is None else str(r["distinct"]), Text(r["triggers"] or "-"),
                      "-" if r["pos_mi"] is None else f"{r['pos_mi']:.3f}",
                      "-" if r["supp_rank"] is None else f"#{r['supp_rank']}")
    return table


def neurons_csv(rows: Sequence[dict], keys: Sequence[str]) -> str:
    """`neurons --csv`: one line per neuron, categories space-separated."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(keys), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "categories": " ".join(r["categories"])})
    return out.getvalue()


_SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None], width: int = 64) -> str:
    """Unicode block sparkline of `values` (None = no data, shown as a space), resampled to `width`
    columns by averaging; scaled to the maximum (0 is the lowest block)."""
    vals = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if vals.size == 0:
        return ""
    edges = np.linspace(0, vals.size, min(width, vals.size) + 1).astype(int)
    cols = [vals[a:b] for a, b in zip(edges[:-1], edges[1:])]
    means = np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in cols])
    top = np.nanmax(means) if np.isfinite(means).any() else 0.0
    out = []
    for m in means:
        if not np.isfinite(m):
            out.append(" ")
        else:
            out.append(_SPARK[int(round(m / top * (len(_SPARK) - 1)))] if top > 0 else _SPARK[0])
    return "".join(out)


def activation_text(record: dict) -> str:
    """A neuron's firing values, labelled: the largest |h| (h for ReLU), the signed mean, and for a
    gated neuron how many firings were positive and negative with the mean of each (a negative firing
    pushes the opposite direction)."""
    a = record["activation"]
    if a["max"] is None:
        return "never fired"
    largest = "|h|" if record["rule"] == "abs" else "h"
    text = f"largest {largest} {a['max']:.3g}, mean h {a['mean']:+.3g}"
    pos, neg = a["positive"], a["negative"]
    if pos is not None and neg["count"]:
        text += f"; {pos['count']:,} positive" + (f" (mean {pos['mean']:+.3g})" if pos["count"] else "")
        text += f", {neg['count']:,} negative (mean {neg['mean']:+.3g})"
    return text


def neuron_panel(record: dict) -> Panel:
    """A rendering of a neuron record: triggers, n-grams, updates (triggers in bold red), the position
    profile and example contexts (the firing token highlighted)."""
    r = record
    head = Text()
    head.append(f"L{r['layer']} N{r['index']}  ", style="bold")
    head.append(", ".join(r["categories"]) or "no category", style="bold magenta")
    head.append(f"   fired {r['act_count']:,} times (rate {r['fire_rate']:.3g}); {activation_text(r)}")
    if r.get("pos_mi") is not None:
        head.append(f"   I(fired; pos) {r['pos_mi']:.3f} nats")
        if r["pos_shape"]:
            head.append(f", {'strong' if r['pos_strong'] else 'weak'} {r['pos_shape']}")
    parts: list[Any] = [head]

    trig = Table(title=Text("triggers (● counted in the detector criterion, ○ covered)"), title_justify="left",
                 header_style="bold", box=None, pad_edge=False)
    for col in ("token", "count", "occ", "P(fire|token)", "supp"):
        trig.add_column(col, justify="left" if col == "token" else "right")
    for t in r["triggers"]:
        count = f"{t['count']:.0f}" + (f" ± {t['count_se']:.0f}" if t.get("count_se") else "")
        p = "-" if t["p_fire"] is None else f"{t['p_fire']:.2f}"
        rank = "-" if t["supp_rank"] is None else f"#{t['supp_rank']}"
        mark = "● " if t["explains"] else ("○ " if t["covered"] else "  ")
        trig.add_row(Text(mark + visible(t["text"])), count, f"{t['occurrences']:,}", p, rank)
    parts.append(trig if r["triggers"] else Text("no triggers (no kept firing events)"))

    if r["ngrams"]:
        ng = Table(title=Text("bigram contexts"), title_justify="left", header_style="bold", box=None, pad_edge=False)
        ng.add_column("previous")
        ng.add_column("token")
        ng.add_column("count", justify="right")
        for n in r["ngrams"]:
            ng.add_row(Text(visible(n["prev_text"])), Text(visible(n["text"])), f"{n['count']:.0f}")
        parts.append(ng)

    if r["promoted"] or r["suppressed"]:
        upd = Table(title=Text("FFN update: promoted / suppressed (rank #1 first)"), title_justify="left",
                    header_style="bold", box=None)
        for col in ("promoted", "score", "suppressed", "score"):
            upd.add_column(col, justify="left" if col != "score" else "right")
        for a, b in zip(r["promoted"], r["suppressed"]):
            cells: list[Any] = []
            for x in (a, b):
                cells.append(Text(visible(x["text"]), style="bold red" if x["is_trigger"] else ""))
                cells.append("-" if x["score"] is None else f"{x['score']:.3f}")
            upd.add_row(*cells)
        parts.append(upd)

    parts.append(Text("firing rate by position  ") + Text(sparkline(r["position_rate"]), style="cyan"))

    if r["contexts"]:
        fired = any(c["fired"] for c in r["contexts"])
        heading = ("contexts (strongest activations, firing token highlighted)" if fired else
                   f"contexts: strongest activations, none above tau = {r['tau']:.3g}")
        parts.append(Text(heading, style="bold"))
        for c in r["contexts"]:
            line = Text(f"  s{c['seq']}:{c['pos']:<5} ")
            line.append(inline(c["left"][-60:]))
            line.append(inline(c["token"]), style="bold reverse")
            line.append(inline(c["right"][:30]))
            parts.append(line)
    return Panel(Group(*parts), title="neuron", expand=False)


def probe_table(result: dict) -> Table:
    """`neuron-tui probe`: per token its text, the neuron's activation and firing (● fired on a
    recorded trigger, ! fired on a token that is not one: news, · a trigger that did not fire), the
    layer's strongest firing neurons, and with --ablate the tokens whose log-probability rises and falls most at that position."""
    neuron = result["neuron"]
    heading = f"{result['model']} L{result['layer']}" + (f" N{neuron}" if neuron is not None else "")
    heading += f" · fired iff {'|h|' if result['rule'] == 'abs' else 'h'} > {result['tau']:.3g}"
    if "ablation" in result:
        a = result["ablation"]
        heading += f" · ablation: N{neuron} = {a['value']:.3g} ({a['mode']})"
    caption = None
    if neuron is not None:
        caption = Text("● fired on a recorded trigger · ! fired on a token that is not one · "
                       "· a recorded trigger that did not fire" + (" · rises/falls: next-token Δ log p" if "ablation" in result else ""),
                       style="dim")
    table = Table(title=Text(heading), title_justify="left", caption=caption, caption_justify="left",
                  header_style="bold", box=box.SIMPLE_HEAD, padding=(0, 1))
    table.add_column("t", justify="right")
    table.add_column("token", no_wrap=True)
    if neuron is not None:
        table.add_column("h", justify="right")
        table.add_column("", no_wrap=True)
    table.add_column("fired in the layer (strongest first)", overflow="fold")
    if "ablation" in result:
        table.add_column("rises", overflow="fold")
        table.add_column("falls", overflow="fold")
    for k, tok in enumerate(result["tokens"]):
        cells: list[Any] = [str(k), Text(visible(tok["text"]))]
        if neuron is not None:
            mark = ("●" if tok["trigger"] else "!") if tok["fired"] else ("·" if tok["trigger"] else "")
            cells += [f"{tok['activation']:+.3g}", Text(mark, style="bold" if tok["fired"] else "dim")]
        cells.append(Text(" ".join(f"N{n['neuron']}" + (f"({','.join(c[0].upper() for c in n['categories'])})"
                                                         if n["categories"] else "") for n in result["top"][k])))
        if "ablation" in result:
            moves = result["ablation"]["positions"][k]
            for kind in ("rises", "falls"):
                cells.append(Text(" ".join(f"{visible(m['text'])} {m['delta']:+.2f}" for m in moves[kind][:3]) or "–"))
        table.add_row(*cells)
    return table
