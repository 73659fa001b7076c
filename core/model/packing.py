"""Deterministic packing of a corpus into fixed-length token sequences.

Counts must be exact and reproducible (docs/design.md): a resumed or repeated collection has to see the
very same sequences, so everything here is a pure function of (corpus, tokenizer, seq_len, seed). The
document order comes from a keyed hash of (seed, document number) rather than from numpy's or Python's
random generators, whose streams are not promised to stay the same across versions (Corpus.ordered).

Packing: documents in shuffled order, tokenized without special tokens, joined by the EOS token (when the
tokenizer has one), cut into windows without padding; the tail that does not fill a window is dropped.
Each sequence starts with BOS when the model's tokenizer adds one by default, because that is what the
model saw in training (the paper also excludes BOS from detectors, which relies on it being there).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from neuron_tui.core.corpus import Corpus
from neuron_tui.core.errors import UsageError


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer's default encoding starts with BOS (Llama, Gemma, OPT do; GPT-2 and
    SmolLM2 do not), i.e. whether the model expects every sequence to start with it."""
    bos = tokenizer.bos_token_id
    ids = tokenizer("a")["input_ids"]
    return bos is not None and len(ids) > 0 and ids[0] == bos


def pack_sequences(corpus: Corpus, tokenizer: Any, seq_len: int, seed: int) -> Iterator[np.ndarray]:
    """Int32 arrays of exactly `seq_len` token ids, the same for the same inputs on every run.

    Tokenizes one document at a time, so a corpus of any size streams through. Ends when the corpus is
    exhausted; raises UsageError (when iterated) if the corpus does not fill even one sequence.
    """
    bos = tokenizer.bos_token_id if tokenizer_adds_bos(tokenizer) else None
    text_len = seq_len - (bos is not None)
    if text_len < 1:
        raise UsageError(f"--seq-len {seq_len} leaves no room for text (minimum {seq_len - text_len + 1})")
    return _pack(corpus, tokenizer, text_len, bos, seed)


def _pack(corpus: Corpus, tokenizer: Any, text_len: int, bos: int | None, seed: int) -> Iterator[np.ndarray]:
    eos = tokenizer.eos_token_id
    pending = np.empty(0, np.int32)
    n_tokens = 0
    n_sequences = 0
    for text in corpus.ordered(seed):
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        if not ids:
            continue
        if n_tokens and eos is not None:
            ids = [eos, *ids]
        n_tokens += len(ids)
        pending = np.concatenate((pending, np.asarray(ids, dtype=np.int32)))
        n_full = len(pending) // text_len
        for k in range(n_full):
            window = pending[k * text_len : (k + 1) * text_len]
            yield window.copy() if bos is None else np.concatenate((np.array([bos], np.int32), window))
        pending = pending[n_full * text_len :]
        n_sequences += n_full
    if not n_sequences:
        raise UsageError(
            f"corpus {corpus.spec} holds {n_tokens} tokens, fewer than one sequence of {text_len} text tokens"
        )
