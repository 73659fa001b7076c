"""A layer's neuron table (`neurons`, the layer screen, `SummaryFile.neurons`): numpy columns that
`LayerTable.select` filters, searches and sorts, the search's token matching, and the selection of
neurons across every layer. `core.read.queries` re-exports these names: it answers every question.

Search finds the neurons *triggered by* a token: among a neuron's stored triggers (its most frequent
firing tokens), one whose text is the one searched (`TokenMatcher`: the whole token by default, a part
of it on request) and on which it fires at least SEARCH_MIN_LIFT times as often as on an average token
(`SEARCH_RULE` says so in words for `?`, `--help` and the API).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from neuron_tui.cache import Summary, schema

from . import kinds
from .params import AnalysisParams
from .records import TableRow
from .tokens import visible_vocab

CATEGORIES = kinds.NAMES
SORT_KEYS = ("id", "cat", "rate", "distinct", "top", "pos", "supp")
DEFAULT_DESCENDING = {"cat": True, "rate": True, "distinct": False, "pos": True}
FILTERS = ("all", *CATEGORIES, "marked")
TOP_SHOWN = 3  # trigger texts in a layer table row

SEARCH_MIN_LIFT = 4.0
"""A token counts as a trigger of a neuron for search when the neuron fires on it at least this many
times more often than on an average token: P(fire | token) >= SEARCH_MIN_LIFT x firing rate. Without
it every dense neuron would "fire on ` the`" only because ` the` is frequent; 4 rather than 2 because
P(fire | token) is estimated from a bounded event sample, so a lift of 2 or 3 on a frequent token is
often sampling noise (measured on synthetic summaries with a cap of 32 events)."""
SEARCH_RULE = (f"a neuron matches when one of its triggers is the token and it fires on that token at least "
               f"{SEARCH_MIN_LIFT:g}x as often as on an average token (P(fire | token) >= {SEARCH_MIN_LIFT:g} x its "
               "firing rate), so a neuron that fires on most tokens is not listed for a frequent one")


def categories(flags: int) -> list[str]:
    """The category names of a neuron's flag bits, in CATEGORIES order."""
    return kinds.names_of(flags)


def json_float(x: Any) -> float | None:
    """A JSON-safe float: None for NaN / inf."""
    x = float(x)
    return x if math.isfinite(x) else None


def rank_1based(rank: int) -> int | None:
    """A stored 0-based rank (-1 unknown) as shown everywhere: 1 = the most suppressed token."""
    return int(rank) + 1 if rank >= 0 else None


