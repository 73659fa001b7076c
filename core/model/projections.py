"""FFN updates projected onto the vocabulary (paper, section 4 "N-gram-detecting neurons": the updates
of token detectors; docs/design.md), and the per-neuron statistics of the same products that name the
neuron families found since (Gurnee et al. 2024; Stolfo, Wu, Gurnee et al. 2024).

Neuron i of a layer adds h_i * w_i to the residual stream, w_i its output vector (row i of
`adapters.output_vectors`: OPT `fc2` column, GPT-2 `c_proj` row, Llama `down_proj` column). Through
OPT-350m's `project_out` (hidden -> embedding size) when the model has one, w_i is mapped into the
embedding space, and its score for vocabulary item v is `U[v] . w_i` with U the unembedding matrix
(`model.get_output_embeddings().weight`, [V, d]). High scores are promoted tokens, the lowest are
suppressed ones: the paper's finding is that token detectors suppress their own trigger tokens.

The statistics (`EffectiveUnembedding`) read w_i against the unembedding *as the model applies it*, the
way both papers' code does (TransformerLens defaults: the final norm's scale folded into W_U, W_U
centred, W_out centred for LayerNorm models): the moments over the vocabulary of the cosines
cos(w_i, U_eff[t]) (prediction and suppression neurons), the share of w_i in U_eff's effective null
space (entropy neurons), the correlation of its direct logit effect with the corpus' log token
frequency (token-frequency neurons), and the weight norms. Every one is computed from U_eff's small
[d, d] Gram matrix except the moments, which need the cosines of every vocabulary item.

Cost: one [batch, d] x [d, V] product per batch of neurons on the device of the unembedding, in float32
(on the CPU into one reused buffer, a block of vocabulary items at a time), plus a top-k and, for the
candidate triggers, an exact rank (number of vocabulary items with a lower score); then the statistics'
product of the same size against U_eff, one [batch, 2,048] block of vocabulary items at a time on the
CPU (it stays in cache while the sums of powers read it), and [d]-sized products for the rest. On the
CPU the top-k, the ranks and the sums of powers are C loops over rows in cache (cpu_vocab.c, through
core.model.native; on SmolLM2's shapes, a layer: 0.018 s for the top and bottom 10 against torch.topk's
0.12, 0.03 s for the ranks against numpy's 0.37, 0.008 s for the sums against torch's 0.12), unless the
kernels cannot be built or NEURON_TUI_COMPILE=0 asks for the eager paths: the same tokens (up to the
order of equal scores, which the kernel keeps in a stable sort's order and torch.topk leaves
unspecified), the same ranks, the same sums to float rounding (tests/test_projections.py,
tests/test_vocab_stats.py). The two float32 products are then most of the step. The statistics cannot
share the paper's product: U_eff folds the final norm's gain into U, and U[t] . w and (U[t] * gain) . w
are different functionals of U[t] (they agree only for a constant gain); nor can theirs be made in a
lower precision without losing the moments' digits (a bfloat16 product, tried on SmolLM2, moved kurtoses
by up to 1% and one neuron across kurtosis 10). Only a [batch, V] block of scores exists at a time;
nothing of size [F, V] is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import ExitStack

import numpy as np
import torch
from accelerate.utils import align_module_device
from torch import nn

from neuron_tui.cache import schema

from . import adapters, native
from .fused import compile_wanted

BLOCK_BYTES = 64 * 2**20  # one [batch, V] float32 score block on the CPU (fits in cache-friendly pieces)
ACCEL_BLOCK_BYTES = 1024 * 2**20  # on an accelerator: bigger blocks, fewer host syncs
CPU_VOCAB_BLOCK = 2048  # the statistics' vocabulary items per block on the CPU: [batch, 2048] stays in cache
_RANK_ROWS = 8  # CPU rank counting: rows per numpy block (keeps the block in cache)
NULL_FRACTION = 0.01  # default k of the null space: ceil(0.01 d) (Stolfo et al. 2024: k = 40 for d = 4,096)

# the per-neuron statistics of the projection group ([L, F] float32 each); all but freq_corr depend on
# the weights alone, so every shard of a run has the same ones (a merge copies them)
WEIGHT_STATISTICS = ("vocab_mean", "vocab_var", "vocab_skew", "vocab_kurt", "w_out_norm", "w_in_norm", "null_share")
STATISTICS = (*WEIGHT_STATISTICS, "freq_corr")


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


def _wide(device: torch.device) -> torch.dtype:
    """float64 where the device has it (every one but Apple's MPS), for sums and the Gram matrix."""
    return torch.float32 if device.type == "mps" else torch.float64


def norm_gain(norm: nn.Module | None) -> tuple[torch.Tensor | None, str]:
    """(gain [d] float32 or None, "layernorm" | "rmsnorm" | "none") of the final norm: the elementwise
    scale it multiplies the normalised residual by. A LayerNorm's is its weight. An RMSNorm's is read
    from the module itself: applied to the all-ones vector (RMS 1) it returns gain / sqrt(1 + eps),
    whatever the parametrisation (Llama: weight; Gemma: 1 + weight), up to a global factor that no
    cosine, null-space share or correlation below sees."""
    if norm is None:
        return None, "none"
    with align_module_device(norm), torch.no_grad():
        if isinstance(norm, nn.LayerNorm):
            gain = norm.weight if norm.weight is not None else torch.ones(norm.normalized_shape)
            return gain.detach().float().clone(), "layernorm"
        weight = norm.weight
        gain = norm(torch.ones(weight.shape[-1], dtype=weight.dtype, device=weight.device))
        return gain.detach().float().clone(), "rmsnorm"


class EffectiveUnembedding:
    """U_eff, the unembedding as the model applies it to the final norm's output, and what the
    per-neuron statistics need of it, made once per model (this docstring defines them).

    U_eff[t] = U[t] * gain (the final norm's elementwise scale folded in), centred over the vocabulary
    (the mean logit direction moves every logit alike and changes no softmax); for a final LayerNorm
    also centred over d (LayerNorm removes the residual's mean, so the all-ones direction reaches no
    logit), and each output vector then loses its all-ones component too. This is what the papers'
    code computes with TransformerLens defaults (fold_ln, center_unembed, center_writing_weights):
    Gurnee et al. 2024, "Universal Neurons in GPT2 Language Models" (weights.py::
    compute_vocab_composition, utils.py::vector_moments), and Stolfo, Wu, Gurnee et al. 2024,
    "Confidence Regulation Neurons in Language Models" (utils.py::get_potential_entropy_neurons_udark).
    With OPT's project_out between the norm and U (OPT-350m has it, and no final norm), w is mapped
    into U's space as the projections map it, the gain scaling w before P (it cannot fold into U there),
    and U_eff is U centred over the vocabulary.

    Per output vector w (w_c: w centred for LayerNorm, z its image in U's space, z^ = z / ||z||):
    - vocab_mean, vocab_var, vocab_skew, vocab_kurt: the population moments over the V items of
      v_t = cos(z, U_eff[t]); kurtosis is Pearson's (a Gaussian has 3), as vector_moments (the mean of
      the z-scores cubed and to the fourth). Prediction neurons have kurtosis > 10 and positive skew,
      suppression neurons negative skew (Gurnee et al., section 4.3). The product runs against the
      normalised rows of U_eff centred once more over the vocabulary, so it yields v_t - mean(v)
      directly and the sums of its powers need no cancelling subtraction (float32 per vocabulary
      block, float64 across blocks).
    - null_share: rho = ||V_k^T z^||^2, V_k the k right singular vectors of U_eff (directions of the
      residual stream) of smallest singular value, from the eigenvectors of the float64 Gram matrix
      U_eff^T U_eff. The authors' code reports the unsquared ||V_k^T w|| / ||w||; the square is a
      share of the squared norm, so a random direction has rho about k/d. For a LayerNorm the
      all-ones direction (U_eff maps it to 0 exactly) is left out of V_k: LayerNorm removes it, so it
      is no "dark" direction an entropy neuron could write to (the authors' centred W_U counts it
      among their k, where it holds nothing of a centred w_out).
    - freq_corr: the Pearson correlation over the vocabulary of the direct logit effect U_eff z with
      the centred log frequency f_t = log(count_t + 1) of the summary's own corpus (Stolfo et al.,
      section 5, token-frequency neurons: their cosine of vocabulary-centred vectors is this
      correlation); U_eff z is centred already, so it is (z . U_eff^T f~) / (||U_eff z|| ||f~||),
      both from [d]-sized products. NaN until `use_token_counts`.
    Statistics are of w as stored, not oriented by the sign of the neuron's firing: a neuron that
    fires negative pushes -w, which flips the sign of vocab_mean, vocab_skew and freq_corr.
    """

    @torch.no_grad()
    def __init__(self, U: torch.Tensor, gain: torch.Tensor | None, centres: bool, null_k: int | None = None,
                 vocab_block: int = 8192):
        device, wide = U.device, _wide(U.device)
        V, d = U.shape
        self.V, self.d, self.centres, self.wide = V, d, bool(centres), wide
        k = math.ceil(NULL_FRACTION * d) if null_k is None else int(null_k)
        if not 1 <= k <= d - int(self.centres):
            raise ValueError(f"null_k={k}: the null space takes between 1 and {d - int(self.centres)} of {d} directions")
        self.null_k = k
        if gain is not None and gain.shape[-1] != d:
            raise ValueError(f"the final norm has width {gain.shape[-1]}, the unembedding {d}: a norm before "
                             "project_out is not supported")
        blocks = [slice(lo, min(V, lo + vocab_block)) for lo in range(0, V, vocab_block)]
        A = U.to(torch.float32).clone() if gain is None else U.to(torch.float32) * gain.to(device)
        if self.centres:
            A -= A.mean(1, keepdim=True)
        A -= (sum(A[b].to(wide).sum(0) for b in blocks) / V).to(torch.float32)  # the vocabulary's mean row
        gram = torch.zeros(d, d, dtype=wide, device=device)
        norms = torch.empty(V, dtype=wide, device=device)
        for b in blocks:
            rows = A[b].to(wide)
            gram += rows.t() @ rows
            norms[b] = rows.norm(dim=1)
        A /= norms.clamp_min(1e-30).to(torch.float32)[:, None]  # unit rows: cos(z, U_eff[t]) = z^ . A[t]
        self.row_mean = sum(A[b].to(wide).sum(0) for b in blocks) / V  # [d]: mean(v) = z^ . row_mean
        A -= self.row_mean.to(torch.float32)  # z^ . A[t] = v_t - mean(v)
        self.A, self.norms, self.gram, self._blocks = A, norms, gram, blocks
        # the ones direction of a LayerNorm model is pushed above every singular value, out of V_k
        push = gram.trace() / d if self.centres else 0.0
        eigvecs = torch.linalg.eigh(gram + push * torch.ones_like(gram)).eigenvectors  # ascending eigenvalues
        self.null = eigvecs[:, :k].contiguous()  # [d, k]
        self.freq: torch.Tensor | None = None  # [d]: U_eff^T f~ / ||f~||

    @torch.no_grad()
    def use_token_counts(self, counts: np.ndarray | None) -> None:
        """The corpus' token counts [V'] (the summary's `token_occ`) for freq_corr; None forgets them.
        Items beyond the counts (an unembedding padded past the tokenizer) count 0."""
        if counts is None:
            self.freq = None
            return
        c = np.zeros(self.V, np.float64)
        n = min(self.V, len(counts))
        c[:n] = np.asarray(counts, dtype=np.float64)[:n]
        f = np.log1p(c)
        f -= f.mean()
        scale = float(np.linalg.norm(f))
        if scale == 0.0:  # every item equally frequent: no correlation to measure
            self.freq = torch.full((self.d,), torch.nan, dtype=self.wide, device=self.A.device)
            return
        fr = torch.as_tensor(f / scale, dtype=self.wide, device=self.A.device) * self.norms
        # U_eff[t] = norms[t] * (A[t] + row_mean)
        g = sum(self.A[b].to(self.wide).t() @ fr[b] for b in self._blocks) + self.row_mean * fr.sum()
        self.freq = g

    def begin(self, z: torch.Tensor, lib=None) -> _Moments:
        """The statistics of output vectors z [B, d] (float32, in U's space), to be fed vocabulary blocks;
        `lib`: the CPU kernels' library (native.library()) for the sums of powers, None for torch's."""
        return _Moments(self, z, lib)


class _Moments:
    """Running sums over vocabulary blocks of x, x^2, x^3 and x^4, x_t = v_t - mean(v), for a block of
    neurons (every power from the same products, so a neuron whose cosines are all tiny, an entropy
    neuron's, keeps its relative precision). With the CPU kernels each power is summed in float64 from
    the float32 x (cpu_vocab.c); torch's path sums a block in float32 and the blocks in float64."""

    def __init__(self, geo: EffectiveUnembedding, z: torch.Tensor, lib=None):
        self.geo, self.lib = geo, lib
        z64 = z.to(geo.wide)
        self.length = z64.norm(dim=1)
        self.unit64 = z64 / self.length.clamp_min(1e-30)[:, None]
        self.unit = self.unit64.to(torch.float32)
        self.sums = torch.zeros(4, z.shape[0], dtype=geo.wide, device=z.device)

    def add(self, block: slice) -> None:
        x = self.unit @ self.geo.A[block].t()  # [B, Vb] = v_t - mean(v)
        if self.lib is not None:
            native.power_sums(self.lib, x, self.sums)
            return
        x2 = x * x
        # the odd powers as batched dot products: no [B, Vb] temporary, and the block is still in cache
        parts = (x.sum(1), x2.sum(1), torch.bmm(x2[:, None], x[:, :, None]).view(-1),
                 torch.bmm(x2[:, None], x2[:, :, None]).view(-1))
        self.sums += torch.stack(parts).to(self.sums.dtype)

    def result(self) -> dict[str, np.ndarray]:
        geo, u = self.geo, self.unit64
        e1, e2, e3, e4 = self.sums / geo.V
        d = e1  # ~1e-9, the rows' float32 rounding: the moments are taken about the exact mean
        m2 = e2 - d * d
        m3 = e3 - 3 * d * e2 + 2 * d**3
        m4 = e4 - 4 * d * e3 + 6 * d * d * e2 - 3 * d**4
        null = (u @ geo.null).pow(2).sum(1)
        if geo.freq is None:
            freq = torch.full_like(m2, torch.nan)
        else:
            effect = ((u @ geo.gram) * u).sum(1).clamp_min(0).sqrt()  # ||U_eff z^||
            freq = (u @ geo.freq) / effect
        flat = m2 <= 0  # every cosine equal (a vector exactly in the null space): no shape to measure
        out = {"vocab_mean": u @ geo.row_mean + d, "vocab_var": m2.clamp_min(0),
               "vocab_skew": torch.where(flat, torch.nan, m3 / m2.pow(1.5)),
               "vocab_kurt": torch.where(flat, torch.nan, m4 / (m2 * m2)), "null_share": null, "freq_corr": freq}
        dead = self.length == 0  # a zero output vector has no direction
        return {name: torch.where(dead, torch.nan, v).to(torch.float32).cpu().numpy() for name, v in out.items()}


def _count_below(scores: torch.Tensor, values: torch.Tensor, lib=None) -> torch.Tensor:
    """[B, K] int64: per row, the number of scores strictly below each of K values (exact); `lib`: the
    CPU kernels' library (native.library()), None for numpy's."""
    if scores.device.type != "cpu":  # accelerators: a broadcast compare is fast there
        return torch.stack([(scores < values[:, j : j + 1]).sum(1) for j in range(values.shape[1])], 1)
    if lib is not None:
        return native.count_below(lib, scores, values)
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
    activation when it fires; None: all +1, right for ReLU). batch_size: neurons per block (default:
    what fits BLOCK_BYTES), vocab_block: vocabulary items per block of the statistics (and on the CPU of
    the scores' product). null_k: the dimension of the null space (default ceil(0.01 d)). The per-neuron
    statistics (EffectiveUnembedding) come with every layer; `use_token_counts` gives freq_corr its
    corpus. On the CPU the top-k, the ranks and the statistics' sums of powers run in the C kernels
    (`lib`) unless NEURON_TUI_COMPILE=0, or they cannot be built.
    """

    @torch.no_grad()
    def __init__(self, model: nn.Module, top_k: int = 10, n_candidates: int = 10, batch_size: int | None = None,
                 oriented: bool = False, null_k: int | None = None, vocab_block: int | None = None):
        self.model = model
        norm = adapters.final_norm(model)
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
        gain, norm_kind = norm_gain(norm)
        self.centres = norm_kind == "layernorm"  # output vectors lose their all-ones component
        # the gain folds into U where U reads the norm's output directly; through project_out it scales w
        through_p = adapters.project_out(model) is not None
        self.gain = gain.to(self.device) if through_p and gain is not None else None
        self.geometry = EffectiveUnembedding(self.U, None if through_p else gain, self.centres and not through_p,
                                             null_k)
        V = self.U.shape[0]
        self.out_projs = adapters.ffn_out_projections(model)
        self.n_neurons = adapters.n_neurons(self.out_projs[0])
        self.k, self.Kc = int(top_k), int(n_candidates)
        if self.k > V:
            raise ValueError(f"top_k={self.k} exceeds the vocabulary size {V}")
        on_cpu = self.device.type == "cpu"
        self.lib = native.library() if on_cpu and compile_wanted() else None
        self.vocab_block = min(V, vocab_block or (CPU_VOCAB_BLOCK if on_cpu else V))
        if batch_size is None:
            block = BLOCK_BYTES if on_cpu else ACCEL_BLOCK_BYTES
            batch_size = max(1, min(self.n_neurons, block // (4 * V)))
        self.batch_size = batch_size
        # the CPU's [batch, V] scores: one buffer, filled a vocabulary block at a time (`_scores`)
        self._score_buffer = torch.empty(batch_size, V) if on_cpu else None
        self.attrs = {
            "k": self.k,
            "n_candidates": self.Kc,
            "tied_embeddings": bool(tied),
            "project_out": adapters.project_out(model) is not None,
            "oriented": bool(oriented),  # vectors multiplied by the sign of the firing activation
            "final_norm": norm_kind,  # folded into U_eff: "layernorm", "rmsnorm" or "none"
            "null_k": self.geometry.null_k,
        }

    @property
    def n_layers(self) -> int:
        return len(self.out_projs)

    def use_token_counts(self, counts: np.ndarray | None) -> None:
        """The corpus' token counts (the summary's `token_occ`) for freq_corr; None leaves it NaN."""
        self.geometry.use_token_counts(counts)

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
            **{name: np.empty(F, np.float32) for name in STATISTICS},
        }
        sign_t = None if sign is None else torch.as_tensor(np.asarray(sign), dtype=torch.float32, device=device)
        cand = None
        if candidates is not None and Kc > 0:
            c = np.asarray(candidates, dtype=np.int64)[:, :Kc]
            cand = np.full((F, Kc), -1, np.int64)
            cand[:, : c.shape[1]] = c
            out["cand_tok"][:] = cand
        inputs = adapters.input_projections(self.model, layer)
        with ExitStack() as loaded:  # an offloaded layer's weights are loaded for this layer only
            for module in (out_proj, *inputs):
                loaded.enter_context(align_module_device(module))
            out["w_in_norm"][:] = adapters.input_norms(inputs).cpu().numpy()
            vectors = adapters.output_vectors(out_proj)
            for lo in range(0, F, self.batch_size):
                hi = min(F, lo + self.batch_size)
                self._block(out, lo, hi, vectors[lo:hi], sign_t, cand)
        return out

    def _block(self, out: dict, lo: int, hi: int, vectors: torch.Tensor, sign_t, cand) -> None:
        """Neurons lo..hi: their [B, V] scores against U (promoted, suppressed, candidate ranks), then
        their statistics against U_eff, one vocabulary block at a time."""
        device, k = self.device, self.k
        raw = vectors.detach().to(device=device, dtype=torch.float32)
        w = self.to_embed(raw)  # [B, d] float32
        if sign_t is not None:  # linear in w, so orienting after project_out is the same
            w = w * sign_t[lo:hi, None]
        scores = self._scores(w)  # [B, V] float32
        if self.lib is not None:  # ties in a stable sort's order
            top_val, top_tok, bottom_val, bottom_tok = native.top_bottom(self.lib, scores, k)
        else:
            (top_val, top_tok), (bottom_val, bottom_tok) = scores.topk(k, dim=1), scores.topk(k, dim=1, largest=False)
        out["promoted_tok"][lo:hi] = top_tok.cpu().numpy()
        out["promoted_score"][lo:hi] = top_val.cpu().numpy()
        out["suppressed_tok"][lo:hi] = bottom_tok.cpu().numpy()  # ascending: most suppressed first
        out["suppressed_score"][lo:hi] = bottom_val.cpu().numpy()
        if cand is not None:
            c = torch.as_tensor(cand[lo:hi], device=device)
            valid = c >= 0
            c0 = c.clamp_min(0)
            cs = scores.gather(1, c0)  # [B, Kc]
            rank = _count_below(scores, cs, self.lib)
            out["cand_score"][lo:hi] = torch.where(valid, cs, torch.nan).cpu().numpy()
            out["cand_supp_rank"][lo:hi] = torch.where(valid, rank.to(device), -1).cpu().numpy()
            if self.E_in is not None:
                wn = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
                cos = torch.einsum("bd,bkd->bk", wn, self.E_in[c0])
                out["cand_cos_in"][lo:hi] = torch.where(valid, cos, torch.nan).cpu().numpy()
        del scores
        for name, value in self.statistics(raw).items():
            out[name][lo:hi] = value

    def _scores(self, w: torch.Tensor) -> torch.Tensor:
        """w @ U^T [B, V]. On the CPU into the one buffer, `vocab_block` columns at a time: each block's
        product is written while it is in cache, and no [B, V] tensor is allocated (and its pages
        faulted in) per batch: 0.51 s a SmolLM2 layer against 0.63 for `w @ U.t()`, whose values it equals
        bit for bit here (each score is one dot product over d either way)."""
        if self._score_buffer is None:
            return w @ self.U.t()
        scores, V = self._score_buffer[: w.shape[0]], self.U.shape[0]
        for v0 in range(0, V, self.vocab_block):
            block = slice(v0, min(V, v0 + self.vocab_block))
            torch.mm(w, self.U[block].t(), out=scores[:, block])
        return scores

    def statistics(self, raw: torch.Tensor) -> dict[str, np.ndarray]:
        """The families' statistics of output vectors `raw` [B, d_model] float32 as stored: w_out_norm and
        EffectiveUnembedding's moments, null-space share and frequency correlation, one vocabulary block
        at a time (w_in_norm comes from the input projections, in `layer`)."""
        centred = raw - raw.mean(1, keepdim=True) if self.centres else raw
        moments = self.geometry.begin(self.to_embed(centred if self.gain is None else centred * self.gain), self.lib)
        V = self.U.shape[0]
        for v0 in range(0, V, self.vocab_block):
            moments.add(slice(v0, min(V, v0 + self.vocab_block)))
        return {"w_out_norm": centred.norm(dim=1).cpu().numpy(), **moments.result()}


def written_token_counts(writer) -> np.ndarray | None:
    """The `token_occ` of the summary being written, when its root datasets are written already (the
    collection and a merge with the model write them before the projections)."""
    reader = writer.reader()
    return reader.token_occ if reader.has("token_occ") else None


def write_projection(writer, projector: UpdateProjector, layers, progress=None) -> None:
    """The `projection` group into a summary being written, one layer at a time: `layers` yields
    (candidates [F, Kc], sign [F]) per layer, in order. freq_corr correlates with the summary's own
    `token_occ` (NaN, and `freq_corr_complete` False, when the file has none yet). progress(layer,
    n_layers) after each."""
    group, L = schema.PROJECTION_GROUP, projector.n_layers
    counts = written_token_counts(writer)
    projector.use_token_counts(counts)
    for layer, (candidates, sign) in enumerate(layers):
        for name, value in projector.layer(layer, candidates, sign).items():
            writer.write_layer(name, layer, value, L, group=group)
        if progress is not None:
            progress(layer + 1, L)
    writer.set_attrs({**projector.attrs, "candidates_complete": True, "freq_corr_complete": counts is not None},
                     group=group)


def assembled_statistics(inputs: list, layer: int) -> dict[str, np.ndarray] | None:
    """The statistics of one layer for a merge without the model (core.model.merge): those of the
    weights alone are the same in every shard of a run (one set of weights), so the first input's are
    the union's, exactly; freq_corr depends on the union's token counts, which only a new projection
    sees, so it is NaN (the group's `freq_corr_complete` is False). `inputs`: the inputs' projection
    groups (cache GroupReader). None when an input predates the statistics."""
    if not all(g.has(name) for g in inputs for name in WEIGHT_STATISTICS):
        return None
    out = {name: inputs[0].read(name, layer) for name in WEIGHT_STATISTICS}
    out["freq_corr"] = np.full_like(out["w_out_norm"], np.nan)
    return out
