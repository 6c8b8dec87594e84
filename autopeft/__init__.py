"""autopeft: find the Pareto front of PEFT configurations for a model and a task."""

from autopeft.config import SearchConfig
from autopeft.errors import AutopeftError
from autopeft.loading import load_adapter
from autopeft.objectives import Objective, TrialOutput, objective
from autopeft.search import SearchResult, search

__all__ = ["AutopeftError", "Objective", "SearchConfig", "SearchResult", "TrialOutput", "load_adapter", "objective",
           "search"]
__version__ = "0.1.0"
