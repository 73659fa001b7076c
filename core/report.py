"""Per-layer tables and per-neuron records of a summary: pure functions, no printing.

`layer_rows(summary)` gives one dict per layer (counts and fractions of dead / rare / token / n-gram /
positional neurons, firing-rate quantiles, token coverage over depth, trigger suppression);
`report_table(rows, title)` turns them into a rich Table; `compare_rows(summaries)` lines several
models up on relative depth (`compare_table` shows one metric of it); `neuron_record(summary, layer,
index)` is everything about one neuron as a JSON-ready dict (the `neuron-tui neuron --json` output)
and `neuron_panel(record)` its rich rendering.

Without an analysis group only the columns computable from the counts are filled (neurons, dead,
rare with the default threshold, firing-rate quantiles); the others are None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Group
from rich.panel import Panel
from rich import box
from rich.table import Table
from rich.text import Text

from neuron_tui.cache import Summary, schema

from . import analysis as _analysis
from .accumulators import token_levels
from .analysis import AnalysisParams

CATEGORIES = ("dead", "rare", "token", "ngram", "positional")
_FLAG_OF = {name: bit for bit, name in schema.FLAG_NAMES.items()}

# columns of report_table: (row key, header, kind) where kind "count" shows count and percent
# The terminal table fits 80 columns: category columns show the share of the layer's neurons (the
# counts are in --json), firing rates the median and 99th percentile over the layer's neurons.
_COLUMNS = (
    ("layer", "L", "int"),
    ("dead", "dead", "count"),
    ("rare", "rare", "count"),
    ("token", "token", "count"),
    ("ngram", "ngram", "count"),
    ("positional", "posit", "count"),
    ("fire_p50", "rate50", "rate"),
    ("fire_p99", "rate99", "rate"),
    ("covered", "cover", "int"),
    ("new", "new", "int"),
    ("supp_share", "supp", "share"),
    ("neg_share", "neg", "share"),
)


def _params(summary: Summary) -> AnalysisParams:
    attrs = summary.group_attrs(schema.ANALYSIS_GROUP)
    if "params" in attrs:
        try:
            return AnalysisParams.from_json(attrs["params"])
        except (ValueError, TypeError):
            pass
    return AnalysisParams()


def _has_analysis(summary: Summary) -> bool:
    return summary.has(f"{schema.ANALYSIS_GROUP}/flags")


def _has_projection(summary: Summary) -> bool:
    return summary.has(f"{schema.PROJECTION_GROUP}/suppressed_tok")


def _float(x: Any) -> float | None:
    """A JSON-safe float: None for NaN / inf."""
    x = float(x)
    return x if math.isfinite(x) else None


def layer_rows(summary: Summary) -> list[dict]:
    """One dict per layer; see the module docstring. Fractions are of the layer's neurons."""
    L, F, N = summary.n_layers, summary.n_neurons, max(summary.n_tokens, 1)
    params = _params(summary)
    has = _has_analysis(summary)
    a = schema.ANALYSIS_GROUP
    per_layer = {}
    if has:
        for name in ("layer_covered", "layer_new", "layer_new_vs_prev", "layer_supp_share", "layer_neg_share"):
            path = f"{a}/{name}"
            per_layer[name] = summary.read(path) if summary.has(path) else np.full(L, np.nan)
    rows = []
    for layer in range(L):
        act = summary.read("act_count", layer)
        rate = act / N
        row: dict[str, Any] = {
            "layer": layer,
            "depth": layer / (L - 1) if L > 1 else 0.0,
            "neurons": F,
        }
        if has:
            flags = summary.read(f"{a}/flags", layer)
            counts = {name: int(((flags & _FLAG_OF[name]) > 0).sum()) for name in CATEGORIES}
        else:
            dead = act == 0
            counts = {"dead": int(dead.sum()), "rare": int((~dead & (act < params.rare_rate * N)).sum())}
            counts.update({name: None for name in ("token", "ngram", "positional")})
        for name in CATEGORIES:
            row[name] = counts[name]
            row[f"{name}_frac"] = None if counts[name] is None else counts[name] / F
        q = np.quantile(rate, [0.5, 0.9, 0.99]) if F else [np.nan] * 3
        row.update(fire_p50=_float(q[0]), fire_p90=_float(q[1]), fire_p99=_float(q[2]))
        if has:
            row.update(
                covered=int(per_layer["layer_covered"][layer]),
                new=int(per_layer["layer_new"][layer]),
                new_vs_prev=int(per_layer["layer_new_vs_prev"][layer]),
                supp_share=_float(per_layer["layer_supp_share"][layer]),
                neg_share=_float(per_layer["layer_neg_share"][layer]),
            )
        else:
            row.update(covered=None, new=None, new_vs_prev=None, supp_share=None, neg_share=None)
        rows.append(row)
    return rows


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


