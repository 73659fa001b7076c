"""Corpus specs: which documents a collection reads, in which order, and how the summary names them.

A summary is keyed by its corpus identity (it records what is needed to reproduce it and nothing
machine-specific; docs/design.md), so every corpus has, besides its documents:
- `identity`: the source kind, a description without absolute paths (file names relative to the folder or
  glob root), the number of documents and a SHA-256 over the documents themselves. The same files in
  another folder or on another machine give the same identity; one changed byte gives another.
- a fixed document order, so that packing (core.packing) produces the same sequences on every run.

Local corpora are scanned once when loaded (for the hash, and to check that they hold text) and are then
read again document by document, so a corpus larger than memory works. Hugging Face datasets are streamed
and cannot be hashed without downloading them: their identity hashes the spec and says so.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from abc import ABC, abstractmethod
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .builtin_corpus import BUILTIN_SOURCES, builtin_documents, builtin_versions
from .errors import NeuronTuiError, UsageError

FOLDER_SUFFIXES = (".txt", ".jsonl")
"""The files a folder spec reads; other files in the folder (READMEs, images, ...) are not corpus text."""


class Corpus(ABC):
    """A deterministic sequence of non-empty text documents.

    `n_documents` is the number of documents of a local corpus, which `document(i)` reads in any order
    (packing shuffles through it without holding the corpus in memory); it is None for a streamed corpus,
    which can only be read front to back with `documents()`.
    """

    spec: str
    identity: dict[str, Any]
    n_documents: int | None

    @abstractmethod
    def documents(self) -> Iterator[str]:
        """The documents in their fixed order."""

    @abstractmethod
    def document(self, index: int) -> str:
        """Document number `index` of that order (local corpora only)."""


def load_corpus(spec: str) -> Corpus:
    """The corpus named by `spec`, checked to exist and to hold some text.

    Specs: `builtin` (see core.builtin_corpus); a `.jsonl` file (one document per line, field `text`);
    any other file, read as one UTF-8 text document; a folder (its .txt and .jsonl files, recursively,
    sorted by relative path); a glob pattern (the files it matches, sorted); `hf:NAME[:CONFIG][:SPLIT]`
    (a Hugging Face dataset, streamed; split `train` by default, `hf:NAME::SPLIT` names a split alone).
    A missing path, a glob matching no file and a corpus without any non-empty document are usage errors.
    """
    if spec == "builtin":
        return _TextsCorpus(
            spec,
            kind="builtin",
            description={"sources": [source.id_prefix for source in BUILTIN_SOURCES]},
            texts=[text for _, text in builtin_documents()],
        )
    if spec.startswith("hf:"):
        return _HubCorpus(spec)
    root, files = _local_files(spec)
    return _FilesCorpus(spec, root=root, files=files)


def _local_files(spec: str) -> tuple[Path, list[Path]]:
    """(root, files) of a local spec: a folder, a file or a glob; UsageError when it names none."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.suffix.lower() in FOLDER_SUFFIXES and p.is_file()]
        if not files:
            raise UsageError(f"corpus folder {spec} has no .txt or .jsonl file")
        return path, files
    if path.is_file():
        return path.parent, [path]
    if any(char in spec for char in "*?["):
        files = [Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True) if os.path.isfile(p)]
        if not files:
            raise UsageError(f"corpus pattern {spec} matches no file")
        return Path(os.path.commonpath([p.parent for p in files])), files
    raise UsageError(f"corpus not found: {spec} (a file, folder, glob, 'builtin' or hf:NAME)")


