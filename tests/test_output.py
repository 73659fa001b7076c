"""The command line through a pipe and into files: a closed pipe ends with 141, lines carry no trailing
spaces and no blank line comes first, tables and the neuron panel fit 80 columns without wrapping an
entry, the firing token of a context is marked in plain text; errors name the program once; `analyze`
says what each threshold is and what changed; `neurons` sorts across layers; progress ends with the
run's speed and time."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from dataclasses import fields

import pytest
from rich.cells import cell_len
from synthetic import make_summary, tiny_summary

from neuron_tui.cache import Summary, SummaryWriter, schema
from neuron_tui.core.read import kinds
from neuron_tui.core.read.api import SummaryFile
from neuron_tui.core.read.params import AnalysisParams
from neuron_tui.core.read.tokens import inline, visible
from neuron_tui.tui.cli import build_parser, main
from neuron_tui.tui.present.neuron import context_value


def run(*args, check=True) -> subprocess.CompletedProcess:
    """The command line in a process of its own, its stdout a pipe (no terminal), 80 columns."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "80"}
    env.pop("FORCE_COLOR", None)
    done = subprocess.run([sys.executable, "-m", "neuron_tui.tui.cli", *map(str, args)], env=env, check=False,
                          capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def cli(capsys, *args):
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("output")


@pytest.fixture(scope="module")
def tiny(folder):
    """The standard tiny summary (tests/synthetic.py) and, below, one of 3,072 neurons: every format of
    `neurons` over it is far more than a pipe holds (64 KiB)."""
    return tiny_summary(folder)


@pytest.fixture(scope="module")
def big(folder):
    return make_summary(folder / "big.h5", 6, 512, seq_len=16, n_seq=64, vocab=400, seed=3)


def clean(text: str) -> list[str]:
    """The lines of `text`, checked: none blank first, none with trailing spaces, none over 80 cells."""
    lines = text.splitlines()
    assert lines and lines[0].strip(), text[:200]
    for line in lines:
        assert line == line.rstrip(), repr(line)
        assert cell_len(line) <= 80, line
    return lines


@pytest.mark.parametrize("fmt", [[], ["--json"], ["--csv"]], ids=["text", "json", "csv"])
def test_a_closed_pipe_exits_141(big, fmt):
    """`neurons FILE | head -1`: the reader goes after one line; the writer stops quietly with 141."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "neuron_tui.tui.cli", "neurons", str(big), *fmt], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""


def test_tables_in_a_file_are_clean_lines_that_fit_80_columns(tiny, folder):
    second = tiny_summary(folder, "second.h5", n_layers=6, n_neurons=64, seed=11, model="synthetic/deeper")
    for args in (["report", tiny, second], ["neurons", tiny], ["neurons", tiny, "--layer", 1]):
        lines = clean(run(*args).stdout)
        assert any(set(line) == {"─"} for line in lines)  # the rule under the header


def test_a_report_wider_than_80_columns_comes_out_whole(tiny):
    """A dozen kinds make the per-layer report wider than 80 columns: in a file its lines are longer,
    never cut (a number cut is a wrong number)."""
    lines = run("report", tiny).stdout.splitlines()
    header = lines[1].split()
    assert max(cell_len(line) for line in lines) > 80 and header[-3:] == ["new", "supp", "neg"]
    for row in lines[3:]:
        assert len(row.split()) == len(header) and row == row.rstrip()
    assert lines[2] == "─" * cell_len(lines[1])
    lines = run("neurons", tiny, "--layer", 0).stdout.splitlines()
    assert lines[0].startswith("96 neurons · cat: ")  # how many, and what the letters stand for
    assert lines[1].split() == ["L", "N", "cat", "rate", "dist", "triggers", "pos", "MI", "supp"]


def test_the_neuron_panel_fits_80_columns_and_marks_the_firing_token_in_plain_text(tiny):
    with SummaryFile.open(tiny) as s:
        layer, index = next((l, int(i)) for l in range(s.n_layers)
                            for i in s.table(l).select("token", sort="rate", descending=True))
        record = s.neuron(layer, index)
    lines = clean(run("neuron", tiny, layer, index).stdout)
    text = "\n".join(lines)
    for trig in record["triggers"][:6]:  # each trigger on one line: its token, count and P(fire | token)
        assert any(visible(trig["text"]) in line and f"{trig['p_fire']:.2f}" in line for line in lines), trig
    assert "[[ ]] mark the firing token" in text
    for c in record["contexts"]:
        token = c["token"].strip(" ")
        assert f"[[{inline(token) if token else visible(c['token'])}]]" in text
    assert sum("[[" in line for line in lines) == len(record["contexts"]) + 1  # the legend and one per context


def test_usage_errors_name_the_program_once(tiny):
    for args, says in ((["neurons", tiny, "--bogus"], "unrecognized arguments: --bogus"),
                       (["neurons"], "neurons: the following arguments are required: MODEL|FILE"),
                       (["neurons", tiny, "--trigger", "a", "--trigger-substring", "b"], "neurons: argument")):
        done = run(*args, check=False)
        assert done.returncode == 2 and done.stderr.count("neuron-tui") == 1, done.stderr
        assert done.stderr.startswith("neuron-tui: error: ") and says in done.stderr


def test_analyze_help_says_what_each_threshold_is():
    from neuron_tui.tui.cli_analysis import field_docs

    docs = field_docs()
    assert set(docs) == {f.name for f in fields(AnalysisParams)}
    assert docs["min_fire_rate"].startswith("A token is covered by a neuron when the neuron fires on at least")
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["analyze"].format_help().split())
    for name, sentence in docs.items():
        assert sentence in help_text, name
    assert "--min-p-fire X, --min-fire-rate X" in help_text  # named for what it is; the old spelling works


def test_min_p_fire_is_the_old_min_fire_rate_and_an_error_names_the_spelling_typed(capsys, folder):
    stored = []
    for flag in ("--min-p-fire", "--min-fire-rate"):
        path = tiny_summary(folder, f"p{flag}.h5")
        assert cli(capsys, "analyze", path, flag, "0.5")[0] == 0
        with SummaryFile.open(path) as s:
            stored.append(s.params.min_fire_rate)
        code, _, err = cli(capsys, "analyze", path, flag, "2")
        assert code == 2 and err.strip() == f"neuron-tui: error: {flag} must be a share in (0, 1], not 2.0"
    assert stored == [0.5, 0.5]


def test_analyze_says_what_changed_per_layer(capsys, folder):
    path = tiny_summary(folder, "changes.h5")
    with SummaryFile.open(path) as s:
        before = s.layers()
    code, out, err = cli(capsys, "analyze", path, "--min-coverage", "0.5")
    with SummaryFile.open(path) as s:
        after = s.layers()
    assert code == 0 and out.strip() == str(path)  # stdout: the file, as before
    assert "analysed with --min-coverage 0.5" in err
    moved = [k for k in kinds.KINDS if any(b[k.name] != a[k.name] for b, a in zip(before, after))]
    assert moved
    table = err.splitlines()[2:]
    assert table[0].split() == ["L", *(k.report_column for k in moved)]
    for b, a in zip(before, after):
        line = next((line for line in table if line.split()[:1] == [str(a["layer"])]), None)
        changed = [k for k in moved if b[k.name] != a[k.name]]
        assert (line is None) == (not changed)
        for k in changed:
            assert f"{b[k.name]} → {a[k.name]}" in line
    code, out, err = cli(capsys, "analyze", path, "--min-coverage", "0.5")
    assert code == 0 and "no layer's counts of any kind changed" in err


def test_neurons_sort_across_layers_unless_per_layer(capsys, tiny):
    top = json.loads(cli(capsys, "neurons", tiny, "--sort", "rate", "--limit", "8", "--json")[1])
    with SummaryFile.open(tiny) as s:
        every = [(t.rate[i], -l, -i) for l in range(s.n_layers) for t in [s.table(l)] for i in range(t.n)]
    expected = [(-l, -i) for _, l, i in sorted(every, reverse=True)[:8]]  # by rate, ties by layer and id
    assert [(r["layer"], r["neuron"]) for r in top] == expected
    assert len({r["layer"] for r in top}) > 1  # the model-wide top, not layer 0's
    per_layer = json.loads(cli(capsys, "neurons", tiny, "--sort", "rate", "--limit", "8", "--json", "--per-layer")[1])
    assert {r["layer"] for r in per_layer} == {0}
    assert [r["rate"] for r in per_layer] == sorted((r["rate"] for r in per_layer), reverse=True)
    rows = json.loads(cli(capsys, "neurons", tiny, "--sort", "top", "--json")[1])
    texts = [" ".join(visible(t) for t in r["triggers"]) for r in rows]
    filled = [t for t in texts if t]
    assert filled == sorted(filled) and texts[: len(filled)] == filled


def test_trigger_is_the_whole_token_and_the_substring_on_request(capsys, tiny):
    with SummaryFile.open(tiny) as s:
        vocab = s.vocab
        exact = s.neurons(trigger=" the")
        part = s.neurons(trigger=" the", substring=True)
        for row in exact:
            table = s.table(row["layer"])
            assert " the" in [vocab[t] for t in table.trig_tok[row["neuron"]] if t >= 0]
    assert exact and len(part) > len(exact)
    assert json.loads(cli(capsys, "neurons", tiny, "--trigger", " the", "--json")[1]) == exact
    assert json.loads(cli(capsys, "neurons", tiny, "--trigger-substring", " the", "--json")[1]) == part
    assert "4x as often" in " ".join(build_parser()._subparsers._group_actions[0].choices["neurons"].format_help().split())


def test_triggers_are_a_list_in_json_and_joined_in_text(capsys, tiny):
    rows = json.loads(cli(capsys, "neurons", tiny, "--layer", "0", "--json")[1])
    with SummaryFile.open(tiny) as s:
        table = s.table(0)
        for row in rows:
            assert row["triggers"] == [s.vocab[t] for t in table.trig_tok[row["neuron"], :3] if t >= 0]
    csv_lines = cli(capsys, "neurons", tiny, "--layer", "0", "--csv")[1].splitlines()
    text = cli(capsys, "neurons", tiny, "--layer", "0")[1]
    row = next(r for r in rows if len(r["triggers"]) == 3)
    joined = " ".join(visible(t) for t in row["triggers"])
    assert joined in text and any(joined in line for line in csv_lines)


def test_contexts_are_marked_unsigned_where_the_summary_keeps_no_sign(capsys, tiny, folder):
    """An abs-rule summary made before the pass kept the sign of h at its top contexts: the value is
    |h| and says so (`signed` false, `|5.45|` on screen); a ReLU summary's value is h itself."""
    relu = json.loads(cli(capsys, "neuron", tiny, 0, 13, "--json")[1])
    tops = [c for c in relu["contexts"] if c["source"] == "top"]
    assert tops and all(c["signed"] for c in tops)
    old = folder / "abs.h5"
    with Summary.open(tiny) as s, SummaryWriter(old) as w:  # a threshold-rule summary of before ctx_val
        w.copy_from(s, skip=schema.ADDED_IN_3)
        w.set_attrs({"rule": "abs", "tau_source": "quantile", "threshold": 0.99})
    record = json.loads(cli(capsys, "neuron", old, 0, 13, "--json")[1])
    tops = [c for c in record["contexts"] if c["source"] == "top"]
    assert tops and not any(c["signed"] for c in tops)
    text = cli(capsys, "neuron", old, 0, 13)[1]
    assert "|h|, this summary keeps no sign" in text and context_value(tops[0]) in text
    assert context_value(tops[0]).startswith("|") and context_value(tops[0]).endswith("|")


def test_progress_ends_with_the_runs_speed_and_time(monkeypatch):
    from rich.console import Console

    from neuron_tui.core.model import progress

    out = io.StringIO()
    monkeypatch.setattr(progress, "Console", lambda stderr: Console(file=out, width=120))
    with progress.CollectProgress(total=1000, done=200, quiet=False, label="m") as bar:
        for _ in range(4):
            time.sleep(0.25)
            bar.advance(200)
    last = out.getvalue().splitlines()[-1]
    speed = int(last.split(" tok/s")[0].split()[-1].replace(",", ""))
    assert "1,000/1,000 tokens" in last and "in 0:00:01" in last
    assert 500 < speed < 900  # 800 tokens over the run's ~1 s, not the last moment's rate
