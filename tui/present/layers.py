"""Layers and their neurons: the command line's tables (`report`, `report A B`, `neurons`) and the
explorer's overview (its facts, bar columns, one-line layer summary, curves over depth) and layer
screen (its heading, filter bar and the neuron table's cells)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from rich import box
from rich.style import Style
from rich.table import Table
from rich.text import Text

from neuron_tui.core.read import kinds

from .formats import CLI_MISSING, MISSING, fmt_rate, mi_text, percent, rank_text, share_text, title_bar
from .plot import hbar

if TYPE_CHECKING:
    from neuron_tui.core.read.figures import Figure
    from neuron_tui.core.read.records import CompareRow, LayerRow, TableRow

    from ..viewmodel import Row, SummaryInfo, ViewState

# ---- the command line's tables ----------------------------------------------------------------------------

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


def shown_kinds(rows: Sequence[LayerRow]) -> list[kinds.Kind]:
    """The kinds a per-layer table shows: those some layer has, or that are unknown without an
    analysis (a kind no layer of the summary has, e.g. silent under the ReLU rule, takes no room)."""
    return [k for k in kinds.KINDS if any(r.get(k.name) is None or r.get(k.name) for r in rows)]


def report_title(attrs: dict, notes: Sequence[str]) -> Text:
    """`model: N tokens, rule ...` and the summary's notes (core.read.queries.summary_notes), as plain text."""
    text = Text(f"{attrs.get('model')}: {int(attrs.get('n_tokens', 0)):,} tokens, rule {attrs.get('rule')} "
                f"({attrs.get('tau_source')} {attrs.get('threshold')})")
    for note in notes:
        text.append(f" [{note}]")
    return text


def report_cell(row: LayerRow, key: str, kind: str) -> str:
    value = row.get(key)
    if value is None:
        return CLI_MISSING
    if kind == "count":
        frac = row.get(f"{key}_frac")
        return (percent(frac) if value else CLI_MISSING) if frac is not None else str(value)
    if kind == "rate":
        return f"{value:.1e}" if 0 < value < 1e-3 else f"{value:.4f}"
    if kind == "share":
        return percent(value, 0)
    return str(value)


def report_table(rows: Sequence[LayerRow], heading: Text | str = "") -> Table:
    """The per-layer rows (core.read.queries.layer_rows) as a table; columns None in every row, and kinds
    no layer has, are left out."""
    table = Table(title=Text(str(heading)) if isinstance(heading, str) else heading, header_style="bold",
                  box=box.SIMPLE_HEAD, padding=0, pad_edge=False)
    hidden = {k.name for k in kinds.KINDS} - {k.name for k in shown_kinds(rows)}
    cols = [(k, h, kind) for k, h, kind in REPORT_COLUMNS
            if k not in hidden and any(r.get(k) is not None for r in rows)]
    for key, header, _ in cols:
        table.add_column(header, justify="right" if key != "layer" else "left", no_wrap=True)
    for row in rows:
        table.add_row(*[report_cell(row, k, kind) for k, _, kind in cols])
    return table


def metric_text(metric: str, value: Any) -> str:
    if value is None:
        return CLI_MISSING
    if metric.endswith("_frac") or metric.endswith("_share"):
        return percent(value)
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def compare_table(rows: Sequence[CompareRow], metric: str) -> Table:
    """One metric of core.read.queries.compare_rows: a column per model, a row per relative depth."""
    models = list(rows[0]["models"]) if rows else []
    table = Table(title=Text(f"{metric} by relative depth"), header_style="bold")
    table.add_column("depth", justify="right")
    for name in models:
        table.add_column(Text(name), justify="right")
    for row in rows:
        table.add_row(f"{row['depth']:.2f}", *[metric_text(metric, row["models"][m].get(metric)) for m in models])
    return table


def plain(value: int | None, missing: str = MISSING) -> str:
    return missing if value is None else str(value)


