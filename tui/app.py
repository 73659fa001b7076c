"""The neuron-tui explorer: a keyboard-driven Textual app over one HDF5 summary (DESIGN section 6).

    run_explorer("path/to/summary.h5")

Screens: overview (all layers) -> layer (neuron table) -> neuron (detail). `?` lists every key; the
command palette (ctrl+p, or `g`) goes to `L12 N345` / `12/345` / `L12`. Marks (`m`) live in
`<summary>.marks.json` next to the summary and are exported (`e`) to CSV or JSON.

Every binding has an id (`layer.filter.dead`, `app.help`, ...), so keys can be remapped with a JSON
keymap {binding id: "key[,key]"}: the file named by $NEURON_TUI_KEYMAP, else
~/.config/neuron-tui/keymap.json when it exists (the same idea as the `posting` app's keymap).
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.worker import get_current_worker

from neuron_tui.cache import SummaryError

from .screens import (
    ErrorScreen,
    ExportDialog,
    HelpScreen,
    LayerScreen,
    MarkDialog,
    NeuronScreen,
    OverviewScreen,
    TooSmallScreen,
)
from .viewmodel import Explorer, ReadOnlyError, parse_goto
from .widgets import NeuronTable

MIN_SIZE = (80, 24)
KEYMAP_ENV = "NEURON_TUI_KEYMAP"


class GotoProvider(Provider):
    """Command palette: `L12 N345`, `12/345`, `12 345` open a neuron; `L12` opens a layer."""

    async def search(self, query: str) -> Hits:
        app = self.app
        explorer = getattr(app, "explorer", None)
        parsed = parse_goto(query)
        if explorer is None or parsed is None:
            return
        layer, neuron = parsed
        info = explorer.info
        if not 0 <= layer < info.n_layers:
            yield Hit(0.5, f"no layer {layer} (layers 0..{info.n_layers - 1})", lambda: None, help="out of range")
            return
        if neuron is None:
            yield Hit(1.0, f"Go to layer L{layer}", partial(app.goto, layer, None), help="open the layer's table")
        elif not 0 <= neuron < info.n_neurons:
            yield Hit(0.5, f"no neuron {neuron} in L{layer} (0..{info.n_neurons - 1})", lambda: None,
                      help="out of range")
        else:
            yield Hit(1.0, f"Go to L{layer} N{neuron}", partial(app.goto, layer, neuron),
                      help="open the neuron's detail")

    async def discover(self) -> Hits:
        explorer = getattr(self.app, "explorer", None)
        if explorer is None:
            return
        yield DiscoveryHit("Go to a neuron: type L12 N345 or 12/345", lambda: None, help="or L12 for a layer")
        for layer in range(min(explorer.info.n_layers, 100)):
            yield DiscoveryHit(f"Go to layer L{layer}", partial(self.app.goto, layer, None))


class NeuronApp(App):
    """The explorer of one summary file."""

    CSS_PATH = "app.tcss"
    TITLE = "neuron-tui"
    COMMANDS = App.COMMANDS | {GotoProvider}
    ENABLE_COMMAND_PALETTE = True

    BINDINGS = [
        Binding("question_mark", "help", "Keys", key_display="?", tooltip="show every key", id="app.help"),
        Binding("g", "goto", "Go to", show=False, tooltip="go to L12 N345 / 12/345 / L12 (command palette)",
                id="app.goto"),
        Binding("e", "export", "Export", show=False, tooltip="export the marks with their data to CSV or JSON",
                id="app.export"),
        Binding("q", "quit", "Quit", show=False, tooltip="quit", id="app.quit"),
    ]

    def __init__(self, path: Path | str, keymap: dict[str, str] | None = None, min_size: tuple[int, int] = MIN_SIZE):
        super().__init__()
        self.path = Path(path)
        self.explorer: Explorer | None = None
        self.min_size = min_size
        self.error: str | None = None
        self._keymap_overrides = dict(keymap or {})
        if keymap:
            self.set_keymap(keymap)

    # ---- start ----
    def on_mount(self) -> None:
        self.title = f"neuron-tui · {self.path.name}"
        self.push_screen(OverviewScreen())
        self.call_later(self.check_size)
        self._open()

    @work(thread=True, exclusive=True, group="open")
    def _open(self) -> None:
        try:
            explorer = Explorer.open(self.path)
        except SummaryError as exc:
            self.call_from_thread(self._failed, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a clear message on screen beats a traceback
            self.call_from_thread(self._failed, f"{self.path}: {exc.__class__.__name__}: {exc}")
            return
        self.call_from_thread(self._opened, explorer)
        try:
            rows = explorer.overview()
        except Exception as exc:  # noqa: BLE001 - a clear message on screen beats a traceback
            self.call_from_thread(self._failed, f"{self.path}: cannot read the layers: {exc}")
            return
        if not get_current_worker().is_cancelled:
            self.call_from_thread(self._overview_rows, rows)

    def _overview_screen(self) -> OverviewScreen | None:
        for screen in self.screen_stack:
            if isinstance(screen, OverviewScreen):
                return screen
        return None

    def _opened(self, explorer: Explorer) -> None:
        self.explorer = explorer
        screen = self._overview_screen()
        if screen is not None:
            screen.show_info(explorer.info)
        if explorer.marks.error:
            self.notify(explorer.marks.error, severity="warning")

    def _overview_rows(self, rows) -> None:
        screen = self._overview_screen()
        if screen is not None:
            screen.show_rows(rows)

    def _failed(self, message: str) -> None:
        self.error = message
        while len(self.screen_stack) > 1:
            self.pop_screen()
        self.push_screen(ErrorScreen("Cannot open this summary", message))
        self.call_later(self.check_size)

    def on_unmount(self) -> None:
        if self.explorer is not None:
            self.explorer.close()

    # ---- size ----
    def check_size(self) -> None:
        """Cover everything with a message while the terminal is smaller than `min_size`."""
        w, h = self.size
        small = w < self.min_size[0] or h < self.min_size[1]
        on_top = isinstance(self.screen, TooSmallScreen)
        if small and not on_top:
            self.push_screen(TooSmallScreen(self.min_size))
        elif not small and on_top:
            self.pop_screen()
        elif small and on_top:
            self.screen.update_size()

    # ---- navigation ----
    def open_layer(self, layer: int, neuron: int | None = None) -> None:
        if self.explorer is None:
            return
        self.push_screen(LayerScreen(layer, neuron=neuron))

    def goto(self, layer: int, neuron: int | None) -> None:
        """Open layer `layer` (and neuron `neuron`'s detail) on top of the overview."""
        if self.explorer is None:
            return
        info = self.explorer.info
        if not 0 <= layer < info.n_layers or (neuron is not None and not 0 <= neuron < info.n_neurons):
            self.notify(f"no L{layer} N{neuron} in this summary", severity="error")
            return
        while len(self.screen_stack) > 2 and not isinstance(self.screen, OverviewScreen):
            self.pop_screen()
        self.push_screen(LayerScreen(layer, neuron=neuron))
        if neuron is not None:
            self.push_screen(NeuronScreen(layer, neuron))

    def action_goto(self) -> None:
        if self.explorer is not None:
            self.action_command_palette()

    # ---- help ----
    def key_sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """(section, [(keys, description)]) for every screen, keymap overrides applied."""

        def keys(bindings) -> list[tuple[str, str]]:
            out = []
            for b in bindings:
                key = self._keymap_overrides.get(b.id or "", b.key)
                shown = ", ".join(b.key_display if (b.key_display and key == b.key) else self.get_key_display(
                    Binding(k.strip(), b.action)) for k in key.split(","))
                out.append((shown, b.tooltip or b.description))
            return out

        general = keys(self.BINDINGS) + [
            ("ctrl+p", "command palette (go to L12 N345, 12/345, L12; themes…)"),
            ("ctrl+q", "quit"),
        ]
        return [
            ("Everywhere", general),
            ("Overview", [("↑ ↓", "move between layers"), ("enter", "open the layer")]),
            ("Layer table", keys(LayerScreen.BINDINGS) + keys(NeuronTable.BINDINGS)
             + [("click header", "sort by that column")]),
            ("Search box", [("type", "filter to neurons whose triggers contain the text"),
                            ("enter", "back to the table, keep the search"), ("esc", "clear the search")]),
            ("Neuron detail", keys(NeuronScreen.BINDINGS) + [("↑ ↓ pgup pgdn", "scroll")]),
            ("Mark dialog", [("enter", "save the note"), ("esc", "cancel")]),
            ("Export dialog", [("c", "CSV"), ("j", "JSON"), ("esc", "cancel")]),
        ]

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.key_sections()))

    # ---- marks ----
    def mark_neuron(self, layer: int, neuron: int) -> None:
        if self.explorer is None:
            return
        marks = self.explorer.marks
        if marks.read_only:
            self.notify("this summary is partial (still being collected): read-only, marks are off",
                        severity="warning")
            return

        def done(note: str | None) -> None:
            if note is None:
                return
            try:
                marks.set(layer, neuron, note)
            except ReadOnlyError as exc:
                self.notify(str(exc), severity="error")
                return
            self.notify(f"marked L{layer} N{neuron}" + (f": {note}" if note else ""), timeout=2)
            self._marks_changed()

        self.push_screen(MarkDialog(layer, neuron, marks.note(layer, neuron)), done)

    def unmark_neuron(self, layer: int, neuron: int) -> None:
        if self.explorer is None:
            return
        try:
            removed = self.explorer.marks.remove(layer, neuron)
        except ReadOnlyError as exc:
            self.notify(str(exc), severity="warning")
            return
        self.notify(f"unmarked L{layer} N{neuron}" if removed else f"L{layer} N{neuron} was not marked", timeout=2)
        if removed:
            self._marks_changed()

    def _marks_changed(self) -> None:
        for screen in self.screen_stack:
            if hasattr(screen, "marks_changed"):
                screen.marks_changed()

    def action_export(self) -> None:
        if self.explorer is None:
            return
        n = len(self.explorer.marks)
        if n == 0:
            self.notify("nothing to export: mark neurons with m first", severity="warning")
            return

        def done(fmt: str | None) -> None:
            if fmt:
                self._export(fmt)

        self.push_screen(ExportDialog(n, str(self.explorer.info.path.parent)), done)

    @work(thread=True, exclusive=True, group="export")
    def _export(self, fmt: str) -> None:
        try:
            path = self.explorer.export_marks(fmt)
        except Exception as exc:  # noqa: BLE001 - a clear message on screen beats a traceback
            self.call_from_thread(self.notify, f"export failed: {exc}", severity="error")
            return
        self.last_export = path
        self.call_from_thread(self.notify, f"exported {len(self.explorer.marks)} mark(s) to {path}", timeout=6)


def load_keymap() -> dict[str, str]:
    """The user's keymap: $NEURON_TUI_KEYMAP, else ~/.config/neuron-tui/keymap.json; {} when none."""
    path = os.environ.get(KEYMAP_ENV)
    candidate = Path(path).expanduser() if path else Path.home() / ".config" / "neuron-tui" / "keymap.json"
    if not candidate.is_file():
        return {}
    try:
        data = json.loads(candidate.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def run_explorer(path) -> None:
    """Open the explorer on the summary at `path` (blocks until the user quits)."""
    NeuronApp(path, keymap=load_keymap()).run()
