"""The suite counts with the eager update (NEURON_TUI_COMPILE=0, inherited by the CLI subprocesses too):
compiling costs seconds per new shape, and the tests' runs each have their own tiny shapes. The
compiled update is held to the eager one in tests/test_fused.py, which compiles on purpose."""

import os

os.environ["NEURON_TUI_COMPILE"] = "0"
