"""Flexora's knobs; the defaults are the authors' where they fit a short trial."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from autopeft.strategies.base import StrategyConfig


@dataclass
class FlexoraConfig(StrategyConfig):
    gate_lr: float = field(default=0.01, metadata={"help": "Adam learning rate of the layer gates"})
    search_share: float = field(default=0.5, metadata={
        "help": "steps of the search stage, as a share of the trial's planned steps (the training "
                "stage then takes all of them)"})
    heldout: int = field(default=200, metadata={
        "help": "training examples held out for the gate update (at most a fifth of the training set)"})
    heldout_batch: int = field(default=8, metadata={"help": "held-out examples per gate update"})
    select: Literal["positive", "top_half"] = field(default="positive", metadata={
        "help": "'positive': the layers whose gate logit ended above 0 (the authors' rule); "
                "'top_half': the half of the layers with the largest logits"})

    def __post_init__(self) -> None:
        if self.gate_lr <= 0:
            raise ValueError(f"gate_lr must be > 0, got {self.gate_lr}")
        if not 0 < self.search_share <= 4:
            raise ValueError(f"search_share must be in (0, 4], got {self.search_share}")
        if self.heldout < 1 or self.heldout_batch < 1:
            raise ValueError(f"heldout and heldout_batch must be >= 1, got {self.heldout}, {self.heldout_batch}")
        if self.select not in ("positive", "top_half"):
            raise ValueError(f"select must be 'positive' or 'top_half', got {self.select!r}")
