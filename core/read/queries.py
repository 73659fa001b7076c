"""Every answer the read side gives about a summary, each built by one function (no torch, no UI).

The command line (`report`, `neurons`, `neuron`), the explorer, its export and the Python API all call
these, so a number shown anywhere is the same number everywhere:

- `layer_rows(summary)`: one dict per layer (category counts and shares, firing rates, token coverage
  over depth, detector suppression, positional types): `report`, the overview, the figures;
- `compare_rows(summaries)`: several models lined up on relative depth (`report A.h5 B.h5`);
- `layer_table(summary, layer)` (core.read.table, re-exported here): a layer's neurons as numpy
  columns, which `LayerTable.select` filters, searches and sorts (`neurons`, the layer screen), and
  `select_layers` orders over every layer; `LayerTable.row(i)` is one neuron's table row;
- `neuron_record(summary, layer, index)`: everything about one neuron as a JSON-ready dict
  (`neuron --json`, the neuron screen, the export; `RECORD_KEYS` lists its keys).

Without an analysis group (a checkpoint) the per-layer columns that need it are None, and a neuron's
record is analysed on the spot with the default parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neuron_tui.cache import Summary, schema
from neuron_tui.core import fingerprint

from . import families, kinds
from .analysis import neuron_analysis
from .occurrences import count_stderr
from .params import AnalysisParams
from .records import Activation, CompareRow, Context, LayerRow, NeuronRecord, SignCase
from .table import (  # noqa: F401 - the layer table's names are answers too: re-exported
    CATEGORIES,
    DEFAULT_DESCENDING,
    FILTERS,
    SEARCH_MIN_LIFT,
    SEARCH_RULE,
    SORT_KEYS,
    TABLE_KEYS,
    TOP_SHOWN,
    LayerTable,
    TokenMatcher,
    categories,
    json_float,
    layer_table,
    rank_1based,
    select_layers,
)
from .tokens import token_text

POSITIONAL_TYPES = schema.POS_SHAPES[1:]  # oscillatory, both-extremes, one-extreme, other

N_CONTEXTS, CONTEXT_LEFT, CONTEXT_RIGHT = 8, 12, 4  # contexts of a neuron record: count, tokens around


# ---- what a summary is --------------------------------------------------------------------------------

def summary_notes(summary: Summary) -> list[str]:
    """What a reader should know before trusting the numbers (the report's title, the explorer's
    banner): a checkpoint, a shard, no analysis, a corpus that ran out, a model changed since, no
    checksums. Empty for a complete, analysed, verified summary of an unchanged model."""
    a, notes = summary.attrs, []
    if summary.shard != "0/1":
        notes.append(f"shard {summary.shard} of the corpus: merge the shards with `neuron-tui merge`")
    if not summary.complete:
        notes.append(f"PARTIAL: {summary.n_seq:,} of {int(a.get('n_seq_planned', summary.n_seq)):,} sequences "
                     "collected so far")
    if summary.analysis_outdated:
        notes.append(f"its analysis is from an older neuron-tui: counts only; run `neuron-tui analyze {summary.path}`")
    elif summary.analysis is None:
        notes.append(f"no analysis yet: counts only; run `neuron-tui analyze {summary.path}`")
    if a.get("corpus_exhausted"):
        notes.append(f"the corpus ran out after {summary.n_tokens:,} tokens "
                     f"({int(a.get('n_seq_planned', 0)) * summary.seq_len:,} asked for)")
    moved = fingerprint.changed(summary.json_attr("model_fingerprint"))
    if moved:
        notes.append(moved)
    if not summary.checksummed:
        notes.append(f"made by an older neuron-tui (schema {a.get('schema_version')}): read without checksums")
    return notes


# ---- per-layer rows ---------------------------------------------------------------------------------------

ROW_KEYS = {
    "layer": "layer index", "depth": "relative depth layer / (layers - 1)", "neurons": "neurons in the layer",
    "tau": "the layer's firing threshold (fired iff h > tau, or |h| > tau for the abs rule)",
    **{name: f"{name} neurons (null where the summary cannot decide it: no analysis, or statistics it lacks)"
       for name in CATEGORIES},
    **{f"{name}_frac": f"share of the layer's neurons that are {name}" for name in CATEGORIES},
    "alive_rate": "mean firing rate of the layer's alive neurons (the paper's Figure 1b)",
    "fire_p50": "median firing rate act_count / n_tokens over the layer's neurons",
    "fire_p90": "90th percentile of the firing rate", "fire_p99": "99th percentile of the firing rate",
    "covered": "vocabulary items covered by a token detector of the layer",
    "new": "... not covered in any lower layer", "new_vs_prev": "... not covered in the previous layer",
    "supp_share": "share of detectors whose triggers are all among their top-10 suppressed tokens",
    "neg_share": "share of detectors whose triggers all score negative (the paper's headline)",
    "detectors_known": "token detectors whose triggers all have an update score (the shares' denominator)",
    **{f"pos_{t.replace('-', '_')}": f"positional neurons of type {t}" for t in POSITIONAL_TYPES},
}
METRICS = tuple(k for k in ROW_KEYS if k not in ("layer", "depth"))


def layer_rows(summary: Summary) -> list[LayerRow]:
    """One dict per layer with the keys of ROW_KEYS. Fractions are of the layer's neurons."""
    L, F, N = summary.n_layers, summary.n_neurons, max(summary.n_tokens, 1)
    params = AnalysisParams.of(summary)
    group = summary.analysis
    per_layer = {name: group.read(name) for name in ("layer_covered", "layer_new", "layer_new_vs_prev",
                                                       "layer_supp_share", "layer_neg_share",
                                                       "layer_detectors_known")} if group else {}
    known = {k.name: (group is not None or not k.needs_analysis) and kinds.known(k, summary) for k in kinds.KINDS}
    rows = []
    for layer in range(L):
        act = summary.read("act_count", layer)
        rate = act / N
        alive = act > 0
        row: dict[str, Any] = {"layer": layer, "depth": layer / (L - 1) if L > 1 else 0.0, "neurons": F,
                               "tau": json_float(summary.tau[layer])}
        flags = (group.read("flags", layer) if group is not None
                 else kinds.count_flags(act, summary.read("act_max", layer), N, params))
        counts = {k.name: int(np.count_nonzero(kinds.has(flags, k.name))) if known[k.name] else None
                  for k in kinds.KINDS}
        for name in CATEGORIES:
            row[name] = counts[name]
            row[f"{name}_frac"] = None if counts[name] is None else counts[name] / F
        row["alive_rate"] = float(rate[alive].mean()) if alive.any() else 0.0
        q = np.quantile(rate, [0.5, 0.9, 0.99])
        row.update(fire_p50=json_float(q[0]), fire_p90=json_float(q[1]), fire_p99=json_float(q[2]))
        if group is not None:
            row.update(
                covered=int(per_layer["layer_covered"][layer]),
                new=int(per_layer["layer_new"][layer]),
                new_vs_prev=int(per_layer["layer_new_vs_prev"][layer]),
                supp_share=json_float(per_layer["layer_supp_share"][layer]),
                neg_share=json_float(per_layer["layer_neg_share"][layer]),
                detectors_known=int(per_layer["layer_detectors_known"][layer]),
            )
            shapes = group.read("pos_shape", layer)[kinds.has(flags, "positional")]
            for code, name in enumerate(schema.POS_SHAPES):
                if code:
                    row[f"pos_{name.replace('-', '_')}"] = int(np.count_nonzero(shapes == code))
        else:
            row.update({k: None for k in ROW_KEYS if k not in row})
        rows.append(row)
    return rows


