"""The analysis against answers known by construction: hand-made summaries, a plain-Python slow path,
and the engineered OPT of planted.py run through a reference collection (planted.write_firing_summary)."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from planted import (
    collect_planted,
    ffn_activations,
    planted_corpus,
    planted_opt,
    write_firing_summary,
)

from neuron_tui.cache import Summary, schema, write_summary
from neuron_tui.core.read import kinds
from neuron_tui.core.read.analysis import analyze, run_analysis
from neuron_tui.core.read.occurrences import count_stderr
from neuron_tui.core.read.params import AnalysisParams
from neuron_tui.core.read.sampling import token_levels

VOCAB = ["<s>", "a", "b", "c", "d", "e", "f", "g"]
# BOS (0) at position 0; non-BOS occurrences: 1 x3, 2 x1, 3 x7, 4 x3, 5 x2, 6 x4 (20 tokens)
TOKENS = np.array(
    [
        [0, 3, 4, 3, 6, 1],
        [0, 3, 5, 6, 3, 2],
        [0, 4, 3, 6, 1, 3],
        [0, 1, 6, 4, 3, 5],
    ]
)
S, T = TOKENS.shape
POS = np.arange(T)[None, :].repeat(S, 0)


def fires_on(*tokens) -> np.ndarray:
    """[S, T] firing on every non-BOS occurrence of `tokens`."""
    return np.isin(TOKENS, tokens) & (POS > 0)


def hand_fired() -> np.ndarray:
    F = 8
    fired = np.zeros((1, S, T, F), bool)
    # n0: dead
    fired[0, :, :, 1] = fires_on(3)  # n1: token detector of 3 (7 firings)
    fired[0, :, 0, 2] = True  # n2: fires on the BOS position only
    fired[0, :, :, 3] = fires_on(3)  # n3: all 3s + one of the three 4s -> coverage 7/8
    fired[0, 0, 2, 3] = True
    fired[0, :, :, 4] = fires_on(3, 1)  # n4: 3 (7 occ) and 1 (3 occ): 1 is too rare to count by default
    fired[0, 0, 4, 5] = fired[0, 1, 3, 5] = True  # n5: half of token 6's occurrences
    fired[0, :, :, 6] = POS > 0  # n6: every non-BOS token
    fired[0, 2, 5, 7] = True  # n7: fires once (on a 3)
    return fired


def flags_of(arrays, layer=0):
    f = arrays["flags"][layer]
    return {k.name: np.flatnonzero(kinds.has(f, k.name)).tolist() for k in kinds.KINDS}


@pytest.fixture
def hand(tmp_path):
    path = tmp_path / "hand.h5"
    write_firing_summary(path, TOKENS, hand_fired(), VOCAB)
    return path


def test_hand_summary_default_params(hand):
    with Summary.open(hand) as s:
        attrs, a = analyze(s)
    # with 4 sequences per position, MI is large for sparse neurons (the paper needs many sequences)
    assert flags_of(a) == {"dead": [0], "silent": [], "faint": [], "rare": [], "token": [1], "ngram": [],
                           "positional": [4, 5, 7], "prediction": [], "suppression": [], "entropy": [],
                           "frequency": [], "mixed": []}  # no projection statistics, not gated
    # n7 fires once, at position 5 (BOS position left out): I = H(1/20) - 1/5 H(1/4)
    H = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
    assert a["pos_mi"][0, 7] == pytest.approx(H(1 / 20) - H(1 / 4) / 5, rel=1e-6)
    assert attrs["pos_mi_bias"] == pytest.approx(4 / (2 * 20))
    assert a["trig_tok"][0, 1, :2].tolist() == [3, -1]
    assert a["trig_count"][0, 1, 0] == 7 and a["trig_pfire"][0, 1, 0] == 1.0
    assert a["trig_coverage"][0, 1] == 1.0
    # n2 fires on BOS only: alive, not dead, and no detector statistic sees its firings
    assert a["trig_tok"][0, 2, 0] == -1 and a["n_distinct"][0, 2] == 0 and a["trig_coverage"][0, 2] == 0
    # n3: 3 covered (7/7), 4 not (1/3): coverage 7/8 < 0.95
    assert a["trig_tok"][0, 3, :3].tolist() == [3, 4, -1]
    assert a["trig_count"][0, 3, :2].tolist() == [7, 1]
    assert a["trig_pfire"][0, 3, :2] == pytest.approx([1.0, 1 / 3])
    assert a["trig_coverage"][0, 3] == pytest.approx(7 / 8)
    assert a["trig_explains"][0, 3, :2].tolist() == [1, 0]  # 3 is counted in the coverage, 4 is not
    # n4: token 1 occurs 3 times < min_token_count 5, so only 7 of 10 firings are covered
    assert a["trig_coverage"][0, 4] == pytest.approx(0.7)
    # n5: P(fire | 6) = 2/4
    assert a["trig_tok"][0, 5, 0] == 6 and a["trig_pfire"][0, 5, 0] == pytest.approx(0.5)
    # n6: 6 distinct tokens, by count then id: 3:7 6:4 1:3 4:3 5:2 2:1; 3 and 6 are frequent enough
    assert a["trig_tok"][0, 6, :7].tolist() == [3, 6, 1, 4, 5, 2, -1]
    assert a["trig_count"][0, 6, :6].tolist() == [7, 4, 3, 3, 2, 1]
    assert a["n_distinct"][0, 6] == 6
    assert a["trig_coverage"][0, 6] == pytest.approx(7 / 20)
    assert a["layer_covered"].tolist() == [1] and a["layer_new"].tolist() == [1]
    assert attrs["analysis_version"] == schema.ANALYSIS_VERSION
    assert json.loads(attrs["params"])["min_fire_rate"] == 0.95
    # no projection group: ranks unknown, shares undefined
    assert (a["trig_supp_rank"] == -1).all() and np.isnan(a["layer_supp_share"]).all()


def test_hand_summary_thresholds_are_parameters(hand):
    with Summary.open(hand) as s:
        _, a = analyze(s, AnalysisParams(min_token_count=1, rare_rate=0.1))
        # n6: covered 3,6,1,4,5 reach 19 = 95% of 20 with exactly 5 tokens (max_tokens)
        assert flags_of(a)["token"] == [1, 4, 6]
        assert a["trig_coverage"][0, 6] == pytest.approx(19 / 20)
        assert a["trig_explains"][0, 6, :6].tolist() == [1, 1, 1, 1, 1, 0]
        assert a["trig_coverage"][0, 4] == 1.0
        # rare: fewer than 0.1 * 24 = 2.4 firings: n5 (2) and n7 (1); n2 has 4
        assert flags_of(a)["rare"] == [5, 7]
        # covered vocabulary: 3 (n1), 3 and 1 (n4), 3 6 1 4 5 (n6)
        assert a["layer_covered"].tolist() == [5]
        _, b = analyze(s, AnalysisParams(min_token_count=1, max_tokens=4))
        assert flags_of(b)["token"] == [1, 4]
        assert b["trig_coverage"][0, 6] == pytest.approx(17 / 20)


def test_bos_position_and_positional_flag(hand):
    with Summary.open(hand) as s:
        _, a = analyze(s)
        assert a["pos_mi"][0, 2] == 0.0 and not kinds.has(a["flags"][0, 2], "positional")
        _, b = analyze(s, AnalysisParams(positional_skip_bos=False))
    # fires at position 0 of every sequence and nowhere else: I = H(1/6)
    h = -(1 / 6 * math.log(1 / 6) + 5 / 6 * math.log(5 / 6))
    assert b["pos_mi"][0, 2] == pytest.approx(h, rel=1e-6)
    assert kinds.has(b["flags"][0, 2], "positional")
    # an indicator of position 0: its rate is exactly 1 there and 0 elsewhere: fires at the start only
    assert schema.POS_SHAPES[b["pos_shape"][0, 2]] == "one-extreme" and b["pos_strong"][0, 2] == 1
    assert b["pos_range"][0, 2].tolist() == [0, 0]
    assert schema.POS_SHAPES[b["pos_shape"][0, 0]] == "none" and b["pos_range"][0, 0].tolist() == [-1, -1]  # dead
    # n6 fires on every token but BOS: with position 0 counted it is a perfect indicator of t >= 1
    assert schema.POS_SHAPES[b["pos_shape"][0, 6]] == "one-extreme" and a["pos_mi"][0, 6] == 0.0
    assert b["pos_range"][0, 6].tolist() == [1, T - 1]


def test_coverage_over_depth(tmp_path):
    fired = np.zeros((3, S, T, 2), bool)
    fired[0, :, :, 0] = fires_on(3)  # layer 0: {3}
    fired[1, :, :, 0] = fires_on(4)  # layer 1: {4}
    fired[2, :, :, 0] = fires_on(3)  # layer 2: {3, 1}
    fired[2, :, :, 1] = fires_on(1)
    write_firing_summary(tmp_path / "d.h5", TOKENS, fired, VOCAB)
    with Summary.open(tmp_path / "d.h5") as s:
        _, a = analyze(s, AnalysisParams(min_token_count=3))
    assert a["layer_covered"].tolist() == [1, 1, 2]
    assert a["layer_new"].tolist() == [1, 1, 1]  # 3 was covered in layer 0
    assert a["layer_new_vs_prev"].tolist() == [1, 1, 2]  # layer 1 covered only 4


def projection_group(cand_tok, cand_rank, cand_score, k=2):
    L, F, Kc = cand_tok.shape
    arrays = {
        "promoted_tok": np.zeros((L, F, k), np.int32),
        "promoted_score": np.zeros((L, F, k), np.float32),
        "suppressed_tok": np.zeros((L, F, k), np.int32),
        "suppressed_score": np.zeros((L, F, k), np.float32),
        "cand_tok": cand_tok.astype(np.int32),
        "cand_score": cand_score.astype(np.float32),
        "cand_supp_rank": cand_rank.astype(np.int32),
        "cand_cos_in": np.full((L, F, Kc), np.nan, np.float32),
    }
    attrs = {"k": k, "n_candidates": Kc, "tied_embeddings": True, "project_out": False}
    return attrs, arrays


def test_suppression_shares_from_the_projection_group(tmp_path):
    fired = np.zeros((1, S, T, 5), bool)
    for i, toks in enumerate([(3,), (4,), (1,), (6,), (3, 1)]):
        fired[0, :, :, i] = fires_on(*toks)
    nan = np.nan
    cand = np.array([[[3, 5, -1], [4, 2, 1], [1, 3, 4], [5, 2, -1], [3, 1, -1]]])
    rank = np.array([[[0, 9, -1], [15, 0, 1], [3, 0, 1], [4, 5, -1], [2, 12, -1]]])
    score = np.array([[[-2.0, -0.1, nan], [-0.5, -3, -2], [0.2, -1, -1], [-1, -1, nan], [-1.0, -0.3, nan]]])
    path = tmp_path / "p.h5"
    write_firing_summary(path, TOKENS, fired, VOCAB, groups={"projection": projection_group(cand, rank, score)})
    run_analysis(path, AnalysisParams(min_token_count=3))
    with Summary.open(path) as s:  # what the file holds now
        attrs, a = s.analysis.attrs, {name: s.analysis.read(name) for name in schema.ANALYSIS_DATASETS}
    assert flags_of(a)["token"] == [0, 1, 2, 3, 4]
    # n0 ranks 0 and negative; n1 rank 15 (not top-10) but negative; n2 rank 3 but positive;
    # n3's trigger 6 is not among its candidates (unknown: left out); n4: 3 at rank 2, 1 at rank 12
    assert a["layer_detectors_known"].tolist() == [4]
    assert a["layer_supp_share"][0] == pytest.approx(2 / 4)  # n0, n2
    assert a["layer_neg_share"][0] == pytest.approx(3 / 4)  # n0, n1, n4
    assert a["trig_supp_rank"][0, :, 0].tolist() == [0, 15, 3, -1, 2]
    assert a["trig_supp_rank"][0, 4, :3].tolist() == [2, 12, -1]
    assert attrs["has_projection"]
    with Summary.open(path) as s:  # written into the file, next to the untouched projection group
        assert s.analysis.attrs["analysis_version"] == schema.ANALYSIS_VERSION
        np.testing.assert_array_equal(s.analysis.read("flags"), a["flags"])
        assert s.projection is not None and s.projection.has("cand_tok")
        assert AnalysisParams.from_json(s.analysis.attrs["params"]).min_token_count == 3


def test_all_analysis_datasets_have_the_schema_dtype_and_shape(hand):
    params = AnalysisParams(n_triggers=7, n_ngrams=4)
    with Summary.open(hand) as s:
        _, a = analyze(s, params)
    dims = {"L": 1, "F": 8, "Kt": 7, "Kn": 4, "2": 2}
    assert set(a) == set(schema.ANALYSIS_DATASETS)
    for name, (dtype, axes) in schema.ANALYSIS_DATASETS.items():
        assert a[name].dtype == np.dtype(dtype), name
        assert a[name].shape == tuple(dims[x] for x in axes.split(",")), name


def test_a_shard_summary_maps_global_positions_to_its_token_rows(tmp_path):
    """A shard holds sequences 1 and 3 only: events are at global positions seq * T + t."""
    fired = hand_fired()[:, [1, 3]]
    write_firing_summary(tmp_path / "shard.h5", TOKENS[[1, 3]], fired, VOCAB, seq_index=np.array([1, 3]))
    write_firing_summary(tmp_path / "rows.h5", TOKENS[[1, 3]], fired, VOCAB)
    with Summary.open(tmp_path / "shard.h5") as s, Summary.open(tmp_path / "rows.h5") as r:
        assert s.read("event_pos").max() >= 3 * T  # global positions beyond the two rows
        _, a = analyze(s, AnalysisParams(min_token_count=2))
        _, b = analyze(r, AnalysisParams(min_token_count=2))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert a["trig_tok"][0, 1, 0] == 3 and a["trig_count"][0, 1, 0] == 3  # 3 occurs 2 + 1 times


# ---- sampled events (level > 0) -------------------------------------------------------------------
def test_counts_at_level_above_zero_use_the_sampled_occurrences(tmp_path):
    rng = np.random.default_rng(5)
    tokens = rng.integers(1, 6, (16, 16))
    tokens[:, 0] = 0
    pos = np.arange(16)[None, :].repeat(16, 0)
    fired = np.zeros((1, 16, 16, 2), bool)
    fired[0, :, :, 0] = (tokens == 3) & (pos > 0)  # a perfect detector of 3
    occ4 = np.flatnonzero((tokens.ravel() == 4) & (pos.ravel() > 0))
    half = occ4[::2]
    fired[0].reshape(-1, 2)[half, 1] = True  # fires on every other occurrence of 4
    levels = np.array([[2, 1]])
    arrays = write_firing_summary(tmp_path / "lv.h5", tokens, fired, [str(i) for i in range(6)], levels=levels)
    with Summary.open(tmp_path / "lv.h5") as s:
        _, a = analyze(s, AnalysisParams(max_tokens=1))
    g = np.arange(tokens.size)
    z = token_levels(g)
    occ3 = int(((tokens.ravel() == 3) & (g % 16 > 0)).sum())
    kept3 = int(((tokens.ravel() == 3) & (g % 16 > 0) & (z >= 2)).sum())
    assert arrays["event_level"][0, 0] == 2 and arrays["event_offsets"][0, 1] == kept3
    # the perfect detector: exactly occ(3) firings and P = 1 at any level ...
    assert a["trig_count"][0, 0, 0] == occ3 and a["trig_pfire"][0, 0, 0] == 1.0
    assert kinds.has(a["flags"][0, 0], "token")
    # ... where kept * 2**level is off (the reason for the ratio estimator)
    assert kept3 * 4 != occ3
    # the half-detector: rate on the sampled occurrences (z >= 1) times all occurrences
    sampled = int((z[occ4] >= 1).sum())
    kept = int((z[half] >= 1).sum())
    assert 0 < kept < sampled < occ4.size
    assert a["trig_count"][0, 1, 0] == pytest.approx(kept / sampled * occ4.size, rel=1e-6)
    assert a["trig_pfire"][0, 1, 0] == pytest.approx(kept / sampled, rel=1e-6)
    assert not kinds.has(a["flags"][0, 1], "token")
    se = count_stderr(a["trig_count"][0, 1, 0], occ4.size, sampled)
    assert 0 < se < occ4.size
    assert count_stderr(occ3, occ3, kept3) == 0.0  # a detector's rate 1 has no sampling error
    assert count_stderr(5, 10, 10) == 0.0  # level 0: everything seen


# ---- n-grams: a planted bigram detector and a plain-Python slow path ------------------------------
def ngram_corpus(seed=0, n_seq=200, T=8):
    """Random fill from {3, 4, 6, 7}; once per sequence the pattern (a, 5, 6) with a in {1, 2}."""
    rng = np.random.default_rng(seed)
    tokens = rng.choice([3, 4, 6, 7], size=(n_seq, T))
    tokens[:, 0] = 0
    for i in range(n_seq):
        o = rng.integers(1, T - 2)
        tokens[i, o : o + 3] = [1 + i % 2, 5, 6]
    return tokens


def test_bigram_detector_is_an_ngram_neuron_not_a_token_detector(tmp_path):
    tokens = ngram_corpus()
    n, T = tokens.shape
    prev = np.concatenate([np.full((n, 1), -1), tokens[:, :-1]], 1)
    fired = np.zeros((1, n, T, 2), bool)
    fired[0, :, :, 0] = (tokens == 6) & (prev == 5)  # the bigram (5, 6)
    fired[0, :, :, 1] = tokens == 5  # a plain token detector of 5, for contrast
    write_firing_summary(tmp_path / "ng.h5", tokens, fired, [str(i) for i in range(8)])
    with Summary.open(tmp_path / "ng.h5") as s:
        _, a = analyze(s)
        _, b = analyze(s, AnalysisParams(ngram_order=2))
    assert flags_of(a)["ngram"] == [0] and flags_of(a)["token"] == [1]
    p6 = a["trig_pfire"][0, 0, 0]
    assert a["trig_tok"][0, 0, 0] == 6 and p6 < 0.6  # P(fire | 6) is low
    assert a["ngram_prev"][0, 0, :2].tolist() == [5, -1] and a["ngram_tok"][0, 0, 0] == 6
    assert a["ngram_count"][0, 0, 0] == n
    assert a["ngram_coverage"][0, 0] == 1.0  # trigrams (1, 5, 6) and (2, 5, 6) explain everything
    assert flags_of(b)["ngram"] == [0]


def slow_ngrams(tokens, offsets, events, levels, totals, order, bos, k):
    """Plain Python: per neuron the estimated count of every context and the top-k (prev, tok) list."""
    n, T = tokens.shape
    flat = tokens.ravel().tolist()
    V = int(tokens.max()) + 1

    def ctx(g, order):
        t = g % T
        return tuple(flat[g - b] if t >= b else -1 for b in range(order - 1, -1, -1))

    z = token_levels(np.arange(len(flat))).tolist()
    positions = [g for g in range(len(flat)) if not (bos and g % T == 0)]
    F = len(offsets) - 1
    tops, shares = [], []
    for i in range(F):
        lv = int(levels[i])
        evs = [int(g) for g in events[offsets[i] : offsets[i + 1]] if not (bos and g % T == 0)]
        est = {}
        for o in (2, order):
            kept = Counter(ctx(g, o) for g in evs)
            all_occ = Counter(ctx(g, o) for g in positions)
            sampled = Counter(ctx(g, o) for g in positions if z[g] >= lv)
            est[o] = {c: (m if lv == 0 else m / sampled[c] * all_occ[c]) for c, m in kept.items()}
            est[(o, "occ")] = all_occ
        key = lambda c: tuple(V if x == -1 else x for x in c)  # noqa: E731 - "start" sorts last
        ranked = sorted(est[2].items(), key=lambda cm: (-round(cm[1] * 1024), key(cm[0])))[:k]
        tops.append(ranked)
        total = int(totals[i])  # exact non-BOS firings, not the kept events
        occ_o = est[(order, "occ")]
        cov = sorted((m for c, m in est[order].items() if m >= 0.95 * occ_o[c] - 1e-9 and occ_o[c] >= 5), reverse=True)
        acc, used = 0.0, 0
        for m in cov:
            if acc >= 0.95 * total - 1e-9 or used == 50:
                break
            acc += m
            used += 1
        shares.append(min(acc / total, 1.0) if total else 0.0)
    return tops, shares


def test_ngram_contexts_match_the_slow_path(tmp_path):
    tokens = ngram_corpus(seed=1, n_seq=60, T=10)
    n, T = tokens.shape
    rng = np.random.default_rng(2)
    F = 12
    fired = rng.random((1, n, T, F)) < rng.uniform(0.02, 0.6, F)
    prev = np.concatenate([np.full((n, 1), -1), tokens[:, :-1]], 1)
    fired[0, :, :, 0] = (tokens == 6) & (prev == 5)
    arrays = write_firing_summary(tmp_path / "r.h5", tokens, fired, [str(i) for i in range(8)], cap=40)
    assert (arrays["event_level"] > 0).sum() >= 5  # most neurons are sampled
    with Summary.open(tmp_path / "r.h5") as s:
        _, a = analyze(s, AnalysisParams(n_ngrams=6))
        offsets, events = s.layer_events(0)
    totals = fired[0].sum((0, 1)) - fired[0][:, 0].sum(0)
    tops, shares = slow_ngrams(tokens, offsets, events, arrays["event_level"][0], totals, 3, True, 6)
    for i in range(F):
        want = tops[i]
        got = [(int(p), int(t)) for p, t in zip(a["ngram_prev"][0, i], a["ngram_tok"][0, i]) if t >= 0]
        assert got == [c for c, _ in want], i
        np.testing.assert_allclose(a["ngram_count"][0, i, : len(want)], [m for _, m in want], rtol=1e-5)
        assert a["ngram_coverage"][0, i] == pytest.approx(shares[i], abs=1e-6), i


# ---- planted ground truth: engineered OPT -> reference collection -> projections -> analysis -----
@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The engineered OPT through the real pipeline: collection (hooks, accumulators, projections)
    on a corpus written as text and packed by a word-level tokenizer, then the analysis."""
    model, plan = planted_opt()
    folder = tmp_path_factory.mktemp("planted")
    tokens = planted_corpus(T=plan.seq_len)
    path = collect_planted(model, plan, tokens, folder, events_cap=128)
    with Summary.open(path) as s:
        assert sorted(map(tuple, s.read("tokens").tolist())) == sorted(map(tuple, tokens.tolist()))
        arrays = {"event_level": s.read("event_level")}
        parrays = {name: s.projection.read(name) for name in ("suppressed_tok",)}
        a = {name: s.analysis.read(name) for name in schema.ANALYSIS_DATASETS}
    return plan, arrays, parrays, a, path


