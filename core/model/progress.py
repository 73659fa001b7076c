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


def _ended(task) -> bool:
    """The pass is over: every token done, or the bar stopped early (the corpus ran out, an error)."""
    return task.finished or bool(task.fields.get("ended"))


class _TokensPerSecond(ProgressColumn):
    """The speed: recent tokens per second while the pass runs; at the end, the tokens this run
    counted over its whole time (not the last moment's rate)."""

    def render(self, task) -> Text:
        if _ended(task) and task.elapsed:
            speed = (task.completed - task.fields.get("done_before", 0)) / task.elapsed
        else:
            speed = task.speed
        return Text(f"{speed:,.0f} tok/s" if speed else "- tok/s", style="progress.data.speed")


class _Time(ProgressColumn):
    """The time left while the pass runs; at the end, how long it took (`in 0:03:12`)."""

    def __init__(self) -> None:
        super().__init__()
        self._left = TimeRemainingColumn()

    def render(self, task) -> Text:
        if _ended(task):
            elapsed = int(task.elapsed or 0)
            return Text(f"in {elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}",
                        style="progress.elapsed")
        return self._left.render(task)


class CollectProgress:
    """tokens done / total, tokens per second and the time left; at the end the run's mean speed and
    how long it took; silent with `quiet`."""

    def __init__(self, total: int, done: int, quiet: bool, label: str):
        self._console = Console(stderr=True)
        self._quiet = quiet
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,} tokens"),
            _TokensPerSecond(),
            _Time(),
            console=self._console,
            disable=quiet,
            transient=False,
        )
        self._task = self._progress.add_task(label, total=total, completed=done, done_before=done, ended=False)

    def __enter__(self) -> "CollectProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.update(self._task, ended=True)
        self._progress.refresh()
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
