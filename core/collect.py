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
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from neuron_tui.cache import Summary, SummaryError, schema, summary_path, write_summary
from neuron_tui.cache.store import rows_of
from neuron_tui.cache.paths import cache_dir as default_cache_dir
from neuron_tui.cache.paths import partial_path

from .accumulators import MAX_TOKENS, BatchIndex, LayerAccumulator, LayerState, Scratch, device_bytes
from .analysis import run_analysis
from .adapters import adapter_for, ffn_out_projections, n_neurons
from .corpus import Corpus, load_corpus
from .errors import NeuronTuiError, UsageError
from .models import LoadedModel, execution_device
from .packing import pack_sequences, tokenizer_adds_bos
from .progress import CollectProgress, peak_memory
from .projections import project_updates
from .triggers import candidate_triggers, neuron_of_events

CPU_TOKENS = 65_536  # ~2 minutes of SmolLM2 on 2 CPU cores: with loading and projections, README's
# first command stays under 5 minutes
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
    shard: tuple[tuple[int, ...], int]  # (ks, n): this run covers the planned sequences i with i % n in ks
    base_key: str  # the key of the whole run (all shards); equals `key` when shard is WHOLE

    def rows(self) -> np.ndarray:
        """Global sequence index of every row this run plans to collect, ascending."""
        ks, n = self.shard
        return np.flatnonzero(np.isin(np.arange(self.n_seq) % n, ks))


WHOLE = ((0,), 1)  # the shard that is the whole run


def parse_shard(text: str) -> tuple[tuple[int, ...], int]:
    """Parse "K/N" or "K1,K2,.../N" into ((K, ...), N): the planned sequences i with i % N in the Ks."""
    try:
        ks_text, n_text = text.split("/")
        ks, n = tuple(sorted({int(k) for k in ks_text.split(",")})), int(n_text)
    except ValueError:
        raise UsageError(f"shard {text!r} is not K/N (e.g. 0/4: sequences 0, 4, 8, ... of the corpus)") from None
    if n < 1 or not all(0 <= k < n for k in ks):
        raise UsageError(f"shard {text!r}: K must be in 0..N-1")
    return WHOLE if len(ks) == n else (ks, n)


def format_shard(shard: tuple[tuple[int, ...], int]) -> str:
    ks, n = shard
    return ",".join(map(str, sorted(ks))) + f"/{n}"


def run_key(base_key: str, shard: tuple[tuple[int, ...], int]) -> str:
    """The key of one shard of the run `base_key`, so shards never collide in the cache; the whole
    run keeps `base_key`, so a merge of all shards is keyed like an unsharded run."""
    if shard == WHOLE:
        return base_key
    return hashlib.sha256(f"{base_key} shard {format_shard(shard)}".encode()).hexdigest()


def shard_path(whole: Path, shard: tuple[tuple[int, ...], int]) -> Path:
    """The file of a shard next to the whole run's: `<whole>.shard<K>of<N>.h5`, so a distributed rank
    and a `--shard K/N` run share checkpoints, and the cache lookup of a model's summary skips shards."""
    ks, n = shard
    return whole.with_name(f"{whole.stem}.shard{'_'.join(map(str, ks))}of{n}{whole.suffix}")


def shard_plan(plan: RunPlan, k: int, n: int) -> RunPlan:
    """Shard k of n of a whole-run plan, filed next to the whole run's summary (distributed ranks)."""
    shard = ((k,), n)
    return replace(plan, shard=shard, key=run_key(plan.base_key, shard), path=shard_path(plan.path, shard))


def make_plan(
    model_name: str,
    config,
    settings: Settings,
    device: str,
    out: Path | None = None,
    cache_dir: Path | None = None,
    shard: str | None = None,
) -> RunPlan:
    """Resolve defaults, check them against the model's config, and name the summary file.

    shard "K/N" plans shard K of N of the run (see `parse_shard`); its file and key are its own."""
    on_gpu = not str(device).startswith("cpu")
    max_pos = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    seq_len = settings.seq_len or min(GPU_SEQ_LEN if on_gpu else CPU_SEQ_LEN, max_pos or 10**9)
    if seq_len < 2:
        raise UsageError(f"--seq-len {seq_len} is too short (at least 2)")
    if max_pos and seq_len > max_pos:
        raise UsageError(f"--seq-len {seq_len} is over this model's maximum of {max_pos} positions")
    n_tokens = settings.n_tokens or (GPU_TOKENS if on_gpu else CPU_TOKENS)
    n_seq = n_tokens // seq_len
    if n_tokens > MAX_TOKENS:
        raise UsageError(f"--tokens {n_tokens:,} is over the {MAX_TOKENS:,} one run can index; use --shard")
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
    base_key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    parts = parse_shard(shard) if shard else WHOLE
    key = run_key(base_key, parts)
    whole = summary_path(default_cache_dir(cache_dir), model_name, base_key)
    path = Path(out) if out else whole if parts == WHOLE else shard_path(whole, parts)
    return RunPlan(model_name, config.model_type, rule, tau_source, threshold, seq_len, n_seq, batch_size,
                   settings, corpus, key, path, parts, base_key)


