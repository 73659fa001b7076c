"""Write a synthetic summary (neuron_tui.core.read.synthetic) from the command line.

    python bench/make_summary.py OUT.h5 --preset opt-1.3b        # 24 x 8192, well under a minute
    python bench/make_summary.py OUT.h5 --preset opt-66b         # 64 x 36864, a few minutes
    python bench/make_summary.py OUT.h5 --layers 4 --neurons 64 --seq-len 16 --n-seq 64 --vocab 300
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from neuron_tui.core.read.synthetic import PRESETS, make_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--preset", choices=sorted(PRESETS))
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--neurons", type=int, default=256)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--n-seq", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--events-cap", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None)
    parser.add_argument("--partial", action="store_true", help="write an incomplete (checkpoint-like) summary")
    parser.add_argument("--no-analysis", action="store_true")
    parser.add_argument("--no-projection", action="store_true")
    args = parser.parse_args(argv)
    if args.preset:
        L, F, T, S, V, C, K = PRESETS[args.preset]
        model = args.model or f"synthetic/{args.preset}"
    else:
        L, F, T, S, V, C, K = args.layers, args.neurons, args.seq_len, args.n_seq, args.vocab, args.events_cap, args.top_k
        model = args.model or "synthetic/opt-like"
    start = time.perf_counter()
    make_summary(
        args.out, L, F, seq_len=T, n_seq=S, vocab=V, seed=args.seed, events_cap=C, top_k=K, model=model,
        complete=not args.partial, n_seq_planned=S * 2 if args.partial else S,
        analysis=not args.no_analysis, projection=not args.no_projection,
    )
    size = args.out.stat().st_size / 2**20
    print(f"{args.out}: {L} x {F}, T={T}, {S} sequences, {size:,.0f} MiB in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
