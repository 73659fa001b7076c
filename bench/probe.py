"""The probe's speed: loading the summary's model, and from the key press to the answer, for a text of
200 tokens, as ratios of the bare forward pass over the same tokens (one run, same machine).

    python bench/probe.py                         # the SmolLM2 summary README's first command made
    python bench/probe.py --summary FILE [--device cuda] [--tokens 200] [--rounds 7]

Prints (a) the time to load the model for the summary (`Probe.for_summary`: the fingerprint check,
transformers' loading; the OS file cache as the run finds it), (b) one bare forward pass of the
tokens, (c) the probe's answer without ablation (`probe_text`: tokenize, the hooked forward, the
layer's firing neurons and their categories), (d) with ablation (two forwards with the head, then per
position the KL divergence, loss change, most probable tokens and moves, in float64), the ratios c/b and d/b, and (e) in the explorer (Textual's headless pilot, 120x40): from `enter` in the
probe's text box to the answer on screen, once the model is loaded. Medians over --rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from neuron_tui.cache import newest_summary
from neuron_tui.core.model.probe import Probe, probe_text
from neuron_tui.core.read.api import SummaryFile


def median_time(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def a_text(summary: SummaryFile, probe: Probe, n_tokens: int) -> str:
    """Text of about `n_tokens` tokens: the summary's first stored sequence, decoded."""
    ids = summary.summary.sequence(0)[1 if summary.summary.bos else 0 :]
    text = probe.loaded.tokenizer.decode(ids[:n_tokens].tolist())
    return text


def pick_neuron(summary: SummaryFile) -> tuple[int, int]:
    """A token detector of the middle layer (any neuron of it when there is none)."""
    layer = summary.n_layers // 2
    rows = summary.neurons(layer, category="token", limit=1) or summary.neurons(layer, limit=1)
    return layer, int(rows[0]["neuron"])


async def explorer_answer(path: Path, layer: int, neuron: int, text: str, device: str | None, rounds: int,
                          probe: Probe) -> float:
    """Median seconds from `enter` in the probe's text box to the answer drawn (the model already loaded)."""
    from neuron_tui.tui.app import NeuronApp
    from neuron_tui.tui.screens.neuron import NeuronScreen
    from neuron_tui.tui.screens.probe import ProbeScreen

    app = NeuronApp(path, device=device)
    times = []
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()  # the summary is open
        app.explorer.probe.model = probe  # loaded above: this measures the answer, not the load
        app.push_screen(NeuronScreen(layer, neuron))
        await pilot.pause()
        screen = ProbeScreen(layer, neuron)
        app.push_screen(screen)
        await pilot.pause()
        screen.query_one("#probe-input").value = text
        for _ in range(rounds):
            screen.result = None
            screen.query_one("#probe-input").focus()
            await pilot.pause()
            start = time.perf_counter()
            await pilot.press("enter")
            while screen.result is None:
                await app.workers.wait_for_complete()
                await pilot.pause()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary", type=Path, help="default: the newest summary of smollm2 in the cache")
    parser.add_argument("--device", help="default: where the summary was made, if here")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    path = args.summary or newest_summary("smollm2")
    if path is None:
        raise SystemExit("no smollm2 summary in the cache: run README's first command, or pass --summary")
    torch.set_num_threads(torch.get_num_threads())
    with SummaryFile.open(path) as summary:
        start = time.perf_counter()
        probe = Probe.for_summary(summary.summary, args.device)
        load_s = time.perf_counter() - start
        layer, neuron = pick_neuron(summary)
        text = a_text(summary, probe, args.tokens)
        ids = probe.encode(text)
        x = torch.as_tensor(np.asarray(ids)[None]).to(probe.device)

        @torch.no_grad()
        def bare():
            probe.model(input_ids=x, use_cache=False)

        bare()  # warm-up
        probe_text(probe, summary, text, layer, neuron)
        bare_s = median_time(bare, args.rounds)
        answer_s = median_time(lambda: probe_text(probe, summary, text, layer, neuron), args.rounds)
        ablate_s = median_time(lambda: probe_text(probe, summary, text, layer, neuron, ablate="zero"), args.rounds)
        tui_s = asyncio.run(explorer_answer(path, layer, neuron, text, args.device, args.rounds, probe))
    print(f"summary {path.name} · model {summary.model} on {probe.device} · {len(ids)} tokens · L{layer} N{neuron} "
          f"· {torch.get_num_threads()} threads · medians of {args.rounds}")
    print(f"(a) load the model for the summary     {load_s * 1000:8.0f} ms")
    print(f"(b) bare forward pass                   {bare_s * 1000:8.0f} ms")
    print(f"(c) probe answer                        {answer_s * 1000:8.0f} ms   c/b = {answer_s / bare_s:.2f}")
    print(f"(d) probe answer with ablation          {ablate_s * 1000:8.0f} ms   d/b = {ablate_s / bare_s:.2f}")
    print(f"(e) explorer: enter -> answer on screen {tui_s * 1000:8.0f} ms   e/b = {tui_s / bare_s:.2f}")


if __name__ == "__main__":
    main()