def device_budget(plan: RunPlan, n_layers: int, n_neurons_: int, gpu_bytes: list[int]) -> dict[int, int]:
    """accelerate's max_memory for `--device-map auto` that leaves room on every GPU for the accumulators
    of the layers that run there (accelerate alone would fill the GPUs with weights): GPU 0 also runs
    every layer offloaded to CPU or disk, so it keeps room for all of them, GPU i > 0 for its even share
    of the layers; and every GPU for one batch's temporaries (a few bytes per activation)."""
    s = plan.settings
    per_layer = device_bytes(n_neurons_, plan.seq_len, s.events_cap, s.top_k)
    workspace = 8 * plan.batch_size * plan.seq_len * n_neurons_ + 2**30
    share = -(-n_layers // max(1, len(gpu_bytes)))
    return {gpu: max(0, total - per_layer * (n_layers if gpu == 0 else share) - workspace)
            for gpu, total in enumerate(gpu_bytes)}


# ---- the pass ------------------------------------------------------------------------------------
class Recorder:
    """Forward pre-hooks that feed each layer's accumulator, created on the device of its activations
    at the layer's first batch (with --device-map, offloaded weights say nothing about where the
    activations will be), starting from the checkpointed state when resuming."""

    def __init__(self, modules: list[torch.nn.Module], plan: RunPlan, tau: np.ndarray,
                 resumed: list[LayerState] | None = None):
        self.modules, self.plan, self.tau = modules, plan, tau
        self.n_neurons = n_neurons(modules[0])
        self.acc: list[LayerAccumulator | None] = [None] * len(modules)
        self._resumed = resumed or [None] * len(modules)
        self._batches: list[np.ndarray] = []  # global positions [B, T] of each batch of the chunk
        self._indexes: list[dict[torch.device, BatchIndex]] = []  # their index tensors, per device
        self._current = 0
        self._scratch: dict[torch.device, Scratch] = {}

    def accumulator(self, layer: int, device: torch.device) -> LayerAccumulator:
        if self.acc[layer] is None:
            s = self.plan.settings
            self.acc[layer] = LayerAccumulator(
                self.n_neurons, self.plan.seq_len, s.events_cap, s.top_k, device, self.plan.rule, self.tau[layer]
            )
            if self._resumed[layer] is not None:
                self.acc[layer].load(self._resumed[layer])
        return self.acc[layer]

    def set_batches(self, positions: list[np.ndarray]) -> None:
        """Global positions [B, T] of each batch of the chunk about to run; index tensors are made per
        batch and device when first needed and serve every layer (layer by layer, each batch of a
        chunk reaches every layer in turn)."""
        self._batches, self._indexes, self._current = positions, [{} for _ in positions], 0

    def select(self, batch: int) -> None:
        """Batch `batch` of the chunk is the one reaching the layers next."""
        self._current = batch

    def _batch_index(self, device: torch.device) -> BatchIndex:
        index = self._indexes[self._current]
        if device not in index:
            scratch = self._scratch.setdefault(device, Scratch())
            index[device] = BatchIndex(self._batches[self._current], device, scratch)
        return index[device]

    def states(self) -> list[LayerState]:
        """Host copies of every layer's accumulators (layers never reached stay empty)."""
        s = self.plan.settings
        return [
            acc.state() if acc is not None
            else resumed or _empty_state(self.n_neurons, self.plan.seq_len, s.top_k)
            for acc, resumed in zip(self.acc, self._resumed)
        ]

    def _hook(self, layer: int):
        def hook(module, args):
            h = args[0]
            B, T = self._batches[self._current].shape
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
    device = execution_device(model.get_input_embeddings())  # the first device under --device-map auto

    @torch.inference_mode()
    def run(ids: np.ndarray) -> None:
        base(input_ids=torch.as_tensor(ids, dtype=torch.long).to(device), use_cache=False)

    return run


class BatchByBatch:
    """The usual schedule of a pass: each batch runs through the whole model (weights resident, or placed
    by accelerate). A schedule is called as runner(batches, before, advance): before(i) ahead of batch
    i reaching the layers, advance(tokens) as work completes; the pass checkpoints and honours stop
    requests between calls, every `chunk_batches` batches (layerwise.LayerByLayer: a chunk)."""

    chunk_batches = 1

    def __init__(self, model: torch.nn.Module):
        self._run = forward_fn(model)

    def __call__(self, batches: list[np.ndarray], before, advance) -> None:
        for i, ids in enumerate(batches):
            before(i)
            self._run(ids)
            advance(ids.size)


def calibrate(modules, sequences: list[np.ndarray], quantile: float, batch_size: int, runner) -> np.ndarray:
    """tau_l = the `quantile` of |h| over all neurons of layer l on the calibration slice (DESIGN 3),
    the slice run by the pass's schedule `runner`."""
    samples: list[list[torch.Tensor]] = [[] for _ in modules]
    # one generator per layer: the subsample is the same whatever order the schedule runs layers in
    gens = [torch.Generator().manual_seed(layer) for layer in range(len(modules))]

    def hook_for(layer):
        def hook(module, args):
            flat = args[0].detach().abs().float().reshape(-1)
            take = min(flat.numel(), 1 << 20)  # a fixed-size random subsample keeps memory bounded
            idx = torch.randint(flat.numel(), (take,), generator=gens[layer]).to(flat.device)
            samples[layer].append(flat[idx].cpu())

        return hook

    handles = [m.register_forward_pre_hook(hook_for(i)) for i, m in enumerate(modules)]
    try:
        batches = [np.stack(sequences[start : start + batch_size]) for start in range(0, len(sequences), batch_size)]
        runner(batches, lambda i: None, lambda tokens: None)
    finally:
        for handle in handles:
            handle.remove()
    return np.array([torch.quantile(torch.cat(s)[: 1 << 24], quantile).item() for s in samples], dtype=np.float32)


@dataclass
class PassResult:
    """What a pass (or one shard of it) counted: its token rows, their global sequences, the states, tau."""

    tokens: np.ndarray  # [rows, T] int32
    seq_index: np.ndarray  # [rows] int64, ascending: global sequence index of each row
    states: list[LayerState]
    tau: np.ndarray  # [L] float32


def _own_tau(resumed: np.ndarray | None, compute) -> np.ndarray:
    """One process alone: the checkpoint's tau when resuming, else its own calibration."""
    return compute() if resumed is None else resumed


def collect(loaded: LoadedModel, plan: RunPlan, quiet: bool = False, runner=None) -> Path:
    """Run (or resume) the pass of `plan` and write its summary; returns its path. `runner`: the
    schedule (default BatchByBatch; layerwise.LayerByLayer for --layer-by-layer)."""
    result, progress = run_pass(loaded, plan, quiet, runner=runner)
    return finish(loaded, plan, result, progress)


def run_pass(loaded: LoadedModel, plan: RunPlan, quiet: bool = False, agree_tau=_own_tau, runner=None):
    """Stream the plan's sequences through the model, checkpointing to (and resuming from) its partial
    file: (PassResult, progress). A shard K/N streams the sequences i % N == K of the planned stream,
    at their global positions g = i * T + t. agree_tau(resumed tau or None, calibrate) -> the tau to
    use (distributed ranks take rank 0's). runner: the schedule (see BatchByBatch)."""
    model, tokenizer = loaded.model, loaded.tokenizer
    modules = ffn_out_projections(model)
    partial = partial_path(plan.path)
    T, B = plan.seq_len, plan.batch_size
    ks, n = plan.shard
    check_disk(plan, len(modules), n_neurons(modules[0]))

    packed = islice(pack_sequences(plan.corpus, tokenizer, T, plan.settings.seed), plan.n_seq)
    stream = (seq for i, seq in enumerate(packed) if i % n in ks)
    done_tokens, states, tau = _resume(partial, plan) if partial.exists() else (np.zeros((0, T), np.int32), None, None)
    for i, seq in enumerate(islice(stream, len(done_tokens))):
        if not np.array_equal(seq, done_tokens[i]):
            raise NeuronTuiError(f"the corpus changed since the checkpoint {partial} was written; delete it to start over")

    runner = runner or BatchByBatch(model)

    def calibrated() -> np.ndarray:
        if plan.tau_source != "quantile":
            return np.full(len(modules), plan.threshold, dtype=np.float32)
        calib = list(islice(pack_sequences(plan.corpus, tokenizer, T, plan.settings.seed), plan.settings.calib_seqs))
        return calibrate(modules, calib, plan.threshold, B, runner)

    tau = agree_tau(tau, calibrated)
    recorder = Recorder(modules, plan, tau, resumed=states)
    blocks = [done_tokens]
    n_done = len(done_tokens)
    rows = plan.rows()
    meta = _meta(loaded, plan, tokenizer, model)
    last_checkpoint = time.monotonic()
    progress = CollectProgress(total=len(rows) * T, done=n_done * T, quiet=quiet, label=plan.model)

    def result() -> PassResult:
        return PassResult(np.concatenate(blocks), rows[:n_done], recorder.states(), tau)

    def checkpoint() -> None:
        write_summary(partial, _attrs(meta, plan, n_done, complete=False), _arrays(result(), meta))

    with _StopRequests() as stop, recorder.attached(), progress:
        try:
            batches = _batches(stream, len(rows) - n_done, B)
            while chunk := list(islice(batches, runner.chunk_batches)):
                if stop.requested:
                    raise KeyboardInterrupt
                starts = n_done + np.cumsum([0] + [len(batch) for batch in chunk])
                recorder.set_batches([rows[a:b, None] * T + np.arange(T) for a, b in zip(starts[:-1], starts[1:])])
                runner(chunk, recorder.select, progress.advance)
                blocks.extend(chunk)
                n_done = int(starts[-1])
                if time.monotonic() - last_checkpoint >= plan.settings.checkpoint_seconds:
                    checkpoint()
                    last_checkpoint = time.monotonic()
        except KeyboardInterrupt:  # between chunks: every layer has counted exactly n_done sequences
            checkpoint()
            raise NeuronTuiError(
                f"interrupted after {n_done * T:,} of {len(rows) * T:,} tokens; checkpoint kept at {partial}; "
                "run the same command to resume"
            ) from None
        except _StopNow:  # a second Ctrl-C, mid-batch: the state is not consistent, keep the last checkpoint
            raise NeuronTuiError(
                f"interrupted; the last checkpoint is kept at {partial}; run the same command to resume"
            ) from None
        except SummaryError as exc:
            raise NeuronTuiError(f"{exc}; the last checkpoint is kept at {partial}") from None
    if n_done < len(rows):
        progress.note(f"the corpus ran out after {n_done * T:,} tokens ({len(rows) * T:,} asked for)")
    return result(), progress


def finish(loaded: LoadedModel, plan: RunPlan, result: PassResult, progress: CollectProgress) -> Path:
    """Write the summary of a finished pass with its FFN-update projections (while the weights are
    loaded), drop the checkpoint, and analyse a whole run (a shard's analysis needs every sequence:
    it is computed when the shards are merged)."""
    model = loaded.model
    meta = _meta(loaded, plan, loaded.tokenizer, model)
    progress.note("projecting FFN updates onto the vocabulary", quiet_ok=True)
    projection = _projection_group(model, result, meta)
    write_summary(plan.path, _attrs(meta, plan, len(result.tokens), complete=True), _arrays(result, meta),
                  groups={schema.PROJECTION_GROUP: projection})
    partial_path(plan.path).unlink(missing_ok=True)
    if plan.shard == WHOLE:
        progress.note("analysing neuron categories", quiet_ok=True)
        run_analysis(plan.path)
    progress.note(peak_memory(), quiet_ok=True)
    return plan.path


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


_CONTROL = {c: f"\\x{c:02x}" for c in range(32) if chr(c) not in "\t\n\r"}


def vocab_strings(tokenizer, vocab_size: int) -> list[str]:
    """The text of every token id, control characters escaped (byte-level vocabularies have a token
    for NUL, which HDF5 strings cannot hold and no terminal should receive); ids past the tokenizer's
    vocabulary get a placeholder."""
    known = min(len(tokenizer), vocab_size)
    texts = tokenizer.batch_decode([[i] for i in range(known)], clean_up_tokenization_spaces=False)
    return [t.translate(_CONTROL) for t in texts] + [f"<unused {i}>" for i in range(known, vocab_size)]


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
        "shard": format_shard(plan.shard),
        "base_key": plan.base_key,
    }


