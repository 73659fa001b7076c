"""On-device accumulators of one pass: what each FFN neuron did, without a host sync per batch.

One `LayerAccumulator` per layer lives on the device of that layer's activations (several devices with
`--device-map auto`). Per batch it sees the activation h [B, T, F] at the input of the FFN output
projection (and, for a gated FFN, the up projection's output) and adds, for every neuron
(docs/design.md, "What one pass collects"):

- act_count [F] int64 and pos_count [T, F] int32: firings, in all and per position (exact);
- act_sum [F]: sum of h over firing tokens (signed: a gated neuron may fire negative, which flips
  the direction of its update), and act_count_pos / act_sum_pos [F], the count and sum of the
  firings with h > 0, so the sign split of a gated neuron's firings is known; act_max [F]: the
  largest activation value (h, or |h|) seen; h_sum [F]: the sum of h over *every* token, fired or
  not, whose mean over the corpus is what mean ablation sets a neuron to;
- the top-K contexts with the neuron's signed h around each (core.model.contexts);
- a bounded uniform sample of each neuron's firing positions (core.model.events);
- an exact histogram of the firing values in the layer's fixed bins (core.model.histograms);
- for gated FFNs, the count and strongest firing of each sign case of (act(gate), up)
  (core.model.signs).

All work grows with B*T*F, never with vocabulary size. On the CPU one C kernel does all of it in one
pass over h (core.model.native, `_update_native`). On accelerators every output size is fixed in
advance (`torch.nonzero_static`, fixed-size gathers), so the device never waits for the host, and the
dense statistics are compiled (core.model.fused). The eager steps are the
reference both are held to (tests/test_fused.py); on the CPU they take the cheaper exact-size path: the
firings listed once, for the histogram and the sign cases, which look at firings only, and, when few
fire, for the counts and the event sample too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from neuron_tui.cache.schema import HIST_BINS

from . import native
from .batches import BatchIndex, Firings, Scratch, firing_value, host_copies, restore
from .contexts import CONTEXT_LEFT, CONTEXT_WIDTH, TopContexts
from .events import EventSample
from .fused import FusedUpdate
from .histograms import FiringHistogram
from .signs import N_CASES, SignCases

SPARSE_BATCH = 16  # CPU batches where under 1/16 of (token, neuron) pairs fire take the pairs path
COUNTERS = ("act_count", "pos_count", "act_sum", "act_count_pos", "act_sum_pos", "act_max", "h_sum")


def few_fire(n_fired: int, size: int) -> bool:
    """Whether a CPU batch's `n_fired` firings among its `size` (token, neuron) pairs are few: under
    1/SPARSE_BATCH, where listing them is the cheap way to every statistic that reads firings."""
    return n_fired * SPARSE_BATCH < size


def device_bytes(n_neurons: int, seq_len: int, events_cap: int, top_k: int, gated: bool, cpu: bool = False) -> int:
    """Bytes one `LayerAccumulator` keeps on its device (`cpu`: the CPU, whose kernel reads one more
    table), the room `--device-map auto` must leave per layer on a GPU (OPT-66b, T = 2,048, C = 256:
    about 380 MB a layer, 24 GB in all). Per neuron: pos_count 4T, five 8-byte counters (act_count,
    act_sum, their positive parts, h_sum) and act_max; and each part's own (top-K contexts, event
    sample, histogram, sign cases of a gated FFN)."""
    F = n_neurons
    return (F * (4 * seq_len + 5 * 8 + 4) + TopContexts.device_bytes(F, top_k) + EventSample.device_bytes(F, events_cap)
            + FiringHistogram.device_bytes(F, cpu) + (SignCases.device_bytes(F) if gated else 0))


@dataclass
class LayerState:
    """Host copies of one layer's accumulators, as stored in (and restored from) a checkpoint."""

    act_count: np.ndarray  # [F] int64
    pos_count: np.ndarray  # [T, F] int32
    act_sum: np.ndarray  # [F] float64
    act_count_pos: np.ndarray  # [F] int64: firings with h > 0
    act_sum_pos: np.ndarray  # [F] float64: their sum
    act_max: np.ndarray  # [F] float32
    h_sum: np.ndarray  # [F] float64: sum of h over every token
    top_val: np.ndarray  # [K, F] float32
    top_pos: np.ndarray  # [K, F] int64
    ctx_val: np.ndarray  # [K, W, F] float16: signed h around each top position (NaN: outside the sequence)
    level: np.ndarray  # [F] int8
    events: list[np.ndarray]  # F arrays of global positions, ascending
    hist_count: np.ndarray  # [B, F] int32: firings per histogram bin
    sign_count: np.ndarray | None = None  # [4, F] int64: firings per sign case (gated FFNs only)
    sign_top_val: np.ndarray | None = None  # [4, F] float32: the strongest |h| of each case (-inf: none)
    sign_top_pos: np.ndarray | None = None  # [4, F] int64: its global position (-1: none)

    @classmethod
    def empty(cls, F: int, T: int, K: int, gated: bool) -> "LayerState":
        """The state of a layer that has seen nothing."""
        signs = {"sign_count": np.zeros((N_CASES, F), np.int64),
                 "sign_top_val": np.full((N_CASES, F), -np.inf, np.float32),
                 "sign_top_pos": np.full((N_CASES, F), -1, np.int64)} if gated else {}
        return cls(np.zeros(F, np.int64), np.zeros((T, F), np.int32), np.zeros(F), np.zeros(F, np.int64), np.zeros(F),
                   np.full(F, -np.inf, np.float32), np.zeros(F), np.full((K, F), -np.inf, np.float32),
                   np.full((K, F), -1, np.int64), np.full((K, CONTEXT_WIDTH, F), np.nan, np.float16),
                   np.zeros(F, np.int8), [np.zeros(0, np.int64)] * F, np.zeros((HIST_BINS, F), np.int32), **signs)


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
        hist_edges: np.ndarray,
        gated: bool = False,
        sync_free: bool | None = None,
        fused: FusedUpdate | None = None,
    ):
        """`hist_edges` [B + 1]: the layer's histogram bins; `gated`: the FFN is h = act(gate) * up, and
        `update` gets up too (sign cases); `sync_free` (default: on any device but the CPU) picks the
        fixed-size, branch-free steps; the tests run both paths on the CPU. `fused`: the compiled dense
        update shared by the pass's layers (core.model.fused), None for the eager steps only."""
        F, T = n_neurons, seq_len
        self.rule, self.tau = rule, float(tau)
        self.device = torch.device(device)
        self.sync_free = self.device.type != "cpu" if sync_free is None else sync_free
        self.n_neurons, self.seq_len = F, T
        kw = {"device": self.device}
        self.act_count = torch.zeros(F, dtype=torch.int64, **kw)
        self.pos_count = torch.zeros(T, F, dtype=torch.int32, **kw)
        # float64 keeps 20M-token sums exact enough; MPS has no float64
        sum_dtype = torch.float32 if self.device.type == "mps" else torch.float64
        self.act_sum = torch.zeros(F, dtype=sum_dtype, **kw)
        self.act_count_pos = torch.zeros(F, dtype=torch.int64, **kw)
        self.act_sum_pos = torch.zeros(F, dtype=sum_dtype, **kw)
        self.act_max = torch.full((F,), float("-inf"), dtype=torch.float32, **kw)
        self.h_sum = torch.zeros(F, dtype=sum_dtype, **kw)
        self.top = TopContexts(F, top_k, self.device, self.sync_free)
        self.events = EventSample(F, events_cap, self.device, self.sync_free)
        self.histogram = FiringHistogram(F, hist_edges, self.device)
        self.signs = SignCases(F, self.device) if gated else None
        self.fused = fused  # the compiled dense update the pass's layers share (None: eager throughout)
        self._tau_key, self._tau_t, self._tau_h = None, None, self.tau

    # ---- the per-batch update ------------------------------------------------------------------
    @torch.no_grad()
    def update(self, h: torch.Tensor, batch: BatchIndex, up: torch.Tensor | None = None) -> None:
        """Add one batch of activations h [B, T, F] (the input of the FFN output projection) and, for a
        gated FFN, the up projection's output up [B, T, F]: on the CPU by the one-pass kernel
        (core.model.native), elsewhere with the dense statistics compiled in one function
        (core.model.fused), where `fused` runs this batch; else by the eager steps below."""
        tau = self._tau_tensor(h)
        if self.fused is not None:
            lib = self.fused.native(h, up)
            if lib is not None:
                self._update_native(lib, h, batch, up)
                return
            dense = self.fused(h, tau, self.rule == "abs", self.sync_free)
            if dense is not None:
                self._update_dense(dense, h, batch, up)
                return
        self._update_eager(h, batch, up)

    def _update_dense(self, dense: tuple, h: torch.Tensor, batch: BatchIndex, up: torch.Tensor | None) -> None:
        """Add `fused.dense_stats`'s statistics of h; the event sample, histogram and sign cases from its mask."""
        T = h.shape[1]
        fired, per_pos, count_pos, sum_pos, sum_fired, h_sum, seq_max, seq_arg = dense
        self.pos_count[:T] += per_pos
        self.act_count += per_pos.sum(0)
        self.act_count_pos += count_pos
        self.act_sum_pos += sum_pos.to(self.act_sum.dtype)
        self.act_sum += sum_fired.to(self.act_sum.dtype)
        self.h_sum += h_sum.to(self.h_sum.dtype)
        self.act_max = torch.maximum(self.act_max, seq_max.amax(0))
        self.top.update(h, self.rule, seq_max, batch.positions, seq_arg)
        self._add_sampled(h, fired, batch, up)

    def _update_native(self, lib, h: torch.Tensor, batch: BatchIndex, up: torch.Tensor | None) -> None:
        """The CPU's one pass (cpu_update.c): every count, sum, histogram bin, event, sign case and top
        context added in place."""
        B, T, F = h.shape
        seq_max = torch.empty(B, F, dtype=torch.float32)
        seq_arg = torch.empty(B, F, dtype=torch.int64)
        signs, events, top = self.signs, self.events, self.top
        case_val = torch.empty(N_CASES, F, dtype=torch.float32) if signs is not None else None
        case_row = torch.empty(N_CASES, F, dtype=torch.int64) if signs is not None else None
        native.update(
            lib, h, up if signs is not None else None, self._tau_h, self.rule == "abs", events.cap,
            self.histogram.n_bins, top.top_k, CONTEXT_WIDTH, CONTEXT_LEFT,
            pos_count=self.pos_count, act_count=self.act_count, count_pos=self.act_count_pos, sum_fired=self.act_sum,
            sum_pos=self.act_sum_pos, h_sum=self.h_sum, seq_max=seq_max, seq_arg=seq_arg,
            bin_steps=self.histogram.steps, bin_upper=self.histogram.upper, hist=self.histogram.count,
            levels=batch.levels, positions=batch.positions, level=events.level, fill=events.fill, ev_pos=events.ev_pos,
            ev_z=events.ev_z, level_hist=events.level_hist, sign_count=None if signs is None else signs.sign_count,
            sign_val=case_val, sign_row=case_row, top_val=top.top_val, top_pos=top.top_pos, ctx_val=top.ctx_val)
        self.act_max = torch.maximum(self.act_max, seq_max.amax(0))
        if signs is not None:
            signs.keep_stronger(case_val, batch.positions.index_select(0, case_row.clamp_min(0).view(-1)).view(N_CASES, F))

    def _mask(self, h: torch.Tensor, scratch: Scratch) -> tuple[torch.Tensor, torch.Tensor]:
        """The firing value (|h| or h) and the firing mask [B, T, F], in the model's own dtype (a float32
        copy of a bf16 batch would be the costliest step on a GPU), into the device's work buffers."""
        value = firing_value(h, self.rule, out=scratch.like("value", h) if self.rule == "abs" else None)
        return value, torch.gt(value, self._tau_h, out=scratch.like("fired", h, torch.bool))

    def _update_eager(self, h: torch.Tensor, batch: BatchIndex, up: torch.Tensor | None) -> None:
        """The reference update, a step at a time (the CPU's few-firings path lists the firings once)."""
        B, T, F = h.shape
        value, fired = self._mask(h, batch.scratch)
        mask = fired.view(B * T, F)
        # on the CPU, with no device to wait for, the firings are listed once: the histogram and the sign
        # cases read them, and when few fire (under 1/SPARSE_BATCH) so do the counts, sums and events
        firings = None if self.sync_free else Firings(mask)
        few = firings if firings is not None and few_fire(len(firings), mask.numel()) else None
        self._add_firings(h, value, fired, few, batch.scratch)
        self.h_sum += self._sum_tokens(h)
        seq_max = value.amax(dim=1).float()  # [B, F]: each sequence's best token
        self.act_max = torch.maximum(self.act_max, seq_max.amax(0))
        self.top.update(h, self.rule, seq_max, batch.positions, value.argmax(dim=1) if self.sync_free else None)
        self._add_sampled(h, fired, batch, up, firings, value)

    def _add_sampled(self, h, fired, batch: BatchIndex, up, firings: Firings | None = None,
                     value: torch.Tensor | None = None) -> None:
        """The event sample, the histogram and the sign cases, from the firing mask `fired` [B, T, F].
        On the CPU from its firings listed once (`firings`, listed here when not given; when few fire,
        the event sample takes them too); on other devices without listing them (the sign cases from the
        firing values `value`, computed here when not given)."""
        B, T, F = h.shape
        mask = fired.view(B * T, F)
        if firings is None and not self.sync_free:
            firings = Firings(mask)
        few = firings if firings is not None and few_fire(len(firings), mask.numel()) else None
        self.events.update(mask, batch, few)
        if firings is None:
            self.histogram.add_dense(h, fired)
            if self.signs is not None:
                self.signs.add_dense(h, up, firing_value(h, self.rule) if value is None else value, fired, batch)
            return
        h_fired = firings.of(h)
        self.histogram.add(h_fired, firings.neuron)
        if self.signs is not None:
            self.signs.add(h_fired, firings.of(up), firings.neuron, batch.positions.index_select(0, firings.token))

    def _tau_tensor(self, h: torch.Tensor) -> torch.Tensor:
        """tau as a 0-d float32 tensor on h's device, rounded to h's dtype first (so the compiled float32
        comparison is the eager one in h's dtype), made once per dtype; `_tau_h` is the same number for
        the eager steps (threshold() compares with an unrounded tau, which would sum a bf16 h equal to
        tau's rounding that gt() does not count)."""
        key = (h.dtype, h.device)
        if self._tau_key != key:
            self._tau_key = key
            self._tau_t = torch.tensor(self.tau, dtype=h.dtype, device=h.device).float()
            self._tau_h = float(self._tau_t)
        return self._tau_t

    def _add_firings(self, h, value, fired, few: Firings | None, scratch: Scratch) -> None:
        """Counts per position and signed sums of this batch, from the listed firings (`few`) when given."""
        B, T, F = h.shape
        if few is not None:
            token, neuron = few.token, few.neuron
            per_pos = torch.bincount((token % T) * F + neuron, minlength=T * F).view(T, F)
            self.pos_count[:T] += per_pos.to(torch.int32)
            self.act_count += per_pos.sum(0)
            hv = few.of(h).to(self.act_sum.dtype)
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
        tau = self._tau_h
        positive = self._sum_tokens(torch.nn.functional.threshold(h, tau, 0.0))
        self.act_sum_pos += positive
        if self.rule == "abs":
            self.act_sum += 2 * positive - self._sum_tokens(torch.nn.functional.threshold(value, tau, 0.0))
            up = torch.gt(h, tau, out=scratch.like("positive", h, torch.bool))
            self.act_count_pos += up.view(B * T, F).view(torch.uint8).sum(0, dtype=torch.int64)
        else:  # relu: every firing is positive
            self.act_sum += positive
            self.act_count_pos += per_pos.sum(0)

    def _sum_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, F] -> [F] in the accumulator's dtype, converting only the [T, F] partial sums."""
        return x.sum(0, dtype=torch.float32).sum(0, dtype=self.act_sum.dtype)

    # ---- host round trip (checkpoints, merging) ------------------------------------------------
    def snapshot(self, into: dict | None = None) -> dict:
        """Host copies of every tensor, into the arrays of `into` (this layer's previous snapshot) where
        they fit: a checkpoint's one device-to-host copy, all the pass waits for; `state_of` makes the
        LayerState from it (listing the events: work for the checkpoint's writer, off the pass)."""
        into = into or {}
        raw = {"counters": host_copies(self, COUNTERS, into.get("counters"))}
        for key, part in self._parts().items():
            raw[key] = part.snapshot(into.get(key))
        return raw

    @staticmethod
    def state_of(raw: dict) -> LayerState:
        """The LayerState of a `snapshot` (sums widened to float64)."""
        fields = dict(raw["counters"])
        for name in ("act_sum", "act_sum_pos", "h_sum"):
            fields[name] = fields[name].astype(np.float64, copy=False)
        for key, part in PARTS.items():
            if key in raw:
                fields.update(part.state_of(raw[key]))
        return LayerState(**fields)

    def state(self) -> LayerState:
        """Copy to the host: the one sync, done only at checkpoints and at the end."""
        return self.state_of(self.snapshot())

    def _parts(self) -> dict:
        """The parts with a state of their own: top-K contexts, events, histogram (and sign cases)."""
        parts = {"top": self.top, "events": self.events, "histogram": self.histogram}
        return parts | ({"signs": self.signs} if self.signs is not None else {})

    def load(self, st: LayerState) -> None:
        """Restore from a checkpoint (resume): the inverse of `state`."""
        restore(self, st, COUNTERS)
        for part in self._parts().values():
            part.load(st)


PARTS = {"top": TopContexts, "events": EventSample, "histogram": FiringHistogram, "signs": SignCases}
