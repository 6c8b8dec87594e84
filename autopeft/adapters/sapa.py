"""AutoPEFT's "SAPA" space: serial adapter + parallel adapter + prefix tuning, per-layer keep bit.

Zhou, Wan, Vulic, Korhonen, "AutoPEFT: Automatic Configuration Search for Parameter-Efficient
Fine-Tuning" (TACL 2024). A configuration is

- ``layers``: one keep bit per transformer layer, shared by the modules that can be placed
  per layer (here: the two bottleneck adapters, see the prefix deviation below);
- ``serial_k``, ``parallel_k``, ``prefix_k``: integers 0..10, a size on a log2 scale,
  ``size = max(1, hidden_size // 2**k)`` for ``k < 10``; ``k = 10`` (:data:`OFF_K`) switches
  the module off. For hidden size 768: 768, 384, 192, 96, 48, 24, 12, 6, 3, 1 (k = 0..9), as in
  the authors' code (``768 / 2**k``, with ``2**9 = 512`` rounded up to 1 and ``2**10 > 768`` off).
  The serial and parallel sizes are bottleneck widths, the prefix size is PEFT's
  ``num_virtual_tokens``;
- ``parallel_scale`` (optional, default 4.0 as in He et al. 2022): the parallel adapter's scale.

A configuration is valid when at least one layer is kept and at least one module is on;
:func:`sapa_plan` raises :class:`~autopeft.errors.SpaceError` otherwise. A parameter the
space leaves out counts as off (a size) or as "all layers kept" (``layers``).

The bottleneck adapters are :mod:`autopeft.adapters.bottleneck`. Prefix tuning is PEFT's own
``PrefixTuningConfig`` (no reparameterisation MLP, ``prefix_projection=False``).

**Deviation from the paper (prefix).** The paper's prefix is placed in the kept layers only
(the authors' AdapterHub setup passes ``leave_out`` to every module). PEFT's prefix tuning has
no per-layer placement: its prefix always covers every layer. Here the keep bit therefore
applies to the bottleneck adapters only, and a prefix of ``n`` tokens costs
``n x num_layers x 2 x kv_width`` parameters whatever the keep bits say (``kv_width`` is the
hidden size, or ``head_dim x num_key_value_heads`` for grouped-query attention, as PEFT sizes it).

**Task head.** For task types whose head is new and trained (``SEQ_CLS``, ``TOKEN_CLS``,
``QUESTION_ANS``) the head is trained alongside the adapters, as PEFT does with
``modules_to_save``. It is found by the rule every adapter follows
(:func:`autopeft.models.head_modules`: what the checkpoint did not provide, and what PEFT
trains anyway). With the prefix on, these names are PEFT's ``modules_to_save`` (PEFT trains and
saves a copy); with it off, the head's own parameters are unfrozen and saved by this builder.

**Saved folder.** With the prefix on: PEFT's ``adapter_config.json`` and
``adapter_model.safetensors`` (prefix and head); always: ``bottleneck_config.json`` and, when
some adapter is on, ``bottleneck_model.safetensors``; with the prefix off and a trained head:
``head_model.safetensors``. :meth:`SapaBuilder.load` reads the prefix from PEFT's files when
``adapter_config.json`` is present and returns a model ready for inference (all frozen, as
PEFT's ``from_pretrained`` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, PrefixTuningConfig, get_peft_model
from safetensors.torch import load_file, save_file

from autopeft.adapters.base import HEAD_TASK_TYPES, AdapterBuilder, BuildContext, register_adapter
from autopeft.adapters.bottleneck import (ATTRIBUTE, BottleneckConfig, FFNAdapters, insert_bottlenecks,
                                          load_bottlenecks, save_bottlenecks)
from autopeft.adapters.values import LOG2_SIZE, POSITIVE
from autopeft.errors import SpaceError
from autopeft.models import ModelLayout, key_value_width, model_layout
from autopeft.models import head_modules as model_head_modules
from autopeft.space import SpaceSpec

#: the largest log2 size, which switches a module off
OFF_K = 10
DEFAULT_PARALLEL_SCALE = 4.0
HEAD_FILE = "head_model.safetensors"
PEFT_CONFIG_FILE = "adapter_config.json"
_SIZES = ("serial_k", "parallel_k", "prefix_k")


def module_size(k: int | None, hidden_size: int) -> int:
    """``max(1, hidden_size // 2**k)``, or 0 (off) for ``k`` = None or :data:`OFF_K`."""
    if k is None or k == OFF_K:
        return 0
    if isinstance(k, bool) or not isinstance(k, Integral) or not 0 <= k <= OFF_K:
        raise SpaceError(f"got log2 size {k!r}, expected an integer in 0..{OFF_K}")
    return max(1, hidden_size // 2 ** int(k))


@dataclass(frozen=True)
class SapaPlan:
    """What a configuration asks for, in sizes: bottleneck adapters and prefix length."""

    bottleneck: BottleneckConfig
    prefix_tokens: int  # 0 = no prefix


def sapa_plan(values: dict[str, Any], layout: ModelLayout) -> SapaPlan:
    """Sizes from assembled parameter values; SpaceError for an invalid configuration."""
    keep = values.get("layers")
    if keep is None:
        keep = [True] * layout.num_layers
    if len(keep) != layout.num_layers:
        raise SpaceError(f"got {len(keep)} keep bits, the model has {layout.num_layers} layers",
                         key="layers")
    kept = tuple(i for i, bit in enumerate(keep) if bit)
    sizes = {name: module_size(values.get(name), layout.hidden_size) for name in _SIZES}
    if not kept:
        raise SpaceError("no layer is kept; at least one must be", key="layers")
    if not any(sizes.values()):
        raise SpaceError(f"every module is off ({', '.join(f'{n}={OFF_K}' for n in _SIZES)}); "
                         f"at least one must be on", key="serial_k")
    scale = values.get("parallel_scale")
    bottleneck = BottleneckConfig(
        layers=kept, serial_size=sizes["serial_k"], parallel_size=sizes["parallel_k"],
        parallel_scale=DEFAULT_PARALLEL_SCALE if scale is None else float(scale))
    return SapaPlan(bottleneck, sizes["prefix_k"])


def peft_prefix_width(model_config: Any) -> int:
    """Width of one layer's key (or value) prefix as PEFT sizes it."""
    return key_value_width(model_config)


def sapa_parameter_count(values: dict[str, Any], layout: ModelLayout, head_params: int,
                         *, prefix_width: int | None = None) -> int:
    """Trainable parameters of the model SAPA builds for ``values``, without building it.

    ``kept x (B(r_serial) + B(r_parallel)) + prefix_tokens x num_layers x 2 x prefix_width +
    head_params``, where ``B(r) = 2 d r + r + d`` (0 for an adapter that is off) and
    ``prefix_width`` defaults to the hidden size (pass :func:`peft_prefix_width` of the model's
    config for grouped-query attention). ``head_params``: the trained head's parameters
    (:func:`head_parameter_count`, or 0 for task types without a trained head).
    """
    plan = sapa_plan(values, layout)
    width = layout.hidden_size if prefix_width is None else prefix_width
    prefix = plan.prefix_tokens * layout.num_layers * 2 * width
    return plan.bottleneck.num_parameters(layout.hidden_size) + prefix + head_params


def head_modules(model: torch.nn.Module, task_type: str = "SEQ_CLS") -> list[str]:
    """Names of the task model's trained head modules: the rule every adapter follows
    (:func:`autopeft.models.head_modules`), for task types with a trained head."""
    return model_head_modules(model) if task_type in HEAD_TASK_TYPES else []


def head_parameter_count(model: torch.nn.Module, task_type: str = "SEQ_CLS") -> int:
    """Parameters of the trained head of ``model`` (a plain task model)."""
    return sum(p.numel() for p in _head_parameters(model, task_type).values())


def _head_parameters(model: torch.nn.Module, task_type: str) -> dict[str, torch.nn.Parameter]:
    return {f"{name}.{pname}": p for name in head_modules(model, task_type)
            for pname, p in model.get_submodule(name).named_parameters()}


def _task_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers task model inside ``model`` (PEFT prompt learning keeps it as ``base_model``)."""
    return model.base_model if isinstance(model, PeftModel) else model


def _bottleneck_config(task: torch.nn.Module) -> BottleneckConfig:
    """The bottleneck configuration inserted in ``task``, read back from its modules."""
    found = {int(name.rsplit(".", 2)[-2]): m for name, m in task.named_modules()
             if isinstance(m, FFNAdapters)}
    if not found:
        return BottleneckConfig(layers=())
    first = next(iter(found.values()))
    return BottleneckConfig(
        layers=tuple(sorted(found)),
        serial_size=first.serial.down.out_features if first.serial is not None else 0,
        parallel_size=first.parallel.down.out_features if first.parallel is not None else 0,
        parallel_scale=first.parallel_scale)


@register_adapter("sapa")
class SapaBuilder(AdapterBuilder):
    """``layers`` (keep bits) and ``serial_k`` / ``parallel_k`` / ``prefix_k`` (log2 sizes,
    10 = off) -> serial and parallel bottleneck adapters in the kept layers and PEFT prefix
    tuning over all layers; ``parallel_scale`` -> the parallel adapter's scale."""

    parameters = frozenset({"layers", "serial_k", "parallel_k", "prefix_k", "parallel_scale"})
    value_rules = {"serial_k": LOG2_SIZE, "parallel_k": LOG2_SIZE, "prefix_k": LOG2_SIZE,
                   "parallel_scale": POSITIVE}

    def check_layout(self, spec: SpaceSpec, layout: ModelLayout) -> None:
        missing = [r for r in ("ffn_up", "ffn_down") if r not in layout.roles]
        wanted = [n for n in ("serial_k", "parallel_k") if n in spec.parameters]
        if missing and wanted:
            raise SpaceError(f"bottleneck adapters need the FFN's {missing} projection(s), which the "
                             f"model lacks (roles found: {sorted(layout.roles)})", source=spec.source,
                             key=f"parameters.{wanted[0]}", line=spec.line_of(wanted[0]))

    def count_parameters(self, values: dict[str, Any], layout: ModelLayout) -> int:
        return sapa_parameter_count(values, layout, layout.head_parameters, prefix_width=layout.prefix_width)

    def build(self, values: dict[str, Any], ctx: BuildContext) -> PrefixTuningConfig | None:
        """The prefix-tuning part (``None`` when the prefix is off); see :meth:`apply`."""
        return self._prefix_config(sapa_plan(values, ctx.layout), ctx.task_type, [])

    @staticmethod
    def _prefix_config(plan: SapaPlan, task_type: str, head: list[str]) -> PrefixTuningConfig | None:
        if not plan.prefix_tokens:
            return None
        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=plan.prefix_tokens,
                                  modules_to_save=head or None)

    def apply(self, model: torch.nn.Module, values: dict[str, Any], ctx: BuildContext) -> torch.nn.Module:
        plan = sapa_plan(values, ctx.layout)
        head = head_modules(model, ctx.task_type)
        prefix = self._prefix_config(plan, ctx.task_type, head)
        if prefix is not None:
            # PEFT freezes the model and trains the prefix and a copy of the head; the
            # bottlenecks inserted afterwards into the same task model start trainable.
            adapted = get_peft_model(model, prefix)
        else:
            model.requires_grad_(False)
            for p in _head_parameters(model, ctx.task_type).values():
                p.requires_grad_(True)
            adapted = model
        insert_bottlenecks(model, ctx.layout, plan.bottleneck)
        return adapted

    def save(self, model: torch.nn.Module, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        task = _task_model(model)
        if isinstance(model, PeftModel):
            model.save_pretrained(str(path))
        else:
            # what apply() unfroze besides the bottlenecks: the head
            head = {name: p.detach().contiguous().cpu() for name, p in task.named_parameters()
                    if p.requires_grad and f".{ATTRIBUTE}." not in name}
            if head:
                save_file(head, str(path / HEAD_FILE))
        save_bottlenecks(task, _bottleneck_config(task), path)

    def load(self, base: torch.nn.Module, path: Path) -> torch.nn.Module:
        path = Path(path)
        layout = model_layout(base)
        if (path / PEFT_CONFIG_FILE).is_file():
            model = PeftModel.from_pretrained(base, str(path))
        else:
            model = base
            if (path / HEAD_FILE).is_file():
                head = load_file(str(path / HEAD_FILE))
                unexpected = model.load_state_dict(head, strict=False).unexpected_keys
                if unexpected:
                    raise ValueError(f"{path / HEAD_FILE} has weights the model lacks: {unexpected[:3]}")
        load_bottlenecks(base, layout, path)
        model.requires_grad_(False)
        return model
