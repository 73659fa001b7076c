"""How collection time, peak memory and summary size grow with tokens, layers and neurons.

    python bench/scale.py            # a small grid on random-weight OPTs, builtin corpus, CPU
    python bench/scale.py --device cuda

Each point runs in its own process (so peak memory is that run's alone): a random-weight OPT of the
given depth and FFN width (hidden size 256) reads the builtin corpus through a word-level tokenizer
built from it, and the full pipeline runs (pass, projections, analysis). Printed per point: wall
time of the pass, tokens/s, peak resident memory (and peak GPU memory on CUDA: model, activations
and accumulators), summary size and size per million tokens.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

BASE = {"tokens": 65536, "layers": 4, "ffn": 2048}
GRID = [
    {}, {"tokens": 32768}, {"tokens": 131072},
    {"layers": 2}, {"layers": 8},
    {"ffn": 1024}, {"ffn": 4096},
]


def word_tokenizer(vocab_size: int):
    """A word-level tokenizer over the builtin corpus's most frequent words (no download needed)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from neuron_tui.core.builtin_corpus import builtin_documents

    counts = Counter(w for _, text in builtin_documents() for w in text.split())
    words = ["<pad>", "<s>", "</s>", "<unk>"] + [w for w, _ in counts.most_common(vocab_size - 4)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def one(point: dict, device: str, out: Path) -> dict:
    """Run one point in this process; returns its measurements."""
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    from neuron_tui.core.model.collect import collect
    from neuron_tui.core.model.loading import LoadedModel
    from neuron_tui.core.model.plan import Settings, make_plan
    from neuron_tui.core.sources import ModelSource

    tokenizer = word_tokenizer(8192)
    config = OPTConfig(vocab_size=8192, hidden_size=256, num_hidden_layers=point["layers"], ffn_dim=point["ffn"],
                       num_attention_heads=4, word_embed_proj_dim=256, max_position_embeddings=512)
    torch.manual_seed(0)
    model = OPTForCausalLM(config).eval().to(device)
    settings = Settings(n_tokens=point["tokens"], seq_len=256, batch_size=8, checkpoint_seconds=1e9)
    plan = make_plan("opt-random", config, settings, device, out=out)
    start = time.perf_counter()
    collect(LoadedModel(model, tokenizer, ModelSource("opt-random", "memory"), ""), plan, quiet=True)
    seconds = time.perf_counter() - start
    size = out.stat().st_size
    device_peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else 0.0
    return {**point, "seconds": seconds, "tok_per_s": point["tokens"] / seconds,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "device_mib": device_peak,
            "size_mib": size / 2**20, "mib_per_mtok": size / 2**20 / (point["tokens"] / 1e6)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        point = json.loads(args.one)
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(one(point, args.device, Path(tmp) / "s.h5")))
        return
    print(f"{'tokens':>7} {'layers':>6} {'ffn':>5} {'time s':>7} {'tok/s':>7} {'peak MiB':>8} {'GPU MiB':>8} "
          f"{'MiB':>6} {'MiB/Mtok':>8}")
    for change in GRID:
        point = {**BASE, **change}
        run = subprocess.run([sys.executable, __file__, "--device", args.device, "--one", json.dumps(point)],
                             capture_output=True, text=True, check=True)
        r = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"{r['tokens']:>7} {r['layers']:>6} {r['ffn']:>5} {r['seconds']:>7.1f} {r['tok_per_s']:>7.0f} "
              f"{r['peak_mib']:>8.0f} {r['device_mib']:>8.0f} {r['size_mib']:>6.1f} {r['mib_per_mtok']:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
