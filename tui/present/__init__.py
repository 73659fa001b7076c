"""How the read side's answers look: the Rich renderables and number formats of both the command line
(`report`, `neurons`, `neuron`, `probe`) and the explorer. No Textual here: widgets and screens only
place what these functions return, so a neuron, a probe answer or a layer reads the same everywhere.

- `formats`: every number format, the screens' title line;
- `plot`: the one plot of values in block characters (by position, over depth), bars;
- `layers`: per-layer and per-neuron tables (`report`, `report A B`, `neurons`, the layer screen's cells,
  filter bar and heading) and the overview (its facts, columns, one-line layer summary and curves);
- `neuron`: a neuron record's sections (the `neuron` command's panel and the neuron screen);
- `probe`: the probe's answer (the `probe` command's table and the probe screen);
- `help`: the `?` screen's table and legend.

What comes from a summary (a token, a model name, a note) goes into a renderable as a
`rich.text.Text`, never as markup, so a bracket in it ("[partial]") prints as itself.
"""

from __future__ import annotations

from rich.console import Console


class Output(Console):
    """The command line's console: a closed pipe (`| head`) is left to the command line's one handler
    (a quiet exit, status 141), not rich's own exit with status 1."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError
