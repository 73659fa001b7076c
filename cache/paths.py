"""Where summaries live: one file per (model, corpus identity, rule) in the cache folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

ENV_VAR = "NEURON_TUI_CACHE"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """`--cache-dir`, else $NEURON_TUI_CACHE, else ~/.cache/neuron-tui."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path.home() / ".cache" / "neuron-tui"


def model_slug(model: str) -> str:
    """A file-name-safe, readable form of a model id (facebook/opt-1.3b -> facebook--opt-1.3b)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", model).strip("-") or "model"


def summary_path(folder: Path, model: str, key: str) -> Path:
    """The summary of `model` for run key `key` (a hex digest of corpus identity, rule and settings)."""
    return Path(folder) / f"{model_slug(model)}__{key[:16]}.h5"


def partial_path(final: Path) -> Path:
    """The checkpoint of a collection still running (or interrupted) that will become `final`."""
    return final.with_name(final.stem + ".partial.h5")
