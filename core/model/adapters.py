"""Where each architecture keeps its FFN neurons, and what "fired" means for it (docs/design.md).

A neuron is one input coordinate of the FFN's output projection, so one forward pre-hook on that module
sees every neuron of a layer whatever the activation (ReLU, GELU, SiLU-gated, GELU-gated). The table
maps `config.model_type` to the list of decoder layers, the output projection inside a layer and the
firing rule: "relu" (fired iff h > tau, tau = 0 by default: the paper's signal for OPT) or "abs"
(fired iff |h| > tau, tau calibrated per layer: non-ReLU activations are never exactly zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from neuron_tui.core.errors import UsageError


@dataclass(frozen=True)
class Adapter:
    layers: tuple[str, ...]  # candidate attribute paths of the decoder layer list, first found wins
    out_proj: str  # attribute path of the FFN output projection inside one layer
    rule: str  # "relu" or "abs"


_LLAMA_LIKE = Adapter(("model.layers", "model.language_model.layers"), "mlp.down_proj", "abs")

ADAPTERS: dict[str, Adapter] = {
    "opt": Adapter(("model.decoder.layers",), "fc2", "relu"),
    "gpt2": Adapter(("transformer.h",), "mlp.c_proj", "abs"),
    "gpt_neox": Adapter(("gpt_neox.layers",), "mlp.dense_4h_to_h", "abs"),
    **{
        name: _LLAMA_LIKE
        for name in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text")
    },
}


def adapter_for(model_type: str) -> Adapter:
    """The adapter of an architecture; an unknown one is a one-line error naming the supported ones."""
    try:
        return ADAPTERS[model_type]
    except KeyError:
        raise UsageError(
            f"unsupported architecture {model_type!r}; supported: {', '.join(sorted(ADAPTERS))}"
        ) from None


def _get(obj: object, path: str) -> object:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers, in depth order."""
    adapter = adapter_for(model.config.model_type)
    for path in adapter.layers:
        try:
            return list(_get(model, path))
        except AttributeError:
            continue
    raise UsageError(f"cannot find the decoder layers of this {model.config.model_type} model ({adapter.layers})")


def ffn_out_projections(model: nn.Module) -> list[nn.Module]:
    """The output projection module of every layer, in depth order."""
    out_proj = adapter_for(model.config.model_type).out_proj
    return [_get(layer, out_proj) for layer in decoder_layers(model)]


def n_neurons(out_proj: nn.Module) -> int:
    """F: the input width of the output projection (nn.Linear, or GPT-2's transposed Conv1D)."""
    if isinstance(out_proj, nn.Linear):
        return out_proj.in_features
    return out_proj.weight.shape[0]  # transformers' Conv1D stores weight as [in, out]


def output_vectors(out_proj: nn.Module) -> torch.Tensor:
    """[F, d]: row i is what neuron i adds to the residual stream per unit of activation."""
    weight = out_proj.weight
    return weight.t() if isinstance(out_proj, nn.Linear) else weight


def project_out(model: nn.Module) -> nn.Module | None:
    """OPT-350m maps its hidden size to the embedding size after the last layer (`project_out`)."""
    decoder = getattr(getattr(model, "model", None), "decoder", None)
    return getattr(decoder, "project_out", None)
