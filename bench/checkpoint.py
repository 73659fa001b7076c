"""What checkpoints cost the pass, now that they are written in the background: the time the pass waits
per checkpoint (the snapshot: every layer's state copied to the host, into the last snapshot's arrays)
and its share of a run at the default interval, at the OPT-1.3b, 13b and 66b shapes at T = 2,048, with
the snapshot's extra host memory; and one real CPU run's wall time with and without checkpoints, since
the background write takes cores the pass also uses.

    python bench/checkpoint.py                          # all three shapes and the real run (about 10 min here)
    python bench/checkpoint.py --shapes 1.3b --real-model ''
    python bench/checkpoint.py --codecs                 # also: one layer's pos_count by codec

Each shape runs in its own process (so its RSS is its own). The accumulators are real ones
(core.model.accumulators) on the CPU, the device here, filled with a synthetic state shaped like a
trained ReLU model's: firing rates log-normal around 1% (5% of neurons dead), position counts
Binomial(sequences, rate) per position, a full event sample of 256 per alive neuron, top-8 activations
with their windows of h, firing histograms. A layer's snapshot is a copy of its own tensors, so the wait
grows with the layers: a shape whose accumulators and snapshot do not fit in `--max-gib` (13b: 40 x
0.36 GiB, 66b: 64 x 0.40 GiB, against this machine's 24 GiB) is measured on as many layers as fit
and its wait, write time and memory scaled by L / layers measured (the "measured" column). The wait
is the steady state (the arrays reused; the first snapshot faults them in, "1st wait"); the share is
wait / (interval + wait). The write (listing the events, compressing, writing) runs in the
background thread; a checkpoint that comes due while one is written waits for it, so the interval is
at least the write time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# layers, FFN width, parameters (billions) of the OPT models (Zhang et al. 2022, table 1)
SHAPES = {"1.3b": (24, 8192, 1.3), "13b": (40, 20480, 13.0), "66b": (64, 36864, 66.0)}
T, K, C = 2048, 8, 256


def synthetic_layer(F: int, n_seq: int, seed: int = 0):
    """One layer's LayerState shaped like a trained ReLU model's (see the module docstring)."""
    from neuron_tui.cache.schema import HIST_BINS
    from neuron_tui.core.model.accumulators import LayerState
    from neuron_tui.core.model.contexts import CONTEXT_WIDTH

    rng = np.random.default_rng(seed)
    rate = np.minimum(0.5, np.exp(rng.normal(np.log(0.01), 1.2, F)))
    rate[rng.random(F) < 0.05] = 0.0
    pos_count = np.empty((T, F), np.int32)
    for start in range(0, T, 256):  # in blocks: numpy's binomial draws [256, F] at a time
        pos_count[start : start + 256] = rng.binomial(n_seq, rate, size=(min(256, T - start), F))
    act_count = pos_count.sum(0, dtype=np.int64)
    n_tokens = n_seq * T
    events = [np.sort(rng.choice(n_tokens, size=min(C, int(c)), replace=False)) if c else np.zeros(0, np.int64)
              for c in act_count]
    level = np.ceil(np.log2(np.maximum(1, act_count / C))).astype(np.int8)
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


def one_shape(shape: str, n_tokens: int, folder: Path, max_gib: float) -> dict:
    """Time what the pass waits per checkpoint at `shape` (in this process): the accumulators of as many
    layers as fit in `max_gib` (all of them for 1.3b), filled with a synthetic state, snapshot to the
    host three times (the first faults in its arrays, the next reuse them: the steady state), the wait
    scaled by L / layers measured; and the background write of the last snapshot."""
    import copy

    import torch

    from neuron_tui.cache import SummaryWriter
    from neuron_tui.core.model.accumulators import LayerAccumulator
    from neuron_tui.core.model.calibration import Calibration
    from neuron_tui.core.model.histograms import histogram_edges
    from neuron_tui.core.model.states import PassResult, write_pass

    L, F, _ = SHAPES[shape]
    n_seq = max(1, n_tokens // T)
    measured = max(1, min(L, int(max_gib * 2**30 // (2 * layer_bytes(F)))))  # accumulators + snapshot
    edges = histogram_edges(0.0, 10.0, "relu")
    first = LayerAccumulator(F, T, C, K, torch.device("cpu"), "relu", 0.0, edges)
    first.load(synthetic_layer(F, n_seq))
    accs = [first] + [copy.deepcopy(first) for _ in range(measured - 1)]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    waits, snapshot = [], None
    for _ in range(3):
        start = time.perf_counter()
        snapshot = [acc.snapshot(None if snapshot is None else snapshot[i]) for i, acc in enumerate(accs)]
        waits.append(time.perf_counter() - start)
    snap_bytes = sum(a.nbytes for raw in snapshot for part in raw.values() for a in part.values())
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tokens = np.random.default_rng(1).integers(0, 50272, (n_seq, T), dtype=np.int32)
    calibration = Calibration(np.zeros(L, np.float32), np.stack([edges] * L))
    result = PassResult(tokens, np.arange(n_seq), calibration,
                        lambda layer: LayerAccumulator.state_of(snapshot[layer % measured]), measured)
    path = folder / f"checkpoint-{shape}.h5"
    start = time.perf_counter()
    with SummaryWriter(path) as writer:
        writer.set_attrs({"model": f"opt-{shape}-shape", "rule": "relu", "n_layers": measured, "n_neurons": F,
                          "seq_len": T, "n_seq": n_seq, "n_tokens": n_seq * T, "complete": False})
        write_pass(writer, result, [f"t{i}" for i in range(50272)], True, F)
    write_s = time.perf_counter() - start
    path.unlink()
    scale = L / measured
    return {"shape": shape, "layers": L, "measured": measured, "neurons": F, "tokens": n_seq * T,
            "first_wait_s": waits[0] * scale, "wait_s": min(waits[1:]) * scale, "write_s": write_s * scale,
            "snapshot_gib": snap_bytes * scale / 2**30, "rss_growth_gib": (rss_after - rss_before) * scale / 2**30}


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
    print(f"{'shape':>6} {'L x F':>12} {'measured':>8} {'wait s':>7} {'1st wait':>8} {'write s':>8} "
          f"{'snapshot':>9} {'RSS +':>8}")
    lines = []
    for shape in args.shapes.split(","):
        done = subprocess.run([sys.executable, __file__, "--child", shape, "--tokens", str(args.tokens),
                               "--dir", str(folder), "--max-gib", str(args.max_gib)], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{shape:>6} {r['layers']:>3} x {r['neurons']:>6,} {r['measured']:>8} {r['wait_s']:>7.2f} "
              f"{r['first_wait_s']:>8.2f} {r['write_s']:>8.1f} {r['snapshot_gib']:>5.1f} GiB {r['rss_growth_gib']:>4.1f} GiB")
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
