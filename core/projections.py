"""FFN updates projected onto the vocabulary (paper, section 4 "N-gram-detecting neurons": the updates
of token detectors; DESIGN sections 5 and 7).

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

from collections.abc import Callable, Sequence
from contextlib import ExitStack

import numpy as np
import torch
from accelerate.utils import align_module_device
from torch import nn

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


@torch.no_grad()
def project_updates(
    model: nn.Module,
    top_k: int = 10,
    n_candidates: int = 10,
    candidates: Sequence[np.ndarray] | None = None,
    signs: Sequence[np.ndarray] | None = None,
    *,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict, dict]:
    """(attrs, arrays) of the `projection` group (schema.PROJECTION_DATASETS), all layers.

    candidates: one [F, Kc] int array per layer of candidate trigger tokens (-1 padded; from
    `triggers.candidate_triggers`), truncated or padded to `n_candidates`; None gives no candidates
    (cand_tok all -1). For each candidate: its score, its 0-based rank in ascending score order
    (0 = the most suppressed token; ties count as not below) and, when input and output embeddings
    are untied, the cosine of the output vector with the candidate's *input* embedding (NaN if tied).
    signs: one [F] array of +1/-1 per layer orienting each output vector (the sign of the neuron's
    activation when it fires; None: all +1, right for ReLU). batch_size: neurons per score block
    (default: what fits BLOCK_BYTES). progress(layer, n_layers) is called after each layer.
    """
    with ExitStack() as loaded:  # the float32 copies below outlive offloaded weights
        for module in (model.get_output_embeddings(), model.get_input_embeddings(), adapters.project_out(model)):
            if module is not None:
                loaded.enter_context(align_module_device(module))
        unembed = model.get_output_embeddings().weight
        device = unembed.device
        U = unembed.detach().to(device=device, dtype=torch.float32, copy=True)  # [V, d]
        tied = embeddings_tied(model)
        E_in = None
        if not tied:
            E_in = model.get_input_embeddings().weight.detach().to(device=device, dtype=torch.float32)
            E_in = E_in / E_in.norm(dim=1, keepdim=True).clamp_min(1e-12)
        to_embed = _to_embedding_space(model, device)
    V = U.shape[0]
    out_projs = adapters.ffn_out_projections(model)
    L = len(out_projs)
    F = adapters.n_neurons(out_projs[0])
    k, Kc = int(top_k), int(n_candidates)
    if k > V:
        raise ValueError(f"top_k={k} exceeds the vocabulary size {V}")
    if batch_size is None:
        block = BLOCK_BYTES if device.type == "cpu" else ACCEL_BLOCK_BYTES
        batch_size = max(1, min(F, block // (4 * V)))
    out = {
        "promoted_tok": np.empty((L, F, k), np.int32),
        "promoted_score": np.empty((L, F, k), np.float32),
        "suppressed_tok": np.empty((L, F, k), np.int32),
        "suppressed_score": np.empty((L, F, k), np.float32),
        "cand_tok": np.full((L, F, Kc), -1, np.int32),
        "cand_score": np.full((L, F, Kc), np.nan, np.float32),
        "cand_supp_rank": np.full((L, F, Kc), -1, np.int32),
        "cand_cos_in": np.full((L, F, Kc), np.nan, np.float32),
    }
    if candidates is not None and len(candidates) != L:
        raise ValueError(f"candidates for {len(candidates)} layers, the model has {L}")
    for layer, out_proj in enumerate(out_projs):
        sign = None if signs is None else torch.as_tensor(np.asarray(signs[layer]), dtype=torch.float32, device=device)
        if adapters.n_neurons(out_proj) != F:
            raise ValueError(f"layer {layer} has {adapters.n_neurons(out_proj)} neurons, layer 0 has {F}")
        cand = None
        if candidates is not None and Kc > 0:
            c = np.asarray(candidates[layer], dtype=np.int64)[:, :Kc]
            cand = np.full((F, Kc), -1, np.int64)
            cand[:, : c.shape[1]] = c
            out["cand_tok"][layer] = cand
        with align_module_device(out_proj):  # an offloaded layer's weights are loaded for this loop only
            vectors = adapters.output_vectors(out_proj)
            for lo in range(0, F, batch_size):
                hi = min(F, lo + batch_size)
                w = to_embed(vectors[lo:hi])  # [B, d] float32
                if sign is not None:  # linear in w, so orienting after project_out is the same
                    w = w * sign[lo:hi, None]
                scores = w @ U.t()  # [B, V] float32
                top = scores.topk(k, dim=1)
                bottom = scores.topk(k, dim=1, largest=False)  # ascending: most suppressed first
                out["promoted_tok"][layer, lo:hi] = top.indices.cpu().numpy()
                out["promoted_score"][layer, lo:hi] = top.values.cpu().numpy()
                out["suppressed_tok"][layer, lo:hi] = bottom.indices.cpu().numpy()
                out["suppressed_score"][layer, lo:hi] = bottom.values.cpu().numpy()
                if cand is None:
                    continue
                c = torch.as_tensor(cand[lo:hi], device=device)
                valid = c >= 0
                c0 = c.clamp_min(0)
                cs = scores.gather(1, c0)  # [B, Kc]
                rank = _count_below(scores, cs)
                out["cand_score"][layer, lo:hi] = torch.where(valid, cs, torch.nan).cpu().numpy()
                out["cand_supp_rank"][layer, lo:hi] = torch.where(valid, rank.to(device), -1).cpu().numpy()
                if E_in is not None:
                    wn = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
                    cos = torch.einsum("bd,bkd->bk", wn, E_in[c0])
                    out["cand_cos_in"][layer, lo:hi] = torch.where(valid, cos, torch.nan).cpu().numpy()
        if progress is not None:
            progress(layer + 1, L)
    attrs = {
        "k": k,
        "n_candidates": Kc,
        "tied_embeddings": bool(tied),
        "project_out": adapters.project_out(model) is not None,
        "oriented": signs is not None,  # vectors multiplied by the sign of the firing activation
    }
    return attrs, out
