"""The thresholds of the analysis (`AnalysisParams`): their defaults, sources and accepted values.

Each field is a parameter of `neuron-tui analyze --NAME`, stored as JSON in the analysis group's
attribute `params`, so a summary says how it was analysed. Defaults are the paper's where it gives
one (E. Voita, J. Ferrando, C. Nalmpantis, "Neurons in Large Language Models: Dead, N-gram,
Positional", arXiv 2309.04827, ACL Findings 2024; sections 3 = dead, 4 = token and n-gram detectors,
5 = positional), ours otherwise (docs/design.md says why each).
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

from neuron_tui.cache import Summary, SummaryError

from . import positional


def _share(value) -> bool:
    return 0.0 < value <= 1.0


def _positive(value) -> bool:
    return value >= 1


@dataclass(frozen=True)
class AnalysisParams:
    """Thresholds of the analysis; stored as JSON in the analysis group's attribute `params`.

    Every field's type is what `neuron-tui analyze --NAME` parses, and `CHECKS` (below) what it
    accepts: a new parameter needs an entry there, or creating the class fails.
    """

    min_fire_rate: float = 0.95
    """A token is *covered* by a neuron when the neuron fires on at least this share of the token's
    occurrences. Paper section 4 ("at least 95% of the token's occurrences")."""

    min_coverage: float = 0.95
    """A token detector's covered tokens must account for at least this share of its (non-BOS)
    firings. Paper section 4 (95% of the neuron's activations)."""

    max_tokens: int = 5
    """At most this many covered tokens may be needed to reach `min_coverage`. Paper section 4 (its
    detectors are triggered by 1 to 5 tokens)."""

    min_token_count: int = 5
    """A covered token (or n-gram context) must occur at least this often in the corpus, so that one
    lucky hit on a token seen once cannot make a detector. Ours: the paper uses more than 5M tokens
    where the question does not arise; 5 occurrences at a 95% firing rate are unlikely by chance for a
    neuron that fires on a fraction f of tokens (f**5, e.g. 3e-5 at f = 0.125)."""

    rare_rate: float = 1e-4
    """Alive neurons firing on fewer than this share of all tokens are *rare*. Ours (the paper has no
    such category, section 3 only notes that alive neurons of early layers fire with mean frequency
    about 0.02 or less): 1e-4 is two orders of magnitude below that mean, i.e. fewer than one firing
    per 10,000 tokens (about once in five sequences of 2048): such a neuron barely changes the
    residual stream of typical text, yet over the paper's 5M tokens it still has hundreds of firings,
    so its triggers are measured exactly (its event sample is complete) rather than guessed."""

    faint_frac: float = 0.1
    """A neuron is *faint* when its largest |h| over the whole corpus stays under this share of the
    layer's typical largest |h| (the median over the layer's neurons that are not dead): a scale-free
    "does (almost) nothing" that, unlike "silent", does not depend on where the layer's tau falls.
    Ours: a tenth keeps its update below a tenth of a typical neuron's at the typical neuron's
    strongest moments, unless its output vector is ten times longer; on SmolLM2 (65k tokens) no
    neuron is that faint, while its last layer has 71% silent neurons under a tau set by a few loud
    ones (docs/design.md, "Dead, silent, faint")."""

    vocab_kurtosis: float = 10.0
    """Prediction and suppression neurons: the kurtosis (Pearson's: a Gaussian has 3) of the cosines
    between the neuron's output vector and every unembedding row exceeds this, the skew's sign telling
    which. Gurnee et al. 2024, "Universal Neurons in GPT2 Language Models", section 4.3 (their code
    selects `vocab_kurt > 10`)."""

    entropy_null_factor: float = 10.0
    """Entropy neurons: the share of ||w_out||^2 in the unembedding's effective null space exceeds this
    many times the layer's median share. A random direction's share is about k/d (the median); ten
    times that is beyond what a random direction reaches (a Beta(k/2, (d-k)/2) tail below 1e-9 for
    k = 6, d = 576). Ours: Stolfo, Wu, Gurnee et al. 2024 pick the top of the last layer by this share."""

    entropy_norm_quantile: float = 0.9
    """... and ||w_out|| above this quantile of the layer's norms (among its largest tenth): the effect on
    the final norm's scale grows with the norm, and the papers' entropy neurons are among the largest of
    their layer. A quantile, not a multiple of the median: SmolLM2's output norms lie within 1.5x of
    their layer's median, so twice the median finds none there (docs/design.md). Ours."""

    freq_corr_min: float = 0.3
    """Token-frequency neurons: |correlation| over the vocabulary between the neuron's direct logit
    effect and the corpus' log unigram frequency above this. The papers select by causal effect and set
    no cutoff; on SmolLM2 (65,536 tokens of the builtin corpus) |r| has median 0.09 and 99.9th
    percentile 0.31 over its 46,080 neurons, and 0.3 keeps the outermost 105 (docs/design.md). Ours."""

    sign_dominant_share: float = 0.5
    """Mixed-sign neurons (gated FFNs): no sign case of (act(gate), up) holds this share of the firings
    (no case has a majority), and the runner-up case has at least `min_token_count` firings. On SmolLM2
    a positive gate with an up of either sign is the rule: the top case holds under 90% of the firings
    of 71% of its neurons, under half for 4% (docs/design.md). Ours (GLUScope, arXiv 2602.23826, splits
    a gated neuron's firings by these cases)."""

    mi_threshold: float = 0.05
    """A neuron is positional when I(fired; position) exceeds this many nats. Paper section 5."""

    max_ngrams: int = 50
    """An n-gram detector's firings are explained by at most this many covered n-gram contexts.
    Paper section 4 (at most 50 trigrams)."""

    ngram_order: int = 3
    """Contexts of the n-gram criterion: 3 = (two previous tokens, token), the paper's trigrams
    (section 4); 2 = (previous token, token)."""

    n_triggers: int = 10
    """Kt: trigger tokens stored per neuron (at least `max_tokens`). Ours (display)."""

    n_ngrams: int = 10
    """Kn: bigram contexts stored per neuron. Ours (display; the paper reports bigram contexts too)."""

    supp_top: int = 10
    """A detector *suppresses its triggers* when every trigger ranks among its this-many most
    suppressed tokens: our stricter metric next to the paper's section 4 "negative score" share."""

    positional_skip_bos: bool = True
    """Leave position 0 out of the positional statistics when it always holds BOS: a neuron firing
    there reacts to the BOS token, which position alone cannot tell apart. Ours."""

    shape_band: float = 0.25
    """A positional profile *rises* when it goes from below the middle of its range less this share of
    the range to above the middle plus this share, and *falls* the other way round (hysteresis: a
    ramp crossing its middle once reads as one rise, however noisy). Ours: the 25% / 75% levels of the
    range, docs/design.md "Positional types"."""

    shape_noise_alpha: float = 0.01
    """... and each of those levels is so many binomial standard errors of the rate (from the tokens seen
    at that position) away from the middle that sampling noise alone crosses it anywhere along the
    profile with at most this chance (a normal quantile with a Bonferroni correction over the
    positions: 4.1 standard errors at T = 256, 4.6 at T = 2048), so a ramp or a step, however noisy,
    reads as one rise or one fall, never as an oscillation. Ours."""

    shape_strong_tol: float = 0.01
    """A positional pattern is *strong* (the paper's word) when its rate reaches 0 or 1 within this,
    weak otherwise. Ours: the paper names strength by eye (section 5)."""

    shape_smooth: int | None = None
    """The rate by position is read over windows of this many positions (None: T // 128). Ours."""

    def shape_rule(self) -> positional.ShapeRule:
        return positional.ShapeRule(self.shape_smooth, self.shape_band, self.shape_noise_alpha, self.shape_strong_tol)

    def __post_init__(self) -> None:
        unchecked = [f.name for f in fields(self) if f.name not in CHECKS]
        if unchecked:
            raise TypeError(f"AnalysisParams.{unchecked[0]} has no entry in CHECKS")
        for f in fields(self):
            value = getattr(self, f.name)
            check, words = CHECKS[f.name]
            if not _typed(value, PARAM_TYPES[f.name]) or (value is not None and not check(value)):
                raise ValueError(f"{f.name} must be {words}, not {value!r}")
        if self.n_triggers < self.max_tokens:
            raise ValueError(f"n_triggers ({self.n_triggers}) must be at least max_tokens ({self.max_tokens})")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "AnalysisParams":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})

    @classmethod
    def of(cls, summary: Summary) -> "AnalysisParams":
        """The parameters a summary was analysed with (the defaults when it has no analysis, or an
        analysis of an older version whose parameters no longer apply)."""
        group = summary.analysis
        if group is not None and "params" in group.attrs:
            try:
                return cls.from_json(group.attrs["params"])
            except (TypeError, ValueError):
                raise SummaryError(f"{summary.path} is damaged: its analysis parameters are unreadable") from None
        return cls()