def _arrays(result: PassResult, meta: dict) -> dict:
    """The root datasets of a (partial or complete) summary; `seq_index` only where the rows are not
    simply sequences 0, 1, 2, ... (a shard)."""
    states, tokens, tau = result.states, result.tokens, result.tau
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
        # int32 halves the largest dataset (runs index fewer than 2**31 tokens, accumulators.MAX_TOKENS)
        "event_pos": np.concatenate(events).astype(np.int32) if events else np.zeros(0, np.int32),
    } | ({} if np.array_equal(result.seq_index, np.arange(len(tokens))) else {"seq_index": result.seq_index})


def _empty_state(F: int, T: int, K: int) -> LayerState:
    return LayerState(
        np.zeros(F, np.int64), np.zeros((T, F), np.int32), np.zeros(F), np.full(F, -np.inf, np.float32),
        np.full((K, F), -np.inf, np.float32), np.full((K, F), -1, np.int64), np.zeros(F, np.int8),
        [np.zeros(0, np.int64)] * F,
    )


def states_from_summary(summary: Summary) -> list[LayerState]:
    """Per-layer accumulator states stored in a (partial) summary: the inverse of `_arrays`."""
    return [layer_state(summary, layer) for layer in range(summary.n_layers)]


def layer_state(summary: Summary, layer: int) -> LayerState:
    """One layer's accumulator state stored in a summary (merging reads one layer at a time)."""
    offsets, events = summary.layer_events(layer)
    return LayerState(
        act_count=summary.read("act_count", layer),
        pos_count=summary.read("pos_count", layer),
        act_sum=summary.read("act_sum", layer).astype(np.float64),
        act_max=summary.read("act_max", layer),
        top_val=summary.read("top_val", layer),
        top_pos=summary.read("top_pos", layer),
        level=summary.read("event_level", layer),
        events=np.split(events, offsets[1:-1]),
    )


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


