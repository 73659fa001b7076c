"""Reading HDF5 summaries: verified on open, lazy, one layer (or one neuron) at a time.

`Summary.open` checks the format, the schema version, the attributes every reader needs, each
dataset's shape against them and, for schema 2 and later, the integrity record (`cache.integrity`);
every later read of a damaged dataset is a `SummaryError` naming the file and the dataset. The reader
is lazy: opening reads attributes and metadata only; arrays are read one layer (or one neuron) at a
time, which is what lets the explorer open a 66b summary instantly. It keeps no cache of layers: the
query layer above decides what to keep.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import integrity, schema
from .errors import READ_ERRORS, SummaryError, first_line
from .rows import TokenRows


class GroupReader:
    """One group of a summary (`analysis` or `projection`), its datasets checked against the schema
    so that a misspelt name fails at once rather than reading as "absent"."""

    def __init__(self, summary: "Summary", name: str, datasets: Mapping[str, tuple[str, str]]):
        self.summary, self.name, self.datasets = summary, name, datasets

    @cached_property
    def attrs(self) -> dict[str, Any]:
        return self.summary._attrs_of(self.name)

    def _path(self, dataset: str) -> str:
        if dataset not in self.datasets:
            raise KeyError(f"{dataset} is not a dataset of the {self.name} group")
        return f"{self.name}/{dataset}"

    def has(self, dataset: str) -> bool:
        return self.summary._exists(self._path(dataset))

    def read(self, dataset: str, layer: int | None = None) -> np.ndarray:
        """The whole dataset, or one layer of it ([F, ...] for per-neuron data)."""
        return self.summary._get(self._path(dataset), () if layer is None else (layer,))

    def neuron(self, dataset: str, layer: int, index: int) -> np.ndarray:
        """One neuron's entry of a per-neuron dataset ([L, F, ...]: the neuron is axis 1)."""
        return self.summary._get(self._path(dataset), (layer, index))


# The chunk cache of each open dataset (see Summary._dataset): room for this many of its chunks, at most
# MAX_CHUNK_CACHE.
CACHED_CHUNKS = 4
MAX_CHUNK_CACHE = 64 << 20
CHUNK_SLOTS = 10007  # hash slots of a chunk cache (a prime, per HDF5's advice)


COUNTS = ("n_layers", "n_neurons", "seq_len", "n_seq", "n_tokens")  # root attributes that are counts


@dataclass(frozen=True)
class NeuronSignCases:
    """One gated neuron's firings by sign case of (act(gate), up), in the order of schema.SIGN_CASES."""

    count: np.ndarray  # [4] int64: firings of each case (they sum to act_count)
    top_val: np.ndarray  # [4] float32: the strongest |h| of each case (-inf: none)
    top_pos: np.ndarray  # [4] int64: its global position g = seq * T + t (-1: none)


def _count(name: str) -> property:
    """The root attribute `name`, one of COUNTS: a non-negative int once the summary is opened."""
    return property(lambda self: int(self.attrs[name]), doc=f"The root attribute {name}.")


