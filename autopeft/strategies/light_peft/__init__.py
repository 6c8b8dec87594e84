"""Light-PEFT: early pruning of the model and its adapter (Gu et al., Findings of ACL 2024)."""

from autopeft.strategies.light_peft.config import LightPeftConfig
from autopeft.strategies.light_peft.plan import PruningPlan, apply_plan
from autopeft.strategies.light_peft.strategy import LightPeft

__all__ = ["LightPeft", "LightPeftConfig", "PruningPlan", "apply_plan"]
