"""The collection progress bar: rich, on stderr (stdout stays clean for `--json` and pipes)."""

from __future__ import annotations

import resource
import sys

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _TokensPerSecond(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} tok/s" if speed else "- tok/s", style="progress.data.speed")


class CollectProgress:
    """tokens done / total, tokens per second and ETA; silent with `quiet`."""

    def __init__(self, total: int, done: int, quiet: bool, label: str):
        self._console = Console(stderr=True)
        self._quiet = quiet
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,} tokens"),
            _TokensPerSecond(),
            TimeRemainingColumn(),
            console=self._console,
            disable=quiet,
            transient=False,
        )
        self._task = self._progress.add_task(label, total=total, completed=done)

    def __enter__(self) -> "CollectProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def advance(self, tokens: int) -> None:
        self._progress.advance(self._task, tokens)

    def note(self, message: str, quiet_ok: bool = False) -> None:
        """A one-line notice on stderr; `quiet_ok` ones (mere progress) are dropped when quiet, the
        others (they change what the summary holds) are always printed."""
        if not (quiet_ok and self._quiet):
            self._console.print(f"neuron-tui: {message}")


def peak_memory() -> str:
    """This process's peak memory so far: resident host memory, and memory allocated on each CUDA
    device it used (what a run needs of the machine; machine-specific, so printed, never stored)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    parts = [f"host {rss / 2**30:.2f} GiB"]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i in range(torch.cuda.device_count()):
            used = torch.cuda.max_memory_allocated(i)
            if used:
                parts.append(f"cuda:{i} {used / 2**30:.2f} GiB")
    return "peak memory " + ", ".join(parts)
