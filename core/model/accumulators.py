"""On-device accumulators of one pass: what each FFN neuron did, without a host sync per batch.

One `LayerAccumulator` per layer lives on the device of that layer's activations (several devices with
`--device-map auto`). Per batch it sees the activation h [B, T, F] at the input of the FFN output
projection and adds, for every neuron (docs/design.md, "What one pass collects"):

- act_count [F] int64 and pos_count [T, F] int32: firings, in all and per position (exact);
- act_sum [F]: sum of h over firing tokens (signed: a gated neuron may fire negative, which flips
  the direction of its update), and act_count_pos / act_sum_pos [F], the count and sum of the
  firings with h > 0, so the sign split of a gated neuron's firings is known; act_max [F]: the
  largest activation value (h, or |h|) seen;
- the top-K activation values with their global token positions g = seq * T + t, at most one per
  sequence (each sequence's maximum competes), so the contexts shown for a neuron are K different
  texts rather than K neighbouring tokens of one text;
- a bounded uniform sample of each neuron's firing positions, by *level sampling*: every global
  position g has a level z(g) (trailing zeros of a 64-bit hash of g, so P(z >= L) = 2**-L); neuron i
  keeps the firing positions with z(g) >= level_i and raises level_i to the smallest L whose kept
  events fit in the cap C. Since the count of events with z >= L only grows, level_i ends as the
  smallest L that fits *the whole corpus*: the final sample is {g fired: z(g) >= level_i}, the same
  for any batch size, resume point or corpus sharding, exact (all events) when level_i is 0, and each
  kept event stands for 2**level_i firings, so per-token counts are unbiased estimates.

All work is tensor ops whose cost grows with B*T*F, never with vocabulary size. On accelerators every
output size is fixed in advance (`torch.nonzero_static`), so the device never waits for the host; on
the CPU, where there is no host to wait for, the same steps take the cheaper exact-size path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from neuron_tui.core.read.sampling import MAX_LEVEL, token_levels

SPARSE_BATCH = 16  # CPU batches where under 1/16 of (token, neuron) pairs fire take the pairs path


def firing_value(h: torch.Tensor, rule: str, out: torch.Tensor | None = None) -> torch.Tensor:
    """What is compared with tau: h for the ReLU rule, |h| for the abs rule (docs/design.md)."""
    return torch.abs(h, out=out) if rule == "abs" else h


def device_bytes(n_neurons: int, seq_len: int, events_cap: int, top_k: int) -> int:
    """Bytes one `LayerAccumulator` keeps on its device, the room `--device-map auto` must leave per
    layer (OPT-66b, T = 2,048, C = 256: about 360 MB a layer, 23 GB in all). Per neuron: pos_count 4T,
    top-K values and positions 12K, event slots 5(C + 1), level histogram 8 * MAX_LEVEL, 8-byte
    counters (act_count, act_sum, their positive parts, level, fill, two index ranges) and act_max;
    plus the level column."""
    T, C, K = seq_len, events_cap, top_k
    return n_neurons * (4 * T + 12 * K + 5 * (C + 1) + 8 * MAX_LEVEL + 8 * 8 + 4) + 8 * (MAX_LEVEL + 1)


@dataclass
class LayerState:
    """Host copies of one layer's accumulators, as stored in (and restored from) a checkpoint."""

    act_count: np.ndarray  # [F] int64
    pos_count: np.ndarray  # [T, F] int32
    act_sum: np.ndarray  # [F] float64
    act_count_pos: np.ndarray  # [F] int64: firings with h > 0
    act_sum_pos: np.ndarray  # [F] float64: their sum
    act_max: np.ndarray  # [F] float32
    top_val: np.ndarray  # [K, F] float32
    top_pos: np.ndarray  # [K, F] int64
    level: np.ndarray  # [F] int8
    events: list[np.ndarray]  # F arrays of global positions, ascending

    @classmethod
    def empty(cls, F: int, T: int, K: int) -> "LayerState":
        """The state of a layer that has seen nothing."""
        return cls(np.zeros(F, np.int64), np.zeros((T, F), np.int32), np.zeros(F), np.zeros(F, np.int64), np.zeros(F),
                   np.full(F, -np.inf, np.float32), np.full((K, F), -np.inf, np.float32), np.full((K, F), -1, np.int64),
                   np.zeros(F, np.int8), [np.zeros(0, np.int64)] * F)


