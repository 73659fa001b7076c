"""How fast the explorer answers, on synthetic summaries of OPT sizes, and how fast it opens from the
command line.

    python bench/explorer.py                                   # the paper's shapes (T = 2048; made once)
    python bench/explorer.py --sizes opt-1.3b --repeat 5 --dir /tmp/nt-bench
    python bench/explorer.py --cli smollm2                     # neuron-tui MODEL vs neuron-tui open FILE

Summaries come from bench/make_summary.py and are kept in --dir (default: $TMPDIR/neuron-tui-bench), so
later runs skip the generation. Each figure is measured in a fresh process driving the real app headless
(`App.run_test`, 80x24), wall clock from the key press until the screen has painted the answer (the worker's
answer has reached its screen, every message queued by then is handled, and the screen's layout and
repaint are done):

- first screen: from the first import of the app module (Textual included) until the overview shows
  every layer's row; `app only` starts after the imports (what a resident process would see);
- layer open: overview -> enter -> the layer's table is shown (layer not read before);
- layer switch: `]` with the next layer already prefetched (what stepping through layers costs), and
  `]` cold, with the layer tables dropped first (HDF5 read + decompression + columns);
- filter, sort, search: `t` (token detectors), `3` (sort by rate), the last key of a search ` the`;
- neuron: enter -> the detail is shown (reads the neuron's slices and contexts).

Targets: first screen < 1 s, layer switch < 100 ms (prefetched < 50 ms), filter / sort / search
< 100 ms, neuron detail < 200 ms.

`--cli MODEL` runs the command line in a pseudo-terminal of 80x24 and times, from the process start
until the overview's layer summary line is on the terminal, `neuron-tui MODEL` (its summary found
through the request index) against `neuron-tui open FILE` on that summary, alternating, median of
--repeat runs each; the goal is a ratio within 1.5.

    python bench/explorer.py --screenshots docs/ --summary path/to/real.h5 [--size 100x30]

writes an SVG screenshot of each screen (overview, its plot view, layer, neuron, help) of that summary
instead (for the README; Textual's own SVG export).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from neuron_tui.core.read import synthetic as gen

GENERATOR_VERSION = 3  # bump when make_summary's output changes

DRIVER = r'''
import time
t0 = time.perf_counter()
import asyncio, json, statistics, sys
from neuron_tui.tui.app import NeuronApp
from neuron_tui.tui.screens.layer import LayerScreen
from neuron_tui.tui.screens.neuron import NeuronScreen
from neuron_tui.tui.screens.overview import OverviewScreen
t_import = time.perf_counter() - t0
path, repeat = sys.argv[1], int(sys.argv[2])

from textual import events

async def until(pilot, cond, limit=60.0):
    """Until cond() holds, then until that answer is painted: every message queued by then handled and
    the screen's pending layout and repaint done, what the next refresh tick does (Pilot.pause does the
    same after sleeping until the process looks idle, which adds 20-60 ms of its own sampling)."""
    start = time.perf_counter()
    while not cond():
        if time.perf_counter() - start > limit:
            raise TimeoutError("the app did not answer")
        await asyncio.sleep(0.0005)
    await pilot._wait_for_screen()
    pilot.app.screen._on_timer_update()

CHARS = {"right_square_bracket": "]", "space": " ", "enter": "\r", "slash": "/", "backspace": "\x7f"}

async def timed(pilot, key, cond):
    # the key goes straight to the driver's queue, as a terminal's would (Pilot.press adds idle waits)
    start = time.perf_counter()
    app = pilot.app
    app._driver.send_message(events.Key(key, CHARS.get(key, key if len(key) == 1 else None)))
    await until(pilot, cond)
    return time.perf_counter() - start

def shown(app, layer, **state):
    """The layer screen holds the view of `layer` in `state`."""
    s = app.screen
    if not isinstance(s, LayerScreen) or s.view is None or s.view.layer != layer or s.layer_index != layer:
        return False
    return all(getattr(s.view.state, k) == v for k, v in state.items())

async def settled(pilot):
    for _ in range(50):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

async def main():
    out = {"import": t_import}
    t1 = time.perf_counter()
    app = NeuronApp(path)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, OverviewScreen) and app.screen.rows is not None)
        now = time.perf_counter()
        out["first_screen"] = now - t0
        out["first_screen_app"] = now - t1
        out["layer_open"] = await timed(pilot, "enter", lambda: shown(app, 0))
        warm, cold = [], []
        for i in range(repeat):
            await settled(pilot)  # the neighbour prefetch finishes
            layer = app.screen.layer_index
            warm.append(await timed(pilot, "right_square_bracket", lambda: shown(app, layer + 1)))
        for i in range(repeat):
            await settled(pilot)
            app.explorer.file.table.cache_clear()
            layer = app.screen.layer_index
            cold.append(await timed(pilot, "right_square_bracket", lambda: shown(app, layer + 1)))
        out["switch_warm"] = statistics.median(warm)
        out["switch_cold"] = statistics.median(cold)
        await settled(pilot)
        layer = app.screen.layer_index
        filt, sort, search = [], [], []
        for i in range(repeat):
            filt.append(await timed(pilot, "t", lambda: shown(app, layer, filter="token")))
            await timed(pilot, "a", lambda: shown(app, layer, filter="all"))
            sort.append(await timed(pilot, "3", lambda: shown(app, layer, sort="rate", descending=True)))
            await timed(pilot, "1", lambda: shown(app, layer, sort="id"))
        out["filter"] = statistics.median(filt)
        out["sort"] = statistics.median(sort)
        for key in ("slash", "space", "t", "h"):
            await pilot.press(key)
        await settled(pilot)
        for i in range(repeat):
            search.append(await timed(pilot, "e", lambda: shown(app, layer, query=" the")))
            await timed(pilot, "backspace", lambda: shown(app, layer, query=" th"))
        out["search"] = statistics.median(search)
        await pilot.press("enter")  # back to the table, keep the search
        await settled(pilot)
        details = []
        for i in range(repeat):
            details.append(await timed(pilot, "enter", lambda: isinstance(app.screen, NeuronScreen)
                                       and app.screen.record is not None))
            await timed(pilot, "escape", lambda: isinstance(app.screen, LayerScreen))
            await pilot.press("down")
        out["neuron"] = statistics.median(details)
    print(json.dumps(out))

asyncio.run(main())
'''


SCREENSHOTS = r'''
import asyncio, sys
from pathlib import Path
import numpy as np
from neuron_tui.core.read import kinds
from neuron_tui.tui.app import NeuronApp
from neuron_tui.tui.screens import HelpScreen, LayerScreen, NeuronScreen, OverviewScreen
path, out, w, h = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

async def settle(pilot):
    for _ in range(50):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

async def main():
    app = NeuronApp(path)
    async with app.run_test(size=(w, h)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, OverviewScreen)
        app.save_screenshot("overview.svg", str(out))
        await pilot.press("v")  # the overview's plot view: the paper's curves over depth
        await settle(pilot)
        app.save_screenshot("plots.svg", str(out))
        await pilot.press("v")
        await settle(pilot)
        for keys in (("enter",), ("3",)):  # a layer, sorted by firing rate
            await pilot.press(*keys)
            await settle(pilot)
        assert isinstance(app.screen, LayerScreen)
        app.save_screenshot("layer.svg", str(out))
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, NeuronScreen)
        app.save_screenshot("neuron.svg", str(out))
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        app.save_screenshot("help.svg", str(out))
        await pilot.press("escape")
        # the families' section of the neuron screen, for the strongest prediction neuron of the summary
        flags, kurt = app.explorer.file.array("analysis/flags"), app.explorer.file.array("projection/vocab_kurt")
        mine = np.where(kinds.has(flags, "prediction"), kurt, -np.inf)
        layer, neuron = (int(i) for i in np.unravel_index(np.argmax(mine), mine.shape))
        app.push_screen(NeuronScreen(layer, neuron))
        await settle(pilot)
        await pilot.press("end")
        await settle(pilot)
        app.save_screenshot("families.svg", str(out))
    names = ("overview.svg", "plots.svg", "layer.svg", "neuron.svg", "help.svg", "families.svg")
    print("\n".join(str(out / n) for n in names))

asyncio.run(main())
'''


def first_screen_in_a_terminal(argv: list[str], cwd: Path | None = None, limit: float = 120.0) -> float:
    """Seconds from starting `argv` in an 80x24 pseudo-terminal until the overview's layer summary
    ("L0: ... neurons") is on it; then `q` quits it."""
    import fcntl
    import pty
    import re
    import select
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, in a terminal of its own
        os.environ.update(TERM="xterm-256color", NEURON_TUI_KEYMAP=os.devnull)
        os.execvp(argv[0], argv)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    start, seen = time.perf_counter(), b""
    marker = re.compile(rb"L0: [\d,]+ neurons")
    try:
        while not marker.search(re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", seen)):
            if time.perf_counter() - start > limit:
                raise SystemExit(f"{' '.join(argv)} did not show its overview within {limit:.0f} s")
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    seen += os.read(fd, 65536)
                except OSError:
                    raise SystemExit(f"{' '.join(argv)} ended before its overview:\n{seen[-2000:]!r}") from None
        elapsed = time.perf_counter() - start
        os.write(fd, b"q")
        os.waitpid(pid, 0)
        return elapsed
    finally:
        os.close(fd)


def cli_first_screens(model: str, repeat: int) -> dict:
    """`neuron-tui MODEL` against `neuron-tui open FILE`, alternating, median of `repeat` each."""
    exe = str(Path(sys.executable).with_name("neuron-tui"))
    found = subprocess.run([exe, "collect", model, "--quiet"], capture_output=True, text=True)  # finds it
    if found.returncode != 0:
        raise SystemExit(f"no summary of {model}: {found.stderr.strip()}")
    path = found.stdout.strip()
    times: dict[str, list[float]] = {"model": [], "file": []}
    for r in range(repeat):
        order = (("model", [exe, model]), ("file", [exe, "open", path]))
        for name, argv in order if r % 2 == 0 else order[::-1]:
            times[name].append(first_screen_in_a_terminal(argv))
    out = {name: statistics.median(t) for name, t in times.items()}
    out["ratio"] = out["model"] / out["file"]
    out["summary"] = path
    return out


def screenshots(summary: Path, out: Path, size: str) -> None:
    w, h = (int(v) for v in size.lower().split("x"))
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", SCREENSHOTS, str(summary), str(out), str(w), str(h)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"screenshots failed:\n{proc.stderr[-3000:]}")
    print(proc.stdout.strip())


def ensure_summary(folder: Path, preset: str) -> Path:
    L, F, T, S, V, C, K = gen.PRESETS[preset]
    path = folder / f"{preset}-v{GENERATOR_VERSION}.h5"
    if not path.exists():
        start = time.perf_counter()
        print(f"making {path.name} ({L} x {F}, T={T}, {S} sequences)…", file=sys.stderr, flush=True)
        gen.make_summary(path, L, F, seq_len=T, n_seq=S, vocab=V, seed=0, events_cap=C, top_k=K,
                         model=f"synthetic/{preset}")
        print(f"  made in {time.perf_counter() - start:.1f} s, {path.stat().st_size / 2**20:,.0f} MiB",
              file=sys.stderr, flush=True)
    return path


def measure(path: Path, repeat: int) -> dict:
    env = {**os.environ, "TEXTUAL": "", "NEURON_TUI_KEYMAP": os.devnull}
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(path), str(repeat)], capture_output=True, text=True,
                          env=env, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"driver failed on {path}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


ROWS = (
    ("first screen (from import)", "first_screen", 1.0),
    ("first screen (app only)", "first_screen_app", None),
    ("layer open (enter)", "layer_open", None),
    ("layer switch ] (prefetched)", "switch_warm", 0.05),
    ("layer switch ] (cold caches)", "switch_cold", 0.1),
    ("filter t (token detectors)", "filter", 0.1),
    ("sort 3 (rate)", "sort", 0.1),
    ("search ' the' (last key)", "search", 0.1),
    ("neuron detail (enter)", "neuron", 0.2),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["opt-1.3b-paper", "opt-66b-paper"], choices=sorted(gen.PRESETS))
    parser.add_argument("--cli", metavar="MODEL", help="time neuron-tui MODEL against neuron-tui open FILE instead")
    parser.add_argument("--repeat", type=int, default=5, help="median of this many presses")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "neuron-tui-bench")
    parser.add_argument("--screenshots", type=Path, help="write SVG screenshots of --summary into this folder")
    parser.add_argument("--summary", type=Path, help="the summary to screenshot")
    parser.add_argument("--size", default="80x24", help="terminal size of the screenshots (default 80x24)")
    args = parser.parse_args(argv)
    if args.screenshots:
        if not args.summary:
            parser.error("--screenshots needs --summary")
        screenshots(args.summary, args.screenshots, args.size)
        return 0
    if args.cli:
        r = cli_first_screens(args.cli, args.repeat)
        print(f"first screen in an 80x24 terminal, median of {args.repeat} ({r['summary']}):")
        print(f"  neuron-tui {args.cli:<20} {1000 * r['model']:7.0f} ms")
        print(f"  neuron-tui open FILE{'':<9} {1000 * r['file']:7.0f} ms")
        print(f"  ratio {r['ratio']:.2f} (goal: within 1.5)")
        return 0
    args.dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for preset in args.sizes:
        path = ensure_summary(args.dir, preset)
        results[preset] = measure(path, args.repeat)
    names = list(results)
    width = max(len(r[0]) for r in ROWS)
    head = f"{'':{width}}  " + "  ".join(f"{n:>15}" for n in names) + "  target"
    print(head)
    print("-" * len(head))
    for label, key, target in ROWS:
        cells = "  ".join(f"{1000 * results[n][key]:>12.0f} ms" for n in names)
        goal = f"< {1000 * target:.0f} ms" if target else ""
        missed = [n for n in names if target and results[n][key] >= target]
        verdict = (" missed by " + ", ".join(missed) if missed else " ok") if target else ""
        print(f"{label:{width}}  {cells}  {goal}{verdict}")
    print(f"(median of {args.repeat} presses; import of the app module: "
          + ", ".join(f"{n} {1000 * results[n]['import']:.0f} ms" for n in names) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
