"""The registry of kinds (core/read/kinds.py): stored bits that keep their meaning, and every list of
kinds the tool shows derived from it."""

from __future__ import annotations

import numpy as np
import pytest

from neuron_tui.core.read import kinds
from neuron_tui.core.read.params import AnalysisParams
from neuron_tui.core.read.queries import CATEGORIES, FILTERS, ROW_KEYS, categories


def test_the_bits_of_stored_files_keep_their_meaning():
    """Summaries written since schema 1 store these bits: a new kind takes a new bit, never one of these."""
    assert {k.name: k.bit for k in kinds.KINDS if k.bit < 5} == {
        "dead": 0, "rare": 1, "token": 2, "ngram": 3, "positional": 4}
    assert [kinds.mask_bit(n) for n in ("dead", "rare", "token", "ngram", "positional")] == [1, 2, 4, 8, 16]


@pytest.mark.parametrize("field", ["name", "bit", "letter", "key"])
def test_kinds_are_told_apart(field):
    values = [getattr(k, field) for k in kinds.KINDS]
    assert len(set(values)) == len(values)


def test_flags_have_room_for_32_kinds_and_every_bit_fits():
    assert np.iinfo(kinds.FLAG_DTYPE).bits >= 32
    assert all(0 <= k.bit < np.iinfo(kinds.FLAG_DTYPE).bits for k in kinds.KINDS)


def test_the_filter_keys_clash_with_no_other_key_of_the_layer_screen():
    from neuron_tui.tui.screens.layer import LayerScreen

    keys = [key.strip() for b in LayerScreen.BINDINGS for key in b.key.split(",")]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    assert {k.key for k in kinds.KINDS} <= set(keys)


def test_lists_of_kinds_derive_from_the_registry():
    from neuron_tui.tui.cli import build_parser
    from neuron_tui.tui.present.help import LEGEND
    from neuron_tui.tui.present.layers import CATEGORY_STYLES, REPORT_COLUMNS

    names = [k.name for k in kinds.KINDS]
    assert list(CATEGORIES) == names and list(FILTERS) == ["all", *names, "marked"]
    assert all(n in ROW_KEYS and f"{n}_frac" in ROW_KEYS for n in names)
    assert [c[0] for c in REPORT_COLUMNS[1 : 1 + len(names)]] == names
    assert set(CATEGORY_STYLES) == {k.letter for k in kinds.KINDS}
    assert [key for key, _ in LEGEND[: len(names)]] == [f"{k.letter} {k.name}" for k in kinds.KINDS]
    help_text = build_parser()._subparsers._group_actions[0].choices["neurons"].format_help()
    assert all(n in help_text for n in names)


def test_every_kind_is_decided_by_its_criterion_in_registry_order():
    """Evidence with one neuron per kind: dead (h exactly 0), silent (moves, never above tau), faint
    (largest |h| a twentieth of the layer's typical), rare, a token detector, an n-gram detector (not a
    token detector), a positional neuron; the n-gram criterion reads the token mask decided before it."""
    p = AnalysisParams()
    ev = kinds.Evidence(
        act_count=np.array([0, 0, 7, 1, 500, 500, 500, 500]),
        act_max=np.array([0.0, 2.0, 0.1, 2.0, 2.0, 2.0, 2.0, 2.0]), n_tokens=100_000, typical={"act_max": 2.0},
        total=np.array([0, 0, 7, 1, 500, 500, 500, 500]),
        coverage=np.array([0.0, 0.0, 0.0, 0.0, 1.0, 0.2, 0.2, 1.0]),
        ngram_share=np.array([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]),
        pos_mi=np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 0.0]),
    )
    flags = kinds.decide(ev, p)
    assert [categories(f) for f in flags] == [["dead"], ["silent"], ["faint", "rare"], ["rare"], ["token"],
                                              ["ngram"], ["positional"], ["token"]]
    assert flags.dtype == kinds.FLAG_DTYPE


def test_a_summary_without_analysis_decides_the_kinds_that_need_only_counts():
    """Counts alone: dead (never moves), silent (moves under tau), faint (under a tenth of the median
    largest |h| of the neurons that move: median of 0.05, 1, 3, 4 is 2), rare, and nothing else."""
    flags = kinds.count_flags(np.array([0, 0, 3, 50_000, 0, 9]), np.array([0.0, 1.0, 0.05, 3.0, -np.inf, 4.0]),
                              100_000, AnalysisParams())
    assert [categories(f) for f in flags] == [["dead"], ["silent"], ["faint", "rare"], [], ["dead"], ["rare"]]
    assert {k.name for k in kinds.FROM_COUNTS} == {"dead", "silent", "faint", "rare"}
    assert kinds.layer_typicals(np.array([0.0, 1.0, 0.05, 3.0, -np.inf, 4.0]))["act_max"] == 2.0


