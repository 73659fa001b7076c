"""The paper's neuron categories, computed from a summary alone (DESIGN sections 5 and 7).

Paper: E. Voita, J. Ferrando, C. Nalmpantis, "Neurons in Large Language Models: Dead, N-gram,
Positional", arXiv 2309.04827 (ACL Findings 2024). Sections cited below: 3 = dead neurons, 4 = n-gram
(token) detecting neurons and their updates, 5 = positional neurons.

`analyze(summary, params)` reads one layer at a time and returns the `analysis` group
(schema.ANALYSIS_DATASETS plus the additions listed in `EXTRA_DATASETS`); `run_analysis(path, params)`
writes it into the summary atomically. Nothing here needs the model: the FFN-update ranks of trigger
tokens come from the `projection` group written at collection time (left -1 / NaN when it is absent).

Counting. Per neuron the summary keeps a uniform sample of its firing positions: the firings at
positions g with z(g) >= L_i, z a fixed hash of the position (level sampling, accumulators.py); level
0 = every firing, exact. Because z depends on the position alone, the positions with z >= L are a
uniform sample of the *corpus*, which we can enumerate. So the rate of neuron i on token v is measured
exactly on that sample: rate = kept(i, v) / occ_L(v), occ_L(v) the occurrences of v at positions with
z >= L_i, and its firings on v are estimated as rate * occ(v). This ratio estimator is exact at level
0, unbiased, never exceeds occ(v), and is *exact for a perfect detector at any level* (rate = 1),
where the plain kept * 2**L would put a true 100% detector below the 95% criterion about a third of
the time. `count_stderr` gives the standard error of an estimate (0 where exact). N-gram contexts are
counted the same way.

BOS. When the summary's attribute `bos` is 1, position 0 of every sequence is the BOS token: those
firings are left out of every detector statistic (events, firing totals and token occurrences), as in
the paper (section 4), and by default out of the positional statistics too (`positional_skip_bos`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from neuron_tui.cache import Summary, SummaryError, replace_group, schema

from . import positional
from .accumulators import MAX_LEVEL, token_levels
from .triggers import PairCounts, count_pairs

# datasets of the analysis group beyond schema.ANALYSIS_DATASETS (explorer may use them; additive)
EXTRA_DATASETS = {
    "trig_explains": ("uint8", "L,F,Kt"),  # 1 where the trigger is a covered token counted in trig_coverage
    "ngram_coverage": ("float32", "L,F"),  # share of firings explained by <= max_ngrams covered n-gram contexts
    "layer_detectors_known": ("int64", "L"),  # token detectors whose triggers all have a projection rank
}


@dataclass(frozen=True)
class AnalysisParams:
    """Thresholds of the analysis; stored as JSON in the analysis group's attribute `params`."""

    min_fire_rate: float = 0.95
    """A token is *covered* by a neuron when the neuron fires on at least this share of the token's
    occurrences. Paper section 4 ("at least 95% of the token's occurrences")."""

    min_coverage: float = 0.95
    """A token detector's covered tokens must account for at least this share of its (non-BOS)
    firings. Paper section 4 (95% of the neuron's activations)."""

    max_tokens: int = 5
    """At most this many covered tokens may be needed to reach `min_coverage`. Paper section 4 (its
    detectors are triggered by 1 to 5 tokens)."""

    min_token_count: int = 5
    """A covered token (or n-gram context) must occur at least this often in the corpus, so that one
    lucky hit on a token seen once cannot make a detector. Ours: the paper uses more than 5M tokens
    where the question does not arise; 5 occurrences at a 95% firing rate are unlikely by chance for a
    neuron that fires on a fraction f of tokens (f**5, e.g. 3e-5 at f = 0.125)."""

    rare_rate: float = 1e-4
    """Alive neurons firing on fewer than this share of all tokens are *rare*. Ours (the paper has no
    such category, section 3 only notes that alive neurons of early layers fire with mean frequency
    about 0.02 or less): 1e-4 is two orders of magnitude below that mean, i.e. fewer than one firing
    per 10,000 tokens (about once in five sequences of 2048): such a neuron barely changes the
    residual stream of typical text, yet over the paper's 5M tokens it still has hundreds of firings,
    so its triggers are measured exactly (its event sample is complete) rather than guessed."""

    mi_threshold: float = 0.05
    """A neuron is positional when I(fired; position) exceeds this many nats. Paper section 5."""

    max_ngrams: int = 50
    """An n-gram detector's firings are explained by at most this many covered n-gram contexts.
    Paper section 4 (at most 50 trigrams)."""

    ngram_order: int = 3
    """Contexts of the n-gram criterion: 3 = (two previous tokens, token), the paper's trigrams
    (section 4); 2 = (previous token, token)."""

    n_triggers: int = 10
    """Kt: trigger tokens stored per neuron (at least `max_tokens`). Ours (display)."""

    n_ngrams: int = 10
    """Kn: bigram contexts stored per neuron. Ours (display; the paper reports bigram contexts too)."""

    supp_top: int = 10
    """A detector *suppresses its triggers* when every trigger ranks among its this-many most
    suppressed tokens: our stricter metric next to the paper's section 4 "negative score" share."""

    positional_skip_bos: bool = True
    """Leave position 0 out of the positional statistics when it always holds BOS: a neuron firing
    there reacts to the BOS token, which position alone cannot tell apart. Ours."""

    shape_range_share: float = 0.9
    """Range / both-extremes shapes need this share of the firings inside the interval(s). Ours
    (paper section 5 describes the shapes qualitatively)."""

    shape_max_gap_cv: float = 0.25
    """Periodic shape: coefficient of variation of the spacing of the firing ranges. Ours."""

    shape_smooth: int | None = None
    """Smoothing window of the position profile before the shape is read (None: T // 128). Ours."""

    def __post_init__(self) -> None:
        if self.n_triggers < self.max_tokens:
            raise ValueError(f"n_triggers ({self.n_triggers}) must be at least max_tokens ({self.max_tokens})")
        if self.ngram_order not in (2, 3):
            raise ValueError(f"ngram_order must be 2 or 3, not {self.ngram_order}")
        for name in ("min_fire_rate", "min_coverage"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1]")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "AnalysisParams":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})


