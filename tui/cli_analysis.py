"""`neuron-tui analyze`: its options, one per field of `AnalysisParams` (the type from the field's
annotation, the help from the first sentence of its docstring in core/read/params.py, so `--help` says
what each threshold is), and its run, which rewrites the analysis and says what changed per layer.

An option is named for the field, except where the field's name says less than the option should
(`OPTION_NAMES`); the field's own spelling stays an alias, and an error names the option as typed.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import sys
import typing
from dataclasses import fields
from functools import cache
from itertools import pairwise

from neuron_tui.core.errors import UsageError

# field -> option name, where the field's name is not what the option is: `min_fire_rate` is the
# P(fire | token) that makes a token covered, not a firing rate; and what the option's help adds
OPTION_NAMES = {"min_fire_rate": "min-p-fire"}
OPTION_NOTES = {"min_fire_rate": "That is P(fire | token) >= X."}


def option_name(field: str) -> str:
    return "--" + OPTION_NAMES.get(field, field.replace("_", "-"))


@cache
def field_docs() -> dict[str, str]:
    """The first sentence of each AnalysisParams field's docstring (the string under the field)."""
    from neuron_tui.core.read.params import AnalysisParams

    body = ast.parse(inspect.getsource(AnalysisParams)).body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in pairwise(body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr) \
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
            text = " ".join(after.value.value.split()).replace("*", "")
            match = re.match(r"(.+?[.!?])(\s|$)", text)
            docs[node.target.id] = match.group(1) if match else text
    return docs


def _bool(text: str) -> bool:
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if text.lower() not in words:
        raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")
    return words[text.lower()]


def _parser_of(kind):
    """The argparse type of an AnalysisParams field from its annotation: bool, int, float, X | None."""
    args = typing.get_args(kind)
    if type(None) in args:
        inner = _parser_of(next(a for a in args if a is not type(None)))

        def optional(text: str):
            return None if text.lower() == "none" else inner(text)

        optional.__name__ = f"{inner.__name__} or none"
        return optional
    return {bool: _bool, int: int, float: float}[kind]


class _Spelled(argparse.Action):
    """Stores the value and the option string it was given with, so an error names the option as typed."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        spelled = dict(getattr(namespace, "spelled", {}))
        spelled[self.dest] = option_string
        namespace.spelled = spelled


def analysis_options(p: argparse.ArgumentParser) -> None:
    """One option per AnalysisParams field, its help the field's first sentence and default."""
    from neuron_tui.core.read.params import PARAM_TYPES, AnalysisParams

    docs = field_docs()
    for f in fields(AnalysisParams):
        names = [option_name(f.name)]
        if f.name in OPTION_NAMES:
            names.append("--" + f.name.replace("_", "-"))
        p.add_argument(*names, dest=f.name, type=_parser_of(PARAM_TYPES[f.name]), default=argparse.SUPPRESS,
                       action=_Spelled, metavar="X",
                       help=" ".join(filter(None, (docs.get(f.name), OPTION_NOTES.get(f.name), f"Default {f.default}.")))
                       .replace("%", "%%"))


def run_analyze(args: argparse.Namespace) -> int:
    """Rewrite the analysis of `args.file` with the parameters given (the others default); print the
    file on stdout, and on stderr the parameters that differ from the defaults and the counts of each
    kind per layer that changed."""
    from neuron_tui.core.read.analysis import run_analysis
    from neuron_tui.core.read.api import SummaryFile
    from neuron_tui.core.read.params import AnalysisParams
    from neuron_tui.tui.present import Output
    from neuron_tui.tui.present.layers import analysis_changes

    overrides = {f.name: getattr(args, f.name) for f in fields(AnalysisParams) if hasattr(args, f.name)}
    try:
        params = AnalysisParams(**overrides)
    except ValueError as exc:
        name = str(exc).split(" ")[0]
        shown = getattr(args, "spelled", {}).get(name) or option_name(name)
        raise UsageError(f"{shown} {str(exc)[len(name) + 1:]}") from None
    with SummaryFile.open(args.file) as s:
        if s.summary.shard != "0/1":
            raise UsageError(f"{args.file} holds shard {s.summary.shard} of the corpus; the analysis needs every "
                             "sequence: merge the shards first (neuron-tui merge)")
        before = s.layers()
    run_analysis(args.file, params)
    with SummaryFile.open(args.file) as s:
        after = s.layers()
    print(args.file)
    sys.stdout.flush()
    changed = {f.name: getattr(params, f.name) for f in fields(AnalysisParams) if getattr(params, f.name) != f.default}
    said = ", ".join(f"{option_name(k)} {v}" for k, v in changed.items()) or "the default parameters"
    err = Output(stderr=True)
    err.print(f"neuron-tui: analysed with {said}", soft_wrap=True)
    table = analysis_changes(before, after)
    if table is None:
        err.print("neuron-tui: no layer's counts of any kind changed", soft_wrap=True)
    else:
        err.print("neuron-tui: neurons of each kind, before → after, in the layers that changed:", soft_wrap=True)
        err.show(table)
    return 0
