"""The projection group's per-neuron statistics the slow way (numpy, float64, the whole [F, V] matrix of
cosines), written from the definitions in core/model/projections.py and the papers' code, not from that
module: the final norm's gain read from the module's weight (Gemma's would be 1 + weight), the
effective unembedding built explicitly, moments from their formulas (`utils.py::vector_moments` of
Gurnee et al. 2024), the null space from numpy's SVD."""

from __future__ import annotations

import math

import numpy as np
import torch


def parts(model) -> dict:
    """Explicitly, per architecture: U [V, d_e], the final norm's gain or None, LayerNorm or not,
    project_out's weight or None, and a function layer -> (output vectors [F, d], input norms [F])."""
    kind = model.config.model_type

    def f64(t):
        return t.detach().double().numpy()

    U = f64(model.get_output_embeddings().weight)
    if kind == "opt":
        dec = model.model.decoder
        norm = dec.final_layer_norm
        P = None if dec.project_out is None else f64(dec.project_out.weight)

        def layer(i):
            lay = dec.layers[i]
            return f64(lay.fc2.weight).T, np.linalg.norm(f64(lay.fc1.weight), axis=1)

        return {"U": U, "gain": None if norm is None else f64(norm.weight), "layernorm": True, "P": P, "layer": layer}
    if kind == "gpt2":
        def layer(i):
            mlp = model.transformer.h[i].mlp  # Conv1D weights are [in, out]
            return f64(mlp.c_proj.weight), np.linalg.norm(f64(mlp.c_fc.weight), axis=0)

        return {"U": U, "gain": f64(model.transformer.ln_f.weight), "layernorm": True, "P": None, "layer": layer}
    if kind == "llama":
        def layer(i):
            mlp = model.model.layers[i].mlp
            w_in = np.sqrt((f64(mlp.gate_proj.weight) ** 2).sum(1) + (f64(mlp.up_proj.weight) ** 2).sum(1))
            return f64(mlp.down_proj.weight).T, w_in

        return {"U": U, "gain": f64(model.model.norm.weight), "layernorm": False, "P": None, "layer": layer}
    raise ValueError(kind)


def effective(model) -> tuple[np.ndarray, dict]:
    """U_eff [V, d] float64 (gain folded in unless project_out sits between; LayerNorm: centred over d;
    always centred over the vocabulary) and the model's parts."""
    p = parts(model)
    U = p["U"].copy()
    if p["P"] is None and p["gain"] is not None:
        U = U * p["gain"]
        if p["layernorm"]:
            U = U - U.mean(1, keepdims=True)
    return U - U.mean(0), p


def to_u_space(w: np.ndarray, p: dict) -> tuple[np.ndarray, np.ndarray]:
    """(w centred for LayerNorm [F, d_model], its image z in U's space [F, d_e])."""
    wc = w - w.mean(1, keepdims=True) if p["layernorm"] else w
    if p["P"] is None:
        return wc, wc
    scaled = wc if p["gain"] is None else wc * p["gain"]
    return wc, scaled @ p["P"].T


def null_basis(U_eff: np.ndarray, k: int, layernorm_in_u: bool) -> np.ndarray:
    """[d, k]: U_eff's right singular vectors of the k smallest singular values; for a LayerNorm folded
    into U, the all-ones direction (exactly null) is not among them."""
    _, s, vt = np.linalg.svd(U_eff, full_matrices=False)
    order = np.argsort(s, kind="stable")
    d = U_eff.shape[1]
    if layernorm_in_u:
        order = [i for i in order if abs(vt[i].sum()) / math.sqrt(d) < 0.99]
    return vt[order[:k]].T


def prepare(model, null_k: int | None = None) -> dict:
    """What every layer's statistics share: U_eff, its unit rows, the null basis, the model's parts."""
    U_eff, p = effective(model)
    d = U_eff.shape[1]
    k = math.ceil(0.01 * d) if null_k is None else null_k
    return {"U_eff": U_eff, "parts": p, "unit_rows": U_eff / np.linalg.norm(U_eff, axis=1, keepdims=True),
            "null": null_basis(U_eff, k, p["layernorm"] and p["P"] is None)}


def statistics(model, layer: int, counts: np.ndarray | None = None, null_k: int | None = None,
               neurons: np.ndarray | None = None, prepared: dict | None = None) -> dict[str, np.ndarray]:
    """The statistics of `layer` (or of its `neurons`), float64."""
    g = prepared or prepare(model, null_k)
    U_eff, p = g["U_eff"], g["parts"]
    w, w_in = p["layer"](layer)
    if neurons is not None:
        w, w_in = w[neurons], w_in[neurons]
    wc, z = to_u_space(w, p)
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    cos = zn @ g["unit_rows"].T  # [F, V]
    mean = cos.mean(1)
    var = cos.var(1)
    zs = (cos - mean[:, None]) / np.sqrt(var)[:, None]
    out = {"vocab_mean": mean, "vocab_var": var, "vocab_skew": (zs**3).mean(1), "vocab_kurt": (zs**4).mean(1),
           "w_out_norm": np.linalg.norm(wc, axis=1), "w_in_norm": w_in, "null_share": ((zn @ g["null"]) ** 2).sum(1)}
    if counts is None:
        out["freq_corr"] = np.full(len(w), np.nan)
    else:
        c = np.zeros(len(U_eff))
        c[: len(counts)] = counts[: len(U_eff)]
        f = np.log1p(c)
        out["freq_corr"] = np.array([np.corrcoef(e, f)[0, 1] for e in z @ U_eff.T])
    return out


def spread(model, seed: int = 0):
    """Weights N(0, 1) everywhere and a final norm gain far from constant (so that folding it matters)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.randn(param.shape, generator=gen))
            if "norm" in name or "ln_f" in name:
                param.copy_(torch.rand(param.shape, generator=gen) * 2.5 + 0.25)
    return model
