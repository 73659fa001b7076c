"""`hf:` corpora for real, offline: local datasets made here (JSON lines and parquet) read through the
same `datasets.load_dataset(..., streaming=True)` call a hub dataset goes through; filters, text fields,
mixes and the named `paper` mix; determinism with --seed, resume after an interrupt, the identity in
the run key."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("datasets", reason="the hf: corpus path needs the datasets library ([test] installs it)")

from tiny import WORDS, interrupt_forward_at  # noqa: E402

from neuron_tui.cache import Summary  # noqa: E402
from neuron_tui.core.corpus import NAMED, PAPER_MIX, load_corpus, parse_mix  # noqa: E402
from neuron_tui.core.errors import NeuronTuiError, UsageError  # noqa: E402
from neuron_tui.tui.cli import main  # noqa: E402

SETS = ("Wikipedia (en)", "DM Mathematics", "HackerNews")


@pytest.fixture(scope="module")
def pile(tmp_path_factory):
    """A Pile-shaped dataset folder: rows {text, meta: {pile_set_name}} in two JSON-lines splits."""
    folder = tmp_path_factory.mktemp("pile")
    rng = np.random.default_rng(0)
    for split, n in (("validation", 90), ("test", 30)):
        with open(folder / f"{split}.jsonl", "w") as f:
            for i in range(n):
                name = SETS[i % 3]
                words = " ".join(rng.choice(WORDS, 40))
                f.write(json.dumps({"text": f"{split} {i} {words}", "meta": {"pile_set_name": name}}) + "\n")
    return folder


@pytest.fixture(scope="module")
def posts(tmp_path_factory):
    """A Reddit-shaped parquet dataset: title and body fields, no `text`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("posts") / "data"
    folder.mkdir()
    rows = {"title": [f"title {i}" for i in range(40)], "body": [f"body {i} " + " ".join(WORDS[i:i + 30]) for i in range(40)]}
    pq.write_table(pa.table(rows), folder / "train-00000-of-00001.parquet")
    return folder.parent


def test_a_filter_keeps_the_rows_of_one_pile_set(pile):
    corpus = load_corpus(f"hf:{pile}::validation?pile_set_name=DM Mathematics")
    docs = list(corpus.documents())
    assert len(docs) == 30 and all(int(d.split()[1]) % 3 == 1 for d in docs)
    dotted = load_corpus(f"hf:{pile}::validation?meta.pile_set_name=DM Mathematics")
    assert list(dotted.documents()) == docs
    assert corpus.identity["description"]["filters"] == {"pile_set_name": "DM Mathematics"}


def test_splits_are_read_one_after_the_other(pile):
    docs = list(load_corpus(f"hf:{pile}::validation+test?pile_set_name=HackerNews").documents())
    assert [d.split()[0] for d in docs] == ["validation"] * 30 + ["test"] * 10


def test_text_fields_are_named_and_joined(posts):
    docs = list(load_corpus(f"hf:{posts}::train?text=title+body").documents())
    assert len(docs) == 40 and docs[3].startswith("title 3\n\nbody 3 ")
    with pytest.raises(UsageError, match='no string field "text"'):
        list(load_corpus(f"hf:{posts}::train").documents())
    with pytest.raises(UsageError, match="is not FIELD=VALUE"):
        load_corpus(f"hf:{posts}::train?title")


def test_a_missing_dataset_is_one_line(tmp_path):
    with pytest.raises(NeuronTuiError, match="cannot stream the corpus"):
        load_corpus(f"hf:{tmp_path / 'nothing'}::train")


