"""Serial and parallel bottleneck adapters around a transformer layer's feed-forward block.

PEFT has no bottleneck adapters, so they live here, small and model-agnostic: the FFN is
found through the layout's roles ``ffn_up`` (its first projection) and ``ffn_down`` (its last
one), which covers BERT-style (``intermediate.dense`` / ``output.dense``) and LLaMA-style
(``mlp.up_proj`` / ``mlp.down_proj``) layers alike.

A bottleneck is ``B(x) = W_up relu(W_down x + b_down) + b_up`` with ``W_down: r x d`` and
``W_up: d x r`` (``d`` the hidden size, ``r`` the bottleneck width); it has
``2 d r + r + d`` parameters. With ``x`` the FFN's input (the input of ``ffn_up``) and
``y`` the FFN's output (the output of ``ffn_down``, before the block's dropout, residual and
LayerNorm), an adapted layer computes

    y' = y + S(y) + s * P(x)

- ``S``, the serial adapter (Houlsby et al. 2019; Pfeiffer et al. 2021), runs on the FFN's
  output and is added back to it (the adapter's residual);
- ``P``, the parallel adapter (He et al. 2022, "Towards a Unified View of Parameter-Efficient
  Transfer Learning"), runs beside the FFN from its input and is added to its output, scaled
  by ``s`` (He et al. use 4.0 for the FFN parallel adapter; the AutoPEFT default follows).

Because the adapters act on ``ffn_down``'s output itself, whatever the block does after that
projection (BERT's dropout, residual and LayerNorm; LLaMA's residual) applies to the adapted
output too (AdapterHub inserts after BERT's dropout; at evaluation the two coincide).

Serial and parallel adapters are computed side by side (``S`` reads the FFN's own output, not
the parallel-adapted one) and summed, as in the AutoPEFT authors' combined adapter.

Initialisation, for both adapters, is He et al.'s ("mam_adapter"): ``W_down`` Kaiming-uniform
(``nn.Linear``'s default), ``b_down``, ``W_up`` and ``b_up`` zero, so an inserted adapter starts
as the identity and the adapted model computes exactly what the base model did. (The authors'
serial adapter uses BERT's normal(0, 0.02) init for both projections instead, which does not
start at the identity.)

Adapters are registered as a child module ``bottleneck_adapters`` of each adapted layer (so
they appear in ``state_dict`` and ``parameters()`` with stable names, and the base model's own
parameter names stay untouched) and run through a forward pre-hook on ``ffn_up`` and a forward
hook on ``ffn_down``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from autopeft.models import ModelLayout

#: attribute name of the adapters inside an adapted transformer layer
ATTRIBUTE = "bottleneck_adapters"
CONFIG_FILE = "bottleneck_config.json"
WEIGHTS_FILE = "bottleneck_model.safetensors"


@dataclass(frozen=True)
class BottleneckConfig:
    """Which layers get bottleneck adapters and how wide they are (0 = no such adapter)."""

    layers: tuple[int, ...]
    serial_size: int = 0
    parallel_size: int = 0
    parallel_scale: float = 4.0

    def __post_init__(self) -> None:
        if self.serial_size < 0 or self.parallel_size < 0:
            raise ValueError(f"got sizes serial={self.serial_size}, parallel={self.parallel_size}, "
                             f"expected non-negative widths")
        if len(set(self.layers)) != len(self.layers) or any(i < 0 for i in self.layers):
            raise ValueError(f"got layers {list(self.layers)}, expected distinct indices >= 0")

    @property
    def is_empty(self) -> bool:
        return not self.layers or (self.serial_size == 0 and self.parallel_size == 0)

    def num_parameters(self, hidden_size: int) -> int:
        """Trainable parameters: ``2 d r + r + d`` per adapter, per adapted layer."""
        per_layer = sum(bottleneck_parameters(hidden_size, r)
                        for r in (self.serial_size, self.parallel_size) if r)
        return len(self.layers) * per_layer

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "layers": list(self.layers)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BottleneckConfig:
        return cls(layers=tuple(int(i) for i in data["layers"]), serial_size=int(data["serial_size"]),
                   parallel_size=int(data["parallel_size"]),
                   parallel_scale=float(data["parallel_scale"]))


def bottleneck_parameters(hidden_size: int, size: int) -> int:
    """Parameters of one bottleneck of width ``size`` on a ``hidden_size`` stream (0 when off)."""
    return 2 * hidden_size * size + size + hidden_size if size else 0


class Bottleneck(nn.Module):
    """``x -> W_up relu(W_down x)`` (biases included), ``... x d -> ... x d``; starts at zero."""

    def __init__(self, hidden_size: int, size: int, *, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, size, device=device, dtype=dtype)
        self.up = nn.Linear(size, hidden_size, device=device, dtype=dtype)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.down(x)))


class FFNAdapters(nn.Module):
    """The serial and/or parallel adapter of one layer, run by hooks on its FFN projections."""

    def __init__(self, hidden_size: int, serial_size: int, parallel_size: int, parallel_scale: float,
                 *, device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.serial = Bottleneck(hidden_size, serial_size, **kw) if serial_size else None
        self.parallel = Bottleneck(hidden_size, parallel_size, **kw) if parallel_size else None
        self.parallel_scale = parallel_scale
        #: a factor on the adapters' whole contribution (training strategies: IST suppresses
        #: a layer with it); 1.0 in a trained, saved model
        self.scale: float = 1.0
        #: a per-forward factor on the same (Flexora's gate), or None
        self.gate: Callable[[], torch.Tensor] | None = None
        self._ffn_input: torch.Tensor | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def attach(self, ffn_up: nn.Module, ffn_down: nn.Module) -> None:
        """Run this adapter whenever ``ffn_up`` and then ``ffn_down`` run."""
        if self._handles:
            raise RuntimeError("these adapters are already attached")
        if self.parallel is not None:
            self._handles.append(ffn_up.register_forward_pre_hook(self._remember_input))
        self._handles.append(ffn_down.register_forward_hook(self._adapt_output))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._ffn_input = None

    def _remember_input(self, module: nn.Module, args: tuple) -> None:
        self._ffn_input = args[0]

    def _adapt_output(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        delta = torch.zeros((), dtype=output.dtype, device=output.device)
        if self.serial is not None:
            delta = delta + self.serial(output)
        if self.parallel is not None:
            x, self._ffn_input = self._ffn_input, None
            if x is None:
                raise RuntimeError("the parallel adapter found no FFN input: the layer's ffn_up "
                                   "projection did not run before its ffn_down projection")
            delta = delta + self.parallel_scale * self.parallel(x)
        if self.scale != 1.0:
            delta = delta * self.scale
        if self.gate is not None:
            delta = delta * self.gate()
        return output + delta

    def extra_repr(self) -> str:
        return f"parallel_scale={self.parallel_scale}"


def insert_bottlenecks(model: nn.Module, layout: ModelLayout, config: BottleneckConfig) -> list[FFNAdapters]:
    """Add the adapters of ``config`` to ``model`` (the task model ``layout`` describes), in
    place; the new parameters are trainable, nothing else changes. Returns them by layer."""
    for role in ("ffn_up", "ffn_down"):
        if role not in layout.roles:
            raise ValueError(f"the model has no '{role}' projection (roles found: "
                             f"{sorted(layout.roles)}), so bottleneck adapters cannot be placed")
    if config.is_empty:
        return []
    bad = [i for i in config.layers if i >= layout.num_layers]
    if bad:
        raise ValueError(f"got layers {bad}, the model has {layout.num_layers} layers")
    layers = model.get_submodule(layout.layers_path)
    inserted = []
    for i in sorted(config.layers):
        layer = layers[i]
        if hasattr(layer, ATTRIBUTE):
            raise ValueError(f"layer {i} already has bottleneck adapters")
        up = layer.get_submodule(layout.roles["ffn_up"])
        down = layer.get_submodule(layout.roles["ffn_down"])
        reference = down.weight
        adapters = FFNAdapters(layout.hidden_size, config.serial_size, config.parallel_size,
                               config.parallel_scale, device=reference.device, dtype=reference.dtype)
        layer.add_module(ATTRIBUTE, adapters)
        adapters.attach(up, down)
        inserted.append(adapters)
    return inserted


def bottleneck_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' weights, keyed by their names in ``model`` (the task model)."""
    return {name: tensor for name, tensor in model.state_dict().items() if f".{ATTRIBUTE}." in name}


def save_bottlenecks(model: nn.Module, config: BottleneckConfig, path: Path) -> None:
    """Write ``config`` (JSON) and the adapters' weights (safetensors) into the folder ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))
    if not config.is_empty:
        weights = {k: v.detach().contiguous().cpu() for k, v in bottleneck_state_dict(model).items()}
        save_file(weights, str(path / WEIGHTS_FILE))


def read_bottleneck_config(path: Path) -> BottleneckConfig:
    return BottleneckConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))


def load_bottlenecks(model: nn.Module, layout: ModelLayout, path: Path) -> BottleneckConfig:
    """Insert the adapters saved at ``path`` into ``model`` (a fresh task model) with their weights."""
    config = read_bottleneck_config(path)
    insert_bottlenecks(model, layout, config)
    if config.is_empty:
        return config
    weights = load_file(str(path / WEIGHTS_FILE))
    expected = bottleneck_state_dict(model)
    if set(weights) != set(expected):
        missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
        raise ValueError(f"{path / WEIGHTS_FILE} does not match its config: missing {missing[:3]}, "
                         f"unexpected {extra[:3]}")
    model.load_state_dict(weights, strict=False)
    return config
