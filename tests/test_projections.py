"""FFN-update projections on tiny OPT and GPT-2 models, against an independent float64 computation, as
collection writes them: `UpdateProjector` layer by layer through `write_projection` into a summary file."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tiny
import torch

from neuron_tui.cache import SummaryWriter, schema
from neuron_tui.core.model import fused, native, projections
from neuron_tui.core.model.adapters import ffn_out_projections

V = tiny.vocab_size()
F = 24  # neurons per layer


def spread(model):
    """OPT's and GPT-2's init (std 0.02) leaves many near-ties among the scores; N(0, 1) spreads them."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 1.0)
    return model


def tiny_opt(seed: int = 0, proj_dim: int | None = None, tie: bool = True):
    return spread(tiny.tiny_opt(seed, ffn_dim=F, word_embed_proj_dim=proj_dim or 32, tie_word_embeddings=tie))


def tiny_gpt2(seed: int = 0):
    return spread(tiny.tiny_gpt2(seed, n_inner=F))


def project_updates(folder, model, top_k=10, n_candidates=10, candidates=None, signs=None, batch_size=None):
    """(attrs, arrays) of the `projection` group that `write_projection` writes into a summary file for
    these candidates and signs (one per layer, or None), read back from the file."""
    projector = projections.UpdateProjector(model, top_k, n_candidates, batch_size, oriented=signs is not None)
    layers = [(None if candidates is None else candidates[layer], None if signs is None else signs[layer])
              for layer in range(projector.n_layers)]
    path = folder / "projection.h5"
    with SummaryWriter(path) as writer:
        projections.write_projection(writer, projector, layers)
    with h5py.File(path, "r") as f:
        group = f[schema.PROJECTION_GROUP]
        return {k: v.item() for k, v in group.attrs.items()}, {name: group[name][()] for name in group}


def reference(model, out_vectors: list[np.ndarray]) -> list[np.ndarray]:
    """Scores [F, V] per layer in float64, computed without the code under test."""
    U = model.get_output_embeddings().weight.detach().double().numpy()
    return [w @ U.T for w in out_vectors]


