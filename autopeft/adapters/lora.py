"""LoRA with per-layer placement and rank, through PEFT's own LoraConfig options."""

from __future__ import annotations

from typing import Any

from peft import LoraConfig

from autopeft.adapters.base import AdapterBuilder, BuildContext, register_adapter
from autopeft.errors import SpaceError
from autopeft.models import ModelLayout
from autopeft.space import SpaceSpec, Subset

DEFAULT_RANK = 8
DEFAULT_TARGETS = ("attn_q", "attn_v")


@register_adapter("lora")
class LoraBuilder(AdapterBuilder):
    """``layers`` -> layers_to_transform, ``rank`` -> rank_pattern, ``alpha_multiplier`` x rank
    -> alpha_pattern, ``target_modules`` (roles) -> the model's module names."""

    parameters = frozenset({"layers", "rank", "target_modules", "alpha_multiplier", "dropout"})

    def check_layout(self, spec: SpaceSpec, layout: ModelLayout) -> None:
        param = spec.parameters.get("target_modules")
        if isinstance(param, Subset):
            missing = [r for r in param.values if r not in layout.roles]
            if missing:
                raise SpaceError(f"the model has no module for role(s) {missing}; it has "
                                 f"{sorted(layout.roles)}", source=spec.source,
                                 key="parameters.target_modules", line=param.line)

    def build(self, values: dict[str, Any], ctx: BuildContext) -> LoraConfig:
        layout = ctx.layout
        kept = _per_layer(values.get("layers"), layout.num_layers, True)
        layers = [i for i, keep in enumerate(kept) if keep]
        ranks = _per_layer(values.get("rank"), layout.num_layers, DEFAULT_RANK)
        multiplier = float(values.get("alpha_multiplier") or 1.0)
        roles = values.get("target_modules") or list(DEFAULT_TARGETS)
        if isinstance(roles, str):
            roles = [roles]
        targets: list[str] = []
        for role in roles:
            if layout.is_ambiguous(role):
                # PEFT matches list entries as name suffixes; an ambiguous suffix would also hit
                # another role, so this role is named module by module in the kept layers.
                targets.extend(layout.module_name(i, role) for i in layers)
            else:
                targets.append(layout.roles[role])
        top = max(ranks[i] for i in layers)
        return LoraConfig(
            task_type=ctx.task_type,
            r=top,
            lora_alpha=multiplier * top,
            lora_dropout=float(values.get("dropout") or 0.0),
            target_modules=targets,
            layers_to_transform=layers,
            layers_pattern=layout.layers_path.rsplit(".", 1)[-1],
            rank_pattern={layout.layer_regex(i): int(ranks[i]) for i in layers},
            alpha_pattern={layout.layer_regex(i): multiplier * ranks[i] for i in layers},
        )


def _per_layer(value: Any, num_layers: int, default: Any) -> list:
    if value is None:
        return [default] * num_layers
    if isinstance(value, list):
        return [default if v is None else v for v in value]
    return [value] * num_layers