def report_table(rows: Sequence[dict], title: str = "") -> Table:
    """A rich Table of `layer_rows` output; columns that are None in every row are left out."""
    table = Table(title=title or None, header_style="bold", box=box.SIMPLE_HEAD, padding=0, pad_edge=False)
    cols = [(k, h, kind) for k, h, kind in _COLUMNS if any(r.get(k) is not None for r in rows)]
    for key, header, kind in cols:
        table.add_column(header, justify="right" if key != "layer" else "left", no_wrap=True)
    for row in rows:
        table.add_row(*[_cell(row, k, kind) for k, _, kind in cols])
    return table


def _model_names(summaries: Sequence[Summary]) -> list[str]:
    names = [str(s.attrs.get("model") or Path(s.path).stem) for s in summaries]
    seen: dict[str, int] = {}
    out = []
    for name, s in zip(names, summaries):
        if names.count(name) > 1:
            seen[name] = seen.get(name, 0) + 1
            name = f"{name} ({Path(s.path).stem})"
        out.append(name)
    return out


COMPARE_METRICS = (
    "dead_frac", "rare_frac", "token_frac", "ngram_frac", "positional_frac", "fire_p50", "covered", "new",
)


def compare_rows(summaries: Sequence[Summary | str | Path], n_points: int | None = None) -> list[dict]:
    """Several models lined up on relative depth (layer / (L - 1)).

    The grid has `n_points` depths from 0 to 1 (default: the largest layer count among the models);
    at each depth every model contributes its layer nearest to that depth. Each row is
    {"depth": x, "models": {name: {"layer": l, **that layer's row}}}.
    """
    opened = [s if isinstance(s, Summary) else Summary.open(s) for s in summaries]
    try:
        names = _model_names(opened)
        all_rows = [layer_rows(s) for s in opened]
        n = n_points or max((len(r) for r in all_rows), default=0)
        grid = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(n)
        out = []
        for x in grid:
            entry: dict[str, Any] = {"depth": float(x), "models": {}}
            for name, rows in zip(names, all_rows):
                if not rows:
                    continue
                L = len(rows)
                layer = int(np.floor(x * (L - 1) + 0.5))  # nearest layer, halves up
                entry["models"][name] = rows[layer]
            out.append(entry)
        return out
    finally:
        for s, original in zip(opened, summaries):
            if s is not original:
                s.close()


def compare_table(rows: Sequence[dict], metric: str = "dead_frac", title: str = "") -> Table:
    """A rich Table of one metric of `compare_rows` output: one column per model, one row per depth."""
    models = list(rows[0]["models"]) if rows else []
    table = Table(title=title or f"{metric} by relative depth", header_style="bold")
    table.add_column("depth", justify="right")
    for name in models:
        table.add_column(name, justify="right")
    for row in rows:
        cells = [f"{row['depth']:.2f}"]
        for name in models:
            r = row["models"].get(name)
            v = None if r is None else r.get(metric)
            cells.append("-" if v is None else (f"{100 * v:.1f}%" if metric.endswith("_frac") else f"{v:.3g}"))
        table.add_row(*cells)
    return table


