"""A model source (core.sources) -> a loaded causal LM, its tokenizer and the facts a summary records.

Everything goes through transformers' own `from_pretrained`, so what works here works on a GPU box
with the hub; every failure is one line (`load_error`).
"""

from __future__ import annotations

import io
from contextlib import contextmanager, nullcontext, redirect_stderr
from dataclasses import dataclass, field
from pathlib import Path

import torch

from neuron_tui.core.errors import NeuronTuiError, UsageError
from neuron_tui.core.sources import (
    ModelSource,
    download_hint,
    hub_reachable,
    use_cache_if_offline,
)

from .adapters import adapter_for


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    source: ModelSource
    revision: str  # hub commit hash, or the GGUF file name and size: what identifies the weights
    fingerprint: dict = field(default_factory=lambda: {"kind": "memory", "path": "", "digest": ""})  # core.fingerprint

    @property
    def architecture(self) -> str:
        return self.model.config.model_type

    @property
    def max_positions(self) -> int | None:
        config = self.model.config
        for attr in ("max_position_embeddings", "n_positions"):
            if getattr(config, attr, None):
                return int(getattr(config, attr))
        return None


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    """bf16 where the GPU supports it, fp16 on other GPUs, fp32 on the CPU (CPU half math is slow)."""
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def dtype_name(dtype: torch.dtype) -> str:
    """fp32, bf16 or fp16: how a run key names the dtype activations were computed in."""
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def load(source: ModelSource, device: str | None = None, dtype: str | None = None, device_map: str | None = None,
         max_memory: dict | None = None, offload_folder: str | None = None, on_host: bool = False,
         revision: str | None = None, quiet: bool = False, config=None, fingerprint: dict | None = None) -> LoadedModel:
    """Load model and tokenizer; every failure becomes a one-line NeuronTuiError. With `device_map`
    accelerate places the layers (`max_memory`: its per-device budget, `offload_folder`: where the
    weights that fit nowhere go); `on_host` leaves the weights in host memory, in `device`'s dtype
    (the layer-by-layer schedule moves them); `revision` pins a hub model's commit; `quiet` hides
    transformers' loading bars (they would draw over the explorer, or into a script's stderr).
    `config` and `fingerprint`: what a planned run already read of this source, not read again."""
    device = device or default_device()
    if dtype is not None and dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; use one of fp32, bf16, fp16")
    torch_dtype = DTYPES[dtype] if dtype else default_dtype(device)
    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    if revision:
        kwargs["revision"] = revision
    placement = {"device_map": device_map} if device_map else {}
    if device_map and max_memory:
        placement["max_memory"] = max_memory
    if device_map and offload_folder:
        placement["offload_folder"] = str(offload_folder)
    try:
        config = config or load_config(source, revision)
        with _no_bars() if quiet else nullcontext():
            tokenizer, model = _from_pretrained(source, torch_dtype, placement, kwargs)
    except (UsageError, NeuronTuiError):
        raise
    except (OSError, ValueError) as exc:
        raise load_error(source, exc) from None
    if device_map is None and not on_host:
        model.to(device)
    model.eval()
    revision = getattr(config, "_commit_hash", None) or ""
    if source.gguf_file:
        size = (Path(source.load_from) / source.gguf_file).stat().st_size
        revision = f"{source.gguf_file}:{size}"
    return LoadedModel(model, tokenizer, source, revision, fingerprint or source.fingerprint(revision))


