"""Collection throughput as a ratio of the bare forward pass (same model, batches, device, one run).

    python bench/collect.py                       # SmolLM2 (GGUF), builtin corpus, CPU
    python bench/collect.py --model opt-125m-random   # also opt-1.3b-random, opt-6.7b-random
    python bench/collect.py --device cuda         # unchanged on a GPU box

    NEURON_TUI_COMPILE=0 python bench/collect.py  # the eager update (the default compiles it)

Prints tokens/s of (a) the bare forward pass, (b) neuron-tui's hooks + on-device accumulators, (c) the
plain approach a researcher would write first (hooks that copy each activation to the host and count
with numpy), (d) the hooks under the layer-by-layer schedule (a round's batches as one chunk; the
weights stay where they are, so this is the schedule's own overhead, without transfers), and (e) the
hooks without the per-pass statistics added last (the windows of h around the top contexts, the firing
histograms, the sign cases; h_sum is one more sum in the compiled update's loop and stays), and the
ratios b/a, c/a, d/a, e/a, and b/e: what those statistics cost; and the same cost timed inside the
passes, which the noise of a shared machine moves far less than a ratio of two modes' wall times: the
time in those statistics' own updates as a share of (b), and the hooks' whole work timed in (b) and in
(e), whose difference over the same tokens is what the statistics take (on the CPU the windows,
histograms and sign cases are inside the C kernel's one pass, where only that difference sees them). The
hooks' own work in (b) and (c) is timed the same way, as a share of each pass: the two approaches
compared without the noise of the forward pass around them. Rounds alternate the modes so drift hits all
of them. The update is compiled unless NEURON_TUI_COMPILE=0 (the C kernel on the CPU, torch.compile
elsewhere; the time of its build or compilation, paid in the warm-up round, is printed).
"""

from __future__ import annotations

import argparse
import time
from contextlib import ExitStack, contextmanager
from itertools import islice

import numpy as np
import torch

from neuron_tui.core.model import native
from neuron_tui.core.model.accumulators import LayerAccumulator
from neuron_tui.core.model.adapters import ffn_out_projections, ffn_up_projections
from neuron_tui.core.model.calibration import calibrate
from neuron_tui.core.model.contexts import TopContexts
from neuron_tui.core.model.histograms import FiringHistogram
from neuron_tui.core.model.layerwise import LayerByLayer
from neuron_tui.core.model.loading import LoadedModel, default_dtype, load
from neuron_tui.core.model.packing import pack_sequences
from neuron_tui.core.model.plan import Settings, make_plan
from neuron_tui.core.model.recorder import Recorder
from neuron_tui.core.model.schedules import BatchByBatch
from neuron_tui.core.model.signs import SignCases
from neuron_tui.core.sources import ModelSource, resolve

# hidden size, layers, FFN width, heads of the OPT models (Zhang et al. 2022, table 1)
OPT_SHAPES = {"125m": (768, 12, 3072, 12), "1.3b": (2048, 24, 8192, 32), "6.7b": (4096, 32, 16384, 32)}


def random_opt(size: str, device: str, dtype: torch.dtype) -> LoadedModel:
    """An OPT of the given size's shape with random weights: no download needed. Its input is random
    token ids (text means nothing to random weights), so no tokenizer either."""
    from transformers import OPTConfig, OPTForCausalLM

    d, layers, ffn, heads = OPT_SHAPES[size]
    config = OPTConfig(hidden_size=d, num_hidden_layers=layers, ffn_dim=ffn, num_attention_heads=heads,
                       word_embed_proj_dim=d)
    torch.manual_seed(0)
    with torch.device(device):
        model = OPTForCausalLM(config).eval().to(dtype=dtype)
    return LoadedModel(model, None, ModelSource(f"opt-{size}-random", "memory"), "")


def plain_numpy_hooks(modules, batch_shape, tau, rule, seconds: list[float]):
    """The straightforward approach: copy h to the host and count with numpy, per layer per batch (the
    time inside the hooks added to seconds[0])."""
    counts = [None] * len(modules)

    def hook_for(layer):
        def hook(module, args):
            start = time.perf_counter()
            h = args[0].detach().float().cpu().numpy().reshape(*batch_shape, -1)
            fired = (h if rule == "relu" else np.abs(h)) > tau[layer]
            c = fired.sum(0)
            counts[layer] = c if counts[layer] is None else counts[layer] + c
            seconds[0] += time.perf_counter() - start

        return hook

    return [m.register_forward_pre_hook(hook_for(i)) for i, m in enumerate(modules)]


