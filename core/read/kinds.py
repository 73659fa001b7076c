"""The kinds of neuron neuron-tui finds: one record and one criterion per kind, and nothing else anywhere.

Every list of kinds the tool shows derives from `KINDS`: the flag bit stored in `analysis/flags`, the
names of `--category` and of the JSON rows and records, the table's category letters and their colours,
the layer screen's filter keys and labels, the overview's columns, the report's columns, the legend of
`?` and the help of `--category`. Adding a kind is one `Kind` here, one criterion function (below, or
beside the statistic it reads) and its tests; docs/design.md says what each criterion means and where
it comes from.

A criterion decides from the `Evidence` of one layer: per-neuron statistics the analysis computed
(core.read.analysis), or only the firing counts when a summary has no analysis yet (a checkpoint):
kinds with `needs_analysis=False` are decided from the counts alone, so a checkpoint shows them too.
Criteria run in the order of `KINDS`, and one may read the masks of the kinds before it
(`evidence.kinds`): an n-gram detector is, by definition, not a token detector.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # only for annotations: params imports nothing of ours that imports this module
    from .params import AnalysisParams

FLAG_DTYPE = np.uint32  # analysis/flags: bit `Kind.bit` set when the neuron is of that kind (room for 32)


@dataclass
class Evidence:
    """What the criteria of one layer decide from: per-neuron arrays [F] (None: not computed, e.g. a
    summary without an analysis) and the masks decided so far, by kind name."""

    act_count: np.ndarray  # firings on the whole corpus (exact)
    act_max: np.ndarray  # largest |h| (h for ReLU) over every token of the corpus, fired or not
    n_tokens: int
    typical: dict[str, float]  # the whole layer's typical values (`layer_typicals`)
    total: np.ndarray | None = None  # firings outside the BOS position (the detectors' denominator)
    coverage: np.ndarray | None = None  # share of those explained by at most max_tokens covered tokens
    ngram_share: np.ndarray | None = None  # ... by at most max_ngrams covered n-gram contexts
    pos_mi: np.ndarray | None = None  # I(fired; position), nats
    vocab_skew: np.ndarray | None = None  # skewness over the vocabulary of cos(w_out, U_t) (projection group)
    vocab_kurt: np.ndarray | None = None  # ... its kurtosis (Pearson's: 3 for a Gaussian)
    null_share: np.ndarray | None = None  # share of ||w_out||^2 in the unembedding's effective null space
    w_out_norm: np.ndarray | None = None  # ||w_out||
    freq_corr: np.ndarray | None = None  # correlation of U w_out with the corpus' log unigram frequency
    sign_count: np.ndarray | None = None  # [4, F] firings by sign case of (act(gate), up), gated FFNs
    kinds: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def alive(self) -> np.ndarray:
        """Fired at least once (above tau)."""
        return self.act_count > 0



Criterion = Callable[[Evidence, "AnalysisParams"], np.ndarray]


def _median(values: np.ndarray | None, keep=None) -> float:
    """The median of the finite `values` (where `keep`), NaN when there are none."""
    if values is None:
        return float("nan")
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values) & (True if keep is None else keep)]
    return float(np.median(values)) if values.size else float("nan")


def layer_typicals(act_max: np.ndarray, null_share: np.ndarray | None = None, w_out_norm: np.ndarray | None = None,
                   norm_quantile: float = 0.9) -> dict[str, float]:
    """A layer's typical values, the scale some criteria compare a neuron with (whole-layer arrays [F]):
    the median largest |h| of its neurons that are not dead, the median null-space share and output
    norm of its neurons, and the `norm_quantile` of the output norms (`w_out_norm_high`; NaN where
    unknown)."""
    act_max = np.asarray(act_max, dtype=np.float64)
    norms = None if w_out_norm is None else np.asarray(w_out_norm, dtype=np.float64)
    finite = None if norms is None else norms[np.isfinite(norms)]
    high = float(np.quantile(finite, norm_quantile)) if finite is not None and finite.size else float("nan")
    return {"act_max": _median(act_max, act_max > 0), "null_share": _median(null_share),
            "w_out_norm": _median(w_out_norm), "w_out_norm_high": high}


def _dead(ev: Evidence, p: AnalysisParams) -> np.ndarray:
    """Its activation is exactly 0 on every token of the corpus (paper section 3: a ReLU neuron that
    never activates; a gated neuron whose h never leaves 0)."""
    return ~(ev.act_max > 0)


def _silent(ev: Evidence, p: AnalysisParams) -> np.ndarray:
    """Not dead, but never above the layer's firing threshold tau (only where tau > 0: the threshold
    rule of gated neurons, or --threshold; ours)."""
    return (ev.act_max > 0) & (ev.act_count == 0)


def _faint(ev: Evidence, p: AnalysisParams) -> np.ndarray:
    """Not dead, but its largest |h| stays under `faint_frac` of the layer's typical largest |h| (ours)."""
    with np.errstate(invalid="ignore"):
        return (ev.act_max > 0) & (ev.act_max < p.faint_frac * ev.typical["act_max"])