# ---- one neuron ---------------------------------------------------------------------------------
def _text(vocab: list[str], token: int) -> str:
    return vocab[token] if 0 <= token < len(vocab) else ("<start>" if token == -1 else f"<{token}>")


def _neuron_analysis(summary: Summary, layer: int, index: int) -> dict[str, np.ndarray]:
    """The analysis arrays of one neuron: read from the analysis group, or computed on the spot."""
    a = schema.ANALYSIS_GROUP
    if _has_analysis(summary):
        out = {}
        for name in _analysis.PER_NEURON:
            path = f"{a}/{name}"
            if summary.has(path):  # [L, F] or [L, F, K]: the neuron is axis 1, not the last axis
                out[name] = np.asarray(summary.read(path, layer)[index])
        return out
    corpus = _analysis.Corpus.from_summary(summary)
    offsets = summary.read("event_offsets", layer)[index : index + 2]
    projection = None
    p = schema.PROJECTION_GROUP
    names = ("cand_tok", "cand_supp_rank", "cand_score")
    if all(summary.has(f"{p}/{n}") for n in names):
        projection = {n: summary.read(f"{p}/{n}", layer)[index][None] for n in names}
    res = _analysis.layer_analysis(
        corpus,
        AnalysisParams(),
        summary.read_neuron("act_count", layer, index)[None],
        summary.read_neuron("pos_count", layer, index)[:, None],
        summary.read("tokens_at_pos"),
        summary.read_neuron("event_level", layer, index)[None],
        offsets - offsets[0],
        summary.neuron_events(layer, index),
        summary.n_tokens,
        projection,
    )
    return {name: res[name][0] for name in _analysis.PER_NEURON}


def _contexts(
    summary: Summary, layer: int, index: int, events: np.ndarray, n: int, left: int, right: int
) -> list[dict]:
    vocab = summary.vocab
    T = summary.seq_len
    top_pos = summary.read_neuron("top_pos", layer, index)
    top_val = summary.read_neuron("top_val", layer, index)
    chosen: list[tuple[int, float | None, str]] = []
    for g, v in zip(top_pos, top_val):
        if g >= 0 and len(chosen) < n:
            chosen.append((int(g), _float(v), "top"))
    if len(chosen) < n and events.size:
        have = {g for g, _, _ in chosen}
        picks = np.unique(np.linspace(0, events.size - 1, min(events.size, 2 * n)).round().astype(int))
        for g in events[picks]:
            if len(chosen) >= n:
                break
            if int(g) not in have:
                chosen.append((int(g), None, "event"))
                have.add(int(g))
    out = []
    for g, value, source in chosen:
        ids, at = summary.context(g, left=left, right=right)
        ids = [int(t) for t in ids]
        out.append(
            {
                "position": g,
                "seq": g // T,
                "pos": g % T,
                "left": "".join(_text(vocab, t) for t in ids[:at]),
                "token": _text(vocab, ids[at]),
                "right": "".join(_text(vocab, t) for t in ids[at + 1 :]),
                "value": value,
                "source": source,
            }
        )
    return out


