"""Testing a hypothesis about a neuron on new text: the summary's own model, the collection's hook and
firing rule, and ablation (`neuron-tui probe`, the explorer's `i`).

`Probe.for_summary` loads the model a summary was made from, and only that one: a local folder or GGUF
file is found where its fingerprint says and must still match it (core.fingerprint), a hub model is
loaded at the commit the summary recorded; anything else is one line (ProbeError). For a text, the
probe reads every neuron's activation h at the input of the layer's FFN output projection (the same
forward pre-hook point as the collection) and applies the summary's rule and per-layer tau (fired iff
h > tau for ReLU, |h| > tau otherwise).

Ablation sets one neuron's h at every position to 0 (`zero`), to its mean over every token of the
summary's corpus (`mean`: h_sum / n_tokens, the mean ablation of the circuits literature, which keeps
the neuron's average contribution and removes only its variation) or to a given value (`clamp`), and
measures what TransformerLens users measure (e.g. Stolfo, Wu, Gurnee et al. 2024, "Confidence Regulation
Neurons in Language Models"; Gurnee et al. 2024, "Universal Neurons in GPT2 Language Models"): per
position the KL divergence KL(P_orig || P_ablated) of the next-token distributions, the change of
the loss on the text's actual next token, the most probable tokens before and after, and the tokens
whose probability moves most among those the model predicts at all (a probability floor), so that a
log-probability jump of a token at 1e-9 is not reported as an effect; over the text, the mean KL and
the mean loss change. For a token detector this shows live whether its update suppresses its own trigger.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import torch

from neuron_tui.cache import Summary
from neuron_tui.core.errors import NeuronTuiError
from neuron_tui.core.read.queries import categories
from neuron_tui.core.read.records import AblationMode, MoveRanking, ProbeResult
from neuron_tui.core.sources import ModelSource, resolve

from .adapters import ffn_out_projections, n_neurons
from .batches import firing_value
from .loading import LoadedModel, default_device, load
from .projections import _wide

ABLATE_TOP = 5  # tokens that rise and fall most, and most probable tokens, per position
TRIGGERS_SHOWN = 8  # of the neuron's recorded triggers, beside the probe's answer
MOVE_EPS = 1e-4  # a log-probability change below this is rounding, not an effect of the ablation
PROB_FLOOR = 1e-3  # a token moves only if the model gives it at least this probability, before or after
ABLATION_MODES = get_args(AblationMode)
RANKINGS = get_args(MoveRanking)
_ROW_BYTES = 256 * 2**20  # float64 work per block of positions (a few [rows, V] arrays)


class ProbeError(NeuronTuiError):
    """The probe cannot run for this summary (its model is not here, or not the same)."""


def probe_source(summary: Summary) -> tuple[ModelSource, str | None]:
    """(where the summary's model is, the hub revision to load) checked against its fingerprint."""
    fp = summary.json_attr("model_fingerprint")
    name = str(summary.attrs.get("model"))
    if not fp.get("digest"):
        raise ProbeError(f"{summary.path} records no fingerprint of its model's weights, so the probe cannot tell "
                         f"whether a model {name} here is that model")
    path = Path(str(fp.get("path", "")))
    revision = None
    try:
        if fp["kind"] in ("folder", "gguf") and path.exists():
            source = resolve(str(path))
        elif fp["kind"] == "hub":
            source, revision = resolve(name), str(summary.attrs.get("model_revision") or "") or None
        else:
            source = resolve(name)  # e.g. smollm2: its package lies elsewhere in this environment
    except NeuronTuiError as exc:
        raise ProbeError(f"the model of {summary.path} ({name}) is not here: {exc}") from None
    now = source.fingerprint(revision or "")["digest"] if fp["kind"] == "hub" else source.fingerprint()["digest"]
    if now != fp["digest"]:
        raise ProbeError(f"the model {name} here is not the one {summary.path} was made from: its weights' "
                         "fingerprint differs (another folder, or files changed since)")
    return source, revision


@dataclass
class Firing:
    """One layer's activations on a text: h [T, F] (float32) and fired [T, F]."""

    h: np.ndarray
    fired: np.ndarray


class Probe:
    """The model of a summary, with its firing rule and thresholds, ready for new text."""

    def __init__(self, loaded: LoadedModel, rule: str, tau: np.ndarray, bos: bool):
        self.loaded, self.rule, self.tau, self.bos = loaded, rule, np.asarray(tau, dtype=np.float32), bool(bos)
        self.model = loaded.model
        self.modules = ffn_out_projections(self.model)
        self.device = next(self.model.parameters()).device

    @classmethod
    def for_summary(cls, summary: Summary, device: str | None = None) -> Probe:
        """Load the summary's model (see the module docstring) on `device`: by default where the
        summary was collected when that device is here, else the CPU."""
        source, revision = probe_source(summary)
        made_on = str(summary.attrs.get("device", "cpu"))
        if device is None:
            device = made_on if made_on == "cpu" or default_device().startswith(made_on) else "cpu"
        dtype = summary.attrs.get("dtype") if str(device).split(":")[0] == made_on else None  # same precision there
        loaded = load(source, device=device, dtype=dtype, revision=revision, quiet=True)
        probe = cls(loaded, str(summary.attrs["rule"]), summary.tau, summary.bos)
        F = n_neurons(probe.modules[0])
        if (len(probe.modules), F) != (summary.n_layers, summary.n_neurons):
            where = source.name if not source.local else str(Path(source.load_from) / (source.gguf_file or ""))
            raise ProbeError(f"{where} has {len(probe.modules)} layers x {F} neurons, {summary.path} "
                             f"{summary.n_layers} x {summary.n_neurons}")
        return probe

    def encode(self, text: str) -> np.ndarray:
        """Token ids of `text`, starting with BOS when the summary's sequences do."""
        tok = self.loaded.tokenizer
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ProbeError("the text is empty: type or pass some text to probe")
        if self.bos and tok.bos_token_id is not None:
            ids = [tok.bos_token_id, *ids]
        limit = self.loaded.max_positions
        if limit and len(ids) > limit:
            raise ProbeError(f"the text has {len(ids):,} tokens; {self.loaded.source.name} reads at most {limit:,}")
        return np.asarray(ids, dtype=np.int64)

    def token_texts(self, ids: np.ndarray) -> list[str]:
        return self.loaded.tokenizer.batch_decode([[int(i)] for i in ids], clean_up_tokenization_spaces=False)

    def firing(self, ids: np.ndarray, layer: int) -> Firing:
        """Every neuron's activation of `layer` on the tokens `ids`, and which fired."""
        return self.run(ids, layer)[0]

    def logits(self, ids: np.ndarray, ablate: tuple[int, int, float] | None = None) -> np.ndarray:
        """[T, V] float32 next-token logits; with `ablate` = (layer, neuron, value) that neuron's h is
        set to `value` at every position (0: zero ablation; its corpus mean of h: mean ablation; any
        other: clamped)."""
        return self.run(ids, head=True, ablate=ablate)[1].float().cpu().numpy()

    @torch.no_grad()
    def run(self, ids: np.ndarray, layer: int | None = None, head: bool = False,
            ablate: tuple[int, int, float] | None = None) -> tuple[Firing | None, torch.Tensor | None]:
        """One forward pass: the firing of `layer` (when given) and the [T, V] logits (with `head`;
        without it the unembedding, the costliest matmul of a small model, is skipped)."""
        seen: list[torch.Tensor] = []
        handle = None if layer is None else self.modules[layer].register_forward_pre_hook(
            lambda m, args: seen.append(args[0].detach()))
        try:
            with self._set(ablate):
                x = torch.as_tensor(np.asarray(ids, dtype=np.int64)[None]).to(self.device)
                logits = self.model(input_ids=x, use_cache=False).logits[0] if head else None
                if not head:
                    self.model.base_model(input_ids=x, use_cache=False)
        finally:
            if handle is not None:
                handle.remove()
        if layer is None:
            return None, logits
        h = seen[0].reshape(len(ids), -1)
        fired = firing_value(h, self.rule) > float(self.tau[layer])
        return Firing(h.float().cpu().numpy(), fired.cpu().numpy()), logits

    def ablation(self, ids: np.ndarray, layer: int, neuron: int, value: float = 0.0, top: int = ABLATE_TOP,
                 before: torch.Tensor | None = None, floor: float = PROB_FLOOR, rank: str = "p") -> dict:
        """The effect of setting the neuron's h to `value` at every position, per position t of `ids`
        (the distribution of the token after t; see the module docstring):

        kl [T]: KL(P_orig || P_ablated) in nats; loss_delta [T-1]: -log P_ablated(y) + log P_orig(y)
        for the actual next token y = ids[t+1] (> 0: the ablation hurts, the neuron helped); next_p
        [T-1, 2]: P_orig(y), P_ablated(y); top_before / top_after: per position the `top` most probable
        tokens [(token, p)]; rises / falls: per position the `top` tokens whose probability (rank "p")
        or log-probability (rank "logp") rises and falls most among those with P_orig or P_ablated of
        at least `floor`, as (token, p_before, p_after, change of log p), leaving out moves under
        MOVE_EPS nats (no change: a neuron that was already at `value` there). `before`: the logits of
        the unablated run when the caller has them. Computed in float64 where the device has it, a
        block of positions at a time."""
        if rank not in RANKINGS:
            raise ValueError(f"rank is one of {', '.join(RANKINGS)}, not {rank!r}")
        if before is None:
            before = self.run(ids, head=True)[1]
        after = self.run(ids, head=True, ablate=(layer, neuron, value))[1]
        T, V = before.shape
        wide = _wide(before.device)
        nxt = torch.as_tensor(np.asarray(ids, dtype=np.int64)[1:], device=before.device)
        out = {"kl": [], "loss_delta": [], "next_p": [], "top_before": [], "top_after": [], "rises": [], "falls": []}
        rows = max(1, _ROW_BYTES // (8 * 6 * V))
        k = min(top, V)
        for lo in range(0, T, rows):
            hi = min(T, lo + rows)
            lp, lq = (torch.log_softmax(x[lo:hi].to(wide), -1) for x in (before, after))
            p, q = lp.exp(), lq.exp()
            out["kl"].append((p * (lp - lq)).sum(-1).clamp_min(0))
            y = nxt[lo : min(hi, T - 1)]
            if len(y):
                at = torch.arange(len(y), device=y.device)
                out["loss_delta"].append(lp[at, y] - lq[at, y])
                out["next_p"].append(torch.stack([p[at, y], q[at, y]], 1))
            for name, dist in (("top_before", p), ("top_after", q)):
                best = dist.topk(k, dim=-1)
                out[name] += [list(zip(i, v)) for i, v in zip(best.indices.tolist(), best.values.tolist())]
            change = (q - p) if rank == "p" else (lq - lp)
            moved = (torch.maximum(p, q) >= floor) & ((lq - lp).abs() > MOVE_EPS)
            for name, sign in (("rises", 1.0), ("falls", -1.0)):
                score = torch.where(moved & (sign * change > 0), sign * change, -torch.inf)
                best = score.topk(k, dim=-1)
                idx, real = best.indices, best.values > -torch.inf
                for toks, keep, pb, pa, dl in zip(idx.tolist(), real.tolist(), p.gather(1, idx).tolist(),
                                                  q.gather(1, idx).tolist(), (lq - lp).gather(1, idx).tolist()):
                    out[name].append([(t, b, a, d) for t, ok, b, a, d in zip(toks, keep, pb, pa, dl) if ok])
        for name in ("kl", "loss_delta", "next_p"):
            out[name] = torch.cat(out[name]).cpu().numpy() if out[name] else np.zeros((0, 2) if name == "next_p" else 0)
        return out

    @contextmanager
    def _set(self, ablate: tuple[int, int, float] | None):
        if ablate is None:
            yield
            return
        layer, neuron, value = ablate

        def hook(module, args):
            h = args[0].clone()
            h[..., neuron] = value
            return (h, *args[1:])

        handle = self.modules[layer].register_forward_pre_hook(hook)
        try:
            yield
        finally:
            handle.remove()


def ablation_value(summary: Summary, layer: int, neuron: int, mode: str, value: float | None = None) -> float:
    """What an ablation sets the neuron's h to: 0 (`zero`), its mean over every token of the summary's
    corpus (`mean`: h_sum / n_tokens; a summary collected before the pass summed h has none: ProbeError),
    or `value` (`clamp`)."""
    if mode not in ABLATION_MODES:
        raise ValueError(f"ablation is one of {', '.join(ABLATION_MODES)}, not {mode!r}")
    if mode == "clamp":
        if value is None or not np.isfinite(value):
            raise ProbeError("clamp needs the value to set the neuron to (--value X)")
        return float(value)
    if value is not None:
        raise ProbeError(f"a value is for clamp; {mode} sets the neuron to {'0' if mode == 'zero' else 'its corpus mean'}")
    if mode == "zero":
        return 0.0
    if not summary.has("h_sum") or summary.n_tokens == 0:
        raise ProbeError(f"mean ablation needs the neurons' corpus mean of h (h_sum), which {summary.path.name} "
                         "lacks: it was collected by an earlier neuron-tui; collect it again with this one, or "
                         "clamp the neuron to a value of yours")
    return float(summary.read_neuron("h_sum", layer, neuron)) / summary.n_tokens


def _ablation_answer(probe: Probe, ids: np.ndarray, layer: int, neuron: int, mode: str, set_to: float, top: int,
                     before: torch.Tensor, floor: float, rank: str) -> dict:
    """The `ablation` item of probe_text's answer (core.read.records.Ablation)."""
    eff = probe.ablation(ids, layer, neuron, set_to, top, before=before, floor=floor, rank=rank)
    seen = {t for per in (eff["top_before"], eff["top_after"]) for row in per for t, _ in row}
    seen |= {t for per in (eff["rises"], eff["falls"]) for row in per for t, *_ in row}
    seen = sorted(seen | {int(i) for i in ids[1:]})
    text_of = dict(zip(seen, probe.token_texts(np.array(seen, dtype=np.int64))))
    T = len(ids)
    positions = []
    for t in range(T):
        has_next = t < T - 1
        positions.append({
            "kl": float(eff["kl"][t]),
            "loss_delta": float(eff["loss_delta"][t]) if has_next else None,
            "next": {"token": int(ids[t + 1]), "text": text_of[int(ids[t + 1])], "p_before": float(eff["next_p"][t, 0]),
                     "p_after": float(eff["next_p"][t, 1])} if has_next else None,
            **{name: [{"token": i, "text": text_of[i], "p": pr} for i, pr in eff[name][t]]
               for name in ("top_before", "top_after")},
            **{name: [{"token": i, "text": text_of[i], "p_before": b, "p_after": a, "dp": a - b, "dlogp": dl}
                      for i, b, a, dl in eff[name][t]] for name in ("rises", "falls")},
        })
    return {"mode": mode, "value": set_to, "rank": rank, "floor": float(floor),
            "mean_kl": float(eff["kl"].mean()),
            "mean_loss_delta": float(eff["loss_delta"].mean()) if T > 1 else None,
            "positions": positions}


def probe_text(probe: Probe, summary, text: str | None, layer: int, neuron: int | None = None,
               ablate: str | None = None, ids: np.ndarray | None = None, top: int = ABLATE_TOP,
               value: float | None = None, floor: float = PROB_FLOOR, rank: str = "p") -> ProbeResult:
    """The probe's answer for a text (or token `ids`), JSON-ready (`neuron-tui probe --json`):

    categories, triggers (with `neuron`): its categories and first recorded triggers from the summary;
    tokens: per token {id, text, activation (of `neuron`), fired, trigger (among the neuron's recorded
    triggers), covered (a token the summary found it fires on >= 95% of the time)}; top: per token the
    layer's neurons that fired on it, strongest first, with their categories from the summary;
    ablation (with `ablate` zero, mean or clamp and `value`: see ablation_value; moves among the tokens
    of probability >= `floor`, ranked by `rank`): its mode, value, the mean KL and loss change over the
    text and per position the KL, the loss change on the next token, the most probable tokens before
    and after and the moves (core.read.records.Ablation). `summary` is the core.read.api.SummaryFile of
    the summary the probe was loaded for."""
    ids = probe.encode(text) if ids is None else np.asarray(ids, dtype=np.int64)
    texts = probe.token_texts(ids)
    ablating = ablate is not None and neuron is not None
    set_to = ablation_value(summary.summary, layer, neuron, ablate, value) if ablating else None
    if not 0 <= floor < 1:
        raise ProbeError(f"the probability floor {floor} is outside [0, 1)")
    firing, before = probe.run(ids, layer, head=ablating)  # with ablation the same pass gives the baseline
    table = summary.table(layer)
    out: dict = {"model": summary.model, "layer": int(layer), "neuron": None if neuron is None else int(neuron),
                 "rule": probe.rule, "tau": float(probe.tau[layer])}
    record = summary.neuron(layer, neuron) if neuron is not None else None
    known = {t["token"] for t in record["triggers"]} if record else set()
    covered = {t["token"] for t in record["triggers"] if t["covered"]} if record else set()
    value = firing_value(torch.from_numpy(firing.h), probe.rule).numpy()
    if record is not None:
        out["categories"] = record["categories"]
        out["triggers"] = [{"token": t["token"], "text": t["text"], "covered": t["covered"]}
                           for t in record["triggers"][:TRIGGERS_SHOWN]]
    out["tokens"] = [{"id": int(i), "text": texts[k], "activation": None if neuron is None else float(firing.h[k, neuron]),
                      "fired": None if neuron is None else bool(firing.fired[k, neuron]),
                      "trigger": int(i) in known, "covered": int(i) in covered} for k, i in enumerate(ids)]
    out["top"] = []
    for k in range(len(ids)):
        on = np.flatnonzero(firing.fired[k])
        best = on[np.argsort(-value[k, on], kind="stable")][:top]
        out["top"].append([{"neuron": int(n), "activation": float(firing.h[k, n]),
                            "categories": categories(int(table.flags[n]))} for n in best])
    if ablating:
        out["ablation"] = _ablation_answer(probe, ids, layer, neuron, ablate, set_to, top, before, floor, rank)
    return out
