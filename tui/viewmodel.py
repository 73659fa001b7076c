"""View-models of the explorer: what each screen shows, computed from a summary. No Textual here.

The screens only format what these objects return; filtering, sorting, searching, paging, the detail
record of a neuron, marks and their export all live here and are unit-tested without a terminal.

Data flow (DESIGN sections 2 and 6): `Explorer` wraps one `cache.Summary` and reads it one layer at a
time; each layer becomes a `LayerColumns` (one numpy array per table column, kept in a small LRU), and a
`LayerView` is an order over it (filter = boolean mask, sort = stable argsort, search = token-text match
on the neurons' triggers), paged so a widget formats only the rows on screen. Every method that reads
the file may be called from a worker thread: reads are serialised by a lock (the reader's own cache
is not thread-safe).
"""

from __future__ import annotations

import csv
import json
import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from neuron_tui.cache import Summary, SummaryError, schema

# ---- parameters -------------------------------------------------------------------------------------

RARE_RATE = 1e-4
"""Firing rate under which an alive neuron is "rare" when the summary has no analysis group (DESIGN 5:
our default; the analysis group's own `rare_rate` attribute wins when present)."""

SEARCH_MIN_LIFT = 4.0
"""A token counts as a trigger of a neuron for search when the neuron fires on it at least this many
times more often than on an average token: P(fire | token) >= SEARCH_MIN_LIFT x firing rate. Without
it every dense neuron would "fire on ` the`" only because ` the` is frequent; 4 rather than 2 because
P(fire | token) is estimated from a bounded event sample (DESIGN 4), so a lift of 2 or 3 on a frequent
token is often sampling noise (measured on synthetic summaries with a cap of 32 events)."""

LAYER_CACHE = 8  # LayerColumns kept (the explorer goes back and forth between a few layers)

FILTERS = ("all", "dead", "rare", "token", "ngram", "positional", "marked")
FILTER_FLAGS = {
    "dead": schema.FLAG_DEAD,
    "rare": schema.FLAG_RARE,
    "token": schema.FLAG_TOKEN,
    "ngram": schema.FLAG_NGRAM,
    "positional": schema.FLAG_POSITIONAL,
}
ANALYSIS_FILTERS = ("token", "ngram", "positional")  # need the analysis group
CATEGORY_LETTERS = ((schema.FLAG_DEAD, "D"), (schema.FLAG_RARE, "R"), (schema.FLAG_TOKEN, "T"),
                    (schema.FLAG_NGRAM, "N"), (schema.FLAG_POSITIONAL, "P"))


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    width: int  # minimum width in cells; the "top" column takes what is left
    align: str = "right"
    help: str = ""


COLUMNS = (
    Column("id", "neuron", 6, help="neuron index in its layer (* = marked)"),
    Column("cat", "cat", 5, "left", "categories: D dead, R rare, T token, N n-gram, P positional"),
    Column("rate", "rate", 8, help="firing rate: firings / tokens"),
    Column("distinct", "dist", 5, help="distinct tokens among the neuron's sampled firings"),
    Column("top", "top triggers", 14, "left", "tokens it fires on most (BOS excluded), ␣ = space"),
    Column("pos", "pos MI", 6, help="I(fired; position) in nats (positional above 0.05)"),
    Column("supp", "supp", 5, help="best rank of its triggers among its suppressed tokens (0 = most)"),
)
COLUMN_KEYS = tuple(c.key for c in COLUMNS)


def show_token(text: str) -> str:
    """A token's text made visible in one cell run: spaces at the ends as ␣, newlines as ⏎, tabs as ⇥."""
    if text == "":
        return "∅"
    core = text.strip(" ")
    lead = len(text) - len(text.lstrip(" "))
    trail = len(text) - len(text.rstrip(" ")) if core else 0
    out = "␣" * lead + core + "␣" * trail
    return out.replace("\n", "⏎").replace("\t", "⇥").replace("\r", "␍")


def categories(flags: int) -> list[str]:
    return [name for bit, name in schema.FLAG_NAMES.items() if flags & bit]


def category_letters(flags: int) -> str:
    return "".join(letter if flags & bit else "·" for bit, letter in CATEGORY_LETTERS)


