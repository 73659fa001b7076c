"""Corpus specs: which documents a collection reads, in which order, and how the summary names them.

A summary is keyed by its corpus identity (it records what is needed to reproduce it and nothing
machine-specific; docs/design.md), so every corpus has, besides its documents:
- `identity`: the source kind, a description without absolute paths (file names relative to the folder or
  glob root), the number of documents and a SHA-256 over the documents themselves. The same files in
  another folder or on another machine give the same identity; one changed byte gives another.
- a fixed document order, so that packing (core.model.packing) produces the same sequences on every run.

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

    def ordered(self, seed: int) -> Iterator[str]:
        """The documents in the order fixed by `seed`, the same on every run.

        A local corpus is fully permuted (document i goes to the place of its rank). A streamed corpus
        goes through a buffer of SHUFFLE_BUFFER_DOCUMENTS: once full, each arriving document takes the
        slot its rank picks and pushes out the document there; what remains at the end leaves in rank
        order. The ranks come from a keyed hash of (seed, document number), not from numpy's or
        Python's random generators, whose streams are not promised to stay the same across versions.
        """
        if self.n_documents is not None:
            for index in sorted(range(self.n_documents), key=lambda i: _rank(seed, i)):
                yield self.document(index)
            return
        buffer: list[tuple[int, str]] = []
        for index, text in enumerate(self.documents()):
            if len(buffer) < SHUFFLE_BUFFER_DOCUMENTS:
                buffer.append((index, text))
                continue
            slot = _rank(seed, index) % SHUFFLE_BUFFER_DOCUMENTS
            yield buffer[slot][1]
            buffer[slot] = (index, text)
        for _, text in sorted(buffer, key=lambda entry: _rank(seed, entry[0])):
            yield text


SHUFFLE_BUFFER_DOCUMENTS = 10_000
"""Documents held back to shuffle a streamed corpus (hf:), which cannot be read in any order. At a few
kilobytes per web document this is tens of megabytes (per streamed component of a mix)."""


def _rank(seed: int, index: int) -> int:
    """A pseudo-random 64-bit number for document `index`, fixed by `seed` forever (blake2b)."""
    digest = hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def load_corpus(spec: str) -> Corpus:
    """The corpus named by `spec`, checked to exist and to hold some text.

    Specs: `builtin` (see core.builtin_corpus); a `.jsonl` file (one document per line, field `text`);
    any other file, read as one UTF-8 text document; a folder (its .txt and .jsonl files, recursively,
    sorted by relative path); a glob pattern (the files it matches, sorted); `hf:NAME[:CONFIG][:SPLIT]`
    (a Hugging Face dataset, streamed; split `train` by default, `hf:NAME::SPLIT` names a split alone;
    `?FIELD=VALUE&text=FIELD` filters rows and names the text, see _HubCorpus); `mix:A@2|B` (several
    corpora interleaved by weight, _MixCorpus); `paper` (the mix PAPER_MIX).
    A missing path, a glob matching no file and a corpus without any non-empty document are usage errors.
    """
    if spec in NAMED:
        return _MixCorpus(spec, parse_mix(NAMED[spec]), name=spec)
    if spec.startswith("mix:"):
        return _MixCorpus(spec, parse_mix(spec))
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
    if spec in NAMED:
        return corpus_fingerprint(NAMED[spec])
    if spec.startswith("mix:"):
        return json.dumps([[corpus_fingerprint(part), weight] for part, weight in parse_mix(spec)])
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
    loaded. Spec: `hf:NAME[:CONFIG][:SPLIT][?FIELD=VALUE&...&text=FIELD]`: SPLIT may join splits with
    `+` (read one after the other, e.g. `validation+test`); FIELD=VALUE keeps the rows whose field
    equals the value (a dotted path, or a field of a nested record: `pile_set_name=Wikipedia (en)`
    finds `meta.pile_set_name`); `text=FIELD` (or `text=A+B`, joined by a blank line) names the text.
    NAME may be a local folder of parquet or JSON files: `load_dataset` reads it the same way."""

    n_documents = None

    def __init__(self, spec: str) -> None:
        body, _, query = spec[len("hf:"):].partition("?")
        parts = body.split(":")
        if not parts[0] or len(parts) > 3:
            raise UsageError(f"bad corpus spec {spec}: expected hf:NAME[:CONFIG][:SPLIT][?FIELD=VALUE&text=FIELD]")
        name, config, split = parts + [""] * (3 - len(parts))
        config, split = config or None, split or "train"
        self.filters: dict[str, str] = {}
        self.text_fields = ["text"]
        for item in filter(None, query.split("&")):
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise UsageError(f"bad corpus spec {spec}: {item!r} is not FIELD=VALUE")
            if key == "text":
                self.text_fields = value.split("+")
            else:
                self.filters[key] = value
        try:
            import datasets
        except ImportError:
            raise NeuronTuiError(f"the corpus {spec} needs the datasets library: pip install datasets") from None
        try:
            self._splits = [datasets.load_dataset(name, config, split=part, streaming=True) for part in split.split("+")]
        except Exception as exc:  # the hub client raises many types (network, auth, not found, bad split)
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise NeuronTuiError(f"cannot stream the corpus {spec}: {first_line}") from None
        self.spec = spec
        self.identity = {
            "kind": "hf",
            "description": {"name": name, "config": config, "split": split, "filters": self.filters,
                            "text": self.text_fields},
            "content_sha256": hashlib.sha256(spec.encode("utf-8")).hexdigest(),
            "content_hashed": False,
            "note": "streamed with datasets: content_sha256 hashes the spec, not the content",
        }

    def documents(self) -> Iterator[str]:
        for rows in self._splits:
            for row in rows:
                if all(str(_field(row, key)) == value for key, value in self.filters.items()):
                    text = self._text(row)
                    if _is_text(text):
                        yield text

    def _text(self, row: dict) -> str:
        texts = []
        for name in self.text_fields:
            value = _field(row, name)
            if value is _MISSING or not isinstance(value, str) and value is not None:
                raise UsageError(f'corpus {self.spec} has no string field "{name}" (fields: {", ".join(row)})')
            if value:
                texts.append(value)
        return "\n\n".join(texts)

    def document(self, index: int) -> str:
        raise TypeError(f"corpus {self.spec} is streamed: read it with documents()")


