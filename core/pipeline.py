"""The one entry to a summary: `ensure_summary(request)` finds the summary a request already made, or
collects it, and returns its path (`neuron-tui MODEL` and `neuron-tui collect` both call it).

A request is what the user asked for (`CollectRequest`: the model, the corpus and every collection
option as given). Finding its summary takes two steps:

1. `find_existing`: the cache folder's request index (cache.RequestIndex) maps a key of the request,
   made of cheap facts (the model's fingerprint, the corpus files' names, sizes and times, the options
   as given), to the file it produced. This needs no model config, no corpus hash and no torch: a
   second `neuron-tui MODEL` opens its explorer about as fast as `neuron-tui open FILE`.
2. Otherwise the run is planned (core.model.plan: the model's config, the corpus identity): an existing
   summary of the planned run is reused, else the model is loaded and the pass runs (core.model.collect,
   or core.model.distributed under torchrun), after `plan.check_destination` has proved that the output can
   be written. Either way the request is recorded in the index.

The collection's modules (and torch) load only in step 2.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from neuron_tui.cache import RequestIndex, cache_dir, schema

from .corpus import corpus_fingerprint
from .errors import UsageError
from .settings import Settings
from .sources import DEFAULT_MODEL, ModelSource, resolve


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

    def settings(self, corpus: str = "builtin") -> Settings:
        return Settings(corpus=self.corpus or corpus, n_tokens=self.tokens, seq_len=self.seq_len, batch_size=self.batch_size,
                        seed=self.seed, threshold=self.threshold, quantile=self.quantile, events_cap=self.events,
                        checkpoint_seconds=self.checkpoint_seconds)


# options that change what a summary holds (the others only change how it is computed or where it goes)
_RESULT_OPTIONS = ("corpus", "tokens", "seq_len", "seed", "threshold", "quantile", "events", "dtype", "shard")


def default_corpus(source: ModelSource) -> tuple[str, str]:
    """(spec, a one-line notice) of the corpus a request that names none collects: the paper's mix of
    hub datasets for a model from the hub, when the hub answers and `datasets` is installed; the builtin
    corpus otherwise (offline, a local model)."""
    import importlib.util

    from .sources import hub_reachable

    if not source.local and importlib.util.find_spec("datasets") is not None and hub_reachable():
        return "paper", ("corpus: paper, streamed from the hub (Pile validation/test Wikipedia, DM Mathematics, "
                         "HackerNews; Reddit; CodeParrot code): --corpus builtin for the offline one")
    return "builtin", ("corpus: builtin, about 1.1M tokens of the King James Bible and Python's documentation "
                       "(narrower than the paper's; --corpus paper streams its mix from the hub)")


def request_key(request: CollectRequest, source: ModelSource) -> str:
    """The index key of a request: the model's cheap fingerprint, the corpus's, the options that change
    the result, and the device class its defaults depend on."""
    corpus = request.corpus or default_corpus(source)[0]
    facts = {
        "model": [source.name, source.fingerprint()["digest"]],
        "corpus": corpus_fingerprint(corpus),
        "options": {name: getattr(request, name) for name in _RESULT_OPTIONS if name != "corpus"},
        "device": request.device or _device_class(),
        "out": str(Path(request.out).resolve()) if request.out else None,
        "schema_version": schema.SCHEMA_VERSION,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def _device_class() -> str:
    """Where the defaults will put the run, told without importing torch: CUDA when this machine has
    an NVIDIA driver (a wrong guess only misses the index; the run key itself is exact)."""
    return "cuda" if Path("/proc/driver/nvidia/version").exists() else "cpu"


def find_existing(request: CollectRequest) -> Path | None:
    """The summary the same request made before, from the request index; None when there is none or
    its file is gone (a changed model or corpus file changes the key itself)."""
    hit = RequestIndex(_folder(request)).lookup(request_key(request, resolve(request.model)))
    return None if hit is None else hit[0]


def _folder(request: CollectRequest) -> Path:
    return Path(request.out).parent if request.out else cache_dir(request.cache_dir)


def ensure_summary(request: CollectRequest, say: Callable[[str], None] = lambda text: None) -> Path:
    """The summary of `request`: found (index, then plan) or collected; `say` prints notices. Under
    torchrun (`distributed`) every rank plans and collects its shard; rank 0 records the request."""
    if request.distributed:
        from neuron_tui.core.model import distributed

        with distributed.session(request.device) as rank:
            source = resolve(request.model)
            path = _collect(request, source, rank, say)
            if rank.rank == 0:
                _record(request, source, path)
            return path
    found = find_existing(request)
    if found is not None:
        say(f"using the existing summary {found}")
        return found
    source = resolve(request.model)
    path = _collect(request, source, None, say)
    _record(request, source, path)
    return path


def _record(request: CollectRequest, source: ModelSource, path: Path) -> None:
    RequestIndex(_folder(request)).record(request_key(request, source), path, model=source.name)


def _collect(request: CollectRequest, source: ModelSource, rank, say: Callable[[str], None]) -> Path:
    """Plan the run (config only), reuse a summary of it, else check the destination, load, collect."""
    from neuron_tui.core.model import loading as models
    from neuron_tui.core.model.plan import check_destination, make_plan, summary_bytes

    device = rank.device if rank else request.device or models.default_device()
    config = models.load_config(source)
    revision = getattr(config, "_commit_hash", None) or ""
    corpus, notice = (request.corpus, "") if request.corpus else default_corpus(source)
    plan = make_plan(source.name, config, request.settings(corpus), device, out=request.out, cache_dir=request.cache_dir,
                     shard=request.shard, fingerprint=source.fingerprint(revision),
                     dtype=request.dtype or models.dtype_name(models.default_dtype(device)))
    if plan.path.exists():
        say(f"using the existing summary {plan.path}")
        return plan.path
    if notice:
        say(notice)
    # refuse a run that cannot be written before spending minutes loading weights (sizes from the config)
    check_destination(plan.path, summary_bytes(plan, config.num_hidden_layers, models.ffn_width(config)))
    loaded = models.load(request.model, device=device, dtype=request.dtype, device_map=request.device_map,
                         max_memory=_max_memory(request, plan, config), offload_folder=request.offload_folder,
                         on_host=request.layer_by_layer, quiet=request.quiet)
    if rank:
        from neuron_tui.core.model import distributed

        return distributed.collect(loaded, plan, rank, quiet=request.quiet)
    from neuron_tui.core.model.collect import collect

    return collect(loaded, plan, quiet=request.quiet, runner=_schedule(request, loaded, plan, device, say), device=device)


def _schedule(request: CollectRequest, loaded, plan, device: str, say: Callable[[str], None]):
    """The pass's schedule: layer by layer when asked, else None (batch by batch), with a hint when
    accelerate offloaded layers that a GPU would then receive again for every batch."""
    if request.layer_by_layer:
        from neuron_tui.core.model import layerwise

        chunk = layerwise.chunk_batches(device, plan.batch_size * plan.seq_len, request.chunk_tokens)
        return layerwise.LayerByLayer(loaded.model, device, chunk)
    offloaded = {str(d) for d in (getattr(loaded.model, "hf_device_map", None) or {}).values()} & {"cpu", "disk"}
    if offloaded and not str(device).startswith("cpu"):
        say(f"some layers are offloaded to {' and '.join(sorted(offloaded))} and will be streamed to the GPU for "
            "every batch; --layer-by-layer moves them once per chunk instead")
    return None


def _max_memory(request: CollectRequest, plan, config) -> dict | None:
    """--max-memory as given, else (with --device-map on a CUDA machine) each GPU's memory less the
    room its accumulators will take (plan.device_budget); None lets accelerate decide."""
    import torch

    from neuron_tui.core.model import loading as models
    from neuron_tui.core.model.plan import device_budget

    if request.max_memory:
        return models.parse_max_memory(request.max_memory)
    if not request.device_map or not torch.cuda.is_available():
        return None
    gpus = [torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())]
    return device_budget(plan, config.num_hidden_layers, models.ffn_width(config), gpus)
