"""The projection group's per-neuron statistics (issue 22; core/model/projections.py): against the slow
numpy path of tests/vocab_reference.py on tiny OPT, GPT-2 and Llama models (LayerNorm, Conv1D, RMSNorm,
project_out), through `write_projection` into a summary file; planted prediction, suppression, entropy
and token-frequency neurons in models built here, found for what they are while random neurons look
like random directions; the final norm folded in; null_k; a merge without the model."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import tiny
import torch
import vocab_reference as ref
from planted import DARK, D, F, V, planted_llama, set_out, unit, zipf_counts
from transformers import OPTConfig, OPTForCausalLM

from neuron_tui.cache import Summary, SummaryWriter, schema
from neuron_tui.core.model import fused, native, projections
from neuron_tui.core.model.adapters import ffn_out_projections

STATS = projections.STATISTICS


def project(folder, model, counts=None, name="p.h5", **kw) -> tuple[dict, dict]:
    """(attrs, {statistic: [L, F]}) of the projection group written for `model`; `counts`: the
    summary's token_occ, written first (as collection does)."""
    projector = projections.UpdateProjector(model, n_candidates=0, **kw)
    path = folder / name
    with SummaryWriter(path) as writer:
        if counts is not None:
            writer.put("token_occ", np.asarray(counts, dtype=np.int64))
        projections.write_projection(writer, projector, [(None, None)] * projector.n_layers)
    with h5py.File(path, "r") as f:
        group = f[schema.PROJECTION_GROUP]
        return {k: v.item() if hasattr(v, "item") else v for k, v in group.attrs.items()}, \
            {n: group[n][()] for n in STATS}


def check(got: dict, want: dict, layer: int, rtol: float = 2e-4) -> None:
    for name in STATS:
        np.testing.assert_allclose(got[name][layer], want[name], rtol=rtol, atol=2e-6, equal_nan=True, err_msg=name)


MODELS = {
    "llama (RMSNorm, gated)": lambda: ref.spread(tiny.tiny_llama()),
    "opt (LayerNorm)": lambda: ref.spread(tiny.tiny_opt(ffn_dim=24)),
    "gpt2 (LayerNorm, Conv1D)": lambda: ref.spread(tiny.tiny_gpt2(n_inner=24)),
    "opt with project_out": lambda: ref.spread(tiny.tiny_opt(ffn_dim=24, word_embed_proj_dim=16)),
}


