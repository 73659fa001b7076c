"""Writing and reading HDF5 summaries.

Writes are atomic: a summary is written to `<name>.tmp` in the same folder and renamed into place, so a
crash or a full disk leaves either the previous file or the new one, never half of one. The reader is
lazy: opening reads only attributes; arrays are read one layer (or one neuron) at a time and kept in a
small byte-bounded LRU cache, which is what lets the explorer open a 66b summary instantly.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from . import schema


class SummaryError(Exception):
    """A summary that cannot be used (foreign, corrupt, too new, unwritable); one-line message."""

    exit_code = 1


def _chunks(name: str, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Layer-major chunks that also cut the neuron axis (last axis) into NEURON_CHUNK slices."""
    if not shape or int(np.prod(shape)) < 4096:
        return None
    if name.endswith("tokens") and len(shape) == 2:
        return (max(1, min(shape[0], (1 << 20) // max(1, shape[1]))), shape[1])
    if len(shape) == 1:
        return (min(shape[0], 1 << 18),)
    last = min(shape[-1], schema.NEURON_CHUNK)
    return (1,) + tuple(shape[1:-1]) + (last,)


def _write_arrays(group: h5py.Group, arrays: Mapping[str, Any]) -> None:
    for name, value in arrays.items():
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
            group.create_dataset(name, data=np.array(value, dtype=object), dtype=h5py.string_dtype())
            continue
        value = np.asarray(value)
        chunks = _chunks(name, value.shape)
        extra = {"compression": "gzip", "compression_opts": 1, "shuffle": True} if chunks else {}
        group.create_dataset(name, data=value, chunks=chunks, **extra)


def _set_attrs(target: h5py.Group | h5py.File, attrs: Mapping[str, Any]) -> None:
    for key, value in attrs.items():
        target.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value


def _atomic_write(path: Path, fill) -> None:
    """Run `fill(h5py.File)` on a temporary file next to `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with h5py.File(tmp, "w") as f:
            fill(f)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free
        raise SummaryError(f"could not write {path}: {exc} ({free / 2**20:.0f} MiB free there)") from exc


def write_summary(
    path: Path,
    attrs: Mapping[str, Any],
    arrays: Mapping[str, Any],
    groups: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]] | None = None,
) -> None:
    """Write a whole summary atomically: root `attrs`, root `arrays`, and `groups` {name: (attrs, arrays)}."""

    def fill(f: h5py.File) -> None:
        _set_attrs(f, {"format": schema.FORMAT, "schema_version": schema.SCHEMA_VERSION, **attrs})
        _write_arrays(f, arrays)
        for name, (gattrs, garrays) in (groups or {}).items():
            g = f.create_group(name)
            _set_attrs(g, gattrs)
            _write_arrays(g, garrays)

    _atomic_write(path, fill)


def replace_group(path: Path, name: str, attrs: Mapping[str, Any], arrays: Mapping[str, Any]) -> None:
    """Replace (or add) one group of an existing summary, atomically: copy, rewrite the group, rename.

    Used by `neuron-tui analyze`; in-place h5py edits would risk a corrupt file on a crash and never
    give the old group's space back.
    """
    path = Path(path)
    Summary.open(path).close()  # refuse foreign / corrupt files before copying anything

    def fill(f: h5py.File) -> None:
        with h5py.File(path, "r") as src:
            _set_attrs(f, dict(src.attrs))
            for key in src:
                if key != name:
                    src.copy(src[key], f, name=key)
        g = f.create_group(name)
        _set_attrs(g, attrs)
        _write_arrays(g, arrays)

    _atomic_write(path, fill)


class Summary:
    """A read-only, lazy view of one summary file.

    `read(name, layer)` returns one layer of a layer-major dataset (or a group's dataset, by
    "group/name"); `read_neuron(name, layer, index)` one neuron's slice. Both are cached (LRU, bounded
    in bytes) because the explorer goes back and forth between a few layers.
    """

    CACHE_BYTES = 512 * 2**20

    def __init__(self, path: Path, handle: h5py.File):
        self.path = Path(path)
        self._f = handle
        self.attrs: dict[str, Any] = {k: _plain(v) for k, v in handle.attrs.items()}
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cache_bytes = 0
        self._vocab: list[str] | None = None
        self._hist: np.ndarray | None = None
        self._seq_index: np.ndarray | None = None

    # ---- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path | str) -> "Summary":
        """Open and validate; a foreign, truncated, corrupt or too-new file raises SummaryError."""
        path = Path(path)
        if not path.exists():
            raise SummaryError(f"no summary at {path}")
        try:
            handle = h5py.File(path, "r")
        except OSError as exc:
            raise SummaryError(f"{path} is not a readable HDF5 file (truncated or corrupt?): {exc}") from None
        try:
            fmt = handle.attrs.get("format")
            if _plain(fmt) != schema.FORMAT:
                raise SummaryError(f"{path} is an HDF5 file but not a neuron-tui summary")
            version = int(handle.attrs.get("schema_version", -1))
            if version > schema.SCHEMA_VERSION:
                raise SummaryError(
                    f"{path} has schema version {version}, newer than this neuron-tui reads "
                    f"({schema.SCHEMA_VERSION}); upgrade neuron-tui"
                )
            if version < 1:
                raise SummaryError(f"{path} has an invalid schema version {version}")
            missing = [name for name in schema.DATASETS if name not in handle]
            if missing:
                raise SummaryError(f"{path} is incomplete or corrupt: missing {', '.join(missing)}")
        except SummaryError:
            handle.close()
            raise
        except Exception as exc:  # h5py raises assorted errors on damaged metadata
            handle.close()
            raise SummaryError(f"{path} is corrupt: {exc}") from None
        return cls(path, handle)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "Summary":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- metadata ------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return int(self.attrs["n_layers"])

    @property
    def n_neurons(self) -> int:
        return int(self.attrs["n_neurons"])

    @property
    def seq_len(self) -> int:
        return int(self.attrs["seq_len"])

    @property
    def n_tokens(self) -> int:
        return int(self.attrs["n_tokens"])

    @property
    def complete(self) -> bool:
        return bool(self.attrs.get("complete", False))

    @property
    def corpus(self) -> dict:
        return json.loads(self.attrs.get("corpus", "{}"))

    def has(self, name: str) -> bool:
        return name in self._f

    def group_attrs(self, group: str) -> dict[str, Any]:
        return {k: _plain(v) for k, v in self._f[group].attrs.items()} if group in self._f else {}

    # ---- arrays --------------------------------------------------------------------------------
    def read(self, name: str, layer: int | None = None) -> np.ndarray:
        """A whole dataset (layer None) or one layer of a layer-major one."""
        key = (name, layer)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        try:
            data = self._f[name][()] if layer is None else self._f[name][layer]
        except (KeyError, OSError, ValueError) as exc:
            raise SummaryError(f"{self.path}: cannot read {name}: {exc}") from None
        self._remember(key, data)
        return data

    def read_neuron(self, name: str, layer: int, index: int) -> np.ndarray:
        """One neuron's slice of a layer-major dataset whose last axis is the neuron."""
        try:
            return self._f[name][(layer, Ellipsis, index)]
        except (KeyError, OSError, ValueError) as exc:
            raise SummaryError(f"{self.path}: cannot read {name}: {exc}") from None

    def neuron_events(self, layer: int, index: int) -> np.ndarray:
        """Global token positions of the kept firing events of one neuron."""
        start, stop = self._f["event_offsets"][layer, index : index + 2]
        return self._f["event_pos"][start:stop].astype(np.int64)

    def layer_events(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """(offsets relative to the layer's first event [F+1], event positions) of one layer."""
        offsets = self.read("event_offsets", layer)
        events = self._f["event_pos"][offsets[0] : offsets[-1]].astype(np.int64)
        return offsets - offsets[0], events

    def _remember(self, key: tuple, data: np.ndarray) -> None:
        size = getattr(data, "nbytes", 0)
        if size > self.CACHE_BYTES // 4:
            return
        self._cache[key] = data
        self._cache_bytes += size
        while self._cache_bytes > self.CACHE_BYTES:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= getattr(old, "nbytes", 0)

    # ---- tokens --------------------------------------------------------------------------------
    @property
    def vocab(self) -> list[str]:
        if self._vocab is None:
            self._vocab = [s.decode("utf-8", "replace") if isinstance(s, bytes) else s for s in self._f["vocab"][()]]
        return self._vocab

    def token_histogram(self) -> np.ndarray:
        """Occurrences of every vocabulary item in the collected token stream [V] int64."""
        if self._hist is None:
            tokens = self._f["tokens"][: int(self.attrs["n_seq"])]
            self._hist = np.bincount(tokens.ravel(), minlength=len(self.vocab)).astype(np.int64)
        return self._hist

    @property
    def seq_index(self) -> np.ndarray:
        """[n_seq] the global sequence index of each row of `tokens`: 0, 1, 2, ... unless the summary
        holds a shard of the corpus (dataset `seq_index`)."""
        if self._seq_index is None:
            n_seq = int(self.attrs["n_seq"])
            stored = self._f["seq_index"][:n_seq] if "seq_index" in self._f else None
            self._seq_index = np.arange(n_seq, dtype=np.int64) if stored is None else stored.astype(np.int64)
        return self._seq_index

    def tokens_at(self, positions: np.ndarray) -> np.ndarray:
        """Token ids at global positions g = seq * T + t."""
        positions = np.asarray(positions, dtype=np.int64)
        tokens = self._f["tokens"]
        if positions.size == 0:
            return np.zeros(0, dtype=np.int32)
        rows = self._rows(positions // self.seq_len)
        order = np.argsort(rows, kind="stable")
        unique_rows, inverse = np.unique(rows[order], return_inverse=True)
        block = tokens[unique_rows.tolist()]
        out = np.empty(positions.shape, dtype=np.int32)
        out[order] = block[inverse, (positions % self.seq_len)[order]]
        return out

    def context(self, position: int, left: int = 8, right: int = 2) -> tuple[np.ndarray, int]:
        """Token ids around global position `position`, within its sequence, and the index of it."""
        seq, t = divmod(int(position), self.seq_len)
        lo, hi = max(0, t - left), min(self.seq_len, t + right + 1)
        return self._f["tokens"][int(self._rows(np.array([seq]))[0]), lo:hi], t - lo

    def _rows(self, seqs: np.ndarray) -> np.ndarray:
        if "seq_index" not in self._f:
            return seqs
        try:
            return rows_of(self.seq_index, seqs)
        except KeyError as exc:
            raise SummaryError(f"{self.path} holds shard {self.attrs.get('shard')} of the corpus, not {exc}") from None


def rows_of(seq_index: np.ndarray, seqs: np.ndarray) -> np.ndarray:
    """Rows of a `tokens` array that hold the global sequences `seqs`, given its ascending
    `seq_index`; KeyError naming a sequence that is not there."""
    seqs = np.asarray(seqs, dtype=np.int64)
    rows = np.minimum(np.searchsorted(seq_index, seqs), max(len(seq_index) - 1, 0))
    missing = seq_index[rows] != seqs if len(seq_index) else np.ones(seqs.shape, dtype=bool)
    if missing.any():
        raise KeyError(f"sequence {int(seqs[missing][0])}")
    return rows


def _plain(value: Any) -> Any:
    """HDF5 attribute values as plain Python (numpy scalars and bytes become int/float/bool/str)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    return value
