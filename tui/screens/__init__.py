"""The explorer's screens, one module each. A screen places what `tui.present` makes of the view-model
(`tui.viewmodel`), reads in thread workers (`tui.workers`) and asks the app for everything else with a
message (`tui.messages`): no screen imports the app or another screen."""

from .dialogs import ExportDialog, MarkDialog
from .errors import ErrorScreen, TooSmallScreen
from .help import HelpScreen
from .kinds import FilterPicker
from .layer import LayerScreen
from .neuron import NeuronScreen
from .overview import OverviewScreen
from .probe import ProbeScreen

__all__ = ["ErrorScreen", "ExportDialog", "FilterPicker", "HelpScreen", "LayerScreen", "MarkDialog", "NeuronScreen",
           "OverviewScreen", "ProbeScreen", "TooSmallScreen"]
