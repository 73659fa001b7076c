"""The explorer's one way to read: a thread worker that posts either its answer or its failure.

    read_in_thread(screen, partial(explorer.view, layer, state), group="layer-view",
                   answered=lambda view: screen.ViewLoaded(view),
                   failed=lambda why: ReadFailed(f"cannot read layer {layer}: {why}"))

HDF5 reads (and the probe's model) never run on the UI thread, and a damaged file is a message on
screen, never a traceback: `failed` gets the one-line `viewmodel.reason` of the exception.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from textual.dom import DOMNode
from textual.message import Message
from textual.worker import Worker

from .viewmodel import reason

T = TypeVar("T")


def read_in_thread(node: DOMNode, read: Callable[[], T], *, group: str,
                   answered: Callable[[T], Message] | None = None, failed: Callable[[str], Message] | None = None,
                   exclusive: bool = True) -> Worker[None]:
    """Run `read()` in a thread worker of `node` (`exclusive`: cancelling the group's previous one) and
    post `answered(result)` to `node`, or `failed(reason)` when it raises (None: post nothing)."""

    def work() -> None:
        try:
            result = read()
        except Exception as exc:  # noqa: BLE001 - a message on screen, never a traceback
            if failed is not None:
                node.post_message(failed(reason(exc)))
            return
        if answered is not None:
            node.post_message(answered(result))

    return node.run_worker(work, name=group, group=group, exclusive=exclusive, thread=True)
