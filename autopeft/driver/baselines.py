"""The hand-made configurations people start from, trained like a front member so that the
final evaluation shows what the search bought (``autopeft evaluate --baselines``).

Each is a space (a preset, or inline) with every parameter pinned; learning rates are the
usual ones for each method, not tuned here (tuning them is what a search does).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autopeft._yaml import LineDict
from autopeft.errors import ConfigError
from autopeft.space import SpaceSpec, load_space
from autopeft.space.parse import parse_space

if TYPE_CHECKING:
    from autopeft.trial.run import SearchSetup

_ALL_LINEAR = ["attn_q", "attn_k", "attn_v", "attn_o", "ffn_up", "ffn_down"]


@dataclass(frozen=True)
class Baseline:
    name: str
    description: str
    #: a preset name, or an inline space (a space file's mapping)
    space: str | dict[str, Any]
    fixed: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> SpaceSpec:
        if isinstance(self.space, str):
            return load_space(self.space)
        return parse_space(_line_dicts(self.space), source=f"baseline {self.name}", default_name=self.name)


def _line_dicts(value: Any) -> Any:
    """Plain mappings as the parser's LineDicts (an inline space has no lines to report)."""
    if isinstance(value, dict):
        return LineDict({k: _line_dicts(v) for k, v in value.items()})
    return value


def _lora(targets: list[str]) -> dict[str, Any]:
    return {"method": "lora", "layers": True, "rank": 8, "target_modules": targets, "alpha_multiplier": 2,
            "learning_rate": 1e-3}


BASELINES: dict[str, Baseline] = {b.name: b for b in [
    Baseline("full_finetuning", "full fine-tuning, lr 5e-5",
             {"adapter": "full", "parameters": {"learning_rate": {"type": "float", "low": 1e-6, "high": 1e-3}}},
             {"learning_rate": 5e-5}),
    Baseline("lora_r8_qv", "LoRA r 8, alpha 16 on query and value of every layer, lr 1e-3",
             "peft_family", _lora(["attn_q", "attn_v"])),
    Baseline("lora_r8_all_linear", "LoRA r 8, alpha 16 on every linear layer of every block, lr 1e-3",
             "peft_family", _lora(_ALL_LINEAR)),
    Baseline("bottleneck", "serial bottleneck adapter (Houlsby/Pfeiffer), hidden/16 wide, every layer, lr 1e-3",
             "autopeft_sapa", {"layers": True, "serial_k": 4, "parallel_k": 10, "prefix_k": 10,
                               "learning_rate": 1e-3}),
    Baseline("ia3", "IA3 on key, value and the feed-forward output of every layer, lr 3e-3",
             "peft_family", {"method": "ia3", "layers": True, "target_modules": ["attn_k", "attn_v", "ffn_down"],
                             "learning_rate": 3e-3}),
]}


def baseline_names() -> list[str]:
    return list(BASELINES)


def resolve_baselines(names: list[str] | None) -> list[Baseline]:
    """The named baselines (all of them for ``None`` or ``["all"]``); unknown names are an error."""
    if not names or names == ["all"]:
        return list(BASELINES.values())
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigError(f"unknown baseline '{unknown[0]}'; choose from {baseline_names()} or 'all'",
                          key="baselines")
    return [BASELINES[n] for n in names]


def baseline_setup(setup: SearchSetup, baseline: Baseline) -> SearchSetup:
    """``setup`` (the search's model, data and fidelity) with ``baseline``'s space, every
    parameter pinned: its one configuration is ``{}``."""
    from autopeft.trial.binding import get_adapter
    from autopeft.trial.binding import bind_space

    spec = baseline.spec()
    space = bind_space(spec, get_adapter(spec), setup.layout, baseline.fixed)
    free = [d.name for d in space.dimensions if d.condition is None or d.condition.holds(space.fixed)]
    if free:  # a preset that gained a parameter: the baseline must pin it too
        raise ConfigError(f"baseline '{baseline.name}' leaves {free} free", key="baselines")
    return dataclasses.replace(setup, space=space)
