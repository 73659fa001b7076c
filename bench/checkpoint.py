"""What checkpoints cost the pass, now that they are copied and written in the background: the time the
pass waits per checkpoint and its share of a run at the default interval, at the OPT-1.3b, 13b and 66b
shapes at T = 2,048, with the snapshot's extra host memory; and one real CPU run's wall time with and
without checkpoints, since the background copies and write take cores the pass also uses.

    python bench/checkpoint.py                          # all three shapes and the real run (about 15 min here)
    python bench/checkpoint.py --shapes 1.3b --real-model ''
    python bench/checkpoint.py --codecs                 # also: one layer's pos_count by codec

Each shape runs in its own process (so its RSS is its own): a pass (the real hooks and accumulators,
core.model.recorder) through an FFN-only stand-in of the shape (d -> F -> d blocks with random weights,
one sequence a batch), its accumulators starting from a synthetic state shaped like a trained ReLU
model's: firing rates log-normal around 1% (5% of neurons dead), position counts Binomial(sequences,
rate) per position, a full event sample of 256 per alive neuron, top-8 activations with their windows
of h, firing histograms. One batch runs, a checkpoint is taken as the pass takes it (nothing copied
then: the writer thread copies the layers in order while the next batch runs, and the pass copies a
layer itself only if it reaches it first), and the next batch is timed ("batch s", against the one
before, "before") with the time its hooks spent on the checkpoint's copies ("wait s": waiting for the
writer's copy of a layer, or copying it). A shape whose accumulators and snapshot do not fit in
`--max-gib` (13b: 40 x 0.36 GiB, 66b: 64 x 0.40 GiB, against this machine's 24 GiB) runs as many layers
as fit ("measured"); the wait is as measured (it does not grow with the layers: the writer starts at
layer 0 when the pass does and copies a layer far faster than the pass goes through one), the write
time and memory are scaled by L / layers measured. The share is wait / (interval + wait); a checkpoint
that comes due while one is written waits for it, so the interval is at least the write time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

# layers, FFN width, parameters (billions) of the OPT models (Zhang et al. 2022, table 1)
SHAPES = {"1.3b": (24, 8192, 1.3), "13b": (40, 20480, 13.0), "66b": (64, 36864, 66.0)}
HIDDEN = {"1.3b": 2048, "13b": 5120, "66b": 9216}
T, K, C = 2048, 8, 256


def synthetic_layer(F: int, n_seq: int, seed: int = 0):
    """One layer's LayerState shaped like a trained ReLU model's (see the module docstring)."""
    from neuron_tui.cache.schema import HIST_BINS
    from neuron_tui.core.model.accumulators import LayerState
    from neuron_tui.core.model.contexts import CONTEXT_WIDTH
    from neuron_tui.core.read.sampling import token_levels

    rng = np.random.default_rng(seed)
    rate = np.minimum(0.5, np.exp(rng.normal(np.log(0.01), 1.2, F)))
    rate[rng.random(F) < 0.05] = 0.0
    pos_count = np.empty((T, F), np.int32)
    for start in range(0, T, 256):  # in blocks: numpy's binomial draws [256, F] at a time
        pos_count[start : start + 256] = rng.binomial(n_seq, rate, size=(min(256, T - start), F))
    act_count = pos_count.sum(0, dtype=np.int64)
    n_tokens = n_seq * T
    level = np.ceil(np.log2(np.maximum(1, act_count / C))).astype(np.int8)
    # a neuron's sample holds only positions at or above its level (the pass's invariant, which its
    # next batches rely on)
    z = token_levels(np.arange(n_tokens, dtype=np.int64))
    pools = {lv: np.flatnonzero(z >= lv) for lv in np.unique(level)}
    events = [np.sort(rng.choice(pools[lv], size=min(C, int(c), len(pools[lv])), replace=False)) if c
              else np.zeros(0, np.int64) for c, lv in zip(act_count, level)]
    top_val = np.ascontiguousarray(np.sort(rng.exponential(2.0, (K, F)).astype(np.float32), axis=0)[::-1])
    top_val[:, act_count == 0] = -np.inf
    top_pos = rng.integers(0, n_tokens, (K, F))
    top_pos[:, act_count == 0] = -1
    act_sum = act_count * 1.5
    shape = (K, CONTEXT_WIDTH, F)  # windows of h around the top contexts: 0 where a ReLU neuron is off
    ctx_val = (rng.exponential(1.0, shape) * (rng.random(shape) < 0.3)).astype(np.float16)
    hist_count = rng.multinomial(act_count, np.full(HIST_BINS, 1 / HIST_BINS)).T.astype(np.int32)
    return LayerState(act_count=act_count, pos_count=pos_count, act_sum=act_sum, act_count_pos=act_count,
                      act_sum_pos=act_sum, act_max=top_val[0].copy(), h_sum=act_sum, top_val=top_val, top_pos=top_pos,
                      ctx_val=ctx_val, level=level, events=events, hist_count=hist_count)


def layer_bytes(F: int) -> int:
    """Bytes of one layer's accumulators at width F (core.model.accumulators.device_bytes)."""
    from neuron_tui.core.model.accumulators import device_bytes

    return device_bytes(F, T, C, K, gated=False)


