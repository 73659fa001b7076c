"""The `neuron-tui` command line: argument parsing and rendering; the work is core's.

    neuron-tui [MODEL] [collect options]   collect if no summary exists yet, then open the explorer
    neuron-tui collect MODEL [...]         headless, resumable collection (e.g. inside tmux)
    neuron-tui report MODEL|FILE... [--json] [--metric NAME]
    neuron-tui neurons MODEL|FILE [--layer L] [--category C] [--trigger TEXT] [--sort COLUMN] [--limit N] [--json|--csv]
    neuron-tui neuron MODEL|FILE LAYER INDEX [--json]
    neuron-tui probe MODEL|FILE "text" [--layer L] [--neuron N] [--ablate zero|mean|clamp [--value X]] [--json]
    neuron-tui figures MODEL|FILE... -o DIR [--format svg|png|pdf]   the paper's figures, lined up by depth
    neuron-tui export MODEL|FILE -o DIR [--layer L] [--category C] [--marked] [--limit N]   Neuronpedia JSON
    neuron-tui analyze MODEL|FILE [--min-fire-rate X ...]
    neuron-tui open MODEL|FILE
    neuron-tui merge A.h5 B.h5 ... -o C.h5 [--model M]   disjoint shards (collect --shard K/N) into one
    torchrun --nproc-per-node N -m neuron_tui.tui.cli collect --distributed MODEL [...]   data-parallel collection

Every failure a user can cause prints one line on stderr, exit status 2 for a wrong request and 1 for a
failure while doing it; a closed pipe (`| head`) ends quietly with 141; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import get_args

from neuron_tui.cache import SummaryError
from neuron_tui.core.errors import NeuronTuiError, UsageError
from neuron_tui.core.read.kinds import KINDS
from neuron_tui.core.read.kinds import NAMES as KIND_NAMES
from neuron_tui.core.read.records import AblationMode, MoveRanking
from neuron_tui.core.read.table import SEARCH_RULE

from .cli_analysis import analysis_options, run_analyze

COMMANDS = ("collect", "report", "neurons", "neuron", "probe", "figures", "export", "analyze", "open", "merge")
DEBUG_ENV = "NEURON_TUI_DEBUG"  # set to 1 to see the traceback of an unexpected error


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are a UsageError (one line, which `main` prefixes with `neuron-tui: error:`),
    not usage text and an exit; a subcommand's error names the subcommand."""

    def error(self, message: str):
        command = self.prog.removeprefix("neuron-tui").strip()
        raise UsageError(f"{command}: {message}" if command else message)


