"""The dense part of a layer's per-batch update as one function, compiled once per run by torch.compile.

Everything that reads a whole activation tensor h [B, T, F] (the firing test, the counts per position,
the signed sums and their positive parts, the sum of h over every token, each sequence's strongest
firing value) is `dense_stats`: eager, that is a pass over h per statistic; compiled (Inductor:
C++/OpenMP on the CPU, Triton on CUDA) the passes fuse into a few loops (docs/design.md, "The fused
update").

`FusedUpdate` is the one compiled function a pass's accumulators share:
- tau is a 0-d tensor argument, not a constant, so every layer runs the same graph (no recompile per
  layer); the rule and whether the sequences' argmax is wanted are constants, fixed for a run;
- it is compiled for the first batch shape it sees, the run's batch; any other shape (the last, short
  batch) takes the accumulator's eager update, the reference, so a run compiles once (a recompile
  costs seconds, the eager update milliseconds on one batch);
- compiling takes seconds once per run (`compile_seconds`); Inductor keeps the code it generates in its
  on-disk cache (torch._inductor.config.fx_graph_cache, on by default, under TORCHINDUCTOR_CACHE_DIR),
  so later runs of the same shape skip the C++/Triton compilation;
- when compiling fails (no C++ compiler, no Triton) it says so in one line and the eager update runs.

Compiling is the default off the CPU only (`compile_wanted`: measured slower on this project's CPU);
NEURON_TUI_COMPILE=1 compiles on the CPU too, NEURON_TUI_COMPILE=0 (or `collect --no-compile`) nowhere.
"""

from __future__ import annotations

import os
import sys
import time

import torch

ENV = "NEURON_TUI_COMPILE"


def compile_wanted(device: torch.device) -> bool:
    """Whether a pass on `device` compiles its update: NEURON_TUI_COMPILE=1 or 0 when set, else off the
    CPU only. On the CPU here (2 cores of an AMD EPYC with AVX-512) the compiled update was measured
    slower than the eager one (bench/collect.py, OPT-125m shape: 0.60 of the bare forward against
    0.72), the mask it writes costing most (Inductor's AVX-512 bool stores: 74 ms where eager takes 8
    ms for [8, 256, 3072]); docs/design.md, "The fused update"."""
    setting = os.environ.get(ENV, "").strip().lower()
    if setting:
        return setting not in ("0", "false", "no", "off")
    return device.type != "cpu"


def dense_stats(h: torch.Tensor, tau: torch.Tensor, abs_rule: bool, want_arg: bool):
    """One batch's dense statistics (h [B, T, F]; tau: a 0-d float32 tensor holding tau rounded to h's
    dtype, so comparing in float32 is comparing in h's dtype):

    fired [B, T, F] bool (|h| or h > tau), per_pos [T, F] int32 (firings per position), count_pos [F]
    int64 (firings with h > tau), sum_pos [F] float64 (their sum of h), sum_fired [F] float64 (the
    signed sum of h over firings), h_sum [F] float64 (over every token), seq_max [B, F] float32 (each
    sequence's largest firing value) and, when `want_arg`, seq_arg [B, F] (its first position).
    Sums run over sequences in float32 and over positions in float64, as the accumulators keep them."""
    hf = h.float()
    value = hf.abs() if abs_rule else hf
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


class FusedUpdate:
    """`dense_stats`, compiled for one run's batch shape (see the module docstring); `compile=False` (or
    a failed compilation) leaves every batch to the accumulator's eager update."""

    def __init__(self, compile: bool | None = None):
        """`compile`: True or False, or None to decide on the first batch's device (`compile_wanted`)."""
        self.compile_seconds: float | None = None  # the first compiled call's time (compile + run)
        self.failure: str | None = None  # why compiling failed, once it did
        self._shape: tuple | None = None  # the shape (and dtype, device, constants) compiled for
        self._wanted = compile
        self._compiled = None if compile is False else torch.compile(dense_stats, dynamic=False)

    def __call__(self, h: torch.Tensor, tau: torch.Tensor, abs_rule: bool, want_arg: bool):
        """`dense_stats` compiled, or None where the accumulator's eager update is to run instead: not
        compiling, or a shape other than the one compiled for."""
        key = (tuple(h.shape), h.dtype, h.device, abs_rule, want_arg)
        if self._wanted is None:  # decided once, on the first batch's device
            self._wanted = compile_wanted(h.device)
            self._compiled = self._compiled if self._wanted else None
        if self._compiled is None or (self._shape is not None and key != self._shape):
            return None
        if self._shape is not None:
            return self._compiled(h, tau, abs_rule, want_arg)
        start = time.perf_counter()  # the first call compiles
        try:
            out = self._compiled(h, tau, abs_rule, want_arg)
        except Exception as exc:  # noqa: BLE001 - any backend failure (no compiler, no Triton) falls back
            self._compiled = None
            lines = str(exc).strip().splitlines()
            self.failure = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:200]
            print(f"neuron-tui: torch.compile of the accumulator update failed ({self.failure}); counting with the "
                  "eager update", file=sys.stderr)
            return None
        self._shape, self.compile_seconds = key, time.perf_counter() - start
        return out
