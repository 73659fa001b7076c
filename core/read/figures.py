"""What the paper's figures plot, for one or several summaries (`neuron-tui figures`, the overview's
plot view): every number comes from the same queries as `report --json` and `neuron --json`.

A figure is a list of panels; a panel holds one series per model, lined up by relative depth
layer / (L - 1) (or, for the positional profiles, by position). The per-layer figures follow the
paper's sections: dead neurons and the firing frequency of the alive ones; token detectors, the
vocabulary they cover, the new tokens over depth and the cumulative coverage; the share of
detectors that suppress their own triggers; positional neurons by type, and the firing-rate profiles
of the strongest positional neurons of the layer that has the most. Drawing is elsewhere
(tui/figures.py with matplotlib; the explorer's plot view): this module never imports a plotting
library, so the numbers can be checked and saved without one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from neuron_tui.cache import Summary, schema

from . import kinds
from .params import AnalysisParams
from .queries import POSITIONAL_TYPES, layer_rows, model_names, neuron_record

PROFILES_PER_TYPE = 3  # positional profiles drawn per type: the strongest by I(fired; position)
FAMILIES = ("prediction", "suppression", "entropy", "frequency", "mixed")  # the kinds named since the paper
HISTOGRAM_KINDS = ("token", "positional", *FAMILIES)  # kinds whose example neuron's firing values are drawn


@dataclass
class Series:
    """One model's line: `x` relative depth (or position), `y` the values (None: not known)."""

    model: str
    label: str  # legend text: the model and its corpus size
    x: list[float]
    y: list[float | None]
    layers: list[int] = field(default_factory=list)  # the layer of each point (depth figures)


@dataclass
class Panel:
    key: str  # the report --json row key plotted (or a name for derived values)
    ylabel: str
    series: list[Series]
    title: str = ""


@dataclass
class Figure:
    name: str  # the file name (without extension)
    title: str
    xlabel: str
    caption: str
    panels: list[Panel]
    share: bool = False  # y values are shares of 1 (drawn in percent)
    xscale: str = "linear"  # "symlog": x spans orders of magnitude on both sides of 0 (log-spaced bins)
    legend: bool = True  # one legend of the models; False where each panel's title names its one series

    def to_json(self) -> dict:
        return asdict(self)


