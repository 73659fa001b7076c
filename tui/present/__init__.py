"""How the read side's answers look: the Rich renderables and number formats of both the command line
(`report`, `neurons`, `neuron`, `probe`) and the explorer. No Textual here: widgets and screens only
place what these functions return, so a neuron, a probe answer or a layer reads the same everywhere.

- `formats`: every number format (one function per kind of number), the screens' title line;
- `columns`: the command line's tables (columns as wide as their content, one line per row);
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

import sys

from rich.console import Console, RenderableType
from rich.segment import Segment, Segments

CHUNK = 1 << 16  # characters per write to stdout


def write_stdout(text: str) -> None:
    """`text` on stdout in flushed pieces, so a reader that went away (`| head`) is a BrokenPipeError
    here: one large write to a closed pipe can pass silently (the buffered writer takes the partial
    write the closing reader leaves as done)."""
    for start in range(0, len(text), CHUNK):
        sys.stdout.write(text[start : start + CHUNK])
        sys.stdout.flush()


class _Stdout:
    """The file the command line's console writes to: stdout, through `write_stdout`."""

    def write(self, text: str) -> int:
        write_stdout(text)
        return len(text)

    def flush(self) -> None:
        sys.stdout.flush()

    def isatty(self) -> bool:
        return sys.stdout.isatty()

    def fileno(self) -> int:
        return sys.stdout.fileno()

    @property
    def encoding(self) -> str:
        return getattr(sys.stdout, "encoding", None) or "utf-8"


class Output(Console):
    """The command line's console: `show` prints a renderable with no trailing spaces and no blank
    first line, so files and pipes get clean lines; a closed pipe (`| head`) is left to the command
    line's one handler (a quiet exit, status 141), not rich's own exit with status 1."""

    def __init__(self, stderr: bool = False, **kwargs) -> None:
        super().__init__(file=sys.stderr if stderr else _Stdout(), **kwargs)  # type: ignore[arg-type]

    @property
    def plain(self) -> bool:
        """Whether the output is a file or a pipe, where styles do not show (marks must be characters)."""
        return not self.is_terminal

    def show(self, renderable: RenderableType) -> None:
        """Print `renderable` no narrower than its measured minimum: a table of numbers wider than the
        screen (or than 80 columns in a pipe) comes out whole, its lines longer, never cut."""
        options = self.options
        measure = getattr(renderable, "__rich_measure__", None)  # Measurement.get clamps to the screen
        needed = measure(self, options).minimum if measure is not None else 0
        if needed > options.max_width:
            options = options.update_width(needed)
        lines = self.render_lines(renderable, options, pad=False)
        while lines and not "".join(s.text for s in lines[0]).strip():
            lines.pop(0)
        segments: list[Segment] = []
        for line in lines:
            segments.extend(_rstrip(line))
            segments.append(Segment.line())
        self.print(Segments(segments), end="", crop=False, soft_wrap=True)

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def _rstrip(line: list[Segment]) -> list[Segment]:
    """One rendered line without its trailing spaces (styles kept)."""
    line = list(line)
    while line and not line[-1].control and not line[-1].text.rstrip():
        line.pop()
    if line and not line[-1].control:
        last = line[-1]
        line[-1] = Segment(last.text.rstrip(), last.style, last.control)
    return line