def check_against(scores: list[np.ndarray], arrays: dict, cands: list[np.ndarray], k: int) -> None:
    for layer, s in enumerate(scores):
        np.testing.assert_array_equal(arrays["promoted_tok"][layer], np.argsort(-s, axis=1, kind="stable")[:, :k])
        np.testing.assert_array_equal(arrays["suppressed_tok"][layer], np.argsort(s, axis=1, kind="stable")[:, :k])
        np.testing.assert_allclose(arrays["promoted_score"][layer], -np.sort(-s, axis=1)[:, :k], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(arrays["suppressed_score"][layer], np.sort(s, axis=1)[:, :k], rtol=1e-4, atol=1e-4)
        c = cands[layer]
        for i in range(s.shape[0]):
            for j, tok in enumerate(c[i]):
                if tok < 0:
                    assert arrays["cand_supp_rank"][layer, i, j] == -1
                    assert np.isnan(arrays["cand_score"][layer, i, j])
                    continue
                assert arrays["cand_supp_rank"][layer, i, j] == int((s[i] < s[i, tok]).sum())
                assert arrays["cand_score"][layer, i, j] == pytest.approx(s[i, tok], rel=1e-4, abs=1e-4)


def random_candidates(n_neurons: int, n_layers: int, Kc: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    cands = [rng.integers(0, V, (n_neurons, Kc)) for _ in range(n_layers)]
    for c in cands:
        c[::5, -2:] = -1  # padded candidates
    return cands


def test_opt_scores_ranks_and_a_planted_suppressor(tmp_path):
    model = tiny_opt()
    fc2 = ffn_out_projections(model)[1]
    E = model.get_input_embeddings().weight
    with torch.no_grad():
        fc2.weight[:, 5] = -E[7]  # neuron 5 of layer 1 writes minus token 7's embedding
    cands = random_candidates(F, 2, 6)
    cands[1][5, :3] = [3, 7, 11]
    attrs, arrays = project_updates(tmp_path, model, top_k=5, n_candidates=6, candidates=cands, batch_size=7)
    assert attrs == {"k": 5, "n_candidates": 6, "tied_embeddings": True, "project_out": False, "oriented": False,
                     "candidates_complete": True, "final_norm": b"layernorm", "null_k": 1, "freq_corr_complete": False}
    vectors = [p.weight.detach().double().numpy().T for p in ffn_out_projections(model)]
    check_against(reference(model, vectors), arrays, cands, 5)
    assert arrays["suppressed_tok"][1, 5, 0] == 7
    assert arrays["cand_supp_rank"][1, 5, 1] == 0
    assert arrays["cand_score"][1, 5, 1] < 0
    assert np.isnan(arrays["cand_cos_in"]).all()  # tied: no separate input embedding
    for name, (dtype, axes) in schema.PROJECTION_DATASETS.items():
        assert arrays[name].dtype == np.dtype(dtype)
        assert arrays[name].shape == {"L,F": (2, F), "L,F,k": (2, F, 5), "L,F,Kc": (2, F, 6)}[axes]


def test_batching_does_not_change_anything(tmp_path, monkeypatch):
    model = tiny_opt(seed=1)
    cands = random_candidates(F, 2, 4, seed=1)
    _, one = project_updates(tmp_path, model, 3, 4, cands, batch_size=1)
    monkeypatch.setattr(projections, "BLOCK_BYTES", 10**9)
    _, whole = project_updates(tmp_path, model, 3, 4, cands)
    for name in one:  # scores may differ in the last float32 bit (BLAS kernels vary with the shape)
        if one[name].dtype == np.float32:
            np.testing.assert_allclose(one[name], whole[name], rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(one[name], whole[name])


def test_gpt2_conv1d_rows_are_output_vectors(tmp_path):
    model = tiny_gpt2()
    c_proj = ffn_out_projections(model)[0]
    wte = model.get_input_embeddings().weight
    with torch.no_grad():
        c_proj.weight[9] = -wte[21]  # Conv1D weight is [in, out]: row 9 is neuron 9's output vector
    cands = random_candidates(F, 2, 3, seed=2)
    attrs, arrays = project_updates(tmp_path, model, 4, 3, cands)
    vectors = [p.weight.detach().double().numpy() for p in ffn_out_projections(model)]
    check_against(reference(model, vectors), arrays, cands, 4)
    assert arrays["suppressed_tok"][0, 9, 0] == 21
    assert attrs["tied_embeddings"] and not attrs["project_out"]


def test_opt_project_out_maps_updates_into_the_embedding_space(tmp_path):
    model = tiny_opt(seed=2, proj_dim=8)
    P = model.model.decoder.project_out.weight.detach()  # [8, 16]
    E = model.get_input_embeddings().weight.detach()  # [V, 8]
    fc2 = ffn_out_projections(model)[0]
    # a hidden-size vector w with P w = -E[30] (right inverse of P)
    w = P.t() @ torch.linalg.solve(P @ P.t(), -E[30])
    with torch.no_grad():
        fc2.weight[:, 2] = w
    cands = random_candidates(F, 2, 3, seed=3)
    attrs, arrays = project_updates(tmp_path, model, 4, 3, cands)
    assert attrs["project_out"]
    Pn = P.double().numpy()
    vectors = [(Pn @ p.weight.detach().double().numpy()).T for p in ffn_out_projections(model)]
    check_against(reference(model, vectors), arrays, cands, 4)
    assert arrays["suppressed_tok"][0, 2, 0] == 30
    # without project_out the scores would not even have the right dimension: the test is not vacuous
    assert ffn_out_projections(model)[0].weight.shape[0] != E.shape[1]


def test_untied_embeddings_give_input_cosines(tmp_path):
    model = tiny_opt(seed=4, tie=False)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 1.0)
    assert model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    cands = random_candidates(F, 2, 3, seed=4)
    attrs, arrays = project_updates(tmp_path, model, 4, 3, cands)
    assert attrs["tied_embeddings"] is False
    E_in = model.get_input_embeddings().weight.detach().double().numpy()
    vectors = [p.weight.detach().double().numpy().T for p in ffn_out_projections(model)]
    check_against(reference(model, vectors), arrays, cands, 4)
    for layer, w in enumerate(vectors):
        for i in range(0, F, 5):
            for j, tok in enumerate(cands[layer][i]):
                got = arrays["cand_cos_in"][layer, i, j]
                if tok < 0:
                    assert np.isnan(got)
                    continue
                want = w[i] @ E_in[tok] / np.linalg.norm(w[i]) / np.linalg.norm(E_in[tok])
                assert got == pytest.approx(want, abs=1e-5)


def test_without_candidates(tmp_path):
    attrs, arrays = project_updates(tmp_path, tiny_opt(), 2, 3, None)
    assert (arrays["cand_tok"] == -1).all() and (arrays["cand_supp_rank"] == -1).all()
    assert np.isnan(arrays["cand_score"]).all()
    assert arrays["promoted_tok"].shape == (2, F, 2)


def test_signs_orient_the_update_of_neurons_that_fire_negative(tmp_path):
    """A gated neuron firing with h < 0 adds -w: its suppressed list is w's promoted list."""
    model = tiny_opt(seed=3)
    signs = [np.ones(F) for _ in model.model.decoder.layers]
    signs[0][4] = -1.0
    _, plain = project_updates(tmp_path, model, top_k=5, n_candidates=0)
    _, oriented = project_updates(tmp_path, model, top_k=5, n_candidates=0, signs=signs)
    np.testing.assert_array_equal(oriented["suppressed_tok"][0, 4], plain["promoted_tok"][0, 4])
    np.testing.assert_allclose(oriented["suppressed_score"][0, 4], -plain["promoted_score"][0, 4], rtol=1e-6)
    np.testing.assert_array_equal(oriented["promoted_tok"][0, 3], plain["promoted_tok"][0, 3])  # +1: unchanged


@pytest.mark.parametrize("V", [1, 15, 16, 2047, 2048, 2049, 5000])
def test_the_cpu_kernels_ranks_are_numpys_comparison(V):
    """cpu_vocab.c's count of scores strictly below each value, against numpy's `<` on rows with ties,
    +-inf and NaN (below nothing, and nothing below it), read through a row stride wider than a row,
    for lengths around its 16-wide steps and 2,048-item chunks."""
    lib = native.library()
    assert lib is not None, native.failure()
    rng = np.random.default_rng(V)
    wide = rng.integers(-4, 5, (7, V + 3)).astype(np.float32)  # few distinct values: many ties
    wide[0, : min(V, 3)] = [np.nan, np.inf, -np.inf][: min(V, 3)]
    scores = torch.from_numpy(wide)[:, :V]  # row stride V + 3
    values = torch.from_numpy(np.concatenate([wide[:, :3][:, : min(V, 3)], rng.integers(-5, 6, (7, 4)),
                                              [[np.nan, np.inf, -np.inf]] * 7], 1).astype(np.float32))
    got = native.count_below(lib, scores, values)
    want = (scores.numpy()[:, None, :] < values.numpy()[:, :, None]).sum(-1)
    np.testing.assert_array_equal(got.numpy(), want)
    assert got.dtype == torch.int64 and want.max() > 0


@pytest.mark.parametrize("V", [3, 16, 17, 40, 2049])
def test_the_cpu_kernels_top_and_bottom_are_a_stable_sorts(V):
    """cpu_vocab.c's k highest and k lowest scores per row, against a stable sort's first k (of equal
    scores the earlier item first; NaN above every number, as torch.topk puts it): rows of ties, +-inf,
    NaN, k up to V, read through a row stride wider than a row."""
    lib = native.library()
    assert lib is not None, native.failure()
    rng = np.random.default_rng(V)
    wide = rng.integers(-3, 4, (6, V + 5)).astype(np.float32)  # few distinct values: ties at every cut
    wide[1] = rng.standard_normal(V + 5)  # one row without ties
    wide[2, [0, V // 2, V - 1]] = [np.nan, np.inf, -np.inf]
    wide[3, : V // 2] = np.nan  # more NaN than k
    scores = torch.from_numpy(wide)[:, :V]
    a = scores.numpy()
    for k in sorted({1, 3, min(10, V), V}):
        top_val, top_idx, bot_val, bot_idx = native.top_bottom(lib, scores, k)
        want_top = np.lexsort((-a, ~np.isnan(a)), axis=1)[:, :k]  # NaN first, then descending, stable
        want_bot = np.argsort(a, axis=1, kind="stable")[:, :k]  # ascending, NaN last
        np.testing.assert_array_equal(top_idx.numpy(), want_top, err_msg=f"k={k}")
        np.testing.assert_array_equal(bot_idx.numpy(), want_bot, err_msg=f"k={k}")
        np.testing.assert_array_equal(top_val.numpy(), np.take_along_axis(a, want_top, 1))
        np.testing.assert_array_equal(bot_val.numpy(), np.take_along_axis(a, want_bot, 1))


def test_the_kernel_and_numpy_give_the_same_projections(tmp_path, monkeypatch):
    """The whole projection group with the CPU kernels (top-k, ranks, sums of powers) and with the eager
    paths (NEURON_TUI_COMPILE=0): ranks equal, scores and statistics to float rounding, the kernel's
    tokens a stable sort's (torch.topk's order of equal scores is its own); duplicate vocabulary rows
    make exact ties among the scores, and candidates sit on them."""
    model = tiny_opt(seed=2)
    with torch.no_grad():
        E = model.get_input_embeddings().weight
        E[40:50] = E[3]  # ten more copies of token 3's row (tied: the unembedding too)
    cands = random_candidates(F, 2, 6, seed=2)
    cands[0][:, 0] = 3
    cands[1][:, 1] = 45
    projector = projections.UpdateProjector(model, 5, 6)
    assert projector.lib is not None  # the kernels ran
    _, kernel = project_updates(tmp_path, model, 5, 6, cands)
    monkeypatch.setenv(fused.ENV, "0")
    assert projections.UpdateProjector(model, 5, 6).lib is None
    _, eager = project_updates(tmp_path, model, 5, 6, cands)
    assert set(kernel) == set(eager)
    for name in kernel:
        if kernel[name].dtype == np.float32:
            np.testing.assert_allclose(kernel[name], eager[name], rtol=2e-5, atol=1e-6, equal_nan=True, err_msg=name)
        elif name not in ("promoted_tok", "suppressed_tok"):
            np.testing.assert_array_equal(kernel[name], eager[name], err_msg=name)
    vectors = [p.weight.detach().double().numpy().T for p in ffn_out_projections(model)]
    ties = 0
    for layer, s in enumerate(reference(model, vectors)):  # the copies' ties counted as not below
        at = np.take_along_axis(s, cands[layer].clip(0), 1)
        want = np.where(cands[layer] >= 0, (s[:, None, :] < at[:, :, None]).sum(-1), -1)
        np.testing.assert_array_equal(kernel["cand_supp_rank"][layer], want)
        s32 = s.astype(np.float32)
        np.testing.assert_array_equal(kernel["promoted_tok"][layer], np.argsort(-s32, 1, kind="stable")[:, :5])
        np.testing.assert_array_equal(kernel["suppressed_tok"][layer], np.argsort(s32, 1, kind="stable")[:, :5])
        ties += int(np.isin(kernel["promoted_tok"][layer], np.r_[3, 40:50]).sum())
    assert ties > 0  # some neuron promotes token 3: its copies tie, in the order of their items
    assert (kernel["cand_supp_rank"][0][:, 0] <= V - 11).all()  # token 3 and its ten copies: none below another
