"""A pass's results in a summary file, and back: the root datasets, written one layer at a time.

`write_pass` is the one writer of a pass's root datasets, for checkpoints, final summaries, merges and
distributed runs alike: it asks its `PassResult` for each layer's host state in turn and writes it
before asking for the next, so host memory holds one layer's state, whatever the model's size.
`layer_state` reads one layer's state back (resume, merge). Position counts are stored as uint16
while a run has fewer than 65,536 sequences (a count at a position never exceeds the sequences),
which halves the largest dataset of a summary; readers widen them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import version

import numpy as np

from neuron_tui.cache import Summary, SummaryWriter, schema

from .accumulators import LayerState
from .adapters import ffn_out_projections, n_neurons
from .calibration import Calibration
from .contexts import CONTEXT_LEFT, CONTEXT_RIGHT
from .loading import LoadedModel
from .packing import tokenizer_adds_bos
from .plan import RunPlan, format_shard


@dataclass
class PassResult:
    """What a pass (or one shard of it) counted: its token rows, their global sequences, its calibration
    (tau and the histogram bins), and each layer's state on demand (`state(layer)`, asked once per
    layer, in layer order)."""

    tokens: np.ndarray  # [rows, T] int32
    seq_index: np.ndarray  # [rows] int64, ascending: global sequence index of each row
    calibration: Calibration
    state: Callable[[int], LayerState]
    n_layers: int


@dataclass(frozen=True)
class RunFacts:
    """What a summary records about the model and its tokenizer (the same for every checkpoint)."""

    vocab: list[str]
    bos: bool
    n_layers: int
    n_neurons: int
    revision: str
    fingerprint: dict
    device: str

    @classmethod
    def of(cls, loaded: LoadedModel, device: str) -> "RunFacts":
        """The facts of a loaded model and its tokenizer, collected on `device`."""
        model, tokenizer = loaded.model, loaded.tokenizer
        modules = ffn_out_projections(model)
        return cls(
            vocab=vocab_strings(tokenizer, model.get_input_embeddings().num_embeddings),
            bos=tokenizer_adds_bos(tokenizer),
            n_layers=len(modules),
            n_neurons=n_neurons(modules[0]),
            revision=loaded.revision,
            fingerprint=loaded.fingerprint,
            device=str(device).split(":")[0],
        )


_CONTROL = {c: f"\\x{c:02x}" for c in range(32) if chr(c) not in "\t\n\r"}


def vocab_strings(tokenizer, vocab_size: int) -> list[str]:
    """The text of every token id, control characters escaped (byte-level vocabularies have a token
    for NUL, which HDF5 strings cannot hold and no terminal should receive); ids past the tokenizer's
    vocabulary get a placeholder."""
    known = min(len(tokenizer), vocab_size)
    texts = tokenizer.batch_decode([[i] for i in range(known)], clean_up_tokenization_spaces=False)
    return [t.translate(_CONTROL) for t in texts] + [f"<unused {i}>" for i in range(known, vocab_size)]


def summary_attrs(facts: RunFacts, plan: RunPlan, n_done: int, complete: bool, exhausted: bool = False) -> dict:
    """The root attributes of a (partial or complete) summary of `plan` after `n_done` sequences."""
    return {
        "tool_version": version("neuron-tui"),
        "model": plan.model,
        "model_revision": facts.revision,
        "model_fingerprint": facts.fingerprint,
        "architecture": plan.architecture,
        "rule": plan.rule,
        "threshold": plan.threshold,
        "tau_source": plan.tau_source,
        "n_layers": facts.n_layers,
        "n_neurons": facts.n_neurons,
        "seq_len": plan.seq_len,
        "n_seq": n_done,
        "n_seq_planned": plan.n_seq,
        "n_tokens": n_done * plan.seq_len,
        "bos": int(facts.bos),
        "events_cap": plan.settings.events_cap,
        "top_k": plan.settings.top_k,
        "ctx_left": CONTEXT_LEFT,
        "ctx_right": CONTEXT_RIGHT,
        "corpus": {**plan.corpus.identity, "seed": plan.settings.seed},
        "corpus_exhausted": bool(exhausted),
        # the corpus spec may be a local path: its machine-independent identity is under "corpus"
        "settings": {k: v for k, v in asdict(plan.settings).items() if k not in ("corpus", "checkpoint_seconds")},
        "key": plan.key,
        "complete": complete,
        "shard": format_shard(plan.shard),
        "base_key": plan.base_key,
        "device": facts.device,
        "dtype": plan.dtype,
    }


def pos_count_dtype(n_rows: int) -> np.dtype:
    """uint16 while no position can have been counted 65,536 times, else int32."""
    return np.dtype(np.uint16) if n_rows < 2**16 else np.dtype(np.int32)


PER_LAYER = ("act_count", "act_count_pos", "pos_count", "act_sum", "act_sum_pos", "act_max", "h_sum", "top_val",
             "top_pos", "ctx_val", "event_level", "hist_count")


def layer_datasets(gated: bool) -> tuple[str, ...]:
    """The per-layer root datasets of a layer state: the sign cases' too for a gated FFN."""
    return PER_LAYER + (schema.SIGN_DATASETS if gated else ())