def test_planted_neurons_are_labelled_exactly(planted):
    plan, arrays, _, a, _ = planted
    assert (arrays["event_level"] > 0).mean() > 0.5  # the counts are mostly estimates
    for layer in range(2):
        f = flags_of(a, layer)
        assert f["dead"] == sorted(i for l_, i in plan.dead if l_ == layer)
        assert f["token"] == sorted(i for l_, i in plan.token if l_ == layer)
        assert f["ngram"] == sorted(i for l_, i in plan.bigram if l_ == layer)
        assert f["positional"] == sorted(i for l_, i in plan.range if l_ == layer)
        assert f["rare"] == []
    for (layer, i), tok in plan.token.items():
        assert a["trig_tok"][layer, i, 0] == tok and a["trig_pfire"][layer, i, 0] == 1.0
        assert a["trig_tok"][layer, i, 1] == -1
    for (layer, i), (p, t) in plan.bigram.items():
        assert (a["ngram_prev"][layer, i, 0], a["ngram_tok"][layer, i, 0]) == (p, t)
    for (layer, i), (lo, hi) in plan.range.items():  # fires iff lo <= t <= hi: rates exactly 0 and 1
        # one range inside the sequence, touching neither end: the type "other", strong, with its range
        assert schema.POS_SHAPES[a["pos_shape"][layer, i]] == "other" and a["pos_strong"][layer, i] == 1
        assert a["pos_range"][layer, i].tolist() == [lo, hi]


