"""Corpus specs, their identity, the builtin corpus and deterministic packing (no download needed).

Documents are made of words that name their document and position (`d3_w7`), so a packed sequence can be
read back exactly: which documents, in which order, cut where, with which separators.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from neuron_tui.core import corpus as corpus_mod
from neuron_tui.core.builtin_corpus import BUILTIN_SOURCES, builtin_documents
from neuron_tui.core.corpus import Corpus, load_corpus
from neuron_tui.core.errors import NeuronTuiError, UsageError
from neuron_tui.core.model.packing import pack_sequences, tokenizer_adds_bos

BOS, EOS = "<s>", "</s>"


def make_doc(k: int, n_words: int) -> str:
    return " ".join(f"d{k}_w{j}" for j in range(n_words))


DOCS = [make_doc(k, 3 + (7 * k) % 11) for k in range(20)]


def make_tokenizer(texts: list[str], bos: bool = True, eos: bool = True) -> PreTrainedTokenizerFast:
    """A word-level tokenizer trained on `texts`; with `bos`, it prepends BOS by default as Llama's does."""
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["[UNK]", BOS, EOS]))
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", bos_token=BOS if bos else None, eos_token=EOS if eos else None
    )


def write_jsonl(path, texts) -> None:
    path.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")


@pytest.fixture
def docs_corpus(tmp_path) -> Corpus:
    write_jsonl(tmp_path / "docs.jsonl", DOCS)
    return load_corpus(str(tmp_path / "docs.jsonl"))


# --- builtin ---------------------------------------------------------------------------------------


def test_builtin_is_large_real_prose_and_deterministic():
    docs = builtin_documents()
    ids = [doc_id for doc_id, _ in docs]
    assert len(set(ids)) == len(ids)
    assert sum(len(text.split()) for _, text in docs) > 250_000
    assert all(text.strip() for _, text in docs)
    assert {doc_id.split("/")[0] for doc_id in ids} == {source.id_prefix for source in BUILTIN_SOURCES}
    assert ids[0] == "kjv/Genesis 1"
    assert docs[0][1].startswith("In the beginning God created the heaven and the earth.")
    assert "kjv/Revelation 22" in ids and "pydoc-topics/assert" in ids and "stdlib-docstrings/argparse" in ids
    assert builtin_documents() == docs
    assert load_corpus("builtin").identity == load_corpus("builtin").identity


def test_builtin_sources_name_their_licences():
    licences = {source.id_prefix: source.licence for source in BUILTIN_SOURCES}
    assert "public domain" in licences["kjv"]
    assert all("Python Software Foundation" in licences[p] for p in ("pydoc-topics", "stdlib-docstrings"))


# --- specs -----------------------------------------------------------------------------------------


def test_txt_file_is_one_document_named_by_basename(tmp_path):
    (tmp_path / "a.txt").write_text("first line\r\nsecond line\n", encoding="utf-8")
    corpus = load_corpus(str(tmp_path / "a.txt"))
    assert list(corpus.documents()) == ["first line\nsecond line\n"]
    assert corpus.identity["description"] == {"files": ["a.txt"]}
    assert corpus.identity["n_documents"] == 1
    json.dumps(corpus.identity)


def test_jsonl_reads_text_field_and_skips_blank_documents(tmp_path):
    path = tmp_path / "c.jsonl"
    write_jsonl(path, ["one", "   ", "two", ""])
    with path.open("a", encoding="utf-8") as f:
        f.write("\n" + json.dumps({"text": "three"}) + "\n")
    corpus = load_corpus(str(path))
    assert list(corpus.documents()) == ["one", "two", "three"]
    assert [corpus.document(i) for i in range(corpus.n_documents)] == ["one", "two", "three"]