def parse_goto(text: str) -> tuple[int | None, int | None] | None:
    """`L12 N345`, `l12n345`, `12/345`, `12 345`, `12:345` -> (12, 345); `L12` -> (12, None); else None."""
    import re

    s = text.strip().lower()
    m = re.fullmatch(r"l?\s*(\d+)\s*(?:[/:,\s]\s*n?|n)\s*(\d+)", s)
    if m:
        return int(m.group(1)), int(m.group(2))
    m = re.fullmatch(r"l\s*(\d+)|layer\s*(\d+)", s)
    if m:
        return int(m.group(1) or m.group(2)), None
    return None


# ---- summary-level info -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SummaryInfo:
    path: Path
    model: str
    revision: str
    architecture: str
    corpus: str
    n_tokens: int
    rule: str
    threshold: float
    tau_source: str
    n_layers: int
    n_neurons: int
    seq_len: int
    n_seq: int
    n_seq_planned: int
    complete: bool
    has_analysis: bool
    has_projection: bool
    tool_version: str
    shard: str = "0/1"

    @property
    def rule_text(self) -> str:
        if self.rule == "relu":
            return f"ReLU: fired iff h > {self.threshold:g}"
        if self.tau_source == "quantile":
            return f"|h| > tau_l, tau_l = {self.threshold:g} quantile of |h|"
        return f"|h| > {self.threshold:g}"

    @property
    def status(self) -> str:
        """One line saying what is missing or partial ("" when the summary is complete and analysed)."""
        parts = []
        if self.shard not in ("0/1", ""):
            parts.append(f"shard {self.shard} of the corpus")
        if not self.complete:
            parts.append(f"PARTIAL: {self.n_seq:,} of {self.n_seq_planned:,} sequences collected so far; read-only")
        if not self.has_analysis:
            parts.append(f"no analysis yet: counts only; run `neuron-tui analyze {self.path}`")
        return " · ".join(parts)


def _corpus_text(raw: dict) -> str:
    """One line about the corpus identity: kind and what it is (files, builtin sources, HF dataset)."""
    if not raw:
        return "?"
    desc = raw.get("description") if isinstance(raw.get("description"), dict) else {}
    kind = str(raw.get("kind") or raw.get("source") or raw.get("name") or "corpus")
    what = ""
    if desc.get("files"):
        files = [str(f) for f in desc["files"]]
        what = ", ".join(files[:2]) + (f" +{len(files) - 2}" if len(files) > 2 else "")
    elif desc.get("sources"):
        what = "+".join(str(s) for s in desc["sources"])
    elif desc.get("name"):
        what = ":".join(str(desc[k]) for k in ("name", "config", "split") if desc.get(k))
    extra = []
    if raw.get("n_documents"):
        extra.append(f"{int(raw['n_documents']):,} docs")
    if not desc:
        extra += [f"{k}={v}" for k, v in raw.items() if k not in ("kind", "source", "name")
                  and not isinstance(v, (dict, list))][:3]
    text = f"{kind} {what}".strip() if what else kind
    return f"{text} ({', '.join(extra)})" if extra else text


# ---- layer columns --------------------------------------------------------------------------------------


@dataclass
class LayerColumns:
    """One layer's table as numpy columns (index = neuron id)."""

    layer: int
    flags: np.ndarray  # uint8
    count: np.ndarray  # int64
    rate: np.ndarray  # float64
    distinct: np.ndarray  # int32, -1 unknown
    top_text: np.ndarray  # object (str), "" when none
    pos_mi: np.ndarray  # float32, NaN unknown
    supp: np.ndarray  # int32, -1 unknown
    trig_tok: np.ndarray | None  # [F, Kt] int32 (-1 pad) or None without analysis
    trig_pfire: np.ndarray | None
    _keys: dict = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return len(self.flags)

    def sort_key(self, column: str, descending: bool) -> np.ndarray:
        """float64 key whose ascending stable argsort is the wanted order; unknown values sort last."""
        cache_key = (column, descending)
        if cache_key not in self._keys:
            if column == "id":
                raw = np.arange(self.n, dtype=np.float64)
            elif column == "cat":
                raw = self.flags.astype(np.float64)
            elif column == "rate":
                raw = self.rate.astype(np.float64)
            elif column == "distinct":
                raw = np.where(self.distinct >= 0, self.distinct, np.nan).astype(np.float64)
            elif column == "top":
                texts, inverse = np.unique(self.top_text.astype(str), return_inverse=True)
                raw = inverse.astype(np.float64).ravel()
                if len(texts) and texts[0] == "":
                    raw[raw == 0] = np.nan
            elif column == "pos":
                raw = self.pos_mi.astype(np.float64)
            elif column == "supp":
                raw = np.where(self.supp >= 0, self.supp, np.nan).astype(np.float64)
            else:
                raise KeyError(column)
            key = -raw if descending else raw.copy()
            key[np.isnan(key)] = np.inf
            self._keys[cache_key] = key
        return self._keys[cache_key]