def _field(name: str) -> str:
    """The LayerState field a per-layer root dataset holds."""
    return "level" if name == "event_level" else name


def write_pass(writer: SummaryWriter, result: PassResult, vocab: list[str], bos: bool, n_neurons: int,
               on_layer: Callable[[int, LayerState], None] | None = None) -> None:
    """The root datasets of a summary of `result` into `writer`, one layer at a time; on_layer(layer,
    state) sees each layer's state while it is in memory (the final write derives projection
    candidates from it). `seq_index` is stored only where rows are not simply sequences 0, 1, 2, ...
    Each per-layer dataset is [L, *the state's shape], in the schema's dtype on disk."""
    tokens, L, F = result.tokens.astype(np.int32), result.n_layers, n_neurons
    rows, T = tokens.shape
    datasets = None
    writer.put("tokens", tokens)
    writer.put("vocab", vocab)
    writer.put("token_occ", np.bincount((tokens[:, 1:] if bos else tokens).ravel(), minlength=len(vocab)).astype(np.int64))
    writer.put("tau", np.asarray(result.calibration.tau, dtype=np.float32))
    writer.put("hist_edges", np.asarray(result.calibration.hist_edges, dtype=np.float32))
    writer.put("tokens_at_pos", np.full(T, rows, dtype=np.int64))
    if not np.array_equal(result.seq_index, np.arange(rows)):
        writer.put("seq_index", np.asarray(result.seq_index, dtype=np.int64))
    writer.create("event_offsets", (L, F + 1), np.int64)
    writer.create("event_pos", (0,), np.int32)  # grows layer by layer (int32: runs index < 2**31 tokens)
    n_events = 0
    for layer in range(L):
        st = result.state(layer)
        if datasets is None:
            datasets = layer_datasets(st.sign_count is not None)
            for name in datasets:
                dtype = pos_count_dtype(rows) if name == "pos_count" else _disk_dtype(name)
                writer.create(name, (L,) + np.shape(getattr(st, _field(name))), dtype)
        for name in datasets:
            writer.write(name, layer, getattr(st, _field(name)))
        lengths = np.array([len(e) for e in st.events], dtype=np.int64)
        writer.write("event_offsets", layer, n_events + np.concatenate([[0], np.cumsum(lengths)]))
        if lengths.sum():
            writer.append("event_pos", np.concatenate(st.events).astype(np.int32))
        n_events += int(lengths.sum())
        if on_layer is not None:
            on_layer(layer, st)


def _disk_dtype(name: str) -> np.dtype:
    """A root dataset's dtype on disk, as the schema names it."""
    return np.dtype((schema.DATASETS.get(name) or schema.OPTIONAL_DATASETS[name])[0])


def layer_state(summary: Summary, layer: int) -> LayerState:
    """One layer's accumulator state stored in a summary (resume and merge read one layer at a time);
    position counts widened to int32, sums to float64, for adding. The summary must hold the datasets
    of schema.ADDED_IN_3 (and, for a gated FFN, the sign cases'), which older collections lack."""
    offsets, events = summary.layer_events(layer)
    state = {_field(name): summary.read(name, layer) for name in layer_datasets(summary.has("sign_count"))}
    for field, dtype in (("pos_count", np.int32), ("act_sum", np.float64), ("act_sum_pos", np.float64)):
        state[field] = state[field].astype(dtype)
    return LayerState(**state, events=np.split(events, offsets[1:-1]))
