"""The neuron-tui explorer: a keyboard-driven Textual app over one HDF5 summary (docs/design.md, "The explorer").

    run_explorer(summary_file)       # a core.read.api.SummaryFile the command line opened, or a path

Screens: overview (all layers) -> layer (neuron table) -> neuron (detail). `?` lists every key; the
command palette (ctrl+p, or `g`) goes to `L12 N345` / `12/345` / `L12`. Marks (`m`) live in
`<summary>.marks.json` next to the summary and are exported (`e`) to CSV or JSON.

Every binding has an id (`layer.filter.dead`, `app.help`, ...), so keys can be remapped with a JSON
keymap {binding id: "key[,key]"}: the file named by $NEURON_TUI_KEYMAP, else
~/.config/neuron-tui/keymap.json when it exists (the same idea as the `posting` app's keymap). A keymap
that cannot be read, or that names a binding id no screen has, is a one-line warning.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable

from neuron_tui.cache import SummaryError
from neuron_tui.core.read import kinds
from neuron_tui.core.read.api import SummaryFile

from .screens import (
    ErrorScreen,
    ExportDialog,
    HelpScreen,
    LayerScreen,
    MarkDialog,
    NeuronScreen,
    OverviewScreen,
    ProbeScreen,
    TooSmallScreen,
    reason,
)
from .viewmodel import Explorer, ReadOnlyError, parse_goto
from .widgets import NeuronTable

MIN_SIZE = (80, 24)
KEYMAP_ENV = "NEURON_TUI_KEYMAP"
SCREENS_WITH_KEYS = (OverviewScreen, LayerScreen, NeuronTable, NeuronScreen, ProbeScreen, HelpScreen, MarkDialog,
                     ExportDialog, ErrorScreen, TooSmallScreen)


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

    explorer: reactive[Explorer | None] = reactive(None)  # the open summary; screens watch it
    marks_version: reactive[int] = reactive(0)  # bumped on every mark change; screens watch it

    class Opened(Message):
        def __init__(self, explorer: Explorer) -> None:
            super().__init__()
            self.explorer = explorer

    def __init__(self, source: SummaryFile | Path | str, keymap: dict[str, str] | None = None,
                 keymap_warning: str = "", min_size: tuple[int, int] = MIN_SIZE, device: str | None = None):
        super().__init__()
        self.source = source
        self.device = device  # where the probe runs the summary's model (None: where the summary was made)
        self.probe = None  # core.model.probe.Probe, loaded on the first use of the probe screen
        self.path = source.path if isinstance(source, SummaryFile) else Path(source)
        self.min_size = min_size
        self.error: str | None = None
        self._keymap_overrides = dict(keymap or {})
        self._keymap_warning = keymap_warning
        if keymap:
            self.set_keymap(keymap)

    # ---- start ----
    def on_mount(self) -> None:
        self.title = f"neuron-tui · {self.path.name}"
        self.push_screen(OverviewScreen())
        self.call_later(self.check_size)
        if self._keymap_warning:
            self.notify(self._keymap_warning, severity="warning", timeout=8)
        if isinstance(self.source, SummaryFile):
            self._opened(Explorer(self.source))
        else:
            self._open(self.path)

    @work(thread=True, exclusive=True, group="open")
    def _open(self, path: Path) -> None:
        try:
            explorer = Explorer.open(path)
        except Exception as exc:  # noqa: BLE001 - a clear message on screen beats a traceback
            self.call_from_thread(self.failed, reason(exc) if isinstance(exc, SummaryError) else f"{path}: {reason(exc)}")
            return
        self.post_message(self.Opened(explorer))

    @on(Opened)
    def _on_opened(self, message: Opened) -> None:
        self._opened(message.explorer)

    def _opened(self, explorer: Explorer) -> None:
        self.explorer = explorer
        if explorer.marks.error:
            self.notify(explorer.marks.error, severity="warning")

    def failed(self, message: str) -> None:
        """The summary cannot be used: say why on a screen of its own (q quits)."""
        self.error = message
        while len(self.screen_stack) > 1:
            self.pop_screen()
        self.push_screen(ErrorScreen("Cannot open this summary", message))
        self.call_later(self.check_size)

    def on_unmount(self) -> None:
        if self.explorer is not None:
            self.explorer.close()

    def probe_failed(self, message: str) -> None:
        """The probe cannot run for this summary: one line, and the probe screen closes."""
        self.notify(message, severity="error", timeout=10)
        if isinstance(self.screen, ProbeScreen):
            self.pop_screen()

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
        if self.explorer is not None:
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
        screen = LayerScreen(layer, neuron=neuron)
        self.push_screen(screen)
        if neuron is not None:
            screen.open_neuron(neuron)

    def action_goto(self) -> None:
        if self.explorer is not None:
            self.action_command_palette()

    # ---- help ----
    def _keys(self, bindings) -> list[tuple[str, str]]:
        """(keys as shown, what they do) of `bindings`, the user's keymap applied by binding id."""
        out = []
        for b in bindings:
            key = self._keymap_overrides.get(b.id or "", b.key)
            shown = ", ".join(b.key_display if (b.key_display and key == b.key) else
                              self.get_key_display(Binding(k.strip(), b.action)) for k in key.split(","))
            out.append((shown, b.tooltip or b.description))
        return out

    def key_sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """(section, [(keys, description)]) for every screen, from the bindings themselves."""
        moves = ("cursor_up", "cursor_down", "page_up", "page_down", "scroll_home", "scroll_end")
        table_moves = [b for b in DataTable.BINDINGS if isinstance(b, Binding) and b.action in moves]
        return [
            ("Everywhere", self._keys(self.BINDINGS) + [("ctrl+p", "command palette (go to L12 N345, 12/345, L12)"),
                                                        ("ctrl+q", "quit")]),
            ("Overview", self._keys(OverviewScreen.BINDINGS) + self._keys(table_moves)),
            ("Layer table", self._keys(LayerScreen.BINDINGS) + self._keys(NeuronTable.BINDINGS)
             + [("click header", "sort by that column")]),
            ("Search box", [("type", "filter to neurons whose triggers contain the text"),
                            ("enter", "back to the table, keep the search"), ("esc", "clear the search")]),
            ("Neuron detail", self._keys(NeuronScreen.BINDINGS) + [("↑ ↓ pgup pgdn", "scroll")]),
            ("Probe", [("type, enter", "run the text through the model")] + self._keys(ProbeScreen.BINDINGS)),
            ("Mark dialog", [("enter", "save the note")] + self._keys(MarkDialog.BINDINGS)),
            ("Export dialog", [("enter", "export to the file named (.csv or .json)")] + self._keys(ExportDialog.BINDINGS)),
            ("What the screens show", LEGEND),
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
            self.marks_version += 1

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
            self.marks_version += 1

    def action_export(self) -> None:
        if self.explorer is None:
            return
        n = len(self.explorer.marks)
        if n == 0:
            self.notify("nothing to export: mark neurons with m first", severity="warning")
            return

        def done(path: Path | None) -> None:
            if path is not None:
                self._export(path)

        self.push_screen(ExportDialog(n, self.explorer.default_export("csv")), done)

    @work(thread=True, exclusive=True, group="export")
    def _export(self, path: Path) -> None:
        try:
            written = self.explorer.export_marks(path.suffix.lower().lstrip("."), path)
        except Exception as exc:  # noqa: BLE001 - a clear message on screen beats a traceback
            self.call_from_thread(self.notify, f"export failed: {reason(exc)}", severity="error")
            return
        self.call_from_thread(self.notify, f"exported {len(self.explorer.marks)} mark(s) to {written}", timeout=6)


LEGEND = [
    (" ".join(k.letter for k in kinds.KINDS), "categories: " + ", ".join(k.noun for k in kinds.KINDS)),
    ("#1 #2 …", "rank among the neuron's suppressed tokens, 1-based: #1 is the most suppressed; supp = its "
                "triggers' best rank"),
    ("● ○", "● a trigger counted in the token-detector criterion; ○ a covered token (fires on >= 95% of its "
            "occurrences) beyond those"),
    ("~12", "an estimated count: the neuron's firing events were sampled (each kept one stands for 2^level)"),
    ("◆ trigger", "a promoted / suppressed token that is also one of the neuron's triggers"),
    ("oscillatory", "positional type: fires on evenly spaced position ranges (OPT-125m layer 2)"),
    ("both-extremes", "positional type: its rate reaches both 0 and 1 (fires before, or after, a position)"),
    ("one-extreme", "positional type: its rate reaches one of 0 and 1 over some positions"),
    ("other", "positional type: depends on position but reaches neither 0 nor 1"),
    ("strong, weak", "a strong pattern reaches 0 / 1 exactly (other: a thin, smooth profile); a weak one only "
                     "comes close"),
    ("bars ≤71%", "overview: a bar's full width is the largest share in its column, shown in the header"),
    ("probe", "tokens shaded by the neuron's activation (green positive, magenta negative), firings underlined; "
              "· marks a token boundary inside a word; a firing off its recorded triggers is news"),
    ("ablation", "probe, z: the neuron set to 0 (zero) or to its mean firing value (mean) at every position; "
                 "rises / falls: the next tokens whose log-probability moves most at the cursor"),
]


def known_binding_ids() -> set[str]:
    """Every binding id of the app and its screens and widgets (what a keymap may name)."""
    return {b.id for owner in (NeuronApp, *SCREENS_WITH_KEYS) for b in owner.BINDINGS
            if isinstance(b, Binding) and b.id}


def load_keymap() -> tuple[dict[str, str], str]:
    """(the user's keymap, a one-line warning or ""): $NEURON_TUI_KEYMAP, else
    ~/.config/neuron-tui/keymap.json; ({}, "") when there is none."""
    path = os.environ.get(KEYMAP_ENV)
    candidate = Path(path).expanduser() if path else Path.home() / ".config" / "neuron-tui" / "keymap.json"
    if not candidate.is_file():
        return {}, (f"keymap {candidate} not found: default keys" if path else "")
    try:
        data = json.loads(candidate.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {}, f"keymap {candidate} is unreadable ({exc.__class__.__name__}): default keys"
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return {}, f"keymap {candidate} is not a JSON object of binding id -> key: default keys"
    unknown = sorted(set(data) - known_binding_ids())
    keymap = {k: v for k, v in data.items() if k not in unknown}
    warning = f"keymap {candidate}: unknown binding id(s) {', '.join(unknown)} ignored (ids are listed in README)" if unknown else ""
    return keymap, warning


def run_explorer(source: SummaryFile | Path | str, device: str | None = None) -> None:
    """Open the explorer on a summary (blocks until the user quits); `device`: where the probe runs."""
    keymap, warning = load_keymap()
    NeuronApp(source, keymap=keymap, keymap_warning=warning, device=device).run()