class LayerAccumulator:
    """The running statistics of one layer; `update` is called from the forward pre-hook."""

    def __init__(
        self,
        n_neurons: int,
        seq_len: int,
        events_cap: int,
        top_k: int,
        device: torch.device,
        rule: str,
        tau: float,
        sync_free: bool | None = None,
    ):
        """`sync_free` (default: on any device but the CPU) picks the fixed-size, branch-free steps;
        the tests run both paths on the CPU."""
        F, T, C, K = n_neurons, seq_len, events_cap, top_k
        self.rule, self.tau = rule, float(tau)
        self.sync_free = torch.device(device).type != "cpu" if sync_free is None else sync_free
        self.n_neurons, self.seq_len, self.cap, self.top_k = F, T, C, K
        self.device = torch.device(device)
        kw = {"device": self.device}
        self.act_count = torch.zeros(F, dtype=torch.int64, **kw)
        self.pos_count = torch.zeros(T, F, dtype=torch.int32, **kw)
        # float64 keeps 20M-token sums exact enough; MPS has no float64
        sum_dtype = torch.float32 if self.device.type == "mps" else torch.float64
        self.act_sum = torch.zeros(F, dtype=sum_dtype, **kw)
        self.act_count_pos = torch.zeros(F, dtype=torch.int64, **kw)
        self.act_sum_pos = torch.zeros(F, dtype=sum_dtype, **kw)
        self.act_max = torch.full((F,), float("-inf"), dtype=torch.float32, **kw)
        self.top_val = torch.full((K, F), float("-inf"), dtype=torch.float32, **kw)
        self.top_pos = torch.full((K, F), -1, dtype=torch.int64, **kw)
        self.level = torch.zeros(F, dtype=torch.int64, **kw)
        # event buffer, slot-major: row C is a trash row that absorbs the padding of nonzero_static.
        # int32 positions and int8 levels: 5 bytes a slot (OPT-66b: 64 x 36,864 x 257 slots = 3 GB)
        self.ev_pos = torch.full((C + 1, F), -1, dtype=torch.int32, **kw)
        self.ev_z = torch.zeros(C + 1, F, dtype=torch.int8, **kw)
        self.fill = torch.zeros(F, dtype=torch.int64, **kw)
        self.level_hist = torch.zeros(MAX_LEVEL, F, dtype=torch.int64, **kw)  # buffered events by z
        self._levels_col = torch.arange(MAX_LEVEL, **kw)[:, None]
        self._neuron_ids = torch.arange(F, **kw)
        self._neuron_bounds = torch.arange(F + 1, **kw)

    # ---- the per-batch update ------------------------------------------------------------------
    @torch.no_grad()
    def update(self, h: torch.Tensor, batch: "BatchIndex") -> None:
        """Add one batch of activations h [B, T, F] (the input of the FFN output projection)."""
        B, T, F = h.shape
        # in the model's own dtype: a float32 copy of a bf16 batch would be the costliest step on a GPU
        value = firing_value(h, self.rule, out=batch.scratch.like("value", h) if self.rule == "abs" else None)
        fired = torch.gt(value, self.tau, out=batch.scratch.like("fired", h, torch.bool))
        # on the CPU, when few fire, list the firing pairs once (numpy's flatnonzero is fast, and there
        # is no device to wait for) and take counts, sums and events from them; every 16th row tells,
        # from this batch alone, whether listing is worth it
        pairs = None
        flat = fired.view(B * T, F)
        if not self.sync_free and int(flat[::16].sum()) * 16 * SPARSE_BATCH < fired.numel():
            pairs = _nonzero_cpu(flat)
            if pairs.shape[0] * SPARSE_BATCH >= fired.numel():
                pairs = None
        self._add_firings(h, value, fired, pairs, batch.scratch)
        seq_max = value.amax(dim=1).float()  # [B, F]: each sequence's best token
        self.act_max = torch.maximum(self.act_max, seq_max.amax(0))
        self._update_top(value, seq_max, batch)
        self._update_events(flat, batch, pairs)

    def _add_firings(self, h, value, fired, pairs, scratch: "Scratch") -> None:
        """Counts per position and signed sums of this batch, from the firing pairs when given."""
        B, T, F = h.shape
        if pairs is not None:
            token, neuron = pairs[:, 0], pairs[:, 1]
            per_pos = torch.bincount((token % T) * F + neuron, minlength=T * F).view(T, F)
            self.pos_count[:T] += per_pos.to(torch.int32)
            self.act_count += per_pos.sum(0)
            hv = h.reshape(B * T, F)[token, neuron].to(self.act_sum.dtype)
            self.act_sum.index_add_(0, neuron, hv)
            up = hv > 0
            self.act_count_pos += torch.bincount(neuron[up], minlength=F)
            self.act_sum_pos.index_add_(0, neuron[up], hv[up])
            return
        per_pos = fired.view(torch.uint8).sum(0, dtype=torch.int32)  # [T, F]; bool sums are slow
        self.pos_count[:T] += per_pos
        self.act_count += per_pos.sum(0)
        # the signed sum of h over firing tokens: with the abs rule its sign says which way the neuron
        # pushes its output vector when it fires (projections use it). threshold(x, tau, 0) keeps x
        # where x > tau in one fused op; with the abs rule, since h + |h| = 2 relu(h) and tau >= 0,
        # sum over |h| > tau of h = 2 * sum over h > tau of h - sum over |h| > tau of |h|, which costs
        # two such ops instead of a float copy of the mask and a product. The sum over sequences stays
        # in the model's dtype (no copy of the batch); the one over positions, a small [T, F], is in
        # float64, so the difference loses nothing
        positive = self._sum_tokens(torch.nn.functional.threshold(h, self.tau, 0.0))
        self.act_sum_pos += positive
        if self.rule == "abs":
            self.act_sum += 2 * positive - self._sum_tokens(torch.nn.functional.threshold(value, self.tau, 0.0))
            up = torch.gt(h, self.tau, out=scratch.like("positive", h, torch.bool))
            self.act_count_pos += up.view(B * T, F).view(torch.uint8).sum(0, dtype=torch.int64)
        else:  # relu: every firing is positive
            self.act_sum += positive
            self.act_count_pos += per_pos.sum(0)

    def _sum_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, F] -> [F] in the accumulator's dtype, converting only the [T, F] partial sums."""
        return x.sum(0, dtype=torch.float32).sum(0, dtype=self.act_sum.dtype)

    def _update_top(self, value: torch.Tensor, seq_max: torch.Tensor, batch: "BatchIndex") -> None:
        """Merge each sequence's maximum into the running top-K (one context per sequence)."""
        B, T, F = value.shape
        if self.sync_free:
            seq_arg = value.argmax(dim=1)
        else:  # only a value above the K-th can enter (an equal one comes later: the earlier stays)
            enters = seq_max > self.top_val[-1]
            if not bool(enters.any()):  # the common case after warm-up: nothing to merge
                return
            seq_arg = self._cpu_argmax(value, enters)
        seq_pos = batch.positions.view(B, T).gather(1, seq_arg)  # [B, F]
        cat_v = torch.cat([self.top_val, seq_max])
        cat_p = torch.cat([self.top_pos, seq_pos])
        # a stable sort, not topk: equal values (a repeated context) keep the earlier position, so the
        # result does not depend on batch size, resumes or merges
        order = torch.sort(cat_v, dim=0, descending=True, stable=True).indices[: self.top_k]
        self.top_val, self.top_pos = cat_v.gather(0, order), cat_p.gather(0, order)

    def _cpu_argmax(self, value: torch.Tensor, enters: torch.Tensor) -> torch.Tensor:
        """argmax over positions only where a sequence enters the top-K (`enters` [B, F]; few, after
        warm-up). A full argmax along the middle axis costs ten times the amax on the CPU.
        """
        arg = torch.zeros(enters.shape, dtype=torch.int64)
        b, i = torch.nonzero(enters, as_tuple=True)
        if b.numel():
            arg[b, i] = value[b, :, i].argmax(dim=1)
        return arg

    def _update_events(self, fired: torch.Tensor, batch: "BatchIndex", pairs: torch.Tensor | None) -> None:
        token, neuron, level = self._new_events(fired, batch, pairs)
        if not self.sync_free:  # compact only the neurons whose level rose (few per batch)
            raised = torch.nonzero(level > self.level).squeeze(1)
            if raised.numel():
                self._drop_below(level, raised)
        else:  # every neuron, unconditionally: no data-dependent branch, no sync
            self._drop_below(level, self._neuron_ids)
        self.level = level
        # append the batch's events (at most C - fill per neuron, by the choice of level), each neuron's
        # events in consecutive free slots: rank within the neuron = index - first index of the neuron.
        # Padding pairs (token -1) sort last under key F; group starts come from a sync-free searchsorted.
        valid = token >= 0
        key = torch.where(valid, neuron, self.n_neurons)
        order = torch.argsort(key, stable=True)
        key, token_c, valid = key[order], token.clamp_min(0)[order], valid[order]
        starts = torch.searchsorted(key, self._neuron_bounds)  # [F + 1]
        count = starts[1:] - starts[:-1]
        neuron_c = key.clamp_max(self.n_neurons - 1)
        rank = torch.arange(key.shape[0], device=self.device) - starts[neuron_c]
        row = torch.where(valid, self.fill[neuron_c] + rank, self.cap)
        self.ev_pos[row, neuron_c] = batch.positions[token_c].to(torch.int32)
        self.ev_z[row, neuron_c] = batch.levels[token_c].to(torch.int8)
        self.ev_pos[self.cap] = -1
        self.fill += count

    def _drop_below(self, level: torch.Tensor, cols: torch.Tensor) -> None:
        """Drop the buffered events of neurons `cols` whose z is below the new level; compact the rest."""
        C = self.cap
        pos, z = self.ev_pos[:, cols], self.ev_z[:, cols]
        slot_ok = (z >= level[cols, None].t()) & (pos >= 0)
        slot_ok[C] = False
        slot = torch.where(slot_ok, slot_ok.cumsum(0) - 1, C)
        pos = torch.full_like(pos, -1).scatter_(0, slot, pos)
        pos[C] = -1
        self.ev_pos[:, cols] = pos
        self.ev_z[:, cols] = torch.zeros_like(z).scatter_(0, slot, z)
        self.fill[cols] = slot_ok.sum(0)

    def _new_events(self, fired: torch.Tensor, batch: "BatchIndex", pairs: torch.Tensor | None):
        """(token, neuron) pairs of this batch's events to keep, and each neuron's new level.

        The new level of neuron i is the smallest L >= level_i such that its buffered events plus this
        batch's firings with z >= L number at most C. Two ways to the same result: given the firing
        `pairs` (CPU, few firings), count them by level; otherwise the firings are
        counted by level over the whole mask, and the kept pairs extracted after (into a fixed-size,
        -1-padded result when sync-free).
        """
        if pairs is not None:
            z = batch.levels[pairs[:, 0]]
            at_level = z >= self.level[pairs[:, 1]]
            pairs, z = pairs[at_level], z[at_level]
            counts = torch.bincount(z * self.n_neurons + pairs[:, 1], minlength=MAX_LEVEL * self.n_neurons)
            level = self._raise_levels(counts.view(MAX_LEVEL, self.n_neurons))
            pairs = pairs[z >= level[pairs[:, 1]]]
            return pairs[:, 0], pairs[:, 1], level
        level = self._raise_levels(batch.level_histogram(fired))
        keep = fired & (batch.levels[:, None] >= level)
        if self.sync_free:  # a fixed-size result: the batch adds at most C events per neuron
            pairs = torch.nonzero_static(keep, size=min(keep.numel(), self.cap * self.n_neurons), fill_value=-1)
        else:
            pairs = _nonzero_cpu(keep)
        return pairs[:, 0], pairs[:, 1], level

    def _raise_levels(self, batch_hist: torch.Tensor) -> torch.Tensor:
        """New levels from this batch's firings per level ([MAX_LEVEL, F]); keeps level_hist in step."""
        total = self.level_hist + batch_hist
        at_or_above = total.flip(0).cumsum(0).flip(0)
        level = torch.maximum(self.level, (at_or_above > self.cap).sum(0))
        self.level_hist = torch.where(self._levels_col >= level, total, 0)
        return level

    # ---- host round trip (checkpoints, merging) ------------------------------------------------
    def state(self) -> LayerState:
        """Copy to the host: the one sync, done only at checkpoints and at the end."""
        pos = self.ev_pos[: self.cap].cpu().numpy().astype(np.int64)
        fill = self.fill.cpu().numpy()
        events = [np.sort(pos[: fill[i], i]) for i in range(self.n_neurons)]
        return LayerState(
            act_count=self.act_count.cpu().numpy(),
            pos_count=self.pos_count.cpu().numpy(),
            act_sum=self.act_sum.double().cpu().numpy(),
            act_count_pos=self.act_count_pos.cpu().numpy(),
            act_sum_pos=self.act_sum_pos.double().cpu().numpy(),
            act_max=self.act_max.cpu().numpy(),
            top_val=self.top_val.cpu().numpy(),
            top_pos=self.top_pos.cpu().numpy(),
            level=self.level.cpu().numpy().astype(np.int8),
            events=events,
        )

    def load(self, st: LayerState) -> None:
        """Restore from a checkpoint (resume): the inverse of `state`."""
        put = lambda a, like: torch.as_tensor(np.asarray(a)).to(device=self.device, dtype=like.dtype)  # noqa: E731
        self.act_count = put(st.act_count, self.act_count)
        self.pos_count = put(st.pos_count, self.pos_count)
        self.act_sum = put(st.act_sum, self.act_sum)
        self.act_count_pos = put(st.act_count_pos, self.act_count_pos)
        self.act_sum_pos = put(st.act_sum_pos, self.act_sum_pos)
        self.act_max = put(st.act_max, self.act_max)
        self.top_val = put(st.top_val, self.top_val)
        self.top_pos = put(st.top_pos, self.top_pos)
        self.level = put(st.level, self.level)
        ev = np.full((self.cap + 1, self.n_neurons), -1, dtype=np.int64)
        z = np.zeros_like(ev)
        hist = np.zeros((MAX_LEVEL, self.n_neurons), dtype=np.int64)
        for i, e in enumerate(st.events):
            ev[: len(e), i] = e
            lv = token_levels(e)
            z[: len(e), i] = lv
            np.add.at(hist[:, i], lv, 1)
        self.ev_pos, self.ev_z = put(ev, self.ev_pos), put(z, self.ev_z)
        self.fill = put([len(e) for e in st.events], self.fill)
        self.level_hist = put(hist, self.level_hist)