def corpus_fingerprint(spec: str) -> str:
    """A cheap stand-in for a corpus's identity, without reading its documents: the versions the
    builtin corpus is read from, the name, size and modification time of each local file, or the spec
    of a streamed dataset. It keys the request index (cache.RequestIndex), never a run: a run is keyed
    by the content hash of `load_corpus(spec).identity`."""
    if spec == "builtin":
        return f"builtin {builtin_versions()}"
    if spec.startswith("hf:"):
        return spec
    root, files = _local_files(spec)
    return json.dumps(sorted([p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in files))


def _is_text(text: str) -> bool:
    """Whitespace-only documents count as empty: they would only add separator tokens."""
    return bool(text.strip())


class _ContentHash:
    """SHA-256 over the documents in order, each prefixed with its byte length so that moving text
    across a document boundary changes the hash."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def add(self, text: str) -> None:
        data = text.encode("utf-8")
        self._sha.update(len(data).to_bytes(8, "little"))
        self._sha.update(data)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def _local_identity(kind: str, description: dict[str, Any], n_documents: int, sha256: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "description": description,
        "n_documents": n_documents,
        "content_sha256": sha256,
        "content_hashed": True,
    }


class _TextsCorpus(Corpus):
    """A corpus small enough to hold in memory (the builtin one, about 5 MB)."""

    def __init__(self, spec: str, kind: str, description: dict[str, Any], texts: Iterable[str]) -> None:
        self.spec = spec
        self._texts = [text for text in texts if _is_text(text)]
        if not self._texts:
            raise UsageError(f"corpus {spec} has no non-empty document")
        content = _ContentHash()
        for text in self._texts:
            content.add(text)
        self.n_documents = len(self._texts)
        self.identity = _local_identity(kind, description, self.n_documents, content.hexdigest())

    def documents(self) -> Iterator[str]:
        return iter(self._texts)

    def document(self, index: int) -> str:
        return self._texts[index]


_WHOLE_FILE = -1
"""Offset recorded for a plain-text file, whose whole content is one document."""


class _FilesCorpus(Corpus):
    """Local files; remembers where each document starts (file number and byte offset, 12 bytes per
    document) instead of the text, so any document can be read again in any order."""

    def __init__(self, spec: str, root: Path, files: list[Path]) -> None:
        self.spec = spec
        # Sorting by the relative POSIX path, not by Path, keeps the order the same on every OS.
        named = sorted((p.relative_to(root).as_posix(), p) for p in files)
        self._files = [p for _, p in named]
        self._file_of = array("I")
        self._offset = array("q")
        content = _ContentHash()
        for number, path in enumerate(self._files):
            for offset, text in _read_file(path):
                self._file_of.append(number)
                self._offset.append(offset)
                content.add(text)
        self.n_documents = len(self._offset)
        if not self.n_documents:
            raise UsageError(f"corpus {spec} has no non-empty document")
        description = {"files": [name for name, _ in named]}
        self.identity = _local_identity("files", description, self.n_documents, content.hexdigest())

    def documents(self) -> Iterator[str]:
        for path in self._files:
            for _, text in _read_file(path):
                yield text

    def document(self, index: int) -> str:
        path = self._files[self._file_of[index]]
        offset = self._offset[index]
        if offset == _WHOLE_FILE:
            return _read_text_file(path)
        with open(path, "rb") as stream:
            stream.seek(offset)
            return _jsonl_text(stream.readline(), path, line_number=None)


def _read_file(path: Path) -> Iterator[tuple[int, str]]:
    """(byte offset, text) of each non-empty document of one file."""
    if path.suffix.lower() != ".jsonl":
        text = _read_text_file(path)
        if _is_text(text):
            yield _WHOLE_FILE, text
        return
    offset = 0
    with open(path, "rb") as stream:
        for line_number, line in enumerate(stream, start=1):
            if line.strip():
                text = _jsonl_text(line, path, line_number)
                if _is_text(text):
                    yield offset, text
            offset += len(line)


def _read_text_file(path: Path) -> str:
    """UTF-8 (a leading byte-order mark dropped), line endings normalised to \\n so that a file checked
    out with Windows line endings has the same identity."""
    try:
        with open(path, encoding="utf-8-sig") as stream:
            return stream.read()
    except UnicodeDecodeError as exc:
        raise UsageError(f"corpus file {path} is not UTF-8 text (byte {exc.start})") from None


def _jsonl_text(line: bytes, path: Path, line_number: int | None) -> str:
    where = f"{path}:{line_number}" if line_number is not None else str(path)
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise UsageError(f"corpus file {where} is not a JSON line: {exc}") from None
    text = row.get("text") if isinstance(row, dict) else None
    if not isinstance(text, str):
        raise UsageError(f'corpus file {where} has no string field "text"')
    return text


class _HubCorpus(Corpus):
    """A Hugging Face dataset, streamed so that a corpus of any size starts at once and never lands on
    disk whole. Opened when loaded, so that a wrong name or a missing network fails before any model is
    loaded."""

    n_documents = None

    def __init__(self, spec: str) -> None:
        parts = spec[len("hf:"):].split(":")
        if not parts[0] or len(parts) > 3:
            raise UsageError(f"bad corpus spec {spec}: expected hf:NAME[:CONFIG][:SPLIT]")
        name, config, split = parts + [""] * (3 - len(parts))
        config, split = config or None, split or "train"
        try:
            import datasets
        except ImportError:
            raise NeuronTuiError(
                f"the corpus {spec} needs the datasets library: pip install datasets"
            ) from None
        try:
            self._rows = datasets.load_dataset(name, config, split=split, streaming=True)
        except Exception as exc:  # the hub client raises many types (network, auth, not found, bad split)
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise NeuronTuiError(f"cannot stream the corpus {spec}: {first_line}") from None
        self.spec = spec
        self.identity = {
            "kind": "hf",
            "description": {"name": name, "config": config, "split": split},
            "content_sha256": hashlib.sha256(spec.encode("utf-8")).hexdigest(),
            "content_hashed": False,
            "note": "streamed from the Hugging Face hub: content_sha256 hashes the spec, not the content",
        }

    def documents(self) -> Iterator[str]:
        for row in self._rows:
            text = row.get("text")
            if not isinstance(text, str):
                raise UsageError(f'corpus {self.spec} has no string field "text" (fields: {", ".join(row)})')
            if _is_text(text):
                yield text

    def document(self, index: int) -> str:
        raise TypeError(f"corpus {self.spec} is streamed: read it with documents()")
