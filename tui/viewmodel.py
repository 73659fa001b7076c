"""View-models of the explorer: what each screen shows, from the read side's answers. No Textual here.

The screens place what `tui.present` makes of these objects. Every number comes from
`core.read.api.SummaryFile`, i.e. from `core.read.queries` (the layer rows of the overview, each layer's
table, a neuron's record), so the explorer shows what `report`, `neurons` and `neuron --json` print.
Here live what only the explorer needs: the paged, ordered view of a layer's table (`LayerView`), the
summary's one-line facts (`SummaryInfo`), go-to parsing, marks with their export, and the probe's
state (`ProbeState`: the summary's model, loaded on first use). Methods that read the file may run in a
worker thread (h5py serialises its own calls).
"""

from __future__ import annotations

import csv
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from neuron_tui.cache import SummaryError
from neuron_tui.core.read import kinds
from neuron_tui.core.read.api import SummaryFile
from neuron_tui.core.read.figures import Figure, depth_figures
from neuron_tui.core.read.queries import layer_rows, present_kinds, summary_notes
from neuron_tui.core.read.records import LayerRow, NeuronRecord, ProbeResult
from neuron_tui.core.read.table import CATEGORIES, FILTERS, LayerTable, categories, rank_1based

if TYPE_CHECKING:
    from neuron_tui.core.model.probe import Probe

ANALYSIS_FILTERS = kinds.NEED_ANALYSIS  # need the analysis group
RANK_WIDTH = 6  # cells of a rank, "#34609" (tui.present.formats.rank_text never needs more)
EXPORT_TRIGGERS = 5  # triggers (and promoted / suppressed tokens) per marked neuron in an export


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    width: int  # minimum width in cells; the "top" column takes what is left
    align: str = "right"
    help: str = ""


COLUMNS = (
    Column("id", "neuron", 6, help="neuron index in its layer (* = marked)"),
    Column("cat", "cat", 3, "left", "the letters of its kinds: " + ", ".join(f"{k.letter} {k.label}" for k in kinds.KINDS)),
    Column("rate", "rate", 8, help="firing rate: firings / tokens"),
    Column("distinct", "dist", 5, help="distinct tokens among the neuron's sampled firings"),
    Column("top", "top triggers", 14, "left", "tokens it fires on most (BOS excluded), ␣ = space"),
    Column("pos", "pos MI", 6, help="I(fired; position) in nats (positional above 0.05)"),
    Column("supp", "supp", RANK_WIDTH, help="best rank of its triggers among its suppressed tokens (#1 = most)"),
)
COLUMN_KEYS = tuple(c.key for c in COLUMNS)


class ProbeUnavailable(Exception):
    """The probe cannot run in this environment (no torch); the message is one line."""


def reason(exc: Exception) -> str:
    """A failure in one line: the message of the errors whose message is a sentence for the user
    (SummaryError, ProbeUnavailable), else the exception's class and message."""
    return str(exc) if isinstance(exc, (SummaryError, ProbeUnavailable)) else f"{exc.__class__.__name__}: {exc}"


def parse_goto(text: str) -> tuple[int, int | None] | None:
    """`L12 N345`, `l12n345`, `12/345`, `12 345`, `12:345` -> (12, 345); `L12` -> (12, None); else None."""
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
    complete: bool
    has_analysis: bool
    has_projection: bool
    notes: tuple[str, ...]

    @property
    def rule_text(self) -> str:
        if self.rule == "relu":
            return f"ReLU: fired iff h > {self.threshold:g}"
        if self.tau_source == "quantile":
            return f"|h| > tau_l, tau_l = {self.threshold:g} quantile of |h|"
        return f"|h| > {self.threshold:g}"

    @property
    def status(self) -> str:
        """One line saying what is missing or partial ("" when nothing is); a partial summary is read-only."""
        return " · ".join(n + ("; read-only" if n.startswith("PARTIAL") else "") for n in self.notes)

    @classmethod
    def of(cls, s: SummaryFile) -> "SummaryInfo":
        a = s.summary.attrs
        return cls(path=s.path, model=s.model, architecture=str(a.get("architecture", "?")),
                   corpus=corpus_text(s.summary.corpus), n_tokens=s.n_tokens, rule=str(a.get("rule", "?")),
                   threshold=float(a.get("threshold", float("nan"))), tau_source=str(a.get("tau_source", "")),
                   n_layers=s.n_layers, n_neurons=s.n_neurons, seq_len=s.summary.seq_len, n_seq=s.summary.n_seq,
                   complete=s.summary.complete, has_analysis=s.summary.analysis is not None,
                   has_projection=s.summary.projection is not None, notes=tuple(summary_notes(s.summary)))


