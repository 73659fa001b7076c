"""One neuron's numbers for the families named since the paper, as its record carries them (`neuron
--json`, the Python API, the explorer's neuron screen, the Neuronpedia export): the moments of its
output's cosines with the unembedding and its weights' geometry (prediction, suppression, entropy and
token-frequency neurons; core/model/projections.py computes them), the mean of h over the corpus (what
mean ablation sets it to), its firing-value histogram, and the sign cases of a gated neuron with the
strongest context of each (GLUScope). Each part is None where the summary lacks its datasets (an older
summary, a merge without the model, or the sign cases of a model that is not gated), so a reader tells
"not measured" from a measured zero; docs/design.md, "Beyond the paper", defines each.
"""

from __future__ import annotations

from neuron_tui.cache import Summary, schema

from .analysis import acting_sign, family_statistics
from .kinds import layer_typicals
from .records import Geometry, Histogram, SignCase, VocabMoments
from .table import json_float

MOMENTS = ("vocab_mean", "vocab_var", "vocab_skew", "vocab_kurt")
GEOMETRY = ("w_out_norm", "w_in_norm", "null_share", "freq_corr")


def vocab_moments(summary: Summary, layer: int, index: int) -> VocabMoments | None:
    """{mean, var, skew, kurt, sign} over the vocabulary of cos(w_out, U_eff[t]) (kurtosis Pearson's: 3
    for a Gaussian), with the sign of h when the neuron acts (analysis.acting_sign): the prediction and
    suppression criteria read sign x skew; None without them."""
    proj = summary.projection
    if proj is None or not proj.has("vocab_kurt"):
        return None
    out = {name.removeprefix("vocab_"): json_float(proj.neuron(name, layer, index)) for name in MOMENTS}
    return {**out, "sign": int(acting_sign(summary, layer)[index])}


def geometry(summary: Summary, layer: int, index: int) -> Geometry | None:
    """The output's norm, null-space share and frequency correlation, with the layer's typical norm and
    share (the entropy criterion compares with them) and the null space's dimension; None without them."""
    proj = summary.projection
    if proj is None or not proj.has("null_share"):
        return None
    stats = family_statistics(summary, layer)
    typical = layer_typicals(summary.read("act_max", layer), stats.get("null_share"), stats.get("w_out_norm"))
    out = {name: json_float(proj.neuron(name, layer, index)) for name in GEOMETRY}
    return {**out, "null_k": int(proj.attrs.get("null_k", 0)), "typical_w_out_norm": json_float(typical["w_out_norm"]),
            "typical_null_share": json_float(typical["null_share"])}


def mean_h(summary: Summary, layer: int, index: int) -> float | None:
    """h averaged over every token of the corpus, fired or not (the value mean ablation sets)."""
    means = summary.h_mean(layer)
    return None if means is None else float(means[index])


def histogram(summary: Summary, layer: int, index: int) -> Histogram | None:
    """The neuron's firings in its layer's fixed bins: edges [B + 1] and counts [B] (the outer bins hold
    everything beyond their inner edge)."""
    found = summary.activation_histogram(layer, index)
    if found is None:
        return None
    edges, counts = found
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def sign_cases(summary: Summary, layer: int, index: int) -> list[SignCase] | None:
    """The four sign cases of (act(gate), up) of a gated neuron's firings: count, share, the strongest
    firing's |h| and global position (None where the case never fired); None for a model not gated."""
    cases = summary.sign_cases(layer, index)
    if cases is None:
        return None
    total = int(cases.count.sum())
    return [{"case": case, "count": int(n), "share": (int(n) / total) if total else None,
             "top_value": json_float(v) if p >= 0 else None, "top_position": int(p) if p >= 0 else None}
            for case, n, v, p in zip(schema.SIGN_CASES, cases.count, cases.top_val, cases.top_pos)]
