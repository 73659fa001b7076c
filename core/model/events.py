"""A bounded uniform sample of each neuron's firing positions, by *level sampling*, on the device.

Every global position g has a level z(g) (trailing zeros of a 64-bit hash of g, so P(z >= L) = 2**-L);
neuron i keeps the firing positions with z(g) >= level_i and raises level_i to the smallest L whose kept
events fit in the cap C. Since the count of events with z >= L only grows, level_i ends as the smallest
L that fits *the whole corpus*: the final sample is {g fired: z(g) >= level_i}, the same for any batch
size, resume point or corpus sharding, exact (all events) when level_i is 0, and each kept event stands
for 2**level_i firings, so per-token counts are unbiased estimates (docs/design.md, "Level sampling").
"""

from __future__ import annotations

import numpy as np
import torch

from neuron_tui.core.read.sampling import MAX_LEVEL, token_levels

from .batches import BatchIndex, Firings, filled, host_copies, to_device


class EventSample:
    """The level-sampled firing positions of one layer's neurons (see the module docstring)."""

    def __init__(self, n_neurons: int, events_cap: int, device: torch.device, sync_free: bool):
        F, C = n_neurons, events_cap
        self.n_neurons, self.cap, self.device, self.sync_free = F, C, device, sync_free
        kw = {"device": device}
        self.level = torch.zeros(F, dtype=torch.int64, **kw)
        # event buffer [slot, neuron]: row C is a trash row that absorbs the padding of nonzero_static.
        # int32 positions and int8 levels: 5 bytes a slot (OPT-66b: 64 x 36,864 x 257 slots = 3 GB)
        self.ev_pos = self._buffer(C + 1, -1, torch.int32)
        self.ev_z = self._buffer(C + 1, 0, torch.int8)
        self.fill = torch.zeros(F, dtype=torch.int64, **kw)
        self.level_hist = self._buffer(MAX_LEVEL, 0, torch.int64)  # buffered events by z
        self._levels_col = torch.arange(MAX_LEVEL, **kw)[:, None]
        self._neuron_ids = torch.arange(F, **kw)
        self._neuron_bounds = torch.arange(F + 1, **kw)

    def _buffer(self, rows: int, value: int, dtype: torch.dtype) -> torch.Tensor:
        """A [rows, F] buffer filled with `value`. On the CPU it is neuron-major (batches.filled): the C
        kernel adds a neuron's events one at a time and compacts them when its level rises, so a
        neuron's slots on few cache lines save memory accesses (12 layers of a random OPT-125m shape:
        the first batch's update 22 -> 19 ms, later ones about 5% faster). Slot-major on accelerators,
        where the sync-free update writes a batch's events slot by slot."""
        return filled((rows, self.n_neurons), value, dtype, self.device, neuron_major=not self.sync_free)

    @staticmethod
    def _flat(t: torch.Tensor) -> torch.Tensor:
        """The storage of a buffer as one flat tensor, element (row, neuron) at row * stride(0) +
        neuron * stride(1), whichever its layout."""
        return t.as_strided((t.numel(),), (1,))

    @staticmethod
    def device_bytes(n_neurons: int, events_cap: int) -> int:
        """Device bytes: per neuron 5(C + 1) in event slots, 8 * MAX_LEVEL in the level histogram and 8
        each for the level, the fill and the two neuron index ranges; the level column and the ranges'
        last bound."""
        return n_neurons * (5 * (events_cap + 1) + 8 * MAX_LEVEL + 4 * 8) + 8 * (MAX_LEVEL + 1)

    def update(self, fired: torch.Tensor, batch: BatchIndex, listed: Firings | None) -> None:
        """Add one batch's firings ([rows, F] bool; `listed`, when given, the same firings listed). The
        CPU kernel (core.model.native) adds them to these tensors itself, one firing at a time."""
        token, neuron, level = self._new_events(fired, batch, listed)
        if not self.sync_free:  # compact only the neurons whose level rose (few per batch)
            raised = torch.nonzero(level > self.level).squeeze(1)
            if raised.numel():
                self._drop_below(level, raised)
        else:  # every neuron, unconditionally: no data-dependent branch, no sync
            self._drop_below(level, self._neuron_ids)
        self.level = level
        # append the batch's events (at most C - fill per neuron, by the choice of level), each neuron's
        # events in consecutive free slots: rank within the neuron = index - first index of the neuron.
        # Sync-free, padding pairs (token -1) sort last under key F; group starts come from a sync-free
        # searchsorted. On the CPU every pair is an event, and index_select is the fastest gather.
        if self.sync_free:
            valid = token >= 0
            key = torch.where(valid, neuron, self.n_neurons)
            order = torch.argsort(key, stable=True)
            key, token_c, valid = key[order], token.clamp_min(0)[order], valid[order]
        else:
            order = torch.argsort(neuron, stable=True)
            key, token_c, valid = neuron.index_select(0, order), token.index_select(0, order), None
        starts = torch.searchsorted(key, self._neuron_bounds)  # [F + 1]
        count = starts[1:] - starts[:-1]
        neuron_c = key.clamp_max(self.n_neurons - 1) if valid is not None else key
        rank = torch.arange(key.shape[0], device=self.device) - starts.index_select(0, neuron_c)
        row = self.fill.index_select(0, neuron_c) + rank
        if valid is not None:
            row = torch.where(valid, row, self.cap)
        # flat slots: index_copy_ is several times faster than index_put_
        slot = row * self.ev_pos.stride(0) + neuron_c * self.ev_pos.stride(1)
        self._flat(self.ev_pos).index_copy_(0, slot, batch.positions.index_select(0, token_c).to(torch.int32))
        self._flat(self.ev_z).index_copy_(0, slot, batch.levels.index_select(0, token_c).to(torch.int8))
        if valid is not None:
            self.ev_pos[self.cap] = -1
        self.fill += count

    def _drop_below(self, level: torch.Tensor, cols: torch.Tensor) -> None:
        """Drop the buffered events of neurons `cols` whose z is below the new level; compact the rest
        (columns gathered and put back with index_select / index_copy_, the fast ways on every device)."""
        C = self.cap
        pos, z = self.ev_pos.index_select(1, cols), self.ev_z.index_select(1, cols)
        slot_ok = (z >= level.index_select(0, cols)[None, :]) & (pos >= 0)
        slot_ok[C] = False
        slot = torch.where(slot_ok, slot_ok.cumsum(0) - 1, C)
        pos = torch.full_like(pos, -1).scatter_(0, slot, pos)
        pos[C] = -1
        self.ev_pos.index_copy_(1, cols, pos)
        self.ev_z.index_copy_(1, cols, torch.zeros_like(z).scatter_(0, slot, z))
        self.fill.index_copy_(0, cols, slot_ok.sum(0))

    def _new_events(self, fired: torch.Tensor, batch: BatchIndex, listed: Firings | None):
        """(token, neuron) pairs of this batch's events to keep, and each neuron's new level.

        The new level of neuron i is the smallest L >= level_i such that its buffered events plus this
        batch's firings with z >= L number at most C. Two ways to the same result: given the firings
        `listed` (CPU, few firings), count them by level; otherwise the firings are counted by level
        over the whole mask, and the kept pairs extracted after (into a fixed-size, -1-padded result
        when sync-free).
        """
        if listed is not None:
            token, neuron = listed.token, listed.neuron
            z = batch.levels.index_select(0, token)
            at_level = torch.nonzero(z >= self.level.index_select(0, neuron)).squeeze(1)
            token, neuron, z = token.index_select(0, at_level), neuron.index_select(0, at_level), z.index_select(0, at_level)
            counts = torch.bincount(z * self.n_neurons + neuron, minlength=MAX_LEVEL * self.n_neurons)
            level = self._raise_levels(counts.view(MAX_LEVEL, self.n_neurons))
            kept = torch.nonzero(z >= level.index_select(0, neuron)).squeeze(1)
            return token.index_select(0, kept), neuron.index_select(0, kept), level
        if self.sync_free:  # a fixed-size result: the batch adds at most C events per neuron
            level = self._raise_levels(batch.level_histogram(fired))
            keep = fired & (batch.levels[:, None] >= level)
            pairs = torch.nonzero_static(keep, size=min(keep.numel(), self.cap * self.n_neurons), fill_value=-1)
            return pairs[:, 0], pairs[:, 1], level
        # on the CPU, only the rows at or above the lowest level of any neuron can change a level or give
        # an event (levels only rise, and the level histogram keeps nothing below a neuron's level), so
        # the rest are not read: after warm-up, where every neuron has fired often, most of the batch
        floor = int(self.level.min())
        level = self._raise_levels(batch.level_histogram(fired, floor))
        rows = batch.rows_at_or_above(floor)
        if rows is None:
            keep = fired & (batch.levels[:, None] >= level)
        else:
            keep = fired.index_select(0, rows) & (batch.levels.index_select(0, rows)[:, None] >= level)
        firings = Firings(keep)
        token = firings.token if rows is None else rows.index_select(0, firings.token)
        return token, firings.neuron, level

    def _raise_levels(self, batch_hist: torch.Tensor) -> torch.Tensor:
        """New levels from this batch's firings per level ([MAX_LEVEL, F]); keeps level_hist in step."""
        total = self.level_hist + batch_hist
        at_or_above = total.flip(0).cumsum(0).flip(0)
        level = torch.maximum(self.level, (at_or_above > self.cap).sum(0))
        self.level_hist.copy_(torch.where(self._levels_col >= level, total, 0))  # in place: its layout stays
        return level

    # ---- host round trip (checkpoints, merging) ------------------------------------------------
    def snapshot(self, into: dict | None = None) -> dict[str, np.ndarray]:
        """Host copies of the levels, the event slots and their fill (into a previous snapshot's arrays);
        listing the events (`state_of`) is left to whoever writes them, off the pass."""
        return host_copies(self, ("level", "ev_pos", "fill"), into)

    @staticmethod
    def state_of(raw: dict[str, np.ndarray]) -> dict[str, object]:
        """`level` [F] int8 and `events` (F arrays of global positions, ascending)."""
        pos, fill = raw["ev_pos"][:-1].astype(np.int64), raw["fill"]
        return {"level": raw["level"].astype(np.int8), "events": [np.sort(pos[: fill[i], i]) for i in range(len(fill))]}

    def load(self, st) -> None:
        """Restore from a checkpoint's LayerState `st`: the inverse of `state`; each event's z is
        recomputed."""
        level, events = st.level, st.events
        ev = np.full((self.cap + 1, self.n_neurons), -1, dtype=np.int64)
        z = np.zeros_like(ev)
        hist = np.zeros((MAX_LEVEL, self.n_neurons), dtype=np.int64)
        for i, e in enumerate(events):
            ev[: len(e), i] = e
            lv = token_levels(e)
            z[: len(e), i] = lv
            np.add.at(hist[:, i], lv, 1)
        self.level = to_device(level, self.level)
        for name, value in (("ev_pos", ev), ("ev_z", z), ("level_hist", hist)):  # into the buffers: layouts stay
            getattr(self, name).copy_(to_device(value, getattr(self, name)))
        self.fill = to_device([len(e) for e in events], self.fill)