_MISSING = object()


def _field(row: dict, name: str):
    """row[name] by a dotted path (`meta.pile_set_name`), else the first nested record that has it."""
    value = row
    for part in name.split("."):
        value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
    if value is not _MISSING:
        return value
    for nested in row.values():
        if isinstance(nested, dict) and name in nested:
            return nested[name]
    return _MISSING


class _MixCorpus(Corpus):
    """Several corpora, their documents interleaved by weight (smooth weighted round robin: a
    component of weight 2 gives two documents for every one of weight 1, spread out), each in its own
    seed-fixed order; a component that runs out leaves the others to go on. Streamed."""

    n_documents = None

    def __init__(self, spec: str, components: list[tuple[str, float]], name: str = "") -> None:
        if not components:
            raise UsageError(f"corpus {spec} mixes nothing")
        self.spec = spec
        self.parts = [(load_corpus(part), weight) for part, weight in components]
        self.weights = [weight for _, weight in components]
        self.identity = {
            "kind": "mix",
            "description": {"name": name, "components": [{"weight": w, **c.identity} for c, w in self.parts]},
            "content_sha256": hashlib.sha256("".join(f"{w} {c.identity['content_sha256']}" for c, w in self.parts)
                                             .encode()).hexdigest(),
            "content_hashed": all(c.identity.get("content_hashed") for c, _ in self.parts),
        }

    def documents(self) -> Iterator[str]:
        return _interleave([c.documents() for c, _ in self.parts], self.weights)

    def ordered(self, seed: int) -> Iterator[str]:
        return _interleave([c.ordered(seed) for c, _ in self.parts], self.weights)

    def document(self, index: int) -> str:
        raise TypeError(f"corpus {self.spec} is streamed: read it with documents()")


def _interleave(streams: list[Iterator[str]], weights: list[float]) -> Iterator[str]:
    """Smooth weighted round robin over `streams`; an exhausted stream drops out."""
    live = dict(enumerate(streams))
    credit = [0.0] * len(streams)
    while live:
        total = sum(weights[i] for i in live)
        for i in live:
            credit[i] += weights[i]
        pick = max(live, key=lambda i: (credit[i], -i))
        credit[pick] -= total
        try:
            yield next(live[pick])
        except StopIteration:
            del live[pick]


def parse_mix(spec: str) -> list[tuple[str, float]]:
    """`mix:A@2|B` (or the specs of repeated --corpus flags) -> [(A, 2.0), (B, 1.0)]: `@W` at the end of
    a component sets its weight (a positive number; default 1)."""
    out = []
    for part in filter(None, spec.removeprefix("mix:").split("|")):
        head, at, tail = part.rpartition("@")
        try:
            weight = float(tail) if at else 1.0
        except ValueError:  # an @ that belongs to the spec itself
            head, weight = part, 1.0
        if not weight > 0:
            raise UsageError(f"corpus weight {tail} in {spec!r} must be positive")
        out.append((head if at else part, weight))
    return out


# The corpus `paper`: public, ungated datasets that approximate the paper's data (its section 2: parts
# of the Pile's validation and test sets, "including Wikipedia, DM Mathematics, HackerNews", Pushshift
# Reddit, and CodeParrot's code), interleaved one document from each in turn. README lists their
# licences. name: (spec, what it stands for)
PAPER_MIX = (
    ("hf:monology/pile-uncopyrighted::validation+test?pile_set_name=Wikipedia (en)", "Pile Wikipedia (en)"),
    ("hf:monology/pile-uncopyrighted::validation+test?pile_set_name=DM Mathematics", "Pile DM Mathematics"),
    ("hf:monology/pile-uncopyrighted::validation+test?pile_set_name=HackerNews", "Pile HackerNews"),
    ("hf:sentence-transformers/reddit-title-body::train?text=title+body", "Reddit posts (Pushshift)"),
    ("hf:codeparrot/codeparrot-clean-valid::train?text=content", "CodeParrot Python code"),
)
NAMED = {"paper": "mix:" + "|".join(spec for spec, _ in PAPER_MIX)}


