"""Merging shards: the union of disjoint shards must be the summary of one uninterrupted run, exactly."""

import json

import h5py
import numpy as np
import pytest
import torch
from edit import rewritten
from test_pass_statistics import without_schema_3_statistics
from tiny import save_tiny, tiny_llama, tiny_opt, write_text_corpus

from neuron_tui.cache import Summary, SummaryWriter
from neuron_tui.core.model.accumulators import LayerAccumulator
from neuron_tui.core.model.batches import BatchIndex
from neuron_tui.core.model.histograms import histogram_edges
from neuron_tui.core.model.merge import merge_layer
from neuron_tui.core.read import kinds
from neuron_tui.core.read.sampling import MAX_LEVEL, token_levels
from neuron_tui.tui.cli import main

S, T, F, CAP, K = 60, 16, 40, 8, 4


def accumulate(h: np.ndarray, up: np.ndarray, seqs: np.ndarray, tau: float):
    """LayerState of the sequences `seqs` of a gated h [S, T, F] (and its up), fed 5 at a time at their
    global positions, counted into the histogram bins of tau and h's largest value."""
    edges = histogram_edges(tau, float(np.abs(h).max()), "abs")
    acc = LayerAccumulator(F, T, CAP, K, torch.device("cpu"), "abs", tau, edges, gated=True)
    for lo in range(0, len(seqs), 5):
        batch = seqs[lo : lo + 5]
        acc.update(torch.as_tensor(h[batch]), BatchIndex(batch[:, None] * T + np.arange(T), torch.device("cpu")),
                   torch.as_tensor(up[batch]))
    return acc.state()