def _collect_options(p: argparse.ArgumentParser, model_optional: bool) -> None:
    from neuron_tui.core.sources import DEFAULT_MODEL

    p.add_argument("model", nargs="?" if model_optional else None, default=DEFAULT_MODEL,
                   help=f"opt-125m ... opt-66b, a Hugging Face id, a model folder, a .gguf file, or smollm2 "
                        f"(default {DEFAULT_MODEL}, offline)")
    p.add_argument("--corpus", action="append",
                   help="paper (the paper's mix, streamed), builtin (offline), FILE.txt|.jsonl, FOLDER, 'GLOB', "
                        "hf:NAME[:CONFIG][:SPLIT][?FIELD=VALUE&text=FIELD], mix:A@2|B; repeat it to mix corpora "
                        "(SPEC@WEIGHT). Default: paper for a hub model when the hub answers, else builtin")
    p.add_argument("--tokens", type=int, help="tokens to collect (default 65,536 on CPU, 20M on GPU)")
    p.add_argument("--seq-len", type=int, help="tokens per sequence (default 256 on CPU, 2048 on GPU)")
    p.add_argument("--batch-size", type=int, help="sequences per forward pass")
    p.add_argument("--seed", type=int, default=0, help="document shuffling seed")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default cuda when present)")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], help="default bf16/fp16 on GPU, fp32 on CPU")
    p.add_argument("--device-map", help="'auto' spreads a model larger than one GPU over all of them, and "
                                         "offloads what does not fit to CPU memory (then disk)")
    p.add_argument("--max-memory", help="with --device-map: memory per device for weights, e.g. 0=60GiB,cpu=200GiB "
                                        "(default: each GPU less the room its accumulators need)")
    p.add_argument("--offload-folder", type=Path, help="with --device-map: where weights that fit in no memory go")
    p.add_argument("--layer-by-layer", action="store_true",
                   help="a model larger than the GPU: weights stay in host memory, each layer visits the GPU once "
                        "per chunk of batches (the paper's schedule)")
    p.add_argument("--chunk-tokens", type=int, help="with --layer-by-layer: tokens per chunk (default 1M on GPU)")
    p.add_argument("--threshold", type=float, help="fixed firing threshold tau for every layer")
    p.add_argument("--quantile", type=float, default=0.99, help="calibration quantile of |h| for non-ReLU models")
    p.add_argument("--events", type=int, default=256, help="firing events kept per neuron (uniform sample)")
    p.add_argument("--checkpoint-seconds", type=float,
                   help="seconds between checkpoints (default 60; each is written in the background while the pass "
                        "counts on)")
    p.add_argument("--no-compile", action="store_true",
                   help="count and project with the eager paths, not the compiled ones (the default: C kernels "
                        "on the CPU, torch.compile on a GPU; also NEURON_TUI_COMPILE=0)")
    p.add_argument("--out", type=Path, help="summary file (default: in the cache folder)")
    p.add_argument("--cache-dir", type=Path, help="cache folder (default $NEURON_TUI_CACHE or ~/.cache/neuron-tui)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="neuron-tui", description="Explore the FFN neurons of language models.",
                     epilog="neuron-tui [MODEL] [collect options] collects MODEL's summary if there is none yet, "
                            "then opens the explorer on it.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    col = sub.add_parser("collect", help="stream a corpus through a model into a summary")
    _collect_options(col, model_optional=True)
    col.add_argument("--shard", help="K/N: only the sequences i with i %% N == K of the corpus (merge the N "
                                     "summaries with `neuron-tui merge`)")
    col.add_argument("--distributed", action="store_true",
                     help="one shard per process under torchrun (gloo on CPU, NCCL on cuda:LOCAL_RANK); "
                          "rank 0 writes the merged summary")
    rep = sub.add_parser("report", help="per-layer table of one summary, or several lined up by depth")
    rep.add_argument("targets", nargs="+", help="summary files or model names (their cached summary)")
    rep.add_argument("--json", action="store_true")
    rep.add_argument("--metric", default="dead_frac", help="with several summaries: the per-layer value to line up "
                                                           "(any key of report --json's rows)")
    rep.add_argument("--cache-dir", type=Path)
    nrs = sub.add_parser("neurons", help="the neuron table of a layer (or all): filter, search, sort")
    _summary_argument(nrs)
    nrs.add_argument("--layer", type=int, help="one layer (default: every layer)")
    nrs.add_argument("--category", default="all", help="all, " + ", ".join(KIND_NAMES[:-1]) + f" or {KIND_NAMES[-1]}: "
                     + "; ".join(f"{k.name}: {k.definition}" for k in KINDS).replace("%", "%%"))
    by = nrs.add_mutually_exclusive_group()
    by.add_argument("--trigger", metavar="TOKEN", help="neurons triggered by this whole token (' of', not ' offering'): "
                    + SEARCH_RULE.replace("%", "%%"))
    by.add_argument("--trigger-substring", metavar="TEXT", help="the same for every token containing TEXT "
                    "(case-insensitive unless TEXT has capitals)")
    nrs.add_argument("--sort", default="id", help="id, cat, rate, distinct, top, pos or supp; without --layer "
                     "across every layer (the model-wide order)")
    nrs.add_argument("--per-layer", action="store_true", help="without --layer: sort within each layer, layer "
                     "after layer")
    nrs.add_argument("--reverse", action="store_true", help="the other direction of the sort")
    nrs.add_argument("--limit", type=int, help="at most this many rows (the first in the sort's order)")
    fmt = nrs.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    neu = sub.add_parser("neuron", help="everything about one neuron")
    _summary_argument(neu)
    neu.add_argument("layer", type=int)
    neu.add_argument("index", type=int)
    neu.add_argument("--json", action="store_true")
    prb = sub.add_parser("probe", help="run new text through the summary's model: which neurons fire, and what "
                                       "ablating one changes")
    _summary_argument(prb)
    prb.add_argument("text", help="the text (the summary's tokenizer splits it)")
    prb.add_argument("--layer", type=int, default=0)
    prb.add_argument("--neuron", type=int, help="the neuron whose activation, firing and triggers to show")
    prb.add_argument("--ablate", nargs="?", const="zero", choices=get_args(AblationMode),
                     help="with --neuron: set it at every position to 0 (zero, the default), to its mean h over "
                          "every token of the corpus (mean) or to --value (clamp), and show per position the KL "
                          "divergence and loss change of the next-token distribution and the tokens whose "
                          "probability moves most; over the text, the mean KL and loss change")
    prb.add_argument("--value", type=float, help="with --ablate clamp: the value to set the neuron to")
    prb.add_argument("--floor", type=float, default=1e-3,
                     help="with --ablate: a token moves only if its probability reaches this, before or after "
                          "(default 0.001), so tokens the model never predicts are not reported")
    prb.add_argument("--rank", choices=get_args(MoveRanking), default="p",
                     help="with --ablate: order the moves by the change of probability (p, default) or of "
                          "log-probability (logp)")
    prb.add_argument("--top", type=int, default=5, help="neurons per token, tokens per ablation list")
    prb.add_argument("--device", help="where to run the model (default: where the summary was made, if here)")
    prb.add_argument("--json", action="store_true")
    fig = sub.add_parser("figures", help="the paper's figures (matplotlib) of one or several summaries, lined up "
                                         "by relative depth, and DIR/figures.json with every plotted number")
    fig.add_argument("targets", nargs="+", help="summary files or model names (their cached summary)")
    fig.add_argument("-o", "--out", type=Path, required=True, help="the folder for the figures")
    fig.add_argument("--format", default="svg", choices=["svg", "png", "pdf"])
    fig.add_argument("--cache-dir", type=Path)
    exp = sub.add_parser("export", help="neurons as Neuronpedia's dashboard JSON (sae-dashboard's format), one "
                                        "batch file per layer")
    _summary_argument(exp)
    exp.add_argument("-o", "--out", type=Path, required=True, help="the folder for the batch files")
    exp.add_argument("--format", default="neuronpedia", choices=["neuronpedia"])
    exp.add_argument("--layer", type=int, help="one layer (default: every layer)")
    exp.add_argument("--category", default="all", help="only neurons of this kind (as neurons --category)")
    exp.add_argument("--marked", action="store_true", help="only the neurons marked in the explorer (m)")
    exp.add_argument("--limit", type=int, help="at most this many neurons, the first by layer and index")
    ana = sub.add_parser("analyze", help="recompute the neuron categories of a summary (no model needed)")
    _summary_argument(ana)
    analysis_options(ana)
    opn = sub.add_parser("open", help="open a summary in the explorer")
    _summary_argument(opn)
    opn.add_argument("--device", help="where the probe (i) runs the model (default: where the summary was made)")
    mrg = sub.add_parser("merge", help="merge summaries of disjoint corpus shards of one run (collect --shard K/N)")
    mrg.add_argument("files", nargs="+", type=Path)
    mrg.add_argument("-o", "--out", type=Path, required=True, help="the merged summary (a new file)")
    mrg.add_argument("--model", help="the run's model (name, folder or .gguf), to recompute the FFN-update "
                                     "projections of the merged candidate triggers exactly")
    mrg.add_argument("--device", help="where to project with --model (default cuda when present)")
    mrg.add_argument("--force", action="store_true", help="replace the output file when it exists")
    return parser


def build_main_parser() -> argparse.ArgumentParser:
    """`neuron-tui [MODEL] [collect options]`: the default command, which then opens the explorer."""
    parser = _Parser(prog="neuron-tui", description="Collect MODEL's summary if needed, then explore it.")
    _collect_options(parser, model_optional=True)
    return parser


# ---- running -----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in ("-h", "--help"):
            build_parser().print_help()
            return 0
        if not argv or argv[0] not in COMMANDS:
            args = build_main_parser().parse_args(argv)
            args.command = "main"
        else:
            args = build_parser().parse_args(argv)
        return _dispatch(args)
    except (NeuronTuiError, SummaryError) as exc:
        print(f"neuron-tui: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("neuron-tui: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `neuron-tui report ... | head`: the reader has gone; so do we, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one line, the traceback on request
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"neuron-tui: error: unexpected {exc.__class__.__name__}: {exc} (a bug: please report it; "
              f"{DEBUG_ENV}=1 shows the traceback)", file=sys.stderr)
        return 1


def _summary_argument(parser: argparse.ArgumentParser) -> None:
    """The one summary a command reads: a file, or a model name whose cached summary `find_summary`
    picks (as `report MODEL` and `neuron-tui MODEL` do)."""
    parser.add_argument("file", metavar="MODEL|FILE", help="a summary file or a model name (its cached summary)")
    parser.add_argument("--cache-dir", type=Path, help="where model names' summaries are looked for")


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "main":
        return _open(_summary_of(args), args.device)
    if args.command == "collect":
        print(_summary_of(args))
        return 0
    if hasattr(args, "file"):  # one summary: a file, or a model's cached summary
        from neuron_tui.core.pipeline import find_summary

        args.file = find_summary(args.file, args.cache_dir)
    return {"open": lambda a: _open(a.file, a.device), "analyze": run_analyze, "report": run_report,
            "neurons": run_neurons, "neuron": run_neuron, "probe": run_probe, "figures": run_figures,
            "export": run_export,
            "merge": run_merge}[args.command](args)


def _request(args: argparse.Namespace):
    from neuron_tui.core.pipeline import CollectRequest

    if getattr(args, "no_compile", False):  # read where the pass makes its accumulators (core.model.fused)
        os.environ["NEURON_TUI_COMPILE"] = "0"
    names = {f.name for f in fields(CollectRequest)}
    values = {name: getattr(args, name) for name in names if hasattr(args, name)}
    specs = args.corpus or []
    values["corpus"] = None if not specs else specs[0] if len(specs) == 1 else "mix:" + "|".join(specs)
    return CollectRequest(**values)


def _summary_of(args: argparse.Namespace) -> Path:
    """The summary a collection request names: found (fast, no torch) or collected."""
    from neuron_tui.core import pipeline

    request = _request(args)
    say = (lambda text: None) if args.quiet else (lambda text: print(f"neuron-tui: {text}", file=sys.stderr))
    return pipeline.ensure_summary(request, say)


def _open_file(path: Path):
    from neuron_tui.core.read.api import SummaryFile

    return SummaryFile.open(path)


def _open(path: Path, device: str | None = None) -> int:
    """The explorer on the summary at `path`, opened once here; without a terminal (a pipe, CI) the
    report instead. `device`: where the probe runs the model."""
    summary = _open_file(path)
    if not sys.stdout.isatty():
        try:
            _print_report(summary)
        finally:
            summary.close()
        return 0
    from neuron_tui.tui.app import run_explorer

    run_explorer(summary, device)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from neuron_tui.core.pipeline import find_summary
    from neuron_tui.core.read import queries

    if len(args.targets) > 1 and args.metric not in queries.METRICS:
        raise UsageError(f"unknown metric {args.metric!r}; one of {', '.join(queries.METRICS)}")
    paths = [find_summary(t, args.cache_dir) for t in args.targets]
    with ExitStack() as stack:
        files = [stack.enter_context(_open_file(p)) for p in paths]
        if len(files) == 1:
            if args.json:
                s = files[0]
                _print_json({"file": str(s.path), "model": s.model, "notes": queries.summary_notes(s.summary),
                             "layers": s.layers()})
            else:
                _print_report(files[0])
            return 0
        rows = queries.compare_rows([f.summary for f in files])
        if args.json:
            _print_json(rows)
        else:
            from neuron_tui.tui.present import Output
            from neuron_tui.tui.present.layers import compare_table

            Output().show(compare_table(rows, args.metric))
    return 0


def _print_report(s) -> None:
    from neuron_tui.core.read.queries import summary_notes
    from neuron_tui.tui.present import Output
    from neuron_tui.tui.present.layers import report_table, report_title

    Output().show(report_table(s.layers(), report_title(s.summary.attrs, summary_notes(s.summary))))


def run_neurons(args: argparse.Namespace) -> int:
    from neuron_tui.core.read.queries import (
        DEFAULT_DESCENDING,
        SORT_KEYS,
        TABLE_KEYS,
    )

    _check_selection(args)
    if args.sort not in SORT_KEYS:
        raise UsageError(f"unknown sort column {args.sort!r}; one of {', '.join(SORT_KEYS)}")
    with _open_file(args.file) as s:
        _check_layer(args, s)
        descending = DEFAULT_DESCENDING.get(args.sort, False) != args.reverse
        rows = s.neurons(args.layer, category=args.category, trigger=args.trigger or args.trigger_substring,
                         sort=args.sort, descending=descending, limit=args.limit,
                         substring=args.trigger_substring is not None, per_layer=args.per_layer)
    if args.json:
        _print_json(rows)
    elif args.csv:
        from neuron_tui.tui.present import write_stdout
        from neuron_tui.tui.present.layers import neurons_csv

        write_stdout(neurons_csv(rows, TABLE_KEYS))
    else:
        from neuron_tui.tui.present import Output
        from neuron_tui.tui.present.layers import neurons_table

        Output().show(neurons_table(rows))
    return 0


def _check_selection(args: argparse.Namespace) -> None:
    """`--category` and `--limit` of a command that selects neurons (neurons, export)."""
    from neuron_tui.core.read.queries import FILTERS

    if args.category not in FILTERS[:-1]:
        raise UsageError(f"unknown category {args.category!r}; one of {', '.join(FILTERS[:-1])}")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit} is too small (at least 1)")


