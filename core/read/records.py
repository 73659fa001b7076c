"""The shapes of the read side's answers, as TypedDicts (no torch, no numpy: types only).

Every answer is a plain JSON-ready dict, printed as is by `--json`; these types name its keys, in the
order the JSON has them, so a renderer indexes a declared key rather than a string it hopes exists:

- `NeuronRecord`: one neuron (`neuron --json`, the explorer's neuron screen, the marks' export), with
  its nested `Activation`, `Trigger`, `NGram`, `ScoredToken` and `Context` items;
- `LayerRow`: one layer of `report --json` (and the overview, and the figures); `CompareRow`: one depth
  of `report A B --json`;
- `TableRow`: one neuron of `neurons --json`;
- `ProbeResult`: the probe's answer for a text (`probe --json`, the explorer's probe screen).

A TypedDict cannot derive keys from a registry: a `LayerRow` also holds, for each kind of neuron in
`kinds.KINDS`, `<name>` (a count, None without an analysis) and `<name>_frac` (its share of the layer),
and for each positional type `pos_<type>` (queries.ROW_KEYS lists them all).
"""

from __future__ import annotations

from typing import Literal, TypedDict

# ---- one neuron -----------------------------------------------------------------------------------------

class SignedFirings(TypedDict):
    """The firings of one sign: how many, and their mean h (None when there are none)."""

    count: int
    mean: float | None


class Activation(TypedDict):
    """The firing values: the largest |h| (h for ReLU), the signed mean, the split by sign (schema 2)."""

    max: float | None
    mean: float | None
    positive: SignedFirings | None
    negative: SignedFirings | None


class Trigger(TypedDict):
    """A token the neuron fires on, with its (estimated) count and how reliably it fires there."""

    token: int
    text: str
    count: float
    count_se: float  # standard error of an estimated count (0 where exact)
    occurrences: int
    p_fire: float | None  # P(fire | token)
    supp_rank: int | None  # 1-based rank among the neuron's suppressed tokens
    covered: bool  # fires on >= min_fire_rate of its occurrences
    explains: bool  # counted in the token-detector criterion


class NGram(TypedDict):
    """A (previous token, token) context of the neuron's firings."""

    prev: int
    prev_text: str
    token: int
    text: str
    count: float


class ScoredToken(TypedDict):
    """A token of the FFN update's projection: promoted (high score) or suppressed (low)."""

    token: int
    text: str
    score: float | None
    is_trigger: bool


class Context(TypedDict):
    """A window of the corpus around one of the neuron's strongest activations (or a kept event)."""

    position: int  # global position: seq * seq_len + pos
    seq: int
    pos: int
    left: str
    token: str
    right: str
    ids: list[int]  # the window's token ids; the activation is at index `at`
    at: int
    value: float | None  # the activation (None for a kept event): the signed h when `signed`, else |h|
    signed: bool  # False: `value` is |h| (a threshold-rule summary made before the pass kept signs)
    fired: bool
    source: Literal["top", "event"]


class VocabMoments(TypedDict):
    """Moments over the vocabulary of cos(w_out, U_eff[t]) (prediction and suppression neurons)."""

    mean: float | None
    var: float | None
    skew: float | None
    kurt: float | None  # Pearson's: a Gaussian has 3
    sign: int  # +1 / -1: the sign of h when it acts; the kinds read sign x skew


class Geometry(TypedDict):
    """The output vector's geometry against the unembedding (entropy and token-frequency neurons)."""

    w_out_norm: float | None
    w_in_norm: float | None
    null_share: float | None  # share of ||w_out||^2 in U_eff's null_k smallest directions
    freq_corr: float | None  # correlation of U_eff w_out with the corpus' log token frequency
    null_k: int
    typical_w_out_norm: float | None  # the layer's median
    typical_null_share: float | None


class Histogram(TypedDict):
    """Firings in the layer's fixed bins of h."""

    edges: list[float]  # B + 1
    counts: list[int]  # B


class SignCase(TypedDict):
    """One sign case (act(gate), up) of a gated neuron's firings."""

    case: str  # "++", "+-", "-+", "--"
    count: int
    share: float | None
    top_value: float | None  # the strongest |h| of the case
    top_position: int | None  # its global position
    context: "Context | None"


