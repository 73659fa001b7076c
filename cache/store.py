"""Writing and reading HDF5 summaries (the layout is `schema`'s).

Writes are atomic: `SummaryWriter` fills `<name>.tmp` in the same folder and renames it into place only
when the whole file is written, so a crash, a full disk or a read-only folder leaves the previous file
(or none), never half of one. A dataset is written whole (`put`) or one layer at a time (`create` then
`write`), so writing a summary needs host memory for one layer of the largest dataset, not the model.
A layer's chunks (and the whole chunks of a growing event list) are compressed on every core and
stored as HDF5's filters would store them (`cache.chunks`): gzip is the summary's limit, and HDF5 runs
its filters on one thread.

Reads verify: `Summary.open` checks the format, the schema version, the attributes every reader needs,
each dataset's shape against them and, for schema 2, the integrity record (`schema` module docstring);
every later read of a damaged dataset is a `SummaryError` naming the file and the dataset. The reader
is lazy: opening reads attributes and metadata only; arrays are read one layer (or one neuron) at a
time, which is what lets the explorer open a 66b summary instantly. It keeps no cache of layers: the
query layer above decides what to keep.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from . import chunks, schema

COMPRESS_MIN = 4096  # datasets of at least this many elements are gzip-compressed (smaller: not worth it)
EVENT_CHUNK = 1 << 18  # events per chunk of the (growing) event_pos dataset


class SummaryError(Exception):
    """A summary that cannot be used (foreign, damaged, too new, unwritable); one-line message."""

    exit_code = 1


def _reason(exc: BaseException) -> str:
    """The first line of an exception's message (h5py's can span several), or its class name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


# h5py raises these on damaged files (a bad checksum is an OSError, a broken B-tree a KeyError or
# RuntimeError, a bad dataspace a ValueError or TypeError, a shortened dimension an IndexError)
READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError, AttributeError)


# ---- writing ---------------------------------------------------------------------------------------------