def test_folder_reads_txt_and_jsonl_recursively_in_path_order(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("see", encoding="utf-8")
    (tmp_path / "b.txt").write_text("bee", encoding="utf-8")
    write_jsonl(tmp_path / "a.jsonl", ["a1", "a2"])
    (tmp_path / "notes.md").write_text("not corpus", encoding="utf-8")
    corpus = load_corpus(str(tmp_path))
    assert list(corpus.documents()) == ["a1", "a2", "bee", "see"]
    assert corpus.identity["description"] == {"files": ["a.jsonl", "b.txt", "sub/c.txt"]}
    assert [corpus.document(i) for i in range(4)] == ["a1", "a2", "bee", "see"]


def test_glob_takes_matching_files_sorted(tmp_path):
    (tmp_path / "sub").mkdir()
    for name, text in [("z.txt", "zed"), ("m.txt", "em"), ("sub/q.txt", "queue"), ("x.md", "ex")]:
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert list(load_corpus(str(tmp_path / "*.txt")).documents()) == ["em", "zed"]
    recursive = load_corpus(str(tmp_path / "**" / "*.txt"))
    assert list(recursive.documents()) == ["em", "queue", "zed"]
    assert recursive.identity["description"] == {"files": ["m.txt", "sub/q.txt", "z.txt"]}


def test_identity_follows_content_not_location(tmp_path):
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        write_jsonl(tmp_path / folder / "docs.jsonl", ["ab", "c"])
    first = load_corpus(str(tmp_path / "one")).identity
    assert load_corpus(str(tmp_path / "two")).identity == first
    assert str(tmp_path) not in json.dumps(first)

    write_jsonl(tmp_path / "two" / "docs.jsonl", ["ab", "d"])
    assert load_corpus(str(tmp_path / "two")).identity["content_sha256"] != first["content_sha256"]
    write_jsonl(tmp_path / "two" / "docs.jsonl", ["a", "bc"])  # same bytes, another boundary
    assert load_corpus(str(tmp_path / "two")).identity["content_sha256"] != first["content_sha256"]


# --- errors ----------------------------------------------------------------------------------------


def test_missing_path_is_a_usage_error_naming_it(tmp_path):
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(UsageError, match="nope.txt") as err:
        load_corpus(missing)
    assert err.value.exit_code == 2
    with pytest.raises(UsageError, match="matches no file"):
        load_corpus(str(tmp_path / "*.jsonl"))


@pytest.mark.parametrize(
    "files",
    [{"empty.txt": ""}, {"blank.txt": " \n\t\n", "e.jsonl": '{"text": ""}\n\n'}, {"readme.md": "text"}],
)
def test_corpus_without_text_is_a_usage_error(tmp_path, files):
    for name, content in files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(UsageError, match=re.escape(str(tmp_path))):
        load_corpus(str(tmp_path))


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n', encoding="utf-8")
    with pytest.raises(UsageError, match="bad.jsonl:2"):
        load_corpus(str(tmp_path / "bad.jsonl"))


def test_hf_spec_without_datasets_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(NeuronTuiError, match="pip install datasets"):
        load_corpus("hf:NeelNanda/pile-10k")
    with pytest.raises(UsageError, match="hf:NAME"):
        load_corpus("hf:")


# --- packing ---------------------------------------------------------------------------------------


def unpack(tok, sequences: list[np.ndarray], bos: bool) -> list[str]:
    """The token stream the windows were cut from (BOS removed), as token strings."""
    stream = []
    for seq in sequences:
        tokens = tok.convert_ids_to_tokens(seq.tolist())
        assert (tokens[0] == BOS) == bos
        stream += tokens[1:] if bos else tokens
    assert BOS not in stream
    return stream


def doc_order(stream: list[str]) -> list[int]:
    """Document numbers in stream order, one per document, checking each document's words are complete
    and in order and that documents change only across an EOS."""
    order, expected = [], None
    for token in stream:
        if token == EOS:
            assert expected is None or expected == len(DOCS[order[-1]].split()), "EOS inside a document"
            expected = None
            continue
        k, j = (int(part[1:]) for part in token.split("_"))
        if expected is None:
            assert j == 0, "document does not start at its first word"
            order.append(k)
        else:
            assert k == order[-1] and j == expected, "documents joined without EOS or words out of order"
        expected = j + 1
    return order


@pytest.mark.parametrize("bos", [True, False])
def test_packing_exact_windows_bos_and_eos_between_documents(docs_corpus, bos):
    tok = make_tokenizer(DOCS, bos=bos)
    assert tokenizer_adds_bos(tok) == bos
    seq_len = 16
    sequences = list(pack_sequences(docs_corpus, tok, seq_len=seq_len, seed=0))
    assert all(s.dtype == np.int32 and s.shape == (seq_len,) for s in sequences)
    stream = unpack(tok, sequences, bos)
    text_len = seq_len - bos
    total = sum(len(d.split()) for d in DOCS) + len(DOCS) - 1  # words + one EOS between each pair
    assert len(stream) == total // text_len * text_len  # only the incomplete tail is dropped
    order = doc_order(stream)
    assert len(order) == len(set(order)) and len(order) >= len(DOCS) - 1
    assert order != sorted(order)  # shuffled
    assert stream[0] != EOS


def test_packing_without_eos_concatenates_documents(docs_corpus):
    tok = make_tokenizer(DOCS, bos=False, eos=False)
    stream = unpack(tok, list(pack_sequences(docs_corpus, tok, seq_len=1, seed=3)), bos=False)
    assert EOS not in stream
    assert sorted(stream) == sorted(w for d in DOCS for w in d.split())


def test_packing_is_deterministic_and_seeded(tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", DOCS)
    tok = make_tokenizer(DOCS)

    def run(seed):
        return list(pack_sequences(load_corpus(str(tmp_path / "docs.jsonl")), tok, seq_len=8, seed=seed))

    first = run(7)
    again = run(7)
    assert len(first) == len(again) and all(np.array_equal(a, b) for a, b in zip(first, again))
    orders = {tuple(doc_order(unpack(tok, run(seed), bos=True))) for seed in (7, 8, 9)}
    assert len(orders) == 3


class StreamedCorpus(Corpus):
    """Stands in for a hub dataset: no length, no random access."""

    n_documents = None

    def __init__(self, texts):
        self.spec = "streamed-test"
        self.identity = {}
        self._texts = texts

    def documents(self) -> Iterator[str]:
        return iter(self._texts)

    def document(self, index: int) -> str:
        raise TypeError("streamed")


def test_streamed_corpus_shuffles_within_a_bounded_buffer(monkeypatch):
    monkeypatch.setattr(corpus_mod, "SHUFFLE_BUFFER_DOCUMENTS", 4)
    tok = make_tokenizer(DOCS)

    def order(seed):
        sequences = list(pack_sequences(StreamedCorpus(DOCS), tok, seq_len=2, seed=seed))
        return doc_order(unpack(tok, sequences, bos=True))

    first = order(1)
    assert sorted(first) == list(range(len(DOCS)))  # seq_len 2 keeps every token: nothing lost
    assert first == order(1) and first != order(2) and first != sorted(first)
    # a document cannot leave before the buffer of 4 in front of it has filled
    assert all(position >= k - 4 for position, k in enumerate(first))


def test_packing_errors(tmp_path, docs_corpus):
    tok = make_tokenizer(DOCS)
    with pytest.raises(UsageError, match="seq-len"):
        pack_sequences(docs_corpus, tok, seq_len=1, seed=0)
    (tmp_path / "short.txt").write_text("d0_w0 d0_w1", encoding="utf-8")
    with pytest.raises(UsageError, match="fewer than one sequence"):
        list(pack_sequences(load_corpus(str(tmp_path / "short.txt")), tok, seq_len=8, seed=0))
