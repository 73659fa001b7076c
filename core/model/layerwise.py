"""The paper's layer-by-layer schedule, for a model larger than its GPU's memory (`--layer-by-layer`).

accelerate's offload (`--device-map auto`) streams the weights of every offloaded layer to the GPU for
every batch: OPT-66b in bf16 (132 GB) on one 80 GB GPU moves tens of GB over PCIe per 16k-token batch,
several times the time of its compute. Here the decoder layers' weights stay in host memory and the
other modules (embeddings, final norm, LM head) live on the device. A chunk of many batches is
embedded, then each layer in turn is put on the device, runs every batch of the chunk (the hooks of
the pass count them as usual, one batch at a time) and leaves the device again; the chunk's hidden
states stay on the device between layers. Every weight crosses PCIe once per chunk: at 1M tokens a
chunk, 132 GB per million tokens for OPT-66b, a few percent of its compute.

The paper (section 2) runs one layer at a time on the GPU; keeping the hidden states of the whole
corpus in host memory or on disk between layers would move each weight exactly once. Keeping a chunk's hidden states on the device instead trades
weight transfers (132 GB per chunk for OPT-66b) for hidden-state transfers (2 x tokens x d x 2 bytes
per layer, 2.4 TB per million tokens over 64 layers): device-resident chunks of a million tokens move
some 18 times less, and need no host memory or disk for the corpus.

Each layer is called with exactly the arguments the model's own forward gives it (attention masks,
position ids, rotary embeddings, Gemma 2/3's per-layer sliding-window masks): they are recorded by a
forward of the model whose layers are identity stubs (an embedding lookup's cost), once per batch
shape, since packed sequences have no padding and these arguments depend on the shape alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from . import schedules
from .adapters import decoder_layers

# tokens per chunk: hidden states of 1M tokens of OPT-66b (d = 9,216, bf16) take 19 GB of the device
GPU_CHUNK_TOKENS = 1 << 20
CPU_CHUNK_BATCHES = 4  # on the CPU the schedule gains nothing; small chunks keep checkpoints frequent


class LayerByLayer:
    """A pass schedule (see `schedules.BatchByBatch`): `runner(batches, before, advance)` runs a chunk of
    batches through the model one layer at a time, calling before(i) ahead of batch i in every layer
    and advance(tokens) as the layers complete."""

    def __init__(self, model: nn.Module, device: str | torch.device, chunk_batches: int):
        self.device = torch.device(device)
        self.chunk_batches = max(1, int(chunk_batches))
        self.layers = decoder_layers(model)
        inside = {id(m) for layer in self.layers for m in layer.modules()}
        place((m for m in model.modules() if id(m) not in inside), self.device)  # for the whole run
        self._forward = schedules.forward_fn(model)  # the pass's own forward call: same inputs, same hooks
        self._arguments: dict[tuple[int, ...], list[tuple[tuple, dict]]] = {}

    @torch.inference_mode()
    def __call__(self, batches: list[np.ndarray], before: Callable[[int], None], advance: Callable[[int], None]) -> None:
        hidden = [self._embed(ids) for ids in batches]
        arguments = [self._arguments[ids.shape] for ids in batches]
        tokens, n_layers = sum(ids.size for ids in batches), len(self.layers)
        for index, layer in enumerate(self.layers):
            with on_device(layer, self.device):
                for i, h in enumerate(hidden):
                    before(i)
                    args, kwargs = arguments[i][index]
                    out = layer(h, *args, **kwargs)
                    hidden[i] = out[0] if isinstance(out, tuple) else out
            advance(tokens * (index + 1) // n_layers - tokens * index // n_layers)

    def _embed(self, ids: np.ndarray) -> torch.Tensor:
        """The input of the first layer for one batch; every layer's arguments for its shape, recorded
        the first time the shape comes."""
        record = ids.shape not in self._arguments
        first: list[torch.Tensor] = []
        calls: list[tuple[tuple, dict]] = []

        def stub(index: int):
            def forward(hidden_states, *args, **kwargs):
                if index == 0:
                    first.append(hidden_states)
                if record:
                    calls.append((args, kwargs))
                return hidden_states

            return forward

        for index, layer in enumerate(self.layers):
            layer.forward = stub(index)  # an instance attribute shadows the class's forward
        try:
            self._forward(ids)
        finally:
            for layer in self.layers:
                del layer.forward
        if record:
            self._arguments[ids.shape] = calls
        return first[0]


def chunk_batches(device: str | torch.device, batch_tokens: int, chunk_tokens: int | None) -> int:
    """Batches per chunk: `chunk_tokens` (default 1M tokens on an accelerator) in whole batches."""
    if chunk_tokens is None:
        return CPU_CHUNK_BATCHES if torch.device(device).type == "cpu" else max(1, GPU_CHUNK_TOKENS // batch_tokens)
    return max(1, chunk_tokens // batch_tokens)


@contextmanager
def on_device(module: nn.Module, device: torch.device):
    """`module`'s weights on `device` for the block; afterwards the very host tensors are put back, so
    nothing is ever copied back from the device."""
    home = place(module.modules(), device)
    try:
        yield
    finally:
        for store, name, tensor in home:
            store[name] = tensor


def place(modules: Iterable[nn.Module], device: torch.device) -> list[tuple[dict, str, torch.Tensor]]:
    """Give the parameters and buffers that `modules` hold themselves copies on `device` (one copy per
    tensor, so tied weights stay tied); returns (store, name, original) to put them back."""
    copies: dict[int, torch.Tensor] = {}
    home = []
    for module in modules:
        for store in (module._parameters, module._buffers):
            for name, tensor in list(store.items()):
                if tensor is None:
                    continue
                if id(tensor) not in copies:
                    moved = tensor.data.to(device, non_blocking=True)
                    copies[id(tensor)] = nn.Parameter(moved, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else moved
                home.append((store, name, tensor))
                store[name] = copies[id(tensor)]
    return home
