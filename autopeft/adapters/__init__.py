"""Adapter builders, registered by the name a search-space file gives as ``adapter``."""

from autopeft.adapters.base import TRAINING_PARAMETERS, AdapterBuilder, BuildContext, adapter_builder, register_adapter
from autopeft.adapters import lora as _lora  # noqa: F401,E402  (registers "lora")
from autopeft.adapters import peft_family as _peft_family  # noqa: F401,E402  (registers "peft")
from autopeft.adapters import sapa as _sapa  # noqa: F401,E402  (registers "sapa")
from autopeft.adapters import full as _full  # noqa: F401,E402  (registers "full": the full fine-tuning baseline)

__all__ = ["TRAINING_PARAMETERS", "AdapterBuilder", "BuildContext", "adapter_builder", "register_adapter"]