@dataclass
class LayerTable:
    """One layer's neurons as numpy columns (index = neuron id)."""

    layer: int
    flags: np.ndarray  # kinds.FLAG_DTYPE
    count: np.ndarray  # int64 firings
    rate: np.ndarray  # float64
    distinct: np.ndarray  # int32, -1 unknown (no analysis)
    top: np.ndarray  # object: the first TOP_SHOWN trigger texts, visible form, "" when none
    pos_mi: np.ndarray  # float32, NaN unknown
    pos_shape: np.ndarray  # uint8 codes into schema.POS_SHAPES (0 unknown or not positional)
    supp: np.ndarray  # int32 best 0-based suppression rank of its triggers, -1 unknown
    trig_tok: np.ndarray | None  # [F, Kt] int32 (-1 pad), None without analysis
    trig_pfire: np.ndarray | None  # [F, Kt] float32
    vocab: list[str] = field(default_factory=list, repr=False)  # each token id's raw text
    _keys: dict = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return len(self.flags)

    def sort_values(self, column: str) -> np.ndarray:
        """float64 values of `column` for every neuron, NaN where unknown (text columns: their rank
        in this table's sorted texts)."""
        if column == "id":
            return np.arange(self.n, dtype=np.float64)
        if column == "cat":
            return self.flags.astype(np.float64)
        if column == "rate":
            return self.rate.astype(np.float64)
        if column == "distinct":
            return np.where(self.distinct >= 0, self.distinct, np.nan).astype(np.float64)
        if column == "top":
            texts, inverse = np.unique(self.top.astype(str), return_inverse=True)
            raw = inverse.astype(np.float64).ravel()
            if len(texts) and texts[0] == "":
                raw[raw == 0] = np.nan
            return raw
        if column == "pos":
            return self.pos_mi.astype(np.float64)
        if column == "supp":
            return np.where(self.supp >= 0, self.supp, np.nan).astype(np.float64)
        raise KeyError(f"unknown sort column {column!r}; one of {', '.join(SORT_KEYS)}")

    def sort_key(self, column: str, descending: bool) -> np.ndarray:
        """float64 key whose ascending stable argsort is the wanted order; unknown values sort last."""
        if (column, descending) not in self._keys:
            self._keys[(column, descending)] = order_key(self.sort_values(column), descending)
        return self._keys[(column, descending)]

    def mask(self, category: str, marked: set[int] | None = None) -> np.ndarray:
        """Neurons of a category ("all", a CATEGORIES name, or "marked": the ids in `marked`)."""
        if category == "all":
            return np.ones(self.n, dtype=bool)
        if category == "marked":
            out = np.zeros(self.n, dtype=bool)
            out[sorted(marked or ())] = True
            return out
        if category not in kinds.BY_NAME:
            raise KeyError(f"unknown category {category!r}; one of {', '.join(FILTERS)}")
        return kinds.has(self.flags, category)

    def triggered_by(self, matching: np.ndarray) -> np.ndarray:
        """Neurons with a trigger among the tokens `matching` [V + 1] marks, at a lift of at least
        SEARCH_MIN_LIFT (see there); none without an analysis."""
        if self.trig_tok is None:
            return np.zeros(self.n, dtype=bool)
        lifted = self.trig_pfire >= SEARCH_MIN_LIFT * self.rate[:, None]
        return (matching[self.trig_tok] & lifted & (self.trig_tok >= 0)).any(1)

    def select(self, category: str = "all", matching: np.ndarray | None = None, sort: str = "id",
               descending: bool = False, marked: set[int] | None = None) -> np.ndarray:
        """The ids of the neurons of `category` (triggered by `matching` tokens, when given), in the
        order of `sort` (stable: ties keep ascending ids)."""
        mask = self.mask(category, marked)
        if matching is not None:
            mask &= self.triggered_by(matching)
        idx = np.flatnonzero(mask)
        return idx[np.argsort(self.sort_key(sort, descending)[idx], kind="stable")]

    def trigger_texts(self, i: int) -> list[str]:
        """The raw texts of neuron i's first TOP_SHOWN triggers (what `top` shows in visible form)."""
        if self.trig_tok is None:
            return []
        return [self.vocab[t] if t < len(self.vocab) else f"<{t}>" for t in self.trig_tok[i, :TOP_SHOWN].tolist()
                if t >= 0]

    def row(self, i: int) -> TableRow:
        """Neuron i's row of the table, JSON-ready (`neurons --json`; keys in TABLE_KEYS)."""
        code = int(self.pos_shape[i])
        return {
            "layer": self.layer,
            "neuron": int(i),
            "categories": categories(int(self.flags[i])),
            "firings": int(self.count[i]),
            "rate": float(self.rate[i]),
            "distinct": int(self.distinct[i]) if self.distinct[i] >= 0 else None,
            "triggers": self.trigger_texts(i),
            "pos_mi": json_float(self.pos_mi[i]),
            "pos_shape": schema.POS_SHAPES[code] if code else None,
            "supp_rank": rank_1based(int(self.supp[i])),
        }


TABLE_KEYS = ("layer", "neuron", "categories", "firings", "rate", "distinct", "triggers", "pos_mi", "pos_shape",
              "supp_rank")


def order_key(values: np.ndarray, descending: bool) -> np.ndarray:
    """The ascending sort key of `values` (NaN unknown) for one direction: unknown values sort last."""
    key = -values if descending else values.copy()
    key[np.isnan(key)] = np.inf
    return key