def _rare(ev: Evidence, p: AnalysisParams) -> np.ndarray:
    """Fired, but on fewer than `rare_rate` of the tokens (ours)."""
    return ev.alive & (ev.act_count < p.rare_rate * ev.n_tokens)


def _token(ev: Evidence, p: AnalysisParams) -> np.ndarray:
    """At most `max_tokens` covered tokens explain at least `min_coverage` of its firings (section 4)."""
    return ev.alive & (ev.total > 0) & (ev.coverage >= p.min_coverage - 1e-9)


def _ngram(ev: Evidence, p: AnalysisParams) -> np.ndarray:
    """Not a token detector, and at most `max_ngrams` covered contexts explain its firings (section 4)."""
    return ev.alive & ~ev.kinds["token"] & (ev.total > 0) & (ev.ngram_share >= p.min_coverage - 1e-9)


def _positional(ev: Evidence, p: AnalysisParams) -> np.ndarray:
    """I(fired; position) above `mi_threshold` nats (section 5)."""
    return ev.pos_mi > p.mi_threshold


def _none(ev: Evidence) -> np.ndarray:
    return np.zeros(ev.act_count.shape, dtype=bool)


def _prediction(ev: Evidence, p: AnalysisParams) -> np.ndarray:
    """Its output's cosines with the unembedding rows have kurtosis above `vocab_kurtosis` and positive
    skew: it raises a few tokens' logits far above the rest (Gurnee et al. 2024, section 4.3)."""
    if ev.vocab_kurt is None:
        return _none(ev)
    with np.errstate(invalid="ignore"):
        return (ev.vocab_kurt > p.vocab_kurtosis) & (ev.vocab_skew > 0)


def _suppression(ev: Evidence, p: AnalysisParams) -> np.ndarray:
    """The same kurtosis with negative skew: it lowers a few tokens' logits (Gurnee et al. 2024)."""
    if ev.vocab_kurt is None:
        return _none(ev)
    with np.errstate(invalid="ignore"):
        return (ev.vocab_kurt > p.vocab_kurtosis) & (ev.vocab_skew < 0)


def _entropy(ev: Evidence, p: AnalysisParams) -> np.ndarray:
    """A large output mostly in the unembedding's effective null space: its share there above
    `entropy_null_factor` times the layer's typical share and its norm above the layer's
    `entropy_norm_quantile`, so it moves the final norm's scale (the output's entropy) more than any
    logit (Stolfo, Wu, Gurnee et al. 2024)."""
    if ev.null_share is None or ev.w_out_norm is None:
        return _none(ev)
    with np.errstate(invalid="ignore"):
        return ((ev.null_share > p.entropy_null_factor * ev.typical["null_share"])
                & (ev.w_out_norm > ev.typical["w_out_norm_high"]))


def _frequency(ev: Evidence, p: AnalysisParams) -> np.ndarray:
    """Its direct logit effect correlates with the corpus' log unigram frequency beyond `freq_corr_min`
    in absolute value: it shifts the output towards (or away from) the unigram distribution (Stolfo,
    Wu, Gurnee et al. 2024, section 5)."""
    if ev.freq_corr is None:
        return _none(ev)
    with np.errstate(invalid="ignore"):
        return np.abs(ev.freq_corr) > p.freq_corr_min


