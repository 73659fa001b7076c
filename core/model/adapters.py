"""Where each architecture keeps its FFN neurons, and what "fired" means for it (docs/design.md).

A neuron is one input coordinate of the FFN's output projection, so one forward pre-hook on that module
sees every neuron of a layer whatever the activation (ReLU, GELU, SiLU-gated, GELU-gated). The table
maps `config.model_type` to the list of decoder layers, the output projection inside a layer, the
firing rule and, for the projection group's weight statistics, the FFN's input projections and the norm
before the unembedding. The rule: "relu" (fired iff h > tau, tau = 0 by default: the paper's signal for
OPT) or "abs" (fired iff |h| > tau, tau calibrated per layer: non-ReLU activations are never exactly zero).
A gated FFN's up projection (its second input projection) is hooked by the pass too: the sign cases of
its firings (core.model.signs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from neuron_tui.cache.schema import GATED_ARCHITECTURES
from neuron_tui.core.errors import UsageError


@dataclass(frozen=True)
class Adapter:
    layers: tuple[str, ...]  # candidate attribute paths of the decoder layer list, first found wins
    out_proj: str  # attribute path of the FFN output projection inside one layer
    rule: str  # "relu" or "abs"
    inputs: tuple[str, ...] = ()  # the FFN's input projections inside one layer (gated: gate and up)
    final_norm: tuple[str, ...] = ()  # candidate paths of the norm before the unembedding, first found wins

    @property
    def up_proj(self) -> str | None:
        """A gated FFN's up projection (h = act(gate) * up), whose output the pass hooks for the sign
        cases: the second of its input projections; None for an ungated FFN (one input projection)."""
        return self.inputs[1] if len(self.inputs) == 2 else None


_LLAMA_LIKE = Adapter(("model.layers", "model.language_model.layers"), "mlp.down_proj", "abs",
                      ("mlp.gate_proj", "mlp.up_proj"), ("model.norm", "model.language_model.norm"))

ADAPTERS: dict[str, Adapter] = {
    "opt": Adapter(("model.decoder.layers",), "fc2", "relu", ("fc1",), ("model.decoder.final_layer_norm",)),
    "gpt2": Adapter(("transformer.h",), "mlp.c_proj", "abs", ("mlp.c_fc",), ("transformer.ln_f",)),
    "gpt_neox": Adapter(("gpt_neox.layers",), "mlp.dense_4h_to_h", "abs", ("mlp.dense_h_to_4h",),
                        ("gpt_neox.final_layer_norm",)),
    **{name: _LLAMA_LIKE for name in GATED_ARCHITECTURES},  # every gated FFN supported is laid out as Llama's
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


def ffn_up_projections(model: nn.Module) -> list[nn.Module] | None:
    """The up projection module of every layer of a gated FFN, in depth order; None for an ungated one."""
    up_proj = adapter_for(model.config.model_type).up_proj
    return None if up_proj is None else [_get(layer, up_proj) for layer in decoder_layers(model)]


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


def input_projections(model: nn.Module, layer: int) -> list[nn.Module]:
    """The FFN's input projection modules of `layer` (a gated FFN: gate, then up)."""
    paths = adapter_for(model.config.model_type).inputs
    if not paths:
        raise UsageError(f"no input projections are known for {model.config.model_type} models")
    return [_get(decoder_layers(model)[layer], path) for path in paths]


def input_norms(modules: list[nn.Module]) -> torch.Tensor:
    """[F] float32: each neuron's input-side norm sqrt(sum over the input projections of ||w_in||^2) (a
    gated FFN: sqrt(||w_gate||^2 + ||w_up||^2)), so ||w_in||^2 + ||w_out||^2, the weight-decay norm of
    Gurnee et al. 2024 ("Universal Neurons in GPT2 Language Models"), is known. Raw parameters, the
    norms weight decay acts on (no layer norm folded in)."""
    total = None
    for module in modules:
        weight = module.weight.detach().float()
        sq = weight.pow(2).sum(1 if isinstance(module, nn.Linear) else 0)  # Linear [F, d]; GPT-2's Conv1D [d, F]
        total = sq if total is None else total + sq.to(total.device)
    return total.sqrt()


def final_norm(model: nn.Module) -> nn.Module | None:
    """The norm applied to the residual stream before the unembedding (LayerNorm or RMSNorm), None when
    the model has none (OPT-350m, post-LN, whose layers end in their own LayerNorm)."""
    for path in adapter_for(model.config.model_type).final_norm:
        try:
            module = _get(model, path)
        except AttributeError:
            continue
        if module is not None:
            return module
    return None
