"""The `neuron-tui` command line.

    neuron-tui [MODEL]                  collect if no summary exists yet, then open the explorer
    neuron-tui collect MODEL [...]      headless, resumable collection (e.g. inside tmux)
    neuron-tui report MODEL|FILE... [--json]
    neuron-tui analyze FILE [--min-fire-rate X ...]
    neuron-tui neuron FILE LAYER INDEX [--json]
    neuron-tui open FILE
    neuron-tui merge A.h5 B.h5 ... -o C.h5 [--model M]   disjoint shards (collect --shard K/N) into one
    torchrun --nproc-per-node N -m neuron_tui.tui.cli collect --distributed MODEL [...]   data-parallel collection

Every failure a user can cause prints one line on stderr, exit status 2 for a wrong request and 1 for a
failure while doing it; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from neuron_tui.cache import Summary, SummaryError
from neuron_tui.cache.paths import cache_dir, model_slug
from neuron_tui.core.errors import NeuronTuiError, UsageError

COMMANDS = ("collect", "report", "analyze", "neuron", "open", "merge", "main")


def _collect_options(p: argparse.ArgumentParser) -> None:
    from neuron_tui.core.models import DEFAULT_MODEL

    p.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                   help=f"opt-125m ... opt-66b, a Hugging Face id, a model folder, a .gguf file, or smollm2 "
                        f"(default {DEFAULT_MODEL}, offline)")
    p.add_argument("--corpus", default="builtin", help="builtin, FILE.txt|.jsonl, FOLDER, 'GLOB', hf:NAME[:CONFIG][:SPLIT]")
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
    p.add_argument("--checkpoint-seconds", type=float, default=60.0, help="seconds between checkpoints")
    p.add_argument("--out", type=Path, help="summary file (default: in the cache folder)")
    p.add_argument("--cache-dir", type=Path, help="cache folder (default $NEURON_TUI_CACHE or ~/.cache/neuron-tui)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuron-tui", description="Explore the FFN neurons of language models.")
    sub = parser.add_subparsers(dest="command", required=True)
    col = sub.add_parser("collect", help="stream a corpus through a model into a summary")
    _collect_options(col)
    col.add_argument("--shard", help="K/N: only the sequences i with i %% N == K of the corpus (merge the N "
                                     "summaries with `neuron-tui merge`)")
    col.add_argument("--distributed", action="store_true",
                     help="one shard per process under torchrun (gloo on CPU, NCCL on cuda:LOCAL_RANK); "
                          "rank 0 writes the merged summary")
    _collect_options(sub.add_parser("main", help=argparse.SUPPRESS))
    rep = sub.add_parser("report", help="per-layer table of one summary, or several lined up by depth")
    rep.add_argument("targets", nargs="+", help="summary files or model names (their cached summary)")
    rep.add_argument("--json", action="store_true")
    rep.add_argument("--cache-dir", type=Path)
    ana = sub.add_parser("analyze", help="recompute the neuron categories of a summary (no model needed)")
    ana.add_argument("file", type=Path)
    _analysis_options(ana)
    neu = sub.add_parser("neuron", help="everything about one neuron")
    neu.add_argument("file", type=Path)
    neu.add_argument("layer", type=int)
    neu.add_argument("index", type=int)
    neu.add_argument("--json", action="store_true")
    opn = sub.add_parser("open", help="open a summary in the explorer")
    opn.add_argument("file", type=Path)
    mrg = sub.add_parser("merge", help="merge summaries of disjoint corpus shards of one run (collect --shard K/N)")
    mrg.add_argument("files", nargs="+", type=Path)
    mrg.add_argument("-o", "--out", type=Path, required=True, help="the merged summary (a new file)")
    mrg.add_argument("--model", help="the run's model (name, folder or .gguf), to recompute the FFN-update "
                                     "projections of the merged candidate triggers exactly")
    mrg.add_argument("--device", help="where to project with --model (default cuda when present)")
    return parser


def _analysis_options(p: argparse.ArgumentParser) -> None:
    from neuron_tui.core.analysis import AnalysisParams

    for f in fields(AnalysisParams):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=None, help=f"default {f.default}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["main", *argv]  # `neuron-tui opt-1.3b`: the default command
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (NeuronTuiError, SummaryError) as exc:
        print(f"neuron-tui: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("neuron-tui: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in ("collect", "main"):
        path = run_collect(args)
        if args.command == "collect":
            print(path)
            return 0
        return _open(path)
    if args.command == "open":
        return _open(args.file)
    if args.command == "analyze":
        return run_analyze(args)
    if args.command == "report":
        return run_report(args)
    if args.command == "neuron":
        return run_neuron(args)
    if args.command == "merge":
        from neuron_tui.core.merge import merge_summaries

        from neuron_tui.core import models

        loaded = models.load(args.model, device=args.device) if args.model else None
        print(merge_summaries(args.files, args.out, loaded))
        if loaded is None:
            print("neuron-tui: merged without --model: candidate triggers were re-ranked among the tokens the "
                  "shards scored (pass the run's model to project them exactly)", file=sys.stderr)
        return 0
    raise UsageError(f"unknown command {args.command}")


def run_collect(args: argparse.Namespace) -> Path:
    """Plan (cheap: config only), reuse an existing summary, else load the model and collect."""
    if (args.max_memory or args.offload_folder) and not args.device_map:
        raise UsageError("--max-memory and --offload-folder place the weights of --device-map auto: add it")
    if args.chunk_tokens is not None and not args.layer_by_layer:
        raise UsageError("--chunk-tokens sizes the chunks of --layer-by-layer: add it")
    if args.layer_by_layer and args.device_map:
        raise UsageError("--layer-by-layer and --device-map are two ways to run a large model: pick one")
    if not getattr(args, "distributed", False):
        return _run_collect(args, None)
    from neuron_tui.core import distributed

    if args.shard or args.device_map or args.layer_by_layer:
        raise UsageError("--distributed gives every process its own shard on its own device: "
                         "drop --shard, --device-map and --layer-by-layer")
    with distributed.session(args.device) as rank:
        return _run_collect(args, rank)


def _run_collect(args: argparse.Namespace, rank) -> Path:
    """`run_collect` in this process; `rank` (distributed.Rank) when it is one of a torchrun group."""
    from transformers import AutoConfig

    from neuron_tui.core import collect, models

    source = models.resolve(args.model)
    device = rank.device if rank else args.device or models.default_device()
    settings = collect.Settings(
        corpus=args.corpus, n_tokens=args.tokens, seq_len=args.seq_len, batch_size=args.batch_size, seed=args.seed,
        threshold=args.threshold, quantile=args.quantile, events_cap=args.events,
        checkpoint_seconds=args.checkpoint_seconds,
    )
    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    try:
        config = AutoConfig.from_pretrained(source.load_from, **kwargs)
    except (OSError, ValueError) as exc:
        raise models.load_error(source, exc) from None
    plan = collect.make_plan(source.name, config, settings, device, out=args.out, cache_dir=args.cache_dir,
                             shard=getattr(args, "shard", None))
    if plan.path.exists():
        if not args.quiet:
            print(f"neuron-tui: using the existing summary {plan.path}", file=sys.stderr)
        return plan.path
    # refuse a run that cannot fit before spending minutes loading weights (sizes from the config)
    collect.check_disk(plan, config.num_hidden_layers, models.ffn_width(config))
    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    loaded = models.load(args.model, device=device, dtype=args.dtype, device_map=args.device_map,
                         max_memory=_max_memory(args, plan, config), offload_folder=args.offload_folder,
                         on_host=args.layer_by_layer)
    if rank:
        from neuron_tui.core import distributed

        return distributed.collect(loaded, plan, rank, quiet=args.quiet)
    return collect.collect(loaded, plan, quiet=args.quiet, runner=_schedule(args, loaded, plan, device))


def _schedule(args: argparse.Namespace, loaded, plan, device: str):
    """The pass's schedule: layer by layer when asked, else None (batch by batch), with a hint when
    accelerate offloaded layers that a GPU would then receive again for every batch."""
    if args.layer_by_layer:
        from neuron_tui.core import layerwise

        chunk = layerwise.chunk_batches(device, plan.batch_size * plan.seq_len, args.chunk_tokens)
        return layerwise.LayerByLayer(loaded.model, device, chunk)
    offloaded = {str(d) for d in (getattr(loaded.model, "hf_device_map", None) or {}).values()} & {"cpu", "disk"}
    if offloaded and not str(device).startswith("cpu"):
        print(f"neuron-tui: some layers are offloaded to {' and '.join(sorted(offloaded))} and will be streamed to "
              "the GPU for every batch; --layer-by-layer moves them once per chunk instead", file=sys.stderr)
    return None


def _max_memory(args: argparse.Namespace, plan, config) -> dict | None:
    """--max-memory as given, else (with --device-map on a CUDA machine) each GPU's memory less the
    room its accumulators will take (collect.device_budget); None lets accelerate decide."""
    import torch

    from neuron_tui.core import collect, models

    if args.max_memory:
        return models.parse_max_memory(args.max_memory)
    if not args.device_map or not torch.cuda.is_available():
        return None
    gpus = [torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())]
    return collect.device_budget(plan, config.num_hidden_layers, models.ffn_width(config), gpus)


def run_analyze(args: argparse.Namespace) -> int:
    from neuron_tui.core.analysis import AnalysisParams, run_analysis

    overrides = {f.name: getattr(args, f.name) for f in fields(AnalysisParams) if getattr(args, f.name) is not None}
    with Summary.open(args.file) as summary:
        shard = summary.attrs.get("shard", "0/1")
    if shard != "0/1":
        raise UsageError(f"{args.file} holds shard {shard} of the corpus; the analysis needs every sequence: "
                         "merge the shards first (neuron-tui merge)")
    run_analysis(args.file, AnalysisParams(**overrides))
    print(args.file)
    return 0


def find_summary(target: str, folder: Path | None = None) -> Path:
    """A summary file given directly, or the newest complete summary of a model in the cache folder."""
    path = Path(target)
    if path.suffix == ".h5" or path.is_file():
        return path
    from neuron_tui.core.models import resolve

    name = resolve(target).name
    folder = cache_dir(folder)
    found = [p for p in folder.glob(f"{model_slug(name)}__*.h5")
             if not p.name.endswith(".partial.h5") and ".shard" not in p.name]  # shards: see collect.shard_path
    if not found:
        raise NeuronTuiError(f"no summary of {name} in {folder}; run: neuron-tui collect {target}")
    return max(found, key=lambda p: p.stat().st_mtime)


def run_report(args: argparse.Namespace) -> int:
    from rich.console import Console

    from neuron_tui.core import report

    paths = [find_summary(t, args.cache_dir) for t in args.targets]
    summaries = [Summary.open(p) for p in paths]
    try:
        if len(summaries) == 1:
            rows = report.layer_rows(summaries[0])
            if args.json:
                print(json.dumps({"file": str(paths[0]), "model": summaries[0].attrs["model"], "layers": rows}, indent=1))
            else:
                Console().print(report.report_table(rows, title=_title(summaries[0])))
        else:
            rows = report.compare_rows(summaries)
            if args.json:
                print(json.dumps(rows, indent=1))
            else:
                Console().print(report.compare_table(rows))
    finally:
        for s in summaries:
            s.close()
    return 0


def _title(summary: Summary) -> str:
    a = summary.attrs
    partial = "" if summary.complete else " [partial: still collecting]"
    if a.get("shard", "0/1") != "0/1":
        partial += f" [shard {a['shard']} of the corpus: merge the shards with `neuron-tui merge`]"
    return f"{a['model']}: {a['n_tokens']:,} tokens, rule {a['rule']} ({a['tau_source']} {a['threshold']}){partial}"


def run_neuron(args: argparse.Namespace) -> int:
    from rich.console import Console

    from neuron_tui.core import report

    with Summary.open(args.file) as summary:
        if not (0 <= args.layer < summary.n_layers and 0 <= args.index < summary.n_neurons):
            raise UsageError(f"no neuron L{args.layer} N{args.index}: the summary has {summary.n_layers} layers "
                             f"of {summary.n_neurons} neurons")
        record = report.neuron_record(summary, args.layer, args.index)
    if args.json:
        print(json.dumps(record, indent=1))
    else:
        Console().print(report.neuron_panel(record))
    return 0


def _open(path: Path) -> int:
    """The explorer needs a terminal; without one (a pipe, CI) print the report instead."""
    Summary.open(path).close()  # a bad file fails here with one line, before any screen is drawn
    if not sys.stdout.isatty():
        return run_report(argparse.Namespace(targets=[str(path)], json=False, cache_dir=None))
    from neuron_tui.tui.app import run_explorer

    run_explorer(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
