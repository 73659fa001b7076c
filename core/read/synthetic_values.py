"""The statistics of schema.ADDED_IN_3 in a synthetic summary (core.read.synthetic): h summed over every
token, each top context's window of h, the activation histogram and, for a gated architecture, the sign
cases, consistent with the counts and contexts the generator drew for each layer; and the projection
group's per-neuron statistics with planted neurons of the later families (prediction and suppression
neurons in the last layers, suppression after prediction as Gurnee et al. 2024 find; a few entropy
and token-frequency neurons in the last layer), whose flags the registry's own criteria decide. They
come from random streams of their own, so every other dataset of a synthetic summary is what it was
without them.
"""

from __future__ import annotations

import numpy as np

from neuron_tui.cache import SummaryWriter, schema

from . import kinds
from .params import AnalysisParams
from .queries import CONTEXT_LEFT, CONTEXT_RIGHT

SPREAD = 0.35  # log-normal spread of a neuron's firing values around its mean firing value
FAMILIES = tuple(k for k in kinds.KINDS if k.name in ("prediction", "suppression", "entropy", "frequency", "mixed"))
NULL_K, WIDTH = 8, 768  # the synthetic model's null space and residual width: a random share is about k/d
PROJECTION_ATTRS = {"final_norm": "layernorm", "null_k": NULL_K, "freq_corr_complete": True}