def _check_layer(args: argparse.Namespace, s) -> None:
    """`--layer` (None: every layer) of the open summary `s`."""
    if args.layer is not None and not 0 <= args.layer < s.n_layers:
        raise UsageError(f"no layer {args.layer}: {args.file} has layers 0..{s.n_layers - 1}")


def run_export(args: argparse.Namespace) -> int:
    """The selected neurons (a layer, a kind, the marks; all by default) as Neuronpedia batches."""
    from neuron_tui.core.read.neuronpedia import write_batches
    from neuron_tui.tui.viewmodel import Marks

    _check_selection(args)
    with _open_file(args.file) as s:
        _check_layer(args, s)
        picked = [(r["layer"], r["neuron"]) for r in s.neurons(args.layer, category=args.category)]
        if args.marked:
            marked = {(layer, neuron) for layer, neuron, _ in Marks(args.file, read_only=True)}
            picked = [p for p in picked if p in marked]
        picked = picked[: args.limit]
        if not picked:
            raise UsageError("no neuron matches: nothing to export")
        selection: dict[int, list[int]] = {}
        for layer, neuron in picked:
            selection.setdefault(layer, []).append(neuron)
        for path in write_batches(s.summary, selection, args.out):
            print(path)
    return 0


def run_neuron(args: argparse.Namespace) -> int:
    with _open_file(args.file) as s:
        if not (0 <= args.layer < s.n_layers and 0 <= args.index < s.n_neurons):
            raise UsageError(f"no neuron L{args.layer} N{args.index}: the summary has {s.n_layers} layers "
                             f"of {s.n_neurons} neurons")
        record = s.neuron(args.layer, args.index)
        if args.json:
            _print_json(record)
            return 0
        from neuron_tui.tui.present import Output
        from neuron_tui.tui.present.card import neuron_panel

        out = Output()
        out.show(neuron_panel(record, s.vocab, s.summary.projection is not None, plain=out.plain))
    return 0


