"""The collection side's one entry from the request side (core.pipeline): a resolved request's summary,
planned from the model's config, reused when it exists, else collected.

`collect_request` plans the run (config only: core.model.plan), reuses an existing summary of the
planned run, checks that the destination can be written before spending minutes loading weights, takes
the run's lock (cache.RunLock: one collection of a summary at a time), loads the model with the facts
already resolved (its source, config and fingerprint are not read again) and runs the pass: batch by
batch, layer by layer (`--layer-by-layer`), or one shard per process under torchrun (`--distributed`,
core.model.distributed).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from neuron_tui.cache import RunLock
from neuron_tui.core.settings import ResolvedRequest

from . import distributed, layerwise
from . import loading as models
from .collect import collect
from .plan import RunPlan, check_destination, device_budget, make_plan, shard_plan, summary_bytes


def collect_request(resolved: ResolvedRequest, say: Callable[[str], None], record: Callable[[Path], None]) -> Path:
    """The summary of `resolved`: an existing one of the planned run, or a new collection; `record(path)`
    is called by the process that owns the summary (every process, or rank 0 under torchrun)."""
    if not resolved.request.distributed:
        path = _collect(resolved, None, say)
        record(path)
        return path
    with distributed.session(resolved.request.device) as rank:
        path = _collect(resolved, rank, say)
        if rank.rank == 0:
            record(path)
        return path


def _collect(resolved: ResolvedRequest, rank: distributed.Rank | None, say: Callable[[str], None]) -> Path:
    """Plan the run (config only), reuse a summary of it, else check the destination, load, collect."""
    request, source = resolved.request, resolved.source
    device = rank.device if rank else request.device or models.default_device()
    config = models.load_config(source)
    revision = getattr(config, "_commit_hash", None) or ""
    plan = make_plan(source.name, config, resolved.settings(), device, out=request.out, cache_dir=request.cache_dir,
                     shard=request.shard, fingerprint=resolved.fingerprint_at(revision),
                     dtype=request.dtype or models.dtype_name(models.default_dtype(device)))
    if _exists(plan, say):
        return plan.path
    if resolved.corpus_notice:
        say(resolved.corpus_notice)
    # refuse a run that cannot be written before spending minutes loading weights (sizes from the config)
    check_destination(plan.path, summary_bytes(plan, config.num_hidden_layers, models.ffn_width(config)))
    with RunLock(plan.path if rank is None else shard_plan(plan, rank.rank, rank.world).path):
        if _exists(plan, say):  # written by the collection that held the lock until now
            return plan.path
        loaded = models.load(source, device=device, dtype=request.dtype, device_map=request.device_map,
                             max_memory=_max_memory(request.max_memory, request.device_map, plan, config),
                             offload_folder=request.offload_folder, on_host=request.layer_by_layer,
                             quiet=request.quiet, config=config, fingerprint=plan.fingerprint)
        if rank:
            return distributed.collect(loaded, plan, rank, quiet=request.quiet)
        return collect(loaded, plan, quiet=request.quiet, runner=_schedule(resolved, loaded, plan, device, say),
                       device=device)


def _exists(plan: RunPlan, say: Callable[[str], None]) -> bool:
    """Whether the planned run's summary is there already (then it is used, and said so)."""
    found = plan.path.exists()
    if found:
        say(f"using the existing summary {plan.path}")
    return found


def _schedule(resolved: ResolvedRequest, loaded: models.LoadedModel, plan: RunPlan, device: str,
              say: Callable[[str], None]):
    """The pass's schedule: layer by layer when asked, else None (batch by batch), with a hint when
    accelerate offloaded layers that a GPU would then receive again for every batch."""
    if resolved.request.layer_by_layer:
        chunk = layerwise.chunk_batches(device, plan.batch_size * plan.seq_len, resolved.request.chunk_tokens)
        return layerwise.LayerByLayer(loaded.model, device, chunk)
    offloaded = {str(d) for d in (getattr(loaded.model, "hf_device_map", None) or {}).values()} & {"cpu", "disk"}
    if offloaded and not str(device).startswith("cpu"):
        say(f"some layers are offloaded to {' and '.join(sorted(offloaded))} and will be streamed to the GPU for "
            "every batch; --layer-by-layer moves them once per chunk instead")
    return None


def _max_memory(spec: str | None, device_map: str | None, plan: RunPlan, config) -> dict | None:
    """--max-memory as given, else (with --device-map on a CUDA machine) each GPU's memory less the
    room its accumulators will take (plan.device_budget); None lets accelerate decide."""
    if spec:
        return models.parse_max_memory(spec)
    if not device_map or not torch.cuda.is_available():
        return None
    gpus = [torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())]
    return device_budget(plan, config.num_hidden_layers, models.ffn_width(config), gpus)