def present_kinds(rows: Sequence[LayerRow]) -> list[kinds.Kind]:
    """The kinds some layer of `layer_rows` has: what a per-layer table shows a column for and the
    layer screen's filter bar lists. A kind no layer has (silent under the ReLU rule) takes no room, nor
    one the summary cannot decide (unknown: no analysis yet, which `summary_notes` says, or statistics
    an older summary or another architecture lacks, e.g. the sign cases of a ReLU model)."""
    return [k for k in kinds.KINDS if any(r.get(k.name) for r in rows)]


def model_names(summaries: Sequence[Summary]) -> list[str]:
    """Each summary's model name, told apart by file name where two share one."""
    names = [str(s.attrs.get("model") or Path(s.path).stem) for s in summaries]
    return [f"{n} ({Path(s.path).stem})" if names.count(n) > 1 else n for n, s in zip(names, summaries)]


def compare_rows(summaries: Sequence[Summary], n_points: int | None = None) -> list[CompareRow]:
    """Several models lined up on relative depth (layer / (L - 1)).

    The grid has `n_points` depths from 0 to 1 (default: the largest layer count among the models);
    at each depth every model contributes its layer nearest to that depth (halves round up). Each row is
    {"depth": x, "models": {name: that layer's row}}.
    """
    names = model_names(summaries)
    all_rows = [layer_rows(s) for s in summaries]
    n = n_points or max((len(r) for r in all_rows), default=0)
    grid = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(n)
    out = []
    for x in grid:
        models = {}
        for name, rows in zip(names, all_rows):
            models[name] = rows[int(np.floor(x * (len(rows) - 1) + 0.5))]
        out.append({"depth": float(x), "models": models})
    return out


