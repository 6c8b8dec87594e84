"""Where an adapter goes: kept layers, per-layer ranks and target roles, in PEFT's terms.

Shared by every builder whose method PEFT places per module (the LoRA family, LoHa, LoKr,
VeRA, IA3, AdaLoRA).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autopeft.errors import SpaceError
from autopeft.models import ModelLayout
from autopeft.space import SpaceSpec, Subset

DEFAULT_RANK = 8
DEFAULT_TARGETS = ("attn_q", "attn_v")


def per_layer(value: Any, num_layers: int, default: Any) -> list:
    """A per-layer list from a per-layer, scalar or missing value (``None`` -> ``default``)."""
    if value is None:
        return [default] * num_layers
    if isinstance(value, list):
        return [default if v is None else v for v in value]
    return [value] * num_layers


@dataclass(frozen=True)
class Placement:
    """The kept layers, their ranks and scaling, and the targeted roles of one configuration."""

    layout: ModelLayout
    layers: list[int]
    ranks: dict[int, int]
    multiplier: float
    roles: list[str]

    @classmethod
    def of(cls, values: dict[str, Any], layout: ModelLayout) -> Placement:
        kept = per_layer(values.get("layers"), layout.num_layers, True)
        layers = [i for i, keep in enumerate(kept) if keep]
        ranks = per_layer(values.get("rank"), layout.num_layers, DEFAULT_RANK)
        roles = values.get("target_modules") or list(DEFAULT_TARGETS)
        roles = [roles] if isinstance(roles, str) else list(roles)
        return cls(layout, layers, {i: int(ranks[i]) for i in layers},
                   float(values.get("alpha_multiplier") or 1.0), roles)

    @property
    def top_rank(self) -> int:
        return max(self.ranks.values())

    @property
    def layers_pattern(self) -> str:
        return self.layout.layers_path.rsplit(".", 1)[-1]

    def targets(self, exact: bool = False) -> list[str]:
        """PEFT ``target_modules`` entries. Unambiguous roles are given as suffixes (filtered by
        ``layers_to_transform``); a role whose path is also the end of another module's
        (BERT's ``output.dense``) is named module by module in the kept layers, as is every
        role when ``exact`` (for methods without ``layers_to_transform``)."""
        out: list[str] = []
        for role in self.roles:
            if exact or self.layout.is_ambiguous(role):
                out.extend(self.layout.module_name(i, role) for i in self.layers)
            else:
                out.append(self.layout.roles[role])
        return out

    def rank_pattern(self) -> dict[str, int]:
        return {self.layout.layer_regex(i): r for i, r in self.ranks.items()}

    def alpha_pattern(self) -> dict[str, float]:
        return {self.layout.layer_regex(i): self.multiplier * r for i, r in self.ranks.items()}

    def shapes(self) -> list[tuple[int, int]]:
        """(in, out) features of every targeted linear, one entry per kept layer and role."""
        return [self.layout.linear_shapes[self.layout.roles[role]]
                for _ in self.layers for role in self.roles]

    def per_rank_size(self) -> int:
        """in + out summed over the targeted roles of one layer."""
        return sum(sum(self.layout.linear_shapes[self.layout.roles[role]]) for role in self.roles)


def check_roles(spec: SpaceSpec, layout: ModelLayout) -> None:
    """SpaceError when ``target_modules`` offers a role the model does not have."""
    param = spec.parameters.get("target_modules")
    if isinstance(param, Subset):
        missing = [r for r in param.values if r not in layout.roles]
        if missing:
            raise SpaceError(f"the model has no module for role(s) {missing}; it has "
                             f"{sorted(layout.roles)}", source=spec.source,
                             key="parameters.target_modules", line=param.line)
