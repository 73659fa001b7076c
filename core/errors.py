"""The errors a user can cause, each printed by the command line as one line (no traceback).

`exit_code` follows the usual convention: 2 for a command line that cannot mean anything (bad flag
value, unknown model name), 1 for a failure while doing what was asked (no network, full disk, ...).
The store raises `neuron_tui.cache.SummaryError`, which the command line treats the same way.
"""


class NeuronTuiError(Exception):
    """A failure the user can act on; its message is one self-contained line."""

    exit_code = 1


class UsageError(NeuronTuiError):
    """The request itself is wrong (unknown model, bad value): nothing was attempted."""

    exit_code = 2