def _from_pretrained(source: ModelSource, torch_dtype, placement: dict, kwargs: dict):
    """(tokenizer, model) of `source`, whose weights must fill exactly the model its config describes:
    transformers initialises a weight the files lack at random, and ignores one they have in excess, so
    a config.json of 3 layers over the weights of 2 would collect a random third layer as if it were
    real. Its own report of such weights is replaced by one line (its log is quiet while loading)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(source.load_from, **kwargs)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = AutoModelForCausalLM.from_pretrained(source.load_from, dtype=torch_dtype,
                                                           output_loading_info=True, **placement, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    wrong = {what: sorted(str(key[0] if isinstance(key, tuple) else key) for key in info.get(name) or ())
             for what, name in (("missing", "missing_keys"), ("unexpected", "unexpected_keys"),
                                ("of another shape", "mismatched_keys"))}
    if any(wrong.values()):
        where = Path(source.load_from) / (source.gguf_file or "") if source.local else source.name
        listed = "; ".join(f"{len(keys)} {what} ({_some(keys)})" for what, keys in wrong.items() if keys)
        raise NeuronTuiError(f"cannot load {where}: its weights do not match its config: {listed}")
    return tokenizer, model


def _some(names: list[str], shown: int = 3) -> str:
    """The first few of a list of names, and how many more."""
    more = f", ... {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


@contextmanager
def _no_bars():
    """No progress bars while loading: transformers' own switch covers its weight loading, not the
    GGUF reader's bar, which writes to sys.stderr directly (its text is not needed: failures raise)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with redirect_stderr(io.StringIO()):
            yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def load_config(source: ModelSource, revision: str | None = None):
    """The model's transformers config (a small file, or the GGUF header), refusing an unsupported
    architecture before any weight is fetched; hub failures are one line (see load_error)."""
    from transformers import AutoConfig

    if not source.local:
        use_cache_if_offline()
    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    if revision:
        kwargs["revision"] = revision
    try:
        config = AutoConfig.from_pretrained(source.load_from, **kwargs)
    except (OSError, ValueError) as exc:
        raise load_error(source, exc) from None
    adapter_for(config.model_type)
    return config


def parse_max_memory(spec: str) -> dict:
    """`--max-memory 0=60GiB,1=75GiB,cpu=200GiB` -> accelerate's max_memory {0: ..., 1: ..., "cpu": ...}
    in bytes; a malformed entry is a UsageError naming it."""
    from accelerate.utils import convert_file_size_to_int

    budget: dict = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        where, _, size = entry.partition("=")
        where = where.strip().removeprefix("cuda:")
        try:
            key = int(where) if where.isdigit() else where
            if key not in ("cpu", "mps", "disk") and not isinstance(key, int):
                raise ValueError(where)
            budget[key] = convert_file_size_to_int(size.strip())
        except ValueError:
            raise UsageError(f"bad --max-memory entry {entry!r}: expected DEVICE=SIZE, e.g. 0=60GiB or cpu=200GiB") from None
    return budget


def execution_device(module: torch.nn.Module) -> torch.device:
    """Where `module` computes: its weight's device, or, when accelerate offloads it (weights on the
    meta device, loaded per forward), the execution device of its hook."""
    hook = getattr(module, "_hf_hook", None)
    where = getattr(hook, "execution_device", None)
    if where is not None:
        return torch.device(where)  # an int is an index on the machine's accelerator
    return next(module.parameters()).device


def load_error(source: ModelSource, exc: Exception) -> NeuronTuiError:
    """One line for a transformers loading failure: unknown on the hub, hub unreachable, or other."""
    text = str(exc)
    if source.local:
        return NeuronTuiError(f"cannot load {source.load_from}: {text.splitlines()[0] if text else exc!r}")
    if "valid model identifier" in text or "404" in text or "Repository Not Found" in text:
        return UsageError(f"unknown model {source.name!r}: not found on the Hugging Face hub")
    if "offload_folder" in text:
        return NeuronTuiError(f"cannot load {source.name}: its weights do not fit in GPU and CPU memory; pass "
                              "--offload-folder DIR on a disk with room for them")
    if "connect" in text.lower() or "offline" in text.lower() or "cached files" in text or not hub_reachable():
        return NeuronTuiError(
            f"cannot download {source.name}: the Hugging Face hub is unreachable from here and the model is not in "
            f"the local cache; download it where there is network ({download_hint(source.name)}) and pass DIR instead"
        )
    return NeuronTuiError(f"cannot load {source.name}: {text.splitlines()[0] if text else exc!r}")


def ffn_width(config) -> int:
    """Neurons per layer from a config alone (before any weight is loaded)."""
    for attr in ("intermediate_size", "ffn_dim", "n_inner"):
        if getattr(config, attr, None):
            return int(getattr(config, attr))
    return 4 * int(getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0))
