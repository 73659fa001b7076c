"""The compiled updates (core.model.fused: the CPU's C kernel, core.model.native, and `dense_stats` compiled
by Inductor as CUDA runs it) against the eager one, the reference: counts, events, levels, histograms and
sign cases exactly, float sums to 1e-6 relative, on every architecture the suite builds; one Inductor
compilation per run, however the last batch is cut; a failed build or compilation is one line.

The rest of the suite counts with the kernel as a user's run does (tests/conftest.py); these tests hold
it, and Inductor's CPU code, to the eager update, with small shapes, so Inductor's work is seconds and
its on-disk cache makes reruns cheaper still."""

import numpy as np
import pytest
import torch
from test_accumulators import reference_histogram
from test_collect import run_tiny
from tiny import tiny_gpt2, tiny_llama, tiny_opt

from neuron_tui.cache.schema import HIST_BINS
from neuron_tui.core.model import fused, native
from neuron_tui.core.model.accumulators import LayerAccumulator
from neuron_tui.core.model.batches import BatchIndex
from neuron_tui.core.model.contexts import CONTEXT_WIDTH
from neuron_tui.core.model.fused import FusedUpdate, dense_stats
from neuron_tui.core.model.histograms import histogram_edges

EXACT = ("tokens", "tau", "act_count", "act_count_pos", "pos_count", "act_max", "top_val", "top_pos", "ctx_val",
         "event_level", "event_offsets", "event_pos", "hist_count")
SUMS = ("act_sum", "act_sum_pos", "h_sum")
GATED = ("sign_count", "sign_top_val", "sign_top_pos")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def assert_same_sums(got: np.ndarray, want: np.ndarray, scale: np.ndarray, name: str) -> None:
    """Equal to 1e-6 relative, relative to the sum of |terms| where terms cancel (a signed sum near 0)."""
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * float(np.max(scale, initial=0.0)), err_msg=name)


@pytest.mark.parametrize("build", [tiny_opt, tiny_gpt2, tiny_llama], ids=["opt-relu", "gpt2", "llama-gated-abs"])
def test_a_compiled_collection_equals_the_eager_one(build, tmp_path, monkeypatch):
    """A whole collection (40 sequences in batches of 3, the last of 1) with the CPU's kernel equals the
    eager one; the kernel ran every batch of every layer, the short last one included."""
    model = build()
    with run_tiny(model, tmp_path / "eager") as s:
        eager = {name: s.read(name) for name in EXACT + SUMS + (GATED if s.has("sign_count") else ())}
        magnitude = np.abs(s.read("act_sum")) + np.abs(s.read("h_sum"))
    monkeypatch.setenv(fused.ENV, "1")
    call, ran = native.update, []

    def spied(*args, **kwargs):
        ran.append(args[1].shape[0])  # (lib, h, ...): the batch's sequences
        return call(*args, **kwargs)

    monkeypatch.setattr(native, "update", spied)
    with run_tiny(model, tmp_path / "compiled") as s:
        for name, want in eager.items():
            got = s.read(name)
            if name in SUMS:
                assert_same_sums(got, want, magnitude, name)
            else:
                np.testing.assert_array_equal(got, want, err_msg=name)
    assert ("sign_count" in eager) == (build is tiny_llama)
    layers = model.config.num_hidden_layers  # calibration runs eagerly; 13 batches of 3 and 1 of 1
    assert sorted(ran) == [1] * layers + [3] * 13 * layers