def test_a_mix_interleaves_by_weight_and_outlives_its_shortest_part(pile, posts):
    wiki = f"hf:{pile}::validation?pile_set_name=Wikipedia (en)"
    reddit = f"hf:{posts}::train?text=title+body"
    mix = load_corpus(f"mix:{wiki}@2|{reddit}")
    docs = list(mix.documents())
    kinds = ["post" if d.startswith("title") else "wiki" for d in docs]
    assert kinds[:6] == ["wiki", "post", "wiki", "wiki", "post", "wiki"]  # two of one for each of the other
    assert kinds.count("wiki") == 30 and kinds.count("post") == 40 and kinds[-10:] == ["post"] * 10
    assert [c["weight"] for c in mix.identity["description"]["components"]] == [2.0, 1.0]
    assert parse_mix("mix:a@2|b") == [("a", 2.0), ("b", 1.0)]


def test_the_paper_mix_is_a_documented_table_of_public_datasets():
    assert NAMED["paper"] == "mix:" + "|".join(spec for spec, _ in PAPER_MIX)
    assert [what for _, what in PAPER_MIX] == ["Pile Wikipedia (en)", "Pile DM Mathematics", "Pile HackerNews",
                                               "Reddit posts (Pushshift)", "CodeParrot Python code"]
    assert all(spec.startswith("hf:") for spec, _ in PAPER_MIX)


def collect(pile, model_dir, out, *extra):
    spec = f"hf:{pile}::validation+test?pile_set_name=Wikipedia (en)"
    return main(["collect", str(model_dir), "--corpus", spec, "--corpus", f"hf:{pile}::validation?pile_set_name=HackerNews",
                 "--tokens", str(16 * 24), "--seq-len", "24", "--batch-size", "2", "--out", str(out), "--quiet", *extra])


def test_collecting_a_mix_is_deterministic_resumable_and_keyed(pile, model_dir, tmp_path, monkeypatch, capsys):
    assert collect(pile, model_dir, tmp_path / "a.h5") == 0
    assert collect(pile, model_dir, tmp_path / "b.h5") == 0
    assert collect(pile, model_dir, tmp_path / "c.h5", "--seed", "1") == 0
    with Summary.open(tmp_path / "a.h5") as a, Summary.open(tmp_path / "b.h5") as b, Summary.open(tmp_path / "c.h5") as c:
        np.testing.assert_array_equal(a.read("tokens"), b.read("tokens"))  # the same seed, the same stream
        assert not np.array_equal(a.read("tokens"), c.read("tokens"))
        assert a.attrs["key"] == b.attrs["key"] != c.attrs["key"]
        assert a.corpus["kind"] == "mix" and len(a.corpus["description"]["components"]) == 2
        expected = {name: a.read(name) for name in ("tokens", "act_count", "pos_count", "event_pos")}
        key = a.attrs["key"]
    other = tmp_path / "d.h5"  # another filter: another corpus identity, another key
    assert main(["collect", str(model_dir), "--corpus", f"hf:{pile}::validation?pile_set_name=DM Mathematics",
                 "--tokens", str(16 * 24), "--seq-len", "24", "--out", str(other), "--quiet"]) == 0
    with Summary.open(other) as d:
        assert d.attrs["key"] != key and d.corpus["description"]["filters"] == {"pile_set_name": "DM Mathematics"}

    interrupt_forward_at(monkeypatch, 6)  # calls 1-4 calibrate (8 sequences, batches of 2), 5 counts, 6 stops
    resumed = tmp_path / "r.h5"
    assert collect(pile, model_dir, resumed, "--checkpoint-seconds", "0") == 1
    assert "resume" in capsys.readouterr().err
    monkeypatch.undo()
    assert collect(pile, model_dir, resumed) == 0
    with Summary.open(resumed) as r:
        for name, value in expected.items():
            np.testing.assert_array_equal(r.read(name), value, err_msg=name)


def test_a_corpus_that_runs_out_says_so(pile, model_dir, tmp_path, capsys):
    out = tmp_path / "short.h5"
    code = main(["collect", str(model_dir), "--corpus", f"hf:{pile}::test?pile_set_name=HackerNews", "--tokens",
                 str(400 * 24), "--seq-len", "24", "--out", str(out)])
    assert code == 0 and "the corpus ran out after" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["report", str(out), "--json"]) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert any(note.startswith("the corpus ran out after") for note in notes)