# ---- one neuron -----------------------------------------------------------------------------------------

RECORD_KEYS = {
    "layer": "layer index", "index": "neuron index in the layer",
    "categories": f"list drawn from {', '.join(CATEGORIES)}",
    "act_count": "firings on the whole corpus (exact)", "fire_rate": "act_count / tokens",
    "rule": "relu (fired iff h > tau) or abs (fired iff |h| > tau)", "tau": "this layer's threshold",
    "activation": "{max, mean, positive: {count, mean}, negative: {count, mean}} of the firing values",
    "event_level": "sampling level: each kept event stands for 2**level firings (0: all kept)",
    "n_events": "firing events kept", "distinct": "distinct tokens among the kept events",
    "analysis": "stored (the summary's analysis group) or computed (on the spot, default parameters)",
    "coverage": "share of firings explained by the detector's covered tokens",
    "ngram_coverage": "share explained by at most max_ngrams covered n-gram contexts",
    "triggers": "[{token, text, count, count_se, occurrences, p_fire, supp_rank, covered, explains}]",
    "ngrams": "[{prev, prev_text, token, text, count}]: (previous token, token) contexts",
    "promoted": "[{token, text, score, is_trigger}]: top tokens of the FFN update, highest score first",
    "suppressed": "[{token, text, score, is_trigger}]: bottom tokens, most suppressed first (rank 1)",
    "position_rate": "firing rate at each position (null where no token was seen)",
    "pos_mi": "I(fired; position) in nats", "pos_shape": "positional type (null unless positional)",
    "pos_strong": "strong (true) or weak (false) positional pattern", "pos_range": "[first, last] position of "
    "the main firing run", "contexts": "[{position, seq, pos, left, token, right, ids, at, value, signed, fired, "
    "source}]: the token window (ids, the firing token at index `at`) and its text; `value` the activation there "
    "(null for a sampled event): the signed h when `signed`, else |h| (a threshold-rule summary made before the "
    "pass kept signs, ctx_val); the strongest by |h| first",
    "mean_h": "h averaged over every token of the corpus, fired or not (what mean ablation sets; null: not kept)",
    "vocab": "{mean, var, skew, kurt, sign} over the vocabulary of cos(w_out, U_eff[t]), kurtosis Pearson's (3 for "
    "a Gaussian), sign the sign of h when the neuron acts: prediction neurons have kurt > 10 and sign x skew > 0, "
    "suppression neurons sign x skew < 0 (null: not computed)",
    "geometry": "{w_out_norm, w_in_norm, null_share, freq_corr, null_k, typical_w_out_norm, typical_null_share}: "
    "the output's norm and share in U_eff's null_k smallest directions (entropy neurons), its logit effect's "
    "correlation with the corpus' log token frequency (token-frequency neurons), the layer's medians",
    "histogram": "{edges, counts}: the firings in the layer's fixed bins of h (outer bins: everything beyond)",
    "sign_cases": "gated FFNs: [{case, count, share, top_value, top_position, context}] for the sign cases "
    "++, +-, -+, -- of (act(gate), up), the strongest firing's |h|, position and context (h signed) of each",
}