PATHS = [pytest.param("cpu", True, id="cpu-kernel"), pytest.param("cpu", False, id="cpu-inductor"),
         pytest.param("cuda", False, id="cuda-inductor",
                      marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device, kernel", PATHS)
@pytest.mark.parametrize("rule, dtype, tau, gated", [("abs", torch.bfloat16, 0.3, True), ("abs", torch.float32, 2.0, True),
                                                     ("relu", torch.float32, 0.0, False), ("relu", torch.bfloat16, 1.5, False)],
                         ids=["bf16-abs-many", "f32-abs-few", "f32-relu-half", "bf16-relu-few"])
def test_the_compiled_accumulator_equals_the_eager_one(rule, dtype, tau, gated, device, kernel, monkeypatch):
    """One layer fed the same batches both ways: gated or not, bf16 with a tau that bf16 cannot hold
    (the compiled comparison runs in float32 against tau rounded as the eager bf16 comparison rounds
    it), rows where many fire and rows where few do, values exactly on the histogram's edges and
    beyond its outer ones; an event sample of 6 whose levels rise within a batch. The kernel splits 600
    neurons among 3 threads (blocks of 256 and a last range that is no whole cache line)."""
    S, T, F, batch = 7, 16, 600, 3
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(S, T, F, generator=gen)
    edges = histogram_edges(tau, 2.0, rule)  # a small peak: values beyond the outer edges
    h[1, 2, :40] = torch.as_tensor(edges[1:41])  # on the edges (bf16 rounds some off them)
    h, up = h.to(dtype), torch.randn(S, T, F, generator=gen).to(dtype)
    monkeypatch.setattr(native.torch, "get_num_threads", lambda: 3)
    update = FusedUpdate(compile=True, native=kernel)
    accs = [LayerAccumulator(F, T, 6, 3, torch.device(device), rule, tau, edges, gated=gated, fused=f)
            for f in (None, update)]
    for start in range(0, S, batch):
        positions = np.arange(start * T, min(S, start + batch) * T).reshape(-1, T)
        for acc in accs:
            acc.update(h[start : start + batch].to(device), BatchIndex(positions, torch.device(device)),
                       up[start : start + batch].to(device) if gated else None)
    eager, compiled = (acc.state() for acc in accs)
    assert update.compile_seconds is not None and update.failure is None
    for name in ("act_count", "act_count_pos", "pos_count", "act_max", "top_val", "top_pos", "ctx_val", "level",
                 "hist_count") + (("sign_count", "sign_top_val", "sign_top_pos") if gated else ()):
        np.testing.assert_array_equal(getattr(compiled, name), getattr(eager, name), err_msg=name)
    assert [e.tolist() for e in compiled.events] == [e.tolist() for e in eager.events]
    for name in ("level_hist", "fill"):  # what the next batch's levels are computed from
        np.testing.assert_array_equal(getattr(accs[1].events, name).cpu(), getattr(accs[0].events, name).cpu())
    magnitude = h.float().abs().sum((0, 1)).numpy()
    for name in SUMS:
        assert_same_sums(getattr(compiled, name), getattr(eager, name), magnitude, name)
    fired = eager.act_count.sum()
    assert 0 < fired < S * T * F and eager.hist_count[-1].sum() > 0  # some fire, not all; some beyond the edges
    assert (eager.level > 0).any()  # the sample's levels rose


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tau, peak, rule", [(0.0, 5.0, "relu"), (0.3, 7.0, "relu"), (1.0, 0.9, "relu"),
                                            (0.1, 3.0, "abs"), (0.0, 2.0, "abs"), (0.5, 3.0, "linear")])
