"""Merging the summaries of disjoint corpus shards of one run into the summary of their union, exactly.

A shard K/N of a run counts the planned sequences i with i % N == K at their *global* token positions
g = i * T + t (core.model.passes), so every shard lives in the same position space and the statistics of
the union follow from the shards' alone:

- act_count, pos_count, act_sum, h_sum, the histogram and sign-case counts: sums (every shard counts
  into the run's bins, calibrated on the same first sequences); act_max: the maximum; tokens_at_pos:
  the sum.
- top-K contexts (one per sequence, the shards' sequences are disjoint): the K largest values of all
  shards, ties broken by the smaller position, each with its window of h; the strongest firing of
  each sign case by the same rule.
- event samples (level sampling, accumulators.py): the final sample of neuron i is {g fired : z(g) >=
  level_i}, level_i the smallest L whose firings with z >= L over the whole corpus number at most C.
  Each shard kept exactly its firings with z >= its own level, and the union's level is at least every
  shard's, so for L >= max(shard levels) the union of the kept events holds every firing with z >= L:
  the union's level is the smallest such L whose count is at most C, and its sample is the kept events
  with z >= that level. The result is the one an uninterrupted single run keeps, event for event.

`merge_summaries` (the `neuron-tui merge` command) checks that the inputs are finished shards of the same
run (same model, rule, tau, seq_len, corpus, settings) that share no sequence, merges one layer at a
time, and writes a summary like a collection's: shard "0/1" and the whole run's key once every shard is
in, then the analysis, which needs every sequence.

The projection group depends on the model and, through each neuron's candidate triggers (its most
frequent tokens among the kept events) and orientation (the sign of its summed activation), on the
events. Given the model (`merge --model`, checked to be the run's weights) it is recomputed exactly as
a single run computes it. Without the model it is assembled from the inputs: each neuron's promoted and
suppressed tokens from an input whose orientation is the union's (there is always one: a sum is
negative only if some term is), and its candidate triggers re-ranked on the merged events among the
tokens whose scores such inputs know, so a whole-run candidate that no shard listed can be missing;
the group's `candidates_complete` attribute says which way it was made.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from importlib.metadata import version
from math import lcm
from pathlib import Path

import numpy as np

from neuron_tui.cache import Summary, SummaryWriter, TokenRows, schema
from neuron_tui.core.errors import NeuronTuiError, UsageError
from neuron_tui.core.read.analysis import write_analysis
from neuron_tui.core.read.sampling import MAX_LEVEL, token_levels
from neuron_tui.core.read.triggers import candidate_tokens
from neuron_tui.core.sources import resolve

from .accumulators import LayerState
from .adapters import ffn_out_projections, n_neurons
from .calibration import Calibration
from .collect import N_CANDIDATES, candidates_and_signs
from .loading import LoadedModel, load
from .plan import WHOLE, format_shard, parse_shard, run_key
from .projections import UpdateProjector, write_projection
from .states import PassResult, layer_state, write_pass

# root attributes that must be equal for summaries to be shards of one run
SAME_RUN = ("model", "model_revision", "model_fingerprint", "dtype", "architecture", "rule", "tau_source", "threshold",
            "seq_len", "n_layers", "n_neurons", "bos", "events_cap", "top_k", "ctx_left", "ctx_right", "n_seq_planned",
            "corpus", "settings", "schema_version", "base_key")
FREE_SETTINGS = ("batch_size",)  # may differ between shards: no count depends on it
SUMS = ("act_count", "pos_count", "act_sum", "act_count_pos", "act_sum_pos", "h_sum", "hist_count")  # add up


def merge_layer(states: list[LayerState], cap: int) -> LayerState:
    """One layer's state of the union of disjoint shards (see the module docstring for each rule)."""
    K = states[0].top_val.shape[0]
    top_val = np.concatenate([st.top_val for st in states])
    top_pos = np.concatenate([st.top_pos for st in states])
    best = _strongest_first(top_val, top_pos)[:K]
    level, events = _merge_events(states, cap)
    return LayerState(
        **{name: sum(getattr(st, name) for st in states) for name in SUMS},
        act_max=np.maximum.reduce([st.act_max for st in states]),
        top_val=np.take_along_axis(top_val, best, axis=0),
        top_pos=np.take_along_axis(top_pos, best, axis=0),
        ctx_val=np.take_along_axis(np.concatenate([st.ctx_val for st in states]), best[:, None, :], axis=0),
        level=level,
        events=events,
        **(_merge_signs(states) if states[0].sign_count is not None else {}),
    )


