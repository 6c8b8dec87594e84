"""A pruning plan: which attention heads and FFN neurons of each layer stay, and how a base
model is cut down to it.

A transformers config cannot describe per-layer head counts, so the plan is saved beside the
adapter (``pruning_plan.json``) and a fresh base model is rebuilt as base -> plan -> adapter.
Pruning is physical: the projections are replaced by smaller ``nn.Linear`` layers holding
the kept rows (outputs) or columns (inputs); transformers 5 has no ``prune_heads``.

Grouped-query attention (LLaMA): query head ``h`` attends with key/value head
``h // kv_groups``, and after slicing the attention module pairs them again by position,
repeating each kept key/value head ``num_key_value_groups`` times (``repeat_kv``). A plan
therefore keeps, in each layer, the key/value heads of the kept query heads and the same
number of query heads for every one of them (checked when the plan is made), so the pruned
layer is again a uniform grouping; multi-head attention is the case ``kv_groups == 1``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from autopeft.models import ModelLayout

PLAN_FILE = "pruning_plan.json"
#: roles whose outputs are query-head slices, and whose input is the query heads' concatenation
HEAD_OUTPUTS, HEAD_INPUTS = ("attn_q",), ("attn_o",)
#: roles whose outputs are key/value-head slices (one per query head without GQA)
KV_OUTPUTS = ("attn_k", "attn_v")
#: roles whose outputs are FFN neurons, and whose input is the neurons
NEURON_OUTPUTS, NEURON_INPUTS = ("ffn_gate", "ffn_up"), ("ffn_down",)


@dataclass(frozen=True)
class PruningPlan:
    """Kept query-head and neuron indices per layer (sorted; a layer absent keeps everything).

    ``kv_groups`` is the unpruned model's query heads per key/value head (1: multi-head
    attention); the kept key/value heads follow from the kept query heads.
    """

    head_dim: int
    heads: dict[int, tuple[int, ...]]
    neurons: dict[int, tuple[int, ...]]
    kv_groups: int = 1

    def __post_init__(self) -> None:
        if self.kv_groups < 1:
            raise ValueError(f"kv_groups must be >= 1, got {self.kv_groups}")
        for layer, heads in self.heads.items():
            if not heads or list(heads) != sorted(set(heads)):
                raise ValueError(f"layer {layer}: kept heads must be sorted, distinct and not empty, got {heads}")
            # repeat_kv pairs the i-th kept query head with kept key/value head i // groups:
            # that is the original pairing only if every kept kv head keeps as many query heads.
            counts = {kv: sum(1 for h in heads if h // self.kv_groups == kv) for kv in self.kv_heads(layer)}
            if len(set(counts.values())) != 1:
                raise ValueError(f"layer {layer}: kept query heads {heads} leave unequal groups "
                                 f"(query heads per key/value head: {counts}), expected equal counts")
        for layer, neurons in self.neurons.items():
            if not neurons or list(neurons) != sorted(set(neurons)):
                raise ValueError(f"layer {layer}: kept neurons must be sorted, distinct and not empty")

    def kv_heads(self, layer: int) -> tuple[int, ...]:
        """The key/value heads that ``layer``'s kept query heads attend with (sorted)."""
        return tuple(sorted({h // self.kv_groups for h in self.heads[layer]}))

    def kept_outputs(self, layer: int, role: str) -> torch.Tensor | None:
        """Output indices of the role's projection in ``layer`` that stay (None: all)."""
        if role in HEAD_OUTPUTS and layer in self.heads:
            return self._head_units(self.heads[layer])
        if role in KV_OUTPUTS and layer in self.heads:
            return self._head_units(self.kv_heads(layer))
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
        return json.dumps({"head_dim": self.head_dim, "kv_groups": self.kv_groups,
                           "heads": {str(k): list(v) for k, v in self.heads.items()},
                           "neurons": {str(k): list(v) for k, v in self.neurons.items()}})

    @classmethod
    def from_json(cls, text: str) -> PruningPlan:
        data = json.loads(text)
        # Plans saved before GQA support have no kv_groups: they were multi-head attention.
        return cls(int(data["head_dim"]), {int(k): tuple(v) for k, v in data["heads"].items()},
                   {int(k): tuple(v) for k, v in data["neurons"].items()}, int(data.get("kv_groups", 1)))

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
            _set_counts(layer.get_submodule(layout.roles["attn_q"].rpartition(".")[0]),
                        _head_counts(plan, index))
        if index in plan.neurons and "ffn_down" in layout.roles:
            _set_counts(layer.get_submodule(layout.roles["ffn_down"].rpartition(".")[0]),
                        {"intermediate_size": len(plan.neurons[index])})
    return model


def _head_counts(plan: PruningPlan, layer: int) -> dict[str, int]:
    """The attention module's head bookkeeping after pruning ``layer``."""
    heads, kv_heads = len(plan.heads[layer]), len(plan.kv_heads(layer))
    # LLaMA's attention repeats each key/value head num_key_value_groups times at forward time
    # (eager and SDPA alike), so that one must be right; the others are kept true for readers.
    return {"num_attention_heads": heads, "num_heads": heads, "all_head_size": heads * plan.head_dim,
            "num_key_value_heads": kv_heads, "num_key_value_groups": heads // kv_heads}


def _set_counts(module: nn.Module, counts: dict[str, int]) -> None:
    """Set those of ``counts`` that ``module`` has as integer attributes (it reads no others)."""
    for attr, value in counts.items():
        if isinstance(getattr(module, attr, None), int):
            setattr(module, attr, value)


def lowest(scores: torch.Tensor, share: float) -> torch.Tensor:
    """Indices of the ``round(share x n)`` lowest scores (a stable order breaks ties)."""
    count = round(share * scores.numel())
    return torch.argsort(scores.flatten(), stable=True)[:count]
