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

Counting. Per neuron the summary keeps a uniform sample of its firing positions: the firings at
positions g with z(g) >= L_i, z a fixed hash of the position (level sampling, core.sampling); level
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
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from neuron_tui.cache import Summary, SummaryError, SummaryWriter, TokenRows, schema

from . import positional
from .sampling import MAX_LEVEL, token_levels
from .triggers import PairCounts, count_pairs


def _share(value) -> bool:
    return 0.0 < value <= 1.0


def _positive(value) -> bool:
    return value >= 1


@dataclass(frozen=True)
class AnalysisParams:
    """Thresholds of the analysis; stored as JSON in the analysis group's attribute `params`.

    Every field's type is what `neuron-tui analyze --NAME` parses, and `CHECKS` (below) what it
    accepts: a new parameter needs an entry there, or creating the class fails.
    """

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

    shape_extreme_tol: float = 0.05
    """A positional profile *reaches* 0 (or 1) where its firing rate is at most this (at least 1 minus
    this): the paper's "activation extremes" (section 5). Ours: the paper names the types by eye;
    docs/design.md, "Positional types", says how each is read."""

    shape_strong_tol: float = 0.01
    """... and *equals* 0 (or 1), the paper's "strong" pattern, within this; between the two
    tolerances the pattern is "weak" (close to, but not at, the extreme). Ours."""

    shape_min_periods: int = 3
    """An *oscillatory* profile rises above its midpoint at least this many times. Ours."""

    shape_max_gap_cv: float = 0.25
    """... at evenly spaced positions: coefficient of variation of the spacing at most this. Ours."""

    shape_thin_roughness: float = 0.1
    """An "other" profile is strong (the paper's "thin" graph) when the rate at each position differs
    from the mean of its two neighbours by at most this share of the profile's range, on average."""

    shape_smooth: int | None = None
    """Smoothing window of the position profile before the type is read (None: T // 128). Ours."""

    def shape_rule(self) -> positional.ShapeRule:
        return positional.ShapeRule(self.shape_smooth, self.shape_extreme_tol, self.shape_strong_tol,
                                    self.shape_min_periods, self.shape_max_gap_cv, self.shape_thin_roughness)

    def __post_init__(self) -> None:
        unchecked = [f.name for f in fields(self) if f.name not in CHECKS]
        if unchecked:
            raise TypeError(f"AnalysisParams.{unchecked[0]} has no entry in CHECKS")
        for f in fields(self):
            value = getattr(self, f.name)
            check, words = CHECKS[f.name]
            if not _typed(value, PARAM_TYPES[f.name]) or (value is not None and not check(value)):
                raise ValueError(f"{f.name} must be {words}, not {value!r}")
        if self.n_triggers < self.max_tokens:
            raise ValueError(f"n_triggers ({self.n_triggers}) must be at least max_tokens ({self.max_tokens})")
        if self.shape_strong_tol > self.shape_extreme_tol:
            raise ValueError(f"shape_strong_tol ({self.shape_strong_tol}) must be at most shape_extreme_tol "
                             f"({self.shape_extreme_tol})")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "AnalysisParams":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})

    @classmethod
    def of(cls, summary: Summary) -> "AnalysisParams":
        """The parameters a summary was analysed with (the defaults when it has no analysis, or an
        analysis of an older version whose parameters no longer apply)."""
        group = summary.analysis
        if group is not None and "params" in group.attrs:
            try:
                return cls.from_json(group.attrs["params"])
            except (TypeError, ValueError):
                raise SummaryError(f"{summary.path} is damaged: its analysis parameters are unreadable") from None
        return cls()


# name -> (accepts the value, how the error message says what is accepted)
CHECKS: dict[str, tuple[Callable, str]] = {
    "min_fire_rate": (_share, "a share in (0, 1]"),
    "min_coverage": (_share, "a share in (0, 1]"),
    "max_tokens": (_positive, "at least 1"),
    "min_token_count": (_positive, "at least 1"),
    "rare_rate": (lambda v: 0.0 <= v <= 1.0, "a rate in [0, 1]"),
    "mi_threshold": (lambda v: v >= 0, "at least 0"),
    "max_ngrams": (_positive, "at least 1"),
    "ngram_order": (lambda v: v in (2, 3), "2 or 3"),
    "n_triggers": (_positive, "at least 1"),
    "n_ngrams": (_positive, "at least 1"),
    "supp_top": (_positive, "at least 1"),
    "positional_skip_bos": (lambda v: True, "true or false"),
    "shape_extreme_tol": (lambda v: 0.0 <= v < 0.5, "a rate in [0, 0.5)"),
    "shape_strong_tol": (lambda v: 0.0 <= v < 0.5, "a rate in [0, 0.5)"),
    "shape_min_periods": (lambda v: v >= 2, "at least 2"),
    "shape_max_gap_cv": (lambda v: v >= 0, "at least 0"),
    "shape_thin_roughness": (lambda v: v >= 0, "at least 0"),
    "shape_smooth": (_positive, "at least 1, or none"),
}
PARAM_TYPES = typing.get_type_hints(AnalysisParams)  # name -> float, int, bool or int | None


