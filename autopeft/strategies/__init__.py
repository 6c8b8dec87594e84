"""Training strategies, registered by the name a search space gives as ``strategy``."""

from autopeft.strategies.base import (NO_STRATEGY, STRATEGY_PARAMETER, StrategyConfig, StrategyContext,
                                      TrainingStrategy, check_strategy_space, make_strategy,
                                      register_strategy, strategy_class, strategy_names,
                                      strategy_parameters)
from autopeft.strategies import flexora as _flexora  # noqa: F401,E402  (registers "flexora")
from autopeft.strategies import increlora as _increlora  # noqa: F401,E402  (registers "increlora")
from autopeft.strategies import ist as _ist  # noqa: F401,E402  (registers "ist")
from autopeft.strategies import light_peft as _light_peft  # noqa: F401,E402  (registers "light_peft")

__all__ = [
    "NO_STRATEGY", "STRATEGY_PARAMETER", "StrategyConfig", "StrategyContext", "TrainingStrategy",
    "check_strategy_space", "make_strategy", "register_strategy", "strategy_class", "strategy_names",
    "strategy_parameters",
]