def _layout(name: str, shape: tuple[int, ...]) -> dict:
    """Chunks, checksum and compression of a new numeric dataset of `shape`.

    Every non-empty dataset is chunked, because HDF5's fletcher32 checksum works per chunk. Chunks are
    layer-major and cut the neuron axis (the last) into NEURON_CHUNK slices, so one neuron of a huge
    layer costs one chunk; the token stream is chunked by rows, 1-D datasets in long runs.
    """
    if not shape or int(np.prod(shape)) == 0:
        return {}
    if name == "tokens" and len(shape) == 2:
        chunks = (max(1, min(shape[0], (1 << 20) // max(1, shape[1]))), shape[1])
    elif len(shape) == 1:
        chunks = (min(shape[0], EVENT_CHUNK),)
    else:
        chunks = (1,) + tuple(shape[1:-1]) + (min(shape[-1], schema.NEURON_CHUNK),)
    out: dict = {"chunks": chunks, "fletcher32": True}
    if int(np.prod(shape)) >= COMPRESS_MIN:
        out.update(compression="gzip", compression_opts=1, shuffle=True)
    return out


def _plain(value: Any) -> Any:
    """HDF5 attribute values as plain Python (numpy scalars and bytes become int/float/bool/str)."""
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _attrs_digest(attrs: Mapping[str, Any]) -> str:
    """SHA-256 of a group's attributes (all but the integrity record itself), canonical JSON."""
    plain = {k: _plain(v) for k, v in attrs.items() if k != schema.INTEGRITY_ATTR}
    return hashlib.sha256(json.dumps(plain, sort_keys=True, allow_nan=True).encode()).hexdigest()


def _contents_digest(dataset: h5py.Dataset) -> str:
    """SHA-256 of a dataset that no HDF5 checksum covers (an empty one: it has no chunks)."""
    return hashlib.sha256(np.ascontiguousarray(dataset[()]).tobytes()).hexdigest()


def _integrity_record(f: h5py.File) -> dict:
    """What `Summary.open` verifies: every group's attribute digest and every dataset's shape and
    dtype, with a content digest where no fletcher32 checksum guards the data."""
    record: dict = {"version": 1, "attrs": {"/": _attrs_digest(f.attrs)}, "datasets": {}}

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Group):
            record["attrs"][name] = _attrs_digest(obj.attrs)
        elif isinstance(obj, h5py.Dataset):
            entry = {"shape": list(obj.shape), "dtype": _dtype_name(obj.dtype)}
            if not obj.fletcher32:
                entry["sha256"] = _contents_digest(obj)
            record["datasets"][name] = entry

    f.visititems(visit)
    return record


def _dtype_name(dtype: np.dtype) -> str:
    return np.dtype(dtype).str


def _set_attrs(target: h5py.Group | h5py.File, attrs: Mapping[str, Any]) -> None:
    """Attributes as HDF5 stores them safely: text as fixed-length UTF-8 bytes (variable-length
    strings live in HDF5's global heap, which has no checksum, and a damaged heap can hang the
    library while it reads), dicts and lists as JSON text."""
    for key, value in attrs.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        target.attrs[key] = np.bytes_(value.encode("utf-8")) if isinstance(value, str) else value


class SummaryWriter:
    """One summary file being written; see the module docstring.

        with SummaryWriter(path) as w:
            w.set_attrs({...})
            w.put("tokens", tokens)
            w.create("pos_count", (L, T, F), np.uint16)
            for layer in range(L):
                w.write("pos_count", layer, layer_counts)

    The `with` block's normal end writes the integrity record, flushes, and renames the file into
    place; an exception inside it removes the temporary file. `reader()` reads what is written so far
    (the analysis of a new summary is computed from it before the rename). Any OSError (full disk,
    read-only folder) becomes a SummaryError that names the file and the free space there.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self._f: h5py.File | None = None

    def __enter__(self) -> "SummaryWriter":
        with self._writing():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = h5py.File(self.tmp, "w", libver="latest")
            _set_attrs(self._f, {"format": schema.FORMAT, "schema_version": schema.SCHEMA_VERSION})
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._abandon()
            return
        try:
            with self._writing():
                _set_attrs(self._f, {schema.INTEGRITY_ATTR: json.dumps(_integrity_record(self._f), sort_keys=True)})
                self._f.close()
                with open(self.tmp, "rb+") as handle:
                    os.fsync(handle.fileno())
                os.replace(self.tmp, self.path)
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        try:
            if self._f is not None and self._f.id.valid:
                self._f.close()
        except Exception:  # noqa: BLE001 - closing a file whose disk failed may fail too; it goes anyway
            pass
        self.tmp.unlink(missing_ok=True)

    def _writing(self):
        return _WriteErrors(self.path)

    def _group(self, group: str | None) -> h5py.Group:
        if group is None:
            return self._f
        return self._f.require_group(group)

    def set_attrs(self, attrs: Mapping[str, Any], group: str | None = None) -> None:
        with self._writing():
            _set_attrs(self._group(group), attrs)

    def put(self, name: str, value: Any, group: str | None = None) -> None:
        """Write a whole dataset: a numpy array, or a list of str (stored as two numeric datasets,
        `<name>_utf8` bytes and `<name>_offsets`, checksummed like the rest: no variable-length
        strings, see _set_attrs)."""
        if isinstance(value, (list, tuple)) and (not value or isinstance(value[0], str)):
            encoded = [text.encode("utf-8", "surrogatepass") for text in value]
            offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
            offsets[1:] = np.cumsum([len(b) for b in encoded])
            self.put(f"{name}_utf8", np.frombuffer(b"".join(encoded), dtype=np.uint8), group)
            self.put(f"{name}_offsets", offsets, group)
            return
        with self._writing():
            value = np.asarray(value)
            self._group(group).create_dataset(name, data=value, **_layout(name, value.shape))

    def create(self, name: str, shape: tuple[int, ...], dtype, group: str | None = None, fill=None) -> None:
        """An empty dataset to be filled by `write`; a 1-D one of shape (0,) grows with `append`."""
        with self._writing():
            target = self._group(group)
            if shape == (0,):
                target.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(EVENT_CHUNK,),
                                      fletcher32=True, compression="gzip", compression_opts=1, shuffle=True)
                return
            target.create_dataset(name, shape=shape, dtype=dtype, fillvalue=fill, **_layout(name, tuple(shape)))

    def write(self, name: str, index, value: Any, group: str | None = None) -> None:
        """dataset[index] = value (one layer, usually): a whole compressed layer has its chunks
        encoded on every core (cache.chunks), anything else goes through HDF5's own pipeline."""
        with self._writing():
            ds = self._group(group)[name]
            value = np.asarray(value)
            if chunks.direct_layout(ds, index, value):
                chunks.write_layer(ds, index, value)
            else:
                ds[index] = value

    def append(self, name: str, values: np.ndarray, group: str | None = None) -> None:
        """Append to a growing 1-D dataset made by `create(name, (0,), dtype)` (its whole chunks
        encoded on every core, cache.chunks)."""
        values = np.asarray(values)
        if values.size == 0:
            return
        with self._writing():
            chunks.append(self._group(group)[name], values.ravel())

    def copy_from(self, source: "Summary", skip: tuple[str, ...] = ()) -> None:
        """Copy every attribute, dataset and group of `source` except the names in `skip`, as stored
        (HDF5 copies the compressed chunks with their checksums; nothing is decompressed)."""
        with self._writing():
            _set_attrs(self._f, {k: v for k, v in source.attrs.items() if k != schema.INTEGRITY_ATTR})
            for key in source._f:
                if key not in skip:
                    try:
                        source._f.copy(source._f[key], self._f, name=key)
                    except OSError:
                        raise  # writing failed (a full disk): _WriteErrors says so
                    except READ_ERRORS as exc:  # the copy's chunks are not decoded: a damaged source's metadata
                        raise SummaryError(f"{source.path} is damaged: cannot copy {key} ({_reason(exc)})") from None

    def reader(self) -> "Summary":
        """A Summary over the file as written so far (not verified: its integrity record comes last)."""
        self._f.flush()
        return Summary(self.path, self._f, owner=False)


class _WriteErrors:
    """Turns an OSError while writing `path` into a SummaryError naming it and the room left there."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None or not issubclass(exc_type, OSError):
            return False
        try:
            free = f"; {shutil.disk_usage(_existing_parent(self.path)).free / 2**20:,.0f} MiB free there"
        except OSError:
            free = ""
        raise SummaryError(f"could not write {self.path}: {_reason(exc)}{free}") from None


def _existing_parent(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path(".")


def write_summary(
    path: Path,
    attrs: Mapping[str, Any],
    arrays: Mapping[str, Any],
    groups: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]] | None = None,
) -> None:
    """Write a whole summary held in memory at once: root `attrs` and `arrays`, and `groups`
    {name: (attrs, arrays)} (tests and small tools; collection streams layer by layer instead)."""
    with SummaryWriter(path) as w:
        w.set_attrs(attrs)
        for name, value in arrays.items():
            w.put(name, value)
        for group, (gattrs, garrays) in (groups or {}).items():
            w.set_attrs(gattrs, group=group)
            for name, value in garrays.items():
                w.put(name, value, group=group)


# ---- reading ---------------------------------------------------------------------------------------------


class TokenRows:
    """Where a global sequence's tokens are in a summary's `tokens` array: row r holds sequence
    seq_index[r] (a shard keeps some sequences only), or sequence r when there is no seq_index. Every
    mapping from global positions g = seq * T + t to stored tokens goes through here."""

    def __init__(self, seq_index: np.ndarray | None, n_rows: int, seq_len: int):
        self.seq_index = None if seq_index is None else np.asarray(seq_index, dtype=np.int64)
        if self.seq_index is not None and np.array_equal(self.seq_index, np.arange(n_rows)):
            self.seq_index = None
        self.n_rows, self.T = int(n_rows), int(seq_len)

    def rows(self, seqs: np.ndarray) -> np.ndarray:
        """Rows holding the global sequences `seqs`; KeyError naming a sequence that is not there."""
        seqs = np.asarray(seqs, dtype=np.int64)
        if self.seq_index is None:
            bad = (seqs < 0) | (seqs >= self.n_rows)
            if bad.any():
                raise KeyError(f"sequence {int(seqs[bad][0])}")
            return seqs
        index = self.seq_index
        rows = np.minimum(np.searchsorted(index, seqs), max(len(index) - 1, 0))
        missing = index[rows] != seqs if len(index) else np.ones(seqs.shape, dtype=bool)
        if missing.any():
            raise KeyError(f"sequence {int(seqs[missing][0])}")
        return rows

    def local(self, positions: np.ndarray) -> np.ndarray:
        """Indices into the flattened `tokens` array (row * T + t) of global positions."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.seq_index is None:
            return positions
        return self.rows(positions // self.T) * self.T + positions % self.T

    def global_(self, local: np.ndarray) -> np.ndarray:
        """Global positions of indices into the flattened `tokens` array."""
        local = np.asarray(local, dtype=np.int64)
        if self.seq_index is None:
            return local
        return self.seq_index[local // self.T] * self.T + local % self.T

    def sequences(self) -> np.ndarray:
        """The global sequence of every row."""
        return np.arange(self.n_rows, dtype=np.int64) if self.seq_index is None else self.seq_index


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


class Summary:
    """A read-only, lazy, verified view of one summary file (see the module docstring)."""

    def __init__(self, path: Path, handle: h5py.File, owner: bool = True):
        self.path = Path(path)
        self._f = handle
        self._owner = owner
        try:
            self.attrs: dict[str, Any] = {k: _plain(v) for k, v in handle.attrs.items()}
        except READ_ERRORS as exc:
            raise SummaryError(f"{self.path} is damaged: its attributes cannot be read ({_reason(exc)})") from None
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
            raise SummaryError(f"{path} is {kind} ({_reason(exc)})") from None
        try:
            summary = cls(path, handle)
            summary._verify()
        except SummaryError:
            handle.close()
            raise
        except READ_ERRORS as exc:
            handle.close()
            raise SummaryError(f"{path} is damaged: {_reason(exc)}") from None
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
            self._verify_integrity()
        missing = [k for k in schema.REQUIRED_ATTRS if k not in a]
        if missing:
            raise SummaryError(f"{self.path} is damaged: attribute {missing[0]} is missing")
        for key in ("n_layers", "n_neurons", "seq_len", "n_seq", "n_tokens"):
            if not isinstance(a[key], int) or isinstance(a[key], bool) or a[key] < 0:
                raise SummaryError(f"{self.path} is damaged: attribute {key} is {a[key]!r}")
        if self.n_layers < 1 or self.n_neurons < 1 or self.seq_len < 1:
            raise SummaryError(f"{self.path} holds no neurons ({self.n_layers} layers x {self.n_neurons})")
        needed = [n for n in schema.DATASETS if n not in schema.ADDED_IN_2 or version >= 2]
        absent = [name for name in needed if name not in self._f]
        if absent:
            raise SummaryError(f"{self.path} is incomplete or damaged: missing {', '.join(absent)}")
        self._check_shapes()

    def _verify_integrity(self) -> None:
        raw = self.attrs.get(schema.INTEGRITY_ATTR)
        try:
            record = json.loads(raw)
            attrs, datasets = record["attrs"], record["datasets"]
        except (TypeError, ValueError, KeyError):
            raise SummaryError(f"{self.path} is damaged: its integrity record cannot be read") from None
        if _attrs_digest(self.attrs) != attrs.get("/"):
            raise SummaryError(f"{self.path} is damaged: its attributes do not match their checksum")
        for group, digest in attrs.items():
            if group != "/" and _attrs_digest(self._attrs_of(group)) != digest:
                raise SummaryError(f"{self.path} is damaged: the attributes of {group} do not match their checksum")
        present: set[str] = set()
        self._f.visititems(lambda name, obj: present.add(name) if isinstance(obj, h5py.Dataset) else None)
        unlisted = sorted(present - set(datasets))
        if unlisted:
            raise SummaryError(f"{self.path} is damaged: dataset {unlisted[0]} is not in its integrity record")
        for name, entry in datasets.items():
            if name not in present:
                raise SummaryError(f"{self.path} is damaged: dataset {name} is missing")
            ds = self._f[name]
            if list(ds.shape) != entry.get("shape") or _dtype_name(ds.dtype) != entry.get("dtype"):
                raise SummaryError(f"{self.path} is damaged: dataset {name} has shape {list(ds.shape)} "
                                   f"{_dtype_name(ds.dtype)}, recorded {entry.get('shape')} {entry.get('dtype')}")
        self._integrity = record

    def _check_shapes(self) -> None:
        """Each dataset's shape against the attributes (what every reader indexes by)."""
        L, F, T = self.n_layers, self.n_neurons, self.seq_len
        expected = {"act_count": (L, F), "pos_count": (L, T, F), "act_sum": (L, F), "act_max": (L, F),
                    "event_level": (L, F), "event_offsets": (L, F + 1), "tau": (L,), "tokens_at_pos": (T,),
                    "act_count_pos": (L, F), "act_sum_pos": (L, F)}
        for name, shape in expected.items():
            if name in self._f and self._f[name].shape != shape:
                raise SummaryError(f"{self.path} is damaged: {name} has shape {self._f[name].shape}, "
                                   f"expected {shape} from its attributes")
        tokens = self._f["tokens"].shape
        if len(tokens) != 2 or tokens[1] != T or tokens[0] < self.n_seq:
            raise SummaryError(f"{self.path} is damaged: tokens has shape {tokens} for {self.n_seq} sequences of {T}")

    def close(self) -> None:
        if self._owner:
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
    def n_seq(self) -> int:
        return int(self.attrs["n_seq"])

    @property
    def n_tokens(self) -> int:
        return int(self.attrs["n_tokens"])

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
        """Whether the root dataset `name` is stored (schema 1 files lack schema.ADDED_IN_2)."""
        return self._exists(name)

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
            raise SummaryError(f"{self.path} is damaged: event_offsets point outside event_pos ({start}..{stop} of {n})")

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
            raise SummaryError(f"{self.path} is damaged: cannot read {name} ({_reason(exc)})") from None

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
            return {k: _plain(v) for k, v in self._f[group].attrs.items()} if group in self._f else {}
        except READ_ERRORS as exc:
            raise SummaryError(f"{self.path} is damaged: the attributes of {group} cannot be read ({_reason(exc)})") from None


def _has_hdf5_signature(path: Path) -> bool:
    """HDF5 files start with this signature at offset 0 (or 512, 1024, ... with a user block)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return False
    return head == b"\x89HDF\r\n\x1a\n"
