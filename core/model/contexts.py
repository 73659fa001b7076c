"""Each neuron's top-K activating contexts, at most one per sequence, with the neuron's own signed h
around each, on the device.

Each sequence's strongest position (by the firing value: h, or |h| under the abs rule) competes for the
K slots, so the contexts shown for a neuron are K different texts rather than K neighbouring tokens of
one text. With each kept position goes the neuron's *signed* h at the W = CONTEXT_LEFT + 1 +
CONTEXT_RIGHT positions around it (the read side's context window, core.read.queries; NaN where the
window runs past the sequence), so the contexts keep their sign (an abs-rule value is |h|: its sign
is the window's centre) and an export has per-token activations of every context. The window is
gathered only for the (sequence, neuron) pairs that enter the top-K in a batch, and moves with the
value through every merge: float16, 2KW bytes a neuron (OPT-66b: 272 bytes of its 10 KB).
"""

from __future__ import annotations

import torch

from neuron_tui.core.read.queries import CONTEXT_LEFT, CONTEXT_RIGHT

from .batches import HeldTensors, filled, firing_value

CONTEXT_WIDTH = CONTEXT_LEFT + 1 + CONTEXT_RIGHT


class TopContexts(HeldTensors):
    """The running top-K of one layer's neurons: `top_val` [K, F] (descending, -inf padded), `top_pos`
    [K, F] (global positions g = seq * T + t, -1 padded) and `ctx_val` [K, W, F] (float16)."""

    FIELDS = ("top_val", "top_pos", "ctx_val")  # the tensors held, named as LayerState's fields

    def __init__(self, n_neurons: int, top_k: int, device: torch.device, sync_free: bool):
        K, F, W = top_k, n_neurons, CONTEXT_WIDTH
        self.top_k, self.sync_free = K, sync_free
        self.top_val = torch.full((K, F), float("-inf"), dtype=torch.float32, device=device)
        self.top_pos = torch.full((K, F), -1, dtype=torch.int64, device=device)
        # neuron-major on the CPU (batches.filled): the C kernel's merge moves a neuron's slots with their
        # windows, which then touch few cache lines (12 layers of a random OPT-125m shape: batches 3 to 15
        # of a run about 15% faster)
        self.ctx_val = filled((K, W, F), float("nan"), torch.float16, device, neuron_major=not sync_free)
        self._offsets = torch.arange(-CONTEXT_LEFT, CONTEXT_RIGHT + 1, device=device)[None, :, None]  # [1, W, 1]

    @staticmethod
    def device_bytes(n_neurons: int, top_k: int) -> int:
        """Per neuron: values (4) and positions (8) of K slots, and their windows (2W each)."""
        return n_neurons * top_k * (12 + 2 * CONTEXT_WIDTH) + 8 * CONTEXT_WIDTH

    def update(self, h: torch.Tensor, rule: str, seq_max: torch.Tensor, positions: torch.Tensor,
               seq_arg: torch.Tensor | None = None) -> None:
        """Merge each sequence's strongest position of this batch (h [B, T, F]; its firing value is h, or
        |h| under the abs `rule`; seq_max [B, F]: the value's maximum over positions, float32; positions
        [B * T]; seq_arg [B, F]: the maximum's first position, when already known) into the running
        top-K."""
        B, T, _ = h.shape
        if self.sync_free:
            seq_arg = firing_value(h, rule).argmax(dim=1) if seq_arg is None else seq_arg
            self._merge(h, seq_max, positions, seq_arg)
            return
        # the CPU without its kernel (which merges in its pass, cpu_update.c): only the neurons where a
        # value above the K-th enters change (an equal one comes later: the earlier stays), after
        # warm-up a few, so only their columns are merged
        enters = seq_max > self.top_val[-1]
        cols = torch.nonzero(enters.any(0)).squeeze(1)
        if not cols.numel():  # the common case after warm-up: nothing to merge
            return
        if seq_arg is None:  # the compiled statistics find it; the eager update here, where needed
            seq_arg = _argmax_where(h, rule, enters)
        if cols.numel() == h.shape[2]:
            self._merge(h, seq_max, positions, seq_arg)
            return
        held = (self.top_val, self.top_pos, self.ctx_val)
        self.top_val, self.top_pos = self.top_val.index_select(1, cols), self.top_pos.index_select(1, cols)
        self.ctx_val = self.ctx_val.index_select(2, cols)
        self._merge(h, seq_max.index_select(1, cols), positions, seq_arg.index_select(1, cols), cols)
        merged = (self.top_val, self.top_pos, self.ctx_val)
        self.top_val, self.top_pos, self.ctx_val = (full.index_copy_(dim, cols, part)
                                                    for full, part, dim in zip(held, merged, (1, 1, 2)))

    def _merge(self, h: torch.Tensor, seq_max: torch.Tensor, positions: torch.Tensor, seq_arg: torch.Tensor,
               cols: torch.Tensor | None = None) -> None:
        """Merge each sequence's strongest position into the top-K of the neurons `cols` (None: all) of h
        [B, T, F]; seq_max and seq_arg [B, F'] and the held tensors are those neurons' already."""
        B, T, _ = h.shape
        seq_pos = positions.view(B, T).gather(1, seq_arg)  # [B, F']
        cat_v = torch.cat([self.top_val, seq_max])
        cat_p = torch.cat([self.top_pos, seq_pos])
        # a stable sort, not topk: equal values (a repeated context) keep the earlier position, so the
        # result does not depend on batch size, resumes or merges
        order = torch.sort(cat_v, dim=0, descending=True, stable=True).indices[: self.top_k]
        self.top_val, self.top_pos = cat_v.gather(0, order), cat_p.gather(0, order)
        self.ctx_val = self._windows(h, seq_arg, order, cols)

    def _windows(self, h: torch.Tensor, seq_arg: torch.Tensor, order: torch.Tensor, cols: torch.Tensor | None) -> torch.Tensor:
        """The new `ctx_val` of neurons `cols` (None: all) for their merged slots `order` [K, F'] (index < K:
        a kept slot, whose window moves with it; else batch sequence index - K, whose window is gathered
        from h [B, T, F] here, K * W values a neuron whatever the batch size)."""
        B, T, F = h.shape
        K, W, n = self.top_k, CONTEXT_WIDTH, order.shape[1]
        entered = order >= K
        seq = (order - K).clamp_min(0)
        t = seq_arg.gather(0, seq)[:, None, :] + self._offsets  # [K, W, F']
        rows = seq[:, None, :] * T + t.clamp(0, T - 1)
        if cols is None:
            window = h.reshape(B * T, F).gather(0, rows.view(K * W, F))
        else:  # the selected neurons' values straight from h, no copy of their columns
            window = h.reshape(-1).index_select(0, (rows * F + cols).view(-1))
        window = window.view(K, W, n).to(torch.float16).masked_fill((t < 0) | (t >= T), float("nan"))
        kept = self.ctx_val.gather(0, order.clamp_max(K - 1)[:, None, :].expand(K, W, n))
        return torch.where(entered[:, None, :], window, kept)



def _argmax_where(h: torch.Tensor, rule: str, enters: torch.Tensor) -> torch.Tensor:
    """argmax over positions of the firing value only where a sequence enters the top-K (`enters` [B, F];
    few, after warm-up), 0 elsewhere. A full argmax along the middle axis costs ten times the amax on
    the CPU."""
    arg = torch.zeros(enters.shape, dtype=torch.int64)
    b, i = torch.nonzero(enters, as_tuple=True)
    if b.numel():
        arg[b, i] = firing_value(h[b, :, i], rule).argmax(dim=1)
    return arg