def _projection_group(model, result: PassResult, meta: dict) -> tuple[dict, dict]:
    """FFN-update projections, computed once while the weights are loaded, for every neuron and for
    its candidate triggers (`candidate_tokens`), so `analyze` can rank triggers among suppressed
    tokens later without the model. Each output vector is oriented by the sign of the neuron's summed
    activation when it fires (a gated neuron firing negative pushes -w), so "suppressed" means what
    the neuron's firing actually does to the logits."""
    tokens, T = result.tokens, result.tokens.shape[1]

    def token_at(g: np.ndarray) -> np.ndarray:
        return tokens[rows_of(result.seq_index, g // T), g % T]

    candidates = [candidate_tokens(st, token_at, T, bool(meta["bos"])) for st in result.states]
    signs = [np.where(st.act_sum < 0, -1.0, 1.0) for st in result.states]
    attrs, arrays = project_updates(model, n_candidates=N_CANDIDATES, candidates=candidates, signs=signs)
    return {**attrs, "candidates_complete": True}, arrays  # from every kept event (merge: not always)


def candidate_tokens(st: LayerState, token_at, T: int, bos: bool, allowed=None) -> np.ndarray:
    """[F, N_CANDIDATES] candidate triggers of one layer: each neuron's most frequent tokens among its
    kept events, the BOS position left out. token_at(global positions) -> token ids; allowed(neuron,
    token) -> bool per event, to count only some tokens (a merge knows the scores of a few only)."""
    events = np.concatenate(st.events) if st.events else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in st.events])])
    tokens = token_at(events)
    exclude = (events % T == 0) if bos else np.zeros(events.shape, dtype=bool)
    if allowed is not None:
        exclude |= ~allowed(neuron_of_events(offsets), tokens)
    return candidate_triggers(offsets, tokens, N_CANDIDATES, exclude=exclude)


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


class _StopNow(Exception):
    """A second Ctrl-C: stop at once, without writing a checkpoint of a half-counted batch."""


class _StopRequests:
    """Ctrl-C (SIGINT) and SIGTERM (kill, a closing tmux) only set a flag that the pass checks between
    batches, so no checkpoint ever holds a batch that some layers counted and others did not; a
    second Ctrl-C stops at once, keeping the previous checkpoint."""

    def __init__(self):
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise _StopNow
        self.requested = True

    def __enter__(self) -> "_StopRequests":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (a worker): signals stay as they are
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