@dataclass(frozen=True)
class ViewState:
    """What the layer table shows: a filter, a sort column and direction, a search query."""

    filter: str = "all"
    sort: str = "id"
    descending: bool = False
    query: str = ""


@dataclass(frozen=True)
class Row:
    neuron: int
    flags: int
    cat: str
    rate: float
    count: int
    distinct: int
    top: str
    pos_mi: float
    supp: int
    marked: bool


class LayerView:
    """An ordered, filtered view of one layer's neurons; `page` gives the rows a widget draws."""

    def __init__(self, cols: LayerColumns, state: ViewState, order: np.ndarray, marked: set[int]):
        self.cols, self.state, self.order, self._marked = cols, state, order, marked

    @property
    def layer(self) -> int:
        return self.cols.layer

    def __len__(self) -> int:
        return len(self.order)

    def neuron_at(self, row: int) -> int | None:
        return int(self.order[row]) if 0 <= row < len(self.order) else None

    def row_of(self, neuron: int) -> int | None:
        hits = np.flatnonzero(self.order == neuron)
        return int(hits[0]) if len(hits) else None

    def page(self, start: int, count: int) -> list[Row]:
        c = self.cols
        out = []
        for i in self.order[max(0, start) : max(0, start) + max(0, count)].tolist():
            f = int(c.flags[i])
            out.append(Row(i, f, category_letters(f), float(c.rate[i]), int(c.count[i]), int(c.distinct[i]),
                           str(c.top_text[i]), float(c.pos_mi[i]), int(c.supp[i]), i in self._marked))
        return out


# ---- overview --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OverviewRow:
    layer: int
    neurons: int
    dead: int
    rare: int
    token: int | None  # None without analysis
    ngram: int | None
    positional: int | None
    mean_rate: float  # mean firing rate of the alive neurons
    covered: int | None  # vocabulary items covered by the layer's token detectors
    new: int | None  # ... not covered by any lower layer


# ---- neuron detail ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    tok: int
    text: str
    count: float
    pfire: float
    occurrences: int
    supp_rank: int  # -1 unknown
    covered: bool | None = None  # a covered token counted in the detector's coverage (None: not stored)


@dataclass(frozen=True)
class NGram:
    prev: str
    tok: str
    tok_id: int
    count: float


@dataclass(frozen=True)
class Scored:
    tok: int
    text: str
    score: float
    is_trigger: bool


@dataclass(frozen=True)
class Context:
    position: int
    value: float
    tokens: list[str]
    index: int  # index of the firing token in `tokens`


@dataclass
class NeuronDetail:
    layer: int
    neuron: int
    flags: int
    count: int
    rate: float
    act_max: float
    act_mean: float
    level: int
    n_events: int
    distinct: int
    pos_mi: float
    pos_shape: str
    coverage: float
    triggers: list[Trigger]
    ngrams: list[NGram]
    promoted: list[Scored]
    suppressed: list[Scored]
    pos_rate: np.ndarray
    contexts: list[Context]
    note: str | None
    has_analysis: bool
    has_projection: bool

    @property
    def categories(self) -> list[str]:
        return categories(self.flags)

    @property
    def trigger_ids(self) -> set[int]:
        return {t.tok for t in self.triggers}

    def as_record(self, top: int = 5) -> dict:
        """Flat, JSON-able data of this neuron (what an export row holds)."""
        return {
            "layer": self.layer,
            "neuron": self.neuron,
            "note": self.note or "",
            "categories": " ".join(self.categories),
            "firings": self.count,
            "rate": self.rate,
            "act_max": None if not math.isfinite(self.act_max) else self.act_max,
            "distinct": self.distinct if self.distinct >= 0 else None,
            "pos_mi": None if math.isnan(self.pos_mi) else self.pos_mi,
            "pos_shape": self.pos_shape,
            "coverage": None if math.isnan(self.coverage) else self.coverage,
            "triggers": [{"token": t.text, "count": t.count, "p_fire": t.pfire, "supp_rank": t.supp_rank}
                         for t in self.triggers[:top]],
            "ngrams": [{"prev": g.prev, "token": g.tok, "count": g.count} for g in self.ngrams[:top]],
            "promoted": [{"token": s.text, "score": s.score} for s in self.promoted[:top]],
            "suppressed": [{"token": s.text, "score": s.score} for s in self.suppressed[:top]],
        }