def neurons_table(rows: Sequence[TableRow]) -> Table:
    """`neuron-tui neurons` rows (core.read.queries.LayerTable.row) as a table."""
    table = Table(header_style="bold", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for header, justify in (("L", "right"), ("N", "right"), ("cat", "left"), ("rate", "right"), ("dist", "right"),
                            ("triggers", "left"), ("pos MI", "right"), ("supp", "right")):
        table.add_column(header, justify=justify, no_wrap=header != "triggers", overflow="ellipsis")
    for r in rows:
        table.add_row(str(r["layer"]), str(r["neuron"]), " ".join(r["categories"]) or CLI_MISSING, fmt_rate(r["rate"]),
                      plain(r["distinct"], CLI_MISSING), Text(r["triggers"] or CLI_MISSING),
                      mi_text(r["pos_mi"], CLI_MISSING), rank_text(r["supp_rank"], CLI_MISSING))
    return table


def neurons_csv(rows: Sequence[TableRow], keys: Sequence[str]) -> str:
    """`neurons --csv`: one line per neuron, categories space-separated."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(keys), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "categories": " ".join(r["categories"])})
    return out.getvalue()


# ---- the layer screen ---------------------------------------------------------------------------------------

CATEGORY_STYLES = {**{k.letter: Style.parse(k.style) for k in kinds.KINDS}, "·": Style(dim=True)}
FILTER_LABELS = (("all", "all"), *((k.name, k.filter_label) for k in kinds.KINDS), ("marked", "Marked"))


def table_cell(row: Row, key: str) -> str:
    """The text of a neuron table's cell (the category letters and the id are drawn by the table)."""
    unknown = row.distinct < 0  # no analysis
    if key == "rate":
        return fmt_rate(row.rate)
    if key == "distinct":
        return plain(None if unknown else row.distinct)
    if key == "top":
        return row.top or (MISSING if unknown else "")
    if key == "pos":
        return mi_text(None if math.isnan(row.pos_mi) else row.pos_mi)
    if key == "supp":
        return rank_text(row.supp)
    return ""


def layer_heading(info: SummaryInfo, layer: int, state: ViewState, sort_title: str, shown: int | None) -> Text:
    """The layer screen's title: the layer, how many neurons the view holds (None: loading), the sort,
    the search."""
    count = "…" if shown is None else f"{shown:,} of {info.n_neurons:,}"
    text = f"L{layer}/{info.n_layers - 1} · {count} neurons · sort {sort_title} {'▼' if state.descending else '▲'}"
    if state.query:
        text += f" · search {state.query!r}"
    return title_bar(info, text)


def filter_bar(info: SummaryInfo, state: ViewState, counts: dict[str, int]) -> Text:
    """Every filter with its count in the layer (the key is its underlined first letter), the current
    one reversed; filters that need the analysis are dimmed without one."""
    bar = Text(no_wrap=True, overflow="ellipsis")
    for name, label in FILTER_LABELS:
        count = counts.get(name)
        needs = name in kinds.NEED_ANALYSIS and not info.has_analysis
        value = MISSING if needs or count is None else f"{count:,}"
        style = "bold reverse" if state.filter == name else ("dim" if needs else "")
        bar.append(" ")
        bar.append(label[0], style=(style + " bold underline").strip())
        bar.append(f"{label[1:]} {value}", style=style)
    return bar


# ---- the overview -------------------------------------------------------------------------------------------

def info_grid(info: SummaryInfo) -> Table:
    """Model, corpus, tokens, rule, layers, file: the overview's first lines."""
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    grid.add_row("model", Text(f"{info.model} ({info.architecture})"), "corpus", Text(info.corpus))
    grid.add_row("tokens", f"{info.n_tokens:,} ({info.n_seq:,} × {info.seq_len})", "rule", info.rule_text)
    grid.add_row("layers", f"{info.n_layers} × {info.n_neurons:,} neurons", "file", Text(info.path.name))
    return grid


def depth_bar_cell(count: int | None, total: int, scale: float, width: int, show_count: bool) -> Text:
    """One overview cell: percentage (and count) of the layer, plus a bar whose full width is `scale`
    (the column's largest share, which its header shows)."""
    if count is None:
        return Text(MISSING.center(width), style="dim")
    frac = count / total if total else 0.0
    pct = share_text(frac)
    label = f"{count:>6,} {pct:>5}" if show_count else f"{pct:>5}"
    bar_w = max(1, width - len(label) - 1)
    text = Text(label + " ")
    text.append(hbar(frac / scale if scale > 0 else 0.0, bar_w), style="bold")
    return text


def overview_table(rows: Sequence[LayerRow], width: int) -> tuple[list[tuple[str, str, int | None]], list[list[Text]]]:
    """The overview's columns (label, key, width or None) and cells for a screen `width` cells wide: a
    bar per kind of neuron whose header gives the share its full bar stands for; from 120 cells also
    the layer's size, alive rate and token coverage. Kinds no layer has take no column (`shown_kinds`)."""
    width = max(40, width - 2)
    wide = width >= 120
    bars = [(k.name, k.column) for k in shown_kinds(rows)]
    bar_w = max(6, (width - 5 - (36 if wide else 0)) // max(1, len(bars)) - 2)
    columns: list[tuple[str, str, int | None]] = [("L", "layer", None)]
    if wide:
        columns.append(("neurons", "neurons", None))
    scale = {}
    for key, label in bars:
        fracs = [r[f"{key}_frac"] for r in rows if r[f"{key}_frac"] is not None]
        scale[key] = max(fracs) if fracs else 0.0
        head = f"{label} ≤{share_text(scale[key])}" if scale[key] > 0 else label
        columns.append((head[:bar_w].ljust(bar_w), key, bar_w))
    if wide:
        columns += [("alive rate", "rate", None), ("covered", "covered", None), ("new", "new", None)]
    cells = []
    for r in rows:
        line = [Text(str(r["layer"]), justify="right")]
        if wide:
            line.append(Text(f"{r['neurons']:,}", justify="right"))
        line += [depth_bar_cell(r[key], r["neurons"], scale[key], bar_w, bar_w >= 20) for key, _ in bars]
        if wide:
            line += [Text(fmt_rate(r["alive_rate"]), justify="right"),
                     *(Text(MISSING if r[k] is None else f"{r[k]:,}", justify="right") for k in ("covered", "new"))]
        cells.append(line)
    return columns, cells


def layer_summary(row: LayerRow, shown: Sequence[kinds.Kind] = kinds.KINDS) -> str:
    """One line about a layer: its size, the count and share of each kind `shown`, the alive rate, the
    coverage."""
    def part(name: str, value: int | None) -> str:
        return f"{name} {value:,} ({100 * value / row['neurons']:.1f}%)" if value is not None else f"{name} {MISSING}"

    bits = [f"L{row['layer']}: {row['neurons']:,} neurons", *(part(k.label, row[k.name]) for k in shown),
            f"alive fire at {fmt_rate(row['alive_rate'])}"]
    if row["covered"] is not None:
        bits.append(f"covers {row['covered']:,} tokens ({row['new']:,} new)")
    return " · ".join(bits)


@dataclass(frozen=True)
class Curve:
    """One curve of the overview's plot view: its title, its values over depth (None: unknown, no
    analysis) and how the top of its scale reads."""

    title: Text
    values: np.ndarray | None
    scale_text: Callable[[float], str]


def depth_curves(figures: Sequence[Figure]) -> list[Curve]:
    """The curves of core.read.figures.depth_figures for one summary, titled, unknown values as 0."""
    out = []
    for figure in figures:
        scale_text = share_text if figure.share else (lambda v: f"{v:,.0f}")
        for panel in figure.panels:
            values = panel.series[0].y
            name = figure.title + (f" · {panel.title}" if panel.title else "")
            if all(v is None for v in values):
                unknown = Text.assemble((name, "bold"), (f"  {MISSING} (no analysis)", "dim"))
                out.append(Curve(unknown, None, scale_text))
                continue
            top = max(v for v in values if v is not None)
            title = Text.assemble((name, "bold"), (f"  {panel.ylabel} · scale 0 … {scale_text(top)}", "dim"))
            out.append(Curve(title, np.array([0.0 if v is None else v for v in values]), scale_text))
    return out
