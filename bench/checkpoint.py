"""Checkpoint cost at the paper's shapes: the time to write a whole pass state (the collection's own
`write_pass` into a `SummaryWriter`, one layer at a time), its share of the run under the default
checkpoint policy, and the peak host memory, for OPT-1.3b, 13b and 66b shapes at T = 2,048.

    python bench/checkpoint.py                        # all three shapes, 1M tokens each (about 10 min here)
    python bench/checkpoint.py --shapes 1.3b --tokens 4194304
    python bench/checkpoint.py --codecs               # also: one layer's pos_count by codec

Each shape runs in its own process (so its peak RSS is its own). The layer states are synthetic but
shaped like a trained ReLU model's: firing rates log-normal around 1% (5% of neurons dead), position
counts Binomial(sequences, rate) per position, a full event sample of 256 per alive neuron, top-8
activations with their windows of h, firing histograms. One layer's state is drawn once and handed out for every layer (the writer compresses
each layer anew, so the time is that of distinct data). The share of the run uses the collection's
default policy (core/model/checkpoints.py: every 60 s, or 9 times the last write time when longer) at
a pass speed of `--tokens-per-second` (default: the OPT-1.3b shape's 112k tokens/s measured on an H100
in bench/collect.py, scaled by parameter count for 13b and 66b); the tokens at risk are those a crash
loses.
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
H100_1P3B_TOKENS_PER_S = 112_000  # bench/collect.py: 221,613 tok/s bare x 0.507 (README)
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
    top_val = np.sort(rng.exponential(2.0, (K, F)).astype(np.float32), axis=0)[::-1]
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


def one_shape(shape: str, n_tokens: int, folder: Path) -> dict:
    """Write one checkpoint of `shape` (in this process) and measure it."""
    from neuron_tui.cache import SummaryWriter
    from neuron_tui.cache.schema import HIST_BINS
    from neuron_tui.core.model.calibration import Calibration
    from neuron_tui.core.model.contexts import CONTEXT_WIDTH
    from neuron_tui.core.model.histograms import histogram_edges
    from neuron_tui.core.model.states import PassResult, write_pass

    L, F, _ = SHAPES[shape]
    n_seq = max(1, n_tokens // T)
    start = time.perf_counter()
    state = synthetic_layer(F, n_seq)
    made_s = time.perf_counter() - start
    rss_state = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tokens = np.random.default_rng(1).integers(0, 50272, (n_seq, T), dtype=np.int32)
    vocab = [f"t{i}" for i in range(50272)]
    calibration = Calibration(np.zeros(L, np.float32), np.stack([histogram_edges(0.0, 10.0, "relu")] * L))
    result = PassResult(tokens, np.arange(n_seq), calibration, lambda layer: state, L)
    path = folder / f"checkpoint-{shape}.h5"
    start = time.perf_counter()
    with SummaryWriter(path) as writer:
        writer.set_attrs({"model": f"opt-{shape}-shape", "rule": "relu", "n_layers": L, "n_neurons": F, "seq_len": T,
                          "n_seq": n_seq, "n_tokens": n_seq * T, "complete": False})
        write_pass(writer, result, vocab, True, F)
    write_s = time.perf_counter() - start
    size = path.stat().st_size
    path.unlink()
    raw = L * (T * F * (2 if n_seq < 2**16 else 4) + F * (8 * 3 + 4 * 3 + 1 + K * (12 + 2 * CONTEXT_WIDTH))
               + F * 4 * HIST_BINS + C * F * 4)
    return {"shape": shape, "layers": L, "neurons": F, "tokens": n_seq * T, "write_s": write_s,
            "raw_mib": raw / 2**20, "file_mib": size / 2**20, "mib_per_s": raw / 2**20 / write_s,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "one_layer_state_mib": (rss_state) / 2**20, "made_s": made_s}


def policy(write_s: float, tokens_per_s: float) -> dict:
    """The collection's default checkpoint policy at this write time."""
    from neuron_tui.core.model.checkpoints import CheckpointPolicy

    interval = CheckpointPolicy.interval_after(write_s)
    return {"interval_s": interval, "share": write_s / (interval + write_s),
            "fixed_60s_share": write_s / (CheckpointPolicy.DEFAULT_SECONDS + write_s),
            "tokens_at_risk": (interval + write_s) * tokens_per_s}


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
    parser.add_argument("--tokens-per-second", type=float, help="pass speed of the 1.3b shape (default: H100)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--codecs", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="neuron-tui-bench-"))
    if args.child:
        print(json.dumps(one_shape(args.child, args.tokens, folder)))
        return
    speed_1p3b = args.tokens_per_second or H100_1P3B_TOKENS_PER_S
    print(f"checkpoint of {args.tokens:,} tokens at T = {T}, {os.cpu_count()} CPU cores; pass speed "
          f"{speed_1p3b:,.0f} tok/s at 1.3b, scaled by parameters")
    print(f"{'shape':>6} {'L x F':>12} {'raw MiB':>9} {'file MiB':>9} {'write s':>8} {'MiB/s':>7} {'peak RSS':>9} "
          f"{'interval':>9} {'share':>6} {'at 60 s':>8} {'at risk':>10}")
    for shape in args.shapes.split(","):
        done = subprocess.run([sys.executable, __file__, "--child", shape, "--tokens", str(args.tokens),
                               "--dir", str(folder)], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        r = json.loads(done.stdout.strip().splitlines()[-1])
        speed = speed_1p3b * SHAPES["1.3b"][2] / SHAPES[shape][2]
        p = policy(r["write_s"], speed)
        print(f"{shape:>6} {r['layers']:>3} x {r['neurons']:>6,} {r['raw_mib']:>9,.0f} {r['file_mib']:>9,.0f} "
              f"{r['write_s']:>8.1f} {r['mib_per_s']:>7.0f} {r['peak_rss_mib']:>6,.0f} MiB {p['interval_s']:>7.0f} s "
              f"{p['share']:>6.1%} {p['fixed_60s_share']:>8.1%} {p['tokens_at_risk'] / 1e6:>8.1f}M")
    if args.codecs:
        for c in codecs():
            print(f"pos_count of one 1.3b layer, {c['codec']:<44} {c['mib_per_s']:>6.0f} MiB/s, ratio {c['ratio']:.1f}")


if __name__ == "__main__":
    main()