# the work of the windows of h, the firing histograms, the sign cases (on the CPU all three are inside
# native.update: the lean mode runs it without them, the timing inside the pass cannot split it)
NEW_STATISTICS = ((TopContexts, "_windows"), (FiringHistogram, "add"), (FiringHistogram, "add_dense"),
                  (SignCases, "add"), (SignCases, "add_dense"), (SignCases, "keep_stronger"))


@contextmanager
def patched(replace, methods=NEW_STATISTICS):
    """Each of `methods` replaced by `replace(cls, name, method)` while inside."""
    saved = [(cls, name, getattr(cls, name)) for cls, name in methods]
    for cls, name, method in saved:
        setattr(cls, name, replace(cls, name, method))
    try:
        yield
    finally:
        for cls, name, method in saved:
            setattr(cls, name, method)


def without_new_statistics():
    """The accumulators without the windows of h around top contexts, the firing histograms and the
    sign cases: their updates made no-ops, and the CPU kernel run without a histogram (0 bins), windows
    (width 0) or an up projection."""
    def replace(cls, name, method):
        if name == "_windows":
            return lambda self, h, seq_arg, order, cols: self.ctx_val
        if cls is native:
            def lean(lib, h, up, tau, abs_rule, cap, bins, top_k, width, left, **tensors):
                return method(lib, h, None, tau, abs_rule, cap, 0, top_k, 0, left, **(tensors | {"sign_count": None}))
            return lean
        return lambda self, *args: None

    return patched(replace, NEW_STATISTICS + ((native, "update"),))


