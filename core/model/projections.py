"""FFN updates projected onto the vocabulary (paper, section 4 "N-gram-detecting neurons": the updates
of token detectors; docs/design.md).

Neuron i of a layer adds h_i * w_i to the residual stream, w_i its output vector (row i of
`adapters.output_vectors`: OPT `fc2` column, GPT-2 `c_proj` row, Llama `down_proj` column). Through
OPT-350m's `project_out` (hidden -> embedding size) when the model has one, w_i is mapped into the
embedding space, and its score for vocabulary item v is `U[v] . w_i` with U the unembedding matrix
(`model.get_output_embeddings().weight`, [V, d]). High scores are promoted tokens, the lowest are
suppressed ones: the paper's finding is that token detectors suppress their own trigger tokens.

Cost: one [batch, d] x [d, V] product per batch of neurons on the device of the unembedding, in
float32, plus a top-k and, for the candidate triggers, an exact rank (number of vocabulary items with
a lower score). Only a [batch, V] block of scores exists at a time; nothing of size [F, V] is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack

import numpy as np
import torch
from accelerate.utils import align_module_device
from torch import nn

from neuron_tui.cache import schema

from . import adapters

BLOCK_BYTES = 64 * 2**20  # one [batch, V] float32 score block on the CPU (fits in cache-friendly pieces)
ACCEL_BLOCK_BYTES = 1024 * 2**20  # on an accelerator: bigger blocks, fewer host syncs
_RANK_ROWS = 8  # CPU rank counting: rows per numpy block (keeps the block in cache)


def embeddings_tied(model: nn.Module) -> bool:
    """True when the input and output embeddings are one matrix (shared storage or equal values)."""
    w_in = model.get_input_embeddings().weight
    w_out = model.get_output_embeddings().weight
    if w_in is w_out:
        return True
    if w_in.shape != w_out.shape or w_in.device.type == "meta" or w_out.device.type == "meta":
        return False
    if w_in.device == w_out.device and w_in.data_ptr() == w_out.data_ptr():
        return True
    with torch.no_grad():
        return bool(torch.equal(w_in.to(w_out.device), w_out))


def _to_embedding_space(model: nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """w [B, d_model] (any dtype/device) -> float32 [B, d_embed] on `device`, through project_out."""
    proj = adapters.project_out(model)
    P = None if proj is None else proj.weight.detach().to(device=device, dtype=torch.float32, copy=True)

    def convert(w: torch.Tensor) -> torch.Tensor:
        w = w.detach().to(device=device, dtype=torch.float32)
        # the linear part only: h_i * w_i becomes h_i * (P w_i); a bias would not scale with h_i
        return w if P is None else w @ P.t()

    return convert


def _count_below(scores: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """[B, K] int64: per row, the number of scores strictly below each of K values (exact)."""
    if scores.device.type != "cpu":  # accelerators: a broadcast compare is fast there
        return torch.stack([(scores < values[:, j : j + 1]).sum(1) for j in range(values.shape[1])], 1)
    # CPU: numpy's compare + count_nonzero is ~10x faster than torch's bool reductions, and small
    # row blocks keep the [rows, K, V] comparison in cache
    s, v = scores.numpy(), values.numpy()
    out = np.empty(v.shape, dtype=np.int64)
    for lo in range(0, s.shape[0], _RANK_ROWS):
        hi = lo + _RANK_ROWS
        out[lo:hi] = np.count_nonzero(s[lo:hi, None, :] < v[lo:hi, :, None], axis=-1)
    return torch.from_numpy(out)


class UpdateProjector:
    """The FFN-update projections of one model, layer by layer (`layer`), into the arrays of the
    `projection` group (schema.PROJECTION_DATASETS) for that layer; `attrs` are the group's attributes.

    candidates [F, Kc] (-1 padded; from `triggers.candidate_triggers`, truncated or padded to
    `n_candidates`) are each neuron's candidate trigger tokens: for each, its score, its 0-based rank
    in ascending score order (0 = the most suppressed token; ties count as not below) and, when input
    and output embeddings are untied, the cosine of the output vector with the candidate's *input*
    embedding (NaN if tied). sign [F] of +1/-1 orients each output vector (the sign of the neuron's
    activation when it fires; None: all +1, right for ReLU). batch_size: neurons per score block
    (default: what fits BLOCK_BYTES).
    """

    @torch.no_grad()
    def __init__(self, model: nn.Module, top_k: int = 10, n_candidates: int = 10, batch_size: int | None = None,
                 oriented: bool = False):
        with ExitStack() as loaded:  # the float32 copies below outlive offloaded weights
            for module in (model.get_output_embeddings(), model.get_input_embeddings(), adapters.project_out(model)):
                if module is not None:
                    loaded.enter_context(align_module_device(module))
            unembed = model.get_output_embeddings().weight
            self.device = unembed.device
            self.U = unembed.detach().to(device=self.device, dtype=torch.float32, copy=True)  # [V, d]
            tied = embeddings_tied(model)
            self.E_in = None
            if not tied:
                E_in = model.get_input_embeddings().weight.detach().to(device=self.device, dtype=torch.float32)
                self.E_in = E_in / E_in.norm(dim=1, keepdim=True).clamp_min(1e-12)
            self.to_embed = _to_embedding_space(model, self.device)
        V = self.U.shape[0]
        self.out_projs = adapters.ffn_out_projections(model)
        self.n_neurons = adapters.n_neurons(self.out_projs[0])
        self.k, self.Kc = int(top_k), int(n_candidates)
        if self.k > V:
            raise ValueError(f"top_k={self.k} exceeds the vocabulary size {V}")
        if batch_size is None:
            block = BLOCK_BYTES if self.device.type == "cpu" else ACCEL_BLOCK_BYTES
            batch_size = max(1, min(self.n_neurons, block // (4 * V)))
        self.batch_size = batch_size
        self.attrs = {
            "k": self.k,
            "n_candidates": self.Kc,
            "tied_embeddings": bool(tied),
            "project_out": adapters.project_out(model) is not None,
            "oriented": bool(oriented),  # vectors multiplied by the sign of the firing activation
        }

    @property
    def n_layers(self) -> int:
        return len(self.out_projs)

    @torch.no_grad()
    def layer(self, layer: int, candidates: np.ndarray | None = None, sign: np.ndarray | None = None) -> dict:
        out_proj = self.out_projs[layer]
        F, k, Kc, device = self.n_neurons, self.k, self.Kc, self.device
        if adapters.n_neurons(out_proj) != F:
            raise ValueError(f"layer {layer} has {adapters.n_neurons(out_proj)} neurons, layer 0 has {F}")
        out = {
            "promoted_tok": np.empty((F, k), np.int32),
            "promoted_score": np.empty((F, k), np.float32),
            "suppressed_tok": np.empty((F, k), np.int32),
            "suppressed_score": np.empty((F, k), np.float32),
            "cand_tok": np.full((F, Kc), -1, np.int32),
            "cand_score": np.full((F, Kc), np.nan, np.float32),
            "cand_supp_rank": np.full((F, Kc), -1, np.int32),
            "cand_cos_in": np.full((F, Kc), np.nan, np.float32),
        }
        sign_t = None if sign is None else torch.as_tensor(np.asarray(sign), dtype=torch.float32, device=device)
        cand = None
        if candidates is not None and Kc > 0:
            c = np.asarray(candidates, dtype=np.int64)[:, :Kc]
            cand = np.full((F, Kc), -1, np.int64)
            cand[:, : c.shape[1]] = c
            out["cand_tok"][:] = cand
        with align_module_device(out_proj):  # an offloaded layer's weights are loaded for this loop only
            vectors = adapters.output_vectors(out_proj)
            for lo in range(0, F, self.batch_size):
                hi = min(F, lo + self.batch_size)
                w = self.to_embed(vectors[lo:hi])  # [B, d] float32
                if sign_t is not None:  # linear in w, so orienting after project_out is the same
                    w = w * sign_t[lo:hi, None]
                scores = w @ self.U.t()  # [B, V] float32
                top = scores.topk(k, dim=1)
                bottom = scores.topk(k, dim=1, largest=False)  # ascending: most suppressed first
                out["promoted_tok"][lo:hi] = top.indices.cpu().numpy()
                out["promoted_score"][lo:hi] = top.values.cpu().numpy()
                out["suppressed_tok"][lo:hi] = bottom.indices.cpu().numpy()
                out["suppressed_score"][lo:hi] = bottom.values.cpu().numpy()
                if cand is None:
                    continue
                c = torch.as_tensor(cand[lo:hi], device=device)
                valid = c >= 0
                c0 = c.clamp_min(0)
                cs = scores.gather(1, c0)  # [B, Kc]
                rank = _count_below(scores, cs)
                out["cand_score"][lo:hi] = torch.where(valid, cs, torch.nan).cpu().numpy()
                out["cand_supp_rank"][lo:hi] = torch.where(valid, rank.to(device), -1).cpu().numpy()
                if self.E_in is not None:
                    wn = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
                    cos = torch.einsum("bd,bkd->bk", wn, self.E_in[c0])
                    out["cand_cos_in"][lo:hi] = torch.where(valid, cos, torch.nan).cpu().numpy()
        return out


def write_projection(writer, projector: UpdateProjector, layers, progress=None) -> None:
    """The `projection` group into a summary being written, one layer at a time: `layers` yields
    (candidates [F, Kc], sign [F]) per layer, in order. progress(layer, n_layers) after each."""
    group, L = schema.PROJECTION_GROUP, projector.n_layers
    for layer, (candidates, sign) in enumerate(layers):
        for name, value in projector.layer(layer, candidates, sign).items():
            writer.write_layer(name, layer, value, L, group=group)
        if progress is not None:
            progress(layer + 1, L)
    writer.set_attrs({**projector.attrs, "candidates_complete": True}, group=group)
