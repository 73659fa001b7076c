"""The integrity record of a summary: what no HDF5 checksum covers, digested when the file is written and
verified when it is opened.

HDF5's latest format checksums the metadata and the fletcher32 filter checksums every chunk, but
attribute values and empty datasets (which have no chunks) are covered by neither. The root attribute
`schema.INTEGRITY_ATTR` holds, as JSON, the SHA-256 of every group's attributes and each dataset's shape
and dtype, with a content digest for the datasets no filter checksums (`schema` module docstring).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import schema
from .errors import SummaryError


def plain(value: Any) -> Any:
    """HDF5 attribute values as plain Python (numpy scalars and bytes become int/float/bool/str)."""
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def dtype_name(dtype: np.dtype) -> str:
    return np.dtype(dtype).str


def _attrs_digest(attrs: Mapping[str, Any]) -> str:
    """SHA-256 of a group's attributes (all but the integrity record itself), canonical JSON."""
    values = {k: plain(v) for k, v in attrs.items() if k != schema.INTEGRITY_ATTR}
    return hashlib.sha256(json.dumps(values, sort_keys=True, allow_nan=True).encode()).hexdigest()


def _contents_digest(dataset: h5py.Dataset) -> str:
    """SHA-256 of a dataset that no HDF5 checksum covers (an empty one: it has no chunks)."""
    return hashlib.sha256(np.ascontiguousarray(dataset[()]).tobytes()).hexdigest()


def record(f: h5py.File) -> dict:
    """The record of a file as written: every group's attribute digest and every dataset's shape and
    dtype, with a content digest where no fletcher32 checksum guards the data."""
    out: dict = {"version": 1, "attrs": {"/": _attrs_digest(f.attrs)}, "datasets": {}}

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Group):
            out["attrs"][name] = _attrs_digest(obj.attrs)
        elif isinstance(obj, h5py.Dataset):
            entry = {"shape": list(obj.shape), "dtype": dtype_name(obj.dtype)}
            if not obj.fletcher32:
                entry["sha256"] = _contents_digest(obj)
            out["datasets"][name] = entry

    f.visititems(visit)
    return out


def verify(f: h5py.File, attrs: Mapping[str, Any], attrs_of: Callable[[str], Mapping[str, Any]], path: Path) -> dict:
    """The record of an open file (root attributes `attrs`, a group's by `attrs_of(name)`) checked
    against the file; a SummaryError names the first attribute group or dataset that does not match."""
    try:
        stored = json.loads(attrs.get(schema.INTEGRITY_ATTR))
        groups, datasets = stored["attrs"], stored["datasets"]
    except (TypeError, ValueError, KeyError):
        raise SummaryError(f"{path} is damaged: its integrity record cannot be read") from None
    if _attrs_digest(attrs) != groups.get("/"):
        raise SummaryError(f"{path} is damaged: its attributes do not match their checksum")
    for group, digest in groups.items():
        if group != "/" and _attrs_digest(attrs_of(group)) != digest:
            raise SummaryError(f"{path} is damaged: the attributes of {group} do not match their checksum")
    present: set[str] = set()
    f.visititems(lambda name, obj: present.add(name) if isinstance(obj, h5py.Dataset) else None)
    unlisted = sorted(present - set(datasets))
    if unlisted:
        raise SummaryError(f"{path} is damaged: dataset {unlisted[0]} is not in its integrity record")
    for name, entry in datasets.items():
        if name not in present:
            raise SummaryError(f"{path} is damaged: dataset {name} is missing")
        ds = f[name]
        if list(ds.shape) != entry.get("shape") or dtype_name(ds.dtype) != entry.get("dtype"):
            raise SummaryError(f"{path} is damaged: dataset {name} has shape {list(ds.shape)} "
                               f"{dtype_name(ds.dtype)}, recorded {entry.get('shape')} {entry.get('dtype')}")
    return stored