def _typed(value, kind) -> bool:
    """`value` is of the annotated `kind` (an int counts as a float; a bool as nothing but a bool)."""
    allowed = typing.get_args(kind) or (kind,)
    if value is None:
        return type(None) in allowed
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int):
        return int in allowed or float in allowed
    return isinstance(value, float) and float in allowed


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

    def __init__(self, tokens: np.ndarray, vocab_size: int, bos: bool, rows: TokenRows | None = None):
        tokens = np.asarray(tokens)
        self.n_seq, self.T = tokens.shape
        self.flat = tokens.reshape(-1).astype(np.int64)  # local positions: row * T + t
        self.rows = rows or TokenRows(None, self.n_seq, self.T)  # a shard holds some sequences only
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
        self.z = token_levels(self.rows.global_(g)).astype(np.int8)
        # occ_by_level[L, v]: occurrences of v at positions with z >= L
        key = self.z.astype(np.int64) * self.V + self.flat[g]
        hist = np.bincount(key, minlength=MAX_LEVEL * self.V).reshape(MAX_LEVEL, self.V)
        self.occ_by_level = np.cumsum(hist[::-1], axis=0)[::-1]
        self.token_occ = self.occ_by_level[0]  # [V] occurrences outside the BOS position
        self._contexts: dict[int, Contexts] = {}

    @classmethod
    def from_summary(cls, summary: Summary) -> "Corpus":
        tokens = summary.read("tokens")[: summary.n_seq]
        return cls(tokens, len(summary.vocab), summary.bos, summary.rows)

    def to_local(self, positions: np.ndarray) -> np.ndarray:
        """Local positions (indices into `flat`) of global positions; every sequence must be here."""
        try:
            return self.rows.local(positions)
        except KeyError:
            raise SummaryError("its firing events refer to sequences whose tokens it does not hold") from None

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
    shape, strong, run = positional.classify(pos_count[rows], tap[rows], is_pos, p.shape_rule())
    out["pos_shape"], out["pos_strong"] = shape, strong
    out["pos_range"] = np.where(run >= 0, rows[np.maximum(run, 0)], -1).astype(np.int32)  # positions t

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


def _layer_inputs(summary: Summary, layer: int) -> tuple:
    offsets, events = summary.layer_events(layer)
    return (summary.read("act_count", layer), summary.read("pos_count", layer), summary.tokens_at_pos,
            summary.read("event_level", layer), offsets, events)


def _run(summary: Summary, params: AnalysisParams, put_layer, put_whole, progress=None) -> dict:
    """The analysis of every layer, one at a time: put_layer(name, layer, value) per per-neuron array,
    put_whole(name, value) per per-layer summary; returns the group's attributes."""
    L, T = summary.n_layers, summary.seq_len
    corpus = Corpus.from_summary(summary)
    has_projection = summary.projection is not None
    per_layer = {name: np.zeros(L, np.int64) for name in ("layer_covered", "layer_new", "layer_new_vs_prev",
                                                            "layer_detectors_known")}
    supp_share = np.full(L, np.nan, np.float32)
    neg_share = np.full(L, np.nan, np.float32)
    seen_lower = np.zeros(corpus.V, dtype=bool)
    prev_layer = np.zeros(corpus.V, dtype=bool)
    for layer in range(L):
        res = layer_analysis(corpus, params, *_layer_inputs(summary, layer), summary.n_tokens,
                             _projection_layer(summary, layer))
        for name in PER_NEURON:
            put_layer(name, layer, res[name])
        here = np.zeros(corpus.V, dtype=bool)
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
    n_rows = T - 1 if (corpus.bos and params.positional_skip_bos) else T
    used_tokens = int(np.asarray(summary.tokens_at_pos)[T - n_rows :].sum())
    return {
        "analysis_version": schema.ANALYSIS_VERSION,
        "params": params.to_json(),
        "n_triggers": params.n_triggers,
        "n_ngrams": params.n_ngrams,
        "bos_excluded": bool(corpus.bos),
        "has_projection": bool(has_projection),
        "pos_mi_bias": positional.mi_bias(n_rows, used_tokens),
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
    made: set[str] = set()

    def put_layer(name: str, layer: int, value: np.ndarray) -> None:
        if name not in made:
            writer.create(name, (L,) + value.shape, value.dtype, group=group)
            made.add(name)
        writer.write(name, layer, value, group=group)

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
    corpus = Corpus.from_summary(summary)
    offsets = summary.read("event_offsets", layer)[index : index + 2]
    res = layer_analysis(
        corpus, params or AnalysisParams(),
        summary.read_neuron("act_count", layer, index)[None],
        summary.read_neuron("pos_count", layer, index)[:, None],
        summary.tokens_at_pos,
        summary.read_neuron("event_level", layer, index)[None],
        offsets - offsets[0],
        summary.neuron_events(layer, index),
        summary.n_tokens,
        _projection_layer(summary, layer, index),
    )
    return {name: res[name][0] for name in PER_NEURON}
