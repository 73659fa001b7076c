"""How fast the explorer answers, on synthetic summaries of OPT-1.3b and OPT-66b size.

    python bench/explorer.py                      # both sizes (the 66b summary takes ~1 min to make once)
    python bench/explorer.py --sizes opt-1.3b --repeat 5 --dir /tmp/nt-bench

Summaries come from bench/make_summary.py and are kept in --dir (default: $TMPDIR/neuron-tui-bench), so
later runs skip the generation. Each figure is measured in a fresh process driving the real app headless
(`App.run_test`, 80x24), wall clock from the key press until the screen holds the answer:

- first screen: from the first import of the app module (Textual included) until the overview shows
  every layer's row; `app only` starts after the imports (what a resident process would see);
- layer open: overview -> enter -> the layer's table is shown (layer not read before);
- layer switch: `]` with the next layer already prefetched (what stepping through layers costs), and
  `]` cold, with every cache dropped first (HDF5 read + decompression + columns);
- filter, sort, search: `t` (token detectors), `3` (sort by rate), the last key of a search ` the`;
- neuron: enter -> the detail is shown (reads the neuron's slices and contexts).

Targets (issue 4): first screen < 1 s and layer switch / filter < 100 ms at OPT-1.3b size.

    python bench/explorer.py --screenshots docs/ --summary path/to/real.h5 [--size 100x30]

writes an SVG screenshot of each screen (overview, layer, neuron, help) of that summary instead (for the
README; Textual's own SVG export).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_summary as gen  # noqa: E402

GENERATOR_VERSION = 2

DRIVER = r'''
import time
t0 = time.perf_counter()
import asyncio, json, statistics, sys
from neuron_tui.tui.app import NeuronApp
from neuron_tui.tui.screens import LayerScreen, NeuronScreen
t_import = time.perf_counter() - t0
path, repeat = sys.argv[1], int(sys.argv[2])

from textual import events

async def until(pilot, cond, limit=30.0):
    start = time.perf_counter()
    while not cond():
        if time.perf_counter() - start > limit:
            raise TimeoutError("the app did not answer")
        await asyncio.sleep(0.0005)

CHARS = {"right_square_bracket": "]", "space": " ", "enter": "\r", "slash": "/", "backspace": "\x7f"}

async def timed(pilot, key, cond):
    # the key goes straight to the driver's queue, as a terminal's would (Pilot.press adds idle waits)
    start = time.perf_counter()
    app = pilot.app
    app._driver.send_message(events.Key(key, CHARS.get(key, key if len(key) == 1 else None)))
    await until(pilot, cond)
    return time.perf_counter() - start

def shown(app, layer, **state):
    """The layer screen shows `layer` in `state` and the table has painted that view."""
    s = app.screen
    if not isinstance(s, LayerScreen) or s.view is None or s.view.layer != layer or s.table.painted is not s.view:
        return False
    return all(getattr(s.view.state, k) == v for k, v in state.items())

async def main():
    out = {"import": t_import}
    t1 = time.perf_counter()
    app = NeuronApp(path)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: (s := app._overview_screen()) is not None and s.painted)
        now = time.perf_counter()
        out["first_screen"] = now - t0
        out["first_screen_app"] = now - t1
        out["layer_open"] = await timed(pilot, "enter", lambda: shown(app, 0))
        warm, cold = [], []
        for i in range(repeat):
            await pilot.pause(0.3)  # the neighbour prefetch finishes
            layer = app.screen.layer_index
            warm.append(await timed(pilot, "right_square_bracket", lambda: shown(app, layer + 1)))
        for i in range(repeat):
            await pilot.pause(0.3)
            ex = app.explorer
            with ex._lock:
                ex._layers.clear()
                ex.summary._cache.clear()
            layer = app.screen.layer_index
            cold.append(await timed(pilot, "right_square_bracket", lambda: shown(app, layer + 1)))
        out["switch_warm"] = statistics.median(warm)
        out["switch_cold"] = statistics.median(cold)
        out["switch_inapp"] = app.screen.last_latency
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
        for i in range(repeat):
            search.append(await timed(pilot, "e", lambda: shown(app, layer, query=" the")))
            await timed(pilot, "backspace", lambda: shown(app, layer, query=" th"))
        out["search"] = statistics.median(search)
        await pilot.press("enter")  # back to the table, keep the search
        await pilot.pause(0.2)
        out["neuron"] = await timed(pilot, "enter", lambda: isinstance(app.screen, NeuronScreen) and app.screen.painted)
    print(json.dumps(out))

asyncio.run(main())
'''


SCREENSHOTS = r'''
import asyncio, sys
from pathlib import Path
from neuron_tui.tui.app import NeuronApp
from neuron_tui.tui.screens import HelpScreen, LayerScreen, NeuronScreen, OverviewScreen
path, out, w, h = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

async def until(pilot, cond):
    for _ in range(1000):
        if cond():
            await pilot.pause(0.05)
            return
        await pilot.pause(0.01)
    raise TimeoutError("the app did not get there")

async def main():
    app = NeuronApp(path)
    async with app.run_test(size=(w, h)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, OverviewScreen) and app.screen.painted)
        app.save_screenshot("overview.svg", str(out))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, LayerScreen) and app.screen.table.painted is not None)
        await pilot.press("3")  # sort by firing rate
        await until(pilot, lambda: app.screen.view is not None and app.screen.view.state.sort == "rate"
                    and app.screen.table.painted is app.screen.view)
        app.save_screenshot("layer.svg", str(out))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, NeuronScreen) and app.screen.painted)
        app.save_screenshot("neuron.svg", str(out))
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        app.save_screenshot("help.svg", str(out))
    print("\n".join(str(out / n) for n in ("overview.svg", "layer.svg", "neuron.svg", "help.svg")))

asyncio.run(main())
'''


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
    ("layer switch ] (prefetched)", "switch_warm", 0.1),
    ("layer switch ] (cold caches)", "switch_cold", 0.1),
    ("filter t (token detectors)", "filter", 0.1),
    ("sort 3 (rate)", "sort", None),
    ("search ' the' (last key)", "search", None),
    ("neuron detail (enter)", "neuron", None),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["opt-1.3b", "opt-66b"], choices=sorted(gen.PRESETS))
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
    args.dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for preset in args.sizes:
        path = ensure_summary(args.dir, preset)
        results[preset] = measure(path, args.repeat)
    names = list(results)
    width = max(len(r[0]) for r in ROWS)
    head = f"{'':{width}}  " + "  ".join(f"{n:>12}" for n in names) + "  target (1.3b)"
    print(head)
    print("-" * len(head))
    for label, key, target in ROWS:
        cells = "  ".join(f"{1000 * results[n][key]:>9.0f} ms" for n in names)
        goal = f"< {1000 * target:.0f} ms" if target else ""
        ok = ""
        if target and "opt-1.3b" in results:
            ok = " ok" if results["opt-1.3b"][key] < target else " MISSED"
        print(f"{label:{width}}  {cells}  {goal}{ok}")
    print(f"(median of {args.repeat} presses; import of the app module: "
          + ", ".join(f"{n} {1000 * results[n]['import']:.0f} ms" for n in names) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