def _mixed(ev: Evidence, p: AnalysisParams) -> np.ndarray:
    """A gated neuron whose firings split across sign cases of (act(gate), up): no case holds
    `sign_dominant_share` of them and the runner-up has at least `min_token_count` (GLUScope: the
    cases push the residual stream in opposite directions)."""
    if ev.sign_count is None:
        return _none(ev)
    counts = np.asarray(ev.sign_count, dtype=np.int64)
    ordered = np.sort(counts, axis=0)
    total = counts.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (total > 0) & (ordered[-1] < p.sign_dominant_share * total) & (ordered[-2] >= p.min_token_count)


@dataclass(frozen=True)
class Kind:
    """One kind of neuron: how it is stored, named, shown and decided."""

    name: str  # in JSON, `--category`, filter names, binding ids (layer.filter.NAME)
    bit: int  # its bit in analysis/flags; never reused, so a stored file keeps its meaning
    letter: str  # the neuron table's category column
    key: str  # the layer screen's filter key
    style: str  # rich style of the letter
    label: str  # the short word in lists ("n-gram")
    noun: str  # what such a neuron is called ("n-gram detector")
    filter_label: str  # the layer screen's filter bar
    column: str  # the overview's column header (at most 6 cells: it must not be cut at 80 columns)
    report_column: str  # `report`'s column header
    tooltip: str  # the filter binding, in `?`
    definition: str  # one line for `?` and `--help`
    needs_analysis: bool  # False: decided from the firing counts alone
    criterion: Criterion
    requires: tuple[str, ...] = ()  # datasets its criterion reads ("group/name"): without them, unknown


KINDS: tuple[Kind, ...] = (
    Kind("dead", 0, "D", "d", "bold red", "dead", "dead", "dead", "dead", "dead",
         "only dead neurons (never fired)", "its activation is exactly 0 on every token of the corpus", False, _dead),
    Kind("silent", 5, "S", "D", "red", "silent", "silent", "silent", "silent", "silent",
         "only silent neurons (never above tau)", "not dead, but never above the layer's firing threshold tau",
         False, _silent),
    Kind("faint", 6, "F", "F", "dim red", "faint", "faint", "faint", "faint", "faint",
         "only faint neurons (largest |h| < 0.1 x the layer's typical)",
         "not dead, but its largest |h| stays under faint_frac of the layer's typical largest |h|", False, _faint),
    Kind("rare", 1, "R", "r", "yellow", "rare", "rare", "rare", "rare", "rare",
         "only rare neurons (alive, rate < 1e-4)", "alive, but fired on fewer than rare_rate of the tokens",
         False, _rare),
    Kind("token", 2, "T", "t", "bold green", "token", "token detector", "token", "token", "token",
         "only token detectors", "at most 5 tokens it fires on >= 95% of the time explain >= 95% of its firings",
         True, _token),
    Kind("ngram", 3, "N", "n", "bold cyan", "n-gram", "n-gram detector", "ngram", "n-gram", "ngram",
         "only n-gram detectors", "not a token detector; at most 50 (previous tokens, token) contexts explain "
         "its firings", True, _ngram),
    Kind("positional", 4, "P", "p", "bold magenta", "positional", "positional", "pos", "posit.", "posit",
         "only positional neurons", "I(fired; position) above 0.05 nats", True, _positional),
    Kind("prediction", 7, "↑", "plus", "bold blue", "prediction", "prediction neuron", "pred", "pred.", "pred",
         "only prediction neurons (raise a few tokens' logits)",
         "its output's cosines with the unembedding have kurtosis > 10 and positive skew (Gurnee et al. 2024)",
         True, _prediction, ("projection/vocab_kurt",)),
    Kind("suppression", 8, "↓", "minus", "bold yellow", "suppression", "suppression neuron", "supp", "supp.", "suppr",
         "only suppression neurons (lower a few tokens' logits)",
         "its output's cosines with the unembedding have kurtosis > 10 and negative skew (Gurnee et al. 2024)",
         True, _suppression, ("projection/vocab_kurt",)),
    Kind("entropy", 9, "E", "E", "bold white", "entropy", "entropy neuron", "entropy", "entr.", "entr",
         "only entropy neurons (a large output in the unembedding's null space)",
         "a large output (among the layer's largest tenth) mostly in the unembedding's effective null space "
         "(10x the layer's typical share): it scales the output's entropy (Stolfo et al. 2024)",
         True, _entropy, ("projection/null_share", "projection/w_out_norm")),
    Kind("frequency", 10, "U", "U", "bold green", "frequency", "token-frequency neuron", "freq", "freq.", "freq",
         "only token-frequency neurons (move the output along unigram frequency)",
         "its direct logit effect correlates with the corpus' log token frequency, |r| > 0.3 (Stolfo et al. 2024)",
         True, _frequency, ("projection/freq_corr",)),
    Kind("mixed", 11, "±", "X", "bold magenta", "mixed-sign", "mixed-sign neuron", "mixed", "mixed", "mixed",
         "only gated neurons whose firings split across sign cases",
         "gated: no sign case of (act(gate), up) holds half of its firings (GLUScope)",
         True, _mixed, ("sign_count",)),
)
BY_NAME: dict[str, Kind] = {k.name: k for k in KINDS}
NAMES: tuple[str, ...] = tuple(BY_NAME)
FROM_COUNTS: tuple[Kind, ...] = tuple(k for k in KINDS if not k.needs_analysis)
NEED_ANALYSIS: tuple[str, ...] = tuple(k.name for k in KINDS if k.needs_analysis)


