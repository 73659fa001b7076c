"""Planning a collection: settings and their defaults, the run key, the file, and whether it can be written.

`make_plan` resolves every default against the model's config (never its weights), so a summary that
already exists is found at once; the run key hashes everything that identifies the run (model weights,
corpus identity, rule, settings, schema version) and names the file. A run may be one shard K/N of
the corpus (the planned sequences i with i % N == K), keyed and filed next to the whole run's file.
`check_destination` proves, before any model loads, that the output folder can be created and written
and has room for the summary and its checkpoint: a read-only or full disk is one line up front, not a
lost run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from neuron_tui.cache import schema, shard_path, summary_path
from neuron_tui.cache.paths import cache_dir as default_cache_dir
from neuron_tui.core.corpus import Corpus, load_corpus
from neuron_tui.core.errors import NeuronTuiError, UsageError
from neuron_tui.core.read.sampling import MAX_TOKENS
from neuron_tui.core.settings import Settings

from .accumulators import device_bytes
from .adapters import adapter_for
from .contexts import CONTEXT_WIDTH

CPU_TOKENS = 65_536  # ~2 minutes of SmolLM2 on 2 CPU cores: with loading and projections, README's
# first command stays under 5 minutes
GPU_TOKENS = 20_000_000  # the paper's dead-neuron statistics use more than 20M tokens (paper section 2)
CPU_SEQ_LEN = 256  # enough sequences per position for the positional MI at CPU corpus sizes
GPU_SEQ_LEN = 2048  # the paper's positional analysis uses full-length OPT sequences (section 5)
# a batch's temporaries on the device, bytes per activation: |h|, the firing masks and the sums' temporaries;
# for a gated FFN also the up projection's output held for the sign cases, their masks and their masked |h|
WORKSPACE_BYTES, GATED_WORKSPACE_BYTES = 8, 17


WHOLE = ((0,), 1)  # the shard that is the whole run


@dataclass
class RunPlan:
    """A fully determined run: everything the summary records, the key, and the file it goes to."""

    model: str
    fingerprint: dict  # core.fingerprint of the weights
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
    dtype: str = "fp32"  # of the activations: fp32, bf16 or fp16

    @property
    def gated(self) -> bool:
        """The FFN is gated (h = act(gate) * up): the pass also counts the sign cases of its firings."""
        return adapter_for(self.architecture).up_proj is not None

    @property
    def event_slots(self) -> int:
        """Firing events a neuron can keep: --events, at most the run's tokens (a neuron fires at most
        once a token), so a cap beyond the run's size costs no memory and no room on disk."""
        return min(self.settings.events_cap, self.n_seq * self.seq_len)

    def rows(self) -> np.ndarray:
        """Global sequence index of every row this run plans to collect, ascending."""
        ks, n = self.shard
        return np.flatnonzero(np.isin(np.arange(self.n_seq) % n, ks))


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


def shard_plan(plan: RunPlan, k: int, n: int) -> RunPlan:
    """Shard k of n of a whole-run plan, filed next to the whole run's summary (distributed ranks)."""
    shard = ((k,), n)
    return replace(plan, shard=shard, key=run_key(plan.base_key, shard), path=shard_path(plan.path, *shard))