@pytest.mark.parametrize("kernels", [True, False], ids=["C kernels", "torch"])
@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_statistics_equal_the_slow_path(tmp_path, monkeypatch, make, kernels):
    """Every statistic of every neuron, with small blocks of neurons and of vocabulary items (so the
    sums run over many blocks), against the float64 [F, V] computation: with the CPU kernels' sums of
    powers and with torch's (NEURON_TUI_COMPILE=0)."""
    monkeypatch.setenv(fused.ENV, "1" if kernels else "0")
    assert (projections.UpdateProjector(make(), n_candidates=0).lib is not None) == kernels
    model = make()
    counts = zipf_counts(tiny.vocab_size())
    attrs, got = project(tmp_path, model, counts, batch_size=5, vocab_block=7)
    assert attrs["freq_corr_complete"] is True or attrs["freq_corr_complete"] == 1
    for layer in range(len(ffn_out_projections(model))):
        check(got, ref.statistics(model, layer, counts), layer)
    _, whole = project(tmp_path, model, counts, name="whole.h5")  # default blocks: the same numbers
    for name in STATS:
        np.testing.assert_allclose(got[name], whole[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [1, 15, 16, 17, 2048, 2053])
def test_the_cpu_kernels_sums_of_powers_are_float64s(n):
    """cpu_vocab.c's sums of x, x^2, x^3 and x^4 per row, added to what the sums hold, against numpy's
    float64 sums, for lengths around its 16-wide steps."""
    lib = native.library()
    assert lib is not None, native.failure()
    x = torch.from_numpy(np.random.default_rng(n).standard_normal((5, n)).astype(np.float32) * 3)
    sums = torch.arange(20, dtype=torch.float64).view(4, 5).contiguous()
    native.power_sums(lib, x, sums)
    x64 = x.double().numpy()
    want = np.arange(20.0).reshape(4, 5) + np.stack([(x64**p).sum(1) for p in (1, 2, 3, 4)])
    np.testing.assert_allclose(sums.numpy(), want, rtol=1e-12, atol=1e-9)


# ---- planted neurons ---------------------------------------------------------------------------------------

def test_planted_prediction_suppression_entropy_and_frequency_neurons(tmp_path):
    model, counts, n, gain = planted_llama()
    U_eff, _ = ref.effective(model)
    token = 17
    set_out(model, 0, 3.0 * unit(U_eff[token]))  # prediction: along one (effective) unembedding row
    set_out(model, 1, -3.0 * unit(U_eff[token]))  # suppression: along its negative
    q = unit(n / gain)  # U_eff q = U (gain * q) ∝ U n ≈ 0: the null direction as U_eff sees it
    set_out(model, 2, 40.0 * q)  # entropy: a large output in the null space
    f = np.log1p(counts)
    set_out(model, 3, np.linalg.lstsq(U_eff, f - f.mean(), rcond=1e-3)[0])  # token frequency
    attrs, got = project(tmp_path, model, counts)
    s = {name: got[name][0] for name in STATS}
    check(got, ref.statistics(model, 0, counts), 0)

    assert s["vocab_kurt"][0] > 10 and s["vocab_skew"][0] > 1  # Gurnee et al.: kurtosis > 10, skew > 0
    assert s["vocab_kurt"][1] > 10 and s["vocab_skew"][1] < -1  # ... skew < 0
    assert s["vocab_kurt"][1] == pytest.approx(s["vocab_kurt"][0], rel=1e-4)  # w -> -w: the same kurtosis
    assert s["null_share"][2] > 0.99 and s["w_out_norm"][2] == pytest.approx(40.0, rel=1e-5)
    assert abs(s["freq_corr"][3]) > 0.95
    k = attrs["null_k"]
    assert k == math.ceil(0.01 * D) == 3
    rest = np.arange(4, F)  # random neurons: like random directions
    assert np.abs(s["vocab_skew"][rest]).max() < 0.5 and np.abs(s["vocab_kurt"][rest] - 3).max() < 1.0
    assert 0.3 * k / D < s["null_share"][rest].mean() < 3 * k / D and s["null_share"][rest].max() < 10 * k / D
    assert np.abs(s["freq_corr"][rest]).max() < 0.6
    assert np.abs(s["vocab_mean"]).max() < 0.05
    # the fold is what finds the entropy neuron: against U without the gain its share is far from 1
    U_plain = ref.parts(model)["U"] - ref.parts(model)["U"].mean(0)
    no_fold = ref.null_basis(U_plain, k, False)
    assert ((q @ no_fold) ** 2).sum() < 0.9


def test_null_k_is_a_parameter_stored_with_the_group(tmp_path):
    model, counts, _, _ = planted_llama(seed=2)
    attrs, got = project(tmp_path, model, counts, null_k=8)
    assert attrs["null_k"] == 8
    check(got, ref.statistics(model, 0, counts, null_k=8), 0)
    assert 0.3 * 8 / D < got["null_share"][0].mean() < 3 * 8 / D
    with pytest.raises(ValueError, match="null_k"):
        projections.UpdateProjector(model, null_k=D + 1)


def test_layernorm_folds_its_gain_and_removes_the_all_ones_direction(tmp_path):
    """OPT (final LayerNorm): U_eff is U * gain centred over d and over the vocabulary; an output
    vector's component along the all-ones direction, which LayerNorm removes, counts for nothing (not
    in its norm, not in its null-space share), and the null space leaves that direction out."""
    torch.manual_seed(0)
    model = ref.spread(OPTForCausalLM(OPTConfig(vocab_size=V, hidden_size=D, num_hidden_layers=1, ffn_dim=F,
                                                num_attention_heads=4, max_position_embeddings=16,
                                                word_embed_proj_dim=D)).eval())
    rng = np.random.default_rng(3)
    gain = ref.parts(model)["gain"]
    m = unit(rng.normal(size=D))
    m = unit(m - m.mean())  # orthogonal to all-ones: LayerNorm lets it through
    nul = unit(gain * m)
    U = ref.parts(model)["U"]
    with torch.no_grad():
        model.lm_head.weight.copy_(torch.as_tensor(U + np.outer((DARK - 1) * (U @ nul), nul)))  # U (gain m) ≈ 0
    noise = rng.normal(size=D)
    set_out(model, 0, 30.0 * m)  # an entropy neuron
    set_out(model, 1, 50.0 * np.ones(D) + noise)  # a huge all-ones component and a small rest
    counts = zipf_counts(V)
    attrs, got = project(tmp_path, model, counts)
    assert attrs["final_norm"] in ("layernorm", b"layernorm") and attrs["null_k"] == math.ceil(0.01 * D)
    check(got, ref.statistics(model, 0, counts), 0)
    assert got["null_share"][0, 0] > 0.99 and got["w_out_norm"][0, 0] == pytest.approx(30.0, rel=1e-5)
    assert got["w_out_norm"][0, 1] == pytest.approx(np.linalg.norm(noise - noise.mean()), rel=1e-4)
    assert got["null_share"][0, 1] < 0.2


def test_rmsnorm_gain_is_read_from_the_module_itself():
    """Llama's RMSNorm scales by its weight, Gemma's by 1 + weight: the gain comes from the module
    applied to the all-ones vector, so both fold in right (up to a global factor no statistic sees)."""
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    weight = torch.linspace(-0.5, 2.0, 16)
    for norm, expected in ((LlamaRMSNorm(16), weight), (GemmaRMSNorm(16), 1.0 + weight)):
        with torch.no_grad():
            norm.weight.copy_(weight)
        gain, kind = projections.norm_gain(norm)
        assert kind == "rmsnorm"
        ratio = gain / expected
        torch.testing.assert_close(ratio, torch.full_like(ratio, ratio[0].item()), rtol=1e-5, atol=1e-6)
        assert ratio[0] == pytest.approx(1.0, abs=1e-4)
    gain, kind = projections.norm_gain(torch.nn.LayerNorm(16))
    assert kind == "layernorm" and torch.equal(gain, torch.ones(16))
    assert projections.norm_gain(None) == (None, "none")


def test_without_token_counts_freq_corr_is_unknown_and_a_zero_vector_has_no_direction(tmp_path):
    model = ref.spread(tiny.tiny_llama())
    set_out(model, 3, np.zeros(32))
    attrs, got = project(tmp_path, model)
    assert not attrs["freq_corr_complete"] and np.isnan(got["freq_corr"]).all()
    assert np.isfinite(got["vocab_kurt"][1]).all() and np.isfinite(got["null_share"][1]).all()
    assert np.isnan(got["vocab_kurt"][0, 3]) and np.isnan(got["null_share"][0, 3]) and got["w_out_norm"][0, 3] == 0


def test_a_merge_without_the_model_copies_the_weight_statistics_and_leaves_freq_corr_unknown(tmp_path):
    model = ref.spread(tiny.tiny_llama())
    readers, handles = [], []
    for i, counts in enumerate((zipf_counts(tiny.vocab_size(), 1), zipf_counts(tiny.vocab_size(), 2))):
        project(tmp_path, model, counts, name=f"shard{i}.h5")
        handles.append(Summary(tmp_path / f"shard{i}.h5", h5py.File(tmp_path / f"shard{i}.h5", "r")))
        readers.append(handles[-1].projection)
    try:
        layer = 1
        out = projections.assembled_statistics(readers, layer)
        assert set(out) == set(STATS)
        for name in projections.WEIGHT_STATISTICS:  # the weights' own: one set for every shard
            np.testing.assert_array_equal(out[name], readers[1].read(name, layer))
        assert np.isnan(out["freq_corr"]).all()
        assert not np.array_equal(readers[0].read("freq_corr", layer), readers[1].read("freq_corr", layer))
    finally:
        for h in handles:
            h.close()
    older = tmp_path / "older.h5"
    with SummaryWriter(older) as w:
        w.put("promoted_tok", np.zeros((3, 4, 2), np.int32), group=schema.PROJECTION_GROUP)
    with h5py.File(older, "r") as f:
        old = Summary(older, f, owner=False).projection
        assert not old.has("vocab_kurt")  # an older summary: absent, and the merge cannot assemble them
        assert projections.assembled_statistics([old, readers[0]], 0) is None