def neuron_record(
    summary: Summary, layer: int, index: int, n_contexts: int = 5, left: int = 12, right: int = 4
) -> dict:
    """Everything about one neuron, JSON-ready (README documents the keys).

    Keys: layer, index, categories (list from dead, rare, token, ngram, positional), act_count,
    fire_rate, triggers [{token, text, count, count_se, p_fire, supp_rank, explains}], ngrams
    [{prev, prev_text, token, text, count}], promoted / suppressed [{token, text, score, is_trigger}],
    position_rate (firing rate per position; None where no token was seen), pos_mi, pos_shape,
    event_level, contexts [{position, seq, pos, left, token, right, value, source}].
    """
    L, F = summary.n_layers, summary.n_neurons
    if not (0 <= layer < L and 0 <= index < F):
        raise IndexError(f"no neuron L{layer} N{index}: the summary has {L} layers x {F} neurons")
    vocab = summary.vocab
    act = int(summary.read_neuron("act_count", layer, index))
    level = int(summary.read_neuron("event_level", layer, index))
    events = np.asarray(summary.neuron_events(layer, index))
    res = _neuron_analysis(summary, layer, index)
    flags = int(res.get("flags", 0))
    categories = [name for name in CATEGORIES if flags & _FLAG_OF[name]]

    # triggers, with the standard error of sampled counts (module docstring of analysis)
    corpus_occ = None
    triggers = []
    trig_tok = res.get("trig_tok", np.zeros(0, np.int64))
    valid = [j for j, t in enumerate(trig_tok) if t >= 0]
    if valid:  # occurrences outside the BOS position, as the analysis counts them
        corpus_occ = summary.token_histogram()
        if int(summary.attrs.get("bos", 0)) == 1:
            tokens0 = summary.read("tokens")[: int(summary.attrs["n_seq"]), 0]
            corpus_occ = corpus_occ - np.bincount(tokens0, minlength=corpus_occ.size)
    for j in valid:
        tok = int(trig_tok[j])
        count = float(res["trig_count"][j])
        occ = int(corpus_occ[tok]) if corpus_occ is not None and tok < corpus_occ.size else 0
        se = 0.0  # level 0: every firing was kept, the count is exact
        if level > 0 and occ > 0:
            g = _positions_of(summary, tok)
            sampled = int((token_levels(g) >= level).sum())
            se = float(_analysis.count_stderr(count, occ, sampled))
        rank = int(res["trig_supp_rank"][j]) if "trig_supp_rank" in res else -1
        triggers.append(
            {
                "token": tok,
                "text": _text(vocab, tok),
                "count": count,
                "count_se": se,
                "p_fire": _float(res["trig_pfire"][j]),
                "supp_rank": rank if rank >= 0 else None,
                "explains": bool(res["trig_explains"][j]) if "trig_explains" in res else None,
            }
        )
    trigger_ids = {t["token"] for t in triggers}

    ngrams = []
    if "ngram_tok" in res:
        for prev, tok, count in zip(res["ngram_prev"], res["ngram_tok"], res["ngram_count"]):
            if tok < 0:
                continue
            ngrams.append(
                {
                    "prev": int(prev),
                    "prev_text": _text(vocab, int(prev)),
                    "token": int(tok),
                    "text": _text(vocab, int(tok)),
                    "count": float(count),
                }
            )

    promoted, suppressed = [], []
    if _has_projection(summary):
        p = schema.PROJECTION_GROUP
        for key, target in (("promoted", promoted), ("suppressed", suppressed)):
            toks = summary.read(f"{p}/{key}_tok", layer)[index]  # [L, F, k]
            scores = summary.read(f"{p}/{key}_score", layer)[index]
            for tok, score in zip(toks, scores):
                target.append(
                    {
                        "token": int(tok),
                        "text": _text(vocab, int(tok)),
                        "score": _float(score),
                        "is_trigger": int(tok) in trigger_ids,
                    }
                )

    pos_count = summary.read_neuron("pos_count", layer, index).astype(np.float64)
    tap = summary.read("tokens_at_pos").astype(np.float64)
    position_rate = [(_float(c / n) if n > 0 else None) for c, n in zip(pos_count, tap)]
    shape = int(res.get("pos_shape", 0))
    return {
        "layer": int(layer),
        "index": int(index),
        "categories": categories,
        "act_count": act,
        "fire_rate": act / max(summary.n_tokens, 1),
        "event_level": level,
        "n_events": int(events.size),
        "triggers": triggers,
        "ngrams": ngrams,
        "promoted": promoted,
        "suppressed": suppressed,
        "position_rate": position_rate,
        "pos_mi": _float(res["pos_mi"]) if "pos_mi" in res else None,
        "pos_shape": schema.POS_SHAPES[shape] if shape < len(schema.POS_SHAPES) else "other",
        "contexts": _contexts(summary, layer, index, events, n_contexts, left, right),
    }


