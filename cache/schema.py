"""The names and version of the HDF5 summary, in one place, so writer, reader and other tools agree.

A summary is one HDF5 file. Everything is layer-major (axis 0 is the layer) and chunked so that one
layer, or one neuron of one layer, is read without touching the rest: the explorer opens a summary of
OPT-66b (64 layers x 36,864 neurons) on a laptop by reading one layer at a time.

Root attributes: listed below with their meaning. Datasets: `DATASETS`; shapes use L layers, F neurons
per layer, T = seq_len, S = n_seq sequences, K = top-k contexts, V = vocabulary size, E = kept events.

These names are read by other tools and never change meaning: schema_version, model, n_tokens, rule,
threshold, tokens, act_count, pos_count. Anything else may grow in a later schema version, which bumps
`SCHEMA_VERSION` (readers refuse versions newer than theirs).

Integrity (schema 2). Files are written with HDF5's latest format, whose metadata (superblock, object
headers, chunk indexes) carries checksums, and every non-empty numeric dataset is chunked with the
`fletcher32` checksum filter, so a damaged byte anywhere in them is an error on read, never a silently
different number. Nothing is stored as a variable-length string: those live in HDF5's global heap,
which has no checksum and whose damage can hang the library while it reads; text is fixed-length UTF-8
attributes and the vocabulary two numeric datasets. What the checksums do not cover (attribute values,
empty datasets) is covered by the root attribute `integrity`: the SHA-256 of every group's attributes,
and each dataset's shape, dtype and (for the unfiltered ones) the SHA-256 of its contents.
`docs/design.md` says why each choice.
"""

SCHEMA_VERSION = 3
# 1: before checksums and token_occ (read without verification); 2: analysis/flags uint8 (5 kinds)
READABLE_VERSIONS = (1, 2, 3)
FORMAT = "neuron-tui summary"  # root attribute `format`: tells our files from any other HDF5 file
INTEGRITY_ATTR = "integrity"  # root attribute: JSON digest record (see the module docstring)

# Root attributes written by collection (`corpus`, `settings` and `model_fingerprint` are JSON strings):
#   format: FORMAT
#   schema_version: SCHEMA_VERSION at write time
#   tool_version: neuron-tui version that wrote the file
#   model: model id as resolved (e.g. facebook/opt-1.3b, smollm2)
#   model_revision: hub commit or GGUF file name + size; "" when unknown
#   model_fingerprint: JSON: what identifies the weights (core.fingerprint), checked by open / probe
#   architecture: config.model_type (opt, gpt2, llama, ...)
#   rule: "relu" (fired iff h > tau) or "abs" (fired iff |h| > tau)
#   threshold: relu: the fixed tau; abs: the calibration quantile, or the fixed tau (see tau_source)
#   tau_source: "fixed" or "quantile"
#   n_layers
#   n_neurons: F, neurons per layer
#   seq_len: T
#   n_seq: sequences collected so far (all of them when complete)
#   n_seq_planned: sequences the run was asked for
#   n_tokens: n_seq * seq_len
#   bos: 1 when each sequence starts with the model's BOS token (excluded from detectors)
#   events_cap: C, the bound of each neuron's uniform event sample
#   top_k: K, top activating contexts per neuron
#   corpus: JSON: corpus identity (source, content hash, seed)
#   corpus_exhausted: True when the corpus ran out before n_seq_planned sequences
#   key: hex digest of everything that identifies the run (the cache file is named by it)
#   complete: False while collection is still checkpointing into this file
#   shard: "K/N" (or "K1,K2/N"): the summary counts only the planned sequences i with i % N in K; "0/1" = all
#   base_key: the key of the whole run the shard belongs to (equal to `key` when shard is "0/1")
#   device: where it was collected ("cpu", "cuda"): the probe loads the model there by default
#   dtype: the activations' precision (fp32, bf16, fp16): the probe uses it on that device

# attributes a reader cannot do without (a file missing one is corrupt)
REQUIRED_ATTRS = ("model", "rule", "n_layers", "n_neurons", "seq_len", "n_seq", "n_tokens")

