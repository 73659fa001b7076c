"""A neuron's numbers for the families named since the paper (its record's `vocab`, `geometry`,
`mean_h`, `histogram` and `sign_cases`; core/read/families.py), one fact a line in 80 columns: what a
reader compares with the criteria of prediction, suppression, entropy and token-frequency neurons, the
shape of its firing values, and a gated neuron's sign cases with the strongest context of each.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from neuron_tui.core.read.records import NeuronRecord

from .formats import count_text, share_text, value_text
from .neuron import context_line

BARS = " ▁▂▃▄▅▆▇█"
CASE_MEANING = {"++": "gate +, up +", "+-": "gate +, up -", "-+": "gate -, up +", "--": "gate -, up -"}


def _times(value: float | None, typical: float | None) -> str:
    """`value` as a multiple of the layer's typical value: ` (3.2x the layer's)`."""
    if value is None or not typical:
        return ""
    return f" ({value / typical:.1f}x the layer's)"


def histogram_line(edges: Sequence[float], counts: Sequence[int], width: int) -> Text | None:
    """The firing values' histogram as one row of bars over the bins from the first to the last that
    holds firings (at most `width` - 24 of them: neighbours merge), with its range; None without any."""
    filled = [i for i, c in enumerate(counts) if c]
    if not filled:
        return None
    lo, hi = filled[0], filled[-1] + 1
    bins = list(counts[lo:hi])
    room = max(8, width - 24)
    step = -(-len(bins) // room)
    merged = [sum(bins[i : i + step]) for i in range(0, len(bins), step)]
    top = max(merged)
    bars = "".join(BARS[0] if c == 0 else BARS[max(1, round(8 * c / top))] for c in merged)
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(f"{value_text(edges[lo], signed=True)} ", style="dim")
    line.append(bars, style="cyan")
    line.append(f" {value_text(edges[hi], signed=True)}", style="dim")
    return line


def families_text(r: NeuronRecord, vocab: Sequence[str], width: int, plain: bool = False) -> Text | None:
    """The section, None when the summary has none of these numbers (a summary made before them)."""
    if not any(r[key] is not None for key in ("vocab", "geometry", "mean_h", "histogram", "sign_cases")):
        return None
    out = Text()
    out.append("Beyond the paper", style="bold")
    out.append("  the numbers of the families named since\n", style="dim")
    v, g = r["vocab"], r["geometry"]
    if v is not None:
        out.append(f"vocabulary cosines: kurtosis {value_text(v['kurt'])} · skew {value_text(v['skew'], signed=True)}"
                   f" · mean {value_text(v['mean'], signed=True)}\n")
        if v["sign"] < 0 and v["skew"] is not None:
            out.append(f"  it acts with h < 0, pushing -w_out: as it acts the skew is "
                       f"{value_text(-v['skew'], signed=True)}\n", style="dim")
    if g is not None:
        out.append(f"output norm {value_text(g['w_out_norm'])}{_times(g['w_out_norm'], g['typical_w_out_norm'])}"
                   f" · in null space {share_text(g['null_share']) if g['null_share'] is not None else '–'}"
                   f"{_times(g['null_share'], g['typical_null_share'])}\n")
        out.append(f"logit effect vs log token frequency: r = {value_text(g['freq_corr'], signed=True)}"
                   f" · input norm {value_text(g['w_in_norm'])}\n")
    if r["mean_h"] is not None:
        out.append(f"mean h over the corpus {value_text(r['mean_h'], signed=True)} (what mean ablation sets)\n")
    h = r["histogram"]
    line = histogram_line(h["edges"], h["counts"], width) if h is not None else None
    if line is not None:
        out.append("firing values ")
        out.append_text(line)
        out.append("\n")
    cases = r["sign_cases"]
    if cases is not None and not any(c["count"] for c in cases):
        out.append("sign cases of (act(gate), up): none, it never fired\n")
    elif cases is not None:
        counts = " · ".join(f"{c['case']} {count_text(c['count'])}"
                            + (f" ({share_text(c['share'])})" if c["share"] else "") for c in cases)
        out.append(f"sign cases of (act(gate), up): {counts}\n")
        for c in cases:
            if c["context"] is not None:
                out.append(f"{c['case']} ", style="bold")
                out.append_text(context_line(c["context"], vocab, max(30, width - 3), plain))
                out.append("\n")
    out.rstrip()
    return out
