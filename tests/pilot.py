"""Driving the explorer in tests with Textual's own waits (no clocks): shared by the pilot tests, the
snapshot tests and the fuzz driver."""

from __future__ import annotations

from textual.worker import WorkerCancelled


async def settle(pilot) -> None:
    """Until every worker has finished (or was cancelled: a screen that went away takes its workers
    with it) and the messages they posted are handled and painted."""
    app = pilot.app
    for _ in range(100):
        for worker in list(app.workers):
            try:
                await worker.wait()
            except WorkerCancelled:
                pass
        await pilot.pause()
        if not list(app.workers):
            break
    await pilot.pause()


async def press(pilot, *keys: str) -> None:
    await pilot.press(*keys)
    await settle(pilot)


def screen_text(app) -> str:
    """The characters on the terminal, modal screens over their background included."""
    update = app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    return "\n".join("".join(chop.text for chop in line) for line in update.strips)


async def type_text(pilot, text):
    for ch in text:
        await pilot.press({" ": "space", "/": "slash"}.get(ch, ch))
    await settle(pilot)