# name -> (dtype, axes) of the datasets written by collection
DATASETS = {
    "tokens": ("int32", "S,T"),  # the token stream, sequence-major
    "vocab_utf8": ("uint8", "B"),  # the text of every token id, UTF-8, concatenated (no tokenizer is
    "vocab_offsets": ("int64", "V+1"),  # needed to read): token v is vocab_utf8[off[v]:off[v+1]]
    "token_occ": ("int64", "V"),  # occurrences of each token outside the BOS position (schema 2)
    "tau": ("float32", "L"),  # firing threshold per layer
    "tokens_at_pos": ("int64", "T"),  # sequences that reached position t
    "act_count": ("int64", "L,F"),  # tokens on which the neuron fired (exact)
    "act_count_pos": ("int64", "L,F"),  # ... of them with h > 0 (the rest fired negative; schema 2)
    "pos_count": ("uint16|int32", "L,T,F"),  # firings at each position (exact; uint16 while S < 65,536)
    "act_sum": ("float32", "L,F"),  # sum of h over firing tokens (signed; its sign orients projections)
    "act_sum_pos": ("float32", "L,F"),  # ... over the firings with h > 0 (schema 2)
    "act_max": ("float32", "L,F"),  # largest activation value seen (h for relu, |h| for abs)
    "top_val": ("float32", "L,K,F"),  # top-K activation values, descending (-inf padded)
    "top_pos": ("int64", "L,K,F"),  # their global token positions g = seq * T + t (-1 padded)
    "event_level": ("int8", "L,F"),  # sampling level: each kept event stands for 2**level firings
    "event_offsets": ("int64", "L,F+1"),  # neuron (l, i) events are event_pos[off[l,i]:off[l,i+1]]
    "event_pos": ("int32", "E"),  # global token positions of kept firing events, ascending per neuron
    # (int32 on disk since a run indexes < 2**31 tokens; the reader returns int64)
}
# the datasets schema 1 files lack (readers derive what they need, or say it is unknown); schema 1 held
# the vocabulary as one dataset `vocab` of variable-length strings
ADDED_IN_2 = ("token_occ", "act_count_pos", "act_sum_pos", "vocab_utf8", "vocab_offsets")

# Datasets that may be absent. A shard summary stores only its own token rows: `tokens` row r holds
# global sequence seq_index[r] (positions g = seq_index[r] * T + t keep one position space for all
# shards, so they merge exactly); without `seq_index` row r is sequence r.
OPTIONAL_DATASETS = {
    "seq_index": ("int64", "S"),  # global sequence index of each row of `tokens`, ascending
    "sign_count": ("int64", "L,4,F"),
}

# Groups written after the pass. `projection` needs the model's weights (made during collection);
# `analysis` is computed from the summary alone and rewritten by `neuron-tui analyze`.
PROJECTION_GROUP = "projection"
ANALYSIS_GROUP = "analysis"

# Datasets read per neuron as well as per layer get chunks that cut the neuron axis, so one neuron's
# column of a huge layer costs one chunk, not the layer.
NEURON_CHUNK = 1024