class NeuronRecord(TypedDict):
    """Everything about one neuron (queries.RECORD_KEYS says what each key means)."""

    layer: int
    index: int
    categories: list[str]
    act_count: int
    fire_rate: float
    rule: str
    tau: float
    activation: Activation
    event_level: int
    n_events: int
    distinct: int
    analysis: Literal["stored", "computed"]
    coverage: float | None
    ngram_coverage: float | None
    triggers: list[Trigger]
    ngrams: list[NGram]
    promoted: list[ScoredToken]
    suppressed: list[ScoredToken]
    position_rate: list[float | None]
    pos_mi: float | None
    pos_shape: str | None
    pos_strong: bool | None
    pos_range: list[int] | None
    contexts: list[Context]
    mean_h: float | None
    vocab: VocabMoments | None
    geometry: Geometry | None
    histogram: Histogram | None
    sign_cases: list[SignCase] | None


# ---- layers and tables ----------------------------------------------------------------------------------

class LayerRow(TypedDict):
    """One layer of `report --json` (the per-kind and per-positional-type keys: see the module docstring).
    The keys after `fire_p99` are None without an analysis."""

    layer: int
    depth: float
    neurons: int
    alive_rate: float
    fire_p50: float | None
    fire_p90: float | None
    fire_p99: float | None
    covered: int | None
    new: int | None
    new_vs_prev: int | None
    supp_share: float | None
    neg_share: float | None
    detectors_known: int | None


class CompareRow(TypedDict):
    """One relative depth of `report A B --json`: each model's layer nearest to it."""

    depth: float
    models: dict[str, LayerRow]


class TableRow(TypedDict):
    """One neuron of a layer's table (`neurons --json`)."""

    layer: int
    neuron: int
    categories: list[str]
    firings: int
    rate: float
    distinct: int | None
    triggers: list[str]  # the raw texts of its first triggers (the text table joins their visible forms)
    pos_mi: float | None
    pos_shape: str | None
    supp_rank: int | None


# ---- the probe ------------------------------------------------------------------------------------------

class ProbeTrigger(TypedDict):
    """One of the probed neuron's recorded triggers."""

    token: int
    text: str
    covered: bool


class ProbeToken(TypedDict):
    """One token of the probed text and what the neuron (when one is probed) did on it."""

    id: int
    text: str
    activation: float | None
    fired: bool | None
    trigger: bool  # among the neuron's recorded triggers
    covered: bool  # a token the summary found it fires on >= 95% of the time


class FiringNeuron(TypedDict):
    """A neuron of the layer that fired on a token, with its categories from the summary."""

    neuron: int
    activation: float
    categories: list[str]


class Probable(TypedDict):
    """A next token and its probability."""

    token: int
    text: str
    p: float


class NextToken(TypedDict):
    """The text's actual next token, and its probability before and after the ablation."""

    token: int
    text: str
    p_before: float
    p_after: float


class Move(TypedDict):
    """A next token whose probability moved under the ablation (one the model gives at least the
    ablation's `floor`, before or after): `dp` = p_after - p_before, `dlogp` in nats."""

    token: int
    text: str
    p_before: float
    p_after: float
    dp: float
    dlogp: float


class AblatedPosition(TypedDict):
    """What the ablation did to the distribution of the token after one position."""

    kl: float  # KL(P_orig || P_ablated), nats
    loss_delta: float | None  # -log P_ablated(next) + log P_orig(next) (> 0: the neuron helped); None at the end
    next: NextToken | None  # the text's actual next token (None at the last position)
    top_before: list[Probable]  # the most probable next tokens, without the ablation
    top_after: list[Probable]  # ... and with it
    rises: list[Move]  # ranked by dp (rank "p") or dlogp (rank "logp"), largest first
    falls: list[Move]


AblationMode = Literal["zero", "mean", "clamp"]  # 0; the neuron's mean h over every token of the corpus; a value
MoveRanking = Literal["p", "logp"]  # moves ordered by the change of probability, or of log-probability


class Ablation(TypedDict):
    """The neuron set to `value` at every position (`mode`: AblationMode); what moved at each
    position, and over the whole text."""

    mode: AblationMode
    value: float
    rank: MoveRanking
    floor: float  # tokens below this probability before and after are no move
    mean_kl: float  # over every position, nats
    mean_loss_delta: float | None  # over the positions with a next token, nats
    positions: list[AblatedPosition]


class _ProbeAnswer(TypedDict):
    model: str
    layer: int
    neuron: int | None
    rule: str
    tau: float
    tokens: list[ProbeToken]
    top: list[list[FiringNeuron]]  # per token, the layer's firing neurons, strongest first


class ProbeResult(_ProbeAnswer, total=False):
    """The probe's answer for a text. With a neuron: its `categories` and first recorded `triggers`
    (they come before `tokens` in the JSON); with an ablation: `ablation` (last)."""

    categories: list[str]
    triggers: list[ProbeTrigger]
    ablation: Ablation
