"""The one entry to a summary: `ensure_summary(request)` finds the summary a request already made, or
collects it, and returns its path (`neuron-tui MODEL` and `neuron-tui collect` both call it).

A request is what the user asked for (`CollectRequest`: the model, the corpus and every collection
option as given), resolved once (`ResolvedRequest`: the model's source, its weights' fingerprint, the
corpus). Finding its summary takes two steps:

1. The cache folder's request index (cache.RequestIndex) maps a key of the request, made of cheap facts
   (the model's fingerprint, the corpus files' names, sizes and times, the options as given), to the
   file it produced. This needs no model config, no corpus hash and no torch: a second
   `neuron-tui MODEL` opens its explorer about as fast as `neuron-tui open FILE`.
2. Otherwise the collection side (core.model.entry, loaded here and only here: it imports torch) plans
   the run from the model's config and the corpus identity, reuses an existing summary of the planned
   run, else checks the destination, loads the model and collects. Either way the request is recorded
   in the index.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from neuron_tui.cache import RequestIndex, cache_dir, newest_summary, schema

from .corpus import corpus_fingerprint
from .errors import NeuronTuiError
from .settings import CollectRequest, ResolvedRequest
from .sources import resolve

# options besides the corpus that change what a summary holds (the others only change how it is computed or
# where it goes)
_RESULT_OPTIONS = ("tokens", "seq_len", "seed", "threshold", "quantile", "events", "dtype", "shard")


def request_key(resolved: ResolvedRequest) -> str:
    """The index key of a request: the model's cheap fingerprint, the corpus's, the options that change
    the result, and the device class its defaults depend on."""
    request = resolved.request
    facts = {
        "model": [resolved.source.name, resolved.fingerprint["digest"]],
        "corpus": corpus_fingerprint(resolved.corpus),
        "options": {name: getattr(request, name) for name in _RESULT_OPTIONS},
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
    return _indexed(ResolvedRequest.of(request))


def find_summary(target: str | Path, folder: Path | None = None) -> Path:
    """The summary a command or `neuron_tui.open_summary` reads: a file given directly, or a model
    name's summary in the cache folder `folder` (None: the default): the one its default request made
    (the request index, as `neuron-tui MODEL` finds it), else the newest one of that model. No model
    is loaded and no corpus read; a model without a summary is a NeuronTuiError naming the command
    that collects one."""
    path = Path(target).expanduser()
    if path.suffix == ".h5" or path.is_file() or path.is_dir() and not (path / "config.json").is_file():
        return path
    found = find_existing(CollectRequest(model=str(target), cache_dir=folder))
    name = resolve(str(target)).name
    found = found or newest_summary(cache_dir(folder), name)
    if found is None:
        raise NeuronTuiError(f"no summary of {name} in {cache_dir(folder)}; run: neuron-tui collect {target}")
    return found


def _indexed(resolved: ResolvedRequest) -> Path | None:
    hit = RequestIndex(_folder(resolved.request)).lookup(request_key(resolved))
    return None if hit is None else hit[0]


def _folder(request: CollectRequest) -> Path:
    return Path(request.out).parent if request.out else cache_dir(request.cache_dir)


def ensure_summary(request: CollectRequest, say: Callable[[str], None] = lambda text: None) -> Path:
    """The summary of `request`: found (index, then plan) or collected; `say` prints notices. Under
    torchrun (`distributed`) every rank plans and collects its shard; rank 0 records the request."""
    resolved = ResolvedRequest.of(request)
    if not request.distributed:
        found = _indexed(resolved)
        if found is not None:
            say(f"using the existing summary {found}")
            return found
    from neuron_tui.core.model import entry  # the collection side, and torch, load only here

    return entry.collect_request(resolved, say, record=lambda path: _record(resolved, path))


def _record(resolved: ResolvedRequest, path: Path) -> None:
    RequestIndex(_folder(resolved.request)).record(request_key(resolved), path, model=resolved.source.name)
