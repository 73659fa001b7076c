"""Neurons of a summary as the JSON that Neuronpedia's feature dashboards read (`neuron-tui export
--format neuronpedia`).

The format is the one `sae-dashboard`'s Neuronpedia converter writes: one batch per layer,
`{"model_id", "layer", "sae_set", "sae_id_suffix", "features": [...]}`, each feature with the field
names of `sae_dashboard.neuronpedia.neuronpedia_dashboard.NeuronpediaDashboardFeature`:
`feature_index`, `pos_str`/`pos_values` and `neg_str`/`neg_values` (the tokens the neuron's update
promotes and suppresses, with their scores), `frac_nonzero` (its firing rate), the activation
histogram as `freq_hist_data_bar_values` (bin centres) and `freq_hist_data_bar_heights` (firings),
and `activations`: its top contexts, each the window's tokens with the neuron's signed activation at
every one of them and the index of the top one (`qualifying_token_index`), grouped as the converter
groups its "TOP ACTIVATIONS" (`bin_min` -1, `bin_max` the top value, `bin_contains` -1). Lists the
summary has no counterpart for (neuron and feature correlations, logit histograms, decoder weights)
are empty, as the converter leaves them without their data. Values are rounded to 3 decimals, as the
converter does. Files are named `batch-<layer>.json`, as the converter names its batches.
tests/test_neuronpedia.py loads them with sae-dashboard's own data classes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from neuron_tui.cache import Summary
from neuron_tui.core.errors import NeuronTuiError

from .tokens import token_text

SET_NAME = "neurons"  # the batch's `sae_set`: a model's FFN neurons, not an SAE's features


def _round(values: Iterable[float]) -> list[float]:
    return [round(float(v), 3) if math.isfinite(v) else 0.0 for v in values]


def _activations(summary: Summary, layer: int, index: int) -> list[dict]:
    """The neuron's top contexts (one per sequence): tokens of the window and the signed h at each."""
    if not summary.has("ctx_val"):
        return []
    T, vocab = summary.seq_len, summary.vocab
    left = int(summary.attrs["ctx_left"])
    top_pos = summary.read_neuron("top_pos", layer, index)
    values = summary.read("ctx_val", layer)[:, :, index]  # [K, W]
    out = []
    for g, window in zip(top_pos.tolist(), values):
        if g < 0:
            continue
        seq, t = divmod(int(g), T)
        lo = max(0, t - left)
        hi = min(T, t + window.size - left)
        ids = summary.tokens_at(np.arange(seq * T + lo, seq * T + hi)).tolist()
        h = window[lo - (t - left) : hi - (t - left)].astype(np.float64)
        out.append({"bin_min": -1, "bin_max": round(float(abs(h[t - lo])), 3), "bin_contains": -1,
                    "tokens": [token_text(vocab, i) for i in ids], "values": _round(h),
                    "qualifying_token_index": t - lo})
    return out


def _histogram(summary: Summary, layer: int, index: int) -> tuple[list[float], list[float]]:
    """(bin centres, firings per bin) of the neuron's firing values; empty without a histogram."""
    if not summary.has("hist_count"):
        return [], []
    edges = summary.read("hist_edges", layer).astype(np.float64)
    counts = summary.read("hist_count", layer)[:, index]
    return _round((edges[:-1] + edges[1:]) / 2), [float(c) for c in counts]


def feature(summary: Summary, layer: int, index: int) -> dict:
    """One neuron as a Neuronpedia dashboard feature (the module docstring lists the fields)."""
    vocab = summary.vocab
    scored = {}
    for kind in ("promoted", "suppressed"):
        if summary.projection is None:
            scored[kind] = ([], [])
            continue
        toks = summary.projection.neuron(f"{kind}_tok", layer, index)
        scores = summary.projection.neuron(f"{kind}_score", layer, index)
        keep = toks >= 0
        scored[kind] = ([token_text(vocab, int(t)) for t in toks[keep]], _round(scores[keep]))
    centres, heights = _histogram(summary, layer, index)
    act = int(summary.read_neuron("act_count", layer, index))
    return {
        "feature_index": int(index),
        "neuron_alignment_indices": [], "neuron_alignment_values": [], "neuron_alignment_l1": [],
        "correlated_neurons_indices": [], "correlated_neurons_l1": [], "correlated_neurons_pearson": [],
        "correlated_features_indices": [], "correlated_features_l1": [], "correlated_features_pearson": [],
        "neg_str": scored["suppressed"][0], "neg_values": scored["suppressed"][1],
        "pos_str": scored["promoted"][0], "pos_values": scored["promoted"][1],
        "frac_nonzero": act / max(summary.n_tokens, 1),
        "freq_hist_data_bar_values": centres, "freq_hist_data_bar_heights": heights,
        "logits_hist_data_bar_heights": [], "logits_hist_data_bar_values": [],
        "n_prompts_total": int(summary.n_seq), "n_tokens_in_prompt": int(summary.seq_len),
        "dataset": str(summary.corpus.get("name") or summary.corpus.get("kind") or ""),
        "decoder_weights_dist": [], "vector": [],
        "activations": _activations(summary, layer, index),
    }


def batch(summary: Summary, layer: int, neurons: Iterable[int], model_id: str | None = None) -> dict:
    """The features of `neurons` of one layer as one Neuronpedia batch (one file per layer)."""
    return {"model_id": model_id or str(summary.attrs.get("model", "")), "layer": int(layer), "sae_set": SET_NAME,
            "sae_id_suffix": None, "features": [feature(summary, layer, int(i)) for i in neurons]}


def write_batches(summary: Summary, selection: Mapping[int, Iterable[int]], folder: Path | str,
                  model_id: str | None = None) -> list[Path]:
    """One batch file per layer of `selection` (layer -> neuron indices) in `folder`, each written whole
    under a temporary name and renamed, so an interrupted export never leaves a half file; the paths.
    A folder that cannot be written is one NeuronTuiError line."""
    folder = Path(folder)
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for layer, neurons in sorted(selection.items()):
            path = folder / f"batch-{int(layer)}.json"
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(batch(summary, layer, neurons, model_id)), encoding="utf-8")
            os.replace(tmp, path)
            written.append(path)
    except OSError as exc:
        raise NeuronTuiError(f"cannot write the export into {folder}: {exc.strerror or exc}") from None
    return written
