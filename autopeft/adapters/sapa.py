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

The bottleneck adapters are :mod:`autopeft.adapters.bottleneck`; the prefix is autopeft's
per-layer prefix (:mod:`autopeft.adapters.prefix`: learned keys and values per kept layer,
no reparameterisation MLP), because PEFT's prefix tuning always covers every layer while the
paper places the prefix in the kept layers only (the authors' AdapterHub setup passes
``leave_out`` to every module). The keep bits therefore place all three modules.

**One model, one configuration.** Two sizes can round to the same width (on a 384-wide model
``k = 8`` and ``k = 9`` both give 1): :meth:`SapaBuilder.canonical` maps every ``k`` to the
smallest one of the same width, so the optimizer never pays twice for one model.

**Task head.** For task types whose head is new and trained (``SEQ_CLS``, ``TOKEN_CLS``,
``QUESTION_ANS``) the head is trained alongside the adapters, found by the rule every adapter
follows (:func:`autopeft.models.head_modules`: what the checkpoint did not provide, and what
PEFT trains anyway); its parameters are unfrozen in place and saved by this builder.

**Saved folder.** ``bottleneck_config.json`` and, when an adapter is on,
``bottleneck_model.safetensors``; ``prefix_config.json`` and ``prefix_model.safetensors`` when
the prefix is on; ``head_model.safetensors`` for a trained head. :meth:`SapaBuilder.load`
rebuilds all three on a fresh task model and returns it ready for inference (all frozen).
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any

import json

import torch
from safetensors.torch import load_file, save_file

from autopeft.adapters.base import HEAD_TASK_TYPES, AdapterBuilder, BuildContext, register_adapter
from autopeft.adapters.bottleneck import (BottleneckConfig, FFNAdapters, insert_bottlenecks,
                                          load_bottlenecks, save_bottlenecks)
from autopeft.adapters.prefix import ATTRIBUTE as PREFIX, LayerPrefix, insert_prefixes, prefix_parameters
from autopeft.space.values import LOG2_SIZE, POSITIVE
from autopeft.errors import SpaceError
from autopeft.models import ModelLayout, model_layout
from autopeft.models import head_modules as model_head_modules
from autopeft.space import SpaceSpec

#: the largest log2 size, which switches a module off
OFF_K = 10
DEFAULT_PARALLEL_SCALE = 4.0
HEAD_FILE = "head_model.safetensors"
PREFIX_CONFIG_FILE = "prefix_config.json"
PREFIX_FILE = "prefix_model.safetensors"
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


def canonical_k(k: Any, hidden_size: int) -> Any:
    """The smallest log2 size with the same width as ``k`` (``k`` itself when it is unique,
    off, or not a size)."""
    if not isinstance(k, Integral) or isinstance(k, bool) or not 0 <= k < OFF_K:
        return k
    return min(j for j in range(OFF_K) if module_size(j, hidden_size) == module_size(k, hidden_size))


def sapa_parameter_count(values: dict[str, Any], layout: ModelLayout, head_params: int) -> int:
    """Trainable parameters of the model SAPA builds for ``values``, without building it:
    ``kept x (B(r_serial) + B(r_parallel) + prefix_tokens x 2 x kv_width) + head_params``,
    with ``B(r) = 2 d r + r + d`` (0 for an adapter that is off) and ``kv_width`` the layout's
    prefix width (the hidden size, or ``head_dim x num_key_value_heads``)."""
    plan = sapa_plan(values, layout)
    prefix = prefix_parameters(len(plan.bottleneck.layers), plan.prefix_tokens, layout.prefix_width)
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
    10 = off) -> serial and parallel bottleneck adapters and a prefix in the kept layers;
    ``parallel_scale`` -> the parallel adapter's scale."""

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
        if "attn_q" not in layout.roles and "prefix_k" in spec.parameters:
            raise SpaceError("the prefix needs the model's attention query projection, which autopeft "
                             f"does not know for this model (roles found: {sorted(layout.roles)})",
                             source=spec.source, key="parameters.prefix_k", line=spec.line_of("prefix_k"))

    def count_parameters(self, values: dict[str, Any], layout: ModelLayout) -> int:
        return sapa_parameter_count(values, layout, layout.head_parameters)

    def canonical(self, config: dict[str, Any], layout: ModelLayout) -> dict[str, Any]:
        return {k: canonical_k(v, layout.hidden_size) if k in _SIZES else v for k, v in config.items()}

    def build(self, values: dict[str, Any], ctx: BuildContext) -> None:
        """SAPA has no PEFT part: :meth:`apply` builds it."""
        return None

    def apply(self, model: torch.nn.Module, values: dict[str, Any], ctx: BuildContext) -> torch.nn.Module:
        plan = sapa_plan(values, ctx.layout)
        model.requires_grad_(False)
        for p in _head_parameters(model, ctx.task_type).values():
            p.requires_grad_(True)
        insert_bottlenecks(model, ctx.layout, plan.bottleneck)
        insert_prefixes(model, ctx.layout, plan.bottleneck.layers, plan.prefix_tokens)
        return model

    def save(self, model: torch.nn.Module, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        trained = {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}
        prefix = {n: v for n, v in trained.items() if f".{PREFIX}." in n}
        head = {n: v for n, v in trained.items() if n not in prefix and ".bottleneck_adapters." not in n}
        if head:
            save_file(head, str(path / HEAD_FILE))
        layers = sorted({int(n.split(".")[len(_layers_path(model).split("."))]) for n in prefix})
        if prefix:
            tokens = next(m for m in model.modules() if isinstance(m, LayerPrefix)).tokens
            (path / PREFIX_CONFIG_FILE).write_text(json.dumps({"layers": layers, "tokens": tokens}))
            save_file(prefix, str(path / PREFIX_FILE))
        save_bottlenecks(model, _bottleneck_config(model), path)

    def load(self, base: torch.nn.Module, path: Path) -> torch.nn.Module:
        path = Path(path)
        layout = model_layout(base)
        load_bottlenecks(base, layout, path)
        weights = {}
        if (path / PREFIX_CONFIG_FILE).is_file():
            spec = json.loads((path / PREFIX_CONFIG_FILE).read_text())
            insert_prefixes(base, layout, tuple(spec["layers"]), int(spec["tokens"]))
            weights.update(load_file(str(path / PREFIX_FILE)))
        if (path / HEAD_FILE).is_file():
            weights.update(load_file(str(path / HEAD_FILE)))
        unexpected = base.load_state_dict(weights, strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"{path} has weights the model lacks: {unexpected[:3]}")
        base.requires_grad_(False)
        return base


def _layers_path(model: torch.nn.Module) -> str:
    return model_layout(model).layers_path
