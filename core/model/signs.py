"""The sign cases of a gated neuron's firings (GLUScope, arXiv 2602.23826), on the device.

In a gated FFN, h = act(gate) * up (Llama, Mistral, Qwen, Gemma, SmolLM2), so a firing (|h| > tau) comes
from one of four sign combinations of (act(gate), up), in the order of schema.SIGN_CASES: (+,+), (+,-),
(-,+), (-,-). (+,+) and (-,-) fire positive, the other two negative, and two firings of one sign but
different cases are two different mechanisms. The up projection's output is hooked next to h and read
only where the neuron fired; act(gate) needs no hook of its own, since sign(act(gate)) = sign(h) *
sign(up) wherever h is not 0, which holds for every firing. Per neuron and case: the exact count of
firings (`sign_count`, the four sum to act_count) and the strongest firing, |h| (`sign_top_val`, -inf:
none) and its global position (`sign_top_pos`, -1: none), ties to the earlier position, so the result is
the same for any batch size, resume point or sharding.
"""

from __future__ import annotations

import torch

from neuron_tui.cache.schema import SIGN_CASES

from .batches import BatchIndex, HeldTensors, Scratch

N_CASES = len(SIGN_CASES)
NO_POSITION = torch.iinfo(torch.int64).max  # a group's first position before any is seen


class SignCases(HeldTensors):
    """`sign_count` [4, F] int64, `sign_top_val` [4, F] float32 and `sign_top_pos` [4, F] int64 of one layer."""

    FIELDS = ("sign_count", "sign_top_val", "sign_top_pos")  # the tensors held, named as LayerState's fields

    def __init__(self, n_neurons: int, device: torch.device):
        self.n_neurons = n_neurons
        self.sign_count = torch.zeros(N_CASES, n_neurons, dtype=torch.int64, device=device)
        self.sign_top_val = torch.full((N_CASES, n_neurons), float("-inf"), dtype=torch.float32, device=device)
        self.sign_top_pos = torch.full((N_CASES, n_neurons), -1, dtype=torch.int64, device=device)
        self._none = torch.tensor(float("-inf"), device=device)  # the strength of a token outside a case

    @staticmethod
    def device_bytes(n_neurons: int) -> int:
        """Per neuron and case: the count (8), the strongest |h| (4) and its position (8)."""
        return n_neurons * N_CASES * 20 + 4

    def add(self, h: torch.Tensor, up: torch.Tensor, neuron: torch.Tensor, positions: torch.Tensor) -> None:
        """Add firings given as a list: their h, the up projection there, their neurons and global
        positions (all [n])."""
        up_neg = up < 0
        gate_neg = (h > 0) == up_neg  # sign(act(gate)) = sign(h) * sign(up)
        group = (gate_neg.long() * 2 + up_neg.long()) * self.n_neurons + neuron  # case-major, as SIGN_CASES
        size = N_CASES * self.n_neurons
        self.sign_count += torch.bincount(group, minlength=size).view(N_CASES, -1)
        strength = h.abs().float()
        best = torch.full((size,), float("-inf"), device=h.device).scatter_reduce(0, group, strength, "amax")
        at_best = strength == best[group]
        first = torch.full((size,), NO_POSITION, device=h.device).scatter_reduce(
            0, group[at_best], positions[at_best], "amin")
        self.keep_stronger(best.view(N_CASES, -1), first.view(N_CASES, -1))

    def add_dense(self, h: torch.Tensor, up: torch.Tensor, value: torch.Tensor, fired: torch.Tensor,
                  batch: BatchIndex) -> None:
        """Add a batch's firings from h, up, |h| (`value`) and the firing mask ([B, T, F]) without listing
        them (no host sync): each case's firings as a mask, counted, and its strongest value by a
        maximum over the batch (the first maximal index: the earlier position)."""
        scratch: Scratch = batch.scratch
        rows = fired.numel() // self.n_neurons
        up_neg = torch.lt(up, 0, out=scratch.like("up_neg", up, torch.bool))
        up_pos = torch.logical_not(up_neg, out=scratch.like("up_pos", up, torch.bool))
        h_pos = torch.gt(h, 0, out=scratch.like("h_pos", h, torch.bool)).logical_and_(fired)
        h_neg = torch.logical_xor(fired, h_pos, out=scratch.like("h_neg", h, torch.bool))
        case = scratch.like("case", h, torch.bool)
        strength = scratch.like("case_value", value)
        best, first = [], []
        # (act(gate), up) = (+,+): h > 0, up > 0; (+,-): h < 0, up < 0; (-,+): h < 0, up > 0; (-,-): h > 0, up < 0
        for h_side, up_side in ((h_pos, up_pos), (h_neg, up_neg), (h_neg, up_pos), (h_pos, up_neg)):
            torch.logical_and(h_side, up_side, out=case)
            self.sign_count[len(best)] += case.view(rows, -1).view(torch.uint8).sum(0, dtype=torch.int64)
            top, arg = torch.where(case, value, self._none, out=strength).view(rows, -1).max(0)
            best.append(top.float())
            first.append(batch.positions[arg])
        self.keep_stronger(torch.stack(best), torch.stack(first))

    def keep_stronger(self, val: torch.Tensor, pos: torch.Tensor) -> None:
        """Take a batch's strongest firing per case ([4, F]; -inf: none) where it beats the kept one:
        a larger |h|, or an equal one at an earlier position."""
        kept_val, kept_pos = self.sign_top_val, self.sign_top_pos
        better = (val > kept_val) | ((val == kept_val) & (pos < kept_pos))
        self.sign_top_val = torch.where(better, val, kept_val)
        self.sign_top_pos = torch.where(better, pos, kept_pos)