def run_probe(args: argparse.Namespace) -> int:
    if not args.text:
        raise UsageError("the text to probe is empty: pass some text")
    with _open_file(args.file) as s:
        if not 0 <= args.layer < s.n_layers:
            raise UsageError(f"no layer {args.layer}: {args.file} has layers 0..{s.n_layers - 1}")
        if args.neuron is not None and not 0 <= args.neuron < s.n_neurons:
            raise UsageError(f"no neuron {args.neuron}: layers of {args.file} have {s.n_neurons}")
        if args.ablate and args.neuron is None:
            raise UsageError("--ablate needs --neuron: the neuron to ablate")
        if (args.value is not None) != (args.ablate == "clamp"):
            raise UsageError("--ablate clamp needs --value X" if args.ablate == "clamp" else
                             "--value is the value of --ablate clamp")
        if not 0 <= args.floor < 1:
            raise UsageError(f"--floor {args.floor} is not a probability below 1")
        if args.top < 1:
            raise UsageError(f"--top {args.top} is too small (at least 1)")
        from neuron_tui.core.model.probe import Probe, probe_text

        probe = Probe.for_summary(s.summary, args.device)
        result = probe_text(probe, s, args.text, args.layer, args.neuron, args.ablate, top=args.top,
                            value=args.value, floor=args.floor, rank=args.rank)
    if args.json:
        _print_json(result)
    else:
        from neuron_tui.tui.present import Output
        from neuron_tui.tui.present.probe import probe_table

        Output().show(probe_table(result))
    return 0


