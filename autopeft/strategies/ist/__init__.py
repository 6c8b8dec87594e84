"""IST: Importance-aware Sparse Tuning (Yao et al., Findings of EMNLP 2024)."""

from autopeft.strategies.ist.config import ISTConfig
from autopeft.strategies.ist.strategy import IST

__all__ = ["IST", "ISTConfig"]
