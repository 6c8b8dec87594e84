"""IncreLoRA: incremental parameter allocation for LoRA (Zhang et al., arXiv 2308.12043)."""

from autopeft.strategies.increlora.config import IncreLoraConfig
from autopeft.strategies.increlora.strategy import IncreLora

__all__ = ["IncreLora", "IncreLoraConfig"]
