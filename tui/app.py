"""The neuron-tui explorer: a keyboard-driven Textual app over one HDF5 summary (docs/design.md, "The explorer").

    run_explorer(summary_file)       # a core.read.api.SummaryFile the command line opened, or a path

Screens: overview (all layers) -> layer (neuron table) -> neuron (detail), and the probe. `?` lists every
key; the command palette (ctrl+p, or `g`) goes to `L12 N345` / `12/345` / `L12`. Marks (`m`) live in
`<summary>.marks.json` next to the summary and are exported (`e`) to CSV or JSON.

The app holds the open summary's view-model (`explorer`, reactive: screens watch it) and handles what
screens ask for with messages (tui/messages.py): opening screens, marks, failures. Keys and the keymap:
tui/keys.py.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from textual import on
from textual.app import App
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.message import Message
from textual.reactive import reactive

from neuron_tui.core.read.api import SummaryFile

from . import keys
from .messages import (
    MarkRequested,
    OpenLayer,
    OpenNeuron,
    OpenProbe,
    PickFilter,
    ProbeFailed,
    ReadFailed,
    UnmarkRequested,
)
from .screens.dialogs import ExportDialog, MarkDialog
from .screens.errors import ErrorScreen, TooSmallScreen
from .screens.help import HelpScreen
from .screens.kinds import FilterPicker
from .screens.layer import LayerScreen
from .screens.neuron import NeuronScreen
from .screens.overview import OverviewScreen
from .screens.probe import ProbeScreen
from .viewmodel import Explorer, ReadOnlyError, parse_goto
from .workers import read_in_thread

MIN_SIZE = (80, 24)


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
    BINDINGS = keys.APP_BINDINGS

    explorer: reactive[Explorer | None] = reactive(None)  # the open summary; screens watch it
    marks_version: reactive[int] = reactive(0)  # bumped on every mark change; screens watch it

    class Opened(Message):
        def __init__(self, explorer: Explorer) -> None:
            super().__init__()
            self.explorer = explorer

    class Exported(Message):
        def __init__(self, path: Path, n_marks: int) -> None:
            super().__init__()
            self.path, self.n_marks = path, n_marks

    def __init__(self, source: SummaryFile | Path | str, keymap: dict[str, str] | None = None,
                 keymap_warning: str = "", min_size: tuple[int, int] = MIN_SIZE, device: str | None = None):
        super().__init__()
        self.source = source
        self._device = device  # for the explorer's probe (None: where the summary was made)
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
            self._opened(Explorer(self.source, self._device))
        else:
            read_in_thread(self, partial(Explorer.open, self.path, self._device), group="open", answered=self.Opened,
                           failed=lambda why: ReadFailed(why, fatal=True))

    @on(Opened)
    def _on_opened(self, message: Opened) -> None:
        self._opened(message.explorer)

    def _opened(self, explorer: Explorer) -> None:
        self.explorer = explorer
        if explorer.marks.error:
            self.notify(explorer.marks.error, severity="warning")

    @on(ReadFailed)
    def _read_failed(self, message: ReadFailed) -> None:
        if message.fatal:
            self.failed(message.text)
        else:
            self.notify(message.text, severity="error")

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

    @on(ProbeFailed)
    def _probe_failed(self, message: ProbeFailed) -> None:
        """The probe cannot run for this summary: one line, and the probe screen closes."""
        self.notify(message.text, severity="error", timeout=10)
        if isinstance(self.screen, ProbeScreen):
            self.pop_screen()

    # ---- size ----
    def on_resize(self) -> None:
        self.call_later(self.check_size)

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
    @on(OpenLayer)
    def _open_layer(self, message: OpenLayer) -> None:
        if self.explorer is not None:
            self.push_screen(LayerScreen(message.layer, neuron=message.neuron, detail=message.detail))

    @on(OpenNeuron)
    def _open_neuron(self, message: OpenNeuron) -> None:
        if self.explorer is not None:
            screen = NeuronScreen(message.layer, message.neuron, message.order or (lambda: None))
            self.push_screen(screen, message.closed)

    @on(OpenProbe)
    def _open_probe(self, message: OpenProbe) -> None:
        if self.explorer is not None:
            self.push_screen(ProbeScreen(message.layer, message.neuron))

    @on(PickFilter)
    def _pick_filter(self, message: PickFilter) -> None:
        self.push_screen(FilterPicker(message.choices, message.current), message.chosen)

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
        self.push_screen(LayerScreen(layer, neuron=neuron, detail=neuron is not None))

    def action_goto(self) -> None:
        if self.explorer is not None:
            self.action_command_palette()

    # ---- help ----
    def key_sections(self) -> list[tuple[str, keys.Rows]]:
        """(section, [(keys, description)]) for every screen, from the bindings themselves."""
        return keys.help_sections(self._keymap_overrides, self.get_key_display)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.key_sections()))

    # ---- marks ----
    @on(MarkRequested)
    def _mark(self, message: MarkRequested) -> None:
        if self.explorer is None:
            return
        marks, layer, neuron = self.explorer.marks, message.layer, message.neuron
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

    @on(UnmarkRequested)
    def _unmark(self, message: UnmarkRequested) -> None:
        if self.explorer is None:
            return
        layer, neuron = message.layer, message.neuron
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
        explorer, n = self.explorer, len(self.explorer.marks)
        if n == 0:
            self.notify("nothing to export: mark neurons with m first", severity="warning")
            return

        def done(path: Path | None) -> None:
            if path is not None:
                read_in_thread(self, partial(explorer.export_marks, path.suffix.lower().lstrip("."), path),
                               group="export", answered=lambda written: self.Exported(written, len(explorer.marks)),
                               failed=lambda why: ReadFailed(f"export failed: {why}"))

        self.push_screen(ExportDialog(n, explorer.default_export("csv")), done)

    @on(Exported)
    def _exported(self, message: Exported) -> None:
        self.notify(f"exported {message.n_marks} mark(s) to {message.path}", timeout=6)


def run_explorer(source: SummaryFile | Path | str, device: str | None = None) -> None:
    """Open the explorer on a summary (blocks until the user quits); `device`: where the probe runs."""
    keymap, warning = keys.load_keymap()
    NeuronApp(source, keymap=keymap, keymap_warning=warning, device=device).run()
