"""The adapter modules of a model grouped by transformer layer, whatever the adapter.

Layer-level strategies (Flexora's gates, IST's sparse updates) act on "the adapter of layer
l": PEFT's LoRA layers there, or autopeft's bottleneck adapters and per-layer prefix. This
view gives them one face for all: the layer's trainable adapter parameters, a multiplicative
scale on its adapter output, and a gate computed anew for each forward pass (scale and gate
act on LoRA and bottleneck outputs; a prefix adds attention positions, not an output, so
they leave it as it is).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from autopeft.adapters.bottleneck import FFNAdapters
from autopeft.adapters.prefix import LayerPrefix
from autopeft.models import ModelLayout

#: a per-layer factor: layer index -> scalar tensor
Gate = Callable[[int], torch.Tensor]


class AdapterLayers:
    """LoRA layers and bottleneck adapters of ``model``, by transformer layer index."""

    def __init__(self, model: nn.Module, layout: ModelLayout) -> None:
        pattern = re.compile(rf"(?:^|\.){re.escape(layout.layers_path)}\.(\d+)\.")
        self.lora: dict[int, list[LoraLayer]] = {}
        self.bottleneck: dict[int, FFNAdapters] = {}
        self.prefix: dict[int, LayerPrefix] = {}
        for name, module in model.named_modules():
            found = pattern.search(name + ".")
            if found is None:
                continue
            layer = int(found.group(1))
            if isinstance(module, LoraLayer) and module.lora_A:
                self.lora.setdefault(layer, []).append(module)
            elif isinstance(module, FFNAdapters):
                self.bottleneck[layer] = module
            elif isinstance(module, LayerPrefix):
                self.prefix[layer] = module
        self.indices = sorted(set(self.lora) | set(self.bottleneck) | set(self.prefix))
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __len__(self) -> int:
        return len(self.indices)

    def parameters(self, layer: int) -> list[nn.Parameter]:
        """The adapter's own parameters in ``layer`` (never the base weights)."""
        params = [p for m in self.lora.get(layer, []) for n, p in m.named_parameters()
                  if n.startswith(("lora_", "lora_magnitude"))]
        for modules in (self.bottleneck, self.prefix):
            if layer in modules:
                params.extend(modules[layer].parameters())
        return params

    def set_trainable(self, layers: set[int]) -> None:
        """Only the adapters of ``layers`` get gradients; the others are frozen (their weights,
        and their optimizer state, stay exactly as they are)."""
        for layer in self.indices:
            for p in self.parameters(layer):
                p.requires_grad_(layer in layers)

    def scale(self, layer: int, factor: float) -> None:
        """Multiply the adapter output of ``layer`` by ``factor`` (PEFT's ``scale_layer``)."""
        for module in self.lora.get(layer, []):
            module.scale_layer(factor)
        if layer in self.bottleneck:
            self.bottleneck[layer].scale = self.bottleneck[layer].scale * factor

    def unscale(self, layer: int, factor: float) -> None:
        """Undo :meth:`scale` (PEFT's ``unscale_layer``)."""
        for module in self.lora.get(layer, []):
            module.unscale_layer(factor)
        if layer in self.bottleneck:
            self.bottleneck[layer].scale = self.bottleneck[layer].scale / factor

    def gate(self, gate: Gate) -> None:
        """Multiply every adapter output of layer ``l`` by ``gate(l)``, read at each forward
        pass: applied once, on LoRA's ``lora_B`` output and on the bottlenecks' sum."""
        for layer, modules in self.lora.items():
            for module in modules:
                for lora_b in module.lora_B.values():
                    self._handles.append(lora_b.register_forward_hook(
                        lambda _m, _args, out, layer=layer: out * gate(layer)))
        for layer, adapters in self.bottleneck.items():
            adapters.gate = (lambda layer=layer: gate(layer))

    def remove_gates(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for adapters in self.bottleneck.values():
            adapters.gate = None