def neuron_record(summary: Summary, layer: int, index: int, params: AnalysisParams | None = None) -> NeuronRecord:
    """Everything about one neuron, JSON-ready; keys and meanings in RECORD_KEYS (README lists them).

    Trigger counts are estimates when the neuron's events were sampled (event_level > 0), with their
    standard error `count_se` (0 where exact); `occurrences` and `p_fire` leave the BOS position out,
    as the analysis does; `covered` marks the tokens the neuron fires on at least min_fire_rate of the
    time (with at least min_token_count occurrences), `explains` those counted in the detector
    criterion. Ranks are 1-based. Contexts are the neuron's strongest activations (one per sequence),
    topped up with sampled firing events; `fired` says whether each is above tau (a dead neuron's
    strongest activations are all below it).
    """
    L, F = summary.n_layers, summary.n_neurons
    if not (0 <= layer < L and 0 <= index < F):
        raise IndexError(f"no neuron L{layer} N{index}: the summary has {L} layers x {F} neurons")
    vocab = summary.vocab
    group = summary.analysis
    params = params or AnalysisParams.of(summary)
    if group is not None:
        res = {name: group.neuron(name, layer, index) for name in schema.ANALYSIS_DATASETS
               if schema.ANALYSIS_DATASETS[name][1].startswith("L,F")}
    else:
        res = neuron_analysis(summary, layer, index, params)
    act = int(summary.read_neuron("act_count", layer, index))
    level = int(summary.read_neuron("event_level", layer, index))
    events = summary.neuron_events(layer, index)
    flags = int(res["flags"])
    occ = summary.token_occ

    triggers = []
    for j, tok in enumerate(int(t) for t in res["trig_tok"]):
        if tok < 0:
            continue
        count = float(res["trig_count"][j])
        n_occ = int(occ[tok]) if tok < len(occ) else 0
        # a sampled neuron measured its rate on the occurrences at sampled positions: 2**-level of them
        sampled = n_occ * 2.0**-level
        se = float(count_stderr(count, n_occ, sampled)) if level > 0 and n_occ > 0 else 0.0
        p_fire = json_float(res["trig_pfire"][j])
        triggers.append({
            "token": tok, "text": token_text(vocab, tok), "count": count, "count_se": se, "occurrences": n_occ,
            "p_fire": p_fire, "supp_rank": rank_1based(int(res["trig_supp_rank"][j])),
            "covered": bool(p_fire is not None and p_fire >= params.min_fire_rate - 1e-9
                            and n_occ >= params.min_token_count),
            "explains": bool(res["trig_explains"][j]),
        })
    trigger_ids = {t["token"] for t in triggers}
    ngrams = [{"prev": int(p), "prev_text": token_text(vocab, int(p)), "token": int(t), "text": token_text(vocab, int(t)),
               "count": float(c)} for p, t, c in zip(res["ngram_prev"], res["ngram_tok"], res["ngram_count"]) if t >= 0]
    promoted, suppressed = [], []
    if summary.projection is not None:
        for kind, target in (("promoted", promoted), ("suppressed", suppressed)):
            toks = summary.projection.neuron(f"{kind}_tok", layer, index)
            scores = summary.projection.neuron(f"{kind}_score", layer, index)
            target.extend({"token": int(t), "text": token_text(vocab, int(t)), "score": json_float(s),
                           "is_trigger": int(t) in trigger_ids} for t, s in zip(toks, scores) if t >= 0)
    pos_count = summary.read_neuron("pos_count", layer, index).astype(np.float64)
    tap = summary.tokens_at_pos.astype(np.float64)
    code = int(res["pos_shape"])
    positional = bool(kinds.has(flags, "positional"))
    tau = float(summary.tau[layer])
    return {
        "layer": int(layer),
        "index": int(index),
        "categories": categories(flags),
        "act_count": act,
        "fire_rate": act / max(summary.n_tokens, 1),
        "rule": str(summary.attrs.get("rule")),
        "tau": tau,
        "activation": _activation(summary, layer, index, act),
        "event_level": level,
        "n_events": int(events.size),
        "distinct": int(res["n_distinct"]),
        "analysis": "stored" if group is not None else "computed",
        "coverage": json_float(res["trig_coverage"]),
        "ngram_coverage": json_float(res["ngram_coverage"]),
        "triggers": triggers,
        "ngrams": ngrams,
        "promoted": promoted,
        "suppressed": suppressed,
        "position_rate": [(json_float(c / n) if n > 0 else None) for c, n in zip(pos_count, tap)],
        "pos_mi": json_float(res["pos_mi"]),
        "pos_shape": schema.POS_SHAPES[code] if positional and 0 < code < len(schema.POS_SHAPES) else None,
        "pos_strong": bool(res["pos_strong"]) if positional else None,
        "pos_range": [int(x) for x in res["pos_range"]] if positional and res["pos_range"][0] >= 0 else None,
        "contexts": _contexts(summary, layer, index, events, tau),
        "mean_h": families.mean_h(summary, layer, index),
        "vocab": families.vocab_moments(summary, layer, index),
        "geometry": families.geometry(summary, layer, index),
        "histogram": families.histogram(summary, layer, index),
        "sign_cases": _sign_cases(summary, layer, index),
    }