# name -> (accepts the value, how the error message says what is accepted)
CHECKS: dict[str, tuple[Callable, str]] = {
    "min_fire_rate": (_share, "a share in (0, 1]"),
    "min_coverage": (_share, "a share in (0, 1]"),
    "max_tokens": (_positive, "at least 1"),
    "min_token_count": (_positive, "at least 1"),
    "rare_rate": (lambda v: 0.0 <= v <= 1.0, "a rate in [0, 1]"),
    "faint_frac": (lambda v: 0.0 <= v <= 1.0, "a share in [0, 1]"),
    "vocab_kurtosis": (lambda v: v >= 0, "at least 0"),
    "entropy_null_factor": (lambda v: v >= 1, "at least 1"),
    "entropy_norm_quantile": (lambda v: 0.0 <= v < 1.0, "a quantile in [0, 1)"),
    "freq_corr_min": (lambda v: 0.0 <= v <= 1.0, "a correlation in [0, 1]"),
    "sign_dominant_share": (lambda v: 0.25 < v <= 1.0, "a share in (0.25, 1]"),
    "mi_threshold": (lambda v: v >= 0, "at least 0"),
    "max_ngrams": (_positive, "at least 1"),
    "ngram_order": (lambda v: v in (2, 3), "2 or 3"),
    "n_triggers": (_positive, "at least 1"),
    "n_ngrams": (_positive, "at least 1"),
    "supp_top": (_positive, "at least 1"),
    "positional_skip_bos": (lambda v: True, "true or false"),
    "shape_band": (lambda v: 0.0 <= v < 0.5, "a share in [0, 0.5)"),
    "shape_noise_alpha": (lambda v: 0.0 < v < 1.0, "a chance in (0, 1)"),
    "shape_strong_tol": (lambda v: 0.0 <= v < 0.5, "a rate in [0, 0.5)"),
    "shape_smooth": (_positive, "at least 1, or none"),
}
PARAM_TYPES = typing.get_type_hints(AnalysisParams)  # name -> float, int, bool or int | None


def _typed(value, kind) -> bool:
    """`value` is of the annotated `kind` (an int counts as a float; a bool as nothing but a bool)."""
    allowed = typing.get_args(kind) or (kind,)
    if value is None:
        return type(None) in allowed
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int):
        return int in allowed or float in allowed
    return isinstance(value, float) and float in allowed
