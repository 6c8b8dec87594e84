"""A pruning plan: which attention heads and FFN neurons of each layer stay, and how a base
model is cut down to it.

A transformers config cannot describe per-layer head counts, so the plan is saved beside the
adapter (``pruning_plan.json``) and a fresh base model is rebuilt as base -> plan -> adapter.
Pruning is physical: the projections are replaced by smaller ``nn.Linear`` layers holding
the kept rows (outputs) or columns (inputs); transformers 5 has no ``prune_heads``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from autopeft.models import ModelLayout

PLAN_FILE = "pruning_plan.json"
#: roles whose outputs are head slices, and whose input is the heads' concatenation
HEAD_OUTPUTS, HEAD_INPUTS = ("attn_q", "attn_k", "attn_v"), ("attn_o",)
#: roles whose outputs are FFN neurons, and whose input is the neurons
NEURON_OUTPUTS, NEURON_INPUTS = ("ffn_gate", "ffn_up"), ("ffn_down",)


@dataclass(frozen=True)
class PruningPlan:
    """Kept head and neuron indices per layer (sorted; a layer absent keeps everything)."""

    head_dim: int
    heads: dict[int, tuple[int, ...]]
    neurons: dict[int, tuple[int, ...]]

    def kept_outputs(self, layer: int, role: str) -> torch.Tensor | None:
        """Output indices of the role's projection in ``layer`` that stay (None: all)."""
        if role in HEAD_OUTPUTS and layer in self.heads:
            return self._head_units(self.heads[layer])
        if role in NEURON_OUTPUTS and layer in self.neurons:
            return torch.tensor(self.neurons[layer])
        return None

    def kept_inputs(self, layer: int, role: str) -> torch.Tensor | None:
        """Input indices of the role's projection in ``layer`` that stay (None: all)."""
        if role in HEAD_INPUTS and layer in self.heads:
            return self._head_units(self.heads[layer])
        if role in NEURON_INPUTS and layer in self.neurons:
            return torch.tensor(self.neurons[layer])
        return None

    def _head_units(self, heads: tuple[int, ...]) -> torch.Tensor:
        return torch.tensor([h * self.head_dim + i for h in heads for i in range(self.head_dim)])

    def to_json(self) -> str:
        return json.dumps({"head_dim": self.head_dim,
                           "heads": {str(k): list(v) for k, v in self.heads.items()},
                           "neurons": {str(k): list(v) for k, v in self.neurons.items()}})

    @classmethod
    def from_json(cls, text: str) -> PruningPlan:
        data = json.loads(text)
        return cls(int(data["head_dim"]), {int(k): tuple(v) for k, v in data["heads"].items()},
                   {int(k): tuple(v) for k, v in data["neurons"].items()})

    def save(self, folder: Path) -> None:
        (Path(folder) / PLAN_FILE).write_text(self.to_json())

    @classmethod
    def load(cls, folder: Path) -> PruningPlan | None:
        path = Path(folder) / PLAN_FILE
        return cls.from_json(path.read_text()) if path.is_file() else None


def sliced_linear(linear: nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None) -> nn.Linear:
    """A new ``nn.Linear`` with the kept output ``rows`` and input ``cols`` of ``linear``."""
    weight = linear.weight.detach()
    bias = linear.bias.detach() if linear.bias is not None else None
    if rows is not None:
        weight = weight[rows.to(weight.device)]
        bias = bias[rows.to(weight.device)] if bias is not None else None
    if cols is not None:
        weight = weight[:, cols.to(weight.device)]
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
    out.requires_grad_(linear.weight.requires_grad)
    return out


def apply_plan(model: nn.Module, layout: ModelLayout, plan: PruningPlan) -> nn.Module:
    """Cut ``model`` (a plain task model that ``layout`` describes) down to ``plan``, in place."""
    layers = model.get_submodule(layout.layers_path)
    for index, layer in enumerate(layers):
        for role, path in layout.roles.items():
            rows, cols = plan.kept_outputs(index, role), plan.kept_inputs(index, role)
            if rows is None and cols is None:
                continue
            parent_path, _, name = path.rpartition(".")
            parent = layer.get_submodule(parent_path) if parent_path else layer
            setattr(parent, name, sliced_linear(getattr(parent, name), rows, cols))
        if index in plan.heads:
            # Attention modules reshape with -1 heads; their bookkeeping is kept true anyway.
            attention = layer.get_submodule(layout.roles["attn_q"].rpartition(".")[0])
            heads = len(plan.heads[index])
            for attr, value in (("num_attention_heads", heads), ("num_heads", heads),
                                ("all_head_size", heads * plan.head_dim)):
                if isinstance(getattr(attention, attr, None), int):
                    setattr(attention, attr, value)
    return model


def lowest(scores: torch.Tensor, share: float) -> torch.Tensor:
    """Indices of the ``round(share x n)`` lowest scores (a stable order breaks ties)."""
    count = round(share * scores.numel())
    return torch.argsort(scores.flatten(), stable=True)[:count]
