"""Testing a hypothesis about a neuron on new text: the summary's own model, the collection's hook and
firing rule, and ablation (`neuron-tui probe`, the explorer's `i`).

`Probe.for_summary` loads the model a summary was made from, and only that one: a local folder or GGUF
file is found where its fingerprint says and must still match it (core.fingerprint), a hub model is
loaded at the commit the summary recorded; anything else is one line (ProbeError). For a text, the
probe reads every neuron's activation h at the input of the layer's FFN output projection (the same
forward pre-hook point as the collection) and applies the summary's rule and per-layer tau (fired iff
h > tau for ReLU, |h| > tau otherwise). Ablation sets one neuron's h to 0, or clamps it to its mean
firing value, at every position, and reports how the next-token log-probabilities move: the tokens
whose log-probability rises and falls most at each position. For a token detector this shows live
whether its update suppresses its own trigger.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neuron_tui.cache import Summary
from neuron_tui.core.errors import NeuronTuiError
from neuron_tui.core.read.queries import categories
from neuron_tui.core.read.records import ProbeResult
from neuron_tui.core.sources import ModelSource, resolve

from .accumulators import firing_value
from .adapters import ffn_out_projections, n_neurons
from .loading import LoadedModel, default_device, load

ABLATE_TOP = 5  # tokens that rise and fall most, per position
TRIGGERS_SHOWN = 8  # of the neuron's recorded triggers, beside the probe's answer
MOVE_EPS = 1e-4  # a log-probability change below this is rounding, not an effect of the ablation


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
    def for_summary(cls, summary: Summary, device: str | None = None) -> "Probe":
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
        set to `value` at every position (0: ablated; its mean firing value: clamped on)."""
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
                 before: torch.Tensor | None = None) -> list[dict]:
        """Per position, the tokens whose next-token log-probability rises and falls most when the
        neuron is set to `value`: [{"rises": [(token, delta)], "falls": [...]}], leaving out moves
        under MOVE_EPS (no change: a neuron that was already at `value` there). `before`: the
        logits of the unablated run when the caller has them."""
        if before is None:
            before = self.run(ids, head=True)[1]
        after = self.run(ids, head=True, ablate=(layer, neuron, value))[1]
        delta = (torch.log_softmax(after.float(), -1) - torch.log_softmax(before.float(), -1)).cpu()
        k = min(top, delta.shape[-1])
        up, down = torch.topk(delta, k, dim=-1), torch.topk(delta, k, dim=-1, largest=False)
        out = []
        for up_v, up_i, down_v, down_i in zip(up.values.tolist(), up.indices.tolist(), down.values.tolist(),
                                              down.indices.tolist()):
            out.append({"rises": [(t, d) for t, d in zip(up_i, up_v) if d > MOVE_EPS],
                        "falls": [(t, d) for t, d in zip(down_i, down_v) if d < -MOVE_EPS]})
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


def probe_text(probe: Probe, summary, text: str | None, layer: int, neuron: int | None = None,
               ablate: str | None = None, ids: np.ndarray | None = None, top: int = ABLATE_TOP) -> ProbeResult:
    """The probe's answer for a text (or token `ids`), JSON-ready (`neuron-tui probe --json`):

    categories, triggers (with `neuron`): its categories and first recorded triggers from the summary;
    tokens: per token {id, text, activation (of `neuron`), fired, trigger (among the neuron's recorded
    triggers), covered (a token the summary found it fires on >= 95% of the time)}; top: per token the
    layer's neurons that fired on it, strongest first, with their categories from the summary;
    ablation (with `ablate` "zero" or "mean": the neuron set to 0, or clamped to its mean firing value):
    per position the tokens whose next-token log-probability rises and falls most. `summary` is the
    core.read.api.SummaryFile of the summary the probe was loaded for."""
    ids = probe.encode(text) if ids is None else np.asarray(ids, dtype=np.int64)
    texts = probe.token_texts(ids)
    ablating = ablate is not None and neuron is not None
    if ablate is not None and ablate not in ("zero", "mean"):
        raise ValueError(f"ablate is zero or mean, not {ablate!r}")
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
        act = record["activation"]
        set_to = 0.0 if ablate == "zero" else float(act["mean"] or 0.0)
        moves = probe.ablation(ids, layer, neuron, set_to, top, before=before)
        moved = sorted({t for m in moves for kind in m.values() for t, _ in kind})
        text_of = dict(zip(moved, probe.token_texts(np.array(moved, dtype=np.int64))))
        out["ablation"] = {"mode": ablate, "value": set_to, "positions": [
            {kind: [{"token": t, "text": text_of[t], "delta": d} for t, d in m[kind]] for kind in ("rises", "falls")}
            for m in moves]}
    return out