class Summary:
    """A read-only, lazy, verified view of one summary file (see the module docstring)."""

    def __init__(self, path: Path, handle: h5py.File, owner: bool = True):
        self.path = Path(path)
        self._f = handle
        self._owner = owner
        try:
            self.attrs: dict[str, Any] = {k: integrity.plain(v) for k, v in handle.attrs.items()}
        except READ_ERRORS as exc:
            raise SummaryError(f"{self.path} is damaged: its attributes cannot be read ({first_line(exc)})") from None
        self._integrity: dict | None = None
        self._kept: dict[str, h5py.Dataset] = {}

    # ---- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path | str) -> "Summary":
        """Open and verify; a missing, foreign, damaged or too-new file raises SummaryError."""
        path = Path(path)
        if not path.exists():
            raise SummaryError(f"no summary at {path}")
        if not path.is_file():
            raise SummaryError(f"{path} is a folder, not a summary file")
        try:
            handle = h5py.File(path, "r")
        except READ_ERRORS as exc:
            kind = "not an HDF5 file" if not _has_hdf5_signature(path) else "a damaged HDF5 file"
            raise SummaryError(f"{path} is {kind} ({first_line(exc)})") from None
        try:
            summary = cls(path, handle)
            summary._verify()
        except SummaryError:
            handle.close()
            raise
        except READ_ERRORS as exc:
            handle.close()
            raise SummaryError(f"{path} is damaged: {first_line(exc)}") from None
        return summary

    def _verify(self) -> None:
        a = self.attrs
        if a.get("format") != schema.FORMAT:
            raise SummaryError(f"{self.path} is an HDF5 file but not a neuron-tui summary")
        version = a.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise SummaryError(f"{self.path} has an invalid schema version {version!r}")
        if version > schema.SCHEMA_VERSION:
            raise SummaryError(f"{self.path} has schema version {version}, newer than this neuron-tui reads "
                               f"({schema.SCHEMA_VERSION}); upgrade neuron-tui")
        if version not in schema.READABLE_VERSIONS:
            raise SummaryError(f"{self.path} has schema version {version}, which this neuron-tui cannot read")
        if version >= 2:
            self._integrity = integrity.verify(self._f, self.attrs, self._attrs_of, self.path)
        missing = [k for k in schema.REQUIRED_ATTRS if k not in a]
        if missing:
            raise SummaryError(f"{self.path} is damaged: attribute {missing[0]} is missing")
        for key in COUNTS:
            if not isinstance(a[key], int) or isinstance(a[key], bool) or a[key] < 0:
                raise SummaryError(f"{self.path} is damaged: attribute {key} is {a[key]!r}")
        if self.n_layers < 1 or self.n_neurons < 1 or self.seq_len < 1:
            raise SummaryError(f"{self.path} holds no neurons ({self.n_layers} layers x {self.n_neurons})")
        added_later = schema.ADDED_IN_3 + (schema.ADDED_IN_2 if version < 2 else ())
        needed = [name for name in schema.DATASETS if name not in added_later]
        absent = [name for name in needed if name not in self._f]
        if absent:
            raise SummaryError(f"{self.path} is incomplete or damaged: missing {', '.join(absent)}")
        self._check_shapes()

    def _check_shapes(self) -> None:
        """Each dataset's shape against the attributes (what every reader indexes by)."""
        L, F, T = self.n_layers, self.n_neurons, self.seq_len
        expected = {"act_count": (L, F), "pos_count": (L, T, F), "act_sum": (L, F), "act_max": (L, F),
                    "event_level": (L, F), "event_offsets": (L, F + 1), "tau": (L,), "tokens_at_pos": (T,),
                    "act_count_pos": (L, F), "act_sum_pos": (L, F), "h_sum": (L, F),
                    **{name: (L, len(schema.SIGN_CASES), F) for name in schema.SIGN_DATASETS}}
        if "hist_edges" in self._f:
            n_edges = self._f["hist_edges"].shape[-1]
            expected.update(hist_edges=(L, n_edges), hist_count=(L, n_edges - 1, F))
        if self.context_window is not None and "top_val" in self._f:
            expected["ctx_val"] = (L, self._f["top_val"].shape[1], sum(self.context_window) + 1, F)
        for name, shape in expected.items():
            if name in self._f and self._f[name].shape != shape:
                raise SummaryError(f"{self.path} is damaged: {name} has shape {self._f[name].shape}, "
                                   f"expected {shape} from its attributes")
        tokens = self._f["tokens"].shape
        if len(tokens) != 2 or tokens[1] != T or tokens[0] < self.n_seq:
            raise SummaryError(f"{self.path} is damaged: tokens has shape {tokens} for {self.n_seq} sequences of {T}")

    @property
    def file(self) -> h5py.File:
        """The open HDF5 file, for copying its objects as stored (SummaryWriter.copy_from)."""
        return self._f

    def close(self) -> None:
        if self._owner:
            self._f.close()

    def __enter__(self) -> "Summary":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- metadata ------------------------------------------------------------------------------
    n_layers = _count("n_layers")
    n_neurons = _count("n_neurons")
    seq_len = _count("seq_len")
    n_seq = _count("n_seq")
    n_tokens = _count("n_tokens")

    @property
    def complete(self) -> bool:
        return bool(self.attrs.get("complete", False))

    @property
    def bos(self) -> bool:
        """Position 0 of every sequence holds the BOS token (left out of every detector statistic)."""
        return int(self.attrs.get("bos", 0)) == 1

    @property
    def shard(self) -> str:
        return str(self.attrs.get("shard", "0/1"))

    @property
    def checksummed(self) -> bool:
        """True for files whose contents are verified on read (schema 2 and later)."""
        return self._integrity is not None

    def json_attr(self, name: str) -> dict:
        """A JSON-valued root attribute (corpus, settings, model_fingerprint); {} when absent."""
        raw = self.attrs.get(name)
        if not raw:
            return {}
        try:
            value = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            raise SummaryError(f"{self.path} is damaged: attribute {name} is not JSON") from None
        return value if isinstance(value, dict) else {}

    @property
    def corpus(self) -> dict:
        return self.json_attr("corpus")

    def has(self, name: str) -> bool:
        """Whether the root dataset `name` is stored (schema 1 files lack schema.ADDED_IN_2, summaries
        made before them schema.ADDED_IN_3, ungated models' the sign cases')."""
        return self._exists(name)

    # ---- what one pass collects beyond counts (schema.ADDED_IN_3; None where a summary lacks it) -------
    @property
    def context_window(self) -> tuple[int, int] | None:
        """(positions before, positions after) each top context that `ctx_val` holds."""
        if "ctx_left" not in self.attrs or "ctx_right" not in self.attrs:
            return None
        return int(self.attrs["ctx_left"]), int(self.attrs["ctx_right"])

    def h_mean(self, layer: int) -> np.ndarray | None:
        """[F] the mean of h over every token of the corpus (fired or not): what mean ablation sets."""
        if not self._exists("h_sum"):
            return None
        return self._get("h_sum", (layer,)) / max(1, self.n_tokens)

    def context_values(self, layer: int, index: int) -> np.ndarray | None:
        """[K, W] float32: the neuron's signed h at the positions around each of its top contexts (row k
        around top_pos[k]; NaN outside the sequence or for an empty slot)."""
        if not self._exists("ctx_val"):
            return None
        return self.read_neuron("ctx_val", layer, index).astype(np.float32)

    def activation_histogram(self, layer: int, index: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(edges [B + 1], counts [B]) of the neuron's firing values: its layer's bins and its counts,
        which sum to its act_count."""
        if not self._exists("hist_count"):
            return None
        return self._get("hist_edges", (layer,)), self.read_neuron("hist_count", layer, index).astype(np.int64)

    def sign_cases(self, layer: int, index: int) -> NeuronSignCases | None:
        """The neuron's firings by sign case of (act(gate), up); None unless a gated FFN's summary."""
        if not self._exists("sign_count"):
            return None
        return NeuronSignCases(*(self.read_neuron(name, layer, index) for name in schema.SIGN_DATASETS))

    # ---- groups ----------------------------------------------------------------------------------
    @cached_property
    def analysis(self) -> GroupReader | None:
        """The analysis group, or None when the summary has not been analysed, or was analysed by an
        older neuron-tui (`analysis_outdated`: its categories and codes mean other things)."""
        if not self._exists(schema.ANALYSIS_GROUP) or self.analysis_outdated:
            return None
        return GroupReader(self, schema.ANALYSIS_GROUP, schema.ANALYSIS_DATASETS)

    @cached_property
    def analysis_outdated(self) -> bool:
        """True when the stored analysis has another analysis_version than this neuron-tui writes."""
        if not self._exists(schema.ANALYSIS_GROUP):
            return False
        return int(self._attrs_of(schema.ANALYSIS_GROUP).get("analysis_version", 0)) != schema.ANALYSIS_VERSION

    @cached_property
    def projection(self) -> GroupReader | None:
        """The FFN-update projections, or None when the summary has none (a partial one)."""
        if not self._exists(schema.PROJECTION_GROUP):
            return None
        return GroupReader(self, schema.PROJECTION_GROUP, schema.PROJECTION_DATASETS)

    # ---- arrays --------------------------------------------------------------------------------
    def read(self, name: str, layer: int | None = None) -> np.ndarray:
        """A whole root dataset (layer None) or one layer of a layer-major one."""
        if name not in schema.DATASETS and name not in schema.OPTIONAL_DATASETS:
            raise KeyError(f"{name} is not a root dataset of a summary")
        return self._get(name, () if layer is None else (layer,))

    def read_neuron(self, name: str, layer: int, index: int) -> np.ndarray:
        """One neuron's slice of a layer-major root dataset whose last axis is the neuron."""
        return self._get(name, (layer, Ellipsis, index))

    def neuron_events(self, layer: int, index: int) -> np.ndarray:
        """Global token positions of the kept firing events of one neuron (int64)."""
        start, stop = self._get("event_offsets", (layer, slice(index, index + 2)))
        self._check_offsets(start, stop)
        return self._get("event_pos", (slice(int(start), int(stop)),)).astype(np.int64)

    def layer_events(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """(offsets relative to the layer's first event [F+1], event positions) of one layer."""
        offsets = self._get("event_offsets", (layer,))
        if len(offsets) and (np.diff(offsets) < 0).any():
            raise SummaryError(f"{self.path} is damaged: event_offsets of layer {layer} decrease")
        self._check_offsets(offsets[0], offsets[-1])
        events = self._get("event_pos", (slice(int(offsets[0]), int(offsets[-1])),)).astype(np.int64)
        return offsets - offsets[0], events

    def _check_offsets(self, start, stop) -> None:
        n = self._f["event_pos"].shape[0]
        if not 0 <= start <= stop <= n:
            raise SummaryError(f"{self.path} is damaged: event_offsets point outside event_pos "
                               f"({start}..{stop} of {n})")

    # ---- tokens --------------------------------------------------------------------------------
    @cached_property
    def vocab(self) -> list[str]:
        """The text of every token id (stored as UTF-8 bytes and offsets; schema 1: strings)."""
        if not self._exists("vocab_utf8"):  # schema 1
            return [s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s) for s in self._get("vocab", ())]
        data, offsets = self._get("vocab_utf8", ()).tobytes(), self._get("vocab_offsets", ())
        if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(data) or (np.diff(offsets) < 0).any():
            raise SummaryError(f"{self.path} is damaged: vocab_offsets do not fit vocab_utf8")
        return [data[a:b].decode("utf-8", "replace") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]

    @cached_property
    def token_occ(self) -> np.ndarray:
        """[V] occurrences of each token outside the BOS position (stored at collection time; a schema
        1 file has it computed from its token stream once)."""
        if self._exists("token_occ"):
            return self._get("token_occ", ()).astype(np.int64)
        tokens = self._get("tokens", (slice(0, self.n_seq),))
        if self.bos:
            tokens = tokens[:, 1:]
        return np.bincount(tokens.ravel(), minlength=len(self.vocab)).astype(np.int64)

    @cached_property
    def tokens_at_pos(self) -> np.ndarray:
        return self._get("tokens_at_pos", ())

    @cached_property
    def tau(self) -> np.ndarray:
        return self._get("tau", ())

    @cached_property
    def rows(self) -> TokenRows:
        """The mapping of global sequences to rows of `tokens` (a shard stores some sequences only)."""
        stored = self._get("seq_index", (slice(0, self.n_seq),)) if self._exists("seq_index") else None
        return TokenRows(stored, self.n_seq, self.seq_len)

    def tokens_at(self, positions: np.ndarray) -> np.ndarray:
        """Token ids at global positions g = seq * T + t (reads only the rows they are in)."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size == 0:
            return np.zeros(0, dtype=np.int32)
        rows = self._rows(positions // self.seq_len)
        order = np.argsort(rows, kind="stable")
        unique_rows, inverse = np.unique(rows[order], return_inverse=True)
        block = self._get("tokens", (unique_rows.tolist(),))
        out = np.empty(positions.shape, dtype=np.int32)
        out[order] = block[inverse, (positions % self.seq_len)[order]]
        return out

    def sequence(self, seq: int) -> np.ndarray:
        """The tokens of global sequence `seq`."""
        return self._get("tokens", (int(self._rows(np.array([seq]))[0]),))

    def _rows(self, seqs: np.ndarray) -> np.ndarray:
        try:
            return self.rows.rows(seqs)
        except KeyError as exc:
            raise SummaryError(f"{self.path} holds shard {self.shard} of the corpus, not {exc.args[0]}") from None

    # ---- guarded access ----------------------------------------------------------------------------
    def _get(self, name: str, selection: tuple) -> np.ndarray:
        """dataset[selection], any failure a SummaryError naming the file and the dataset."""
        try:
            return self._dataset(name)[selection]
        except READ_ERRORS as exc:
            if not self._exists(name):
                raise SummaryError(f"{self.path} is incomplete or damaged: {name} is missing") from None
            raise SummaryError(f"{self.path} is damaged: cannot read {name} ({first_line(exc)})") from None

    def _dataset(self, name: str) -> h5py.Dataset:
        """The dataset, opened once. HDF5 keeps decompressed chunks per open dataset, so a dataset
        opened afresh for each read decompresses its chunk again (a `tokens` row block or 1,024
        neurons' position counts at T = 2048 are 4 MiB: 60 ms of one neuron's detail), and the default
        cache (1 MiB in HDF5 1.x, 8 MiB in 2.x) may hold less than one chunk. Each stays open with room
        for at least CACHED_CHUNKS of its chunks, so stepping through neurons decompresses a chunk once."""
        kept = self._kept.get(name)
        if kept is None:
            kept = self._f[name]
            chunk = kept.chunks
            nbytes = 0 if chunk is None else CACHED_CHUNKS * int(np.prod(chunk)) * kept.dtype.itemsize
            if nbytes > self._f.id.get_access_plist().get_cache()[2]:  # more than the file's default
                # closed first: a dataset opened while another handle to it is open shares that one's cache
                del kept
                access = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
                access.set_chunk_cache(CHUNK_SLOTS, min(nbytes, MAX_CHUNK_CACHE), 0.75)
                kept = h5py.Dataset(h5py.h5d.open(self._f.id, name.encode(), dapl=access))
            self._kept[name] = kept
        return kept

    def _exists(self, name: str) -> bool:
        try:
            return name in self._f
        except READ_ERRORS:
            return False

    def _attrs_of(self, group: str) -> dict[str, Any]:
        try:
            return {k: integrity.plain(v) for k, v in self._f[group].attrs.items()} if group in self._f else {}
        except READ_ERRORS as exc:
            raise SummaryError(f"{self.path} is damaged: the attributes of {group} cannot be read "
                               f"({first_line(exc)})") from None


def _has_hdf5_signature(path: Path) -> bool:
    """HDF5 files start with this signature at offset 0 (or 512, 1024, ... with a user block)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return False
    return head == b"\x89HDF\r\n\x1a\n"