def _positions_of(summary: Summary, token: int) -> np.ndarray:
    """Global positions of `token` outside the BOS position (for the sampled count's error)."""
    n_seq, T = int(summary.attrs["n_seq"]), summary.seq_len
    flat = summary.read("tokens")[:n_seq].reshape(-1)
    g = np.flatnonzero(flat == token)
    if int(summary.attrs.get("bos", 0)) == 1:
        g = g[g % T != 0]
    if summary.has("seq_index"):  # a shard: rows hold these global sequences
        g = summary.read("seq_index")[:n_seq][g // T].astype(np.int64) * T + g % T
    return g


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


def _show(text: str) -> str:
    """Token text for display: whitespace made visible."""
    return text.replace("\n", "\\n").replace("\t", "\\t")


def neuron_panel(record: dict) -> Panel:
    """A rich rendering of `neuron_record` output: triggers, n-grams, updates (triggers in bold
    red), the position profile and example contexts (the firing token highlighted)."""
    r = record
    head = Text()
    head.append(f"L{r['layer']} N{r['index']}  ", style="bold")
    head.append(", ".join(r["categories"]) or "no category", style="bold magenta")
    head.append(f"   fired {r['act_count']:,} times (rate {r['fire_rate']:.3g})")
    if r.get("pos_mi") is not None:
        head.append(f"   I(fired; pos) {r['pos_mi']:.3f} nats, shape {r.get('pos_shape', 'none')}")
    parts: list[Any] = [head]

    trig = Table(title="triggers", title_justify="left", header_style="bold", box=None, pad_edge=False)
    for col in ("token", "count", "P(fire|token)", "supp. rank"):
        trig.add_column(col, justify="left" if col == "token" else "right")
    for t in r["triggers"]:
        count = f"{t['count']:.0f}" + (f" ± {t['count_se']:.0f}" if t.get("count_se") else "")
        p = "-" if t["p_fire"] is None else f"{t['p_fire']:.2f}"
        rank = "-" if t["supp_rank"] is None else str(t["supp_rank"])
        style = "bold" if t.get("explains") else ""
        trig.add_row(Text(repr(_show(t["text"])), style=style), count, p, rank)
    parts.append(trig if r["triggers"] else Text("no triggers (no kept firing events)"))

    if r["ngrams"]:
        ng = Table(title="bigram contexts", title_justify="left", header_style="bold", box=None, pad_edge=False)
        ng.add_column("previous")
        ng.add_column("token")
        ng.add_column("count", justify="right")
        for n in r["ngrams"]:
            ng.add_row(repr(_show(n["prev_text"])), repr(_show(n["text"])), f"{n['count']:.0f}")
        parts.append(ng)

    if r["promoted"] or r["suppressed"]:
        upd = Table(title="FFN update: promoted / suppressed", title_justify="left", header_style="bold", box=None)
        upd.add_column("promoted")
        upd.add_column("score", justify="right")
        upd.add_column("suppressed")
        upd.add_column("score", justify="right")
        for a, b in zip(r["promoted"], r["suppressed"]):
            cells = []
            for x in (a, b):
                cells.append(Text(repr(_show(x["text"])), style="bold red" if x["is_trigger"] else ""))
                cells.append("-" if x["score"] is None else f"{x['score']:.3f}")
            upd.add_row(*cells)
        parts.append(upd)

    parts.append(Text("firing rate by position  ") + Text(sparkline(r["position_rate"]), style="cyan"))

    if r["contexts"]:
        parts.append(Text("contexts", style="bold"))
        for c in r["contexts"]:
            line = Text(f"  s{c['seq']}:{c['pos']:<5} ")
            line.append(_show(c["left"][-60:]))
            line.append(_show(c["token"]), style="bold reverse")
            line.append(_show(c["right"][:30]))
            parts.append(line)
    return Panel(Group(*parts), title="neuron", expand=False)