def layer_table(summary: Summary, layer: int, shown: np.ndarray | None = None) -> LayerTable:
    """Layer `layer`'s table; `shown` is the summary's `visible_vocab` when the caller keeps one."""
    F = summary.n_neurons
    count = summary.read("act_count", layer).astype(np.int64)
    rate = count / max(1, summary.n_tokens)
    group = summary.analysis
    if group is None:
        flags = kinds.count_flags(count, summary.read("act_max", layer), max(1, summary.n_tokens),
                                  AnalysisParams.of(summary))
        return LayerTable(layer, flags, count, rate, np.full(F, -1, np.int32), np.full(F, "", dtype=object),
                          np.full(F, np.nan, np.float32), np.zeros(F, np.uint8), np.full(F, -1, np.int32), None, None)
    shown = visible_vocab(summary.vocab) if shown is None else shown
    trig_tok = group.read("trig_tok", layer).astype(np.int32)
    ranks = group.read("trig_supp_rank", layer).astype(np.int64)
    known = ranks >= 0
    supp = np.where(known.any(1), np.where(known, ranks, np.iinfo(np.int32).max).min(1), -1).astype(np.int32)
    top = shown[trig_tok[:, 0]] if trig_tok.shape[1] else np.full(F, "", dtype=object)
    for j in range(1, min(TOP_SHOWN, trig_tok.shape[1])):
        col = shown[trig_tok[:, j]]
        top = np.where(col != "", top + " " + col, top)
    return LayerTable(layer, group.read("flags", layer).astype(kinds.FLAG_DTYPE), count, rate,
                      group.read("n_distinct", layer).astype(np.int32), top,
                      group.read("pos_mi", layer).astype(np.float32), group.read("pos_shape", layer).astype(np.uint8),
                      supp, trig_tok, group.read("trig_pfire", layer).astype(np.float32), summary.vocab)


def select_layers(tables: Iterable[LayerTable], category: str = "all", matching: np.ndarray | None = None,
                  sort: str = "id", descending: bool = False, per_layer: bool = False,
                  limit: int | None = None) -> list[tuple[LayerTable, int]]:
    """(table, neuron id) of the neurons of every table in `tables` that `LayerTable.select` picks, in
    one order over all of them: by `sort` across layers (ties by layer, then id), or layer after layer
    (`per_layer`, and always for `id`); the first `limit` (None: all)."""
    tables = list(tables)
    picked = [(t, t.select(category, matching, sort, descending)) for t in tables]
    if per_layer or sort == "id" or len(tables) < 2:
        pairs = [(t, int(i)) for t, ids in picked for i in ids]
        return pairs[:limit] if limit is not None else pairs
    if limit is not None:  # each layer's order is the global one restricted to it: its first `limit` suffice
        picked = [(t, ids[:limit]) for t, ids in picked]
    if sort == "top":  # text ranks are per table: rank the texts of every layer together
        texts = np.concatenate([t.top[ids].astype(str) for t, ids in picked]) if picked else np.zeros(0, str)
        uniq, inverse = np.unique(texts, return_inverse=True)
        values = inverse.astype(np.float64).ravel()
        if len(uniq) and uniq[0] == "":
            values[values == 0] = np.nan
        keys = order_key(values, descending)
    else:
        keys = np.concatenate([t.sort_key(sort, descending)[ids] for t, ids in picked])
    owner = np.concatenate([np.full(len(ids), k) for k, (_, ids) in enumerate(picked)])
    neuron = np.concatenate([ids for _, ids in picked])
    order = np.lexsort((neuron, owner, keys))[:limit]
    return [(picked[int(owner[j])][0], int(neuron[j])) for j in order]


class TokenMatcher:
    """Which vocabulary items a search text matches: the whole token (` of` is ` of`, not ` offering`),
    or with `substring` every token that contains it (case-insensitive unless the text has capitals).
    A visible space (␣) in the text stands for a space. `matching(text, substring)` is a bool array
    [V + 1] (the last entry, id -1, never matches)."""

    def __init__(self, vocab: list[str]):
        self.vocab = vocab
        self._lower = [t.lower() for t in vocab]
        self._ids: dict[str, list[int]] = {}
        for i, t in enumerate(vocab):
            self._ids.setdefault(t, []).append(i)
        self.matching = lru_cache(maxsize=64)(self._matching)

    def _matching(self, text: str, substring: bool = False) -> np.ndarray:
        table = np.zeros(len(self.vocab) + 1, dtype=bool)
        text = text.replace("␣", " ")
        if not text:
            return table
        if not substring:
            table[self._ids.get(text, [])] = True
            return table
        texts = self.vocab if text != text.lower() else self._lower
        table[[i for i, t in enumerate(texts) if text in t]] = True
        return table
