"""Writing HDF5 summaries (the layout is `schema`'s): atomic, streamed one layer at a time, checksummed.

Writes are atomic: `SummaryWriter` fills `<name>.tmp` in the same folder and renames it into place only
when the whole file is written, so a crash, a full disk or a read-only folder leaves the previous file
(or none), never half of one. A dataset is written whole (`put`) or one layer at a time (`write_layer`,
or `create` then `write`), so writing a summary needs host memory for one layer of the largest dataset,
not the model. A layer's chunks (and the whole chunks of a growing event list) are compressed on every
core and stored as HDF5's filters would store them (`cache.chunks`): gzip is the summary's limit, and
HDF5 runs its filters on one thread.

Every write, flush and close of the file goes through one guard (`SummaryWriter._guard`): h5py raises an
OSError when a write fails and a RuntimeError when a flush or a close does (HDF5 writes what it cached
then), and either becomes a `WriteError` naming the file, the reason and the room left. Nothing is left
for HDF5 to write when a dataset object is dropped (each is flushed inside the guard): a write that
failed there would only be an "Exception ignored" in a destructor. Once a write has failed the file is
abandoned, and detached from the disk at once (`_detach`): HDF5 still holds chunks and metadata it
writes while the file's objects close, and on a full disk those writes failed again and again, and left
the library in a state that crashed the interpreter at exit (segmentation fault, 3 runs in 4).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import chunks, integrity, schema
from .errors import READ_ERRORS, WRITE_ERRORS, SummaryError, WriteError, first_line
from .reader import Summary

COMPRESS_MIN = 4096  # datasets of at least this many elements are gzip-compressed (smaller: not worth it)
EVENT_CHUNK = 1 << 18  # events per chunk of the (growing) event_pos dataset


def dataset_layout(name: str, shape: tuple[int, ...]) -> dict:
    """Chunks, checksum and compression of a new numeric dataset of `shape`.

    Every non-empty dataset is chunked, because HDF5's fletcher32 checksum works per chunk. Chunks are
    layer-major and cut the neuron axis (the last) into NEURON_CHUNK slices, so one neuron of a huge
    layer costs one chunk; the token stream is chunked by rows, 1-D datasets in long runs.
    """
    if not shape or int(np.prod(shape)) == 0:
        return {}
    if name == "tokens" and len(shape) == 2:
        chunk_shape = (max(1, min(shape[0], (1 << 20) // max(1, shape[1]))), shape[1])
    elif len(shape) == 1:
        chunk_shape = (min(shape[0], EVENT_CHUNK),)
    else:
        chunk_shape = (1,) + tuple(shape[1:-1]) + (min(shape[-1], schema.NEURON_CHUNK),)
    out: dict = {"chunks": chunk_shape, "fletcher32": True}
    if int(np.prod(shape)) >= COMPRESS_MIN:
        out.update(compression="gzip", compression_opts=1, shuffle=True)
    return out


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
            for layer in range(L):
                w.write_layer("pos_count", layer, layer_counts, n_layers=L)

    The `with` block's normal end writes the integrity record, flushes, and renames the file into
    place; an exception inside it removes the temporary file. `reader()` reads what is written so far
    (the analysis of a new summary is computed from it before the rename). A write that fails (full
    disk, read-only folder) is a WriteError (see the module docstring).
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self._f: h5py.File | None = None
        self._disk: tuple[int, int, int] | None = None  # the file's descriptor, device and inode (see _detach)
        self._detached = False

    def __enter__(self) -> "SummaryWriter":
        try:
            with self._guard():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._f = h5py.File(self.tmp, "w", libver="latest")
                fd = self._f.id.get_vfd_handle()
                self._disk = (fd, os.fstat(fd).st_dev, os.fstat(fd).st_ino)
                _set_attrs(self._f, {"format": schema.FORMAT, "schema_version": schema.SCHEMA_VERSION})
        except BaseException:  # no `with` block runs, so no __exit__ either
            self._abandon()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._abandon()
            return
        try:
            with self._guard():
                _set_attrs(self._f, {schema.INTEGRITY_ATTR: json.dumps(integrity.record(self._f), sort_keys=True)})
                self._f.close()
                with open(self.tmp, "rb+") as handle:
                    os.fsync(handle.fileno())
                os.replace(self.tmp, self.path)
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        """Close and remove the temporary file, detached from the disk first (see the module docstring)."""
        self._detach()
        try:
            if self._f is not None and self._f.id.valid:
                self._f.close()
        except Exception:  # noqa: BLE001 - closing a file whose disk failed may fail too; it goes anyway
            pass
        self.tmp.unlink(missing_ok=True)

    def _detach(self) -> None:
        """Make an abandoned file's last writes need no room on its disk: its descriptor is pointed at an
        anonymous file in memory (Linux), where HDF5 writes what it still holds as the file closes;
        elsewhere the file is emptied, which gives the disk back the room it took. Once only (what HDF5
        wrote there stays readable to it), and without asking HDF5 (after a failed close, asking for
        the descriptor crashed): the descriptor is the one noted at opening, if it is still this file."""
        if self._detached:
            return
        self._detached = True
        try:
            if self._disk is not None and hasattr(os, "memfd_create"):
                fd, device, inode = self._disk
                if (os.fstat(fd).st_dev, os.fstat(fd).st_ino) == (device, inode):
                    spare = os.memfd_create("abandoned-summary")
                    os.dup2(spare, fd)
                    os.close(spare)
            else:
                os.truncate(self.tmp, 0)
        except OSError:  # the descriptor is closed already: nothing is left to write
            pass

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """The one guard of every write, flush and close: a failure is a WriteError, and the file, now
        abandoned, is detached from the disk before anything else of it is closed."""
        try:
            yield
        except WRITE_ERRORS as exc:
            self._detach()
            raise WriteError(self.path, exc) from None

    def _group(self, group: str | None) -> h5py.Group:
        if group is None:
            return self._f
        return self._f.require_group(group)

    def set_attrs(self, attrs: Mapping[str, Any], group: str | None = None) -> None:
        with self._guard():
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
        with self._guard():
            value = np.asarray(value)
            self._group(group).create_dataset(name, data=value, **dataset_layout(name, value.shape)).flush()

    def create(self, name: str, shape: tuple[int, ...], dtype, group: str | None = None, fill=None) -> None:
        """An empty dataset to be filled by `write`; a 1-D one of shape (0,) grows with `append`."""
        with self._guard():
            target = self._group(group)
            if shape == (0,):
                made = target.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(EVENT_CHUNK,),
                                             fletcher32=True, compression="gzip", compression_opts=1, shuffle=True)
            else:
                made = target.create_dataset(name, shape=shape, dtype=dtype, fillvalue=fill,
                                             **dataset_layout(name, tuple(shape)))
            made.flush()

    def write(self, name: str, index, value: Any, group: str | None = None) -> None:
        """dataset[index] = value (one layer, usually): a whole compressed layer has its chunks
        encoded on every core (cache.chunks), anything else goes through HDF5's own pipeline."""
        with self._guard():
            ds = self._group(group)[name]
            value = np.asarray(value)
            if chunks.direct_layout(ds, index, value):
                chunks.write_layer(ds, index, value)
            else:
                ds[index] = value
            ds.flush()

    def write_layer(self, name: str, layer: int, value: Any, n_layers: int, group: str | None = None) -> None:
        """Layer `layer` of the layer-major dataset `name`, made [n_layers, *value.shape] of value's dtype
        when its first layer is written: the writers of per-layer results (projections, analysis,
        merges) hold one layer at a time and learn its shapes from it."""
        value = np.asarray(value)
        with self._guard():
            made = name in self._group(group)
        if not made:
            self.create(name, (n_layers,) + value.shape, value.dtype, group=group)
        self.write(name, layer, value, group=group)

    def append(self, name: str, values: np.ndarray, group: str | None = None) -> None:
        """Append to a growing 1-D dataset made by `create(name, (0,), dtype)` (its whole chunks
        encoded on every core, cache.chunks)."""
        values = np.asarray(values)
        if values.size == 0:
            return
        with self._guard():
            ds = self._group(group)[name]
            chunks.append(ds, values.ravel())
            ds.flush()

    def copy_from(self, source: Summary, skip: tuple[str, ...] = ()) -> None:
        """Copy every attribute, dataset and group of `source` except the names in `skip`, as stored
        (HDF5 copies the compressed chunks with their checksums; nothing is decompressed)."""
        with self._guard():
            _set_attrs(self._f, {k: v for k, v in source.attrs.items() if k != schema.INTEGRITY_ATTR})
            for key in source.file:
                if key not in skip:
                    try:
                        source.file.copy(source.file[key], self._f, name=key)
                    except OSError:
                        raise  # writing failed (a full disk): the guard says so
                    except READ_ERRORS as exc:  # the copy's chunks are not decoded: a damaged source's metadata
                        raise SummaryError(f"{source.path} is damaged: cannot copy {key} ({first_line(exc)})") from None

    def reader(self) -> Summary:
        """A Summary over the file as written so far (not verified: its integrity record comes last)."""
        with self._guard():
            self._f.flush()
        return Summary(self.path, self._f, owner=False)


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
