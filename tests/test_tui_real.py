"""The explorer on a summary of a tiny real OPT model, collected and analysed in the test."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from edit import raw_vocab
from pilot import press, screen_text, settle, type_text
from test_tui import assert_view, flat_text, open_layer
from tiny import make_tokenizer, tiny_opt, write_text_corpus

from neuron_tui.core.model.collect import collect
from neuron_tui.core.model.loading import LoadedModel
from neuron_tui.core.model.plan import Settings, make_plan
from neuron_tui.core.read.tokens import visible
from neuron_tui.core.sources import ModelSource
from neuron_tui.tui.app import NeuronApp
from neuron_tui.tui.screens.layer import LayerScreen
from neuron_tui.tui.screens.neuron import NeuronScreen
from neuron_tui.tui.viewmodel import Explorer, ViewState

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    folder = tmp_path_factory.mktemp("real")
    corpus = write_text_corpus(folder / "corpus.jsonl")
    model = tiny_opt()
    settings = Settings(corpus=str(corpus), n_tokens=40 * 24, seq_len=24, batch_size=4, events_cap=12, top_k=3)
    plan = make_plan("tiny-opt", model.config, settings, "cpu", cache_dir=folder / "cache")
    return collect(LoadedModel(model, make_tokenizer(), ModelSource("tiny-opt", "memory"), ""), plan, quiet=True)


def test_real_summary_view_models(real):
    with h5py.File(real, "r") as f:
        counts, flags = f["act_count"][()], f["analysis/flags"][()]
        trig = f["analysis/trig_tok"][()]
        vocab = raw_vocab(f)
    ex = Explorer.open(real)
    try:
        assert ex.info.has_analysis and ex.info.has_projection and ex.info.complete
        assert ex.info.corpus.startswith("files corpus.jsonl")
        rows = ex.overview()
        assert [r["dead"] for r in rows] == [int((c == 0).sum()) for c in counts]
        view = ex.view(1, ViewState(sort="rate", descending=True))
        assert int(view.order[0]) == int(np.argmax(counts[1]))
        top = ex.neuron(1, int(view.order[0]))
        assert top["triggers"] and top["triggers"][0]["text"] == vocab[trig[1, view.order[0], 0]]
        assert len(top["promoted"]) > 0 and len(top["contexts"]) > 0
        assert sum(np.array(top["position_rate"]) * 40) == pytest.approx(top["act_count"])
        for layer in range(2):
            assert len(ex.view(layer, ViewState(filter="dead"))) == int((flags[layer] & 1 > 0).sum())
    finally:
        ex.close()


async def test_real_summary_in_the_app(real):
    app = NeuronApp(real)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "tiny-opt (opt)" in text and "960 (40 × 24)" in text and "2 × 64 neurons" in text
        await open_layer(pilot, 1)
        await press(pilot, "3")
        assert_view(app, 1, sort="rate", descending=True)
        neuron = app.screen.table.neuron
        await press(pilot, "enter")
        assert isinstance(app.screen, NeuronScreen)
        d = app.screen.record
        assert f"L1 N{neuron}" in screen_text(app) and "Top triggers" in screen_text(app)
        assert visible(d["triggers"][0]["text"]) in screen_text(app)
        await press(pilot, "escape")
        assert isinstance(app.screen, LayerScreen)
        word = d["triggers"][0]["text"].strip()
        await press(pilot, "slash")
        await type_text(pilot, word)
        assert_view(app, 1, query=word)
        assert f"search {word!r}" in flat_text(app)
        with h5py.File(real, "r") as f:
            trig = f["analysis/trig_tok"][1]
            vocab = raw_vocab(f)
        for n in app.screen.view.order.tolist():
            assert any(word in vocab[t].lower() for t in trig[n] if t >= 0)