def count_stderr(count: np.ndarray, occurrences: np.ndarray, sampled: np.ndarray) -> np.ndarray:
    """Standard error of an estimated firing count `count` = rate * `occurrences`, the rate measured
    on `sampled` of those occurrences (a uniform sample without replacement); 0 where exact.

    se = occ * sqrt(rate (1 - rate) / sampled * (1 - sampled / occ)): 0 at level 0 (sampled = occ)
    and for a neuron that fired on every (or no) sampled occurrence.
    """
    occ = np.asarray(occurrences, dtype=np.float64)
    n = np.asarray(sampled, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.clip(np.asarray(count, dtype=np.float64) / occ, 0.0, 1.0)
        var = rate * (1.0 - rate) / n * np.clip(1.0 - n / occ, 0.0, 1.0)
        return np.where((occ > 0) & (n > 0), occ * np.sqrt(var), 0.0)


def _at_least(a: np.ndarray, frac: float, b: np.ndarray) -> np.ndarray:
    """a >= frac * b, robust to float rounding of frac * b (a, b counts)."""
    b = np.asarray(b, dtype=np.float64)
    return np.asarray(a, dtype=np.float64) >= frac * b - 1e-9 * np.maximum(b, 1.0)


class Corpus:
    """The token stream of a summary with what every layer's analysis shares: occurrences of tokens
    and of n-gram contexts, in total and per sampling level (BOS position excluded when `bos`)."""

    def __init__(self, tokens: np.ndarray, vocab_size: int, bos: bool, seq_index: np.ndarray | None = None):
        tokens = np.asarray(tokens)
        self.n_seq, self.T = tokens.shape
        self.flat = tokens.reshape(-1).astype(np.int64)  # local positions: row * T + t
        # global sequence of each row (a shard holds some sequences only); None: row r is sequence r
        if seq_index is not None and np.array_equal(seq_index, np.arange(self.n_seq)):
            seq_index = None
        self.seq_index = None if seq_index is None else np.asarray(seq_index, dtype=np.int64)
        self.V = max(int(vocab_size), int(self.flat.max()) + 1 if self.flat.size else 1)
        self.base = self.V + 1  # n-gram key digits: token ids, and V = "before the sequence start"
        self.bos = bool(bos)
        if self.base**3 >= 2**62:  # pragma: no cover - vocabularies beyond ~1.6M ids
            raise ValueError(f"vocabulary of {self.V} is too large for n-gram keys")
        g = np.arange(self.flat.size, dtype=np.int64)
        if self.bos:
            g = g[g % self.T != 0]
        self.positions = g  # local positions that count (all but BOS)
        # their sampling levels (a hash of the global position; < MAX_LEVEL = 32, so int8)
        self.z = token_levels(self.to_global(g)).astype(np.int8)
        # occ_by_level[L, v]: occurrences of v at positions with z >= L
        key = self.z.astype(np.int64) * self.V + self.flat[g]
        hist = np.bincount(key, minlength=MAX_LEVEL * self.V).reshape(MAX_LEVEL, self.V)
        self.occ_by_level = np.cumsum(hist[::-1], axis=0)[::-1]
        self.token_occ = self.occ_by_level[0]  # [V] occurrences outside the BOS position
        self._contexts: dict[int, Contexts] = {}

    @classmethod
    def from_summary(cls, summary: Summary) -> "Corpus":
        n_seq = int(summary.attrs["n_seq"])
        tokens = summary.read("tokens")[:n_seq]
        seq_index = summary.read("seq_index")[:n_seq] if summary.has("seq_index") else None
        return cls(tokens, len(summary.vocab), int(summary.attrs.get("bos", 0)) == 1, seq_index)

    def to_global(self, local: np.ndarray) -> np.ndarray:
        """Global positions seq * T + t of local positions row * T + t."""
        local = np.asarray(local, dtype=np.int64)
        if self.seq_index is None:
            return local
        return self.seq_index[local // self.T] * self.T + local % self.T

    def to_local(self, positions: np.ndarray) -> np.ndarray:
        """Local positions (indices into `flat`) of global positions; every sequence must be here."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.seq_index is None:
            return positions
        seq = positions // self.T
        rows = np.minimum(np.searchsorted(self.seq_index, seq), max(self.seq_index.size - 1, 0))
        if positions.size and (self.seq_index.size == 0 or (self.seq_index[rows] != seq).any()):
            raise SummaryError("its firing events refer to sequences whose tokens it does not hold")
        return rows * self.T + positions % self.T

    def token_occurrences(self, tokens: np.ndarray, level: np.ndarray | int = 0) -> np.ndarray:
        """Occurrences of `tokens` at positions with z >= level (level 0: all), elementwise."""
        return self.occ_by_level[np.asarray(level, dtype=np.int64), np.asarray(tokens, dtype=np.int64)]

    def ngram_keys(self, positions: np.ndarray, order: int) -> np.ndarray:
        """Key of the context (order-1 previous tokens, token) at each local position (row * T + t)."""
        g = np.asarray(positions, dtype=np.int64)
        t = g % self.T
        key = np.zeros(g.shape, dtype=np.int64)
        for back in range(order - 1, 0, -1):
            prev = np.where(t >= back, self.flat[np.maximum(g - back, 0)], self.V)
            key = key * self.base + prev
        return key * self.base + self.flat[g]

    def decode_key(self, key: np.ndarray, order: int) -> list[np.ndarray]:
        """Token ids of the context keys, oldest first; -1 for "before the sequence start"."""
        key = np.asarray(key, dtype=np.int64)
        out = []
        for _ in range(order):
            out.append(key % self.base)
            key = key // self.base
        return [np.where(x == self.V, -1, x) for x in reversed(out)]

    def contexts(self, order: int) -> "Contexts":
        """The n-gram contexts of every position (built once per order)."""
        if order not in self._contexts:
            self._contexts[order] = Contexts(self, order)
        return self._contexts[order]


class Contexts:
    """Dense ids of the order-n contexts of a corpus and their occurrences per sampling level.

    `ids[g]` is the context id at local position g (-1 at the BOS position when it is excluded), so
    an event's context is one gather; `keys[id]` is the context key (Corpus.ngram_keys); `occ[id]`
    its occurrences. A table sorted by (id, z) answers "occurrences with z >= L" for sampled neurons.
    """

    def __init__(self, corpus: Corpus, order: int):
        self.order = order
        keys, inverse = np.unique(corpus.ngram_keys(corpus.positions, order), return_inverse=True)
        inverse = inverse.reshape(-1).astype(np.int64)
        self.keys = keys
        dtype = np.int32 if keys.size < 2**31 else np.int64
        self.ids = np.full(corpus.flat.size, -1, dtype=dtype)
        self.ids[corpus.positions] = inverse
        self.occ = np.bincount(inverse, minlength=keys.size).astype(np.int64)
        kz, counts = np.unique(inverse * MAX_LEVEL + corpus.z, return_counts=True)
        self._kz = kz
        self._cum = np.concatenate([[0], np.cumsum(counts)])
        self._block_end = np.cumsum(np.bincount(kz // MAX_LEVEL, minlength=keys.size))  # table end of each id

    def occurrences(self, ids: np.ndarray, level: np.ndarray | int = 0) -> np.ndarray:
        """Occurrences of context `ids` at positions with z >= level (elementwise)."""
        ids = np.asarray(ids, dtype=np.int64)
        level = np.broadcast_to(np.asarray(level, dtype=np.int64), ids.shape)
        out = self.occ[ids]
        sampled = level > 0
        if sampled.any():
            i, lv = ids[sampled], level[sampled]
            lo = np.searchsorted(self._kz, i * MAX_LEVEL + lv)
            out = out.copy()
            out[sampled] = self._cum[self._block_end[i]] - self._cum[lo]
        return out


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


def _pairs(offsets, items, keep, level, occurrences, order: bool = True) -> tuple[PairCounts, np.ndarray]:
    """(pairs with value = estimated firings, [P] corpus occurrences of each pair's item).

    occurrences(items, levels) counts each item's occurrences at positions with z >= its level (0:
    all). The estimate is kept / occ_level * occ (module docstring; exactly the kept count at level
    0). With `order` the pairs are sorted by it within each neuron, else they stay by item id.
    """
    pc = count_pairs(offsets, items, keep, order=False)
    lv = np.asarray(level, dtype=np.int64)[pc.neuron]
    occ = occurrences(pc.item, 0)
    sampled = occurrences(pc.item, lv)
    with np.errstate(divide="ignore", invalid="ignore"):
        est = np.where(lv > 0, np.minimum(pc.count / np.maximum(sampled, 1), 1.0) * occ, pc.count)
    pc = PairCounts(pc.neuron, pc.item, pc.count, est.astype(np.float64), pc.rank, pc.start)
    if order:
        pc, perm = pc.reorder(pc.value, return_order=True)
        occ = occ[perm]
    return pc, occ


def layer_analysis(
    corpus: Corpus,
    params: AnalysisParams,
    act_count: np.ndarray,
    pos_count: np.ndarray,
    tokens_at_pos: np.ndarray,
    level: np.ndarray,
    offsets: np.ndarray,
    events: np.ndarray,
    n_tokens: int,
    projection: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Every per-neuron analysis array of one layer (or of any subset of its neurons).

    act_count [F], pos_count [T, F], level [F], offsets [F+1] relative to `events` (global token
    positions, ascending per neuron); projection: this layer's cand_tok / cand_supp_rank / cand_score
    [F, Kc] or None. Also returns `covered_tokens` (ids covered by a token detector of the layer) and
    the per-layer suppression counts.
    """
    p = params
    act_count = np.asarray(act_count, dtype=np.int64)
    pos_count = np.asarray(pos_count)
    level = np.asarray(level, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    offsets = offsets - offsets[0]
    events = corpus.to_local(events)  # indices into the token stream (global positions in a shard)
    F = act_count.shape[0]
    T = corpus.T
    skip_bos = corpus.bos
    keep = (events % T != 0) if skip_bos else None
    total = act_count - (pos_count[0].astype(np.int64) if skip_bos else 0)  # non-BOS firings (exact)
    alive = act_count > 0
    out: dict[str, np.ndarray] = {}

    # ---- token detectors (paper section 4) ----------------------------------------------------
    tok_pc, occ = _pairs(offsets, corpus.flat[events], keep, level, corpus.token_occurrences)
    covered = _at_least(tok_pc.value, p.min_fire_rate, occ) & (occ >= p.min_token_count)
    explains, coverage = _explaining(tok_pc, covered, total, p.min_coverage, p.max_tokens)
    token = alive & (total > 0) & (coverage >= p.min_coverage - 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        pfire = np.where(occ > 0, tok_pc.value / np.maximum(occ, 1), np.nan)
    trig_tok, trig_count = tok_pc.top(p.n_triggers, tok_pc.value.astype(np.float32), fill=np.float32(0))
    _, trig_pfire = tok_pc.top(p.n_triggers, pfire.astype(np.float32), fill=np.float32(np.nan))
    _, trig_explains = tok_pc.top(p.n_triggers, explains.astype(np.uint8), fill=np.uint8(0))
    out.update(
        trig_tok=trig_tok.astype(np.int32),
        trig_count=trig_count,
        trig_pfire=trig_pfire,
        trig_coverage=coverage.astype(np.float32),
        trig_explains=trig_explains,
        n_distinct=tok_pc.n_distinct().astype(np.int32),
    )
    detector_pairs = explains & token[tok_pc.neuron]
    out["covered_tokens"] = np.unique(tok_pc.item[detector_pairs])

    # ---- bigram contexts (display) -----------------------------------------------------------
    bi = corpus.contexts(2)
    bi_pc, _ = _pairs(offsets, bi.ids[events], keep, level, bi.occurrences)
    bi_id, bi_count = bi_pc.top(p.n_ngrams, bi_pc.value.astype(np.float32), fill=np.float32(0))
    prev, cur = corpus.decode_key(bi.keys[np.maximum(bi_id, 0)], 2)
    pad = bi_id < 0
    out["ngram_prev"] = np.where(pad, -1, prev).astype(np.int32)
    out["ngram_tok"] = np.where(pad, -1, cur).astype(np.int32)
    out["ngram_count"] = bi_count

    # ---- n-gram detectors: the token criterion on contexts (paper section 4) -----------------
    ng = corpus.contexts(p.ngram_order)
    # only covered contexts matter for the criterion: order just those (few) by their estimate
    ng_pc, ng_occ = _pairs(offsets, ng.ids[events], keep, level, ng.occurrences, order=False)
    ng_covered = _at_least(ng_pc.value, p.min_fire_rate, ng_occ) & (ng_occ >= p.min_token_count)
    ng_pc = ng_pc.subset(ng_covered)
    ng_pc = ng_pc.reorder(ng_pc.value)
    _, ng_share = _explaining(ng_pc, np.ones(ng_pc.item.size, bool), total, p.min_coverage, p.max_ngrams)
    ngram = alive & ~token & (total > 0) & (ng_share >= p.min_coverage - 1e-9)
    out["ngram_coverage"] = ng_share.astype(np.float32)

    # ---- positional neurons (paper section 5) --------------------------------------------------
    rows = np.arange(pos_count.shape[0])
    if skip_bos and p.positional_skip_bos:
        rows = rows[1:]
    tap = np.asarray(tokens_at_pos, dtype=np.int64)
    mi = positional.mutual_information(pos_count[rows], tap[rows])
    is_pos = mi > p.mi_threshold
    out["pos_mi"] = mi.astype(np.float32)
    out["pos_shape"] = positional.classify_shapes(
        pos_count[rows],
        tap[rows],
        is_pos,
        smooth=p.shape_smooth,
        range_share=p.shape_range_share,
        max_gap_cv=p.shape_max_gap_cv,
    )

    # ---- flags -------------------------------------------------------------------------------
    dead = act_count == 0
    rare = alive & (act_count < p.rare_rate * n_tokens)
    flags = np.zeros(F, dtype=np.uint8)
    flags[dead] |= schema.FLAG_DEAD
    flags[rare] |= schema.FLAG_RARE
    flags[token] |= schema.FLAG_TOKEN
    flags[ngram] |= schema.FLAG_NGRAM
    flags[is_pos] |= schema.FLAG_POSITIONAL
    out["flags"] = flags

    # ---- FFN updates of the triggers (paper section 4), from the projection group -------------
    out["trig_supp_rank"] = np.full(trig_tok.shape, -1, dtype=np.int32)
    out["supp_counts"] = np.zeros(3, dtype=np.int64)  # detectors known, suppressing, all-negative
    if projection is not None:
        cand = np.asarray(projection["cand_tok"], dtype=np.int64)
        crank = np.asarray(projection["cand_supp_rank"], dtype=np.int64)
        cscore = np.asarray(projection["cand_score"], dtype=np.float64)
        hit = (trig_tok[:, :, None] == cand[:, None, :]) & (trig_tok[:, :, None] >= 0)
        j = hit.argmax(-1)
        found = hit.any(-1)
        rows_f = np.arange(F)[:, None]
        out["trig_supp_rank"] = np.where(found, crank[rows_f, j], -1).astype(np.int32)
        # detectors: every explaining trigger must be among the candidates to be judged
        pn, pt = tok_pc.neuron[detector_pairs], tok_pc.item[detector_pairs]
        phit = cand[pn] == pt[:, None]
        pfound = phit.any(-1)
        pj = phit.argmax(-1)
        prank = np.where(pfound, crank[pn, pj], -1)
        pscore = np.where(pfound, cscore[pn, pj], np.nan)
        def any_per_neuron(mask: np.ndarray) -> np.ndarray:
            return np.bincount(pn, weights=mask.astype(np.float64), minlength=F) > 0

        unknown = any_per_neuron(~pfound | (prank < 0))
        not_supp = any_per_neuron(pfound & (prank >= p.supp_top))
        not_neg = any_per_neuron(pfound & ~(pscore < 0))
        known = token & ~unknown
        out["supp_counts"] = np.array(
            [known.sum(), (known & ~not_supp).sum(), (known & ~not_neg).sum()], dtype=np.int64
        )
    return out


PER_NEURON = (
    "flags",
    "pos_mi",
    "pos_shape",
    "n_distinct",
    "trig_tok",
    "trig_count",
    "trig_pfire",
    "trig_coverage",
    "trig_supp_rank",
    "trig_explains",
    "ngram_prev",
    "ngram_tok",
    "ngram_count",
    "ngram_coverage",
)


def _projection_layer(summary: Summary, layer: int) -> dict[str, np.ndarray] | None:
    names = ("cand_tok", "cand_supp_rank", "cand_score")
    if not all(summary.has(f"{schema.PROJECTION_GROUP}/{n}") for n in names):
        return None
    return {n: summary.read(f"{schema.PROJECTION_GROUP}/{n}", layer) for n in names}


def analyze(
    summary: Summary,
    params: AnalysisParams | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict, dict]:
    """(attrs, arrays) of the analysis group: every dataset of schema.ANALYSIS_DATASETS and
    EXTRA_DATASETS, computed one layer at a time. progress(done, n_layers) after each layer."""
    params = params or AnalysisParams()
    L, F, T = summary.n_layers, summary.n_neurons, summary.seq_len
    corpus = Corpus.from_summary(summary)
    n_tokens = summary.n_tokens
    tap = summary.read("tokens_at_pos")
    has_projection = _projection_layer(summary, 0) is not None if L else False
    arrays: dict[str, np.ndarray] = {}
    layer_covered = np.zeros(L, np.int64)
    layer_new = np.zeros(L, np.int64)
    layer_new_prev = np.zeros(L, np.int64)
    supp_share = np.full(L, np.nan, np.float32)
    neg_share = np.full(L, np.nan, np.float32)
    known = np.zeros(L, np.int64)
    seen_lower = np.zeros(corpus.V, dtype=bool)
    prev_layer = np.zeros(corpus.V, dtype=bool)
    for layer in range(L):
        offsets, events = summary.layer_events(layer)
        res = layer_analysis(
            corpus,
            params,
            summary.read("act_count", layer),
            summary.read("pos_count", layer),
            tap,
            summary.read("event_level", layer),
            offsets,
            events,
            n_tokens,
            _projection_layer(summary, layer) if has_projection else None,
        )
        for name in PER_NEURON:
            value = res[name]
            if name not in arrays:
                arrays[name] = np.empty((L,) + value.shape, dtype=value.dtype)
            arrays[name][layer] = value
        here = np.zeros(corpus.V, dtype=bool)
        here[res["covered_tokens"]] = True
        layer_covered[layer] = here.sum()
        layer_new[layer] = (here & ~seen_lower).sum()
        layer_new_prev[layer] = (here & ~prev_layer).sum()
        seen_lower |= here
        prev_layer = here
        n_known, n_supp, n_neg = res["supp_counts"]
        known[layer] = n_known
        if has_projection and n_known > 0:
            supp_share[layer] = n_supp / n_known
            neg_share[layer] = n_neg / n_known
        if progress is not None:
            progress(layer + 1, L)
    arrays.update(
        layer_covered=layer_covered,
        layer_new=layer_new,
        layer_new_vs_prev=layer_new_prev,
        layer_supp_share=supp_share,
        layer_neg_share=neg_share,
        layer_detectors_known=known,
    )
    n_rows = T - 1 if (corpus.bos and params.positional_skip_bos) else T
    used_tokens = int(np.asarray(tap)[T - n_rows :].sum())
    attrs = {
        "analysis_version": schema.ANALYSIS_VERSION,
        "params": params.to_json(),
        "n_triggers": params.n_triggers,
        "n_ngrams": params.n_ngrams,
        "bos_excluded": bool(corpus.bos),
        "has_projection": bool(has_projection),
        "pos_mi_bias": positional.mi_bias(n_rows, used_tokens),
    }
    return attrs, arrays


def run_analysis(path: Path | str, params: AnalysisParams | None = None, progress=None) -> tuple[dict, dict]:
    """Analyze the summary at `path` and write (replace) its analysis group atomically."""
    with Summary.open(path) as summary:
        attrs, arrays = analyze(summary, params, progress)
    replace_group(Path(path), schema.ANALYSIS_GROUP, attrs, arrays)
    return attrs, arrays
