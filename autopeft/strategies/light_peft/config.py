"""Light-PEFT's knobs; the pruning shares are the authors' scripted ones."""

from __future__ import annotations

from dataclasses import dataclass, field

from autopeft.strategies.base import StrategyConfig


@dataclass
class LightPeftConfig(StrategyConfig):
    estimate_share: float = field(default=0.25, metadata={
        "help": "steps of the estimation stage, as a share of the trial's planned steps (the "
                "training stage then takes all of them)"})
    mask_lr: float = field(default=0.01, metadata={
        "help": "learning rate of the head and neuron masks (at the adapter's rate they barely "
                "move in a short estimation)"})
    l1: float = field(default=1e-4, metadata={"help": "L1 penalty on the masks: l1 x sum |m|"})
    head_prune: float = field(default=1 / 3, metadata={
        "help": "share of attention heads removed in each layer (with grouped-query attention: of the "
                "key/value groups, each removed with all its query heads)"})
    neuron_prune: float = field(default=1 / 3, metadata={"help": "share of FFN neurons removed, over all layers"})
    module_prune: float = field(default=0.75, metadata={
        "help": "share of adapter modules removed, the least important first"})
    rank_prune: float = field(default=0.5, metadata={
        "help": "share of the remaining modules' ranks removed, the least important first, over all modules"})

    def __post_init__(self) -> None:
        if not 0 < self.estimate_share <= 1:
            raise ValueError(f"estimate_share must be in (0, 1], got {self.estimate_share}")
        if self.mask_lr <= 0 or self.l1 < 0:
            raise ValueError(f"need mask_lr > 0 and l1 >= 0, got {self.mask_lr}, {self.l1}")
        for name in ("head_prune", "neuron_prune", "module_prune", "rank_prune"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