def run_figures(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from neuron_tui.core.pipeline import find_summary
    from neuron_tui.core.read.figures import figure_data
    from neuron_tui.core.read.queries import model_names
    from neuron_tui.tui.figures import write_figures

    paths = [find_summary(t, args.cache_dir) for t in args.targets]
    with ExitStack() as stack:
        files = [stack.enter_context(_open_file(p)) for p in paths]
        summaries = [f.summary for f in files]
        missing = [str(s.path) for s in summaries if s.analysis is None]
        if missing:
            raise UsageError(f"no analysis in {', '.join(missing)}: run `neuron-tui analyze` on it first")
        figures = figure_data(summaries)
        models = [{"model": name, "file": s.path.name, "n_tokens": s.n_tokens, "n_layers": s.n_layers,
                   "n_neurons": s.n_neurons} for name, s in zip(model_names(summaries), summaries)]
        written = write_figures(figures, args.out, args.format, models)
    for path in written:
        print(path)
    print(args.out / "figures.json")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from neuron_tui.core.model.merge import merge_summaries

    print(merge_summaries(args.files, args.out, args.model, args.device, force=args.force))
    if args.model is None:
        print("neuron-tui: merged without --model: candidate triggers were re-ranked among the tokens the "
              "shards scored, and the token-frequency correlation (freq_corr) is left unknown: it needs the "
              "union's token counts (pass the run's model to project them exactly)", file=sys.stderr)
    return 0


def _print_json(value) -> None:
    from neuron_tui.tui.present import write_stdout

    write_stdout(json.dumps(value, indent=1, allow_nan=False, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    sys.exit(main())