def test_planted_detectors_suppress_their_token(planted):
    plan, _, parrays, a, _ = planted
    for (layer, i), tok in plan.token.items():
        assert parrays["suppressed_tok"][layer, i, 0] == tok
        assert a["trig_supp_rank"][layer, i, 0] == 0
    assert a["layer_supp_share"].tolist() == [1.0, 1.0]
    assert a["layer_neg_share"].tolist() == [1.0, 1.0]
    assert a["layer_covered"].tolist() == [2, 1] and a["layer_new"].tolist() == [2, 1]


def test_planted_model_behaves_as_designed():
    """A forward pass with pre-hooks on fc2: the planted neurons fire exactly where designed."""
    model, plan = planted_opt()
    tokens = torch.as_tensor(planted_corpus(n_seq=48, seed=3))
    acts = ffn_activations(model, tokens)
    B, T = tokens.shape
    prev = torch.cat([torch.full((B, 1), -1), tokens[:, :-1]], 1)
    pos = torch.arange(T)[None].expand(B, T)
    for layer, i in plan.dead:
        assert (acts[layer][..., i] <= 0).all()
    for (layer, i), tok in plan.token.items():
        assert torch.equal(acts[layer][..., i] > 0, tokens == tok)
    for (layer, i), (p, t) in plan.bigram.items():
        assert torch.equal(acts[layer][..., i] > 0, (tokens == t) & (prev == p))
        assert (tokens == t).sum() > 2 * ((tokens == t) & (prev == p)).sum()  # P(fire | 11) is low
    for (layer, i), (lo, hi) in plan.range.items():
        assert torch.equal(acts[layer][..., i] > 0, (pos >= lo) & (pos <= hi))
    # layer-0 detectors fire with exactly 1 and their update erases the token's embedding
    for (layer, i), tok in plan.token.items():
        if layer == 0:
            on = acts[0][..., i][tokens == tok]
            torch.testing.assert_close(on, torch.ones_like(on), atol=1e-3, rtol=0)
        col = model.model.decoder.layers[layer].fc2.weight[:, i]
        torch.testing.assert_close(col, -model.get_input_embeddings().weight[tok])
    random0 = torch.stack([(acts[0][..., i] > 0).float().mean() for i in plan.random[0]])
    assert ((random0 > 0.05) & (random0 < 0.95)).all()  # random neurons fire often, not always