# Group `projection` (written at the end of collection, while the model's weights are loaded).
# k = top promoted/suppressed tokens kept, Kc = candidate trigger tokens per neuron (the most frequent
# tokens among its kept events, BOS excluded), so `analyze` can rank triggers without the model.
PROJECTION_DATASETS = {
    "promoted_tok": ("int32", "L,F,k"),  # vocabulary ids with the highest update scores, descending
    "promoted_score": ("float32", "L,F,k"),
    "suppressed_tok": ("int32", "L,F,k"),  # ids with the lowest (most negative) scores, ascending
    "suppressed_score": ("float32", "L,F,k"),
    "cand_tok": ("int32", "L,F,Kc"),  # candidate trigger tokens (-1 padded)
    "cand_score": ("float32", "L,F,Kc"),  # their update scores
    "cand_supp_rank": ("int32", "L,F,Kc"),  # 0-based rank in the neuron's suppressed order (0 = most)
    "cand_cos_in": ("float32", "L,F,Kc"),  # cosine of the output vector with the input embedding (NaN if tied)
    "vocab_mean": ("float32", "L,F"), "vocab_var": ("float32", "L,F"), "vocab_skew": ("float32", "L,F"),
    "vocab_kurt": ("float32", "L,F"), "w_out_norm": ("float32", "L,F"), "w_in_norm": ("float32", "L,F"),
    "null_share": ("float32", "L,F"), "freq_corr": ("float32", "L,F"),
}
# Its attributes: k, n_candidates, tied_embeddings, project_out, oriented (vectors multiplied by the sign of
# the firing activation) and candidates_complete (candidate triggers chosen among all event tokens; False:
# a merge without the model).

# Group `analysis` (from the summary alone; `neuron-tui analyze` rewrites it). Kt = triggers kept per
# neuron, Kn = n-gram contexts kept per neuron.
# 2: the paper's positional types (POS_SHAPES) and their strength; 3: the types read along the position
# axis with a noise band (core/read/positional.py)
ANALYSIS_VERSION = 3
# analysis/pos_shape codes: the paper's section 5 types (docs/design.md defines each)
POS_SHAPES = ("none", "oscillatory", "both-extremes", "one-extreme", "other")
# (analysis_version 1 coded: none, range, periodic, both-extremes, other; such an analysis reads as outdated)
ANALYSIS_DATASETS = {
    # bit k set: the neuron is of the kind whose `bit` is k (core/read/kinds.py; uint8 before schema 3)
    "flags": ("uint32", "L,F"),
    "pos_mi": ("float32", "L,F"),  # I(fired; position), nats
    "pos_shape": ("uint8", "L,F"),  # index into POS_SHAPES
    "pos_strong": ("uint8", "L,F"),  # 1: a strong positional neuron (the paper's "strong"), 0: weak
    "pos_range": ("int32", "L,F,2"),  # first and last position of the main firing run (-1: none)
    "n_distinct": ("int32", "L,F"),  # distinct tokens among the neuron's kept events
    "trig_tok": ("int32", "L,F,Kt"),  # trigger tokens by estimated firing count, descending (-1 pad)
    "trig_count": ("float32", "L,F,Kt"),  # estimated firings on that token (exact when level is 0)
    "trig_pfire": ("float32", "L,F,Kt"),  # P(fire | token) = trig_count / occurrences of token
    "trig_coverage": ("float32", "L,F"),  # share of firings explained by the detector's covered tokens
    "trig_supp_rank": ("int32", "L,F,Kt"),  # 0-based rank of each trigger in the suppressed order (-1 unknown)
    "trig_explains": ("uint8", "L,F,Kt"),  # 1 where the trigger is a covered token counted in trig_coverage
    "ngram_prev": ("int32", "L,F,Kn"),  # previous token of the top (previous, current) contexts
    "ngram_tok": ("int32", "L,F,Kn"),  # current token of those contexts
    "ngram_count": ("float32", "L,F,Kn"),  # estimated firings in that context
    "ngram_coverage": ("float32", "L,F"),  # share of firings explained by <= max_ngrams covered contexts
    # per layer
    "layer_covered": ("int64", "L"),  # vocabulary items covered by some token detector of the layer
    "layer_new": ("int64", "L"),  # ... not covered in any lower layer
    "layer_new_vs_prev": ("int64", "L"),  # ... not covered in the previous layer
    "layer_supp_share": ("float32", "L"),  # detectors whose triggers are among their top-10 suppressed
    "layer_neg_share": ("float32", "L"),  # detectors whose triggers all have negative update scores
    "layer_detectors_known": ("int64", "L"),  # token detectors whose triggers all have a projection rank
}
# Its attributes: analysis_version, params (JSON), n_triggers, n_ngrams, bos_excluded, has_projection,
# pos_mi_bias.
