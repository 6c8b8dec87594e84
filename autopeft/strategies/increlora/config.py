"""IncreLoRA's knobs; the defaults are the authors' GLUE settings where they fit a short trial."""

from __future__ import annotations

from dataclasses import dataclass, field

from autopeft.strategies.base import StrategyConfig


@dataclass
class IncreLoraConfig(StrategyConfig):
    init_rank: int = field(default=1, metadata={"help": "rank every module starts with"})
    target_rank: int = field(default=4, metadata={
        "help": "the budget: the parameters of a LoRA of this rank on the same modules, never exceeded"})
    top_h: int = field(default=4, metadata={"help": "modules that gain rank at each addition"})
    rank_step: int | None = field(default=None, metadata={
        "help": "ranks a module gains at once (default: half the target rank, at least 1)"})
    orth_reg: float = field(default=0.1, metadata={"help": "weight of the orthogonality regulariser"})
    beta: float = field(default=0.85, metadata={"help": "EMA factor of the importance and its uncertainty"})
    advance: bool = field(default=True, metadata={
        "help": "advance learning: reserve ranks train through a tiny frozen E before they are added"})
    grow_until: float = field(default=0.7, metadata={
        "help": "share of the steps by which the budget is reached (warm-up and interval follow)"})

    def __post_init__(self) -> None:
        if self.init_rank < 1 or self.target_rank < self.init_rank:
            raise ValueError(f"need 1 <= init_rank <= target_rank, got {self.init_rank}, {self.target_rank}")
        if self.top_h < 1 or (self.rank_step is not None and self.rank_step < 1):
            raise ValueError(f"top_h and rank_step must be >= 1, got {self.top_h}, {self.rank_step}")
        if self.orth_reg < 0 or not 0 <= self.beta < 1 or not 0 < self.grow_until <= 1:
            raise ValueError(f"need orth_reg >= 0, 0 <= beta < 1, 0 < grow_until <= 1; got "
                             f"{self.orth_reg}, {self.beta}, {self.grow_until}")

    @property
    def step_size(self) -> int:
        return self.rank_step or max(1, self.target_rank // 2)
