"""Finding a base model and the parts of it that adapters attach to.

Adapters are placed by role (``attn_q``, ``ffn_down``, ...) and by layer index, so one
search-space file fits BERT-style and LLaMA-style models alike; this module maps roles to
the model's own module names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from autopeft.errors import ModelError

#: role -> module paths inside one transformer layer, across common architectures
ROLE_PATHS: dict[str, tuple[str, ...]] = {
    "attn_q": ("attention.self.query", "attention.self.query_proj", "self_attn.q_proj", "attn.q_proj",
               "attention.q_lin"),
    "attn_k": ("attention.self.key", "attention.self.key_proj", "self_attn.k_proj", "attn.k_proj",
               "attention.k_lin"),
    "attn_v": ("attention.self.value", "attention.self.value_proj", "self_attn.v_proj", "attn.v_proj",
               "attention.v_lin"),
    "attn_o": ("attention.output.dense", "self_attn.o_proj", "attn.out_proj", "attention.out_lin",
               "self_attn.dense"),
    "ffn_gate": ("mlp.gate_proj",),
    "ffn_up": ("intermediate.dense", "mlp.up_proj", "mlp.fc1", "ffn.lin1", "mlp.dense_h_to_4h"),
    "ffn_down": ("output.dense", "mlp.down_proj", "mlp.fc2", "ffn.lin2", "mlp.dense_4h_to_h"),
}


#: PEFT trains the modules whose names end so with every adapter of a classification model
PEFT_HEAD_SUFFIXES = ("classifier", "score")
#: where :func:`mark_new_modules` keeps, on a loaded model, the modules its checkpoint lacked
NEW_MODULES = "_autopeft_new_modules"


@dataclass(frozen=True)
class ModelLayout:
    """Where a model's transformer layers are and what each role is called inside one."""

    layers_path: str                  # e.g. "bert.encoder.layer"
    num_layers: int
    roles: dict[str, str]             # role -> path inside a layer, e.g. "attention.self.query"
    linear_paths: tuple[str, ...]     # every nn.Linear path inside a layer
    hidden_size: int
    num_parameters: int               # base model parameters, task head included
    #: (in_features, out_features) of every linear path inside a layer
    linear_shapes: dict[str, tuple[int, int]] = field(default_factory=dict)
    head_parameters: int = 0          # the task head's parameters (trained with any adapter)
    prefix_width: int = 0             # width of one layer's key (or value) prefix, as PEFT sizes it
    #: the task head's modules, trained with every adapter (:func:`head_modules`)
    head_modules: tuple[str, ...] = ()

    def module_name(self, layer: int, role: str) -> str:
        return f"{self.layers_path}.{layer}.{self.roles[role]}"

    def is_ambiguous(self, role: str) -> bool:
        """True when the role's path is also a suffix of another module in the layer (BERT's
        ``output.dense`` ends ``attention.output.dense``), so it cannot be targeted by suffix."""
        path = self.roles[role]
        return any(p != path and p.endswith(f".{path}") for p in self.linear_paths)

    def layer_regex(self, layer: int) -> str:
        """A PEFT pattern key matching every module of one layer (for rank/alpha patterns)."""
        return rf"{re.escape(self.layers_path)}\.{layer}\..*"


def mark_new_modules(model: torch.nn.Module, missing_keys: Iterable[str]) -> torch.nn.Module:
    """Note on ``model`` which modules its checkpoint did not provide (``from_pretrained``'s
    missing keys): the new task head, and DeBERTa's pooler, which a base checkpoint lacks."""
    prefix = getattr(model, "base_model_prefix", "")
    names = set()
    for key in missing_keys:
        parts = key.split(".")
        # Inside the base model, the missing submodule (its pooler), never the whole base.
        depth = 2 if parts[0] == prefix and len(parts) > 2 else 1
        names.add(".".join(parts[:depth]))
    setattr(model, NEW_MODULES, sorted(names))
    return model


def head_modules(model: torch.nn.Module) -> list[str]:
    """The task head that trains with every adapter: the modules the checkpoint did not
    provide (freshly initialised, see :func:`mark_new_modules`) and those PEFT trains anyway
    (names ending in ``classifier`` or ``score``: DistilBERT's ``pre_classifier`` too).

    One rule for what trains (every builder hands these to PEFT as ``modules_to_save``; SAPA
    unfreezes them) and for what parameter counts include. Outermost module names only."""
    names = set(getattr(model, NEW_MODULES, ()))
    names |= {name for name, _ in model.named_modules() if name.endswith(PEFT_HEAD_SUFFIXES)}
    return sorted(n for n in names if not any(n.startswith(f"{o}.") for o in names))


def key_value_width(model_config: object) -> int:
    """Width of one layer's key (or value) projection output: the hidden size, or
    ``head_dim x num_key_value_heads`` for models with grouped-query attention."""
    hidden = getattr(model_config, "hidden_size", None) or getattr(model_config, "d_model")
    kv_heads = getattr(model_config, "num_key_value_heads", None)
    if kv_heads is None:
        return int(hidden)
    head_dim = getattr(model_config, "head_dim", None) or hidden // model_config.num_attention_heads
    return int(head_dim * kv_heads)


def find_layers(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The longest ModuleList of identical blocks that hold linear layers: the transformer layers."""
    best: tuple[str, torch.nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or len(module) == 0:
            continue
        if len({type(m) for m in module}) != 1:
            continue
        if not any(isinstance(m, torch.nn.Linear) for m in module[0].modules()):
            continue
        if best is None or len(module) > len(best[1]):
            best = (name, module)
    if best is None:
        raise ModelError(f"cannot find the transformer layers of {type(model).__name__}")
    return best


def model_layout(model: torch.nn.Module) -> ModelLayout:
    """The layout of ``model`` (the task model, so paths match what PEFT sees)."""
    layers_path, layers = find_layers(model)
    shapes = {n: (m.in_features, m.out_features) for n, m in layers[0].named_modules()
              if isinstance(m, torch.nn.Linear)}
    linear = tuple(shapes)
    roles = {}
    for role, candidates in ROLE_PATHS.items():
        for path in candidates:
            if path in linear:
                roles[role] = path
                break
    config = getattr(model, "config", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", 0)
    head = head_modules(model)
    head_params = {id(p): p.numel() for name in head for p in model.get_submodule(name).parameters()}
    return ModelLayout(layers_path, len(layers), roles, linear, int(hidden),
                       sum(p.numel() for p in model.parameters()), shapes, sum(head_params.values()),
                       key_value_width(config) if config is not None else int(hidden), tuple(head))