def test_merge_layer_equals_one_run_and_the_level_rule():
    """Three interleaved shards (i % 3) merged equal the single run, and the events are what the level
    rule says for the whole corpus. Neuron scales spread the firing rates from ~0 to ~60%, so some
    neurons keep every event (level 0) and others are sampled, at a level above every shard's own."""
    rng = np.random.default_rng(0)
    scale = np.geomspace(0.3, 3.0, F).astype(np.float32)
    h = (rng.standard_normal((S, T, F)).astype(np.float32) * scale)
    up = rng.standard_normal((S, T, F)).astype(np.float32)  # the sign cases follow the signs of h and up
    tau = 1.5
    whole = accumulate(h, up, np.arange(S), tau)
    shards = [accumulate(h, up, np.arange(k, S, 3), tau) for k in range(3)]
    merged = merge_layer(shards, CAP)

    fired = (np.abs(h) > tau).reshape(S * T, F)
    np.testing.assert_array_equal(merged.act_count, fired.sum(0))
    np.testing.assert_array_equal(merged.act_count, whole.act_count)
    np.testing.assert_array_equal(merged.pos_count, whole.pos_count)
    np.testing.assert_allclose(merged.act_sum, whole.act_sum, rtol=1e-5, atol=1e-6)  # float32 partial sums of differently composed batches
    np.testing.assert_array_equal(merged.act_count_pos, ((h > tau).reshape(S * T, F)).sum(0))
    np.testing.assert_allclose(merged.act_sum_pos, whole.act_sum_pos, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(merged.act_max, whole.act_max)
    np.testing.assert_array_equal(merged.top_val, whole.top_val)  # continuous values: no ties
    np.testing.assert_array_equal(merged.top_pos, whole.top_pos)
    np.testing.assert_array_equal(merged.ctx_val, whole.ctx_val)  # each window moved with its context
    np.testing.assert_allclose(merged.h_sum, h.sum((0, 1), dtype=np.float64), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(merged.hist_count, whole.hist_count)
    np.testing.assert_array_equal(merged.hist_count.sum(0), merged.act_count)
    for name in ("sign_count", "sign_top_val", "sign_top_pos"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name), err_msg=name)
    busy = merged.act_count > 100
    assert busy.sum() > 10 and (merged.sign_count[:, busy] > 0).all()  # every case among the busy neurons
    np.testing.assert_array_equal(merged.sign_top_pos >= 0, merged.sign_count > 0)
    np.testing.assert_array_equal(merged.level, whole.level)
    g, z = np.arange(S * T), token_levels(np.arange(S * T))
    for i in range(F):
        fg = g[fired[:, i]]
        level = next(L for L in range(MAX_LEVEL) if (z[fg] >= L).sum() <= CAP)
        assert merged.level[i] == level
        np.testing.assert_array_equal(merged.events[i], fg[z[fg] >= level])
        np.testing.assert_array_equal(merged.events[i], whole.events[i])
    shard_max = np.max([st.level for st in shards], axis=0)
    assert (merged.level == 0).any() and (merged.level > shard_max).any()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny OPT collected whole and as shards 0/2 and 1/2 (this one in batches of 3, not 4: counts do
    not depend on the batch size, so shards from different machines merge), from the command line."""
    tmp = tmp_path_factory.mktemp("merge")
    model = save_tiny(tiny_opt(), tmp / "tiny-opt")
    corpus = write_text_corpus(tmp / "corpus.jsonl", n_docs=60)
    base = ["collect", model, "--corpus", corpus, "--tokens", 960, "--seq-len", 24, "--batch-size", 4,
            "--events", 12, "--quiet"]
    paths = {"whole": tmp / "whole.h5", "s0": tmp / "s0.h5", "s1": tmp / "s1.h5"}
    for name, extra in (("whole", []), ("s0", ["--shard", "0/2"]), ("s1", ["--shard", "1/2", "--batch-size", "3"])):
        assert main([str(a) for a in [*base, *extra, "--out", paths[name]]]) == 0
    return {"tmp": tmp, "model": model, "corpus": corpus, "base": base, **paths}


def root_datasets(path) -> dict:
    with h5py.File(path, "r") as f:
        return {name: f[name][()] for name in f if isinstance(f[name], h5py.Dataset)}


def assert_same_top(top_val, top_pos_a, top_pos_b, ctx_a, ctx_b):
    """top_pos equal up to the order of equal values, and the choice among values tied with the K-th
    (equal values come from identical contexts, e.g. the same token right after BOS in two sequences),
    and each of those contexts with the same window of h (ctx_val)."""
    above = top_val > top_val[:, -1:, :]

    def by_position(pos, ctx):
        order = np.argsort(np.where(above, pos, -2), axis=1, kind="stable")
        kept = np.take_along_axis(above, order, axis=1)
        windows = np.take_along_axis(ctx, order[:, :, None, :], axis=1)
        return np.where(kept, np.take_along_axis(pos, order, axis=1), -2), np.where(kept[:, :, None, :], windows, 0)

    for got, want in zip(by_position(top_pos_a, ctx_a), by_position(top_pos_b, ctx_b)):
        np.testing.assert_array_equal(got, want)


def assert_same_root_datasets(got: dict, want: dict) -> None:
    """The root datasets of a merged (or distributed) run against one process's: the same datasets,
    equal, but for float sums (of float32-rounded shard sums, cancelling signs) and contexts tied with
    the K-th (see assert_same_top)."""
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        if name in ("act_sum", "act_sum_pos", "h_sum"):
            np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
        elif name not in ("top_pos", "ctx_val"):
            np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert_same_top(want["top_val"], got["top_pos"], want["top_pos"], got["ctx_val"], want["ctx_val"])


def test_merged_shards_equal_the_whole_run(runs, capsys):
    """Every root dataset of the merge of shards 0/2 and 1/2 equals the unsharded summary's, the
    shards hold only their own rows at global positions, and the analysis is recomputed."""
    with Summary.open(runs["s1"]) as s1, Summary.open(runs["whole"]) as whole:
        assert s1.attrs["shard"] == "1/2" and s1.attrs["key"] != whole.attrs["key"]
        assert s1.attrs["base_key"] == whole.attrs["key"] and s1.analysis is None
        np.testing.assert_array_equal(s1.rows.sequences(), np.arange(1, 40, 2))
        np.testing.assert_array_equal(s1.read("tokens"), whole.read("tokens")[1::2])
        events = s1.neuron_events(1, int(np.argmax(s1.read("act_count", 1))))
        assert (events // 24 % 2 == 1).all()  # global positions of odd sequences only
        np.testing.assert_array_equal(s1.tokens_at(events), whole.tokens_at(events))
        np.testing.assert_array_equal(s1.sequence(int(events[-1]) // 24), whole.sequence(int(events[-1]) // 24))

    out = runs["tmp"] / "merged.h5"
    assert main(["merge", str(runs["s0"]), str(runs["s1"]), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("merged.h5")
    got, want = root_datasets(out), root_datasets(runs["whole"])
    assert_same_root_datasets(got, want)
    assert "seq_index" not in got and "h_sum" in got and "sign_count" not in got  # OPT's FFN is not gated
    np.testing.assert_array_equal(root_datasets(runs["s1"])["hist_edges"], want["hist_edges"])  # the same bins
    shard_levels = np.maximum(root_datasets(runs["s0"])["event_level"], root_datasets(runs["s1"])["event_level"])
    assert (got["event_level"] > shard_levels).any()  # the union's sample is sparser than either shard's
    with (Summary.open(out) as m, Summary.open(runs["whole"]) as whole, Summary.open(runs["s0"]) as s0,
          Summary.open(runs["s1"]) as s1):
        for key in ("shard", "key", "n_seq", "n_tokens", "complete", "corpus", "settings"):
            assert m.attrs[key] == whole.attrs[key], key
        # without the model the merge cannot correlate the union's token counts (freq_corr): that kind is
        # unknown there, every other kind is the whole run's
        assert not kinds.known(kinds.BY_NAME["frequency"], m) and kinds.known(kinds.BY_NAME["frequency"], whole)
        others = ~np.uint32(kinds.mask_bit("frequency"))
        np.testing.assert_array_equal(m.analysis.read("flags") & others, whole.analysis.read("flags") & others)
        assert_candidates_reranked(m, whole, [s0, s1])


def assert_candidates_reranked(merged: Summary, whole: Summary, shards: list[Summary]):
    """Candidate triggers: the whole run's most frequent event tokens, as far as the shards knew their
    scores. The whole run's list restricted to the tokens some shard listed is a prefix of the merged
    list (same ranking, fewer tokens to rank), and each token keeps the score and rank it has there."""
    for layer in range(whole.n_layers):
        m_tok, w_tok = merged.projection.read("cand_tok", layer), whole.projection.read("cand_tok", layer)
        m_rank, w_rank = merged.projection.read("cand_supp_rank", layer), whole.projection.read("cand_supp_rank", layer)
        pool = np.concatenate([s.projection.read("cand_tok", layer) for s in shards], axis=1)
        for i in range(whole.n_neurons):
            known = [t for t in w_tok[i] if t >= 0 and t in pool[i]]
            assert list(m_tok[i, : len(known)]) == known
            for j, t in enumerate(m_tok[i]):
                if t >= 0 and t in w_tok[i]:
                    assert m_rank[i, j] == w_rank[i, list(w_tok[i]).index(t)]
    first = shards[0].projection.read("cand_tok")
    assert not np.array_equal(merged.projection.read("cand_tok"), first)  # re-ranked, not copied


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("neuron-tui: error: "), err
    return lines[0]


def with_other_bins(source, path):
    """A copy of summary `source` whose histogram bins are twice as wide apart as its run's."""
    with Summary.open(source) as s, SummaryWriter(path) as w:
        w.copy_from(s, skip=("hist_edges",))
        w.put("hist_edges", s.read("hist_edges") * 2)
    return path


def test_incompatible_summaries_are_refused(runs, capsys, tmp_path):
    """Different model, rule, seq_len, the same sequences twice, or a checkpoint: one line naming
    what keeps them apart, and no output file."""
    base, out = [str(a) for a in runs["base"]], tmp_path / "out.h5"
    other_model = save_tiny(tiny_opt(seed=1), tmp_path / "other-opt")
    other = tmp_path / "other.h5"
    assert main([*base[:1], str(other_model), *base[2:], "--shard", "1/2", "--out", str(other)]) == 0
    short = tmp_path / "short.h5"
    assert main([*base, "--seq-len", "16", "--shard", "1/2", "--out", str(short)]) == 0
    capsys.readouterr()
    cases = [(other, "model differs"),
             (rewritten(runs["s1"], tmp_path / "abs.h5", rule="abs"), "rule differs ('relu' vs 'abs')"),
             (short, "seq_len differs (24 vs 16)"),
             (runs["s0"], "shards 0/2 and 0/2 overlap"),
             (runs["whole"], "shards 0/2 and 0/1 overlap"),
             (rewritten(runs["s1"], tmp_path / "ckpt.h5", complete=False), "checkpoint of a collection still under way"),
             (without_schema_3_statistics(runs["s1"], tmp_path / "old.h5"), "made by an older neuron-tui"),
             (with_other_bins(runs["s1"], tmp_path / "bins.h5"), "activation histograms have other bins")]
    for second, message in cases:
        assert main(["merge", str(runs["s0"]), str(second), "-o", str(out)]) == 1
        assert message in one_line_error(capsys)
        assert not out.exists()


def test_shards_in_the_cache_sit_beside_the_whole_run(runs, capsys, tmp_path):
    """Without --out a shard is filed as `<whole run's file>.shard<K>of<N>.h5` (the name a distributed
    rank checkpoints under), `report MODEL` never mistakes it for the model's summary, and `analyze`
    refuses it: its analysis needs every sequence."""
    base = [str(a) for a in runs["base"]] + ["--cache-dir", str(tmp_path)]
    assert main([*base, "--shard", "1/2"]) == 0
    shard = capsys.readouterr().out.strip()
    assert main(base) == 0
    whole = capsys.readouterr().out.strip()
    assert shard == whole[: -len(".h5")] + ".shard1of2.h5"
    assert main(["report", str(runs["model"]), "--cache-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["file"] == whole
    assert main(["analyze", shard]) == 2
    assert "holds shard 1/2 of the corpus" in one_line_error(capsys)


@pytest.fixture(scope="module")
def gated_runs(tmp_path_factory):
    """A tiny Llama (gated: neurons fire with either sign) collected whole and as shards 0/2 and 1/2."""
    tmp = tmp_path_factory.mktemp("merge-gated")
    model = save_tiny(tiny_llama(), tmp / "tiny-llama")
    corpus = write_text_corpus(tmp / "corpus.jsonl", n_docs=60)
    base = ["collect", str(model), "--corpus", str(corpus), "--tokens", "960", "--seq-len", "24", "--batch-size",
            "4", "--events", "12", "--quiet"]
    paths = {"whole": tmp / "whole.h5", "s0": tmp / "s0.h5", "s1": tmp / "s1.h5"}
    for name, extra in (("whole", []), ("s0", ["--shard", "0/2"]), ("s1", ["--shard", "1/2"])):
        assert main([*base, *extra, "--out", str(paths[name])]) == 0
    return {"tmp": tmp, "model": model, **paths}


def projection(path) -> tuple[dict, dict]:
    with h5py.File(path, "r") as f:
        group = f["projection"]
        return dict(group.attrs), {name: group[name][()] for name in group}


def test_merge_without_the_model_orients_each_neuron_as_the_union(gated_runs, capsys):
    """A neuron whose activations sum negative in one shard and positive in the union: its promoted and
    suppressed tokens come from a shard oriented as the union, so they equal the whole run's."""
    with h5py.File(gated_runs["s0"], "r") as s0, h5py.File(gated_runs["whole"], "r") as whole:
        flipped = (s0["act_sum"][()] < 0) != (whole["act_sum"][()] < 0)
    assert flipped.sum() >= 3  # the case under test happens in this run
    out = gated_runs["tmp"] / "merged-no-model.h5"
    assert main(["merge", str(gated_runs["s0"]), str(gated_runs["s1"]), "-o", str(out)]) == 0
    assert "merged without --model" in capsys.readouterr().err
    (attrs, got), (_, want) = projection(out), projection(gated_runs["whole"])
    assert attrs["candidates_complete"] == False  # noqa: E712 (a numpy bool)
    for name in ("promoted_tok", "promoted_score", "suppressed_tok", "suppressed_score"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_merge_with_the_model_projects_exactly_like_the_whole_run(gated_runs, capsys):
    out = gated_runs["tmp"] / "merged-model.h5"
    assert main(["merge", str(gated_runs["s0"]), str(gated_runs["s1"]), "-o", str(out),
                 "--model", str(gated_runs["model"]), "--device", "cpu"]) == 0
    assert "without --model" not in capsys.readouterr().err
    (attrs, got), (want_attrs, want) = projection(out), projection(gated_runs["whole"])
    assert attrs == want_attrs and attrs["candidates_complete"] == True  # noqa: E712
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert_same_root_datasets(root_datasets(out), root_datasets(gated_runs["whole"]))  # the sign cases too
    with h5py.File(out, "r") as m, h5py.File(gated_runs["whole"], "r") as whole:
        assert sorted(m["analysis"]) == sorted(whole["analysis"])  # trig_supp_rank, layer_neg_share, ...
        for name in whole["analysis"]:
            np.testing.assert_array_equal(m["analysis"][name][()], whole["analysis"][name][()], err_msg=name)


def test_merge_refuses_a_model_other_than_the_runs(gated_runs, capsys, tmp_path):
    other = save_tiny(tiny_llama(seed=1), tmp_path / "other-llama")
    capsys.readouterr()  # transformers' saving bar
    out = tmp_path / "out.h5"
    assert main(["merge", str(gated_runs["s0"]), str(gated_runs["s1"]), "-o", str(out), "--model", str(other)]) == 1
    assert "--model other-llama is not the model of" in one_line_error(capsys) and not out.exists()