def timing(seconds: list[float], new_statistics: bool = True):
    """The hooked pass as it is, the time in the hooks' work (the accumulators' updates and the batch's
    index tensors) added to seconds[0] and in the new statistics' updates (NEW_STATISTICS, unless not
    `new_statistics`: the lean mode, where they are no-ops) to seconds[1]: what they cost, measured
    inside the pass (where a ratio of two modes' wall times is at the mercy of a shared machine's noise)."""
    hook_work = ((LayerAccumulator, "update"), (Recorder, "_batch_index"))

    def replace(cls, name, method):
        slot = 0 if (cls, name) in hook_work else 1

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                seconds[slot] += time.perf_counter() - start
        return timed

    return patched(replace, hook_work + (NEW_STATISTICS if new_statistics else ()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batches", type=int, default=3, help="batches per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="print the costliest ops of one hooked round")
    args = ap.parse_args()

    dtype = default_dtype(args.device)
    random_model = args.model.endswith("-random")
    if random_model:
        loaded = random_opt(args.model.removeprefix("opt-").removesuffix("-random"), args.device, dtype)
    else:
        loaded = load(resolve(args.model), device=args.device)
    model = loaded.model
    settings = Settings(n_tokens=args.seq_len * args.batch_size * args.batches, seq_len=args.seq_len,
                          batch_size=args.batch_size)
    plan = make_plan(loaded.source.name, model.config, settings, args.device, out="/dev/null")
    modules = ffn_out_projections(model)
    n_seqs = args.batch_size * args.batches
    if random_model:
        seqs = list(np.random.default_rng(0).integers(4, model.config.vocab_size, (n_seqs, args.seq_len)))
    else:
        seqs = list(islice(pack_sequences(plan.corpus, loaded.tokenizer, args.seq_len, 0), n_seqs))
    batches = [np.stack(seqs[i : i + args.batch_size]) for i in range(0, len(seqs), args.batch_size)]
    # the thresholds and histogram bins a real run would use: calibrated |h| quantile (non-ReLU) or 0 (ReLU)
    calibration = calibrate(modules, seqs[: settings.calib_seqs], args.batch_size, BatchByBatch(model), plan.rule,
                            plan.tau_source, plan.threshold)
    s = plan.settings
    ups = ffn_up_projections(model)
    recorder = Recorder(modules, plan.seq_len, s.events_cap, s.top_k, plan.rule, calibration, ups)
    lean = Recorder(modules, plan.seq_len, s.events_cap, s.top_k, plan.rule, calibration, ups)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    # global positions keep growing across rounds, as in one long run, so the accumulators' sampling
    # levels settle as they do in a real collection (not a restart each round); "hooks" and "layers"
    # count into one recorder, "lean" into its own
    seen = {"hooks": 0, "layers": 0, "lean": 0}

    batch_by_batch = BatchByBatch(model)
    runners = {"bare": batch_by_batch, "hooks": batch_by_batch, "plain": batch_by_batch,
               "layers": LayerByLayer(model, args.device, len(batches)), "lean": batch_by_batch}

    def timed(mode: str) -> float:
        handles = (plain_numpy_hooks(modules, batches[0].shape, calibration.tau, plan.rule, inside_plain)
                   if mode == "plain" else [])
        counted = mode in ("hooks", "layers", "lean")
        rec = lean if mode == "lean" else recorder
        if counted:
            starts = seen[mode] + np.cumsum([0] + [b.size for b in batches])
            rec.set_batches([np.arange(a, a + b.size).reshape(b.shape) for a, b in zip(starts, batches)])

        start = time.perf_counter()
        with ExitStack() as stats:
            if mode == "lean":  # the statistics off first, then the hooks' work timed as in "hooks"
                stats.enter_context(without_new_statistics())
                stats.enter_context(timing(inside_lean, new_statistics=False))
            elif mode == "hooks":
                stats.enter_context(timing(inside))
            if counted:
                stats.enter_context(rec.attached())
            runners[mode](batches, rec.select, lambda tokens: None)
            if counted:
                rec.acc[-1].act_count.sum().item()  # wait for the device, as a checkpoint would
                seen[mode] += sum(b.size for b in batches)
            sync()
        for h in handles:
            h.remove()
        return time.perf_counter() - start

    inside = [0.0, 0.0]  # seconds in the hooks' work and in the new statistics during the hooked rounds
    inside_lean = [0.0, 0.0]  # seconds in the hooks' work during the lean rounds
    inside_plain = [0.0]  # seconds in the plain counter's hooks during its rounds
    for mode in runners:  # warm-up: allocations, kernels, lazy accumulators
        timed(mode)
    inside[:], inside_lean[:], inside_plain[:] = [0.0, 0.0], [0.0, 0.0], [0.0]
    times: dict[str, list[float]] = {mode: [] for mode in runners}
    for r in range(args.rounds):  # the order flips every round, so drift within a round favours no mode
        for mode in list(runners)[:: 1 if r % 2 == 0 else -1]:
            times[mode].append(timed(mode))
    inside_s, inside_lean_s = list(inside), list(inside_lean)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
        with profile(activities=activities) as prof:
            timed("hooks")
        sort = "self_cuda_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=15))
    tokens = args.rounds * sum(b.size for b in batches)
    rate = {m: tokens / sum(t) for m, t in times.items()}
    print(f"model {loaded.source.name} on {args.device} ({dtype}), {len(modules)} layers x {recorder.n_neurons} neurons, "
          f"batch {args.batch_size} x {args.seq_len}, {tokens:,} tokens per mode")
    print(f"bare forward      {rate['bare']:9,.0f} tok/s")
    for mode, label in (("hooks", "neuron-tui hooks "), ("plain", "plain numpy hooks"), ("layers", "layer by layer   "),
                        ("lean", "hooks, no new stats")):
        per_round = sorted(b / t for b, t in zip(times["bare"], times[mode]))
        print(f"{label} {rate[mode]:9,.0f} tok/s   ratio {rate[mode] / rate['bare']:.3f}   per round: median "
              f"{float(np.median(per_round)):.3f}, {per_round[0]:.3f}-{per_round[-1]:.3f}")
    cost = sorted(h / e - 1 for h, e in zip(times["hooks"], times["lean"]))
    print(f"the new statistics (context windows, histograms, sign cases) cost {float(np.median(cost)):+.1%} of the "
          f"hooked pass (median of rounds, {cost[0]:+.1%} to {cost[-1]:+.1%})")
    hooked = sum(times["hooks"])
    print(f"timed inside the hooked pass: the hooks' work (updates, index tensors) {inside_s[0] / hooked:.1%} of it "
          f"(the pass without it: {1 - inside_s[0] / hooked:.3f}), the new statistics' updates outside the CPU "
          f"kernel {inside_s[1] / hooked:.1%} (the gathers of h and up at listed firings that they take as arguments "
          "not included)")
    own = (inside_s[0] - inside_lean_s[0]) / hooked  # the same tokens in both: the statistics' own time
    print(f"and inside the lean pass: its hooks' work {inside_lean_s[0] / sum(times['lean']):.1%} of it; the "
          f"difference, what the new statistics themselves take, is {own:.1%} of the hooked pass")
    plain = sum(times["plain"])
    print(f"timed inside the plain pass: its hooks {inside_plain[0] / plain:.1%} of it (the pass without them: "
          f"{1 - inside_plain[0] / plain:.3f})")
    fused = recorder.fused
    print("update: " + (f"compiled (first call {fused.compile_seconds:.1f} s, compile included)" if fused.compile_seconds
                        else "eager" + (f" (compile failed: {fused.failure})" if fused.failure else "")))
    lib = native.library() if args.device == "cpu" else None
    if lib is not None and fused.compile_seconds:
        vector = sum(native.vector_bins(lib, acc.histogram.upper, plan.rule == "abs") for acc in recorder.acc if acc)
        print(f"the kernel's histogram bins in rows where many fire: 16 at a time (AVX-512) in {vector} of "
              f"{len(modules)} layers, by its step table in the rest")


if __name__ == "__main__":
    main()
