"""Every read command on one summary file, in one process: what tests/test_fuzz.py runs on each
corrupted copy of a summary (a subprocess each, so that a hang is a timeout and a crash a crash).

    python tests/fuzz_driver.py FILE     # prints one JSON object: command -> {code, out, err}

Commands: report --json, neurons --json, neuron --json (two neurons of each layer), open (no terminal:
the report), the explorer itself headless (overview, a layer, a neuron: the record it shows, or the
error it shows), and analyze last (it rewrites the file) followed by report --json of the result. A
Python exception escaping any of them is recorded as "traceback".
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys
import traceback


def run_cli(args: list[str]) -> dict:
    from neuron_tui.tui.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
    except BaseException:  # noqa: BLE001 - what the fuzz test is looking for
        return {"code": None, "out": out.getvalue(), "err": err.getvalue(), "traceback": traceback.format_exc()}
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}


async def explore(path: str) -> dict:
    """The explorer on `path`: the overview's rows, layer 0's table, neuron 0's record, or the error."""
    from pilot import settle  # tests/ is this script's folder, first on sys.path

    from neuron_tui.tui.app import NeuronApp
    from neuron_tui.tui.screens.errors import ErrorScreen

    app = NeuronApp(path)
    shown: dict = {}
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await settle(pilot)
        for keys in (("enter",), ("enter",)):
            if isinstance(app.screen, ErrorScreen):
                break
            await pilot.press(*keys)
            await settle(pilot)
        if isinstance(app.screen, ErrorScreen):
            shown["error"] = app.screen.message
        shown["notifications"] = [n.message for n in app._notifications]
        record = getattr(app.screen, "record", None)
        if record is not None:
            shown["record"] = record
        if app.explorer is not None and app.explorer._overview is not None:
            shown["overview"] = app.explorer._overview
    return shown


def main(path: str) -> dict:
    results = {"report": run_cli(["report", path, "--json"]), "neurons": run_cli(["neurons", path, "--json"])}
    for layer in (0, 1):
        for index in (0, 7):
            results[f"neuron {layer} {index}"] = run_cli(["neuron", path, str(layer), str(index), "--json"])
    results["open"] = run_cli(["open", path])
    try:
        results["explorer"] = {"code": 0, "shown": asyncio.run(explore(path))}
    except BaseException:  # noqa: BLE001
        results["explorer"] = {"code": None, "traceback": traceback.format_exc()}
    results["analyze"] = run_cli(["analyze", path])
    if results["analyze"]["code"] == 0:
        results["analyzed report"] = run_cli(["report", path, "--json"])
    return results


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1]), default=str))
