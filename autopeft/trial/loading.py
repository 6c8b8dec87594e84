"""Loading what a trial saved: base model -> the strategy's preparation -> the adapter.

For most adapters the folder is a plain PEFT adapter and ``PeftModel.from_pretrained`` loads
it; Light-PEFT's adapter fits a pruned base model (its plan is saved beside it) and SAPA's
bottleneck adapters are autopeft's own. :func:`load_adapter` does whatever the folder needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from autopeft.errors import ModelError

#: the note a trial writes beside its adapter (PEFT ignores the extra file)
ADAPTER_INFO = "autopeft.json"


def adapter_info(folder: str | Path) -> dict[str, Any]:
    """What ``autopeft.json`` in ``folder`` says (empty for a folder without one)."""
    path = Path(folder) / ADAPTER_INFO
    return json.loads(path.read_text()) if path.is_file() else {}


def load_adapter(base: torch.nn.Module, folder: str | Path) -> torch.nn.Module:
    """``base`` (a fresh task model, e.g. ``AutoModelForSequenceClassification``) with the
    adapter a trial saved in ``folder``, ready for inference."""
    from autopeft.adapters import adapter_builder
    from autopeft.strategies import NO_STRATEGY, strategy_class

    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError("adapter folder not found", source=str(folder))
    info = adapter_info(folder)
    base = strategy_class(info.get("strategy", NO_STRATEGY)).prepare_base(base, folder)
    return adapter_builder(info.get("adapter", "lora")).load(base, folder)