def _nonzero_cpu(mask: torch.Tensor) -> torch.Tensor:
    """torch.nonzero of a CPU bool matrix ([n, 2] int64), through numpy's flatnonzero, which is
    about three times faster here (it dominated the sparse-batch path)."""
    flat = torch.from_numpy(np.flatnonzero(mask.numpy()))
    width = mask.shape[1]
    return torch.stack([flat // width, flat % width], 1)


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
        # rows grouped by level, for the sync-free per-level counts (see level_histogram)
        order = np.argsort(levels, kind="stable")
        self.by_level = torch.as_tensor(order).to(device, non_blocking=True)
        edges = np.searchsorted(levels[order], np.arange(MAX_LEVEL + 1))
        self.level_slices = [(lv, int(edges[lv]), int(edges[lv + 1])) for lv in range(MAX_LEVEL) if edges[lv + 1] > edges[lv]]

    def level_histogram(self, fired: torch.Tensor) -> torch.Tensor:
        """[MAX_LEVEL, F] int64: this batch's firings per token level, without leaving the device.

        One gather puts the rows in level order, then one column sum per level present (about
        log2(tokens) of them, since levels are geometric): a single pass over the bool mask, where a
        one-hot matrix product would cost a float copy of it or a slow skinny int8 product."""
        grouped = fired.index_select(0, self.by_level).view(torch.uint8)
        hist = torch.zeros(MAX_LEVEL, fired.shape[1], dtype=torch.int64, device=fired.device)
        for level, start, stop in self.level_slices:
            hist[level] = grouped[start:stop].sum(0, dtype=torch.int32)
        return hist
