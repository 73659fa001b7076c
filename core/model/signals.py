"""Ctrl-C (SIGINT) and SIGTERM during a pass: requests to stop at the next whole batch.

A signal only sets a flag that the pass checks between chunks of batches, so no checkpoint ever holds a
batch that some layers counted and others did not; a second Ctrl-C stops at once (`StopNow`), keeping
the previous checkpoint.
"""

from __future__ import annotations

import signal


class StopNow(Exception):
    """A second Ctrl-C: stop at once, without writing a checkpoint of a half-counted batch."""


class StopRequests:
    """While entered, SIGINT and SIGTERM (kill, a closing tmux) set `requested`; a second SIGINT raises
    StopNow. Outside the main thread (a worker) signals stay as they are."""

    def __init__(self):
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise StopNow
        self.requested = True

    def __enter__(self) -> "StopRequests":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (a worker): signals stay as they are
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
