"""IST's knobs; the defaults are the authors' (``ist.py``) except where a short trial needs
otherwise (the share of layers updated, the score interval: see the strategy)."""

from __future__ import annotations

from dataclasses import dataclass, field

from autopeft.strategies.base import StrategyConfig


@dataclass
class ISTConfig(StrategyConfig):
    update_share: float = field(default=0.5, metadata={
        "help": "share of the adapter layers that get gradients at each step, rounded up (authors: 0.25)"})
    interval: int = field(default=10, metadata={
        "help": "steps between two updates of the layer scores, at most (a trial scores at least min_updates times)"})
    min_updates: int = field(default=10, metadata={
        "help": "score updates a trial makes at least: the interval shrinks to fit them in short trials"})
    subsets: int = field(default=3, metadata={
        "help": "layer subsets suppressed per score update (capped by the number of distinct ones)"})
    suppress: float = field(default=0.25, metadata={"help": "factor on a suppressed layer's adapter output"})
    reward_lr: float = field(default=10.0, metadata={"help": "step size of the score update"})

    def __post_init__(self) -> None:
        if not 0 < self.update_share <= 1:
            raise ValueError(f"update_share must be in (0, 1], got {self.update_share}")
        if self.interval < 1 or self.subsets < 1 or self.min_updates < 1:
            raise ValueError(f"interval, subsets and min_updates must be >= 1, got {self.interval}, "
                             f"{self.subsets}, {self.min_updates}")
        if not 0 < self.suppress < 1:
            raise ValueError(f"suppress must be in (0, 1), got {self.suppress}")
        if self.reward_lr <= 0:
            raise ValueError(f"reward_lr must be > 0, got {self.reward_lr}")
