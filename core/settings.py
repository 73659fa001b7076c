"""What a user asks of a collection, checked as it is given, and what it names, resolved once (no torch:
the command line and the request index build these before anything heavy is imported).

- `Settings`: the choices that shape a run's result (corpus, tokens, lengths, thresholds, ...);
- `CollectRequest`: every collection option as the user gave it (None: the default);
- `ResolvedRequest`: a request with what it names resolved once: the model's source, its weights'
  fingerprint and the corpus it collects (the default one chosen here). The request index, the plan
  and the loading of the model all read it, so none of them resolves, fingerprints or asks the hub
  again.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .sources import DEFAULT_MODEL, ModelSource, hub_reachable, resolve

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")  # what torchrun sets for every process


@dataclass
class Settings:
    """What the user may choose; `None` means "the default for this device and model"."""

    corpus: str = "builtin"
    n_tokens: int | None = None
    seq_len: int | None = None
    batch_size: int | None = None
    seed: int = 0
    threshold: float | None = None  # a fixed tau for every layer
    quantile: float = 0.99  # the calibration quantile of |h| for non-ReLU models (docs/design.md)
    events_cap: int = 256  # C: kept firing events per neuron (complete for neurons firing <= C times)
    top_k: int = 8  # top activating contexts per neuron
    calib_seqs: int = 8  # sequences of the calibration slice (the first of the corpus)
    checkpoint_seconds: float | None = None  # None: every 60 s, spaced out when checkpoints are slow

    def __post_init__(self) -> None:
        """Refuse values that cannot mean anything (a 0 is never read as "the default")."""
        at_least = {"n_tokens": 1, "seq_len": 2, "batch_size": 1, "events_cap": 1, "top_k": 1, "calib_seqs": 1}
        for name, low in at_least.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise UsageError(f"--{_flag(name)} {value} is too small (at least {low})")
        if not 0 < self.quantile < 1:
            raise UsageError(f"--quantile {self.quantile} must be between 0 and 1")
        if self.threshold is not None and not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise UsageError(f"--threshold {self.threshold} must be a finite number, at least 0")
        if self.checkpoint_seconds is not None and not self.checkpoint_seconds >= 0:
            raise UsageError(f"--checkpoint-seconds {self.checkpoint_seconds} must be at least 0")


def _flag(name: str) -> str:
    return {"n_tokens": "tokens", "events_cap": "events"}.get(name, name).replace("_", "-")


@dataclass(frozen=True)
class CollectRequest:
    """A collection as asked for: every option as the user gave it (None: the default)."""

    model: str = DEFAULT_MODEL
    corpus: str | None = None  # None: `paper` for a hub model with the hub reachable, else `builtin`
    tokens: int | None = None
    seq_len: int | None = None
    batch_size: int | None = None
    seed: int = 0
    threshold: float | None = None
    quantile: float = 0.99
    events: int = 256
    checkpoint_seconds: float | None = None
    device: str | None = None
    dtype: str | None = None
    device_map: str | None = None
    max_memory: str | None = None
    offload_folder: Path | None = None
    layer_by_layer: bool = False
    chunk_tokens: int | None = None
    out: Path | None = None
    cache_dir: Path | None = None
    shard: str | None = None
    distributed: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        """Options that cannot go together are refused before anything is read."""
        if (self.max_memory or self.offload_folder) and not self.device_map:
            raise UsageError("--max-memory and --offload-folder place the weights of --device-map auto: add it")
        if self.chunk_tokens is not None and not self.layer_by_layer:
            raise UsageError("--chunk-tokens sizes the chunks of --layer-by-layer: add it")
        if self.chunk_tokens is not None and self.chunk_tokens < 1:
            raise UsageError(f"--chunk-tokens {self.chunk_tokens} is too small (at least 1)")
        if self.layer_by_layer and self.device_map:
            raise UsageError("--layer-by-layer and --device-map are two ways to run a large model: pick one")
        if self.distributed and (self.shard or self.device_map or self.layer_by_layer):
            raise UsageError("--distributed gives every process its own shard on its own device: "
                             "drop --shard, --device-map and --layer-by-layer")
        self.settings()  # refuses values that cannot mean anything (--seq-len 0, ...)
        missing = [name for name in TORCHRUN_ENV if name not in os.environ]
        if self.distributed and missing:
            raise UsageError(f"--distributed runs under torchrun (no {missing[0]} in the environment): "
                             "torchrun --nproc-per-node N -m neuron_tui.tui.cli collect --distributed MODEL ...")

    def settings(self, corpus: str = "builtin") -> Settings:
        return Settings(corpus=self.corpus or corpus, n_tokens=self.tokens, seq_len=self.seq_len,
                        batch_size=self.batch_size, seed=self.seed, threshold=self.threshold, quantile=self.quantile,
                        events_cap=self.events, checkpoint_seconds=self.checkpoint_seconds)


def default_corpus(source: ModelSource) -> tuple[str, str]:
    """(spec, a one-line notice) of the corpus a request that names none collects: the paper's mix of
    hub datasets for a model from the hub, when the hub answers and `datasets` is installed; the builtin
    corpus otherwise (offline, a local model)."""
    if not source.local and importlib.util.find_spec("datasets") is not None and hub_reachable():
        return "paper", ("corpus: paper, streamed from the hub (Pile validation/test Wikipedia, DM Mathematics, "
                         "HackerNews; Reddit; CodeParrot code): --corpus builtin for the offline one")
    return "builtin", ("corpus: builtin, about 1.1M tokens of the King James Bible and Python's documentation "
                       "(narrower than the paper's; --corpus paper streams its mix from the hub)")


@dataclass(frozen=True)
class ResolvedRequest:
    """A request and what it names, each resolved once (see the module docstring)."""

    request: CollectRequest
    source: ModelSource
    fingerprint: dict  # the weights' cheap fingerprint (core.fingerprint), taken when the request is resolved
    corpus: str  # the corpus spec collected: the request's, or the default for this model
    corpus_notice: str  # one line naming the default corpus chosen; "" when the request named one

    @classmethod
    def of(cls, request: CollectRequest) -> "ResolvedRequest":
        source = resolve(request.model)
        corpus, notice = (request.corpus, "") if request.corpus else default_corpus(source)
        return cls(request, source, source.fingerprint(), corpus, notice)

    def settings(self) -> Settings:
        return self.request.settings(self.corpus)

    def fingerprint_at(self, revision: str) -> dict:
        """The fingerprint of the weights a run loads: a local folder's or file's, as taken once; a hub
        model's at the commit its config resolved to (the one the weights are downloaded at)."""
        return self.fingerprint if self.source.local else self.source.fingerprint(revision)