def stored(summary, path: str) -> bool:
    """Whether `summary` (a cache.Summary) has the dataset `path`: "name" at its root, or
    "group/name" in its projection or analysis group, and not marked unknown there by a `<name>_complete`
    attribute that is False (a merge without the model keeps freq_corr's place but cannot compute it)."""
    group, _, name = path.rpartition("/")
    if not group:
        return summary.has(name)
    reader = summary.projection if group == "projection" else summary.analysis
    return reader is not None and reader.has(name) and bool(reader.attrs.get(f"{name}_complete", True))


def known(kind: Kind, summary) -> bool:
    """Whether `summary` has what the kind's criterion reads (else the kind is unknown there)."""
    return all(stored(summary, path) for path in kind.requires)


def mask_bit(name: str) -> int:
    """The flag value of kind `name` (1 << its bit)."""
    return 1 << BY_NAME[name].bit


def has(flags: np.ndarray | int, name: str) -> np.ndarray | bool:
    """Whether each flag value holds kind `name`."""
    return (np.asarray(flags).astype(np.int64) & mask_bit(name)) > 0


def names_of(flags: int) -> list[str]:
    """The kind names of one neuron's flags, in registry order."""
    return [k.name for k in KINDS if int(flags) & (1 << k.bit)]


def decide(evidence: Evidence, params: AnalysisParams, kinds: tuple[Kind, ...] = KINDS) -> np.ndarray:
    """[F] flags: each kind's criterion in registry order (each may read the masks before it, which
    are left in `evidence.kinds`)."""
    flags = np.zeros(evidence.act_count.shape, dtype=FLAG_DTYPE)
    for kind in kinds:
        mask = np.asarray(kind.criterion(evidence, params), dtype=bool)
        evidence.kinds[kind.name] = mask
        flags[mask] |= FLAG_DTYPE(1 << kind.bit)
    return flags


def count_flags(act_count: np.ndarray, act_max: np.ndarray, n_tokens: int, params: AnalysisParams) -> np.ndarray:
    """[F] flags of the kinds decided from the firing counts alone (a summary without an analysis)."""
    act_max = np.asarray(act_max, dtype=np.float64)
    evidence = Evidence(np.asarray(act_count, dtype=np.int64), act_max, n_tokens, layer_typicals(act_max))
    return decide(evidence, params, FROM_COUNTS)
