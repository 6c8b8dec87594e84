"""The Hugging Face PEFT family as one searchable choice (``adapter: peft``, ``method: ...``).

Each method declares the parameters it takes; a search-space file that lets a parameter be
active for a method that does not take it is rejected before any trial (name and line).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import (AdaLoraConfig, EvaConfig, IA3Config, LoHaConfig, LoKrConfig, PeftConfig,
                  PeftType, PrefixTuningConfig, PromptTuningConfig, VeraConfig, get_peft_model,
                  get_peft_model_state_dict, initialize_lora_eva_weights)
from safetensors.torch import save_file

from autopeft.adapters.base import AdapterBuilder, BuildContext, register_adapter
from autopeft.adapters.lora import LORA_RULES, lora_config, lora_parameter_count
from autopeft.space.values import POSITIVE_INT
from autopeft.adapters.placement import Placement, check_roles
from autopeft.errors import SpaceError
from autopeft.models import ModelLayout
from autopeft.space import Scalar, SpaceSpec
from autopeft.training.loop import TrainingHooks, TrainingLoop

PLACED = frozenset({"layers", "target_modules", "dropout"})
RANKED = PLACED | {"rank", "alpha_multiplier"}
SHARED_RANK = PLACED | {"shared_rank"}
VIRTUAL = frozenset({"num_virtual_tokens"})
# Where the initial adapter of a PiSSA/OLoRA model is kept, to convert it at save time.
_INITIAL = "_autopeft_initial_adapter"


@dataclass(frozen=True)
class Method:
    """One PEFT method: the parameters it takes and how they become its config."""

    takes: frozenset[str]
    config: Callable[[dict[str, Any], BuildContext], PeftConfig]
    #: exact trainable count without building (the head excluded), when known
    count: Callable[[dict[str, Any], ModelLayout], int | None] = lambda values, layout: None
    notes: str = field(default="", compare=False)


def _lora_count(values: dict[str, Any], layout: ModelLayout) -> int:
    return lora_parameter_count(values, layout) - layout.head_parameters


def _dora_count(values: dict[str, Any], layout: ModelLayout) -> int:
    # DoRA adds a magnitude vector (one entry per output feature) to every adapted linear.
    return _lora_count(values, layout) + sum(out for _, out in Placement.of(values, layout).shapes())


def _loha_count(values: dict[str, Any], layout: ModelLayout) -> int:
    # Two Hadamard-multiplied low-rank pairs: twice LoRA's factors.
    return 2 * _lora_count(values, layout)


def _ia3_count(values: dict[str, Any], layout: ModelLayout) -> int:
    place = Placement.of(values, layout)
    # One scaling vector per module: over the input of feed-forward modules, else the output.
    return sum(shape[0] if role == "ffn_down" else shape[1]
               for _ in place.layers for role in place.roles
               for shape in [layout.linear_shapes[layout.roles[role]]])


def _vera_count(values: dict[str, Any], layout: ModelLayout) -> int:
    # The shared random projections are buffers; each module trains lambda_b (out) and lambda_d (r).
    r = int(values["shared_rank"])
    return sum(out + r for _, out in Placement.of(values, layout).shapes())


def _prefix_count(values: dict[str, Any], layout: ModelLayout) -> int:
    # A key and a value vector per virtual token and layer (no reparametrisation MLP).
    return int(values["num_virtual_tokens"]) * layout.num_layers * 2 * layout.prefix_width


def _prompt_count(values: dict[str, Any], layout: ModelLayout) -> int:
    return int(values["num_virtual_tokens"]) * layout.hidden_size


def _adalora(values: dict[str, Any], ctx: BuildContext) -> AdaLoraConfig:
    place = Placement.of(values, ctx.layout)
    total = max(ctx.total_steps, 10)
    # AdaLoRA prunes from init_r to an average of target_r between tinit and total - tfinal.
    # These schedule fractions are chosen for short low-fidelity trials (PEFT has no default).
    init_r = int(values["shared_rank"])
    return AdaLoraConfig(task_type=ctx.task_type, init_r=init_r, target_r=max(1, init_r // 2),
                         total_step=total, tinit=total // 10, tfinal=total // 5,
                         deltaT=max(1, total // 10), lora_alpha=2 * init_r,
                         lora_dropout=float(values.get("dropout") or 0.0),
                         target_modules=place.targets(), layers_to_transform=place.layers,
                         layers_pattern=place.layers_pattern, modules_to_save=ctx.head)


def _lycoris(cls: type[PeftConfig]) -> Callable[[dict[str, Any], BuildContext], PeftConfig]:
    def build(values: dict[str, Any], ctx: BuildContext) -> PeftConfig:
        place = Placement.of(values, ctx.layout)
        return cls(task_type=ctx.task_type, r=place.top_rank, alpha=place.multiplier * place.top_rank,
                   target_modules=place.targets(), layers_to_transform=place.layers,
                   layers_pattern=place.layers_pattern, rank_pattern=place.rank_pattern(),
                   alpha_pattern=place.alpha_pattern(), modules_to_save=ctx.head)
    return build


def _vera(values: dict[str, Any], ctx: BuildContext) -> VeraConfig:
    place = Placement.of(values, ctx.layout)
    return VeraConfig(task_type=ctx.task_type, r=int(values["shared_rank"]), target_modules=place.targets(),
                      layers_to_transform=place.layers, layers_pattern=place.layers_pattern,
                      vera_dropout=float(values.get("dropout") or 0.0), save_projection=True,
                      modules_to_save=ctx.head)


def _ia3(values: dict[str, Any], ctx: BuildContext) -> IA3Config:
    place = Placement.of(values, ctx.layout)
    # IA3Config has no layers_to_transform: modules are named one by one in the kept layers.
    targets = place.targets(exact=True)
    ffn = [ctx.layout.module_name(i, "ffn_down") for i in place.layers] if "ffn_down" in place.roles else []
    return IA3Config(task_type=ctx.task_type, target_modules=targets, feedforward_modules=ffn,
                     modules_to_save=ctx.head)


METHODS: dict[str, Method] = {
    "lora": Method(RANKED, lambda v, c: lora_config(v, c), _lora_count),
    "dora": Method(RANKED, lambda v, c: lora_config(v, c, use_dora=True), _dora_count),
    "rslora": Method(RANKED, lambda v, c: lora_config(v, c, use_rslora=True), _lora_count),
    "pissa": Method(RANKED, lambda v, c: lora_config(v, c, init_lora_weights="pissa_niter_4"), _lora_count),
    "olora": Method(RANKED, lambda v, c: lora_config(v, c, init_lora_weights="olora"), _lora_count),
    "eva": Method(RANKED, lambda v, c: lora_config(v, c, init_lora_weights="eva", eva_config=EvaConfig()),
                  # EVA redistributes rank across modules from data: the count is known after it.
                  lambda v, layout: None),
    "adalora": Method(SHARED_RANK, _adalora),
    "loha": Method(RANKED, _lycoris(LoHaConfig), _loha_count),
    "lokr": Method(RANKED, _lycoris(LoKrConfig)),
    "vera": Method(SHARED_RANK, _vera, _vera_count),
    "ia3": Method(PLACED - {"dropout"}, _ia3, _ia3_count),
    "prefix": Method(VIRTUAL, lambda v, c: PrefixTuningConfig(task_type=c.task_type, modules_to_save=c.head,
                                                              num_virtual_tokens=int(v["num_virtual_tokens"])),
                     _prefix_count),
    "prompt": Method(VIRTUAL, lambda v, c: PromptTuningConfig(task_type=c.task_type, modules_to_save=c.head,
                                                              num_virtual_tokens=int(v["num_virtual_tokens"])),
                     _prompt_count),
}


def save_converted(model: torch.nn.Module, initial: dict[str, torch.Tensor], path: Path) -> None:
    """Rewrite a saved PiSSA/OLoRA adapter as plain LoRA on the original base weights.

    With ``W = W_res + s B0 A0`` at initialisation and ``W_res + s B A`` after training, the
    update is ``s (B A - B0 A0) = s [B | -B0] [A ; A0]``: a LoRA of rank 2r with the same
    scaling (alpha doubled with r). PEFT's own conversion (``path_initial_model_for_weight_
    conversion``) does this too, but in 0.21 it drops the task head that sequence
    classification saves beside the adapter, so the conversion is done here.
    """
    trained = get_peft_model_state_dict(model)
    converted = {}
    for key, value in trained.items():
        if "lora_A" in key:
            value = torch.cat([value, initial[key]], dim=0)
        elif "lora_B" in key:
            value = torch.cat([value, -initial[key]], dim=1)
        converted[key] = value.detach().contiguous().cpu()
    save_file(converted, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = copy.deepcopy(model.peft_config["default"])
    config.r, config.lora_alpha = 2 * config.r, 2 * config.lora_alpha
    config.rank_pattern = {k: 2 * v for k, v in config.rank_pattern.items()}
    config.alpha_pattern = {k: 2 * v for k, v in config.alpha_pattern.items()}
    config.init_lora_weights = True
    config.save_pretrained(str(path))


@register_adapter("peft")
class PeftFamilyBuilder(AdapterBuilder):
    """``method`` picks a PEFT method; each takes only its own parameters."""

    parameters = frozenset({"method"}) | frozenset().union(*(m.takes for m in METHODS.values()))
    value_rules = {**LORA_RULES, "shared_rank": POSITIVE_INT, "num_virtual_tokens": POSITIVE_INT}

    def check_space(self, spec: SpaceSpec) -> None:
        method = spec.parameters.get("method")
        if not isinstance(method, Scalar) or not hasattr(method.dimension, "values"):
            raise SpaceError("the PEFT family needs a 'method' choice parameter", source=spec.source,
                             key="parameters.method", line=spec.line_of("method"))
        unknown = [m for m in method.dimension.values if m not in METHODS]
        if unknown:
            raise SpaceError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}",
                             source=spec.source, key="parameters.method", line=method.line)
        for name, param in spec.parameters.items():
            if name in ("method",) or name not in self.parameters:
                continue
            for value in method.dimension.values:
                if param.active_for("method", value) and name not in METHODS[value].takes:
                    raise SpaceError(f"'{name}' would be active for method '{value}', which does not "
                                     f"take it; limit it with when: {{method: [...]}}",
                                     source=spec.source, key=f"parameters.{name}", line=param.line)

    def check_layout(self, spec: SpaceSpec, layout: ModelLayout) -> None:
        check_roles(spec, layout)

    def count_parameters(self, values: dict[str, Any], layout: ModelLayout) -> int | None:
        count = METHODS[values["method"]].count(values, layout)
        return None if count is None else count + layout.head_parameters

    def build(self, values: dict[str, Any], ctx: BuildContext) -> PeftConfig:
        return METHODS[values["method"]].config(values, ctx)

    def apply(self, model: torch.nn.Module, values: dict[str, Any], ctx: BuildContext) -> torch.nn.Module:
        method = values["method"]
        peft_model = get_peft_model(model, self.build(values, ctx))
        if method == "eva":
            if ctx.calibration is None:
                raise SpaceError("EVA initialisation needs training batches")
            # EVA wants plain dicts (collators give BatchEncoding) and, for sequence labels,
            # no "labels": it would mask tokens with them as if they were per-token labels.
            batches = [{k: v for k, v in b.items() if k != "labels"} for b in ctx.calibration()]
            initialize_lora_eva_weights(peft_model, batches, show_progress_bar=False)
        if method in ("pissa", "olora"):
            # These initialisations change the base weights; keep the initial factors to
            # convert the adapter to plain LoRA at save time.
            initial = {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()
                       if "lora_A" in k or "lora_B" in k}
            setattr(peft_model, _INITIAL, initial)
        return peft_model

    def save(self, model: torch.nn.Module, path: Path) -> None:
        initial = getattr(model, _INITIAL, None)
        model.save_pretrained(str(path))
        if initial is not None:
            save_converted(model, initial, path)

    def training_hooks(self, model: torch.nn.Module) -> list[TrainingHooks]:
        if model.active_peft_config.peft_type != PeftType.ADALORA:
            return []
        return [AdaLoraBudget(model)]


class AdaLoraBudget(TrainingHooks):
    """AdaLoRA's rank allocation: PEFT's ``update_and_allocate`` after each optimizer step,
    while the gradients are still there."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def after_optimizer_step(self, loop: TrainingLoop) -> None:
        self.model.base_model.update_and_allocate(loop.step)
