"""Planted ground truth for the analysis: synthetic summaries and an engineered tiny OPT.

`write_firing_summary` turns an explicit firing matrix into a summary exactly as collection defines it
(docs/design.md: exact counts, level-sampled events with the accumulators' position hash), so the
analysis can be checked against answers known by construction.

`planted_opt` builds a tiny OPT whose chosen FFN neurons are, by construction of the weights, dead,
token detectors, a bigram detector and position-range indicators, while the others have random
weights. How it works (layer 0; every vector below is orthogonal to the all-ones vector, so OPT's
LayerNorms reduce to a constant rescaling):
- token embeddings e_v = s_tok * u_v and position embeddings p_t = s_pos * q_t with {u_v}, {q_t}
  orthonormal and in orthogonal subspaces, so token identity and position are separately readable;
- attention: one head whose query reads q_t and whose key maps q_s to q_{s+1}, with a large scale, so
  position t >= 1 attends to t - 1 only; its value maps u_v to a third subspace r_v: after attention
  the residual holds (token, position, previous token) in three orthogonal subspaces, all of fixed norm;
- FFN neurons read those subspaces through fc1 rows: a token detector's row is u_a (fires iff the
  token is a), a bigram detector's row is u_b + r_a (fires iff previous a and current b), a range
  indicator's row sums q_t over its interval, a dead neuron has a zero row and a negative bias;
  random neurons get random rows with the position subspace projected out (they are not positional)
  and random update columns in the spare subspace.
  Token detectors get activation exactly 1 on their token, and their fc2 column is minus the token's
  embedding (the update erases the token, as the paper finds for real detectors).
Layer 1 has no attention output; it plants a second token detector (a new token for coverage over
depth) and a dead neuron; its other neurons are random.

`planted_llama` builds a one-layer Llama whose unembedding has a planted effective null direction and
a strong token-frequency direction, and `set_out` writes a neuron's output vector, so a test plants
prediction, suppression, entropy and token-frequency neurons in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

from neuron_tui.cache import schema, write_summary
from neuron_tui.core.model.adapters import ffn_out_projections
from neuron_tui.core.read.queries import CONTEXT_LEFT, CONTEXT_RIGHT
from neuron_tui.core.read.sampling import token_levels

# ---------------------------------------------------------------------------------------------------
# synthetic summaries


def final_levels(positions: np.ndarray, cap: int) -> int:
    """Smallest level L with at most `cap` of these firing positions having z(g) >= L."""
    z = token_levels(np.asarray(positions, dtype=np.int64))
    level = 0
    while (z >= level).sum() > cap:
        level += 1
    return level


def write_firing_summary(
    path: Path,
    tokens: np.ndarray,
    fired: np.ndarray,
    vocab: list[str],
    *,
    bos: bool = True,
    cap: int = 1 << 20,
    top_k: int = 3,
    groups: dict | None = None,
    levels: np.ndarray | None = None,
    events: list[list[np.ndarray]] | None = None,
    seq_index: np.ndarray | None = None,
) -> dict:
    """Write a complete summary of firing matrix `fired` [L, S, T, F] (bool) over `tokens` [S, T].

    The activation is h = 1 where a neuron fires and 0 elsewhere (a ReLU model, tau = 0): h_sum is the
    firing count, each top context's window holds the 0/1 values around it, and every firing lands in
    the histogram bin of 1. Events are the level-sampled firing positions (cap `cap`); `levels` [L, F]
    and `events` (per layer a list of F arrays of global positions) override them for hand-made samples.
    `seq_index`: the global sequence of each row (a shard of a larger corpus): positions are then
    seq * T + t. Returns the arrays.
    """
    tokens = np.asarray(tokens, dtype=np.int32)
    fired = np.asarray(fired, dtype=bool)
    L, S, T, F = fired.shape
    act_count = fired.sum((1, 2)).astype(np.int64)
    pos_count = fired.sum(1).astype(np.int32)  # [L, T, F]
    top_val = np.full((L, top_k, F), -np.inf, np.float32)
    top_pos = np.full((L, top_k, F), -1, np.int64)
    ev_level = np.zeros((L, F), np.int8)
    offsets = np.zeros((L, F + 1), np.int64)
    all_events = []
    for layer in range(L):
        flat = fired[layer].reshape(S * T, F)
        for i in range(F):
            g = np.flatnonzero(flat[:, i])
            if seq_index is not None:
                g = np.asarray(seq_index, dtype=np.int64)[g // T] * T + g % T
            # top contexts: the first firing of up to top_k different sequences
            seqs = []
            for pos in g:
                if pos // T not in seqs:
                    seqs.append(pos // T)
                    top_pos[layer, len(seqs) - 1, i] = pos
                    top_val[layer, len(seqs) - 1, i] = 1.0
                if len(seqs) == top_k:
                    break
            if events is not None:
                kept = np.sort(np.asarray(events[layer][i], dtype=np.int64))
                ev_level[layer, i] = 0 if levels is None else levels[layer, i]
            else:
                lv = final_levels(g, cap) if levels is None else int(levels[layer, i])
                kept = g[token_levels(g) >= lv] if lv else g
                ev_level[layer, i] = lv
            all_events.append(kept)
            offsets[layer, i + 1] = offsets[layer, i] + kept.size
        if layer + 1 < L:  # offsets are global: layer l + 1 starts where layer l ended
            offsets[layer + 1, 0] = offsets[layer, F]
    event_pos = np.concatenate(all_events) if all_events else np.zeros(0, np.int64)
    # the window of h = fired around each top context (NaN off the sequence and in empty slots)
    t = (top_pos % T)[:, :, None, :] + np.arange(-CONTEXT_LEFT, CONTEXT_RIGHT + 1)[None, None, :, None]
    inside = (t >= 0) & (t < T) & (top_pos >= 0)[:, :, None, :]
    seq = np.searchsorted(np.arange(S) if seq_index is None else np.asarray(seq_index), top_pos // T)
    window = fired[np.arange(L)[:, None, None, None], np.clip(seq, 0, S - 1)[:, :, None, :], np.clip(t, 0, T - 1),
                   np.arange(F)]
    hist_edges = np.tile(np.concatenate([[0.0], np.geomspace(2.0**-13, 2.0, schema.HIST_BINS)]), (L, 1))
    hist_count = np.zeros((L, schema.HIST_BINS, F), np.int32)
    hist_count[:, np.searchsorted(hist_edges[0, 1:-1], 1.0, side="right")] = act_count
    arrays = {
        "tokens": tokens,
        "vocab": list(vocab),
        "tau": np.zeros(L, np.float32),
        "tokens_at_pos": np.full(T, S, np.int64),
        "act_count": act_count,
        "pos_count": pos_count,
        "token_occ": np.bincount((tokens[:, 1:] if bos else tokens).ravel(), minlength=len(vocab)).astype(np.int64),
        "act_sum": act_count.astype(np.float32),
        "act_count_pos": act_count,
        "act_sum_pos": act_count.astype(np.float32),
        "act_max": np.where(act_count > 0, 1.0, -np.inf).astype(np.float32),
        "top_val": top_val,
        "top_pos": top_pos,
        "event_level": ev_level,
        "event_offsets": offsets,
        "event_pos": event_pos.astype(np.int64),
        "h_sum": act_count.astype(np.float64),
        "ctx_val": np.where(inside, window, np.nan).astype(np.float16),
        "hist_edges": hist_edges.astype(np.float32),
        "hist_count": hist_count,
    }
    if seq_index is not None:
        arrays["seq_index"] = np.asarray(seq_index, dtype=np.int64)
    attrs = {
        "model": "synthetic",
        "architecture": "opt",
        "n_layers": L,
        "n_neurons": F,
        "seq_len": T,
        "n_seq": S,
        "n_seq_planned": S,
        "n_tokens": S * T,
        "bos": int(bos),
        "events_cap": cap,
        "top_k": top_k,
        "ctx_left": CONTEXT_LEFT,
        "ctx_right": CONTEXT_RIGHT,
        "rule": "relu",
        "threshold": 0.0,
        "tau_source": "fixed",
        "corpus": {"source": "synthetic"},
        "complete": True,
    }
    write_summary(Path(path), attrs, arrays, groups)
    return arrays


# ---------------------------------------------------------------------------------------------------
# the engineered OPT


@dataclass
class Plan:
    """Which neurons of which layer were planted as what (keys: (layer, neuron))."""

    dead: list[tuple[int, int]] = field(default_factory=list)
    token: dict[tuple[int, int], int] = field(default_factory=dict)  # -> token id
    bigram: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)  # -> (prev, token)
    range: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)  # -> (first, last) position
    random: dict[int, list[int]] = field(default_factory=dict)  # layer -> neurons with random weights
    bos_id: int = 2
    seq_len: int = 32


def planted_opt(
    vocab_size: int = 24, seq_len: int = 32, ffn_dim: int = 32, seed: int = 0
) -> tuple[OPTForCausalLM, Plan]:
    """A 2-layer OPT (ReLU) with planted neurons; see the module docstring. Returns (model, plan).

    Layer 0: neuron 0 dead; 1 detects token 5; 2 detects token 7; 3 detects the bigram (9, 11)
    (token 11 right after token 9); 4 fires exactly at positions 8..15; 5 at positions 20..23;
    the rest random. Layer 1: neuron 0 dead; 1 detects token 13; the rest random.
    """
    V, T, F = vocab_size, seq_len, ffn_dim
    spare = 8
    d = 1 + V + T + V + spare
    d += (-d) % 4
    gen = torch.Generator().manual_seed(seed)
    config = OPTConfig(
        vocab_size=V,
        hidden_size=d,
        num_hidden_layers=2,
        ffn_dim=F,
        num_attention_heads=1,
        max_position_embeddings=T,
        word_embed_proj_dim=d,
        do_layer_norm_before=True,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=2,
        dropout=0.0,
        attention_dropout=0.0,
        activation_function="relu",
        tie_word_embeddings=True,
    )
    model = OPTForCausalLM(config).eval()
    # an orthonormal basis whose first vector is the all-ones direction
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    a[:, 0] = 1.0
    Q, _ = torch.linalg.qr(a)
    Q = Q.to(torch.float32)
    u = Q[:, 1 : 1 + V].t()  # [V, d] token directions
    q = Q[:, 1 + V : 1 + V + T].t()  # [T, d] position directions
    r = Q[:, 1 + V + T : 1 + 2 * V + T].t()  # [V, d] previous-token directions
    sp = Q[:, 1 + 2 * V + T :].t()  # spare directions
    s_tok, s_pos = 1.0, 1.0
    plan = Plan(seq_len=T)
    dec = model.model.decoder
    with torch.no_grad():
        dec.embed_tokens.weight.copy_(s_tok * u)
        pos_w = torch.zeros_like(dec.embed_positions.weight)
        pos_w[2 : 2 + T] = s_pos * q  # OPT's learned positions are offset by 2
        dec.embed_positions.weight.copy_(pos_w)
        for layer in dec.layers:
            att = layer.self_attn
            for lin in (att.q_proj, att.k_proj, att.v_proj, att.out_proj):
                lin.weight.zero_()
                lin.bias.zero_()
            layer.fc1.bias.zero_()
            layer.fc2.bias.zero_()
        # LayerNorm of x = e + p (norm^2 = s_tok^2 + s_pos^2, mean 0): x * g1 with g1 = sqrt(d) / |x|
        g1 = (d / (s_tok**2 + s_pos**2)) ** 0.5
        att = dec.layers[0].self_attn
        beta = 60.0 * att.head_dim**0.5 / g1**2  # logit of the previous position: 60
        att.q_proj.weight.copy_(beta * q.t() @ q)  # q_t -> beta q_t
        shift = torch.zeros(d, d)
        for t in range(T - 1):
            shift += torch.outer(q[t + 1], q[t])  # q_t -> q_{t+1}
        att.k_proj.weight.copy_(shift)
        att.v_proj.weight.copy_(r.t() @ u)  # u_v -> r_v
        att.out_proj.weight.copy_(torch.eye(d))
        # after attention: x + g1 * s_tok * r_prev; LayerNorm again rescales by g2
        prev_norm = g1 * s_tok
        g2 = (d / (s_tok**2 + s_pos**2 + prev_norm**2)) ** 0.5
        tok_read = g2 * s_tok  # the u_v component after the FFN LayerNorm
        pos_read = g2 * s_pos
        prev_read = g2 * prev_norm
        L0, L1 = dec.layers
        fc1 = torch.randn(F, d, generator=gen) * 0.5
        fc1 -= (fc1 @ q.t()) @ q  # random neurons do not read position: they must not look positional
        fc1_b = torch.zeros(F)
        fc2 = torch.randn(d, F, generator=gen) * 0.02
        fc2 = sp.t() @ (sp @ fc2) + 0.01 * (u.t() @ (u @ fc2))  # random updates: spare dims + a little token signal
        # neuron 0: dead
        fc1[0], fc1_b[0] = 0.0, -1.0
        plan.dead.append((0, 0))
        # neurons 1, 2: token detectors, activation exactly 1 on the token, update = -embedding
        for i, tok in ((1, 5), (2, 7)):
            fc1[i], fc1_b[i] = 2.0 * u[tok] / tok_read, -1.0
            fc2[:, i] = -dec.embed_tokens.weight[tok]
            plan.token[(0, i)] = tok
        # neuron 3: bigram (9, 11)
        fc1[3], fc1_b[3] = u[11] / tok_read + r[9] / prev_read, -1.5
        plan.bigram[(0, 3)] = (9, 11)
        # neurons 4, 5: position ranges
        for i, (lo, hi) in ((4, (8, 15)), (5, (20, 23))):
            fc1[i], fc1_b[i] = q[lo : hi + 1].sum(0) / pos_read, -0.5
            plan.range[(0, i)] = (lo, hi)
        plan.random[0] = list(range(6, F))
        fc2[:, [0, 3, 4, 5]] = 0.0  # no position or bigram signal leaks into layer 1's random neurons
        L0.fc1.weight.copy_(fc1)
        L0.fc1.bias.copy_(fc1_b)
        L0.fc2.weight.copy_(fc2)
        # layer 1: no attention output; a token detector for 13 and a dead neuron
        fc1 = torch.randn(F, d, generator=gen) * 0.5
        fc1 -= (fc1 @ q.t()) @ q
        fc1_b = torch.zeros(F)
        fc1[0], fc1_b[0] = 0.0, -1.0
        plan.dead.append((1, 0))
        # the residual's LayerNorm scale varies with the token here (layer 0 erased tokens 5 and 7),
        # but the u_13 component is nonzero only on token 13: any positive reading separates it
        fc1[1], fc1_b[1] = u[13] / tok_read, -0.05
        plan.token[(1, 1)] = 13
        plan.random[1] = list(range(2, F))
        fc2 = torch.randn(d, F, generator=gen) * 0.02
        fc2[:, 1] = -dec.embed_tokens.weight[13]
        L1.fc1.weight.copy_(fc1)
        L1.fc1.bias.copy_(fc1_b)
        L1.fc2.weight.copy_(fc2)
    return model, plan


@torch.no_grad()
def ffn_activations(model: OPTForCausalLM, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """[B, T, F] input of each layer's fc2 (the neurons) for `input_ids` [B, T], by forward pre-hooks."""
    B, T = input_ids.shape
    seen: list[torch.Tensor] = []
    hooks = [
        layer.fc2.register_forward_pre_hook(lambda _m, args: seen.append(args[0].reshape(B, T, -1).clone()))
        for layer in model.model.decoder.layers
    ]
    try:
        model(input_ids=input_ids)
    finally:
        for h in hooks:
            h.remove()
    return seen