def test_analysis_of_wide_layers(tmp_path):
    """30 layers x 1536 neurons with 256 events each (SmolLM2's shape) through the vectorised paths
    (its speed is measured by bench/, not asserted here)."""
    rng = np.random.default_rng(0)
    L, F, n_seq, T, cap = 30, 1536, 64, 64, 256
    tokens = rng.zipf(1.2, (n_seq, T)) % 5000
    tokens[:, 0] = 1
    N = n_seq * T
    offsets = np.zeros((L, F + 1), np.int64)
    events = []
    for layer in range(L):
        ev = np.sort(rng.integers(0, N, (F, cap)), axis=1)
        events.append(ev.ravel())
        offsets[layer] = layer * F * cap + np.arange(F + 1) * cap
    arrays = {
        "tokens": tokens.astype(np.int32),
        "vocab": [str(i) for i in range(5000)],
        "tau": np.zeros(L, np.float32),
        "tokens_at_pos": np.full(T, n_seq, np.int64),
        "act_count": np.full((L, F), 4 * cap, np.int64),
        "pos_count": rng.integers(0, n_seq, (L, T, F)).astype(np.int32),
        "act_sum": np.zeros((L, F), np.float32),
        "act_count_pos": np.full((L, F), 4 * cap, np.int64),
        "act_sum_pos": np.zeros((L, F), np.float32),
        "token_occ": np.bincount(tokens[:, 1:].ravel(), minlength=5000),
        "act_max": np.zeros((L, F), np.float32),
        "top_val": np.zeros((L, 2, F), np.float32),
        "top_pos": np.zeros((L, 2, F), np.int64),
        "event_level": np.full((L, F), 2, np.int8),
        "event_offsets": offsets,
        "event_pos": np.concatenate(events),
    }
    attrs = {"model": "wide", "rule": "relu", "n_layers": L, "n_neurons": F, "seq_len": T, "n_seq": n_seq,
             "n_tokens": N, "bos": 1, "complete": True}
    write_summary(tmp_path / "wide.h5", attrs, arrays)
    with Summary.open(tmp_path / "wide.h5") as s:
        _, a = analyze(s)
    assert a["flags"].shape == (L, F)
    # events at random positions of a Zipf stream: no neuron is a token or n-gram detector
    assert not (kinds.has(a["flags"], "token") | kinds.has(a["flags"], "ngram")).any()
