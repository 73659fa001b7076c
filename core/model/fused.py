"""What compiles a layer's per-batch update, once per run: the CPU's one-pass C kernel (core.model.native)
and, on other devices, the dense statistics as a function compiled by torch.compile.

Everything that reads a whole activation tensor h [B, T, F] (the firing test and mask, the counts per
position, the signed sums and their positive parts, the sum of h over every token, each sequence's
strongest firing value) is `dense_stats`: eager, that is a pass over h per statistic; compiled
(Inductor: Triton on CUDA) the passes fuse into a few loops. On the CPU the C kernel does all of that
and the per-firing work (histogram bins, the event sample, sign cases) in one pass, where Inductor's C++
was slower (docs/design.md, "The CPU's one-pass update").

`FusedUpdate` holds what a pass's accumulators share:
- the kernel's library on the CPU (`native`), built once per machine, for any batch shape;
- `dense_stats` compiled elsewhere: tau is a tensor argument, not a constant, so every layer runs the
  same graph (no recompile per layer); the rule and the device's choice (the argmax) are constants,
  fixed for a run; it is compiled for the first batch shape it sees, the run's batch, and any other
  shape (the last, short batch) takes the accumulator's eager update, the reference, so a run compiles
  once (a recompile costs seconds, the eager update milliseconds on one batch);
- compiling takes seconds once per run (`compile_seconds`); Inductor keeps the code it generates in its
  on-disk cache (torch._inductor.config.fx_graph_cache, on by default, under TORCHINDUCTOR_CACHE_DIR),
  so later runs of the same shape skip the Triton compilation;
- when compiling fails (no C compiler, no Triton) it says so in one line and the eager update runs.

Compiling is the default everywhere; NEURON_TUI_COMPILE=0 (or `collect --no-compile`) keeps the eager
update (and the projection step's eager reductions, core.model.projections), NEURON_TUI_COMPILE=1 forces
compiling.
"""

from __future__ import annotations

import os
import sys
import time

import torch

from . import native
from .batches import firing_value

ENV = "NEURON_TUI_COMPILE"


def compile_wanted() -> bool:
    """Whether a pass compiles its update (and the projection step uses the C kernels): NEURON_TUI_COMPILE=1
    or 0 when set, else yes."""
    setting = os.environ.get(ENV, "").strip().lower()
    return setting not in ("0", "false", "no", "off") if setting else True


def dense_stats(h: torch.Tensor, tau: torch.Tensor, abs_rule: bool, want_arg: bool):
    """One batch's dense statistics (h [B, T, F]; tau: a 0-d float32 tensor holding tau rounded to h's
    dtype, so comparing in float32 is comparing in h's dtype):

    fired [B, T, F] bool (|h| or h > tau), per_pos [T, F] int32 (firings per position), count_pos [F]
    int64 (firings with h > tau), sum_pos [F] float64 (their sum of h), sum_fired [F] float64 (the signed
    sum of h over firings), h_sum [F] float64 (over every token), seq_max [B, F] float32 (each sequence's
    largest firing value) and, when `want_arg`, seq_arg [B, F] (its first position). Sums run over
    sequences in float32 and over positions in float64, as the accumulators keep them."""
    hf = h.float()
    value = firing_value(hf, "abs" if abs_rule else "relu")
    fired = value > tau
    positive = hf > tau
    # every reduction over tokens runs over sequences first (contiguous [T, F] planes, one loop with the
    # firing test), then over positions: a reduction over (B, T) at once walks h column by column
    per_pos = fired.sum(0, dtype=torch.int32)
    count_pos = positive.sum(0, dtype=torch.int32).sum(0)
    sum_pos = torch.where(positive, hf, 0.0).sum(0).double().sum(0)
    sum_fired = torch.where(fired, hf, 0.0).sum(0).double().sum(0) if abs_rule else sum_pos
    h_sum = hf.sum(0).double().sum(0)
    seq_max = value.amax(1)
    seq_arg = value.argmax(1) if want_arg else None
    return fired, per_pos, count_pos, sum_pos, sum_fired, h_sum, seq_max, seq_arg


class _Compiled:
    """One function compiled for one shape of its first argument (and the constants in `key`), with the
    fallback to None (eager) for any other shape and after a failed compilation."""

    def __init__(self, fn, owner: "FusedUpdate"):
        self.owner = owner
        self.shape: tuple | None = None
        self.fn = torch.compile(fn, dynamic=False)

    def __call__(self, key: tuple, *args):
        if self.fn is None or (self.shape is not None and key != self.shape):
            return None
        if self.shape is not None:
            return self.fn(*args)
        start = time.perf_counter()  # the first call compiles
        try:
            out = self.fn(*args)
        except Exception as exc:  # noqa: BLE001 - any backend failure (no compiler, no Triton) falls back
            self.owner.failed(exc)
            return None
        self.shape = key
        self.owner.compile_seconds = (self.owner.compile_seconds or 0.0) + time.perf_counter() - start
        return out


class FusedUpdate:
    """The CPU kernel and `dense_stats` compiled, for one run (see the module docstring); `compile=False`
    (or a failed compilation) leaves every batch to the accumulator's eager update. `native=False` keeps
    the CPU off its kernel (the tests run `dense_stats` compiled on the CPU, as CUDA runs it)."""

    def __init__(self, compile: bool | None = None, native: bool = True):
        """`compile`: True or False, or None to decide on the first batch (`compile_wanted`)."""
        self.compile_seconds: float | None = None  # the first compiled call's time (compile + run)
        self.failure: str | None = None  # why compiling failed, once it did
        self._wanted = compile
        self._native = native
        self._library = None  # the CPU kernel's, once built
        self._stats = None if compile is False else _Compiled(dense_stats, self)

    def failed(self, exc: Exception) -> None:
        """A compilation failed: say so once, and count eagerly from now on."""
        self._stats = None
        lines = str(exc).strip().splitlines()
        self.failure = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:200]
        print(f"neuron-tui: torch.compile of the accumulator update failed ({self.failure}); counting with the "
              "eager update", file=sys.stderr)

    def _ready(self) -> bool:
        if self._wanted is None:  # decided once, on the first batch
            self._wanted = compile_wanted()
            if not self._wanted:
                self._stats = None
        return bool(self._wanted)

    def native(self, h: torch.Tensor, up: torch.Tensor | None):
        """The CPU kernel's library where it takes this batch (CPU, float32 or bf16), else None. Built on
        the first batch (`compile_seconds`); where it cannot be, the CPU counts eagerly (Inductor would
        need the same compiler)."""
        if not (self._native and native.runs(h, up) and self._ready()):
            return None
        if self._library is None and self.failure is None:
            start = time.perf_counter()
            self._library = native.library()
            self.failure = native.failure()
            self.compile_seconds = time.perf_counter() - start
        return self._library

    def __call__(self, h: torch.Tensor, tau: torch.Tensor, abs_rule: bool, want_arg: bool):
        """`dense_stats` compiled, or None where the accumulator's eager update is to run instead: not
        compiling, a shape other than the one compiled for, or the CPU (its kernel's, or eager)."""
        if not self._ready() or self._stats is None or (self._native and h.device.type == "cpu"):
            return None
        return self._stats((tuple(h.shape), h.dtype, h.device, abs_rule, want_arg), h, tau, abs_rule, want_arg)
