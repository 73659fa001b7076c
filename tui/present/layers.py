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
from rich.console import Group
from rich.style import Style
from rich.table import Table
from rich.text import Text

from neuron_tui.core.read import kinds
from neuron_tui.core.read.queries import present_kinds
from neuron_tui.core.read.tokens import visible

from .columns import Column, ColumnTable
from .formats import (
    CLI_MISSING,
    MISSING,
    count_text,
    depth_text,
    fmt_rate,
    mi_text,
    rank_text,
    share_text,
    title_bar,
    value_text,
)
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


def report_title(attrs: dict, notes: Sequence[str]) -> Text:
    """`model: N tokens, rule ...` and the summary's notes (core.read.queries.summary_notes), as plain text."""
    text = Text(f"{attrs.get('model')}: {count_text(int(attrs.get('n_tokens', 0)))} tokens, rule {attrs.get('rule')} "
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
        return (share_text(frac) if value else CLI_MISSING) if frac is not None else count_text(value)
    if kind == "rate":
        return fmt_rate(value)
    if kind == "share":
        return share_text(value)
    return count_text(value)


def report_table(rows: Sequence[LayerRow], heading: Text | str = "") -> ColumnTable:
    """The per-layer rows (core.read.queries.layer_rows) as a table; columns None in every row, and kinds
    no layer has, are left out."""
    hidden = {k.name for k in kinds.KINDS} - {k.name for k in present_kinds(rows)}
    cols = [(k, h, kind) for k, h, kind in REPORT_COLUMNS
            if k not in hidden and any(r.get(k) is not None for r in rows)]
    columns = [Column(h, "left" if k == "layer" else "right") for k, h, _ in cols]
    return ColumnTable(columns, [[report_cell(row, k, kind) for k, _, kind in cols] for row in rows], heading or None)


def metric_text(metric: str, value: Any) -> str:
    if value is None:
        return CLI_MISSING
    if metric.endswith(("_frac", "_share")):
        return share_text(value)
    if metric.startswith("fire_") or metric == "alive_rate":
        return fmt_rate(value)
    return value_text(value) if isinstance(value, float) else count_text(value)


def compare_table(rows: Sequence[CompareRow], metric: str) -> ColumnTable:
    """One metric of core.read.queries.compare_rows: a column per model, a row per relative depth."""
    models = list(rows[0]["models"]) if rows else []
    return ColumnTable([Column("depth"), *(Column(name) for name in models)],
                       [[depth_text(row["depth"]), *(metric_text(metric, row["models"][m].get(metric)) for m in models)]
                        for row in rows], f"{metric} by relative depth")


def analysis_changes(before: Sequence[LayerRow], after: Sequence[LayerRow]) -> ColumnTable | None:
    """`analyze`: the count of each kind per layer before → after (the same count once where it did not
    move), for the layers and kinds that changed and all layers together; None when nothing did."""
    moved = [k for k in kinds.KINDS if any(b[k.name] != a[k.name] for b, a in zip(before, after))]
    if not moved:
        return None

    def cell(old: int | None, new: int | None) -> str:
        return count_text(new, CLI_MISSING) if old == new else \
            f"{count_text(old, CLI_MISSING)} → {count_text(new, CLI_MISSING)}"

    rows = [[str(a["layer"]), *(cell(b[k.name], a[k.name]) for k in moved)] for b, a in zip(before, after)
            if any(b[k.name] != a[k.name] for k in moved)]

    def total(side: Sequence[LayerRow], name: str) -> int | None:
        values = [r[name] for r in side]
        return None if any(v is None for v in values) else sum(values)

    rows.append(["all", *(cell(total(before, k.name), total(after, k.name)) for k in moved)])
    return ColumnTable([Column("L", "left"), *(Column(k.report_column) for k in moved)], rows)


def kind_letters(names: Sequence[str]) -> str:
    """A neuron's kinds as their letters (`T`, `RP`): the category column of both neuron tables."""
    return "".join(kinds.BY_NAME[n].letter for n in names)


def triggers_text(texts: Sequence[str]) -> str:
    """A row's trigger texts in their visible form, space-separated (the text tables and CSV)."""
    return " ".join(visible(t) for t in texts)


NEURON_COLUMNS = (Column("L"), Column("N"), Column("cat", "left"), Column("rate"), Column("dist"),
                  Column("triggers", "left", flexible=True), Column("pos MI"), Column("supp"))


def neurons_table(rows: Sequence[TableRow]) -> ColumnTable:
    """`neuron-tui neurons` rows (core.read.table.LayerTable.row) as a table, titled with their count and
    the letters of the kinds they hold."""
    present = [k for k in kinds.KINDS if any(k.name in r["categories"] for r in rows)]
    title = f"{count_text(len(rows))} neuron{'s' if len(rows) != 1 else ''}"
    if present:
        title += " · cat: " + ", ".join(f"{k.letter} {k.label}" for k in present)
    cells = [[str(r["layer"]), str(r["neuron"]), kind_letters(r["categories"]) or CLI_MISSING, fmt_rate(r["rate"]),
              count_text(r["distinct"], CLI_MISSING), triggers_text(r["triggers"]) or CLI_MISSING,
              mi_text(r["pos_mi"], CLI_MISSING), rank_text(r["supp_rank"], CLI_MISSING)] for r in rows]
    return ColumnTable(NEURON_COLUMNS, cells, title)


def neurons_csv(rows: Sequence[TableRow], keys: Sequence[str]) -> str:
    """`neurons --csv`: one line per neuron, categories space-separated, triggers in their visible form."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(keys), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "categories": " ".join(r["categories"]), "triggers": triggers_text(r["triggers"])})
    return out.getvalue()


# ---- the layer screen ---------------------------------------------------------------------------------------

CATEGORY_STYLES = {k.letter: Style.parse(k.style) for k in kinds.KINDS}


def table_cell(row: Row, key: str) -> str:
    """The text of a neuron table's cell (the id is drawn by the table, which styles the letters)."""
    unknown = row.distinct < 0  # no analysis
    if key == "cat":
        return kind_letters(kinds.names_of(row.flags))
    if key == "rate":
        return fmt_rate(row.rate)
    if key == "distinct":
        return count_text(None if unknown else row.distinct)
    if key == "top":
        return row.top or (MISSING if unknown else "")
    if key == "pos":
        return mi_text(None if math.isnan(row.pos_mi) else row.pos_mi)
    if key == "supp":
        return rank_text(row.supp)
    return ""


def search_text(state: ViewState) -> str:
    """What the search looks for: `' of'` (the whole token) or `' of' in a token`."""
    return f"{state.query!r}" + (" in a token" if state.substring else "")


def layer_heading(info: SummaryInfo, layer: int, state: ViewState, sort_title: str, shown: int | None) -> Text:
    """The layer screen's title: the layer, how many neurons the view holds (None: loading), the sort,
    the search."""
    count = "…" if shown is None else f"{count_text(shown)} of {count_text(info.n_neurons)}"
    text = f"L{layer}/{info.n_layers - 1} · {count} neurons · sort {sort_title} {'▼' if state.descending else '▲'}"
    if state.query:
        text += f" · search {search_text(state)}"
    return title_bar(info, text)


def filter_label(name: str) -> str:
    """A filter's label: all, marked, or the kind's."""
    return kinds.BY_NAME[name].filter_label if name in kinds.BY_NAME else name


def filter_bar(info: SummaryInfo, state: ViewState, counts: dict[str, int], keys: dict[str, str],
               present: Sequence[str], width: int = 80) -> Text:
    """all, the kinds in `present` (those the summary has) and marked, each with its count in the layer
    and its key (`keys`: filter name -> key as bound; underlined in the label when the label starts
    with it), the current filter reversed (shown even when the summary has none of it), then the key
    of the picker of every kind (`keys["pick"]`); filters that need the analysis are dimmed without one.
    In `width` cells: kinds with none in this layer give way first, then the last kinds, then marked
    and all; never the current filter or the picker's key."""
    def entry(name: str) -> Text:
        count, label, key = counts.get(name), filter_label(name), keys.get(name, "")
        needs = name in kinds.NEED_ANALYSIS and not info.has_analysis
        style = "bold reverse" if state.filter == name else ("dim" if needs else "")
        out = Text(" ")
        if key:
            out.append(key, style=(style + " bold underline").strip())
            if label.startswith(key):
                label = label[len(key):]
            else:
                out.append(" ", style=style)
        out.append(f"{label} {MISSING if needs or count is None else count_text(count)}", style=style)
        return out

    pick = Text.assemble(f"  {keys.get('pick', 'f')}", " kinds…")
    pick.stylize("bold underline", 2, 2 + len(keys.get("pick", "f")))
    pick.stylize("dim", len(pick) - 7)
    shown = [k.name for k in kinds.KINDS if k.name in present or k.name == state.filter]
    entries = {name: entry(name) for name in ["all", *shown, "marked"]}
    room = width - 1 - pick.cell_len
    for drop in ([n for n in shown if not counts.get(n) and n != state.filter], reversed(shown), ["marked", "all"]):
        for name in drop:
            if sum(e.cell_len for e in entries.values()) <= room:
                break
            if name != state.filter:
                entries.pop(name, None)
    bar = Text(no_wrap=True, overflow="ellipsis")
    for part in entries.values():
        bar.append_text(part)
    bar.append_text(pick)
    return bar


FILTER_MEANINGS = {"all": "every neuron of the layer", "marked": "the neurons you marked (m)"}


def filter_choice(name: str, key: str, count: int | None, available: bool) -> Text:
    """One line of the picker of filters: its key, letter, name, count in the layer and meaning."""
    kind = kinds.BY_NAME.get(name)
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(f"{key:>2} ", style="bold")
    line.append(kind.letter if kind else " ", style=kind.style if kind else "")
    line.append(f" {filter_label(name):<10}")
    line.append(f"{MISSING if count is None or not available else count_text(count):>7}  ")
    meaning = kind.definition if kind else FILTER_MEANINGS[name]
    line.append(meaning if available else "needs the analysis: run neuron-tui analyze", style="dim")
    return line


def empty_message(layer: int, state: ViewState, counts: dict[str, int]) -> str:
    """What an empty view says: an empty layer, no neuron of the filter, or none the search finds."""
    if not counts.get("all"):
        return "empty layer"
    if state.filter == "marked" and not counts.get("marked"):
        what = "no marked neuron"
    elif state.filter in kinds.BY_NAME and not counts.get(state.filter):
        what = f"no {kinds.BY_NAME[state.filter].noun} neuron" if state.filter in ("dead", "silent", "faint", "rare") \
            else f"no {kinds.BY_NAME[state.filter].noun}"
    else:
        what = "no neuron"
    where = f" in L{layer}"
    if state.query and (state.filter == "all" or counts.get(state.filter)):
        return f"{what}{where} is triggered by {search_text(state)} · esc clears the search"
    return f"{what}{where} · a shows all {count_text(counts['all'])}"


# ---- the overview -------------------------------------------------------------------------------------------

def info_grid(info: SummaryInfo) -> Group:
    """Model, layers, tokens, file (two to a line), then the rule and the corpus each on a line of its
    own, so the rule is never cut: the overview's first lines."""
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column(style="bold", no_wrap=True, min_width=6)
    grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    grid.add_row("model", Text(f"{info.model} ({info.architecture})"), "layers",
                 f"{info.n_layers} × {count_text(info.n_neurons)} neurons")
    grid.add_row("tokens", f"{count_text(info.n_tokens)} ({count_text(info.n_seq)} × {info.seq_len})", "file",
                 Text(info.path.name))
    wide = Table.grid(padding=(0, 1), expand=True)
    wide.add_column(style="bold", no_wrap=True, min_width=6)
    wide.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    wide.add_row("rule", info.rule_text)
    wide.add_row("corpus", Text(info.corpus))
    return Group(grid, wide)


def share_scale(rows: Sequence[LayerRow]) -> float:
    """The share a full overview bar stands for: the largest share of a layer any shown kind reaches,
    one scale for every column, so bars compare across kinds and over depth."""
    fracs = [r[f"{k.name}_frac"] for k in present_kinds(rows) for r in rows if r[f"{k.name}_frac"] is not None]
    return max(fracs, default=0.0)


LABEL = 5  # a share as share_text writes it, at most `<0.1%`
MIN_BAR = 3  # narrower bars than this say nothing: the cell shows the share alone


def depth_bar_cell(count: int | None, total: int, scale: float, width: int, show_count: bool) -> Text:
    """One overview cell: percentage (and count) of the layer, plus a bar whose full width is `scale`
    (`share_scale`, which the overview's title shows) where at least MIN_BAR cells are left for it."""
    if count is None:
        return Text(MISSING.center(width), style="dim")
    frac = count / total if total else 0.0
    pct = share_text(frac)
    label = f"{count_text(count):>6} {pct:>5}" if show_count else f"{pct:>5}"
    bar_w = width - len(label) - 1
    if bar_w < MIN_BAR:
        return Text(label.rjust(width))
    text = Text(label + " ")
    text.append(hbar(frac / scale if scale > 0 else 0.0, bar_w), style="bold")
    return text


def _column_width(n_kinds: int, width: int) -> int:
    """Cells per kind column of an overview `width` cells wide (the layer column and, from 120 cells,
    three more columns take their share first)."""
    width = max(40, width - 2)
    return max(LABEL + 1, (width - 5 - (36 if width >= 120 else 0)) // max(1, n_kinds) - 2)


def overview_bars(rows: Sequence[LayerRow], width: int) -> bool:
    """Whether an overview `width` cells wide has room for bars beside the shares (80 columns and a
    dozen kinds have not: the shares alone, and the plot view `v` draws the trends)."""
    return _column_width(len(present_kinds(rows)), width) - LABEL - 1 >= MIN_BAR


def overview_table(rows: Sequence[LayerRow], width: int) -> tuple[list[tuple[str, str, int | None]], list[list[Text]]]:
    """The overview's columns (label, key, width or None) and cells for a screen `width` cells wide: a
    share and, where there is room (`overview_bars`), a bar per kind of neuron, all on one scale
    (`share_scale`); from 120 cells also the layer's size, alive rate and token coverage. Kinds no
    layer has take no column (`present_kinds`)."""
    wide = max(40, width - 2) >= 120
    bars = [(k.name, k.column) for k in present_kinds(rows)]
    bar_w = _column_width(len(bars), width)
    columns: list[tuple[str, str, int | None]] = [("L", "layer", None)]
    if wide:
        columns.append(("neurons", "neurons", None))
    scale = share_scale(rows)
    columns += [(label[:bar_w].ljust(bar_w), key, bar_w) for key, label in bars]
    if wide:
        columns += [("alive rate", "rate", None), ("covered", "covered", None), ("new", "new", None)]
    cells = []
    for r in rows:
        line = [Text(str(r["layer"]), justify="right")]
        if wide:
            line.append(Text(count_text(r["neurons"]), justify="right"))
        line += [depth_bar_cell(r[key], r["neurons"], scale, bar_w, bar_w >= 20) for key, _ in bars]
        if wide:
            line += [Text(fmt_rate(r["alive_rate"]), justify="right"),
                     *(Text(count_text(r[k]), justify="right") for k in ("covered", "new"))]
        cells.append(line)
    return columns, cells


def layer_summary(row: LayerRow, shown: Sequence[kinds.Kind] = kinds.KINDS) -> str:
    """One line about a layer: its size, the count and share of each kind `shown`, the alive rate, the
    coverage."""
    def part(name: str, value: int | None) -> str:
        return f"{name} {count_text(value)} ({share_text(value / row['neurons'])})" if value is not None \
            else f"{name} {MISSING}"

    bits = [f"L{row['layer']}: {count_text(row['neurons'])} neurons", *(part(k.label, row[k.name]) for k in shown),
            f"alive fire at {fmt_rate(row['alive_rate'])}"]
    if row["covered"] is not None:
        bits.append(f"covers {count_text(row['covered'])} tokens ({count_text(row['new'])} new)")
    return " · ".join(bits)


@dataclass(frozen=True)
class Curve:
    """One curve of the overview's plot view: its title, its values over depth (None: unknown, no
    analysis) and how the top of its scale reads."""

    title: Text
    values: np.ndarray | None
    scale_text: Callable[[float], str]


def depth_curves(figures: Sequence[Figure]) -> list[Curve]:
    """The curves of core.read.figures.depth_figures for one summary, titled, unknown values as 0; a
    curve the summary cannot know at all (no analysis, or statistics it lacks) is a title alone."""
    out = []
    for figure in figures:
        scale_text = share_text if figure.share else count_text
        for panel in figure.panels:
            values = panel.series[0].y
            name = figure.title + (f" · {panel.title}" if panel.title else "")
            if all(v is None for v in values):
                unknown = Text.assemble((name, "bold"), (f"  {MISSING} (not known for this summary)", "dim"))
                out.append(Curve(unknown, None, scale_text))
                continue
            top = max(v for v in values if v is not None)
            title = Text.assemble((name, "bold"), (f"  {panel.ylabel} · scale 0 … {scale_text(top)}", "dim"))
            out.append(Curve(title, np.array([0.0 if v is None else v for v in values]), scale_text))
    return out
