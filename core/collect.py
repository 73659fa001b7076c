"""One pass of a corpus through a model: hooks -> on-device accumulators -> a resumable HDF5 summary.

The run is planned first (`make_plan`: settings, the run key, the file name) without loading weights,
so a summary that already exists is found at once. `collect` then streams the packed corpus through
the model with one forward pre-hook per FFN output projection. Every `checkpoint_seconds` (and on
Ctrl-C / SIGTERM) the accumulators are copied to the host and written, atomically, as a *partial
summary* next to the final file; running the same command again resumes from it, skipping (and
checking) the sequences already counted. Because every statistic is a sum, a max, or a level sample
keyed on global token positions, the resumed result equals an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from neuron_tui.cache import Summary, SummaryError, schema, summary_path, write_summary
from neuron_tui.cache.paths import cache_dir as default_cache_dir
from neuron_tui.cache.paths import partial_path

from .accumulators import BatchIndex, LayerAccumulator, LayerState
from .analysis import run_analysis
from .adapters import adapter_for, ffn_out_projections, n_neurons
from .corpus import Corpus, load_corpus
from .errors import NeuronTuiError, UsageError
from .models import LoadedModel
from .packing import pack_sequences, tokenizer_adds_bos
from .progress import CollectProgress
from .projections import project_updates
from .triggers import candidate_triggers

CPU_TOKENS = 100_000  # ~3 minutes of SmolLM2 on 2 CPU cores: README's first command stays under 5
GPU_TOKENS = 20_000_000  # the paper's dead-neuron statistics use more than 20M tokens (DESIGN 7)
CPU_SEQ_LEN = 256  # enough sequences per position for the positional MI at CPU corpus sizes
GPU_SEQ_LEN = 2048  # the paper's positional analysis uses full-length OPT sequences
N_CANDIDATES = 10  # candidate trigger tokens per neuron whose update scores are stored


@dataclass
class Settings:
    """What the user may choose; `None` means "the default for this device and model"."""

    corpus: str = "builtin"
    n_tokens: int | None = None
    seq_len: int | None = None
    batch_size: int | None = None
    seed: int = 0
    threshold: float | None = None  # a fixed tau for every layer
    quantile: float = 0.99  # the calibration quantile of |h| for non-ReLU models (DESIGN 3)
    events_cap: int = 256  # C: kept firing events per neuron (complete for neurons firing <= C times)
    top_k: int = 8  # top activating contexts per neuron
    calib_seqs: int = 8  # sequences of the calibration slice (the first of the corpus)
    checkpoint_seconds: float = 60.0


@dataclass
class RunPlan:
    """A fully determined run: everything the summary records, the key, and the file it goes to."""

    model: str
    architecture: str
    rule: str
    tau_source: str
    threshold: float
    seq_len: int
    n_seq: int
    batch_size: int
    settings: Settings
    corpus: Corpus = field(repr=False)
    key: str
    path: Path


def make_plan(
    model_name: str,
    config,
    settings: Settings,
    device: str,
    out: Path | None = None,
    cache_dir: Path | None = None,
) -> RunPlan:
    """Resolve defaults, check them against the model's config, and name the summary file."""
    on_gpu = not str(device).startswith("cpu")
    max_pos = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    seq_len = settings.seq_len or min(GPU_SEQ_LEN if on_gpu else CPU_SEQ_LEN, max_pos or 10**9)
    if seq_len < 2:
        raise UsageError(f"--seq-len {seq_len} is too short (at least 2)")
    if max_pos and seq_len > max_pos:
        raise UsageError(f"--seq-len {seq_len} is over this model's maximum of {max_pos} positions")
    n_tokens = settings.n_tokens or (GPU_TOKENS if on_gpu else CPU_TOKENS)
    n_seq = n_tokens // seq_len
    if n_seq < 1:
        raise UsageError(f"--tokens {n_tokens} is less than one sequence of {seq_len} tokens")
    batch_size = settings.batch_size or max(1, (16384 if on_gpu else 2048) // seq_len)
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if not 0 < settings.quantile < 1:
        raise UsageError("the calibration quantile must be between 0 and 1")
    rule = adapter_for(config.model_type).rule
    if settings.threshold is not None or rule == "relu":
        tau_source, threshold = "fixed", float(settings.threshold or 0.0)
    else:
        tau_source, threshold = "quantile", float(settings.quantile)
    corpus = load_corpus(settings.corpus)
    identity = {
        "model": model_name,
        "corpus": corpus.identity,
        "seed": settings.seed,
        "seq_len": seq_len,
        "n_seq": n_seq,
        "rule": rule,
        "tau_source": tau_source,
        "threshold": threshold,
        "calib_seqs": settings.calib_seqs,
        "events_cap": settings.events_cap,
        "top_k": settings.top_k,
        "schema_version": schema.SCHEMA_VERSION,
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    path = Path(out) if out else summary_path(default_cache_dir(cache_dir), model_name, key)
    return RunPlan(model_name, config.model_type, rule, tau_source, threshold, seq_len, n_seq, batch_size,
                   settings, corpus, key, path)


# ---- the pass ------------------------------------------------------------------------------------
class Recorder:
    """Forward pre-hooks that feed each layer's accumulator, created on the device of its activations."""

    def __init__(self, modules: list[torch.nn.Module], plan: RunPlan, tau: np.ndarray):
        self.modules, self.plan, self.tau = modules, plan, tau
        self.n_neurons = n_neurons(modules[0])
        self.acc: list[LayerAccumulator | None] = [None] * len(modules)
        self._positions: np.ndarray | None = None
        self._index: dict[torch.device, BatchIndex] = {}
        self._handles = []

    def accumulator(self, layer: int, device: torch.device) -> LayerAccumulator:
        if self.acc[layer] is None:
            s = self.plan.settings
            self.acc[layer] = LayerAccumulator(
                self.n_neurons, self.plan.seq_len, s.events_cap, s.top_k, device, self.plan.rule, self.tau[layer]
            )
        return self.acc[layer]

    def set_batch(self, positions: np.ndarray) -> None:
        """Global positions [B, T] of the batch about to run; index tensors are made per device lazily."""
        self._positions, self._index = positions, {}

    def _batch_index(self, device: torch.device) -> BatchIndex:
        if device not in self._index:
            self._index[device] = BatchIndex(self._positions, device)
        return self._index[device]

    def states(self) -> list[LayerState]:
        """Host copies of every layer's accumulators (layers never reached stay empty)."""
        s = self.plan.settings
        return [
            acc.state() if acc is not None else _empty_state(self.n_neurons, self.plan.seq_len, s.top_k)
            for acc in self.acc
        ]

    def _hook(self, layer: int):
        def hook(module, args):
            h = args[0]
            B, T = self._positions.shape
            self.accumulator(layer, h.device).update(h.reshape(B, T, -1), self._batch_index(h.device))

        return hook

    @contextmanager
    def attached(self):
        handles = [m.register_forward_pre_hook(self._hook(i)) for i, m in enumerate(self.modules)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()


def forward_fn(model: torch.nn.Module):
    """The cheapest call that runs every layer: the base model, without the LM head over the vocabulary."""
    base = model.base_model
    device = next(model.parameters()).device

    @torch.inference_mode()
    def run(ids: np.ndarray) -> None:
        base(input_ids=torch.as_tensor(ids, dtype=torch.long).to(device), use_cache=False)

    return run


def calibrate(model, modules, sequences: list[np.ndarray], quantile: float, batch_size: int) -> np.ndarray:
    """tau_l = the `quantile` of |h| over all neurons of layer l on the calibration slice (DESIGN 3)."""
    samples: list[list[torch.Tensor]] = [[] for _ in modules]
    gen = torch.Generator().manual_seed(0)

    def hook_for(layer):
        def hook(module, args):
            flat = args[0].detach().abs().float().reshape(-1)
            take = min(flat.numel(), 1 << 20)  # a fixed-size random subsample keeps memory bounded
            idx = torch.randint(flat.numel(), (take,), generator=gen).to(flat.device)
            samples[layer].append(flat[idx].cpu())

        return hook

    handles = [m.register_forward_pre_hook(hook_for(i)) for i, m in enumerate(modules)]
    try:
        run = forward_fn(model)
        for start in range(0, len(sequences), batch_size):
            run(np.stack(sequences[start : start + batch_size]))
    finally:
        for handle in handles:
            handle.remove()
    return np.array([torch.quantile(torch.cat(s)[: 1 << 24], quantile).item() for s in samples], dtype=np.float32)


def collect(loaded: LoadedModel, plan: RunPlan, quiet: bool = False) -> Path:
    """Run (or resume) the pass of `plan` and write the complete summary; returns its path."""
    model, tokenizer = loaded.model, loaded.tokenizer
    modules = ffn_out_projections(model)
    final, partial = plan.path, partial_path(plan.path)
    T, B = plan.seq_len, plan.batch_size
    check_disk(plan, len(modules), n_neurons(modules[0]))

    stream = pack_sequences(plan.corpus, tokenizer, T, plan.settings.seed)
    done_tokens, states, tau = _resume(partial, plan) if partial.exists() else (np.zeros((0, T), np.int32), None, None)
    for i, seq in enumerate(islice(stream, len(done_tokens))):
        if not np.array_equal(seq, done_tokens[i]):
            raise NeuronTuiError(f"the corpus changed since the checkpoint {partial} was written; delete it to start over")
    if tau is None:
        calib = list(islice(pack_sequences(plan.corpus, tokenizer, T, plan.settings.seed), plan.settings.calib_seqs))
        if plan.tau_source == "quantile":
            tau = calibrate(model, modules, calib, plan.threshold, B)
        else:
            tau = np.full(len(modules), plan.threshold, dtype=np.float32)

    recorder = Recorder(modules, plan, tau)
    if states is not None:
        device = next(model.parameters()).device
        for layer, st in enumerate(states):
            recorder.accumulator(layer, modules[layer].weight.device if hasattr(modules[layer], "weight") else device).load(st)
    blocks = [done_tokens]
    n_done = len(done_tokens)
    run = forward_fn(model)
    meta = _meta(loaded, plan, tokenizer, model)
    last_checkpoint = time.monotonic()
    progress = CollectProgress(total=plan.n_seq * T, done=n_done * T, quiet=quiet, label=plan.model)

    def checkpoint() -> None:
        tokens = np.concatenate(blocks)
        write_summary(partial, _attrs(meta, plan, n_done, complete=False), _arrays(recorder.states(), tokens, tau, meta))

    with _interrupts_as_keyboard(), recorder.attached(), progress:
        try:
            for batch in _batches(stream, plan.n_seq - n_done, B):
                recorder.set_batch(np.arange(n_done * T, (n_done + len(batch)) * T).reshape(len(batch), T))
                run(batch)
                blocks.append(batch)
                n_done += len(batch)
                progress.advance(len(batch) * T)
                if time.monotonic() - last_checkpoint >= plan.settings.checkpoint_seconds:
                    checkpoint()
                    last_checkpoint = time.monotonic()
        except KeyboardInterrupt:
            checkpoint()
            raise NeuronTuiError(
                f"interrupted after {n_done * T:,} of {plan.n_seq * T:,} tokens; checkpoint kept at {partial}; "
                "run the same command to resume"
            ) from None
        except SummaryError as exc:
            raise NeuronTuiError(f"{exc}; the last checkpoint is kept at {partial}") from None
    if n_done < plan.n_seq:
        progress.note(f"the corpus ran out after {n_done * T:,} tokens ({plan.n_seq * T:,} asked for)")
    tokens, states = np.concatenate(blocks), recorder.states()
    progress.note("projecting FFN updates onto the vocabulary", quiet_ok=True)
    projection = _projection_group(model, states, tokens, meta)
    write_summary(final, _attrs(meta, plan, n_done, complete=True), _arrays(states, tokens, tau, meta),
                  groups={schema.PROJECTION_GROUP: projection})
    partial.unlink(missing_ok=True)
    progress.note("analysing neuron categories", quiet_ok=True)
    run_analysis(final)
    return final


def _batches(stream: Iterator[np.ndarray], n_seq: int, batch_size: int) -> Iterator[np.ndarray]:
    left = n_seq
    while left > 0:
        batch = list(islice(stream, min(batch_size, left)))
        if not batch:
            return
        left -= len(batch)
        yield np.stack(batch)


# ---- summary contents ----------------------------------------------------------------------------
def _meta(loaded: LoadedModel, plan: RunPlan, tokenizer, model) -> dict:
    vocab_size = model.get_input_embeddings().num_embeddings
    return {
        "vocab": vocab_strings(tokenizer, vocab_size),
        "bos": int(tokenizer_adds_bos(tokenizer)),
        "bos_id": tokenizer.bos_token_id,
        "revision": loaded.revision,
        "n_layers": len(ffn_out_projections(model)),
        "n_neurons": n_neurons(ffn_out_projections(model)[0]),
    }


def vocab_strings(tokenizer, vocab_size: int) -> list[str]:
    """The text of every token id (ids past the tokenizer's vocabulary get a placeholder)."""
    known = min(len(tokenizer), vocab_size)
    texts = tokenizer.batch_decode([[i] for i in range(known)], clean_up_tokenization_spaces=False)
    return texts + [f"<unused {i}>" for i in range(known, vocab_size)]


def _attrs(meta: dict, plan: RunPlan, n_done: int, complete: bool) -> dict:
    from importlib.metadata import version

    return {
        "tool_version": version("neuron-tui"),
        "model": plan.model,
        "model_revision": meta["revision"],
        "architecture": plan.architecture,
        "rule": plan.rule,
        "threshold": plan.threshold,
        "tau_source": plan.tau_source,
        "n_layers": meta["n_layers"],
        "n_neurons": meta["n_neurons"],
        "seq_len": plan.seq_len,
        "n_seq": n_done,
        "n_seq_planned": plan.n_seq,
        "n_tokens": n_done * plan.seq_len,
        "bos": meta["bos"],
        "events_cap": plan.settings.events_cap,
        "top_k": plan.settings.top_k,
        "corpus": {**plan.corpus.identity, "seed": plan.settings.seed},
        # the corpus spec may be a local path: its machine-independent identity is under "corpus"
        "settings": {k: v for k, v in asdict(plan.settings).items() if k not in ("corpus", "checkpoint_seconds")},
        "key": plan.key,
        "complete": complete,
    }


def _arrays(states: list[LayerState], tokens: np.ndarray, tau: np.ndarray, meta: dict) -> dict:
    """The root datasets of a (partial or complete) summary."""
    L, F, T = meta["n_layers"], meta["n_neurons"], tokens.shape[1]
    lengths = np.array([[len(e) for e in st.events] for st in states], dtype=np.int64)
    offsets = np.zeros((L, F + 1), dtype=np.int64)
    offsets[:, 1:] = np.cumsum(lengths.ravel()).reshape(L, F)
    offsets[1:, 0] = offsets[:-1, -1]
    events = [e for st in states for e in st.events]
    return {
        "tokens": tokens.astype(np.int32),
        "vocab": meta["vocab"],
        "tau": tau.astype(np.float32),
        "tokens_at_pos": np.full(T, len(tokens), dtype=np.int64),
        "act_count": np.stack([st.act_count for st in states]),
        "pos_count": np.stack([st.pos_count for st in states]),
        "act_sum": np.stack([st.act_sum for st in states]).astype(np.float32),
        "act_max": np.stack([st.act_max for st in states]),
        "top_val": np.stack([st.top_val for st in states]),
        "top_pos": np.stack([st.top_pos for st in states]),
        "event_level": np.stack([st.level for st in states]),
        "event_offsets": offsets,
        "event_pos": np.concatenate(events).astype(np.int64) if events else np.zeros(0, np.int64),
    }


def _empty_state(F: int, T: int, K: int) -> LayerState:
    return LayerState(
        np.zeros(F, np.int64), np.zeros((T, F), np.int32), np.zeros(F), np.full(F, -np.inf, np.float32),
        np.full((K, F), -np.inf, np.float32), np.full((K, F), -1, np.int64), np.zeros(F, np.int8),
        [np.zeros(0, np.int64)] * F,
    )


def states_from_summary(summary: Summary) -> list[LayerState]:
    """Per-layer accumulator states stored in a (partial) summary: the inverse of `_arrays`."""
    states = []
    for layer in range(summary.n_layers):
        offsets, events = summary.layer_events(layer)
        states.append(LayerState(
            act_count=summary.read("act_count", layer),
            pos_count=summary.read("pos_count", layer),
            act_sum=summary.read("act_sum", layer).astype(np.float64),
            act_max=summary.read("act_max", layer),
            top_val=summary.read("top_val", layer),
            top_pos=summary.read("top_pos", layer),
            level=summary.read("event_level", layer),
            events=np.split(events, offsets[1:-1]),
        ))
    return states


def _resume(partial: Path, plan: RunPlan):
    """(tokens already counted, accumulator states, tau) from a checkpoint of the same run."""
    try:
        with Summary.open(partial) as summary:
            if summary.attrs.get("key") != plan.key:
                raise NeuronTuiError(f"{partial} belongs to another run; delete it to start over")
            n_seq = int(summary.attrs["n_seq"])
            return summary.read("tokens")[:n_seq], states_from_summary(summary), summary.read("tau")
    except SummaryError as exc:
        raise NeuronTuiError(f"cannot resume from {partial}: {exc}; delete it to start over") from None


def _projection_group(model, states: list[LayerState], tokens: np.ndarray, meta: dict) -> tuple[dict, dict]:
    """FFN-update projections, computed once while the weights are loaded, for every neuron and for
    its candidate triggers (its most frequent event tokens, BOS position excluded), so `analyze` can
    rank triggers among suppressed tokens later without the model."""
    flat, T = tokens.ravel(), tokens.shape[1]
    candidates = []
    for st in states:
        events = np.concatenate(st.events) if st.events else np.zeros(0, np.int64)
        offsets = np.concatenate([[0], np.cumsum([len(e) for e in st.events])])
        exclude = (events % T == 0) if meta["bos"] else None
        candidates.append(candidate_triggers(offsets, flat[events], N_CANDIDATES, exclude=exclude))
    return project_updates(model, n_candidates=N_CANDIDATES, candidates=candidates)


def check_disk(plan: RunPlan, n_layers: int, n_neurons_: int) -> None:
    """Refuse to start a run whose summary (plus its checkpoint copy) cannot fit on the disk."""
    T, s = plan.seq_len, plan.settings
    estimate = (
        plan.n_seq * T * 4
        + n_layers * n_neurons_ * (T * 4 // 4 + (s.events_cap // 2) * 8 + s.top_k * 12 + 32)
    )
    folder = plan.path.parent
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < 2 * estimate:
        raise NeuronTuiError(
            f"no room on disk: the summary needs about {2 * estimate / 2**20:,.0f} MiB in {folder} "
            f"(with its checkpoint), {free / 2**20:,.0f} MiB free; use --cache-dir or --out elsewhere"
        )


@contextmanager
def _interrupts_as_keyboard():
    """SIGTERM (kill, a closing tmux) checkpoints like Ctrl-C does."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
