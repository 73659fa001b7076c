"""The paper's neuron categories, computed from a summary alone (docs/design.md, "The analysis").

Paper: E. Voita, J. Ferrando, C. Nalmpantis, "Neurons in Large Language Models: Dead, N-gram,
Positional", arXiv 2309.04827 (ACL Findings 2024). Sections cited below: 3 = dead neurons, 4 = n-gram
(token) detecting neurons and their updates, 5 = positional neurons.

`analyze(summary, params)` reads one layer at a time and returns the `analysis` group
(schema.ANALYSIS_DATASETS); `write_analysis` puts it into a summary being written (collection and
merge analyse before the file is renamed into place) and `run_analysis(path, params)` replaces the
group of an existing summary (`neuron-tui analyze`). Nothing here needs the model: the FFN-update
ranks of trigger tokens come from the `projection` group written at collection time (left -1 / NaN
when it is absent). Nothing here imports torch.

A layer's analysis computes the statistics (triggers and their coverage, n-gram contexts, I(fired;
position)), lets every kind of core.read.kinds decide from them, then describes what the kinds found
(the positional neurons' types, the tokens the detectors cover, whether they suppress their triggers).
Counts of items come from the kept events, estimated where they were sampled (core.read.occurrences).

BOS. When the summary's attribute `bos` is 1, position 0 of every sequence is the BOS token: those
firings are left out of every detector statistic (events, firing totals and token occurrences), as in
the paper (section 4), and by default out of the positional statistics too (`positional_skip_bos`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from neuron_tui.cache import Summary, SummaryWriter, schema

from . import kinds, positional
from .occurrences import TokenStream, at_least, estimated_pairs
from .params import AnalysisParams
from .triggers import PairCounts


def _explaining(pc: PairCounts, covered: np.ndarray, total: np.ndarray, min_coverage: float, max_items: int):
    """The fewest covered items (at most `max_items`) that reach `min_coverage` of each neuron's
    firings, taken in order of estimated count: ([P] bool mask over pairs, [F] explained share).

    When more than `max_items` covered items would be needed, the first `max_items` are marked and
    the share stays below `min_coverage`.
    """
    F = pc.n_neurons
    total = np.asarray(total, dtype=np.float64)
    value = np.where(covered, pc.value, 0).astype(np.float64)
    cum = pc.segment_cumsum(value)
    before = cum - value
    covered_rank = pc.segment_cumsum(covered.astype(np.int64))  # 1-based among covered
    thr = min_coverage * total[pc.neuron] - 1e-9 * np.maximum(total[pc.neuron], 1.0)
    mask = covered & (before < thr) & (covered_rank <= max_items)
    explained = np.bincount(pc.neuron, weights=np.where(mask, value, 0.0), minlength=F)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total > 0, np.minimum(explained / total, 1.0), 0.0)
    return mask, share


def layer_analysis(
    stream: TokenStream,
    params: AnalysisParams,
    act_count: np.ndarray,
    act_max: np.ndarray,
    pos_count: np.ndarray,
    tokens_at_pos: np.ndarray,
    level: np.ndarray,
    offsets: np.ndarray,
    events: np.ndarray,
    n_tokens: int,
    projection: dict[str, np.ndarray] | None = None,
    typical: dict[str, float] | None = None,
    families: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Every per-neuron analysis array of one layer (or of any subset of its neurons).

    act_count [F], act_max [F], pos_count [T, F], level [F], offsets [F+1] relative to `events`
    (global token positions, ascending per neuron); projection: this layer's cand_tok /
    cand_supp_rank / cand_score [F, Kc] or None; typical: the whole layer's typical values
    (kinds.layer_typicals; None: from these neurons); families: the statistics the later families'
    criteria read (`family_statistics`), those the summary has. Also returns `covered_tokens` (ids covered by a token detector of the
    layer) and the per-layer suppression counts.
    """
    act_count = np.asarray(act_count, dtype=np.int64)
    pos_count = np.asarray(pos_count)
    events = _Events(stream, level, offsets, events)
    total = act_count - (pos_count[0].astype(np.int64) if stream.bos else 0)  # non-BOS firings (exact)
    out: dict[str, np.ndarray] = {}
    act_max = np.asarray(act_max, dtype=np.float64)
    families = families or {}
    if typical is None:
        typical = kinds.layer_typicals(act_max, families.get("null_share"), families.get("w_out_norm"),
                                       params.entropy_norm_quantile)
    evidence = kinds.Evidence(act_count, act_max, n_tokens, typical, total=total, **families)
    triggers = _triggers(events, params, total, out)
    evidence.coverage = triggers.coverage
    _bigrams(events, params, out)
    evidence.ngram_share = _ngram_share(events, params, total)
    out["ngram_coverage"] = evidence.ngram_share.astype(np.float32)
    rows = _positional_rows(pos_count.shape[0], stream.bos and params.positional_skip_bos)
    tap = np.asarray(tokens_at_pos, dtype=np.int64)
    evidence.pos_mi = positional.mutual_information(pos_count[rows], tap[rows])
    out["pos_mi"] = evidence.pos_mi.astype(np.float32)

    out["flags"] = kinds.decide(evidence, params)

    shape, strong, run = positional.classify(pos_count[rows], tap[rows], evidence.kinds["positional"],
                                             params.shape_rule())
    out["pos_shape"], out["pos_strong"] = shape, strong
    out["pos_range"] = np.where(run >= 0, rows[np.maximum(run, 0)], -1).astype(np.int32)  # positions t
    token = evidence.kinds["token"]
    detector_pairs = triggers.explains & token[triggers.pairs.neuron]
    out["covered_tokens"] = np.unique(triggers.pairs.item[detector_pairs])
    out["trig_supp_rank"], out["supp_counts"] = _suppression(triggers, detector_pairs, token, projection,
                                                             params.supp_top, out["trig_tok"])
    return out