def _strongest_first(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The order along axis 0 of candidates (values, positions [n, ...]): largest value first, equal
    values by the smaller position, as the accumulators order them."""
    return np.lexsort((positions, -values), axis=0)


def _merge_signs(states: list[LayerState]) -> dict[str, np.ndarray]:
    """The sign cases of the union: counts add, each case's strongest firing is the strongest of all."""
    val, pos = np.stack([st.sign_top_val for st in states]), np.stack([st.sign_top_pos for st in states])
    best = _strongest_first(val, pos)[:1]
    return {"sign_count": sum(st.sign_count for st in states),
            "sign_top_val": np.take_along_axis(val, best, axis=0)[0],
            "sign_top_pos": np.take_along_axis(pos, best, axis=0)[0]}


def _merge_events(states: list[LayerState], cap: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(level [F] int8, events per neuron) of the union: the level rule applied to the kept events."""
    F = len(states[0].events)
    floor = np.max([st.level for st in states], axis=0).astype(np.int64)
    neuron = np.concatenate([np.repeat(np.arange(F), [len(e) for e in st.events]) for st in states])
    pos = np.concatenate([e for st in states for e in st.events]).astype(np.int64)
    z = token_levels(pos)
    above = z >= floor[neuron]  # the firings with z >= floor, all of them (see the module docstring)
    hist = np.bincount(neuron[above] * MAX_LEVEL + z[above], minlength=F * MAX_LEVEL).reshape(F, MAX_LEVEL)
    at_or_above = hist[:, ::-1].cumsum(1)[:, ::-1]
    level = np.maximum(floor, (at_or_above > cap).sum(1))
    keep = z >= level[neuron]
    neuron, pos = neuron[keep], pos[keep]
    order = np.lexsort((pos, neuron))
    counts = np.bincount(neuron, minlength=F)
    return level.astype(np.int8), np.split(pos[order], np.cumsum(counts)[:-1])


def merge_rows(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, seq_index) of the union, in sequence order, from each shard's (seq_index, tokens)."""
    seq_index = np.concatenate([seqs for seqs, _ in parts]).astype(np.int64)
    order = np.argsort(seq_index, kind="stable")
    return np.concatenate([tokens for _, tokens in parts])[order], seq_index[order]


def merge_summaries(paths: list[Path | str], out: Path | str, model: str | None = None,
                    device: str | None = None, force: bool = False) -> Path:
    """Merge the summaries of disjoint shards of one run into `out` (see the module docstring), one
    layer at a time; `model`: the run's model (a name, folder or .gguf file), loaded on `device` once
    the inputs are known to merge, to recompute the projection group exactly. An existing `out` is
    replaced only with `force`."""
    paths, out = [Path(p) for p in paths], Path(out)
    if len(paths) < 2:
        raise UsageError("merge needs at least two summaries")
    if out.resolve() in {p.resolve() for p in paths}:
        raise UsageError(f"the output {out} is one of the inputs; write the merge to a new file")
    if out.exists() and not force:
        raise UsageError(f"{out} exists; pass --force to replace it, or -o a new file")
    with ExitStack() as opened:
        summaries = [opened.enter_context(Summary.open(path)) for path in paths]
        shard = _check_mergeable(summaries)
        first = summaries[0]
        loaded = None if model is None else load(resolve(model), device=device, quiet=True)
        if loaded is not None:
            _check_model(first, loaded)
        tokens, seq_index = merge_rows([(s.rows.sequences(), s.read("tokens")[: s.n_seq]) for s in summaries])
        cap, L, F = int(first.attrs["events_cap"]), first.n_layers, first.n_neurons
        result = PassResult(tokens, seq_index, Calibration(first.tau, first.read("hist_edges")),
                            lambda layer: merge_layer([layer_state(s, layer) for s in summaries], cap), L)
        base_key = first.attrs.get("base_key", first.attrs["key"])
        attrs = {k: v for k, v in first.attrs.items() if k not in ("format", "schema_version", schema.INTEGRITY_ATTR)}
        attrs.update(tool_version=version("neuron-tui"), n_seq=len(tokens), n_tokens=tokens.size,
                     shard=format_shard(shard), key=run_key(base_key, shard), base_key=base_key, complete=True,
                     corpus_exhausted=any(bool(s.attrs.get("corpus_exhausted")) for s in summaries))
        with SummaryWriter(out) as writer:
            writer.set_attrs(attrs)
            if loaded is not None:
                layers = candidates_and_signs(writer, result, first.vocab, first.bos, F)
                write_projection(writer, UpdateProjector(loaded.model, n_candidates=N_CANDIDATES, oriented=True), layers)
            else:
                _write_assembled(writer, summaries, result)
            if shard == WHOLE:
                write_analysis(writer, writer.reader())
    return out


def _check_mergeable(summaries: list[Summary]) -> tuple[tuple[int, ...], int]:
    """The shard the inputs cover together; NeuronTuiError naming the first thing that keeps them apart."""
    first = summaries[0]
    for s in summaries:
        if not s.complete:
            raise NeuronTuiError(f"{s.path} is a checkpoint of a collection still under way; finish it before merging")
        if not all(s.has(name) for name in ("act_count_pos", *schema.ADDED_IN_3)):
            raise NeuronTuiError(f"{s.path} was made by an older neuron-tui (schema {s.attrs.get('schema_version')}); "
                                 "collect that shard again to merge it")
    for s in summaries[1:]:
        for name in SAME_RUN:
            what = _difference(name, first, s)
            if what:
                raise NeuronTuiError(f"cannot merge {first.path} and {s.path}: {what}")
        if not np.array_equal(first.tau, s.tau):
            raise NeuronTuiError(f"cannot merge {first.path} and {s.path}: tau differs (calibrated on other "
                                 "hardware or dtype? collect every shard with the same --threshold)")
        if not np.array_equal(first.read("hist_edges"), s.read("hist_edges")):
            raise NeuronTuiError(f"cannot merge {first.path} and {s.path}: their activation histograms have "
                                 "other bins (calibrated on other hardware or dtype?)")
    specs = [parse_shard(s.attrs.get("shard", "0/1")) for s in summaries]
    m = lcm(*(n for _, n in specs))
    covered = [{k + j * n for k in ks for j in range(m // n)} for ks, n in specs]
    for i in range(len(summaries)):
        for j in range(i):
            if covered[i] & covered[j]:
                raise NeuronTuiError(
                    f"cannot merge {summaries[j].path} and {summaries[i].path}: their shards "
                    f"{format_shard(specs[j])} and {format_shard(specs[i])} overlap (the same sequences twice)"
                )
    union = tuple(sorted(set().union(*covered)))
    return WHOLE if len(union) == m else (union, m)


def _difference(name: str, a: Summary, b: Summary) -> str:
    """'' when `a` and `b` agree on the root attribute `name`, else what differs: "NAME differs (A vs B)",
    naming the key inside JSON attributes, and the models themselves where their weights differ."""
    va, vb = a.attrs.get(name), b.attrs.get(name)
    if name in ("corpus", "settings") and isinstance(va, str) and isinstance(vb, str):
        da, db = json.loads(va), json.loads(vb)
        keys = [k for k in sorted(set(da) | set(db)) if da.get(k) != db.get(k) and k not in FREE_SETTINGS]
        return f"{name}.{keys[0]} differs ({da.get(keys[0])!r} vs {db.get(keys[0])!r})" if keys else ""
    if name == "model_fingerprint":
        same = a.json_attr(name).get("digest") == b.json_attr(name).get("digest")
        return "" if same else f"they were made from different weights: {_model_of(a)} vs {_model_of(b)}"
    if va == vb:
        return ""
    if name == "base_key":
        return f"they are shards of different runs: {_model_of(a)} vs {_model_of(b)}"
    return f"{name} differs ({va!r} vs {vb!r})"


def _model_of(summary: Summary) -> str:
    """The model a summary was made from, as told apart from another of the same name: where its
    weights were, and their fingerprint."""
    fp = summary.json_attr("model_fingerprint")
    digest = str(fp.get("digest") or "unknown")[:8]
    return f"{summary.attrs.get('model')} ({fp.get('path', 'unknown place')}, weights {digest})"


def _check_model(first: Summary, loaded: LoadedModel) -> None:
    """Refuse to project with weights other than the run's (another model, revision or GGUF file)."""
    out_projs = ffn_out_projections(loaded.model)
    facts = {"model": loaded.source.name, "architecture": loaded.architecture, "model_revision": loaded.revision,
             "n_layers": len(out_projs), "n_neurons": n_neurons(out_projs[0])}
    for name, value in facts.items():
        if first.attrs.get(name) != value:
            raise NeuronTuiError(f"--model {loaded.source.name} is not the model of {first.path}: {name} "
                                 f"{value!r} vs {first.attrs.get(name)!r}")
    recorded = first.json_attr("model_fingerprint").get("digest")
    if recorded and recorded != loaded.fingerprint.get("digest"):
        raise NeuronTuiError(f"--model {loaded.source.name} is not the model of {first.path}: its weights' "
                             "fingerprint differs (another folder, or files changed since)")


def _write_assembled(writer: SummaryWriter, summaries: list[Summary], result: PassResult) -> None:
    """The root datasets of the union and, when every input has one, its projection group assembled
    from the inputs', layer by layer: per neuron, promoted/suppressed tokens from the first input
    oriented as the union, and candidate triggers re-ranked on the merged events among the tokens such
    inputs scored (the group's `candidates_complete` is False)."""
    first = summaries[0]
    if any(s.projection is None for s in summaries):
        write_pass(writer, result, first.vocab, first.bos, first.n_neurons)
        return
    group, oriented = schema.PROJECTION_GROUP, bool(first.projection.attrs.get("oriented", False))
    T, V, L = first.seq_len, len(first.vocab), first.n_layers
    flat, rows = result.tokens.reshape(-1), TokenRows(result.seq_index, len(result.tokens), T)
    pad = {"cand_score": np.nan, "cand_supp_rank": -1, "cand_cos_in": np.nan}

    def layer(layer: int, st: LayerState) -> None:
        F = len(st.act_count)
        read = {name: np.stack([s.projection.read(name, layer) for s in summaries]) for name in schema.PROJECTION_DATASETS}
        # agree[p, i]: input p's vectors point the way the union's do (unoriented groups: always)
        agree = np.ones((len(summaries), F), dtype=bool)
        if oriented:
            agree = np.stack([s.read("act_sum", layer) < 0 for s in summaries]) == (st.act_sum < 0)
        source = agree.argmax(0)  # the first agreeing input of each neuron
        arrays = {name: read[name][source, np.arange(F)]
                  for name in ("promoted_tok", "promoted_score", "suppressed_tok", "suppressed_score")}
        cand = read["cand_tok"].astype(np.int64)  # [inputs, F, Kc]
        valid = (cand >= 0) & agree[:, :, None]
        pair = (np.arange(F)[None, :, None] * V + cand)[valid]
        keys, where = np.unique(pair, return_index=True)
        chosen = candidate_tokens(st.events, lambda g: flat[rows.local(g)], T, first.bos, cand.shape[2],
                                  allowed=lambda n, t: np.isin(n * V + t, keys))
        ok = chosen >= 0
        at = np.searchsorted(keys, (np.arange(F)[:, None] * V + chosen)[ok])
        arrays["cand_tok"] = chosen
        for name, fill in pad.items():
            arrays[name] = np.full(chosen.shape, fill, dtype=read[name].dtype)
            arrays[name][ok] = read[name][valid][where][at]
        for name, value in arrays.items():
            writer.write_layer(name, layer, value, L, group=group)

    write_pass(writer, result, first.vocab, first.bos, first.n_neurons, on_layer=layer)
    writer.set_attrs({**first.projection.attrs, "candidates_complete": False}, group=group)
