"""Where summaries live, and how a request finds the summary it made before.

One file per run key (model, weights, corpus identity, rule, settings) in the cache folder; a running
or interrupted collection lives next to its final file as `<name>.partial.h5`, a shard as
`<name>.shard<K>of<N>.h5`. `index.json` in the folder remembers which file each *request* produced (a
request is what the user typed, with cheap fingerprints of the model and corpus files), so that a
second `neuron-tui MODEL` opens its summary without loading the model's config, hashing the corpus or
importing torch; every entry is checked against the file it names before it is used.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

ENV_VAR = "NEURON_TUI_CACHE"
INDEX_NAME = "index.json"


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
    """The summary of `model` for run key `key` (a hex digest of everything that identifies the run)."""
    return Path(folder) / f"{model_slug(model)}__{key[:16]}.h5"


def partial_path(final: Path) -> Path:
    """The checkpoint of a collection still running (or interrupted) that will become `final`."""
    return final.with_name(final.stem + ".partial.h5")


def shard_path(whole: Path, ks: tuple[int, ...], n: int) -> Path:
    """The file of shard ks/n next to the whole run's: `<whole>.shard<K>of<N>.h5`, so a distributed rank
    and a `--shard K/N` run share checkpoints, and the lookup of a model's summary skips shards."""
    return whole.with_name(f"{whole.stem}.shard{'_'.join(map(str, ks))}of{n}{whole.suffix}")


def _whole_run(path: Path) -> bool:
    """A finished summary of a whole run: not a checkpoint, a shard or a temporary file."""
    name = path.name
    return name.endswith(".h5") and not name.endswith(".partial.h5") and ".shard" not in name


class RequestIndex:
    """`index.json`: request key -> the summary file (a name in the same folder) it produced."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / INDEX_NAME

    def _entries(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # absent or damaged: the index is only a shortcut, the full lookup still works
        return data if isinstance(data, dict) else {}

    def lookup(self, key: str) -> tuple[Path, dict] | None:
        """(file, its entry) recorded for `key`, when that file still exists."""
        entry = self._entries().get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            return None
        path = self.path.parent / Path(entry["file"]).name
        return (path, entry) if path.is_file() else None

    def record(self, key: str, path: Path, **facts) -> None:
        """Remember that `key` produced `path` (with `facts` to check before reuse); best effort."""
        entries = self._entries()
        entries[key] = {"file": Path(path).name, **facts}
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)


def newest_summary(folder: Path, model: str) -> Path | None:
    """The most recently written whole-run summary of `model` in `folder`, if any."""
    found = [p for p in Path(folder).glob(f"{model_slug(model)}__*.h5") if _whole_run(p)]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None
