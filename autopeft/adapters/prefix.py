"""Per-layer prefix tuning: learned keys and values that the attention of chosen layers
attends to before the input's own positions (Li and Liang 2021), placed layer by layer as
AutoPEFT's space places every module.

PEFT's prefix tuning cannot leave a layer out: it hands the model a key/value cache for
every layer, and one attention mask serves them all. Here a layer's prefix is a module on
that layer's attention (``prefix``), and a wrapper around transformers' SDPA attention
function prepends it to the keys and values and widens that layer's mask. The wrapper is
registered under the name ``sdpa`` through transformers' ``AttentionInterface`` (its public
way to provide an attention function) and calls the original function unchanged for every
module without a prefix, so other models in the process compute exactly what they did.

A prefix of ``n`` tokens on a layer has ``n x 2 x kv_width`` parameters (keys and values,
``kv_width = head_dim x num_key_value_heads``), as PEFT's has per layer (without PEFT's
optional reparameterisation MLP). Its values start at 0 and its keys small (normal, std
0.02): the prefix then adds attention mass but no value, so it starts close to the identity.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.modeling_utils import AttentionInterface

from autopeft.models import ModelLayout

#: attribute name of the prefix on an attention module
ATTRIBUTE = "prefix"
_ORIGINAL_SDPA = AttentionInterface._global_mapping["sdpa"]


class LayerPrefix(nn.Module):
    """``tokens`` learned key and value vectors per key/value head of one attention layer."""

    def __init__(self, tokens: int, kv_heads: int, head_dim: int, *, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.key = nn.Parameter(torch.randn(kv_heads, tokens, head_dim, device=device, dtype=dtype) * 0.02)
        self.value = nn.Parameter(torch.zeros(kv_heads, tokens, head_dim, device=device, dtype=dtype))

    @property
    def tokens(self) -> int:
        return self.key.shape[1]


def prefixed_sdpa(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """transformers' SDPA attention with ``module``'s prefix (if any) before the keys and
    values. Shapes: query ``b x h x q x d``, key and value ``b x h_kv x k x d``, mask ``b x 1 x
    q x k`` (bool: True attends; float: 0 attends) or None."""
    prefix = module._modules.get(ATTRIBUTE) if hasattr(module, "_modules") else None
    if not isinstance(prefix, LayerPrefix):
        return _ORIGINAL_SDPA(module, query, key, value, attention_mask, **kwargs)
    batch, tokens, q_len, kv_len = key.shape[0], prefix.tokens, query.shape[2], key.shape[2]
    key = torch.cat([prefix.key.to(key.dtype).expand(batch, -1, -1, -1), key], dim=2)
    value = torch.cat([prefix.value.to(value.dtype).expand(batch, -1, -1, -1), value], dim=2)
    causal = kwargs.pop("is_causal", None)
    causal = getattr(module, "is_causal", False) if causal is None else causal
    if attention_mask is None and causal and q_len > 1:
        # SDPA's own causal flag aligns the mask top-left, which a prefix shifts: spell it out
        # (query i sees the prefix and input keys up to its own position).
        visible = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)
        attention_mask = visible.view(1, 1, q_len, kv_len)
    if attention_mask is not None:
        attend = True if attention_mask.dtype == torch.bool else 0.0
        pad = attention_mask.new_full((*attention_mask.shape[:-1], tokens), attend)
        attention_mask = torch.cat([pad, attention_mask], dim=-1)
    return _ORIGINAL_SDPA(module, query, key, value, attention_mask, is_causal=False, **kwargs)


AttentionInterface.register("sdpa", prefixed_sdpa)


def attention_module(layer: nn.Module, layout: ModelLayout) -> nn.Module:
    """The module of one transformer layer that calls the attention function (the parent of
    its query projection)."""
    return layer.get_submodule(layout.roles["attn_q"].rpartition(".")[0])


def insert_prefixes(model: nn.Module, layout: ModelLayout, layers: tuple[int, ...], tokens: int
                    ) -> list[LayerPrefix]:
    """Add a ``tokens``-long trainable prefix to the attention of each of ``layers`` of
    ``model`` (the task model ``layout`` describes), in place."""
    if tokens <= 0 or not layers:
        return []
    config = getattr(model, "config", None)
    implementation = getattr(config, "_attn_implementation", "sdpa")
    if implementation != "sdpa":
        raise ValueError(f"the per-layer prefix needs the model's attention to run as 'sdpa', not "
                         f"{implementation!r} (load it with attn_implementation='sdpa')")
    heads = int(getattr(config, "num_attention_heads"))
    head_dim = layout.linear_shapes[layout.roles["attn_q"]][1] // heads
    kv_heads = layout.prefix_width // head_dim
    stack = model.get_submodule(layout.layers_path)
    out = []
    for index in sorted(layers):
        attention = attention_module(stack[index], layout)
        weight = attention.get_submodule(layout.roles["attn_q"].rpartition(".")[2]).weight
        prefix = LayerPrefix(tokens, kv_heads, head_dim, device=weight.device, dtype=weight.dtype)
        attention.add_module(ATTRIBUTE, prefix)
        out.append(prefix)
    return out


def prefix_parameters(layers: int, tokens: int, kv_width: int) -> int:
    """Parameters of ``tokens``-long prefixes on ``layers`` layers: keys and values."""
    return layers * tokens * 2 * kv_width
