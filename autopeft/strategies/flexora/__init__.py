"""Flexora: flexible low-rank adaptation by layer selection (ACL 2025)."""

from autopeft.strategies.flexora.config import FlexoraConfig
from autopeft.strategies.flexora.strategy import Flexora

__all__ = ["Flexora", "FlexoraConfig"]
