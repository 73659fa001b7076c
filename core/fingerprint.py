"""What identifies a model's weights, cheaply: the part of the run key that says *which* model.

A name is not enough: two folders both called `tiny-gpt2` hold different models, and a checkpoint
retrained in place keeps its name. So every run is keyed (and every summary stamped, attribute
`model_fingerprint`) with:

- a local folder: its resolved path and the name, size and modification time of each file in it
  (config, weights, tokenizer); reading the weights of a 100 GB model to hash them is never needed;
- a GGUF file: its size and the SHA-256 of its first HEADER_BYTES (the header: metadata and tensor
  table), wherever the file lies (the offline default ships inside a Python package, whose path
  differs from one environment to the next);
- a hub id: the commit the hub (or its local cache) resolved it to.

`digest` is what keys a run; `path` says where to look again (`neuron-tui open` and `report` say
when the folder or file there no longer matches, and the probe refuses another model). No torch here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

HEADER_BYTES = 4 << 20  # a GGUF header (metadata + tensor table) of SmolLM2 is ~1 MB; 4 MB covers big vocabularies


def _digest(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def folder_fingerprint(folder: Path) -> dict:
    """A local model folder: resolved path, and (name, size, mtime) of every file at its top level."""
    folder = Path(folder).resolve()
    files = sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith("."))
    return {"kind": "folder", "path": str(folder), "digest": _digest({"path": str(folder), "files": files})}


def gguf_fingerprint(file: Path) -> dict:
    """A GGUF file: its size and the hash of its header (not its place on disk)."""
    file = Path(file).resolve()
    with open(file, "rb") as handle:
        head = hashlib.sha256(handle.read(HEADER_BYTES)).hexdigest()
    size = file.stat().st_size
    return {"kind": "gguf", "path": str(file), "digest": _digest({"size": size, "header_sha256": head})}


def hub_fingerprint(model_id: str, revision: str) -> dict:
    """A hub model: the commit its id resolved to ("" when unknown, e.g. a model built in memory)."""
    return {"kind": "hub", "path": model_id, "digest": _digest({"id": model_id, "revision": revision})}


def current(fingerprint: dict) -> dict | None:
    """The fingerprint the recorded `fingerprint`'s folder or file has now; None when it cannot be
    told here (a hub model, or a path that does not exist on this machine)."""
    kind, path = fingerprint.get("kind"), Path(str(fingerprint.get("path", "")))
    try:
        if kind == "folder" and path.is_dir():
            return folder_fingerprint(path)
        if kind == "gguf" and path.is_file():
            return gguf_fingerprint(path)
    except OSError:
        return None
    return None


def changed(fingerprint: dict) -> str:
    """A one-line note when the model a summary was made from has changed since, else ""."""
    now = current(fingerprint) if fingerprint else None
    if now is None or now["digest"] == fingerprint.get("digest"):
        return ""
    what = "folder" if fingerprint.get("kind") == "folder" else "file"
    return f"the model {what} {fingerprint['path']} has changed since this summary was made"
