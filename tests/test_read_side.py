"""One read side: the Python API, `neurons`, `report --metric`, one neuron record everywhere, and
the read side and the explorer working with torch unimportable."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from synthetic import tiny_summary
from tiny import make_tokenizer, tiny_opt, write_text_corpus

import neuron_tui
from neuron_tui.cache import Summary, SummaryError
from neuron_tui.core.model.collect import collect
from neuron_tui.core.model.loading import LoadedModel
from neuron_tui.core.model.plan import Settings, make_plan
from neuron_tui.core.read import kinds
from neuron_tui.core.read.queries import TABLE_KEYS
from neuron_tui.core.sources import ModelSource
from neuron_tui.tui.cli import main
from neuron_tui.tui.viewmodel import Explorer


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A summary of a tiny OPT collected here: real collection, analysis and projections."""
    folder = tmp_path_factory.mktemp("read")
    corpus = write_text_corpus(folder / "corpus.jsonl")
    model = tiny_opt()
    settings = Settings(corpus=str(corpus), n_tokens=40 * 24, seq_len=24, batch_size=4, events_cap=12, top_k=3)
    plan = make_plan("tiny-opt", model.config, settings, "cpu", out=folder / "real.h5")
    return collect(LoadedModel(model, make_tokenizer(), ModelSource("tiny-opt", "memory"), ""), plan, quiet=True)


def cli_json(capsys, *args):
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_every_record_behind_the_explorer_is_neuron_json(real, capsys):
    """For every neuron of every layer: the record the explorer's detail shows (and exports) equals
    `neuron --json` field by field."""
    explorer = Explorer.open(real)
    try:
        for layer in range(explorer.info.n_layers):
            for index in range(explorer.info.n_neurons):
                shown = json.loads(json.dumps(explorer.neuron(layer, index)))
                printed = cli_json(capsys, "neuron", real, layer, index, "--json")
                assert set(shown) == set(printed)
                for key in printed:
                    assert shown[key] == printed[key], (layer, index, key)
    finally:
        explorer.close()


def test_occurrences_leave_bos_out_everywhere(real):
    with Summary.open(real) as s:
        tokens = s.read("tokens")
        assert s.bos and (tokens[:, 0] == 1).all()
        np.testing.assert_array_equal(s.token_occ, np.bincount(tokens[:, 1:].ravel(), minlength=len(s.vocab)))
        assert s.token_occ[1] == 0  # BOS occurs only at position 0
    record = neuron_tui.open_summary(real).neuron(0, 0)
    for t in record["triggers"]:
        assert t["occurrences"] == np.bincount(tokens[:, 1:].ravel(), minlength=t["token"] + 1)[t["token"]]


def test_the_python_api(real):
    with neuron_tui.open_summary(real) as s:
        assert isinstance(s, neuron_tui.SummaryFile) and s.model == "tiny-opt" and (s.n_layers, s.n_neurons) == (2, 64)
        layers = s.layers()
        assert [r["layer"] for r in layers] == [0, 1] and layers[0]["neurons"] == 64
        frame = layers.to_pandas()
        assert list(frame["layer"]) == [0, 1] and frame["dead"].tolist() == [r["dead"] for r in layers]
        dead = s.neurons(1, category="dead")
        np.testing.assert_array_equal([r["neuron"] for r in dead], np.flatnonzero(s.array("act_count", 1) == 0))
        by_rate = s.neurons(0, sort="rate", limit=5)
        assert len(by_rate) == 5 and [r["rate"] for r in by_rate] == sorted((r["rate"] for r in by_rate), reverse=True)
        assert by_rate[0]["firings"] == s.array("act_count", 0).max()
        assert set(by_rate[0]) == set(TABLE_KEYS)
        everything = s.neurons()
        assert len(everything) == 128 and [r["layer"] for r in everything] == [0] * 64 + [1] * 64
        assert s.tokens.shape == (40, 24) and len(s.vocab) == tiny_opt().config.vocab_size
        assert s.array("analysis/flags").shape == (2, 64) and s.array("projection/suppressed_tok", 1).shape == (64, 10)
        with pytest.raises(KeyError):
            s.neurons(0, sort="colour")
        with pytest.raises(IndexError):
            s.neuron(2, 0)
    with pytest.raises(SummaryError):
        neuron_tui.open_summary(real.parent / "absent.h5")