class SyntheticValues:
    """Writes one layer's h_sum, ctx_val, hist_count (and sign cases) at a time into a synthetic summary
    being written, its hist_edges after the last layer, and the attributes that go with them."""

    def __init__(self, writer: SummaryWriter, n_layers: int, n_neurons: int, seq_len: int, n_tokens: int, top_k: int,
                 seed: int, architecture: str):
        L, F, K, W = n_layers, n_neurons, top_k, CONTEXT_LEFT + 1 + CONTEXT_RIGHT
        self.writer, self.n_layers, self.seq_len, self.n_tokens = writer, L, seq_len, n_tokens
        self.gated = architecture in schema.GATED_ARCHITECTURES
        self.rng = np.random.default_rng([seed, 3])
        self.family_rng = np.random.default_rng([seed, 4])
        self.signs: np.ndarray | None = None  # the last layer's sign_count, for the mixed-sign criterion
        self.edges = np.zeros((L, schema.HIST_BINS + 1), np.float32)
        writer.set_attrs({"architecture": architecture, "rule": "abs" if self.gated else "relu",
                          "ctx_left": CONTEXT_LEFT, "ctx_right": CONTEXT_RIGHT})
        shapes = {"h_sum": ((L, F), np.float64), "ctx_val": ((L, K, W, F), np.float16),
                  "hist_count": ((L, schema.HIST_BINS, F), np.int32)}
        for name in schema.SIGN_DATASETS if self.gated else ():
            shapes[name] = ((L, len(schema.SIGN_CASES), F), np.dtype(schema.OPTIONAL_DATASETS[name][0]))
        for name, (shape, dtype) in shapes.items():
            writer.create(name, shape, dtype)

    def write(self, layer: int, lay) -> None:
        """The values of layer `layer` from the generator's layer `lay` (its counts, sums, top contexts)."""
        rng, T = self.rng, self.seq_len
        F = len(lay.count)
        alive = lay.count > 0
        mean = np.where(alive, lay.act_sum / np.maximum(lay.count, 1), 1.0)
        # a ReLU-like layer's h is 0 where it does not fire: h_sum is act_sum; a gated one's is not
        h_sum = lay.act_sum.astype(np.float64) + (rng.normal(0, 0.02, F) * self.n_tokens if self.gated else 0.0)
        # each top context's window: the top value at the centre, smaller values around, NaN off the sequence
        offset = np.arange(-CONTEXT_LEFT, CONTEXT_RIGHT + 1)[None, :, None]
        t = (lay.top_pos % T)[:, None, :] + offset
        around = np.abs(rng.normal(0.2, 0.4, t.shape)) * mean * (rng.random(t.shape) < 0.5)
        ctx = np.where(offset == 0, lay.top_val[:, None, :], around)
        ctx = np.where((t >= 0) & (t < T) & (lay.top_pos >= 0)[:, None, :], ctx, np.nan)
        self.edges[layer] = edges = self._edges(float(lay.act_max[alive].max()) if alive.any() else 1.0)
        self.writer.write("h_sum", layer, h_sum)
        self.writer.write("ctx_val", layer, ctx.astype(np.float16))
        self.writer.write("hist_count", layer, self._histogram(lay.count, mean, edges))
        if self.gated:
            signs = self._signs(lay)
            for name, value in signs.items():
                self.writer.write(name, layer, value)
            self.signs = signs["sign_count"]
        if layer == self.n_layers - 1:
            self.writer.put("hist_edges", self.edges)

    def _edges(self, largest: float) -> np.ndarray:
        """Log-spaced bins up to twice the layer's largest value (signed for the abs rule)."""
        hi = 2.0 * max(largest, 1.0)
        if not self.gated:
            return np.concatenate([[0.0], np.geomspace(hi * 1e-4, hi, schema.HIST_BINS)]).astype(np.float32)
        side = np.geomspace(hi * 1e-4, hi, (schema.HIST_BINS - 1) // 2 + 1)
        return np.concatenate([-side[::-1], side]).astype(np.float32)

    def _histogram(self, count: np.ndarray, mean: np.ndarray, edges: np.ndarray) -> np.ndarray:
        """[B, F] int32: each neuron's `count` firings spread over the bins, log-normal around its mean
        (a logistic stand-in for the normal CDF), summing to `count` exactly."""
        inner = edges[None, 1:-1]
        spread = (np.log(np.maximum(inner, 1e-30)) - np.log(mean)[:, None]) / SPREAD
        cdf = np.where(inner > 0, 1 / (1 + np.exp(-1.702 * spread)), 0.0)
        p = np.diff(np.concatenate([np.zeros((len(count), 1)), cdf, np.ones((len(count), 1))], axis=1), axis=1)
        return self.rng.multinomial(count, p / p.sum(1, keepdims=True)).T.astype(np.int32)

    def _signs(self, lay) -> dict[str, np.ndarray]:
        """Every generated firing is positive: (+,+) or (-,-), the strongest in the larger case, the
        other case's strongest a little weaker, at the second top context."""
        F, cols, K = len(lay.count), np.arange(len(lay.count)), lay.top_val.shape[0]
        # most neurons fire in one case (share 0.95-1), one in eight splits (0.5-0.85): the mixed-sign kind
        share = np.where(self.rng.random(F) < 0.125, self.rng.uniform(0.5, 0.85, F), self.rng.uniform(0.95, 1.0, F))
        pp = self.rng.binomial(lay.count, share)
        count = np.stack([pp, np.zeros(F, np.int64), np.zeros(F, np.int64), lay.count - pp]).astype(np.int64)
        strongest = np.where(2 * pp >= lay.count, 0, 3)
        top_val = np.full((4, F), -np.inf, np.float32)
        top_pos = np.full((4, F), -1, np.int64)
        top_val[strongest, cols], top_pos[strongest, cols] = lay.top_val[0], lay.top_pos[0]
        second = lay.top_pos[min(1, K - 1)]
        top_val[3 - strongest, cols] = lay.top_val[0] * self.rng.uniform(0.3, 0.9, F)
        top_pos[3 - strongest, cols] = np.where(second >= 0, second, lay.top_pos[0])
        empty = count == 0
        top_val[empty], top_pos[empty] = -np.inf, -1
        return {"sign_count": count, "sign_top_val": top_val, "sign_top_pos": top_pos}

    def families(self, layer: int, lay, flags: np.ndarray, projection: dict | None) -> None:
        """Add the later families' statistics of layer `layer` to its `projection` datasets (None: the
        summary has no projection group) and their kinds to its `flags`, decided by the registry's
        criteria from those statistics and the layer's sign cases."""
        F, rng = len(lay.count), self.family_rng
        depth = layer / max(1, self.n_layers - 1)
        stats = {"vocab_mean": rng.normal(0, 2e-3, F), "vocab_var": 1.0 / WIDTH * np.exp(rng.normal(0, 0.2, F)),
                 "vocab_skew": rng.normal(0, 0.2, F), "vocab_kurt": 3 + np.abs(rng.normal(0, 0.6, F)),
                 "w_out_norm": np.exp(rng.normal(0, 0.2, F)), "w_in_norm": np.exp(rng.normal(0.5, 0.2, F)),
                 "null_share": NULL_K / WIDTH * np.exp(rng.normal(0, 0.3, F)), "freq_corr": rng.normal(0, 0.12, F)}
        slots = rng.permutation(F)
        n_pred = int(round(F * 0.06 * max(0.0, depth - 0.3)))  # prediction neurons from a third of the depth on
        n_supp = int(round(F * 0.08 * max(0.0, depth - 0.6)))  # suppression neurons later and more of them
        pred, supp = slots[:n_pred], slots[n_pred : n_pred + n_supp]
        stats["vocab_kurt"][np.concatenate([pred, supp])] = rng.uniform(12, 60, n_pred + n_supp)
        stats["vocab_skew"][pred] = rng.uniform(0.8, 3.0, n_pred)
        stats["vocab_skew"][supp] = -rng.uniform(0.8, 3.0, n_supp)
        if layer == self.n_layers - 1 and F >= 16:
            entropy, frequency = slots[-2:], slots[-5:-2]
            stats["null_share"][entropy] = rng.uniform(0.3, 0.7, 2)
            stats["w_out_norm"][entropy] *= rng.uniform(3, 5, 2)
            stats["freq_corr"][frequency] = rng.choice([-1, 1], 3) * rng.uniform(0.6, 0.85, 3)
        stats = {name: value.astype(np.float32) for name, value in stats.items()}
        if projection is not None:
            projection.update(stats)
        act_max = np.asarray(lay.act_max, dtype=np.float64)
        known = stats if projection is not None else {}
        evidence = kinds.Evidence(np.asarray(lay.count, np.int64), act_max, self.n_tokens,
                                  kinds.layer_typicals(act_max, known.get("null_share"), known.get("w_out_norm")),
                                  **{k: v for k, v in known.items() if k in ("vocab_skew", "vocab_kurt", "null_share",
                                                                            "w_out_norm", "freq_corr")},
                                  sign_count=self.signs if self.gated else None)
        flags |= kinds.decide(evidence, AnalysisParams(), FAMILIES)