def family_evidence(**fields) -> kinds.Evidence:
    """Evidence of six alive neurons (500 firings each) with the given family statistics."""
    F = 6
    base = dict(act_count=np.full(F, 500), act_max=np.full(F, 2.0), n_tokens=100_000,
                typical={"act_max": 2.0, "null_share": 0.01, "w_out_norm": 1.0, "w_out_norm_high": 2.0},
                total=np.full(F, 500), coverage=np.zeros(F), ngram_share=np.zeros(F), pos_mi=np.zeros(F))
    return kinds.Evidence(**{**base, **fields})


def families_of(ev: kinds.Evidence) -> list[list[str]]:
    return [categories(f) for f in kinds.decide(ev, AnalysisParams())]


def test_prediction_and_suppression_neurons_by_the_kurtosis_and_skew_of_their_vocabulary_cosines():
    """Gurnee et al. 2024: kurtosis > 10 (Pearson's), the skew's sign telling prediction from suppression."""
    ev = family_evidence(vocab_kurt=np.array([12.0, 12.0, 9.9, 30.0, np.nan, 10.0]),
                         vocab_skew=np.array([1.0, -1.0, 5.0, 0.0, 1.0, 2.0]))
    assert families_of(ev) == [["prediction"], ["suppression"], [], [], [], []]


def test_entropy_neurons_need_both_a_large_norm_and_a_large_null_space_share():
    """Ten times the layer's typical null-space share (0.01) and a norm above the layer's 0.9 quantile
    of norms (2.0 here)."""
    ev = family_evidence(null_share=np.array([0.2, 0.2, 0.05, 0.101, 0.2, np.nan]),
                         w_out_norm=np.array([3.0, 1.5, 3.0, 2.01, 2.0, 3.0]))
    assert families_of(ev) == [["entropy"], [], [], ["entropy"], [], []]


def test_token_frequency_neurons_by_their_correlation_with_log_frequency():
    """|r| above 0.3."""
    ev = family_evidence(freq_corr=np.array([0.5, -0.5, 0.3, 0.29, np.nan, -0.31]))
    assert families_of(ev) == [["frequency"], ["frequency"], [], [], [], ["frequency"]]


def test_mixed_sign_neurons_split_their_firings_across_sign_cases():
    """No case holds half of the firings and the runner-up has at least min_token_count (5)."""
    counts = np.array([[500, 250, 300, 0, 6, 2],  # (+,+)
                       [0, 250, 100, 500, 4, 1],  # (+,-)
                       [0, 0, 100, 0, 1, 1],  # (-,+)
                       [0, 0, 0, 0, 1, 0]])  # (-,-)
    # 500 of 500: one case; 250 of 500 = 0.5: not under half; 300 of 500; 500 of 500; 6 of 12 is half;
    # 2 of 4 is half, and the runner-up (1) is under 5 anyway
    assert families_of(family_evidence(sign_count=counts)) == [[], [], [], [], [], []]
    ev = family_evidence(sign_count=np.array([[240, 200, 5, 4, 0, 0], [200, 200, 5, 4, 0, 0],
                                              [60, 100, 1, 4, 0, 0], [0, 0, 0, 0, 0, 0]]))
    # 240 of 500, runner-up 200; 200 of 500 (twice); 5 of 11 but the runner-up ties at 5; 4 of 12 with 4 < 5
    assert families_of(ev) == [["mixed"], ["mixed"], ["mixed"], [], [], []]


def test_the_norm_quantile_of_a_layer_is_its_typical_high_norm():
    typical = kinds.layer_typicals(np.ones(11), w_out_norm=np.append(np.arange(10.0), np.nan), norm_quantile=0.9)
    assert typical["w_out_norm"] == 4.5 and typical["w_out_norm_high"] == pytest.approx(8.1)


def test_every_overview_header_fits_the_narrowest_column():
    """At 80 columns a kind's overview column is 6 cells wide: a longer header would be cut."""
    assert all(len(k.column) <= 6 for k in kinds.KINDS), [k.column for k in kinds.KINDS if len(k.column) > 6]