def test_the_package_lists_its_names_and_rows_carry_trigger_lists(real):
    """`dir(neuron_tui)` and tab completion list the API (its names load on first use); a row's
    triggers are a list of token texts, the record's first ones."""
    assert {"open_summary", "SummaryFile", "SummaryError", "Rows"} <= set(dir(neuron_tui))
    assert set(neuron_tui.__all__) <= set(dir(neuron_tui)) and "import_module" not in dir(neuron_tui)
    with neuron_tui.open_summary(real) as s:
        row = next(r for r in s.neurons(0) if len(r["triggers"]) > 1)
        assert isinstance(row["triggers"], list) and all(isinstance(t, str) for t in row["triggers"])
        assert row["triggers"] == [t["text"] for t in s.neuron(0, row["neuron"])["triggers"][:3]]


def test_neurons_by_trigger(tmp_path):
    with neuron_tui.open_summary(tiny_summary(tmp_path)) as s:
        table = s.table(1)
        lifted = np.flatnonzero(table.trig_pfire[:, 0] >= 4 * table.rate)  # what a trigger search counts
        word = s.vocab[table.trig_tok[lifted[0], 0]]
        found = s.neurons(1, trigger=word)
        assert int(lifted[0]) in [r["neuron"] for r in found]
        for r in found:  # each has the text among its triggers (the row shows the first three only)
            assert any(word.lower() in t["text"].lower() for t in s.neuron(1, r["neuron"])["triggers"])
        assert s.neurons(1, trigger=word, category="token") == [r for r in found if "token" in r["categories"]]


