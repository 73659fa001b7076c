"""Fixtures shared by the test modules: the tiny OPT saved once per session as a model folder (the
command-line tests collect from it), and the asyncio backend of the explorer's pilot tests.

The suite counts with the eager update (NEURON_TUI_COMPILE=0, inherited by the CLI subprocesses too):
compiling costs seconds per new shape, and the tests' runs each have their own tiny shapes. The
compiled update is held to the eager one in tests/test_fused.py, which compiles on purpose."""

from __future__ import annotations

import os

import pytest
from tiny import save_tiny, tiny_opt

os.environ["NEURON_TUI_COMPILE"] = "0"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A loadable tiny OPT folder (config, random weights, a local tokenizer); tests only read it."""
    return save_tiny(tiny_opt(), tmp_path_factory.mktemp("models") / "tiny-opt")


@pytest.fixture
def anyio_backend():
    """anyio's pytest plugin runs the `anyio`-marked async tests on asyncio, Textual's loop."""
    return "asyncio"
