"""How a token's text is shown: one rule for the explorer, the command line, exports and the API.

A summary stores each token's decoded text (`vocab`, control characters escaped at collection). For
display, leading and trailing spaces become ␣ (a token " of" is not "of"), newlines ⏎, tabs ⇥, carriage
returns ␍, and the empty string ∅; ids outside the vocabulary read as <id>, and -1 (the position
before a sequence's start, in n-gram contexts) as ⟨start⟩. JSON and CSV carry the raw text.
"""

from __future__ import annotations

import numpy as np

START = "⟨start⟩"


def token_text(vocab: list[str], token: int) -> str:
    """The raw text of token id `token` (⟨start⟩ for -1, <id> outside the vocabulary)."""
    if token == -1:
        return START
    return vocab[token] if 0 <= token < len(vocab) else f"<{token}>"


def visible(text: str) -> str:
    """A token's text made visible in one run of cells: spaces at the ends as ␣, newlines as ⏎,
    tabs as ⇥, carriage returns as ␍, the empty text as ∅."""
    if text == "":
        return "∅"
    core = text.strip(" ")
    lead = len(text) - len(text.lstrip(" "))
    trail = len(text) - len(text.rstrip(" ")) if core else 0
    out = "␣" * lead + core + "␣" * trail
    return out.replace("\n", "⏎").replace("\t", "⇥").replace("\r", "␍")


def inline(text: str) -> str:
    """Running text (a context) on one line: newlines and tabs as visible symbols, inner spaces kept."""
    return text.replace("\n", "⏎").replace("\t", "⇥").replace("\r", "")


def visible_vocab(vocab: list[str]) -> np.ndarray:
    """[V + 1] object array of `visible` texts with "" last, so that id -1 (padding) reads as ""."""
    out = np.empty(len(vocab) + 1, dtype=object)
    out[:-1] = [visible(t) for t in vocab]
    out[-1] = ""
    return out