def test_neurons_command(real, capsys):
    with Summary.open(real) as s:
        flags = s.analysis.read("flags", 1)
        counts = s.read("act_count", 1)
    rows = cli_json(capsys, "neurons", real, "--layer", 1, "--category", "dead", "--json")
    assert [r["neuron"] for r in rows] == np.flatnonzero(kinds.has(flags, "dead")).tolist()
    rows = cli_json(capsys, "neurons", real, "--layer", 1, "--sort", "rate", "--limit", 3, "--json")
    assert [r["firings"] for r in rows] == sorted(counts, reverse=True)[:3]
    rows = cli_json(capsys, "neurons", real, "--layer", 1, "--sort", "rate", "--reverse", "--limit", 3, "--json")
    assert [r["firings"] for r in rows] == sorted(counts)[:3]
    capsys.readouterr()
    assert main(["neurons", str(real), "--layer", "0", "--csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(table) == 64 and list(table[0]) == list(TABLE_KEYS)
    assert main(["neurons", str(real), "--layer", "0"]) == 0
    assert "triggers" in capsys.readouterr().out
    for args, words in ((["--category", "sleepy"], "unknown category 'sleepy'"), (["--sort", "x"], "unknown sort column"),
                        (["--layer", "9"], "no layer 9"), (["--limit", "0"], "--limit 0 is too small")):
        assert main(["neurons", str(real), *args]) == 2
        assert words in capsys.readouterr().err


def test_report_lines_up_any_metric(tmp_path, capsys):
    a, b = tiny_summary(tmp_path, "a.h5"), tiny_summary(tmp_path, "b.h5", n_layers=2)
    capsys.readouterr()
    assert main(["report", str(a), str(b), "--metric", "alive_rate"]) == 0
    out = capsys.readouterr().out
    assert "alive_rate by relative depth" in out
    rows = cli_json(capsys, "report", a, b, "--json")
    assert rows[0]["models"]["synthetic/tiny-opt (a)"]["alive_rate"] > 0
    assert main(["report", str(a), str(b), "--metric", "nonsense"]) == 2
    assert "unknown metric 'nonsense'" in capsys.readouterr().err


TORCHLESS = """
import sys
sys.modules["torch"] = None  # `import torch` now raises ImportError
import asyncio, json
import neuron_tui
from neuron_tui.tui.cli import main
from neuron_tui.tui.app import NeuronApp

path = sys.argv[1]
s = neuron_tui.open_summary(path)
assert s.layers() and s.neurons(0, category="token") is not None and s.neuron(1, 3)["layer"] == 1
for command in (["report", path, "--json"], ["neurons", path, "--layer", "0"], ["neuron", path, "1", "3", "--json"],
                ["analyze", path], ["open", path], ["figures", path, "-o", sys.argv[2]]):
    assert main(command) == 0, command

async def explore():
    app = NeuronApp(path)
    async with app.run_test(size=(80, 24)) as pilot:
        for keys in ((), ("v",), ("v",), ("enter",), ("enter",)):  # the plot view, then a layer, a neuron
            await pilot.press(*keys)
            for _ in range(50):
                await app.workers.wait_for_complete()
                await pilot.pause()
        return app.screen.record

record = asyncio.run(explore())
assert record["layer"] == 0 and record["index"] == 0
assert not any(name == "torch" or name.startswith(("torch.", "transformers")) for name in sys.modules if sys.modules[name])
print("TORCHLESS OK")
"""


def test_the_read_side_and_the_explorer_need_no_torch(tmp_path):
    path = tiny_summary(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", TORCHLESS, str(path), str(tmp_path / "figs")], capture_output=True,
                          text=True, env=env,
                          timeout=300)
    assert done.returncode == 0 and "TORCHLESS OK" in done.stdout, done.stderr[-3000:]


FAST_PATH = """
import sys
from neuron_tui.tui.cli import main
code = main(sys.argv[1:])
print("IMPORTED", sorted(m for m in ("torch", "transformers") if m in sys.modules))
sys.exit(code)
"""


def test_a_second_run_of_a_model_opens_its_summary_without_torch(tmp_path, capsys):
    """`neuron-tui MODEL` finds the summary its request made before from the request index: no model
    config, no corpus hash, no torch (here without a terminal, so it prints the report)."""
    from tiny import save_tiny

    model = save_tiny(tiny_opt(), tmp_path / "tiny-opt")
    corpus = write_text_corpus(tmp_path / "corpus.jsonl")
    args = [str(model), "--corpus", str(corpus), "--tokens", "480", "--seq-len", "24", "--cache-dir", str(tmp_path / "c")]
    assert main(["collect", *args, "--quiet"]) == 0
    path = capsys.readouterr().out.strip()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", FAST_PATH, *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "IMPORTED []" in done.stdout and f"using the existing summary {path}" in done.stderr
    assert "tiny-opt: 480 tokens" in done.stdout  # the report of that summary
    index = json.loads((tmp_path / "c" / "index.json").read_text())
    assert [entry["file"] for entry in index.values()] == [os.path.basename(path)]


def test_datasets_stay_open_so_a_chunk_is_decompressed_once_and_big_chunks_get_room_for_four(tmp_path):
    """HDF5 caches decompressed chunks per open dataset: a dataset opened afresh for every read
    decompresses its chunk again for every neuron. The store keeps each open, with room for four
    chunks where the file's default cache is smaller (and reads the same numbers as h5py)."""
    import h5py

    path = tiny_summary(tmp_path, seq_len=128, n_seq=1024)
    with h5py.File(path, "r") as f:
        chunk_bytes = int(np.prod(f["tokens"].chunks)) * 4
        tokens = f["tokens"][[3, 700]]
        default = f.id.get_access_plist().get_cache()[2]
    with Summary.open(path) as s:
        positions = np.array([3 * 128 + 5, 700 * 128 + 127])
        assert s.tokens_at(positions).tolist() == [tokens[0, 5], tokens[1, 127]]
        kept = s._dataset("tokens")
        assert s._dataset("tokens") is kept  # opened once
        assert kept.id.get_access_plist().get_chunk_cache()[1] == max(default, 4 * chunk_bytes)
        assert s.tokens_at(positions).tolist() == [tokens[0, 5], tokens[1, 127]]
    with h5py.File(path, "r", rdcc_nbytes=chunk_bytes) as f:  # a default smaller than four chunks
        with Summary(path, f, owner=False) as s:
            assert s._dataset("tokens").id.get_access_plist().get_chunk_cache()[1] == 4 * chunk_bytes
