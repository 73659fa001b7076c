"""Fixtures shared by the test modules: the tiny OPT saved once per session as a model folder (the
command-line tests collect from it), and the asyncio backend of the explorer's pilot tests.

The suite counts as a user's CPU run does: with the C kernels (core.model.native), built once into a
folder of the session's own ($NEURON_TUI_KERNELS, inherited by the CLI subprocesses too), so a fresh
machine builds them as a user's does; they are held to the eager paths, the reference, in
tests/test_fused.py (the update, which also compiles with Inductor on purpose, as CUDA runs it),
tests/test_projections.py and tests/test_vocab_stats.py (the projection step's reductions)."""

from __future__ import annotations

import os

import pytest
from tiny import save_tiny, tiny_opt

os.environ.pop("NEURON_TUI_COMPILE", None)


@pytest.fixture(scope="session", autouse=True)
def kernel_folder(tmp_path_factory):
    """The session's own folder for the CPU kernel's library (built there on first use)."""
    os.environ["NEURON_TUI_KERNELS"] = str(tmp_path_factory.mktemp("kernels"))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A loadable tiny OPT folder (config, random weights, a local tokenizer); tests only read it."""
    return save_tiny(tiny_opt(), tmp_path_factory.mktemp("models") / "tiny-opt")


@pytest.fixture
def anyio_backend():
    """anyio's pytest plugin runs the `anyio`-marked async tests on asyncio, Textual's loop."""
    return "asyncio"