def corpus_text(raw: dict) -> str:
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


# ---- a layer's view ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewState:
    """What the layer table shows: a filter, a sort column and direction, a search query (a whole
    token, or with `substring` a part of one)."""

    filter: str = "all"
    sort: str = "id"
    descending: bool = False
    query: str = ""
    substring: bool = False


@dataclass(frozen=True)
class Row:
    neuron: int
    flags: int
    rate: float
    count: int
    distinct: int
    top: str
    pos_mi: float
    supp: int | None  # 1-based
    marked: bool


class LayerView:
    """An ordered, filtered view of one layer's neurons; `page` gives the rows a widget draws."""

    def __init__(self, table: LayerTable, state: ViewState, order: np.ndarray, marked: set[int],
                 counts: dict[str, int], present: tuple[str, ...] = ()):
        self.table, self.state, self.order, self._marked, self.counts = table, state, order, marked, counts
        self.present = present  # the kinds the summary has (some layer holds one): the filter bar's
        self.kind_width = max(3, kinds_per_neuron(table.flags))  # cells of the category column

    @property
    def layer(self) -> int:
        return self.table.layer

    def __len__(self) -> int:
        return len(self.order)

    def neuron_at(self, row: int) -> int | None:
        return int(self.order[row]) if 0 <= row < len(self.order) else None

    def row_of(self, neuron: int) -> int | None:
        hits = np.flatnonzero(self.order == neuron)
        return int(hits[0]) if len(hits) else None

    def page(self, start: int, count: int) -> list[Row]:
        t = self.table
        out = []
        for i in self.order[max(0, start) : max(0, start) + max(0, count)].tolist():
            f = int(t.flags[i])
            out.append(Row(i, f, float(t.rate[i]), int(t.count[i]), int(t.distinct[i]),
                           str(t.top[i]), float(t.pos_mi[i]), rank_1based(int(t.supp[i])), i in self._marked))
        return out


def kinds_per_neuron(flags: np.ndarray) -> int:
    """The most kinds one neuron of `flags` has."""
    if not len(flags):
        return 0
    return int(sum(kinds.has(flags, k.name).astype(np.int32) for k in kinds.KINDS).max())


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


# ---- the probe --------------------------------------------------------------------------------------------


@dataclass
class ProbeState:
    """The probe of the open summary: the device it runs the summary's model on (None: where the
    summary was made, when that device is here) and the model once loaded (`model`, kept for every
    probe screen after the first)."""

    device: str | None = None
    model: Probe | None = None


# ---- the explorer -----------------------------------------------------------------------------------------