class _Events:
    """One layer's kept firing events as indices into the token stream, and how to count items among
    them (the BOS position left out where it holds BOS)."""

    def __init__(self, stream: TokenStream, level, offsets, events):
        self.stream = stream
        self.level = np.asarray(level, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        self.offsets = offsets - offsets[0]
        self.local = stream.to_local(events)  # indices into the token stream (global positions in a shard)
        self.keep = (self.local % stream.T != 0) if stream.bos else None
        self.n_neurons = self.offsets.size - 1

    def pairs(self, items: np.ndarray, occurrences, order: bool = True) -> tuple[PairCounts, np.ndarray]:
        """(neuron, item) pairs with estimated firings, and each item's occurrences (estimated_pairs)."""
        return estimated_pairs(self.offsets, items[self.local], self.keep, self.level, occurrences, order)


class _Triggers:
    """The (neuron, token) pairs of a layer, which of them the token-detector criterion counts, and
    the [F] share of each neuron's firings they explain."""

    def __init__(self, pairs: PairCounts, explains: np.ndarray, coverage: np.ndarray):
        self.pairs, self.explains, self.coverage = pairs, explains, coverage


def _triggers(events: _Events, p: AnalysisParams, total: np.ndarray, out: dict) -> _Triggers:
    """Each neuron's trigger tokens by estimated firings, P(fire | token), and the share of its
    firings its covered tokens explain (paper section 4): the trig_* arrays and n_distinct."""
    stream = events.stream
    pc, occ = events.pairs(stream.flat, stream.token_occurrences)
    covered = at_least(pc.value, p.min_fire_rate, occ) & (occ >= p.min_token_count)
    explains, coverage = _explaining(pc, covered, total, p.min_coverage, p.max_tokens)
    with np.errstate(divide="ignore", invalid="ignore"):
        pfire = np.where(occ > 0, pc.value / np.maximum(occ, 1), np.nan)
    trig_tok, trig_count = pc.top(p.n_triggers, pc.value.astype(np.float32), fill=np.float32(0))
    _, trig_pfire = pc.top(p.n_triggers, pfire.astype(np.float32), fill=np.float32(np.nan))
    _, trig_explains = pc.top(p.n_triggers, explains.astype(np.uint8), fill=np.uint8(0))
    out.update(
        trig_tok=trig_tok.astype(np.int32),
        trig_count=trig_count,
        trig_pfire=trig_pfire,
        trig_coverage=coverage.astype(np.float32),
        trig_explains=trig_explains,
        n_distinct=pc.n_distinct().astype(np.int32),
    )
    return _Triggers(pc, explains, coverage)


def _bigrams(events: _Events, p: AnalysisParams, out: dict) -> None:
    """Each neuron's top (previous token, token) contexts by estimated firings (shown, not a criterion)."""
    stream = events.stream
    bi = stream.contexts(2)
    pc, _ = events.pairs(bi.ids, bi.occurrences)
    bi_id, bi_count = pc.top(p.n_ngrams, pc.value.astype(np.float32), fill=np.float32(0))
    prev, cur = stream.decode_key(bi.keys[np.maximum(bi_id, 0)], 2)
    pad = bi_id < 0
    out["ngram_prev"] = np.where(pad, -1, prev).astype(np.int32)
    out["ngram_tok"] = np.where(pad, -1, cur).astype(np.int32)
    out["ngram_count"] = bi_count


def _ngram_share(events: _Events, p: AnalysisParams, total: np.ndarray) -> np.ndarray:
    """[F] share of firings explained by at most max_ngrams covered n-gram contexts: the token
    criterion on contexts (paper section 4)."""
    ng = events.stream.contexts(p.ngram_order)
    # only covered contexts matter for the criterion: order just those (few) by their estimate
    pc, occ = events.pairs(ng.ids, ng.occurrences, order=False)
    covered = at_least(pc.value, p.min_fire_rate, occ) & (occ >= p.min_token_count)
    pc = pc.subset(covered)
    pc = pc.reorder(pc.value)
    _, share = _explaining(pc, np.ones(pc.item.size, bool), total, p.min_coverage, p.max_ngrams)
    return share


def _positional_rows(T: int, skip_bos: bool) -> np.ndarray:
    """The positions the positional statistics read (position 0 left out when it always holds BOS)."""
    rows = np.arange(T)
    return rows[1:] if skip_bos else rows


def _suppression(triggers: _Triggers, detector_pairs: np.ndarray, token: np.ndarray,
                 projection: dict[str, np.ndarray] | None, supp_top: int, trig_tok: np.ndarray):
    """The FFN updates of the triggers (paper section 4), from the projection group: ([F, Kt] 0-based
    rank of each trigger among the neuron's suppressed tokens, -1 unknown; [3] detectors judged, those
    whose triggers are all among their `supp_top` most suppressed, those whose triggers all score
    negative). A detector is judged only when every explaining trigger has a projection."""
    F = trig_tok.shape[0]
    if projection is None:
        return np.full(trig_tok.shape, -1, dtype=np.int32), np.zeros(3, dtype=np.int64)
    cand = np.asarray(projection["cand_tok"], dtype=np.int64)
    crank = np.asarray(projection["cand_supp_rank"], dtype=np.int64)
    cscore = np.asarray(projection["cand_score"], dtype=np.float64)
    hit = (trig_tok[:, :, None] == cand[:, None, :]) & (trig_tok[:, :, None] >= 0)
    j = hit.argmax(-1)
    found = hit.any(-1)
    trig_rank = np.where(found, crank[np.arange(F)[:, None], j], -1).astype(np.int32)
    pn, pt = triggers.pairs.neuron[detector_pairs], triggers.pairs.item[detector_pairs]
    phit = cand[pn] == pt[:, None]
    pfound = phit.any(-1)
    pj = phit.argmax(-1)
    prank = np.where(pfound, crank[pn, pj], -1)
    pscore = np.where(pfound, cscore[pn, pj], np.nan)

    def any_per_neuron(mask: np.ndarray) -> np.ndarray:
        return np.bincount(pn, weights=mask.astype(np.float64), minlength=F) > 0

    unknown = any_per_neuron(~pfound | (prank < 0))
    not_supp = any_per_neuron(pfound & (prank >= supp_top))
    not_neg = any_per_neuron(pfound & ~(pscore < 0))
    known = token & ~unknown
    return trig_rank, np.array([known.sum(), (known & ~not_supp).sum(), (known & ~not_neg).sum()], dtype=np.int64)


PER_NEURON = tuple(n for n, (_, axes) in schema.ANALYSIS_DATASETS.items() if axes.startswith("L,F"))
PER_LAYER = tuple(n for n in schema.ANALYSIS_DATASETS if n not in PER_NEURON)
_PROJECTION_INPUTS = ("cand_tok", "cand_supp_rank", "cand_score")


def _projection_layer(summary: Summary, layer: int, index: int | None = None) -> dict[str, np.ndarray] | None:
    """The projection data the analysis uses for one layer (or one neuron of it, as a layer of one)."""
    group = summary.projection
    if group is None:
        return None
    if index is None:
        return {n: group.read(n, layer) for n in _PROJECTION_INPUTS}
    return {n: group.neuron(n, layer, index)[None] for n in _PROJECTION_INPUTS}


FAMILY_STATISTICS = {  # Evidence field -> where a summary keeps it (core/read/kinds.py reads them)
    "vocab_skew": "projection/vocab_skew", "vocab_kurt": "projection/vocab_kurt",
    "null_share": "projection/null_share", "w_out_norm": "projection/w_out_norm",
    "freq_corr": "projection/freq_corr", "sign_count": "sign_count",
}


def family_statistics(summary: Summary, layer: int, index: int | None = None) -> dict[str, np.ndarray]:
    """The per-neuron statistics of the later families' criteria that `summary` has (the projection
    group's vocabulary moments, norms, null-space share and frequency correlation; the pass's sign
    cases of gated neurons), for one layer ([F] each, sign_count [4, F]) or one neuron of it as a layer
    of one."""
    out = {}
    for field, path in FAMILY_STATISTICS.items():
        if not kinds.stored(summary, path):
            continue
        group, _, name = path.rpartition("/")
        value = summary.projection.read(name, layer) if group else summary.read(name, layer)
        if field == "vocab_skew":  # as the neuron acts: a neuron whose h is negative pushes -w_out
            value = value * acting_sign(summary, layer)
        out[field] = value if index is None else value[..., index : index + 1]
    return out


def acting_sign(summary: Summary, layer: int) -> np.ndarray:
    """[F] +1 or -1: the sign of h when the neuron acts, which orients its output vector (h w_out pushes
    -w_out when h < 0, so a heavy positive tail over the vocabulary then lowers those logits): the sign
    of its firings' summed h where it fired; else of h at its strongest token (ctx_val's centre), for a
    neuron that never reached tau (a silent one); +1 where nothing tells (ReLU: always +1)."""
    act_sum = summary.read("act_sum", layer).astype(np.float64)
    sign = np.where(act_sum < 0, -1.0, 1.0)
    if summary.has("ctx_val"):
        unfired = summary.read("act_count", layer) == 0
        if unfired.any():
            centre = int(summary.attrs.get("ctx_left", 0))
            strongest = summary.read("ctx_val", layer)[0, centre].astype(np.float64)  # [F]: top-1's h
            sign = np.where(unfired & (strongest < 0), -1.0, sign)
    return sign


def _layer_inputs(summary: Summary, layer: int) -> tuple:
    offsets, events = summary.layer_events(layer)
    return (summary.read("act_count", layer), summary.read("act_max", layer), summary.read("pos_count", layer),
            summary.tokens_at_pos,
            summary.read("event_level", layer), offsets, events)


def _run(summary: Summary, params: AnalysisParams, put_layer, put_whole, progress=None) -> dict:
    """The analysis of every layer, one at a time: put_layer(name, layer, value) per per-neuron array,
    put_whole(name, value) per per-layer summary; returns the group's attributes."""
    L, T = summary.n_layers, summary.seq_len
    stream = TokenStream.from_summary(summary)
    has_projection = summary.projection is not None
    per_layer = {name: np.zeros(L, np.int64) for name in ("layer_covered", "layer_new", "layer_new_vs_prev",
                                                            "layer_detectors_known")}
    supp_share = np.full(L, np.nan, np.float32)
    neg_share = np.full(L, np.nan, np.float32)
    seen_lower = np.zeros(stream.V, dtype=bool)
    prev_layer = np.zeros(stream.V, dtype=bool)
    for layer in range(L):
        res = layer_analysis(stream, params, *_layer_inputs(summary, layer), summary.n_tokens,
                             _projection_layer(summary, layer), families=family_statistics(summary, layer))
        for name in PER_NEURON:
            put_layer(name, layer, res[name])
        here = np.zeros(stream.V, dtype=bool)
        here[res["covered_tokens"]] = True
        per_layer["layer_covered"][layer] = here.sum()
        per_layer["layer_new"][layer] = (here & ~seen_lower).sum()
        per_layer["layer_new_vs_prev"][layer] = (here & ~prev_layer).sum()
        seen_lower |= here
        prev_layer = here
        n_known, n_supp, n_neg = res["supp_counts"]
        per_layer["layer_detectors_known"][layer] = n_known
        if has_projection and n_known > 0:
            supp_share[layer] = n_supp / n_known
            neg_share[layer] = n_neg / n_known
        if progress is not None:
            progress(layer + 1, L)
    for name, value in {**per_layer, "layer_supp_share": supp_share, "layer_neg_share": neg_share}.items():
        put_whole(name, value)
    rows = _positional_rows(T, stream.bos and params.positional_skip_bos)
    used_tokens = int(np.asarray(summary.tokens_at_pos)[rows].sum())
    return {
        "analysis_version": schema.ANALYSIS_VERSION,
        "params": params.to_json(),
        "n_triggers": params.n_triggers,
        "n_ngrams": params.n_ngrams,
        "bos_excluded": bool(stream.bos),
        "has_projection": bool(has_projection),
        "pos_mi_bias": positional.mi_bias(rows.size, used_tokens),
    }


def analyze(summary: Summary, params: AnalysisParams | None = None,
            progress: Callable[[int, int], None] | None = None) -> tuple[dict, dict]:
    """(attrs, arrays) of the analysis group in memory: every dataset of schema.ANALYSIS_DATASETS,
    computed one layer at a time. progress(done, n_layers) after each layer."""
    L = summary.n_layers
    arrays: dict[str, np.ndarray] = {}

    def put_layer(name: str, layer: int, value: np.ndarray) -> None:
        if name not in arrays:
            arrays[name] = np.empty((L,) + value.shape, dtype=value.dtype)
        arrays[name][layer] = value

    attrs = _run(summary, params or AnalysisParams(), put_layer, arrays.__setitem__, progress)
    return attrs, arrays


def write_analysis(writer: SummaryWriter, summary: Summary, params: AnalysisParams | None = None,
                   progress: Callable[[int, int], None] | None = None) -> None:
    """The analysis group of `summary`, written one layer at a time into `writer`'s file (the new
    summary itself, before it is renamed into place, or the copy `run_analysis` makes)."""
    group, L = schema.ANALYSIS_GROUP, summary.n_layers

    def put_layer(name: str, layer: int, value: np.ndarray) -> None:
        writer.write_layer(name, layer, value, L, group=group)

    attrs = _run(summary, params or AnalysisParams(), put_layer,
                 lambda name, value: writer.put(name, value, group=group), progress)
    writer.set_attrs(attrs, group=group)


def run_analysis(path: Path | str, params: AnalysisParams | None = None, progress=None) -> None:
    """Replace the analysis group of the summary at `path` (`neuron-tui analyze`): a new file with
    everything else copied as stored (compressed chunks and their checksums, nothing decoded) and the
    new group, renamed over the old one. Editing the file in place would lose the whole summary if the
    process died in the middle of HDF5's metadata writes."""
    path = Path(path)
    with Summary.open(path) as source, SummaryWriter(path) as writer:
        writer.copy_from(source, skip=(schema.ANALYSIS_GROUP,))
        write_analysis(writer, source, params, progress)


def neuron_analysis(summary: Summary, layer: int, index: int, params: AnalysisParams | None = None) -> dict:
    """The per-neuron analysis values of one neuron, computed on the spot (a summary that has no
    analysis group yet, e.g. a checkpoint): what `analyze` would store for it."""
    stream = TokenStream.from_summary(summary)
    offsets = summary.read("event_offsets", layer)[index : index + 2]
    res = layer_analysis(
        stream, params or AnalysisParams(),
        summary.read_neuron("act_count", layer, index)[None],
        summary.read_neuron("act_max", layer, index)[None],
        summary.read_neuron("pos_count", layer, index)[:, None],
        summary.tokens_at_pos,
        summary.read_neuron("event_level", layer, index)[None],
        offsets - offsets[0],
        summary.neuron_events(layer, index),
        summary.n_tokens,
        _projection_layer(summary, layer, index),
        _typicals(summary, layer, params),
        family_statistics(summary, layer, index),
    )
    return {name: res[name][0] for name in PER_NEURON}


def _typicals(summary: Summary, layer: int, params: AnalysisParams) -> dict[str, float]:
    """The whole layer's typical values (kinds.layer_typicals), for a criterion of one of its neurons."""
    layer_stats = family_statistics(summary, layer)
    return kinds.layer_typicals(summary.read("act_max", layer), layer_stats.get("null_share"),
                                layer_stats.get("w_out_norm"), params.entropy_norm_quantile)
