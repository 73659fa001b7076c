"""Synthetic but realistic neuron-tui summaries, for the benchmarks and the tests of the read side and
the explorer (`bench/make_summary.py` is its command line; tests call `make_summary` directly).

Every root dataset of `schema.DATASETS` and the `analysis` and `projection` groups are written through
`neuron_tui.cache.SummaryWriter`, one layer at a time (host memory for one layer: the OPT-66b preset
stays within a few GB), with contents shaped like the paper's findings (arXiv 2309.04827):

- a Zipf-distributed token stream over a vocabulary of readable token texts (" the", ",", " of", ...),
  each sequence starting with BOS (id 0);
- dead neurons concentrated in the early layers (peak near 5% of depth, the first half sparse, the
  second half dense), rare neurons, generic neurons whose firing rate grows with depth;
- token detectors that fire on almost every occurrence of 1-3 mid-frequency tokens, n-gram detectors
  that fire on a frequent token only after particular previous tokens, positional neurons of the
  paper's four types (oscillatory, both extremes, one extreme, other);
- level-sampled firing events (exact under the cap), top-K contexts at most one per sequence;
- an `analysis` group computed from those events exactly as the reader sees them (triggers with
  counts and P(fire|token), n-gram contexts, I(fired; position) by the paper's section 5 formula), and a
  `projection` group whose detectors mostly suppress their own triggers (the paper's headline).

Everything is vectorised per layer, so the cost is a few numpy passes over each layer's arrays.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from neuron_tui.cache import SummaryWriter, schema

from . import kinds
from .synthetic_values import PROJECTION_ATTRS, SyntheticValues

PRESETS = {
    # name: (layers, neurons, seq_len, n_seq, vocab, events_cap, top_k)
    "opt-125m": (12, 3072, 128, 256, 50272, 32, 8),
    "opt-1.3b": (24, 8192, 128, 512, 50272, 32, 8),
    "opt-66b": (64, 36864, 32, 1024, 50272, 8, 4),
    # the paper's shapes: full-length sequences (T = 2048), the default event cap
    "opt-1.3b-paper": (24, 8192, 2048, 2048, 50272, 256, 8),  # 4.2M tokens
    "opt-66b-paper": (64, 36864, 2048, 512, 50272, 256, 8),  # 1.05M tokens
}

_COMMON = (
    " the , . of and to a in \n is that for it was on with as be by 's at he this from are his have or"
    " an not they which but had one you were her all she there would their we him been has when who will"
    " more no if out so said what up its about into than them can only other new some could time these"
    " two may then do first any my now such like our over man me even most made after also did many"
    " before must through back years where much your way well down should because each just those people"
    " Mr how too little state good very make world still own see men work long get here between both life"
    " being under never day same another know while last might us great old year off come since against go"
    " came right used take three ( ) : ; \" ' - ? ! = _ 0 1 2 3 ing ed s er ly tion def return self import"
    " The A In It He But And This"
).split(" ")
_SUFFIXES = {"ing", "ed", "s", "er", "ly", "tion"}
_ONSETS = ("", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "st", "tr", "pl")
_NUCLEI = ("a", "e", "i", "o", "u", "ou", "ea", "ai")
_CODAS = ("", "n", "r", "s", "t", "l", "nd", "ng", "ck", "st")


def make_vocab(size: int) -> list[str]:
    """Readable token texts: BOS, common words (with a leading space like GPT-2's BPE), pieces, words."""
    out = ["</s>"]
    seen = set(out)
    for piece in _COMMON:
        if not piece:
            continue
        text = " " + piece if piece.isalpha() and piece not in _SUFFIXES else piece
        if text not in seen:
            out.append(text)
            seen.add(text)
    syllables = [o + n + c for o in _ONSETS for n in _NUCLEI for c in _CODAS]
    rng = np.random.default_rng(1234)
    rng.shuffle(syllables)
    k = 0
    while len(out) < size:
        a = syllables[k % len(syllables)]
        b = syllables[(k // len(syllables) - 1) % len(syllables)] if k >= len(syllables) else ""
        for text in (" " + a + b, a + b, " " + (a + b).capitalize()):
            if text not in seen and len(out) < size:
                out.append(text)
                seen.add(text)
        k += 1
    return out[:size]


def _zipf_tokens(rng: np.random.Generator, shape: tuple[int, int], vocab: int, bos: bool) -> np.ndarray:
    ranks = np.arange(1, vocab, dtype=np.float64)
    p = 1.0 / (ranks + 2.7) ** 1.07
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    tokens = (np.searchsorted(cdf, rng.random(shape)) + 1).astype(np.int32)
    np.minimum(tokens, vocab - 1, out=tokens)
    if bos:
        tokens[:, 0] = 0
    return tokens


def _fractions(depth: float, n_neurons: int) -> dict[str, float]:
    """Share of each neuron type at relative depth 0..1 (paper section 3: sparse early layers)."""
    dead_peak = 0.7 if n_neurons >= 16384 else 0.45 if n_neurons >= 4096 else 0.3
    early = depth < 0.5
    dead = dead_peak * float(np.exp(-(((depth - 0.05) / 0.18) ** 2))) if early else 0.002
    return {
        "dead": dead,
        "rare": 0.06 if early else 0.01,
        "token": 0.05 if early else 0.008,
        "ngram": 0.012 if early else 0.004,
        "positional": 0.05 * float(np.exp(-(((depth - 0.15) / 0.3) ** 2))) + 0.004,
    }


_TYPES = ("generic", "dead", "rare", "token", "ngram", "positional")


def _mutual_information(pos_count: np.ndarray, tokens_at_pos: np.ndarray) -> np.ndarray:
    """I(fired; position) in nats per neuron, the paper's section 5 (0 log 0 = 0, no positions skipped)."""
    n = np.maximum(tokens_at_pos.astype(np.float64), 1)[:, None]
    frp = pos_count / n
    fr = pos_count.sum(0) / n.sum()
    fr = np.broadcast_to(fr, frp.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(frp > 0, frp * np.log(frp / fr), 0.0)
        b = np.where(frp < 1, (1 - frp) * np.log((1 - frp) / (1 - fr)), 0.0)
    mi = np.nan_to_num(a + b).mean(0)
    return np.maximum(mi, 0).astype(np.float32)


def _top_per_group(group: np.ndarray, score: np.ndarray, k: int):
    """Indices (into the inputs) of the k best scores of each group, and their rank in the group."""
    order = np.lexsort((-score, group))
    g = group[order]
    start = np.searchsorted(g, g, side="left")
    rank = np.arange(len(g)) - start
    keep = rank < k
    return order[keep], rank[keep]


def _occurrences(keys_sorted_order, keys_sorted, wanted, counts_of_wanted):
    """Flat indices of every occurrence of each `wanted` key, and the index into `wanted` of each."""
    starts = np.searchsorted(keys_sorted, wanted, side="left")
    total = int(counts_of_wanted.sum())
    owner = np.repeat(np.arange(len(wanted)), counts_of_wanted)
    first = np.repeat(np.cumsum(counts_of_wanted) - counts_of_wanted, counts_of_wanted)
    idx = np.repeat(starts, counts_of_wanted) + (np.arange(total) - first)
    return keys_sorted_order[idx], owner


class _Layer:
    """Everything generated for one layer."""


def _make_layer(rng, l, L, F, T, n_seq, flat, hist, tok_order, tok_sorted, big_order, big_sorted, V, C, K, bos):
    N = n_seq * T
    depth = l / max(1, L - 1)
    frac = _fractions(depth, F)
    p = np.array([0.0] + [frac[t] for t in _TYPES[1:]])
    p[0] = max(0.0, 1.0 - p.sum())
    kind = rng.choice(len(_TYPES), size=F, p=p / p.sum())
    if l == 0 and F >= 8:  # every summary has some dead neurons in its first layer
        kind[: max(1, F // 16)] = 1
        rng.shuffle(kind)
    pos_count = np.zeros((T, F), dtype=np.int64)
    tokens_at_pos = np.full(T, n_seq, dtype=np.int64)
    exact_i, exact_g = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]  # neurons whose firings we know

    # generic: constant rate, lognormal across neurons, growing with depth
    gen = np.flatnonzero(kind == 0)
    median = 0.008 if depth < 0.5 else 0.06 + 0.06 * depth
    rate = np.clip(median * np.exp(rng.normal(0, 1.0, len(gen))), 0.5 / N, 0.8)
    pos_count[:, gen] = rng.binomial(tokens_at_pos[:, None], rate[None, :])

    # positional, the paper's types (schema.POS_SHAPES codes): 1 oscillatory (evenly spaced firing
    # ranges), 2 both-extremes (always before a position, never after, or the reverse), 3 one-extreme
    # (fires in one interval at a rate below 1, never elsewhere), 4 other (a ramp reaching neither)
    posn = np.flatnonzero(kind == 5)
    shape = rng.choice([1, 2, 3, 4], size=len(posn), p=[0.2, 0.2, 0.4, 0.2])
    t = np.arange(T)[:, None] / max(1, T - 1)
    a = rng.uniform(0, 0.8, len(posn))
    w = rng.uniform(0.08, 0.3, len(posn))
    period = rng.uniform(0.1, 0.3, len(posn))
    phase = rng.uniform(0, 1, len(posn))
    cut = rng.uniform(0.1, 0.9, len(posn))
    hi = rng.uniform(0.3, 0.8, len(posn))
    oscillatory = np.where(((t / period + phase) % 1.0) < 0.5, 0.995, 0.002)
    step = np.where((t < cut) == (rng.random(len(posn)) < 0.5), 0.995, 0.002)
    interval = np.where((t >= a) & (t <= a + w), hi, 0.002)
    ramp = 0.15 + 0.45 * t * np.ones(len(posn))
    prof = np.select([shape == 1, shape == 2, shape == 3], [oscillatory, step, interval], ramp)
    pos_count[:, posn] = rng.binomial(tokens_at_pos[:, None], np.clip(prof, 0, 1))

    # rare: a handful of firings anywhere
    rare = np.flatnonzero(kind == 2)
    rare_max = max(1, int(1e-4 * N))
    rc = rng.integers(1, rare_max + 1, len(rare))
    exact_i.append(np.repeat(rare, rc))
    exact_g.append(rng.integers(0, N, int(rc.sum())))

    # token detectors: nearly every occurrence of 1-3 mid-frequency tokens (BOS never)
    tokn = np.flatnonzero(kind == 3)
    lo, hi_ = 5, max(40, N // 200)
    pool = np.flatnonzero((hist >= lo) & (hist <= hi_))
    pool = pool[pool != 0] if bos else pool
    if len(pool) == 0:
        pool = np.flatnonzero(hist >= 1)[1:]
    if len(tokn) and len(pool):
        n_trig = rng.choice([1, 1, 1, 2, 2, 3], size=len(tokn))
        owner = np.repeat(tokn, n_trig)
        trig = pool[rng.integers(0, len(pool), len(owner))]
        g, which = _occurrences(tok_order, tok_sorted, trig, hist[trig])
        keep = rng.random(len(g)) < 0.97
        exact_i.append(owner[which][keep])
        exact_g.append(g[keep])

    # n-gram detectors: a frequent token, only after 1-3 particular previous tokens
    ngr = np.flatnonzero(kind == 4)
    if len(ngr) and len(big_sorted):
        n_ctx = rng.integers(1, 4, len(ngr))
        owner = np.repeat(ngr, n_ctx)
        frequent = np.flatnonzero(hist >= max(20, N // 500))
        frequent = frequent[frequent != 0] if len(frequent) > 1 else np.arange(1, V)
        cur = frequent[rng.integers(0, min(len(frequent), 200), len(owner))]
        # pick one real occurrence of each chosen current token; its bigram is the context
        starts = np.searchsorted(tok_sorted, cur)
        g0 = tok_order[starts + (rng.random(len(cur)) * np.maximum(hist[cur], 1)).astype(np.int64)]
        ok = (g0 % T) > 0
        owner, g0 = owner[ok], g0[ok]
        keys = flat[g0 - 1].astype(np.int64) * V + flat[g0]
        counts = np.searchsorted(big_sorted, keys, "right") - np.searchsorted(big_sorted, keys, "left")
        g, which = _occurrences(big_order, big_sorted, keys, counts)
        keep = rng.random(len(g)) < 0.95
        exact_i.append(owner[which][keep])
        exact_g.append(g[keep])

    ei, eg = np.concatenate(exact_i), np.concatenate(exact_g)
    key = np.unique(ei * N + eg)  # a neuron fires at most once per position
    ei, eg = key // N, key % N
    pos_count += np.bincount((eg % T) * F + ei, minlength=T * F).reshape(T, F)
    count = pos_count.sum(0)

    # events: exact under the cap, else a level sample of ~C/2..C
    level = np.zeros(F, np.int8)
    over = count > C
    level[over] = np.ceil(np.log2(count[over] / C)).astype(np.int8)
    known = np.zeros(F, bool)
    known[ei] = True
    ev_i, ev_g = [], []
    # neurons with exact firing positions: keep a random 2**-level share of them
    sel = rng.random(len(ei)) < 2.0 ** -level[ei].astype(np.float64)
    ev_i.append(ei[sel])
    ev_g.append(eg[sel])
    # neurons known only by pos_count: exact t's at level 0, inverse-CDF samples above
    rest = np.flatnonzero(~known & (count > 0))
    z = rest[level[rest] == 0]
    if len(z):
        pc = pos_count[:, z].T
        ts = np.repeat(np.tile(np.arange(T), len(z)), pc.ravel())
        ev_i.append(np.repeat(z, count[z]))
        ev_g.append(rng.integers(0, n_seq, len(ts)) * T + ts)
    s = rest[level[rest] > 0]
    if len(s):
        n_keep = np.maximum(1, rng.binomial(count[s], 2.0 ** -level[s].astype(np.float64)))
        cum = np.cumsum(pos_count[:, s].T, axis=1, dtype=np.float64)
        cum = cum / cum[:, -1:] + np.arange(len(s))[:, None]
        u = np.repeat(np.arange(len(s)), n_keep) + rng.random(int(n_keep.sum()))
        ts = np.searchsorted(cum.ravel(), u, side="right") % T
        ev_i.append(np.repeat(s, n_keep))
        ev_g.append(rng.integers(0, n_seq, len(ts)) * T + ts)
    key = np.unique(np.concatenate(ev_i) * N + np.concatenate(ev_g))
    ev_i, ev_g = key // N, key % N

    # activation values of the kept events; top-K contexts at most one per sequence
    mean = np.exp(rng.normal(0.0, 0.5, F)) * np.where((kind == 3) | (kind == 4), 2.5, 1.0)
    val = (mean[ev_i] * np.exp(rng.normal(0, 0.35, len(ev_i)))).astype(np.float32)
    seq = ev_g // T
    first = np.unique(ev_i * n_seq + seq, return_index=True)[1]  # one event per (neuron, sequence)
    top_idx, top_rank = _top_per_group(ev_i[first], val[first], K)
    top_idx = first[top_idx]
    top_val = np.full((K, F), -np.inf, np.float32)
    top_pos = np.full((K, F), -1, np.int64)
    top_val[top_rank, ev_i[top_idx]] = val[top_idx]
    top_pos[top_rank, ev_i[top_idx]] = ev_g[top_idx]
    act_max = np.full(F, -np.inf, np.float32)
    alive = count > 0
    act_max[alive] = np.maximum(top_val[0, alive], mean[alive] * 1.2).astype(np.float32)
    act_sum = (mean * count).astype(np.float32)
    count_pos = count.astype(np.int64)  # a ReLU model: every firing is positive

    out = _Layer()
    out.kind, out.shape_code = kind, np.zeros(F, np.uint8)
    out.shape_code[posn] = shape  # POS_SHAPES codes (above)
    out.pos_count = pos_count.astype(np.int32)
    out.count_pos = count_pos
    out.count = count.astype(np.int64)
    out.level = level
    out.ev_i, out.ev_g = ev_i, ev_g
    out.top_val, out.top_pos, out.act_max, out.act_sum = top_val, top_pos, act_max, act_sum
    out.mi = _mutual_information(pos_count, tokens_at_pos)
    return out


def _analysis(rng, lay: _Layer, flat, hist, F, T, V, bos, Kt, Kn, k):
    """The analysis and projection datasets of one layer, computed from its events."""
    ev_i, ev_g = lay.ev_i, lay.ev_g
    tok = flat[ev_g].astype(np.int64)
    keep = tok != 0 if bos else np.ones(len(tok), bool)
    uniq, cnt = np.unique(ev_i[keep] * V + tok[keep], return_counts=True)
    n_of, t_of = uniq // V, uniq % V
    weight = 2.0 ** lay.level.astype(np.float64)
    n_distinct = np.bincount(n_of, minlength=F).astype(np.int32)
    idx, rank = _top_per_group(n_of, cnt.astype(np.float64), Kt)
    trig_tok = np.full((F, Kt), -1, np.int32)
    trig_count = np.zeros((F, Kt), np.float32)
    trig_pfire = np.full((F, Kt), np.nan, np.float32)
    trig_tok[n_of[idx], rank] = t_of[idx]
    est = cnt[idx] * weight[n_of[idx]]
    trig_count[n_of[idx], rank] = est
    trig_pfire[n_of[idx], rank] = np.minimum(1.0, est / np.maximum(hist[t_of[idx]], 1))
    covered = (trig_pfire >= 0.95) & (trig_tok >= 0) & (hist[np.maximum(trig_tok, 0)] >= 5)
    coverage = np.where(lay.count > 0, (trig_count * covered).sum(1) / np.maximum(lay.count, 1), 0).astype(np.float32)

    prev_ok = (ev_g % T) > 0
    pi, pg = ev_i[prev_ok], ev_g[prev_ok]
    uniq, cnt = np.unique((pi * V + flat[pg - 1]) * V + flat[pg], return_counts=True)
    n_of = uniq // (V * V)
    idx, rank = _top_per_group(n_of, cnt.astype(np.float64), Kn)
    ngram_prev = np.full((F, Kn), -1, np.int32)
    ngram_tok = np.full((F, Kn), -1, np.int32)
    ngram_count = np.zeros((F, Kn), np.float32)
    ngram_prev[n_of[idx], rank] = (uniq[idx] // V) % V
    ngram_tok[n_of[idx], rank] = uniq[idx] % V
    ngram_count[n_of[idx], rank] = cnt[idx] * weight[n_of[idx]]

    alive = lay.count > 0
    positional = alive & (lay.mi > 0.05)
    flags = np.zeros(F, kinds.FLAG_DTYPE)
    for name, mask in (("dead", ~alive), ("rare", alive & (lay.kind == 2)), ("token", alive & (lay.kind == 3)),
                       ("ngram", alive & (lay.kind == 4)), ("positional", positional)):
        flags[mask] |= kinds.FLAG_DTYPE(kinds.mask_bit(name))
    pos_shape = np.where(positional, np.where(lay.shape_code > 0, lay.shape_code, 4), 0).astype(np.uint8)
    pos_strong = (positional & (pos_shape <= 2)).astype(np.uint8)  # the generated indicators are exact
    run = np.argsort(-lay.pos_count, axis=0, kind="stable")[0]  # the peak position, as a one-position run
    pos_range = np.where(positional[:, None], np.stack([run, run], 1), -1).astype(np.int32)

    # projection: random promoted/suppressed lists; detectors mostly suppress their own triggers
    promoted_tok = rng.integers(1, V, (F, k)).astype(np.int32)
    suppressed_tok = rng.integers(1, V, (F, k)).astype(np.int32)
    scale = np.exp(rng.normal(0, 0.3, F))[:, None]
    promoted_score = (np.sort(np.abs(rng.normal(0, 1, (F, k))), 1)[:, ::-1] + 1.5) * scale
    suppressed_score = -(np.sort(np.abs(rng.normal(0, 1, (F, k))), 1)[:, ::-1] + 1.5) * scale
    supp_rank = rng.integers(k, V, (F, Kt)).astype(np.int32)
    detector = kinds.has(flags, "token") | kinds.has(flags, "ngram")
    suppress = detector & (rng.random(F) < 0.85)
    for n in np.flatnonzero(suppress):
        trig = trig_tok[n][trig_tok[n] >= 0][: k // 2]
        ranks = np.sort(rng.choice(k, len(trig), replace=False))
        suppressed_tok[n, ranks] = trig
        supp_rank[n, : len(trig)] = ranks
    cand_tok = trig_tok.copy()
    cand_score = rng.normal(0.2, 0.5, (F, Kt)).astype(np.float32)
    in_top = supp_rank < k
    cand_score[in_top] = np.take_along_axis(suppressed_score, np.minimum(supp_rank, k - 1), 1)[in_top]
    supp_rank[trig_tok < 0] = -1
    cand_score[trig_tok < 0] = np.nan
    return {
        "flags": flags, "pos_mi": lay.mi, "pos_shape": pos_shape, "pos_strong": pos_strong, "pos_range": pos_range,
        "n_distinct": n_distinct,
        "trig_tok": trig_tok, "trig_count": trig_count, "trig_pfire": trig_pfire, "trig_coverage": coverage,
        "trig_supp_rank": supp_rank.copy(), "ngram_prev": ngram_prev, "ngram_tok": ngram_tok,
        "ngram_count": ngram_count, "trig_explains": covered.astype(np.uint8),
        "ngram_coverage": np.zeros(F, np.float32),
    }, {
        "promoted_tok": promoted_tok, "promoted_score": promoted_score.astype(np.float32),
        "suppressed_tok": suppressed_tok, "suppressed_score": suppressed_score.astype(np.float32),
        "cand_tok": cand_tok, "cand_score": cand_score, "cand_supp_rank": supp_rank,
        "cand_cos_in": np.full((F, Kt), np.nan, np.float32),
    }, covered


def make_summary(path, n_layers: int, n_neurons: int, seq_len: int = 64, n_seq: int = 256, vocab: int = 4096,
                 seed: int = 0, *, events_cap: int = 32, top_k: int = 8, model: str = "synthetic/opt-like",
                 architecture: str = "opt", complete: bool = True, n_seq_planned: int | None = None,
                 analysis: bool = True, projection: bool = True, bos: bool = True, triggers_kept: int = 10,
                 ngrams_kept: int = 10, k_projection: int = 10) -> Path:
    """Write a synthetic summary to `path` and return the path (see the module docstring).

    `complete=False` makes a checkpoint-like file (n_seq of `n_seq_planned` sequences, no groups unless
    asked); `analysis=False` / `projection=False` leave those groups out; a gated `architecture` fires by |h|.
    """
    path = Path(path)
    L, F, T, V, C, K = n_layers, n_neurons, seq_len, vocab, events_cap, top_k
    rng = np.random.default_rng(seed)
    names = make_vocab(V)
    tokens = _zipf_tokens(rng, (n_seq, T), V, bos)
    flat = tokens.ravel()
    N = flat.size
    hist = np.bincount(flat, minlength=V).astype(np.int64)
    tok_order = np.argsort(flat, kind="stable")
    tok_sorted = flat[tok_order]
    bigram = np.where(np.arange(N) % T > 0, np.roll(flat, 1).astype(np.int64) * V + flat, -1)
    big_order = np.argsort(bigram, kind="stable")
    big_sorted = bigram[big_order]
    first_valid = np.searchsorted(big_sorted, 0)
    big_order, big_sorted = big_order[first_valid:], big_sorted[first_valid:]

    corpus = {"source": "synthetic", "zipf": 1.07, "vocab": V, "seed": seed}
    key = hashlib.sha256(json.dumps([model, L, F, T, n_seq, V, seed, C, K], sort_keys=True).encode()).hexdigest()
    attrs = {
        "tool_version": "synthetic", "model": model, "model_revision": "", "architecture": "opt", "rule": "relu",
        "threshold": 0.0, "tau_source": "fixed", "n_layers": L, "n_neurons": F, "seq_len": T, "n_seq": n_seq,
        "n_seq_planned": n_seq_planned or n_seq, "n_tokens": N, "bos": int(bos), "events_cap": C, "top_k": K,
        "corpus": corpus, "settings": {"events_cap": C, "top_k": K, "seed": seed}, "key": key,
        "complete": bool(complete),
    }
    per_layer = {n: np.zeros(L, np.int64) for n in ("layer_covered", "layer_new", "layer_new_vs_prev",
                                                      "layer_detectors_known")}
    supp_share, neg_share = np.zeros(L, np.float32), np.zeros(L, np.float32)
    seen: set = set()
    prev: set = set()
    n_events = 0
    A, P = schema.ANALYSIS_GROUP, schema.PROJECTION_GROUP
    with SummaryWriter(path) as w:
        w.set_attrs(attrs)
        w.put("tokens", tokens)
        w.put("vocab", names)
        w.put("token_occ", np.bincount((tokens[:, 1:] if bos else tokens).ravel(), minlength=V).astype(np.int64))
        w.put("tau", np.zeros(L, np.float32))
        w.put("tokens_at_pos", np.full(T, n_seq, np.int64))
        w.create("event_offsets", (L, F + 1), np.int64)
        w.create("event_pos", (0,), np.int32)
        shapes = {"act_count": ((L, F), np.int64), "act_count_pos": ((L, F), np.int64),
                  "pos_count": ((L, T, F), np.uint16 if n_seq < 2**16 else np.int32), "act_sum": ((L, F), np.float32),
                  "act_sum_pos": ((L, F), np.float32), "act_max": ((L, F), np.float32),
                  "top_val": ((L, K, F), np.float32), "top_pos": ((L, K, F), np.int64), "event_level": ((L, F), np.int8)}
        for name, (shape, dtype) in shapes.items():
            w.create(name, shape, dtype)
        values = SyntheticValues(w, L, F, T, N, K, seed, architecture)  # schema 3's statistics (synthetic_values)
        for l in range(L):
            lay = _make_layer(rng, l, L, F, T, n_seq, flat, hist, tok_order, tok_sorted, big_order, big_sorted, V, C, K, bos)
            values.write(l, lay)
            for name, value in (("act_count", lay.count), ("act_count_pos", lay.count_pos), ("pos_count", lay.pos_count),
                                ("act_sum", lay.act_sum), ("act_sum_pos", lay.act_sum), ("act_max", lay.act_max),
                                ("top_val", lay.top_val), ("top_pos", lay.top_pos), ("event_level", lay.level)):
                w.write(name, l, value)
            w.write("event_offsets", l, n_events + np.concatenate([[0], np.cumsum(np.bincount(lay.ev_i, minlength=F))]))
            w.append("event_pos", lay.ev_g.astype(np.int32))
            n_events += len(lay.ev_g)
            if not (analysis or projection):
                continue
            a, p, covered = _analysis(rng, lay, flat, hist, F, T, V, bos, triggers_kept, ngrams_kept, k_projection)
            values.families(l, lay, a["flags"], p if projection else None)
            for group, arrays, wanted in ((A, a, analysis), (P, p, projection)):
                for name, value in arrays.items() if wanted else ():
                    if l == 0:
                        w.create(name, (L,) + value.shape, value.dtype, group=group)
                    w.write(name, l, value, group=group)
            token_det = kinds.has(a["flags"], "token")
            cov = set(a["trig_tok"][covered & token_det[:, None]].tolist())
            per_layer["layer_covered"][l] = len(cov)
            per_layer["layer_new"][l] = len(cov - seen)
            per_layer["layer_new_vs_prev"][l] = len(cov - prev)
            seen |= cov
            prev = cov
            n_det = max(1, int(token_det.sum()))
            per_layer["layer_detectors_known"][l] = int(token_det.sum())
            ranks = a["trig_supp_rank"][token_det]
            supp_share[l] = float(((ranks >= 0) & (ranks < 10)).any(1).sum()) / n_det
            scores = p["cand_score"][token_det]
            neg_share[l] = float(np.all((scores < 0) | np.isnan(scores), axis=1).sum()) / n_det
        if analysis:
            for name, value in {**per_layer, "layer_supp_share": supp_share, "layer_neg_share": neg_share}.items():
                w.put(name, value, group=A)
            params = {"min_fire_rate": 0.95, "min_coverage": 0.95, "max_tokens": 5, "min_token_count": 5,
                      "rare_rate": 1e-4, "mi_threshold": 0.05, "max_ngrams": 50, "n_triggers": triggers_kept,
                      "n_ngrams": ngrams_kept}
            w.set_attrs({"analysis_version": schema.ANALYSIS_VERSION, "params": json.dumps(params, sort_keys=True),
                         "n_triggers": triggers_kept, "n_ngrams": ngrams_kept, "bos_excluded": bool(bos),
                         "has_projection": bool(projection), "synthetic": True}, group=A)
        if projection:
            w.set_attrs({"k": k_projection, "n_candidates": triggers_kept, "tied_embeddings": True,
                         "project_out": False, "oriented": False, "candidates_complete": True,
                         **PROJECTION_ATTRS}, group=P)
    return path
