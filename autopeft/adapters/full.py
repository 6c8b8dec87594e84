"""Full fine-tuning as an adapter builder: every weight trains, the whole model is saved.

Not a PEFT method, and not meant to be searched over; it is here so that the standard
baselines (``autopeft evaluate --baselines``) train and score through the same trial code
as every adapter, and its cost lands on the same axes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from autopeft.adapters.base import AdapterBuilder, BuildContext, register_adapter
from autopeft.models import ModelLayout


@register_adapter("full")
class FullFineTuning(AdapterBuilder):
    parameters = frozenset()

    def build(self, values: dict[str, Any], ctx: BuildContext) -> None:
        return None

    def apply(self, model: torch.nn.Module, values: dict[str, Any], ctx: BuildContext) -> torch.nn.Module:
        for param in model.parameters():
            param.requires_grad_(True)
        return model

    def count_parameters(self, values: dict[str, Any], layout: ModelLayout) -> int:
        return layout.num_parameters

    def save(self, model: torch.nn.Module, path: Path) -> None:
        model.save_pretrained(str(path))  # the whole model, config included

    def load(self, base: torch.nn.Module, path: Path) -> torch.nn.Module:
        # The folder is a complete checkpoint of the base model's class.
        return type(base).from_pretrained(str(path))
