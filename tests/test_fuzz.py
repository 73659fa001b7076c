"""Corrupted summaries through every read command: a correct answer or one clear line, never a
traceback, a hang, or a number that differs from the intact file's without a word.

A small real summary (a tiny OPT collected in the test) is damaged three ways, a dozen copies each,
at positions drawn from a fixed seed: one flipped bit, a run of zeroed bytes, a truncation. Each copy
goes through tests/fuzz_driver.py in a process of its own (report, neurons, neuron, open, the explorer
headless, analyze), under a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from tiny import make_tokenizer, tiny_opt, write_text_corpus

from neuron_tui.core.model.collect import collect
from neuron_tui.core.model.loading import LoadedModel
from neuron_tui.core.model.plan import Settings, make_plan
from neuron_tui.core.sources import ModelSource

DRIVER = Path(__file__).with_name("fuzz_driver.py")
COPIES = 12  # per kind of damage
TIMEOUT = 120  # seconds per copy: far above the ~3 s a copy takes; only a hang reaches it


def drive(path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(DRIVER), str(path)], capture_output=True, text=True, env=env,
                          timeout=TIMEOUT)
    assert done.returncode == 0, f"{path.name}: the driver itself failed\n{done.stderr[-3000:]}"
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def intact(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    corpus = write_text_corpus(folder / "corpus.jsonl")
    model = tiny_opt()
    settings = Settings(corpus=str(corpus), n_tokens=40 * 24, seq_len=24, batch_size=4, events_cap=12, top_k=3)
    plan = make_plan("tiny-opt", model.config, settings, "cpu", out=folder / "intact.h5")
    path = collect(LoadedModel(model, make_tokenizer(), ModelSource("tiny-opt", "memory"), ""), plan, quiet=True)
    reference = folder / "reference.h5"
    shutil.copy(path, reference)
    return path, normalised(drive(reference), reference)


def normalised(results: dict, path: Path) -> dict:
    """Results with the file's own path replaced, so that copies compare with the original."""
    return json.loads(json.dumps(results).replace(str(path), "FILE").replace(path.name, "FILE"))


def damaged_copies(source: Path, folder: Path) -> list[Path]:
    data = source.read_bytes()
    rng = np.random.default_rng(2026)
    out = []
    for k in range(COPIES):
        flipped = bytearray(data)
        at = int(rng.integers(0, len(data)))
        flipped[at] ^= 1 << int(rng.integers(0, 8))
        zeroed = bytearray(data)
        start, length = int(rng.integers(0, len(data))), int(rng.integers(16, 512))
        zeroed[start : start + length] = bytes(min(length, len(data) - start))
        cut = data[: int(rng.integers(0, len(data)))]
        for kind, content in (("flip", flipped), ("zero", zeroed), ("cut", cut)):
            path = folder / f"{kind}{k:02d}.h5"
            path.write_bytes(bytes(content))
            out.append(path)
    return out


def one_line_error(result: dict) -> bool:
    lines = [line for line in result["err"].splitlines() if line.strip()]
    return len(lines) == 1 and lines[0].startswith("neuron-tui: error: ") and "unexpected" not in lines[0]


def test_damaged_summaries_give_the_right_answer_or_one_line(intact, tmp_path):
    source, reference = intact
    copies = damaged_copies(source, tmp_path)
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(drive, copies))
    tally = {"runs": 0, "errors": 0, "same": 0}
    for path, results in zip(copies, runs):
        results = normalised(results, path)
        for command, result in results.items():
            tally["runs"] += 1
            where = f"{path.name} {command}"
            assert "traceback" not in result, f"{where}: a traceback\n{result['traceback']}"
            if command == "explorer":
                shown = result["shown"]
                if "error" in shown or any("cannot read" in n for n in shown["notifications"]):
                    tally["errors"] += 1
                    continue
                for part in ("overview", "record"):
                    assert shown.get(part) == reference["explorer"]["shown"].get(part), f"{where}: silently different {part}"
                tally["same"] += 1
                continue
            if result["code"] == 0:
                expected = reference[command] if command in reference else reference["analyzed report"]
                assert result["out"] == expected["out"], f"{where}: exit 0 with a different answer"
                tally["same"] += 1
            else:
                assert result["code"] == 1 and one_line_error(result), f"{where}: {result}"
                tally["errors"] += 1
    assert tally["runs"] >= 3 * COPIES * 8 and tally["errors"] > 0 and tally["same"] > 0, tally
    print(f"fuzz: {len(copies)} files, {tally['runs']} runs: {tally['errors']} one-line errors, "
          f"{tally['same']} intact answers, 0 tracebacks, 0 hangs, 0 silent differences")