def test_the_kernels_bins_are_the_histograms_around_every_edge(tau, peak, rule, dtype):
    """Rows where every value fires, so the kernel bins them a block at a time (cpu_update.c's
    count_bins: 16 at a time from log2 |h| where the CPU has AVX-512, checked to be the path taken; its
    step table elsewhere and for edges that are not log-spaced, as "linear" here): each neuron's
    histogram is searchsorted's, for the 601 float32s around every edge (both signs under the abs rule),
    +-inf, the largest floats, and 100,000 log-uniform values beyond the edges on either side."""
    linear = rule == "linear"
    edges = np.linspace(tau, peak, HIST_BINS + 1).astype(np.float32) if linear else histogram_edges(tau, peak, rule)
    rule = "relu" if linear else rule
    magnitude = (np.abs(edges).view(np.int32)[:, None] + np.arange(-300, 301)).ravel()
    gen = np.random.default_rng(3)
    spread = 10.0 ** gen.uniform(-40, np.log10(edges[-1]) + 2, 100_000)
    x = np.concatenate([magnitude[magnitude >= 0].view(np.float32), [np.inf, np.finfo(np.float32).max],
                        spread.astype(np.float32)])
    x = torch.from_numpy(np.concatenate([x, -x]) if rule == "abs" else x).to(dtype).float().numpy()
    value = np.abs(x) if rule == "abs" else x
    x = x[(value > tau) & (value > torch.tensor(tau).to(dtype).item())]  # all fire, however h's dtype rounds tau
    T, F = 8, 277  # blocks whose last 16-lane step is cut
    x = x[: len(x) // (T * F) * (T * F)]
    h = torch.from_numpy(x.reshape(-1, T, F)).to(dtype)
    lib = native.library()
    acc = LayerAccumulator(F, T, 6, 3, torch.device("cpu"), rule, tau, edges, fused=FusedUpdate(compile=True))
    acc.update(h, BatchIndex(np.arange(h.shape[0] * T).reshape(-1, T), torch.device("cpu")))
    got = acc.state().hist_count
    assert acc.fused.compile_seconds is not None  # the kernel ran
    assert native.vector_bins(lib, acc.histogram.upper, rule == "abs") == ("avx512f" in native._cpu_flags() and not linear)
    np.testing.assert_array_equal(got, reference_histogram(x.reshape(-1, T, F), np.ones(h.shape, bool), edges))
    assert (got[0] > 0).any() and (got[-1] > 0).any() and (got > 0).sum(0).min() > 10  # every side, many bins


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_kernels_context_windows_are_torchs_float16(dtype):
    """The kernel merges the top contexts itself and writes their windows as float16 (cpu_update.c,
    to_half): bit for bit what torch's conversion gives, for values float16 rounds to even, to a
    subnormal, to zero (with its sign) and to infinity; windows cut by a sequence's ends are NaN."""
    S, T, F = 5, 24, 300
    special = torch.tensor([1 / 3, -2 / 3, 1 + 2**-11, 1 + 3 * 2**-11, -(1 + 2**-11), 2049.0, 2051.0, 65504.0,
                            65519.0, 65520.0, 70000.0, -1e9, 6.1e-5, 6.09e-5, 1e-5, -3e-7, 5.96e-8, 2.99e-8,
                            2.98e-8, 1e-9, -1e-30, -0.0, 0.0, 1e-40])
    gen = torch.Generator().manual_seed(1)
    h = special[torch.randint(len(special), (S, T, F), generator=gen)]
    strongest = torch.randint(T, (S, F), generator=gen)
    strongest[0, :10] = torch.tensor([0, 1, 2, T - 1, T - 2, T - 3, T - 4, T - 5, 11, 12])  # windows cut
    h.scatter_(1, strongest[:, None, :], 1e6 + torch.rand(S, 1, F, generator=gen))
    h = h.to(dtype)
    accs = [LayerAccumulator(F, T, 8, 3, torch.device("cpu"), "relu", 0.0, histogram_edges(0.0, 2e6, "relu"),
                             fused=f) for f in (None, FusedUpdate(compile=True))]
    for start in (0, 2):  # the second batch merges into kept slots
        positions = np.arange(start * T, (start + 3) * T).reshape(-1, T)[: S - start]
        for acc in accs:
            acc.update(h[start : start + 3], BatchIndex(positions, torch.device("cpu")))
    eager, kernel = (acc.state() for acc in accs)
    assert accs[1].fused.compile_seconds is not None  # the kernel ran
    np.testing.assert_array_equal(kernel.top_pos, eager.top_pos)
    np.testing.assert_array_equal(kernel.ctx_val.view(np.uint16), eager.ctx_val.view(np.uint16))
    assert np.isnan(eager.ctx_val).any() and np.isinf(eager.ctx_val).any() and (eager.ctx_val.view(np.uint16) == 0x8000).any()


def test_the_kernels_top_contexts_keep_the_sorts_order_among_ties_and_many_sequences():
    """Values from a handful of levels, so most sequences tie with kept slots and with each other, in
    batches of 70 sequences (more than the kernel's chunk of 64): the kernel's slots are the stable sort's
    of the eager merge (the earlier of equals first), with their positions and windows."""
    S, T, F = 150, 4, 40
    gen = torch.Generator().manual_seed(2)
    h = torch.randint(0, 6, (S, T, F), generator=gen).float()
    accs = [LayerAccumulator(F, T, 8, 5, torch.device("cpu"), "relu", 0.5, histogram_edges(0.5, 6.0, "relu"),
                             fused=f) for f in (None, FusedUpdate(compile=True))]
    for start in range(0, S, 70):
        positions = np.arange(start * T, min(S, start + 70) * T).reshape(-1, T)
        for acc in accs:
            acc.update(h[start : start + 70], BatchIndex(positions, torch.device("cpu")))
    eager, kernel = (acc.state() for acc in accs)
    assert accs[1].fused.compile_seconds is not None
    for name in ("top_val", "top_pos"):
        np.testing.assert_array_equal(getattr(kernel, name), getattr(eager, name), err_msg=name)
    np.testing.assert_array_equal(kernel.ctx_val.view(np.uint16), eager.ctx_val.view(np.uint16))
    assert (eager.top_val == 5).all() and (np.diff(eager.top_pos, axis=0) > 0).all()  # ties, earliest first


def test_the_kernel_reads_the_event_and_context_buffers_in_either_layout():
    """EventSample and TopContexts keep their buffers neuron-major on the CPU (what the kernel moves for
    one neuron shares cache lines); the kernel reads them through their strides, so slot-major ones (as
    on an accelerator) give the same sample, levels, level histogram and context windows."""
    S, T, F = 6, 16, 100
    h = torch.randn(S, T, F, generator=torch.Generator().manual_seed(3))
    accs = [LayerAccumulator(F, T, 5, 3, torch.device("cpu"), "abs", 0.5, histogram_edges(0.5, 3.0, "abs"),
                             fused=FusedUpdate(compile=True)) for _ in range(2)]
    events = accs[1].events
    assert events.ev_pos.stride() == (1, 6)  # neuron-major: [slot, neuron] over an [F, C + 1] tensor
    events.ev_pos, events.ev_z, events.level_hist = (t.contiguous() for t in (events.ev_pos, events.ev_z,
                                                                                events.level_hist))
    assert accs[1].top.ctx_val.stride()[-1] == 3 * CONTEXT_WIDTH
    accs[1].top.ctx_val = accs[1].top.ctx_val.contiguous()
    for start in range(0, S, 2):
        for acc in accs:
            acc.update(h[start : start + 2], BatchIndex(np.arange(start * T, (start + 2) * T).reshape(2, T),
                                                        torch.device("cpu")))
    a, b = (acc.state() for acc in accs)
    assert [e.tolist() for e in a.events] == [e.tolist() for e in b.events] and (a.level > 0).any()
    np.testing.assert_array_equal(a.level, b.level)
    np.testing.assert_array_equal(accs[0].events.level_hist, accs[1].events.level_hist)
    np.testing.assert_array_equal(a.top_pos, b.top_pos)
    np.testing.assert_array_equal(a.ctx_val.view(np.uint16), b.ctx_val.view(np.uint16))
    assert np.isfinite(a.ctx_val).any()


def test_one_compilation_however_the_last_batch_is_cut():
    """The run's batch shape compiles once; other shapes (a short last batch, of any size) take the
    eager update (None) instead of compiling again, and every layer (another tau) shares the graph."""
    from torch._dynamo.utils import counters

    T, F = 8, 24
    update = FusedUpdate(compile=True, native=False)  # Inductor, as CUDA runs it
    before = counters["stats"]["unique_graphs"]
    full = torch.randn(4, T, F)
    for layer_tau in (0.0, 0.5, 1.0):  # three layers
        out = update(full, torch.tensor(layer_tau), False, False)
        assert out is not None
        np.testing.assert_array_equal(out[1].numpy(), (full > layer_tau).sum(0).numpy())
    for short in (1, 2, 3):
        assert update(torch.randn(short, T, F), torch.tensor(0.0), False, False) is None
    assert update(torch.randn(4, T, F), torch.tensor(0.0), False, False) is not None
    assert counters["stats"]["unique_graphs"] - before <= 1


def test_a_failed_compilation_is_one_line_and_counts_eagerly(capsys, monkeypatch):
    """No compiler (here: a backend that raises): one line on stderr, then None (the eager update) for
    every call, with no second try."""
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nmore detail")

    update = FusedUpdate(compile=True, native=False)
    monkeypatch.setattr(update._stats, "fn", broken)
    h = torch.randn(2, 4, 5)
    assert update(h, torch.tensor(0.0), False, False) is None
    assert update(h, torch.tensor(0.0), False, False) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "torch.compile of the accumulator update failed" in err
    assert "no C++ compiler found" in err and "more detail" not in err


def test_dense_stats_by_hand():
    """The reference function itself: abs rule, tau 1, one sequence of three positions, two neurons."""
    h = torch.tensor([[[2.0, -0.5], [-3.0, 1.5], [0.5, -1.0]]])
    fired, per_pos, count_pos, sum_pos, sum_fired, h_sum, seq_max, seq_arg = dense_stats(h, torch.tensor(1.0), True,
                                                                                          True)
    assert per_pos.tolist() == [[1, 0], [1, 1], [0, 0]] and fired.sum().item() == 3
    assert count_pos.tolist() == [1, 1] and sum_pos.tolist() == [2.0, 1.5] and sum_fired.tolist() == [-1.0, 1.5]
    assert h_sum.tolist() == [-0.5, 0.0] and seq_max.tolist() == [[3.0, 1.5]] and seq_arg.tolist() == [[1, 1]]


def test_compiling_is_the_default_and_the_environment_says_otherwise(monkeypatch):
    """Compiled by default (fused.compile_wanted); NEURON_TUI_COMPILE says otherwise either way."""
    monkeypatch.delenv(fused.ENV, raising=False)
    assert fused.compile_wanted()
    monkeypatch.setenv(fused.ENV, "1")
    assert fused.compile_wanted()
    monkeypatch.setenv(fused.ENV, "0")
    assert not fused.compile_wanted()
    assert FusedUpdate()(torch.ones(1, 2, 3), torch.tensor(0.0), False, False) is None  # 0: eager


def test_a_kernel_that_cannot_be_built_is_one_line_and_counts_eagerly(capsys, monkeypatch, tmp_path):
    """No C compiler: one line on stderr, then the eager update (None) for every batch, no second try and
    no Inductor on the CPU (it needs the same compiler)."""
    monkeypatch.setattr(native, "_LIBRARY", None)
    monkeypatch.setattr(native, "_FAILURE", None)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    update = FusedUpdate(compile=True)
    h = torch.randn(2, 4, 5)
    for _ in range(2):
        assert update.native(h, None) is None
        assert update(h, torch.tensor(0.0), False, False) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the CPU kernels could not be built" in err
    assert update.failure is not None and "no-such-compiler" in update.failure


def test_the_kernel_is_built_once_per_machine(monkeypatch, tmp_path):
    """The library lands in $NEURON_TUI_KERNELS under a name keyed by the sources, the compiler and the CPU;
    a second build finds it there and compiles nothing."""
    monkeypatch.setenv(native.ENV, str(tmp_path / "kernels"))
    built = native.build()
    files = list((tmp_path / "kernels").glob("cpu_kernels-*.so"))
    assert len(files) == 1 and built.neuron_tui_update is not None
    monkeypatch.setattr(native, "_compile", lambda *args: pytest.fail("compiled again"))
    native.build()
