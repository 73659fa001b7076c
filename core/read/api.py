"""The Python API, for notebooks and scripts: the same answers as the command line and the explorer.

    import neuron_tui
    s = neuron_tui.open_summary("opt-1.3b")     # a model's cached summary, as the command line finds it
    s.layers().to_pandas()                      # the per-layer table (`report`)
    s.neurons(0, category="token", sort="rate")  # the token detectors of layer 0 (`neurons`)
    s.neuron(0, 767)                             # one neuron's record (`neuron --json`)
    s.array("act_count", 0), s.tokens, s.vocab   # the raw datasets

Every method is built on `core.read.queries`; nothing here imports torch.
"""

from __future__ import annotations

from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from neuron_tui.cache import Summary, SummaryError, schema

from .params import AnalysisParams
from .queries import layer_rows, neuron_record
from .records import NeuronRecord
from .table import DEFAULT_DESCENDING, SORT_KEYS, LayerTable, TokenMatcher, layer_table, select_layers
from .tokens import visible_vocab

LAYER_TABLES = 8  # layer tables kept in memory (the explorer goes back and forth between a few layers)


class Rows(list):
    """Rows of a table as a list of dicts; `to_pandas()` makes a DataFrame when pandas is installed."""

    def to_pandas(self):
        try:
            import pandas
        except ImportError:
            raise ImportError("to_pandas() needs pandas: pip install pandas") from None
        return pandas.DataFrame(list(self))


class SummaryFile:
    """One open summary and the questions it answers. Open with `open_summary(path)`; use as a
    context manager, or `close()` it."""

    def __init__(self, summary: Summary):
        self.summary = summary
        self.table = lru_cache(maxsize=LAYER_TABLES)(self._table)

    @classmethod
    def open(cls, path: str | Path) -> "SummaryFile":
        return cls(Summary.open(Path(path).expanduser()))

    def close(self) -> None:
        self.summary.close()

    def __enter__(self) -> "SummaryFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<SummaryFile {self.path.name}: {self.model}, {self.n_layers} x {self.n_neurons} neurons, "
                f"{self.n_tokens:,} tokens>")

    # ---- what it is ----
    @property
    def path(self) -> Path:
        return self.summary.path

    @property
    def model(self) -> str:
        return str(self.summary.attrs.get("model", "?"))

    @property
    def n_layers(self) -> int:
        return self.summary.n_layers

    @property
    def n_neurons(self) -> int:
        return self.summary.n_neurons

    @property
    def n_tokens(self) -> int:
        return self.summary.n_tokens

    @property
    def attrs(self) -> dict[str, Any]:
        """The summary's root attributes (model, rule, threshold, corpus, ...)."""
        return dict(self.summary.attrs)

    @cached_property
    def params(self) -> AnalysisParams:
        """The parameters of its analysis (the defaults when it has none)."""
        return AnalysisParams.of(self.summary)

    # ---- raw data ----
    @property
    def tokens(self) -> np.ndarray:
        """[n_seq, seq_len] int32: the token stream."""
        return self.summary.read("tokens")[: self.summary.n_seq]

    @property
    def vocab(self) -> list[str]:
        """The text of every token id."""
        return self.summary.vocab

    def array(self, name: str, layer: int | None = None) -> np.ndarray:
        """A raw dataset, whole or one layer: a root one ("act_count", "pos_count", ...) or a group's
        ("analysis/flags", "projection/suppressed_tok", ...); names in cache/schema.py."""
        group, _, dataset = name.rpartition("/")
        if not group:
            return self.summary.read(name, layer)
        reader = {schema.ANALYSIS_GROUP: self.summary.analysis, schema.PROJECTION_GROUP: self.summary.projection}
        if group not in reader:
            raise KeyError(f"no group {group!r}: analysis or projection")
        if reader[group] is None:
            raise SummaryError(f"{self.path} has no {group} group")
        return reader[group].read(dataset, layer)

    # ---- answers ----
    def layers(self) -> Rows:
        """The per-layer table (`neuron-tui report`): one dict per layer, keys in queries.ROW_KEYS."""
        return Rows(layer_rows(self.summary))

    def neurons(self, layer: int | None = None, category: str = "all", trigger: str | None = None,
                sort: str = "id", descending: bool | None = None, limit: int | None = None,
                substring: bool = False, per_layer: bool = False) -> Rows:
        """Neurons of one layer (or all), as `neuron-tui neurons` lists them: `category` one of all,
        dead, rare, token, ngram, positional, ...; `trigger` a token their triggers include (the whole
        token, ` of` not ` offering`; with `substring` any token containing the text) and that fire on
        it at least 4x as often as on an average token (core.read.table.SEARCH_RULE);
        `sort` one of SORT_KEYS (descending by default for cat, rate, pos), across every layer unless
        `per_layer` (or a `layer` is given); at most `limit` rows."""
        if sort not in SORT_KEYS:
            raise KeyError(f"unknown sort column {sort!r}; one of {', '.join(SORT_KEYS)}")
        down = DEFAULT_DESCENDING.get(sort, False) if descending is None else descending
        matching = self.matcher.matching(trigger, substring) if trigger else None
        layers = range(self.n_layers) if layer is None else [self._layer(layer)]
        picked = select_layers((self.table(l) for l in layers), category, matching, sort, down, per_layer, limit)
        return Rows(table.row(i) for table, i in picked)

    def neuron(self, layer: int, index: int) -> NeuronRecord:
        """Everything about one neuron (`neuron-tui neuron --json`); keys in queries.RECORD_KEYS."""
        return neuron_record(self.summary, self._layer(layer), index, self.params)

    # ---- kept for speed ----
    def _table(self, layer: int) -> LayerTable:
        return layer_table(self.summary, self._layer(layer), self.shown_vocab)

    @cached_property
    def shown_vocab(self) -> np.ndarray:
        """The vocabulary in its visible form (core.read.tokens.visible), with "" for id -1."""
        return visible_vocab(self.summary.vocab)

    @cached_property
    def matcher(self) -> TokenMatcher:
        return TokenMatcher(self.summary.vocab)

    def _layer(self, layer: int) -> int:
        if not 0 <= layer < self.n_layers:
            raise IndexError(f"no layer {layer}: the summary has layers 0..{self.n_layers - 1}")
        return int(layer)


def open_summary(target: str | Path, cache_dir: str | Path | None = None) -> SummaryFile:
    """Open a summary for questions (`SummaryFile`): a file, or a model name (`smollm2`, `opt-1.3b`,
    a hub id or a model folder) whose cached summary the command line would read (in `cache_dir`, else
    $NEURON_TUI_CACHE or ~/.cache/neuron-tui). A bad file raises cache.SummaryError; a model without
    a summary, core.errors.NeuronTuiError."""
    path = Path(target).expanduser()
    if path.suffix != ".h5" and not path.is_file():
        from neuron_tui.core.pipeline import find_summary  # model names: the cache's request index

        path = find_summary(str(target), Path(cache_dir).expanduser() if cache_dir else None)
    return SummaryFile.open(path)
