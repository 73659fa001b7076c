"""The hooks of a pass: one forward pre-hook per FFN output projection feeds that layer's accumulator.

A gated FFN (h = act(gate) * up) has one more hook, a forward hook on its up projection, which hands
that batch's up to the layer's next pre-hook (the sign cases). Each accumulator is created on the
device of its layer's activations at the layer's first batch (with --device-map, offloaded weights say
nothing about where the activations will be), starting from the checkpointed state when resuming. The
per-batch index tensors (global positions, sampling levels) are made once per batch and device and
serve every layer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial

import numpy as np
import torch

from .accumulators import LayerAccumulator, LayerState
from .adapters import n_neurons
from .batches import BatchIndex, Scratch
from .calibration import Calibration
from .fused import FusedUpdate


class Recorder:
    """The accumulators of every layer of one pass, and the hooks that feed them."""

    def __init__(self, modules: list[torch.nn.Module], seq_len: int, events_cap: int, top_k: int, rule: str,
                 calibration: Calibration, ups: list[torch.nn.Module] | None = None,
                 resumed: Callable[[int], LayerState] | None = None, compile: bool | None = None):
        """`ups`: the up projections of a gated FFN (adapters.ffn_up_projections), None for another;
        `resumed(layer)`: the checkpointed state of a layer, read when the layer is first reached;
        `compile`: whether the layers' dense update is compiled (core.model.fused; None: unless
        NEURON_TUI_COMPILE=0)."""
        self.modules, self.ups, self.calibration = modules, ups, calibration
        self.seq_len, self.events_cap, self.top_k, self.rule = seq_len, events_cap, top_k, rule
        self.n_neurons = n_neurons(modules[0])
        self.acc: list[LayerAccumulator | None] = [None] * len(modules)
        self._up: dict[int, torch.Tensor] = {}  # each gated layer's up of the batch running through it
        self._resumed = resumed
        self._batches: list[np.ndarray] = []  # global positions [B, T] of each batch of the chunk
        self._indexes: list[dict[torch.device, BatchIndex]] = []  # their index tensors, per device
        self._current = 0
        self._scratch: dict[torch.device, Scratch] = {}
        self.fused = FusedUpdate(compile)  # one compiled update for every layer
        self._pending: dict[int, _Snapshot] = {}  # the last snapshot's layers the pass has not reached since
        self.snapshot_wait = 0.0  # seconds the pass spent on checkpoint copies (its own, or the writer's)

    @property
    def n_layers(self) -> int:
        return len(self.modules)

    def accumulator(self, layer: int, device: torch.device) -> LayerAccumulator:
        if self.acc[layer] is None:
            c = self.calibration
            self.acc[layer] = LayerAccumulator(self.n_neurons, self.seq_len, self.events_cap, self.top_k, device,
                                               self.rule, c.tau[layer], c.hist_edges[layer], self.ups is not None,
                                               fused=self.fused)
            if self._resumed is not None:
                self.acc[layer].load(self._resumed(layer))
        return self.acc[layer]

    def set_batches(self, positions: list[np.ndarray]) -> None:
        """Global positions [B, T] of each batch of the chunk about to run; index tensors are made per
        batch and device when first needed and serve every layer (layer by layer, each batch of a
        chunk reaches every layer in turn)."""
        self._batches, self._indexes, self._current = positions, [{} for _ in positions], 0

    def select(self, batch: int) -> None:
        """Batch `batch` of the chunk is the one reaching the layers next."""
        self._current = batch

    def _batch_index(self, device: torch.device) -> BatchIndex:
        index = self._indexes[self._current]
        if device not in index:
            scratch = self._scratch.setdefault(device, Scratch())
            index[device] = BatchIndex(self._batches[self._current], device, scratch)
        return index[device]

    def state(self, layer: int) -> LayerState:
        """A host copy of one layer's accumulators (a layer never reached: its resumed or empty state);
        the final write asks for one layer at a time, so host memory holds one layer's state."""
        acc = self.acc[layer]
        return self._unreached(layer) if acc is None else acc.state()

    def _unreached(self, layer: int) -> LayerState:
        """The state of a layer no batch has reached: its checkpointed one when resuming, else empty."""
        if self._resumed is not None:
            return self._resumed(layer)
        return LayerState.empty(self.n_neurons, self.seq_len, self.top_k, self.ups is not None)

    def snapshot(self, into: list | None = None) -> list[Callable[[], LayerState]]:
        """Every layer's state as it is now, each a LayerState when called (by the checkpoint's writer,
        off the pass). Nothing is copied here: each layer's host copy (into the arrays of `into`, the
        previous snapshot, where they fit) is taken by whoever comes first, the writer (`take_all`, in
        layer order, while the pass goes on) or the layer's next update (`_hook`), which must not change
        the state before it is copied; so the pass waits only for a layer it reaches before the writer
        has copied it. A layer never reached: its resumed or empty state."""
        out: list = []
        self._pending = {}
        for layer, acc in enumerate(self.acc):
            if acc is None:  # what it holds cannot change before the write: it is read then
                out.append(partial(self._unreached, layer))
            else:
                out.append(_Snapshot(acc, getattr(into[layer], "raw", None) if into else None))
                self._pending[layer] = out[-1]
        return out

    def keep_resumed(self) -> None:
        """Read the checkpointed state of every layer not reached yet into memory, before the checkpoint
        it comes from is closed (a resumed run that had nothing left to count)."""
        if self._resumed is not None:
            kept = {layer: self._resumed(layer) for layer, acc in enumerate(self.acc) if acc is None}
            self._resumed = kept.__getitem__ if kept else None

    def _hook(self, layer: int):
        def hook(module, args):
            h = args[0]
            B, T = self._batches[self._current].shape
            up = self._up.pop(layer).reshape(B, T, -1) if self.ups is not None else None
            pending = self._pending.pop(layer, None)
            if pending is not None:  # the last checkpoint's copy of this layer comes before its update
                self.snapshot_wait += pending.take()
            self.accumulator(layer, h.device).update(h.reshape(B, T, -1), self._batch_index(h.device), up)

        return hook

    def _up_hook(self, layer: int):
        def hook(module, args, output):
            self._up[layer] = output

        return hook

    @contextmanager
    def attached(self):
        handles = [m.register_forward_pre_hook(self._hook(i)) for i, m in enumerate(self.modules)]
        handles += [m.register_forward_hook(self._up_hook(i)) for i, m in enumerate(self.ups or [])]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()


class _Snapshot:
    """One layer's state at a checkpoint: host copies (`raw`, reused by the next snapshot) taken once, by
    whichever thread calls `take` first (the other waits for it), made a LayerState when called."""

    def __init__(self, acc: LayerAccumulator, into: dict | None):
        self._acc, self._into = acc, into
        self._lock = threading.Lock()
        self.raw: dict | None = None

    def take(self) -> float:
        """Copy the layer's state to the host unless done already; the seconds it took here."""
        start = time.perf_counter()
        with self._lock:
            if self.raw is None:
                self.raw = self._acc.snapshot(self._into)
                self._acc = self._into = None
        return time.perf_counter() - start

    def __call__(self) -> LayerState:
        self.take()
        return LayerAccumulator.state_of(self.raw)


def take_all(snapshot: list) -> None:
    """The writer's copies of a snapshot's layers, in layer order (the order the pass reaches them)."""
    for layer in snapshot:
        if isinstance(layer, _Snapshot):
            layer.take()