def make_plan(
    model_name: str,
    config,
    settings: Settings,
    device: str,
    out: Path | None = None,
    cache_dir: Path | None = None,
    shard: str | None = None,
    fingerprint: dict | None = None,
    dtype: str = "fp32",
) -> RunPlan:
    """Resolve defaults, check them against the model's config, and name the summary file.

    shard "K/N" plans shard K of N of the run (see `parse_shard`); its file and key are its own.
    `fingerprint` identifies the weights (core.fingerprint; None for a model built in memory), `dtype`
    the precision of the activations (fp32, bf16, fp16: a bf16 run fires differently)."""
    on_gpu = not str(device).startswith("cpu")
    max_pos = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    default_len = min(GPU_SEQ_LEN if on_gpu else CPU_SEQ_LEN, max_pos or 10**9)
    seq_len = default_len if settings.seq_len is None else settings.seq_len
    if max_pos and seq_len > max_pos:
        raise UsageError(f"--seq-len {seq_len} is over this model's maximum of {max_pos} positions")
    n_tokens = settings.n_tokens if settings.n_tokens is not None else (GPU_TOKENS if on_gpu else CPU_TOKENS)
    if n_tokens > MAX_TOKENS:
        raise UsageError(f"--tokens {n_tokens:,} is over the {MAX_TOKENS:,} one run can index; use --shard")
    n_seq = n_tokens // seq_len
    if n_seq < 1:
        raise UsageError(f"--tokens {n_tokens} is less than one sequence of {seq_len} tokens")
    batch_size = settings.batch_size or max(1, (16384 if on_gpu else 2048) // seq_len)
    rule = adapter_for(config.model_type).rule
    if settings.threshold is not None or rule == "relu":
        tau_source, threshold = "fixed", float(settings.threshold or 0.0)
    else:
        tau_source, threshold = "quantile", float(settings.quantile)
    corpus = load_corpus(settings.corpus)
    fingerprint = fingerprint or {"kind": "memory", "path": model_name, "digest": ""}
    identity = {
        "model": model_name,
        "weights": fingerprint["digest"],
        "dtype": dtype,
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
    whole = summary_path(default_cache_dir(cache_dir), model_name, base_key)
    path = Path(out) if out else whole if parts == WHOLE else shard_path(whole, *parts)
    return RunPlan(model_name, fingerprint, config.model_type, rule, tau_source, threshold, seq_len, n_seq,
                   batch_size, settings, corpus, run_key(base_key, parts), path, parts, base_key, dtype)


def summary_bytes(plan: RunPlan, n_layers: int, n_neurons: int) -> int:
    """A generous estimate of the summary's size on disk: the token stream, position counts (about a
    quarter of their raw size once compressed: most are small), half-full event samples, top-K
    contexts with their windows, histograms, sign cases and per-neuron counters."""
    T, K = plan.seq_len, plan.settings.top_k
    per_neuron = T + (plan.event_slots // 2) * 8 + K * (12 + 2 * CONTEXT_WIDTH) + 4 * schema.HIST_BINS + 136
    return plan.n_seq * T * 4 + n_layers * n_neurons * per_neuron


def check_destination(path: Path, needed: int) -> None:
    """Refuse, before anything is loaded, a summary that cannot be written at `path`: a folder that
    cannot be created, one that cannot be written (a probe file is created and removed there), or
    one without room for `needed` bytes twice (the summary and its checkpoint)."""
    folder = Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NeuronTuiError(f"cannot create the output folder {folder}: {exc.strerror or exc}; "
                             "use --cache-dir or --out elsewhere") from None
    probe = folder / f".neuron-tui-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"0")
        probe.unlink()
    except OSError as exc:
        raise NeuronTuiError(f"cannot write in {folder}: {exc.strerror or exc}; use --cache-dir or --out elsewhere") from None
    free = shutil.disk_usage(folder).free
    if free < 2 * needed:
        raise NeuronTuiError(
            f"no room on disk: the summary needs about {2 * needed / 2**20:,.0f} MiB in {folder} "
            f"(with its checkpoint), {free / 2**20:,.0f} MiB free; use --cache-dir or --out elsewhere"
        )


def device_budget(plan: RunPlan, n_layers: int, n_neurons_: int, gpu_bytes: list[int]) -> dict[int, int]:
    """accelerate's max_memory for `--device-map auto` that leaves room on every GPU for the accumulators
    of the layers that run there (accelerate alone would fill the GPUs with weights): GPU 0 also runs
    every layer offloaded to CPU or disk, so it keeps room for all of them, GPU i > 0 for its even share
    of the layers; and every GPU for one batch's temporaries (a few bytes per activation)."""
    per_layer = device_bytes(n_neurons_, plan.seq_len, plan.event_slots, plan.settings.top_k, plan.gated)
    per_activation = GATED_WORKSPACE_BYTES if plan.gated else WORKSPACE_BYTES
    workspace = per_activation * plan.batch_size * plan.seq_len * n_neurons_ + 2**30
    share = -(-n_layers // max(1, len(gpu_bytes)))
    return {gpu: max(0, total - per_layer * (n_layers if gpu == 0 else share) - workspace)
            for gpu, total in enumerate(gpu_bytes)}