# ---- marks ------------------------------------------------------------------------------------------------


class ReadOnlyError(Exception):
    """Marks cannot be changed (the summary is partial, or the side file is not writable)."""


class Marks:
    """Marked neurons with a note each, in `<summary>.marks.json` next to the summary.

    The side file is small JSON ({"summary", "key", "marks": [{"layer", "neuron", "note", "time"}]}),
    rewritten atomically on every change. A side file that cannot be parsed is never overwritten: it is
    kept as `<name>.bad` before the next save, and `error` says so.
    """

    def __init__(self, summary_path: Path, key: str = "", read_only: bool = False):
        self.path = Path(str(summary_path) + ".marks.json")
        self.summary_name = Path(summary_path).name
        self.key = key
        self.read_only = read_only
        self.error = ""
        self._marks: dict[tuple[int, int], dict] = {}
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            for m in data.get("marks", []):
                self._marks[(int(m["layer"]), int(m["neuron"]))] = {
                    "note": str(m.get("note", "")), "time": m.get("time", "")}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self._marks.clear()
            self.error = f"{self.path.name} is unreadable ({exc.__class__.__name__}); it will be kept as .bad"

    def __len__(self) -> int:
        return len(self._marks)

    def __contains__(self, item: tuple[int, int]) -> bool:
        return tuple(item) in self._marks

    def __iter__(self) -> Iterator[tuple[int, int, str]]:
        with self._lock:
            items = sorted(self._marks.items())
        for (layer, neuron), m in items:
            yield layer, neuron, m["note"]

    def note(self, layer: int, neuron: int) -> str | None:
        m = self._marks.get((layer, neuron))
        return None if m is None else m["note"]

    def in_layer(self, layer: int) -> set[int]:
        with self._lock:  # workers read while the UI thread marks
            return {n for (l, n) in self._marks if l == layer}

    def set(self, layer: int, neuron: int, note: str) -> None:
        self._check_writable()
        with self._lock:
            self._marks[(int(layer), int(neuron))] = {"note": note, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
            self._save()

    def remove(self, layer: int, neuron: int) -> bool:
        self._check_writable()
        with self._lock:
            if self._marks.pop((int(layer), int(neuron)), None) is None:
                return False
            self._save()
            return True

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyError("this summary is partial (still being collected): marks are read-only")

    def _save(self) -> None:
        data = {
            "summary": self.summary_name,
            "key": self.key,
            "marks": [{"layer": l, "neuron": n, **m} for (l, n), m in sorted(self._marks.items())],
        }
        try:
            if self.error and self.path.exists():
                os.replace(self.path, self.path.with_name(self.path.name + ".bad"))
                self.error = ""
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            raise ReadOnlyError(f"cannot write {self.path}: {exc.strerror or exc}") from None


# ---- the explorer -----------------------------------------------------------------------------------------


class Explorer:
    """The root view-model: one open summary, its layers (LRU), overview, details, search and marks."""

    def __init__(self, summary: Summary, *, min_lift: float = SEARCH_MIN_LIFT):
        self.summary = summary
        self.min_lift = min_lift
        self._lock = threading.RLock()
        self._layers: OrderedDict[int, LayerColumns] = OrderedDict()
        self._vocab_arr: np.ndarray | None = None
        self._vocab_lower: list[str] | None = None
        self._match_cache: tuple[str, np.ndarray] | None = None
        self._overview: list[OverviewRow] | None = None
        a = summary.attrs
        self.info = SummaryInfo(
            path=summary.path,
            model=str(a.get("model", "?")),
            revision=str(a.get("model_revision", "")),
            architecture=str(a.get("architecture", "?")),
            corpus=_corpus_text(_json(a.get("corpus"))),
            n_tokens=int(a.get("n_tokens", 0)),
            rule=str(a.get("rule", "?")),
            threshold=float(a.get("threshold", float("nan"))),
            tau_source=str(a.get("tau_source", "")),
            n_layers=summary.n_layers,
            n_neurons=summary.n_neurons,
            seq_len=summary.seq_len,
            n_seq=int(a.get("n_seq", 0)),
            n_seq_planned=int(a.get("n_seq_planned", a.get("n_seq", 0))),
            complete=summary.complete,
            has_analysis=summary.has(schema.ANALYSIS_GROUP + "/flags"),
            has_projection=summary.has(schema.PROJECTION_GROUP + "/suppressed_tok"),
            tool_version=str(a.get("tool_version", "")),
            shard=str(a.get("shard", "0/1")),
        )
        group = summary.group_attrs(schema.ANALYSIS_GROUP)
        params = {**_json(group.get("params")), **group}  # core.analysis stores its parameters as JSON
        rare = params.get("rare_rate")
        self.rare_rate = float(rare) if isinstance(rare, (int, float)) else RARE_RATE
        self.analysis_params = params
        self.marks = Marks(summary.path, str(a.get("key", "")), read_only=not self.info.complete)

    @classmethod
    def open(cls, path: Path | str, **kwargs) -> "Explorer":
        """Open a summary (raises cache.SummaryError with a one-line message when it cannot)."""
        summary = Summary.open(path)
        try:
            if summary.n_layers < 1 or summary.n_neurons < 1:
                raise SummaryError(f"{path} holds no layers")
            return cls(summary, **kwargs)
        except (KeyError, ValueError, TypeError) as exc:
            summary.close()
            raise SummaryError(f"{path} is corrupt: missing or invalid attribute {exc}") from None

    def close(self) -> None:
        with self._lock:
            self.summary.close()

    def _read(self, name: str, layer: int | None = None) -> np.ndarray:
        with self._lock:
            return self.summary.read(name, layer)

    # ---- tokens ----
    @property
    def vocab(self) -> np.ndarray:
        """Token texts as an object array with one extra "" at the end, so id -1 reads as ""."""
        if self._vocab_arr is None:
            with self._lock:
                texts = self.summary.vocab
            arr = np.empty(len(texts) + 1, dtype=object)
            arr[:-1] = texts
            arr[-1] = ""
            self._vocab_arr = arr
        return self._vocab_arr

    def token_text(self, tok: int) -> str:
        return str(self.vocab[tok]) if -1 <= tok < len(self.vocab) - 1 else f"<{tok}>"

    def match_table(self, query: str) -> np.ndarray:
        """bool [V+1]: tokens whose text contains `query` (case-insensitive unless it has capitals)."""
        if self._match_cache and self._match_cache[0] == query:
            return self._match_cache[1]
        vocab = self.vocab
        table = np.zeros(len(vocab), dtype=bool)
        if query:
            if query != query.lower():
                hits = [i for i, s in enumerate(vocab[:-1]) if query in s]
            else:
                if self._vocab_lower is None:
                    self._vocab_lower = [s.lower() for s in vocab[:-1]]
                hits = [i for i, s in enumerate(self._vocab_lower) if query in s]
            table[hits] = True
        self._match_cache = (query, table)
        return table

    # ---- layers ----
    def layer(self, layer: int) -> LayerColumns:
        """One layer's columns (read once, then from an LRU of LAYER_CACHE layers)."""
        if not 0 <= layer < self.info.n_layers:
            raise IndexError(f"layer {layer} out of range 0..{self.info.n_layers - 1}")
        with self._lock:
            if layer in self._layers:
                self._layers.move_to_end(layer)
                return self._layers[layer]
            cols = self._load_layer(layer)
            self._layers[layer] = cols
            while len(self._layers) > LAYER_CACHE:
                self._layers.popitem(last=False)
            return cols

    def is_cached(self, layer: int) -> bool:
        return layer in self._layers

    def _load_layer(self, layer: int) -> LayerColumns:
        F = self.info.n_neurons
        count = self._read("act_count", layer).astype(np.int64)
        rate = count / max(1, self.info.n_tokens)
        if self.info.has_analysis:
            A = schema.ANALYSIS_GROUP + "/"
            flags = self._read(A + "flags", layer).astype(np.uint8)
            distinct = self._read(A + "n_distinct", layer).astype(np.int32)
            pos_mi = self._read(A + "pos_mi", layer).astype(np.float32)
            trig_tok = self._read(A + "trig_tok", layer).astype(np.int32)
            trig_pfire = self._read(A + "trig_pfire", layer).astype(np.float32)
            ranks = self._read(A + "trig_supp_rank", layer).astype(np.int64)
            known = ranks >= 0
            supp = np.where(known.any(1), np.where(known, ranks, np.iinfo(np.int32).max).min(1), -1).astype(np.int32)
            top_text = self._top_text(trig_tok)
        else:
            flags = np.where(count == 0, schema.FLAG_DEAD, 0).astype(np.uint8)
            flags[(count > 0) & (rate < self.rare_rate)] |= schema.FLAG_RARE
            distinct = np.full(F, -1, np.int32)
            pos_mi = np.full(F, np.nan, np.float32)
            supp = np.full(F, -1, np.int32)
            top_text = np.full(F, "", dtype=object)
            trig_tok = trig_pfire = None
        return LayerColumns(layer, flags, count, rate, distinct, top_text, pos_mi, supp, trig_tok, trig_pfire)

    def _top_text(self, trig_tok: np.ndarray, shown: int = 3) -> np.ndarray:
        """"tok1 tok2 tok3" per neuron, visible-space form, built with numpy string ops."""
        vocab = self.vocab
        visible = _visible_vocab(self, vocab)
        cols = [visible[trig_tok[:, j]] for j in range(min(shown, trig_tok.shape[1]))]
        out = cols[0].copy() if cols else np.full(len(trig_tok), "", dtype=object)
        for col in cols[1:]:
            out = np.where(col != "", out + " " + col, out)
        return out

    # ---- views ----
    def view(self, layer: int, state: ViewState) -> LayerView:
        """Filter, search and sort one layer (reads it first when it is not cached)."""
        cols = self.layer(layer)
        marked = self.marks.in_layer(layer)
        mask = self.filter_mask(cols, state.filter, marked)
        if state.query:
            mask &= self.search_mask(cols, state.query)
        idx = np.flatnonzero(mask)
        key = cols.sort_key(state.sort, state.descending)[idx]
        order = idx[np.argsort(key, kind="stable")]
        return LayerView(cols, state, order, marked)

    def filter_mask(self, cols: LayerColumns, name: str, marked: set[int] | None = None) -> np.ndarray:
        if name == "all":
            return np.ones(cols.n, dtype=bool)
        if name == "marked":
            mask = np.zeros(cols.n, dtype=bool)
            mask[sorted(marked if marked is not None else self.marks.in_layer(cols.layer))] = True
            return mask
        if name not in FILTER_FLAGS:
            raise KeyError(f"unknown filter {name!r}")
        return (cols.flags & FILTER_FLAGS[name]) > 0

    def search_mask(self, cols: LayerColumns, query: str) -> np.ndarray:
        """Neurons with a trigger whose text contains `query` (triggers: see SEARCH_MIN_LIFT)."""
        if not query:
            return np.ones(cols.n, dtype=bool)
        if cols.trig_tok is None:
            return np.zeros(cols.n, dtype=bool)
        table = self.match_table(query)
        hit = table[cols.trig_tok]
        lifted = cols.trig_pfire >= self.min_lift * cols.rate[:, None]
        return (hit & lifted & (cols.trig_tok >= 0)).any(1)

    def counts_by_filter(self, layer: int) -> dict[str, int]:
        cols = self.layer(layer)
        marked = self.marks.in_layer(layer)
        return {name: int(self.filter_mask(cols, name, marked).sum()) for name in FILTERS}

    # ---- overview ----
    def overview(self) -> list[OverviewRow]:
        if self._overview is None:
            self._overview = [self._overview_row(l) for l in range(self.info.n_layers)]
        return self._overview

    def _overview_row(self, layer: int) -> OverviewRow:
        count = self._read("act_count", layer)
        alive = count > 0
        rate = count / max(1, self.info.n_tokens)
        mean_rate = float(rate[alive].mean()) if alive.any() else 0.0
        if self.info.has_analysis:
            A = schema.ANALYSIS_GROUP + "/"
            flags = self._read(A + "flags", layer)

            def n(bit):
                return int(np.count_nonzero(flags & bit))

            covered = self._scalar(A + "layer_covered", layer)
            new = self._scalar(A + "layer_new", layer)
            return OverviewRow(layer, len(count), n(schema.FLAG_DEAD), n(schema.FLAG_RARE), n(schema.FLAG_TOKEN),
                               n(schema.FLAG_NGRAM), n(schema.FLAG_POSITIONAL), mean_rate, covered, new)
        rare = int(np.count_nonzero(alive & (rate < self.rare_rate)))
        return OverviewRow(layer, len(count), int(np.count_nonzero(~alive)), rare, None, None, None, mean_rate, None, None)

    def _scalar(self, name: str, layer: int) -> int | None:
        with self._lock:
            if not self.summary.has(name):
                return None
            return int(self.summary.read(name)[layer])

    # ---- neuron detail ----
    def neuron(self, layer: int, neuron: int, contexts: int = 8) -> NeuronDetail:
        """Everything the detail screen shows about one neuron."""
        if not 0 <= neuron < self.info.n_neurons:
            raise IndexError(f"neuron {neuron} out of range 0..{self.info.n_neurons - 1}")
        cols = self.layer(layer)
        s = self.summary
        with self._lock:
            pos_count = s.read_neuron("pos_count", layer, neuron).astype(np.float64)
            at_pos = s.read("tokens_at_pos").astype(np.float64)
            top_val = s.read_neuron("top_val", layer, neuron)
            top_pos = s.read_neuron("top_pos", layer, neuron)
            act_max = float(s.read("act_max", layer)[neuron])
            act_sum = float(s.read("act_sum", layer)[neuron])
            level = int(s.read("event_level", layer)[neuron])
            events = s.neuron_events(layer, neuron)
            hist = s.token_histogram() if self.info.has_analysis else None
        count = int(cols.count[neuron])
        pos_rate = np.divide(pos_count, at_pos, out=np.zeros_like(pos_count), where=at_pos > 0)
        text = self.token_text
        triggers, ngrams, pos_shape, coverage = [], [], "", float("nan")
        if self.info.has_analysis:
            A = schema.ANALYSIS_GROUP + "/"
            tt, tc, tp = (self._read(A + n, layer)[neuron] for n in ("trig_tok", "trig_count", "trig_pfire"))
            tr = self._read(A + "trig_supp_rank", layer)[neuron]
            with self._lock:
                explains = s.read(A + "trig_explains", layer)[neuron].tolist() if s.has(A + "trig_explains") else None
            for k, (tok, c, p, r) in enumerate(zip(tt.tolist(), tc.tolist(), tp.tolist(), tr.tolist())):
                if tok >= 0:
                    occ = int(hist[tok]) if tok < len(hist) else 0
                    cov = bool(explains[k]) if explains is not None else None
                    triggers.append(Trigger(tok, text(tok), float(c), float(p), occ, int(r), cov))
            gp, gt, gc = (self._read(A + n, layer)[neuron] for n in ("ngram_prev", "ngram_tok", "ngram_count"))
            for p, t, c in zip(gp.tolist(), gt.tolist(), gc.tolist()):
                if t >= 0:
                    ngrams.append(NGram(text(p) if p >= 0 else "", text(t), int(t), float(c)))
            code = int(self._read(A + "pos_shape", layer)[neuron])
            pos_shape = schema.POS_SHAPES[code] if 0 <= code < len(schema.POS_SHAPES) else "?"
            coverage = float(self._read(A + "trig_coverage", layer)[neuron])
        promoted, suppressed = [], []
        if self.info.has_projection:
            P = schema.PROJECTION_GROUP + "/"
            trig_ids = {t.tok for t in triggers}
            for kind, out in (("promoted", promoted), ("suppressed", suppressed)):
                toks = self._read(P + kind + "_tok", layer)[neuron]
                scores = self._read(P + kind + "_score", layer)[neuron]
                for tok, sc in zip(toks.tolist(), scores.tolist()):
                    if tok >= 0:
                        out.append(Scored(int(tok), text(tok), float(sc), tok in trig_ids))
        ctx = self._contexts(top_pos, top_val, events, contexts)
        return NeuronDetail(
            layer=layer, neuron=neuron, flags=int(cols.flags[neuron]), count=count, rate=float(cols.rate[neuron]),
            act_max=act_max, act_mean=act_sum / count if count else float("nan"), level=level, n_events=len(events),
            distinct=int(cols.distinct[neuron]), pos_mi=float(cols.pos_mi[neuron]), pos_shape=pos_shape,
            coverage=coverage, triggers=triggers, ngrams=ngrams, promoted=promoted, suppressed=suppressed,
            pos_rate=pos_rate, contexts=ctx, note=self.marks.note(layer, neuron),
            has_analysis=self.info.has_analysis, has_projection=self.info.has_projection,
        )

    def _contexts(self, top_pos, top_val, events, limit: int, left: int = 10, right: int = 3) -> list[Context]:
        """Top activating contexts (one per sequence); sampled firing events when there are none."""
        picks = [(int(p), float(v)) for p, v in zip(top_pos.tolist(), top_val.tolist()) if p >= 0][:limit]
        if not picks and len(events):
            step = max(1, len(events) // limit)
            picks = [(int(p), float("nan")) for p in events[::step][:limit]]
        if not picks:
            return []
        T = self.info.seq_len
        windows, spans = [], []
        for g, _ in picks:
            seq, t = divmod(g, T)
            lo, hi = max(0, t - left), min(T, t + right + 1)
            windows.append(np.arange(seq * T + lo, seq * T + hi))
            spans.append((lo, t))
        with self._lock:
            tokens = self.summary.tokens_at(np.concatenate(windows))
        out, at = [], 0
        for (g, v), w, (lo, t) in zip(picks, windows, spans):
            ids = tokens[at : at + len(w)].tolist()
            at += len(w)
            out.append(Context(g, v, [self.token_text(i) for i in ids], t - lo))
        return out

    # ---- marks export ----
    def export_marks(self, fmt: str, path: Path | None = None) -> Path:
        """Write every marked neuron with its data to CSV or JSON; returns the file written."""
        if fmt not in ("csv", "json"):
            raise ValueError(f"unknown export format {fmt!r}")
        records = [self.neuron(layer, neuron).as_record() for layer, neuron, _ in self.marks]
        if path is None:
            base = self.info.path
            path = base.with_name(f"{base.stem}-marks.{fmt}")
        meta = {"summary": self.info.path.name, "model": self.info.model, "n_tokens": self.info.n_tokens,
                "rule": self.info.rule, "threshold": self.info.threshold}
        tmp = Path(str(path) + ".tmp")
        try:
            if fmt == "json":
                tmp.write_text(json.dumps({**meta, "marks": records}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            else:
                with open(tmp, "w", newline="", encoding="utf-8") as handle:
                    fields = ["layer", "neuron", "note", "categories", "firings", "rate", "act_max", "distinct",
                              "pos_mi", "pos_shape", "coverage", "triggers", "ngrams", "promoted", "suppressed"]
                    writer = csv.DictWriter(handle, fieldnames=fields)
                    writer.writeheader()
                    for r in records:
                        writer.writerow({**r, **{k: _flat_list(r[k]) for k in ("triggers", "ngrams", "promoted", "suppressed")}})
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ReadOnlyError(f"cannot write {path}: {exc.strerror or exc}") from None
        return Path(path)


def _flat_list(items: list[dict]) -> str:
    """A list of small dicts as one CSV cell: `' the' 12 0.98; ...` (token text in repr quotes)."""
    parts = []
    for d in items:
        vals = [repr(d[k]) if isinstance(d[k], str) else (f"{d[k]:.4g}" if isinstance(d[k], float) else str(d[k]))
                for k in d]
        parts.append(" ".join(vals))
    return "; ".join(parts)


def _visible_vocab(explorer: Explorer, vocab: np.ndarray) -> np.ndarray:
    cached = getattr(explorer, "_visible", None)
    if cached is None or len(cached) != len(vocab):
        cached = np.empty(len(vocab), dtype=object)
        cached[:-1] = [show_token(s) for s in vocab[:-1]]
        cached[-1] = ""
        explorer._visible = cached
    return cached


def _json(raw) -> dict:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if raw else {}
        return value if isinstance(value, dict) else {}
    except (TypeError, ValueError):
        return {}


__all__ = [
    "COLUMNS", "COLUMN_KEYS", "Column", "Context", "Explorer", "FILTERS", "LayerColumns", "LayerView", "Marks",
    "NGram", "NeuronDetail", "OverviewRow", "ReadOnlyError", "Row", "Scored", "SummaryInfo", "Trigger",
    "ViewState", "category_letters", "categories", "parse_goto", "show_token",
]
