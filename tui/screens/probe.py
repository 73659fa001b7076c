"""The probe screen: new text through the summary's model (tui/present/probe.py draws the answer)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Footer, Input, Static

from neuron_tui.core.read.records import ProbeResult

from ..messages import OpenNeuron, ProbeFailed
from ..present import probe as answer
from ..present.formats import title_bar
from ..workers import read_in_thread
from .base import ExplorerScreen

if TYPE_CHECKING:
    from neuron_tui.core.model.probe import Probe

ABLATIONS = (None, "zero", "mean")


class ProbeScreen(ExplorerScreen):
    """New text through the summary's model: how the neuron fires on each token (coloured by its
    activation, firings underlined, checked against its recorded triggers), which neurons of the
    layer fire on the token under the cursor, and what ablating the neuron (z: zero, then mean) does
    to the next-token prediction there (KL, loss change, probability moves) and over the whole text
    (the means, in the status line). The model loads once, in a worker, on first use (the explorer
    keeps it)."""

    AUTO_FOCUS = ""  # none: back from a neuron opened here, the arrows still move over the tokens
    # the status line is one line: what does not fit ends in "…" rather than wrapping out of sight
    DEFAULT_CSS = """
    ProbeScreen #probe-status { text-wrap: nowrap; text-overflow: ellipsis; }
    """

    BINDINGS = [
        Binding("left", "token(-1)", "Token", key_display="←", tooltip="previous token", id="probe.left"),
        Binding("right", "token(1)", "Token", key_display="→", show=False, tooltip="next token", id="probe.right"),
        Binding("up", "pick(-1)", "Pick", key_display="↑", show=False,
                tooltip="previous of the neurons firing on the token", id="probe.up"),
        Binding("down", "pick(1)", "Pick", key_display="↓", show=False,
                tooltip="next of the neurons firing on the token", id="probe.down"),
        Binding("enter", "open", "Open", tooltip="open the neuron picked among those firing on the token",
                id="probe.open"),
        Binding("z", "ablate", "Ablate", tooltip="ablation of the neuron: off, set to 0, set to its mean h over the "
                "corpus", id="probe.ablate"),
        Binding("i", "edit", "Text", tooltip="edit the text (enter runs it)", id="probe.edit"),
        Binding("escape", "back", "Back", tooltip="back", id="probe.back"),
    ]

    class ModelReady(Message):
        def __init__(self, probe: Probe) -> None:
            super().__init__()
            self.probe = probe

    class Answered(Message):
        def __init__(self, result: ProbeResult) -> None:
            super().__init__()
            self.result = result

    class RunFailed(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, layer: int, neuron: int | None) -> None:
        super().__init__()
        self.layer_index, self.neuron = layer, neuron
        self.result: ProbeResult | None = None
        self.position = 0  # the token under the cursor
        self.pick = 0  # the neuron picked among those firing on it
        self.ablate: str | None = None
        self._text = ""

    def compose(self) -> ComposeResult:
        yield Static("", id="title", classes="title")
        yield Input(placeholder="type or paste text, enter runs it", id="probe-input", select_on_focus=False)
        yield Static("", id="probe-status")
        with VerticalScroll(id="probe-body"):
            yield Static("", id="probe-text")
            yield Static("", id="probe-token")
            with Horizontal(classes="pair"):
                yield Static("", id="probe-neurons", classes="half")
                yield Static("", id="probe-ablation", classes="half")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        what = f"L{self.layer_index}" + (f" N{self.neuron}" if self.neuron is not None else "")
        self.query_one("#title", Static).update(title_bar(self.explorer.info, f"probe · {what}"))
        self.query_one("#probe-input", Input).focus()
        if self.explorer.probe.model is None:
            self._status(f"loading {self.explorer.info.model} … (the explorer stays usable meanwhile)")
            read_in_thread(self, self.explorer.load_probe, group="probe-model", answered=self.ModelReady,
                           failed=ProbeFailed)
        else:
            self._status("")

    def _status(self, text: str) -> None:
        self.query_one("#probe-status", Static).update(Text(text, style="dim"))

    @property
    def _ready(self) -> bool:
        return self.explorer.probe.model is not None

    @on(ModelReady)
    def _model_ready(self, message: ModelReady) -> None:
        self.explorer.probe.model = message.probe
        self._status(f"{self.explorer.info.model} on {message.probe.device}" + (" · running …" if self._text else ""))
        if self._text:
            self._run()

    @on(Input.Submitted, "#probe-input")
    def _submitted(self, event: Input.Submitted) -> None:
        self._text = event.value
        if not self._text.strip():
            return
        self.set_focus(None)  # the arrows now move over the tokens
        if self._ready:
            self._status("running …")
            self._run()

    def _run(self) -> None:
        text, layer, neuron, ablate = self._text, self.layer_index, self.neuron, self.ablate
        read_in_thread(self, lambda: self.explorer.run_probe(text, layer, neuron, ablate), group="probe-run",
                       answered=self.Answered, failed=lambda why: self.RunFailed(f"cannot probe: {why}"))

    @on(RunFailed)
    def _run_failed(self, message: RunFailed) -> None:
        message.stop()
        self._status(message.text)

    @on(Answered)
    def _answered(self, message: Answered) -> None:
        self.result = message.result
        self.position = min(self.position, len(self.result["tokens"]) - 1)
        self.pick = 0
        # the ablation's effect over the whole text first: at 80 columns the model's name is what gets cut
        said = [answer.ablation_summary(self.result)] if "ablation" in self.result else []
        said += [f"{len(self.result['tokens'])} tokens", f"{self.explorer.info.model} on {self.explorer.probe.model.device}"]
        self._status(" · ".join(said))
        self._draw()

    def _draw(self) -> None:
        r, k = self.result, self.position
        if r is None:
            return
        self.query_one("#probe-text", Static).update(answer.shaded_text(r, k))
        self.query_one("#probe-token", Static).update(answer.token_line(r, k))
        self.query_one("#probe-neurons", Static).update(answer.firing_table(r, k, self.pick))
        self.query_one("#probe-ablation", Static).update(answer.ablation_table(r, k))

    # ---- actions ----
    def action_token(self, delta: int) -> None:
        if self.result is not None and 0 <= self.position + delta < len(self.result["tokens"]):
            self.position += delta
            self.pick = 0
            self._draw()

    def action_pick(self, delta: int) -> None:
        if self.result is not None and 0 <= self.pick + delta < len(self.result["top"][self.position]):
            self.pick += delta
            self._draw()

    def action_open(self) -> None:
        if self.result is None or not self.result["top"][self.position]:
            return
        self.post_message(OpenNeuron(self.layer_index, self.result["top"][self.position][self.pick]["neuron"]))

    def action_ablate(self) -> None:
        if self.neuron is None:
            self.notify("open the probe from a neuron to ablate it", severity="warning")
            return
        self.ablate = ABLATIONS[(ABLATIONS.index(self.ablate) + 1) % len(ABLATIONS)]
        if self._text.strip() and self._ready:
            self._status(f"running with ablation {self.ablate} …" if self.ablate else "running …")
            self._run()

    def action_edit(self) -> None:
        self.query_one("#probe-input", Input).focus()

    def action_back(self) -> None:
        if self.query_one("#probe-input", Input).has_focus and self.result is not None:
            self.set_focus(None)
            return
        self.app.pop_screen()