class Explorer:
    """The root view-model: one open summary (a core.read.api.SummaryFile), its marks, the probe's state,
    and the answers the screens ask for."""

    def __init__(self, summary: SummaryFile, device: str | None = None):
        self.file = summary
        self.info = SummaryInfo.of(summary)
        self.marks = Marks(summary.path, str(summary.summary.attrs.get("key", "")), read_only=not self.info.complete)
        self.probe = ProbeState(device)
        self._overview: list[LayerRow] | None = None
        self._present: tuple[str, ...] | None = None

    @classmethod
    def open(cls, path: Path | str, device: str | None = None) -> "Explorer":
        """Open a summary; one that cannot be opened raises cache.SummaryError with a one-line message
        (naming the file)."""
        try:
            return cls(SummaryFile.open(path), device)
        except SummaryError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, one line that names the file
            raise SummaryError(f"{path}: {reason(exc)}") from exc

    def close(self) -> None:
        self.file.close()

    def overview(self) -> list[LayerRow]:
        """The per-layer rows (core.read.queries.layer_rows), read once."""
        if self._overview is None:
            self._overview = layer_rows(self.file.summary)
        return self._overview

    def depth_figures(self, rows: list[LayerRow]) -> list[Figure]:
        """What the paper's per-layer figures plot for this summary (core.read.figures), from its `rows`."""
        return depth_figures([self.file.summary], [rows])

    def table(self, layer: int) -> LayerTable:
        return self.file.table(layer)

    def view(self, layer: int, state: ViewState) -> LayerView:
        """Filter, search and sort one layer (reading it first when it is not in memory)."""
        table = self.file.table(layer)
        marked = self.marks.in_layer(layer)
        matching = self.file.matcher.matching(state.query, state.substring) if state.query else None
        order = table.select(state.filter, matching, state.sort, state.descending, marked)
        counts = {name: int(table.mask(name, marked).sum()) for name in FILTERS}
        return LayerView(table, state, order, marked, counts, self.present_kinds())

    def present_kinds(self) -> tuple[str, ...]:
        """The kinds some layer of the summary has (the overview's counts; a kind unknown without an
        analysis counts as present, so its filter stays in view, dimmed)."""
        if self._present is None:
            self._present = tuple(k.name for k in present_kinds(self.overview()))
        return self._present

    def neuron(self, layer: int, neuron: int) -> NeuronRecord:
        """The neuron's record (core.read.queries.neuron_record), the one `neuron --json` prints."""
        return self.file.neuron(layer, neuron)

    # ---- the probe (torch loads here, in a worker, on first use) ----
    def load_probe(self) -> Probe:
        """The summary's own model, ready to probe (core.model.probe.Probe.for_summary); store it in
        `probe.model` to keep it."""
        try:
            from neuron_tui.core.model.probe import Probe
        except ImportError as exc:
            raise ProbeUnavailable(f"the probe needs torch and transformers: {exc}") from None
        return Probe.for_summary(self.file.summary, self.probe.device)

    def run_probe(self, text: str, layer: int, neuron: int | None, ablate: str | None) -> ProbeResult:
        """The probe's answer for `text` (`probe.model` loaded), as `neuron-tui probe --json` prints it."""
        from neuron_tui.core.model.probe import probe_text

        if self.probe.model is None:
            raise ProbeUnavailable("the probe's model is not loaded yet")
        return probe_text(self.probe.model, self.file, text, layer, neuron, ablate)

    # ---- marks export ----
    def default_export(self, fmt: str) -> Path:
        """Where an export goes unless the user says otherwise: the current folder."""
        return Path.cwd() / f"{self.info.path.stem}-marks.{fmt}"

    def export_marks(self, fmt: str, path: Path | None = None) -> Path:
        """Write every marked neuron, its note and its record to CSV or JSON; returns the file written."""
        if fmt not in ("csv", "json"):
            raise ValueError(f"unknown export format {fmt!r}")
        records = [{"note": note, **self.neuron(layer, neuron)} for layer, neuron, note in self.marks]
        path = Path(path).expanduser() if path else self.default_export(fmt)
        meta = {"summary": self.info.path.name, "model": self.info.model, "n_tokens": self.info.n_tokens,
                "rule": self.info.rule, "threshold": self.info.threshold}
        tmp = path.with_name(path.name + ".tmp")
        try:
            if fmt == "json":
                tmp.write_text(json.dumps({**meta, "marks": records}, indent=1, ensure_ascii=False, allow_nan=False)
                               + "\n", encoding="utf-8")
            else:
                with open(tmp, "w", newline="", encoding="utf-8") as handle:
                    writer = csv.DictWriter(handle, fieldnames=EXPORT_COLUMNS)
                    writer.writeheader()
                    for r in records:
                        writer.writerow(export_row(r))
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ReadOnlyError(f"cannot write {path}: {exc.strerror or exc}") from None
        return path


EXPORT_COLUMNS = (
    ["layer", "neuron", "note", "categories", "firings", "rate", "activation_max", "activation_mean", "distinct",
     "coverage", "pos_mi", "pos_shape"]
    + [f"trigger{k}_{field}" for k in range(1, EXPORT_TRIGGERS + 1) for field in ("text", "count", "p_fire", "supp_rank")]
    + ["promoted", "suppressed"]
)


def export_row(record: dict) -> dict:
    """A marked neuron's CSV row: its numbers, its top triggers in labelled columns (text, estimated
    count, P(fire | token), 1-based suppression rank), and its top promoted and suppressed tokens as
    text separated by " | "."""
    row = {"layer": record["layer"], "neuron": record["index"], "note": record["note"],
           "categories": " ".join(record["categories"]), "firings": record["act_count"], "rate": record["fire_rate"],
           "activation_max": record["activation"]["max"], "activation_mean": record["activation"]["mean"],
           "distinct": record["distinct"], "coverage": record["coverage"], "pos_mi": record["pos_mi"],
           "pos_shape": record["pos_shape"] or ""}
    for k, trig in enumerate(record["triggers"][:EXPORT_TRIGGERS], start=1):
        row.update({f"trigger{k}_text": trig["text"], f"trigger{k}_count": trig["count"],
                    f"trigger{k}_p_fire": trig["p_fire"], f"trigger{k}_supp_rank": trig["supp_rank"]})
    for kind in ("promoted", "suppressed"):
        row[kind] = " | ".join(x["text"] for x in record[kind][:EXPORT_TRIGGERS])
    return row


__all__ = [
    "ANALYSIS_FILTERS", "CATEGORIES", "COLUMNS", "COLUMN_KEYS", "Column", "Explorer", "FILTERS", "LayerView", "Marks",
    "ProbeState", "ProbeUnavailable", "ReadOnlyError", "Row", "SummaryInfo", "ViewState", "categories",
    "kinds_per_neuron", "parse_goto", "reason",
]