def tokens_label(n: int) -> str:
    """65,536 -> '65.5k', 4,194,304 -> '4.19M' (legend text)."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def _depth_panel(key: str, ylabel: str, runs: list[tuple[str, str, list[dict]]], title: str = "",
                 values=None) -> Panel:
    series = []
    for model, label, rows in runs:
        y = values(rows) if values else [row[key] for row in rows]
        series.append(Series(model, label, [row["depth"] for row in rows], y, [row["layer"] for row in rows]))
    return Panel(key, ylabel, series, title)


def _cumulative(rows: list[dict]) -> list[float | None]:
    """Vocabulary items covered by a token detector at or below each layer (a running sum of `new`)."""
    if any(row["new"] is None for row in rows):
        return [None] * len(rows)
    return [float(v) for v in np.cumsum([row["new"] for row in rows])]


def overall_suppression(runs: list[tuple[str, str, list[dict]]]) -> str:
    """The shares over all layers, per model: 'All layers: M 83% negative, 70% top-10, of 120 detectors.'"""
    parts = []
    for model, _, rows in runs:
        known = [(r["detectors_known"], r["neg_share"], r["supp_share"]) for r in rows if r["detectors_known"]]
        n = sum(k for k, _, _ in known)
        if n:
            neg = sum(k * (v or 0.0) for k, v, _ in known) / n
            supp = sum(k * (v or 0.0) for k, _, v in known) / n
            parts.append(f"{model} {neg:.0%} negative, {supp:.0%} top-10, of {n:,} detectors")
    return f"All layers: {'; '.join(parts)}." if parts else ""


def depth_figures(summaries: Sequence[Summary], rows: Sequence[list[dict]] | None = None) -> list[Figure]:
    """The per-layer figures (panels of series over relative depth), from `layer_rows` (`rows`: those
    already read, one list per summary, as the explorer's overview holds them)."""
    names = model_names(summaries)
    rows = rows if rows is not None else [layer_rows(s) for s in summaries]
    runs = [(name, f"{name} ({tokens_label(s.n_tokens)} tokens)", r) for name, s, r in zip(names, summaries, rows)]
    depth = "relative depth, layer / (layers - 1)"
    pos_panels = [_depth_panel("positional", "positional neurons", runs, "all types")]
    pos_panels += [_depth_panel(f"pos_{t.replace('-', '_')}", "neurons", runs, t.replace("-", " ")) for t in POSITIONAL_TYPES]
    return [
        Figure("dead", "Dead, silent and faint neurons", depth,
               "Share of each layer's neurons. Dead: the activation is exactly 0 on every token of the corpus "
               "(the paper's dead neurons: a ReLU neuron that never fired). Silent: not dead, but never above "
               "the layer's firing threshold tau (gated models' threshold rule). Faint: not dead, but its largest "
               "|h| stays under a tenth of the layer's typical largest |h| (docs/design.md).",
               [_depth_panel("dead_frac", "share of the layer", runs, "dead"),
                _depth_panel("silent_frac", "share of the layer", runs, "silent (never above tau)"),
                _depth_panel("faint_frac", "share of the layer", runs, "faint")], share=True),
        Figure("alive_rate", "Firing frequency of alive neurons", depth,
               "Mean over a layer's alive neurons of the share of tokens on which each fired.",
               [_depth_panel("alive_rate", "mean firing frequency", runs)], share=True),
        Figure("token_detectors", "Token-detecting neurons", depth,
               "Neurons that fire only on a small set of tokens (the analysis' detector criterion).",
               [_depth_panel("token", "token detectors", runs)]),
        Figure("coverage", "Tokens covered by token detectors", depth,
               "Covered: vocabulary items some detector of the layer covers; new: not covered by any lower "
               "layer; cumulative: covered at or below the layer.",
               [_depth_panel("covered", "tokens", runs, "covered by the layer"),
                _depth_panel("new", "tokens", runs, "new (not covered lower)"),
                _depth_panel("cumulative", "tokens", runs, "cumulative coverage", values=_cumulative)]),
        Figure("suppression", "Detectors that suppress their own triggers", depth,
               "Share of a layer's token detectors whose update lowers the score of all their triggers "
               "(negative score, the paper's headline) or puts them among its 10 most suppressed tokens. "
               + overall_suppression(runs),
               [_depth_panel("neg_share", "share of detectors", runs, "triggers scored negative"),
                _depth_panel("supp_share", "share of detectors", runs, "triggers in the top-10 suppressed")],
               share=True),
        Figure("positional", "Positional neurons", depth,
               "Neurons whose firing depends on the position (mutual information with the position "
               "over the threshold), in all and by the paper's types (docs/design.md).", pos_panels),
        Figure("families", "Neuron families named since the paper", depth,
               "Share of each layer's neurons of each family (docs/design.md, \"Beyond the paper\"): prediction "
               "and suppression neurons (Gurnee et al. 2024: they cluster in the last layers, suppression after "
               "prediction), entropy and token-frequency neurons (Stolfo et al. 2024), gated neurons whose "
               "firings split across sign cases (GLUScope).",
               [_depth_panel(f"{k}_frac", "share of the layer", runs, kinds.BY_NAME[k].noun + "s")
                for k in FAMILIES], share=True),
    ]


def profile_figure(summary: Summary, name: str) -> Figure | None:
    """Firing rate by position of the strongest positional neurons (by I(fired; position)) of the
    layer with the most positional neurons, one panel per type; None without positional neurons."""
    group = summary.analysis
    if group is None:
        return None
    counts = [int(np.count_nonzero(kinds.has(group.read("flags", l), "positional"))) for l in range(summary.n_layers)]
    if not any(counts):
        return None
    layer = int(np.argmax(counts))
    flags, shape, mi = group.read("flags", layer), group.read("pos_shape", layer), group.read("pos_mi", layer)
    strong = group.read("pos_strong", layer)
    params = AnalysisParams.of(summary)
    panels = []
    for code, kind in enumerate(schema.POS_SHAPES):
        if not code:
            continue
        chosen = np.flatnonzero(kinds.has(flags, "positional") & (shape == code))
        chosen = chosen[np.argsort(-mi[chosen], kind="stable")][:PROFILES_PER_TYPE]
        series = []
        for neuron in chosen:
            rates = neuron_record(summary, layer, int(neuron), params)["position_rate"]
            label = f"N{int(neuron)} ({'strong' if strong[neuron] else 'weak'})"
            series.append(Series(name, label, [float(t) for t in range(len(rates))], rates, [layer] * len(rates)))
        panels.append(Panel(f"profile_{kind.replace('-', '_')}", "firing rate", series, kind.replace("-", " ")))
    title = f"Positional neurons of {name} ({tokens_label(summary.n_tokens)} tokens), layer {layer}"
    return Figure(f"profiles_{_slug(name)}", title, "position in the sequence",
                  f"Firing rate at each position of the {PROFILES_PER_TYPE} strongest positional neurons of each "
                  f"type in layer {layer}, the layer with the most positional neurons ({counts[layer]}).",
                  panels, share=True)


def histogram_figure(summary: Summary, name: str) -> Figure | None:
    """The distribution of firing values of one example neuron of each kind the summary has (the one
    with the most firings among them): the histogram the pass counts in fixed bins. None without
    histograms or an analysis."""
    group = summary.analysis
    if group is None or not summary.has("hist_count"):
        return None
    best: dict[str, tuple[int, int, int]] = {}  # kind -> (firings, layer, neuron)
    for layer in range(summary.n_layers):
        flags, act = group.read("flags", layer), summary.read("act_count", layer)
        for kind in HISTOGRAM_KINDS:
            mine = np.flatnonzero(kinds.has(flags, kind) & (act > 0))
            if mine.size:
                i = int(mine[np.argmax(act[mine])])
                if int(act[i]) > best.get(kind, (-1, 0, 0))[0]:
                    best[kind] = (int(act[i]), layer, i)
    if not best:
        return None
    panels = []
    for kind, (_, layer, neuron) in best.items():
        edges = summary.read("hist_edges", layer).astype(np.float64)
        counts = summary.read("hist_count", layer)[:, neuron]
        filled = np.flatnonzero(counts)  # the bins from the first to the last that holds firings, and one each side
        keep = slice(max(0, filled[0] - 1), min(len(counts), filled[-1] + 2))
        centres = ((edges[:-1] + edges[1:]) / 2)[keep].tolist()
        series = [Series(name, f"L{layer} N{neuron}", centres, [float(c) for c in counts[keep]],
                         [layer] * len(centres))]
        panels.append(Panel(f"histogram_{kind}", "firings", series, f"{kinds.BY_NAME[kind].noun}: L{layer} N{neuron}"))
    return Figure(f"histograms_{_slug(name)}", f"Firing values of {name} ({tokens_label(summary.n_tokens)} tokens)",
                  "activation h when the neuron fired",
                  "Firings of one neuron of each kind (the one that fired most) in the summary's fixed bins of "
                  "firing values (the bins from its first to its last firing), counted exactly in the pass (a "
                  "gated neuron fires on both sides of +-tau); x on a log scale both sides of 0, as the bins are "
                  "spaced.",
                  panels, xscale="symlog", legend=False)


def figure_data(summaries: Sequence[Summary]) -> list[Figure]:
    """Every figure for these summaries: the depth figures, then per model the positional profiles and
    the firing-value histograms it has."""
    figures = depth_figures(summaries)
    for name, s in zip(model_names(summaries), summaries):
        for figure in (profile_figure(s, name), histogram_figure(s, name)):
            if figure is not None:
                figures.append(figure)
    return figures


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name).strip("_") or "model"