def planted_corpus(n_seq=320, T=32, seed=0):
    """Random tokens 3..23 except 9; the bigram (9, 11) planted after 4 or 6 in every 4th sequence."""
    rng = np.random.default_rng(seed)
    pool = np.array([t for t in range(3, 24) if t != 9])
    tokens = rng.choice(pool, size=(n_seq, T))
    tokens[:, 0] = 2  # BOS
    for i in range(0, n_seq, 4):
        o = rng.integers(1, T - 3)
        tokens[i, o : o + 3] = [4 if i % 8 else 6, 9, 11]
    return tokens


def planted_tokenizer(model: OPTForCausalLM, plan: Plan):
    """The word-level tokenizer of the planted OPT: token i is the word t<i> (two digits, so the special
    BOS word is not a prefix of another word: "t2" of "t23"); every encoding starts with BOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i:02d}": i for i in range(model.config.vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t00"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bos = f"t{plan.bos_id:02d}"
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, plan.bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, unk_token="t00")


def planted_text(ids) -> str:
    """The words of token ids (BOS excluded: the tokenizer adds it)."""
    return " ".join(f"t{int(i):02d}" for i in ids)


def write_planted_corpus(tokens: np.ndarray, path: Path) -> Path:
    """Each row of `tokens` [S, T] (BOS first) as one jsonl document of its words; the collection packs
    them back into the same rows."""
    import json

    with open(path, "w") as f:
        for row in tokens:
            f.write(json.dumps({"text": planted_text(row[1:])}) + "\n")
    return path


def save_planted(folder: Path, **kwargs) -> tuple[Path, Plan]:
    """The planted OPT and its tokenizer as a model folder the command line loads by path."""
    model, plan = planted_opt(**kwargs)
    model.save_pretrained(folder)
    planted_tokenizer(model, plan).save_pretrained(folder)
    return folder, plan


def collect_planted(model: OPTForCausalLM, plan: Plan, tokens: np.ndarray, folder: Path, **settings) -> Path:
    """Run the real collection on `tokens` [S, T] (BOS first): each row becomes one text document
    of words t<id>, packed back into the same rows by the planted tokenizer."""
    from neuron_tui.core.model.collect import collect
    from neuron_tui.core.model.loading import LoadedModel
    from neuron_tui.core.model.plan import Settings, make_plan
    from neuron_tui.core.sources import ModelSource

    corpus = write_planted_corpus(tokens, folder / "planted.jsonl")
    S, T = tokens.shape
    s = Settings(corpus=str(corpus), n_tokens=S * T, seq_len=T, batch_size=16, **settings)
    plan_ = make_plan("planted-opt", model.config, s, "cpu", out=folder / "planted.h5")
    return collect(LoadedModel(model, planted_tokenizer(model, plan), ModelSource("planted-opt", "memory"), ""),
                   plan_, quiet=True)


# ---- the later families: a one-layer Llama with a planted null direction and frequency direction -------

def zipf_counts(V: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.floor(5000.0 / (rng.permutation(V) + 1.0) ** 1.1).astype(np.int64)


D, V, F = 256, 1000, 40  # wide enough for one token's cosine to stand out of V random ones
DARK = 0.01  # the planted null directions are effective ones: U's rows reach them at 1% of their typical size


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x)


def planted_llama(seed: int = 0):
    """A one-layer Llama whose unembedding has a planted (effective) null direction n and a strong
    token-frequency direction; the final norm's gain far from constant."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
                                         tie_word_embeddings=False)).eval()
    rng = np.random.default_rng(seed)
    counts = zipf_counts(V, seed)
    f = np.log1p(counts)
    f -= f.mean()
    n, u_f = np.linalg.qr(rng.normal(size=(D, 2)))[0].T  # orthonormal: the null and the frequency directions
    U = rng.normal(size=(V, D)) + 3.0 * np.outer(f / f.std(), u_f)
    U += np.outer((DARK - 1) * (U @ n), n)
    gain = rng.uniform(0.3, 3.0, D)
    with torch.no_grad():
        model.lm_head.weight.copy_(torch.as_tensor(U))
        model.model.norm.weight.copy_(torch.as_tensor(gain))
        model.model.layers[0].mlp.down_proj.weight.copy_(torch.as_tensor(rng.normal(size=(D, F))))
    return model, counts, n, gain


def set_out(model, neuron: int, w: np.ndarray) -> None:
    with torch.no_grad():
        ffn_out_projections(model)[0].weight[:, neuron] = torch.as_tensor(w, dtype=torch.float32)
