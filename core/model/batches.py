"""What the parts of every layer's accumulators share: a batch's global positions and their sampling
levels (`BatchIndex`), the device's reusable work buffers (`Scratch`), the value compared with tau
(`firing_value`), the CPU's list of a batch's firings (`Firings`), and the round trip of their tensors
through a checkpoint's host arrays (`host_copies`, `restore`, `to_device`)."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch

from neuron_tui.core.read.sampling import MAX_LEVEL, token_levels


class Firings:
    """The True entries of a CPU bool matrix [rows, F] (a batch's firings), listed once: their flat
    indices (numpy's flatnonzero, about three times faster than torch.nonzero here), their rows and
    columns (tokens and neurons) when asked, and the values of a tensor of the matrix's size there."""

    def __init__(self, mask: torch.Tensor):
        self.width = mask.shape[1]
        self.flat = torch.from_numpy(np.flatnonzero(mask.numpy()))

    def __len__(self) -> int:
        return self.flat.numel()

    @cached_property
    def token(self) -> torch.Tensor:
        return self.flat // self.width

    @cached_property
    def neuron(self) -> torch.Tensor:
        return self.flat % self.width

    def of(self, x: torch.Tensor) -> torch.Tensor:
        """[n]: `x`'s values at the entries (index_select on the flat view: the fastest gather here)."""
        return x.reshape(-1).index_select(0, self.flat)


def firing_value(h: torch.Tensor, rule: str, out: torch.Tensor | None = None) -> torch.Tensor:
    """What is compared with tau: h for the ReLU rule, |h| for the abs rule (docs/design.md)."""
    return torch.abs(h, out=out) if rule == "abs" else h


def filled(shape: tuple[int, ...], value, dtype: torch.dtype, device: torch.device, neuron_major: bool) -> torch.Tensor:
    """A tensor of `shape` [..., F] filled with `value`; `neuron_major`: laid out over an [F, ...] tensor,
    so what one neuron holds shares cache lines (the CPU kernel, cpu_update.c, moves a neuron's event
    slots and context windows one neuron at a time and reads such tensors through their strides)."""
    if not neuron_major:
        return torch.full(shape, value, dtype=dtype, device=device)
    base = torch.full((shape[-1], *shape[:-1]), value, dtype=dtype, device=device)
    return base.permute(*range(1, len(shape)), 0)


def to_device(array, like: torch.Tensor) -> torch.Tensor:
    """A host array as a tensor of `like`'s dtype on `like`'s device (restoring a checkpoint)."""
    return torch.as_tensor(np.asarray(array)).to(device=like.device, dtype=like.dtype)


def host_copy(t: torch.Tensor, into: np.ndarray | None = None) -> np.ndarray:
    """A host copy of `t`, never a view of it: a checkpoint's snapshot is written while the pass goes on
    changing the tensors (on the CPU, `.cpu().numpy()` would share their memory). Copied into `into`
    when its shape and dtype match: a snapshot reuses the last one's arrays, so a checkpoint does not
    fault in fresh pages each time (which costs more than the copy); pinned memory off the CPU, the
    fastest device-to-host copy."""
    dtype = torch.empty(0, dtype=t.dtype).numpy().dtype
    if into is None or into.shape != tuple(t.shape) or into.dtype != dtype:
        into = torch.empty(t.shape, dtype=t.dtype, pin_memory=t.device.type == "cuda").numpy()
    torch.from_numpy(into).copy_(t.detach())
    return into


def host_copies(part: object, names: tuple[str, ...], into: dict | None = None) -> dict[str, np.ndarray]:
    """The tensors `names` of an accumulator's part as host copies (`host_copy`, into the arrays of
    `into`, a previous snapshot's), named as LayerState's fields."""
    into = into or {}
    return {name: host_copy(getattr(part, name), into.get(name)) for name in names}


def restore(part: object, state: object, names: tuple[str, ...]) -> None:
    """Set the tensors `names` of an accumulator's part from the same fields of a LayerState `state`,
    copied into the tensors held (whose layout, neuron-major for some on the CPU, stays)."""
    for name in names:
        held = getattr(part, name)
        held.copy_(to_device(getattr(state, name), held))


class HeldTensors:
    """An accumulator's part whose whole state is its tensors `FIELDS`, named as LayerState's fields:
    snapshot, state and restore are those tensors as they are (top contexts, sign cases)."""

    FIELDS: tuple[str, ...] = ()

    def snapshot(self, into: dict | None = None) -> dict[str, np.ndarray]:
        """Host copies of the tensors (into a previous snapshot's arrays): LayerState's fields as they are."""
        return host_copies(self, self.FIELDS, into)

    @staticmethod
    def state_of(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return raw

    def load(self, st) -> None:
        """Restore from a checkpoint's LayerState `st`."""
        restore(self, st, self.FIELDS)


class Scratch:
    """Work buffers of one device, reused by every layer and batch: on the CPU a fresh [B, T, F]
    tensor costs its page faults anew each time, more than the op that fills it (|h| and h > tau of a
    SmolLM2 batch: 4.3 ms in new tensors, 1.5 ms in reused ones). Layers run one after another, so
    one buffer per role serves them all."""

    def __init__(self):
        self._buffers: dict[str, torch.Tensor] = {}

    def like(self, role: str, t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A buffer with `t`'s shape and device (and `dtype`, default t's), contents undefined."""
        dtype = dtype or t.dtype
        buf = self._buffers.get(role)
        if buf is None or buf.numel() < t.numel() or buf.dtype != dtype or buf.device != t.device:
            buf = self._buffers[role] = torch.empty(t.numel(), dtype=dtype, device=t.device)
        return buf[: t.numel()].view(t.shape)


class BatchIndex:
    """Per-batch, per-device index tensors shared by every layer: global positions and their levels,
    and the device's work buffers (`scratch`, kept across batches by whoever makes the indexes)."""

    def __init__(self, positions: np.ndarray, device: torch.device, scratch: Scratch | None = None):
        self.scratch = scratch or Scratch()
        flat = np.asarray(positions, dtype=np.int64).ravel()
        levels = token_levels(flat)
        self.positions = torch.as_tensor(flat).to(device, non_blocking=True)
        self.levels = torch.as_tensor(levels).to(device, non_blocking=True)
        # rows grouped by level, for the per-level counts (see level_histogram)
        order = np.argsort(levels, kind="stable")
        self.by_level = torch.as_tensor(order).to(device, non_blocking=True)
        edges = np.searchsorted(levels[order], np.arange(MAX_LEVEL + 1))
        self.level_slices = [(lv, int(edges[lv]), int(edges[lv + 1])) for lv in range(MAX_LEVEL) if edges[lv + 1] > edges[lv]]
        self._levels_host, self._level_starts, self._rows = levels, edges, {}

    def rows_at_or_above(self, floor: int) -> torch.Tensor | None:
        """The rows (ascending) whose level is at least `floor`, None for all of them (floor 0)."""
        if floor <= 0:
            return None
        if floor not in self._rows:
            self._rows[floor] = torch.as_tensor(np.flatnonzero(self._levels_host >= floor)).to(self.positions.device)
        return self._rows[floor]

    def level_histogram(self, fired: torch.Tensor, floor: int = 0) -> torch.Tensor:
        """[MAX_LEVEL, F] int64: this batch's firings per token level, without leaving the device; 0 for
        the levels below `floor` (rows no event sample can take: see EventSample._new_events).

        One gather puts the rows in level order, then one column sum per level present (about
        log2(tokens) of them, since levels are geometric): a single pass over the bool mask, where a
        one-hot matrix product would cost a float copy of it or a slow skinny int8 product."""
        start = int(self._level_starts[min(max(floor, 0), MAX_LEVEL)])
        grouped = fired.index_select(0, self.by_level[start:]).view(torch.uint8)
        hist = torch.zeros(MAX_LEVEL, fired.shape[1], dtype=torch.int64, device=fired.device)
        for level, a, b in self.level_slices:
            if level >= floor:
                hist[level] = grouped[a - start : b - start].sum(0, dtype=torch.int32)
        return hist