def ffn_stack(L: int, d: int, F: int):
    """An FFN-only stand-in of a shape: L residual blocks x + fc2(relu(fc1(x))), d -> F -> d, whose fc2
    modules are the pass's hook points (their input is h). The blocks share one pair of random weight
    matrices (66b's would be 2.7 GB a layer), each with its own fc2 module for its own hook."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(d, F), nn.Linear(F, d)
    for layer in (fc1, fc2):
        nn.init.normal_(layer.weight, std=d**-0.5)
    outs = []
    for _ in range(L):
        out = nn.Linear(F, d)
        out.weight, out.bias = fc2.weight, fc2.bias
        outs.append(out)

    def forward(x):
        for out in outs:
            x = x + out(torch.relu(fc1(x)))
        return x

    return forward, outs


def one_shape(shape: str, n_tokens: int, folder: Path, max_gib: float) -> dict:
    """What the pass waits for one checkpoint at `shape` (in this process): a pass through an FFN-only
    stand-in of the shape (`ffn_stack`: the real hooks and accumulators, one sequence of T tokens a
    batch) over as many layers as fit in `max_gib`, every accumulator starting from a synthetic state
    of `n_tokens` tokens; one batch, a checkpoint taken as the pass takes it (Recorder.snapshot: the
    writer copies the layers in order while the next batch runs, the pass copies a layer it reaches
    first), the next batch timed, and the time its hooks spent on the checkpoint's copies. That wait
    does not grow with the layers measured (the writer starts ahead of the pass and copies a layer in
    far less time than the pass takes through one), so it is reported as measured; the write time and
    the snapshot's memory are per layer and scaled by L / layers measured."""
    import torch

    from neuron_tui.cache import SummaryWriter
    from neuron_tui.core.model.calibration import Calibration
    from neuron_tui.core.model.histograms import histogram_edges
    from neuron_tui.core.model.recorder import Recorder, take_all
    from neuron_tui.core.model.states import PassResult, write_pass

    L, F, _ = SHAPES[shape]
    d = HIDDEN[shape]
    n_seq = max(1, n_tokens // T)
    weights = 2 * d * F * 4 + 8 * T * F  # fc1 and fc2, and a few [T, F] activations
    measured = max(1, min(L, int((max_gib * 2**30 - weights) // (2 * layer_bytes(F)))))  # accumulators + snapshot
    edges = histogram_edges(0.0, 10.0, "relu")
    calibration = Calibration(np.zeros(measured, np.float32), np.stack([edges] * measured))
    synthetic = synthetic_layer(F, n_seq)
    forward, outs = ffn_stack(measured, d, F)
    recorder = Recorder(outs, T, C, K, "relu", calibration, resumed=lambda layer: synthetic, compile=False)
    x = torch.randn(1, T, d) * 0.1
    times = []
    with torch.no_grad(), recorder.attached():
        for batch in range(2):
            recorder.set_batches([np.arange(n_seq + batch, n_seq + batch + 1)[:, None] * T + np.arange(T)])
            start = time.perf_counter()
            forward(x)
            times.append(time.perf_counter() - start)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        snapshot = recorder.snapshot()
        wrote = []

        def write() -> None:
            take_all(snapshot)
            copied = time.perf_counter()
            path = folder / f"checkpoint-{shape}.h5"
            tokens = np.random.default_rng(1).integers(0, 50272, (n_seq, T), dtype=np.int32)
            result = PassResult(tokens, np.arange(n_seq), calibration, lambda layer: snapshot[layer](), measured)
            with SummaryWriter(path) as writer:
                writer.set_attrs({"model": f"opt-{shape}-shape", "rule": "relu", "n_layers": measured,
                                  "n_neurons": F, "seq_len": T, "n_seq": n_seq, "n_tokens": n_seq * T,
                                  "complete": False})
                write_pass(writer, result, [f"t{i}" for i in range(50272)], True, F)
            path.unlink()
            wrote.extend([copied, time.perf_counter()])

        started = time.perf_counter()
        writer = threading.Thread(target=write)
        writer.start()
        waited = recorder.snapshot_wait
        recorder.set_batches([np.arange(n_seq + 2, n_seq + 3)[:, None] * T + np.arange(T)])
        forward(x)
        batch_s = time.perf_counter() - started
        waited = recorder.snapshot_wait - waited
        writer.join()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    snap_bytes = sum(a.nbytes for raw in (s.raw for s in snapshot) for part in raw.values() for a in part.values())
    scale = L / measured
    return {"shape": shape, "layers": L, "measured": measured, "neurons": F, "tokens": n_seq * T,
            "wait_s": waited, "batch_s": batch_s, "batch_before_s": times[-1], "copy_s": wrote[0] - started,
            "write_s": (wrote[1] - started) * scale, "snapshot_gib": snap_bytes * scale / 2**30,
            "rss_growth_gib": (rss_after - rss_before) * scale / 2**30}


def real_run(model: str, tokens: int, seconds: float, rounds: int) -> dict:
    """Wall time of whole `neuron-tui collect` runs of `model` (CPU, builtin corpus), with a checkpoint
    every `seconds` and without any, in alternating rounds: the cost of writing on cores the pass uses."""
    times: dict[str, list[float]] = {"with": [], "without": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for mode in ("with", "without")[:: 1 if r % 2 == 0 else -1]:
                every = seconds if mode == "with" else 1e9
                args = [sys.executable, "-m", "neuron_tui.tui.cli", "collect", model, "--corpus", "builtin",
                        "--tokens", str(tokens), "--device", "cpu", "--checkpoint-seconds", str(every), "--out",
                        str(Path(tmp) / f"{mode}{r}.h5"), "--quiet"]
                start = time.perf_counter()
                done = subprocess.run(args, capture_output=True, text=True)
                times[mode].append(time.perf_counter() - start)
                if done.returncode:
                    raise SystemExit(done.stderr[-3000:])
    return {mode: float(np.median(t)) for mode, t in times.items()}


def codecs(F: int = 8192, n_seq: int = 512) -> list[dict]:
    """One layer's pos_count [T, F] (uint16) by filter: MB/s of the write and compression ratio."""
    import h5py

    from neuron_tui.cache import chunks

    data = synthetic_layer(F, n_seq).pos_count.astype(np.uint16)
    gzip1 = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, opts, direct in (("gzip 1 + shuffle, cache.chunks (all cores)", gzip1, True),
                                   ("gzip 1 + shuffle, HDF5 (one thread)", gzip1, False),
                                   ("lzf + shuffle, HDF5", {"compression": "lzf", "shuffle": True}, False),
                                   ("none", {}, False)):
            path = Path(tmp) / "c.h5"
            start = time.perf_counter()
            with h5py.File(path, "w") as f:
                ds = f.create_dataset("pos_count", shape=(1, T, F), dtype=np.uint16, chunks=(1, T, 1024),
                                      fletcher32=True, **opts)
                if direct:
                    chunks.write_layer(ds, 0, data)
                else:
                    ds[0] = data
            took = time.perf_counter() - start
            out.append({"codec": name, "mib_per_s": data.nbytes / 2**20 / took,
                        "ratio": data.nbytes / path.stat().st_size})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="1.3b,13b,66b")
    parser.add_argument("--tokens", type=int, default=1 << 20, help="tokens in the checkpoint (default 1M)")
    parser.add_argument("--max-gib", type=float, default=6.0,
                        help="host memory for the measured layers' accumulators and snapshot (default 6 GiB)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between checkpoints (default 60)")
    parser.add_argument("--real-model", default="smollm2", help="the model of the real run ('' to skip it)")
    parser.add_argument("--real-tokens", type=int, default=32768)
    parser.add_argument("--real-seconds", type=float, default=2.0, help="checkpoint interval of the real run")
    parser.add_argument("--real-rounds", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--codecs", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="neuron-tui-bench-"))
    if args.child:
        print(json.dumps(one_shape(args.child, args.tokens, folder, args.max_gib)))
        return
    print(f"checkpoints of {args.tokens:,} tokens at T = {T}, every {args.interval:.0f} s, on {os.cpu_count()} CPU "
          f"cores (the device is the CPU: a snapshot is a host-to-host copy)")
    print(f"{'shape':>6} {'L x F':>12} {'measured':>8} {'wait s':>7} {'batch s':>8} {'before':>7} {'copies s':>8} "
          f"{'write s':>8} {'snapshot':>9} {'RSS +':>8}")
    lines = []
    for shape in args.shapes.split(","):
        done = subprocess.run([sys.executable, __file__, "--child", shape, "--tokens", str(args.tokens),
                               "--dir", str(folder), "--max-gib", str(args.max_gib)], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{shape:>6} {r['layers']:>3} x {r['neurons']:>6,} {r['measured']:>8} {r['wait_s']:>7.3f} "
              f"{r['batch_s']:>8.1f} {r['batch_before_s']:>7.1f} {r['copy_s']:>8.2f} {r['write_s']:>8.1f} "
              f"{r['snapshot_gib']:>5.1f} GiB {r['rss_growth_gib']:>4.1f} GiB")
        share = r["wait_s"] / (args.interval + r["wait_s"])
        lines.append(f"{shape}: the pass waits {share:.1%} of the run")
    print("\n".join(lines))
    if args.real_model:
        r = real_run(args.real_model, args.real_tokens, args.real_seconds, args.real_rounds)
        print(f"real run, {args.real_model}, {args.real_tokens:,} tokens on the CPU (median of {args.real_rounds}): "
              f"{r['with']:.1f} s with a checkpoint every {args.real_seconds:g} s, {r['without']:.1f} s without "
              f"(x{r['with'] / r['without']:.3f})")
    if args.codecs:
        for c in codecs():
            print(f"pos_count of one 1.3b layer, {c['codec']:<44} {c['mib_per_s']:>6.0f} MiB/s, ratio {c['ratio']:.1f}")


if __name__ == "__main__":
    main()
