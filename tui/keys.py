"""The explorer's keys: every binding registered once, in `KEYED`, from which the `?` screen's sections
and the keymap's known binding ids both derive.

Every binding has an id (`layer.filter.dead`, `app.help`, ...), so keys can be remapped with a JSON
keymap {binding id: "key[,key]"}: the file named by $NEURON_TUI_KEYMAP, else
~/.config/neuron-tui/keymap.json when it exists (the same idea as the `posting` app's keymap). A keymap
that cannot be read, or that names a binding id no screen has, is a one-line warning.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from neuron_tui.core.read.table import SEARCH_RULE

from .present.help import LEGEND, Rows
from .screens import (
    ErrorScreen,
    ExportDialog,
    FilterPicker,
    HelpScreen,
    LayerScreen,
    MarkDialog,
    NeuronScreen,
    OverviewScreen,
    ProbeScreen,
    TooSmallScreen,
)
from .widgets import NeuronTable

KEYMAP_ENV = "NEURON_TUI_KEYMAP"

APP_BINDINGS = [
    Binding("question_mark", "help", "Keys", key_display="?", tooltip="show every key", id="app.help"),
    Binding("g", "goto", "Go to", show=False, tooltip="go to L12 N345 / 12/345 / L12 (command palette)",
            id="app.goto"),
    Binding("e", "export", "Export", show=False, tooltip="export the marks with their data to CSV or JSON",
            id="app.export"),
    Binding("q", "quit", "Quit", show=False, tooltip="quit", id="app.quit"),
]

# the DataTable's own moves, listed under the overview (they have no id: the keymap cannot rebind them)
TABLE_MOVES = tuple(b for b in DataTable.BINDINGS if isinstance(b, Binding)
                    and b.action in ("cursor_up", "cursor_down", "page_up", "page_down", "scroll_home", "scroll_end"))


@dataclass(frozen=True)
class Keyed:
    """A help section: the bindings of the screens and widgets it covers (in this order), with rows of
    keys that are no binding before and after them. `section` None: bindings the help does not list
    (they are on their own screen), whose ids a keymap may still name."""

    section: str | None
    bindings: Sequence[BindingType] = ()
    before: Rows = ()
    after: Rows = ()


KEYED = (
    Keyed("Everywhere", APP_BINDINGS, after=[("ctrl+p", "command palette (go to L12 N345, 12/345, L12)"),
                                             ("ctrl+q", "quit")]),
    Keyed("Overview", [*OverviewScreen.BINDINGS, *TABLE_MOVES]),
    Keyed("Layer table", [*LayerScreen.BINDINGS, *NeuronTable.BINDINGS],
          after=[("click header", "sort by that column")]),
    Keyed("Search box", before=[("type", "the neurons triggered by a token: " + SEARCH_RULE),
                                ("enter", "back to the table, keep the search"), ("esc", "clear the search")]),
    Keyed("Filter picker", FilterPicker.BINDINGS, before=[("↑ ↓, enter", "filter the table to that kind")]),
    Keyed("Neuron detail", NeuronScreen.BINDINGS, after=[("↑ ↓ pgup pgdn", "scroll")]),
    Keyed("Probe", ProbeScreen.BINDINGS, before=[("type, enter", "run the text through the model")]),
    Keyed("Mark dialog", MarkDialog.BINDINGS, before=[("enter", "save the note")]),
    Keyed("Export dialog", ExportDialog.BINDINGS, before=[("enter", "export to the file named (.csv or .json)")]),
    Keyed(None, [*HelpScreen.BINDINGS, *ErrorScreen.BINDINGS, *TooSmallScreen.BINDINGS]),
)


def known_binding_ids() -> set[str]:
    """Every binding id of the app and its screens and widgets (what a keymap may name)."""
    return {b.id for keyed in KEYED for b in keyed.bindings if isinstance(b, Binding) and b.id}


def help_sections(keymap: dict[str, str], key_display: Callable[[Binding], str]) -> list[tuple[str, Rows]]:
    """(section, [(keys as shown, what they do)]) for every screen, from the bindings themselves with
    the user's `keymap` applied by binding id (`key_display`: how the app shows a key), then the legend."""
    def rows(bindings: Sequence[BindingType]) -> list[tuple[str, str]]:
        out = []
        for b in bindings:
            if not isinstance(b, Binding):
                continue
            key = keymap.get(b.id or "", b.key)
            shown = ", ".join(b.key_display if (b.key_display and key == b.key) else
                              key_display(Binding(k.strip(), b.action)) for k in key.split(","))
            out.append((shown, b.tooltip or b.description))
        return out

    sections = [(k.section, [*k.before, *rows(k.bindings), *k.after]) for k in KEYED if k.section is not None]
    return [*sections, ("What the screens show", LEGEND)]


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
