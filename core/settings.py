"""What a user may choose about a collection, checked as it is given (no torch: the command line and
the request index build these before anything heavy is imported)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError


@dataclass
class Settings:
    """What the user may choose; `None` means "the default for this device and model"."""

    corpus: str = "builtin"
    n_tokens: int | None = None
    seq_len: int | None = None
    batch_size: int | None = None
    seed: int = 0
    threshold: float | None = None  # a fixed tau for every layer
    quantile: float = 0.99  # the calibration quantile of |h| for non-ReLU models (docs/design.md)
    events_cap: int = 256  # C: kept firing events per neuron (complete for neurons firing <= C times)
    top_k: int = 8  # top activating contexts per neuron
    calib_seqs: int = 8  # sequences of the calibration slice (the first of the corpus)
    checkpoint_seconds: float | None = None  # None: every 60 s, spaced out when checkpoints are slow

    def __post_init__(self) -> None:
        """Refuse values that cannot mean anything (a 0 is never read as "the default")."""
        at_least = {"n_tokens": 1, "seq_len": 2, "batch_size": 1, "events_cap": 1, "top_k": 1, "calib_seqs": 1}
        for name, low in at_least.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise UsageError(f"--{_flag(name)} {value} is too small (at least {low})")
        if not 0 < self.quantile < 1:
            raise UsageError(f"--quantile {self.quantile} must be between 0 and 1")
        if self.threshold is not None and not self.threshold >= 0:
            raise UsageError(f"--threshold {self.threshold} must be at least 0")
        if self.checkpoint_seconds is not None and not self.checkpoint_seconds >= 0:
            raise UsageError(f"--checkpoint-seconds {self.checkpoint_seconds} must be at least 0")


def _flag(name: str) -> str:
    return {"n_tokens": "tokens", "events_cap": "events"}.get(name, name).replace("_", "-")
