"""LoRA with per-layer placement and rank, through PEFT's own LoraConfig options."""

from __future__ import annotations

from typing import Any

from peft import LoraConfig

from autopeft.adapters.base import AdapterBuilder, BuildContext, register_adapter
from autopeft.adapters.placement import Placement, check_roles
from autopeft.space.values import FRACTION, POSITIVE, POSITIVE_INT
from autopeft.models import ModelLayout
from autopeft.space import SpaceSpec


#: LoRA's ranks are positive, its scale too, its dropout a probability
LORA_RULES = {"rank": POSITIVE_INT, "alpha_multiplier": POSITIVE, "dropout": FRACTION}


def lora_config(values: dict[str, Any], ctx: BuildContext, **options: Any) -> LoraConfig:
    """``layers`` -> layers_to_transform, ``rank`` -> rank_pattern, ``alpha_multiplier`` x rank
    -> alpha_pattern, ``target_modules`` (roles) -> the model's module names; ``options`` go
    to LoraConfig as they are (use_dora, use_rslora, init_lora_weights, ...)."""
    place = Placement.of(values, ctx.layout)
    return LoraConfig(
        task_type=ctx.task_type,
        r=place.top_rank,
        lora_alpha=place.multiplier * place.top_rank,
        lora_dropout=float(values.get("dropout") or 0.0),
        target_modules=place.targets(),
        layers_to_transform=place.layers,
        layers_pattern=place.layers_pattern,
        rank_pattern=place.rank_pattern(),
        alpha_pattern=place.alpha_pattern(),
        modules_to_save=ctx.head,
        **options,
    )


def lora_parameter_count(values: dict[str, Any], layout: ModelLayout) -> int:
    """r x (in + out) for every targeted linear of every kept layer, plus the head."""
    place = Placement.of(values, layout)
    return sum(r * place.per_rank_size() for r in place.ranks.values()) + layout.head_parameters


@register_adapter("lora")
class LoraBuilder(AdapterBuilder):
    """Plain LoRA; the PEFT family space (``adapter: peft``) adds its variants."""

    parameters = frozenset({"layers", "rank", "target_modules", "alpha_multiplier", "dropout"})
    value_rules = LORA_RULES

    def check_layout(self, spec: SpaceSpec, layout: ModelLayout) -> None:
        check_roles(spec, layout)

    def count_parameters(self, values: dict[str, Any], layout: ModelLayout) -> int:
        return lora_parameter_count(values, layout)

    def build(self, values: dict[str, Any], ctx: BuildContext) -> LoraConfig:
        return lora_config(values, ctx)