def _activation(summary: Summary, layer: int, index: int, act: int) -> Activation:
    """The firing values: largest |h| (h for ReLU), signed mean, and the split by sign (schema 2)."""
    total = float(summary.read_neuron("act_sum", layer, index))
    out: dict[str, Any] = {"max": json_float(summary.read_neuron("act_max", layer, index)) if act else None,
                           "mean": total / act if act else None, "positive": None, "negative": None}
    if summary.has("act_count_pos"):
        n_pos = int(summary.read_neuron("act_count_pos", layer, index))
        s_pos = float(summary.read_neuron("act_sum_pos", layer, index))
        out["positive"] = {"count": n_pos, "mean": s_pos / n_pos if n_pos else None}
        n_neg = act - n_pos
        out["negative"] = {"count": n_neg, "mean": (total - s_pos) / n_neg if n_neg else None}
    return out


def signed_top(summary: Summary, layer: int, index: int, top_val: np.ndarray) -> tuple[np.ndarray, bool]:
    """The activation at each of a neuron's top positions, and whether it is the signed h. The top
    positions are ranked by the firing statistic (h for ReLU, |h| under a threshold rule); a summary
    whose pass kept the signed h around them (`ctx_val`, its window's centre at `ctx_left`) gives the
    sign; an older threshold-rule summary has only |h|."""
    if summary.attrs.get("rule") == "relu":
        return top_val, True
    if summary.has("ctx_val"):
        centre = int(summary.attrs.get("ctx_left", 0))
        return np.asarray(summary.read_neuron("ctx_val", layer, index))[:, centre], True
    return top_val, False


def _contexts(summary: Summary, layer: int, index: int, events: np.ndarray, tau: float) -> list[Context]:
    """The neuron's top activations by |h| (one per sequence) with their signed h where the summary
    has it, topped up with evenly spread kept events."""
    chosen: list[tuple[int, float | None, bool, str]] = []  # position, value, fired, source
    top_pos = summary.read_neuron("top_pos", layer, index)
    top_val = summary.read_neuron("top_val", layer, index)
    values, signed = signed_top(summary, layer, index, top_val)
    for g, v, h in zip(top_pos.tolist(), top_val.tolist(), values.tolist()):
        if g >= 0 and len(chosen) < N_CONTEXTS:
            chosen.append((int(g), json_float(h), bool(v > tau), "top"))
    if len(chosen) < N_CONTEXTS and events.size:
        have = {g for g, *_ in chosen}
        picks = np.unique(np.linspace(0, events.size - 1, min(events.size, 2 * N_CONTEXTS)).round().astype(int))
        for g in events[picks].tolist():
            if len(chosen) < N_CONTEXTS and g not in have:
                chosen.append((g, None, True, "event"))
                have.add(g)
    return context_items(summary, chosen, signed)


def context_items(summary: Summary, chosen: list[tuple[int, float | None, bool, str]], signed: bool) -> list[Context]:
    """Contexts (the token window around each global position, with its text) of `chosen` (position,
    value, fired, source), read from the tokens in one gather."""
    if not chosen:
        return []
    T, vocab = summary.seq_len, summary.vocab
    windows = []
    for g, *_ in chosen:
        seq, t = divmod(g, T)
        windows.append(np.arange(seq * T + max(0, t - CONTEXT_LEFT), seq * T + min(T, t + CONTEXT_RIGHT + 1)))
    tokens = summary.tokens_at(np.concatenate(windows)).tolist()
    out, at = [], 0
    for (g, value, fired, source), window in zip(chosen, windows):
        ids = tokens[at : at + len(window)]
        at += len(window)
        mid = g - int(window[0])
        text = [token_text(vocab, t) for t in ids]
        out.append({"position": g, "seq": g // T, "pos": g % T, "left": "".join(text[:mid]), "token": text[mid],
                    "right": "".join(text[mid + 1 :]), "ids": ids, "at": mid, "value": value,
                    "signed": signed and value is not None, "fired": fired, "source": source})
    return out


def _sign_cases(summary: Summary, layer: int, index: int) -> list[SignCase] | None:
    """The sign cases of a gated neuron (families.sign_cases), each with the context of its strongest
    firing, its h signed by the case (h = act(gate) * up: negative when the signs differ)."""
    cases = families.sign_cases(summary, layer, index)
    for case in cases or ():
        g, v = case["top_position"], case["top_value"]
        value = None if v is None else (v if case["case"] in ("++", "--") else -v)
        case["context"] = context_items(summary, [(g, value, True, "top")], True)[0] if g is not None else None
    return cases
