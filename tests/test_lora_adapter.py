"""Configurations map onto PEFT's LoraConfig; the built model has exactly the LoRA it says."""

from __future__ import annotations

import numpy as np
import torch
from peft import LoraConfig
from transformers import BertConfig, BertForSequenceClassification

from autopeft.adapters import BuildContext
from autopeft.trial.binding import get_adapter
from autopeft.models import model_layout
from autopeft.space import load_space

HIDDEN, FFN, LAYERS = 32, 64, 4
SHAPES = {"attn_q": (HIDDEN, HIDDEN), "attn_k": (HIDDEN, HIDDEN), "attn_v": (HIDDEN, HIDDEN),
          "attn_o": (HIDDEN, HIDDEN), "ffn_up": (HIDDEN, FFN), "ffn_down": (FFN, HIDDEN)}


def tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=100, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
        intermediate_size=FFN, num_labels=2))


def expected_lora_params(values: dict) -> int:
    """r x (in + out) per targeted linear in every kept layer."""
    total = 0
    for layer, keep in enumerate(values["layers"]):
        if keep:
            r = values["rank"][layer]
            total += sum(r * sum(SHAPES[role]) for role in values["target_modules"])
    return total


def test_layout_finds_layers_and_roles_of_bert() -> None:
    layout = model_layout(tiny_bert())
    assert layout.layers_path == "bert.encoder.layer"
    assert layout.num_layers == LAYERS
    assert layout.roles["ffn_down"] == "output.dense"
    assert layout.is_ambiguous("ffn_down") and not layout.is_ambiguous("attn_o")


def test_config_maps_to_lora_config_fields() -> None:
    layout = model_layout(tiny_bert())
    spec = load_space("lora")
    values = {"layers": [True, False, True, False], "rank": [2, None, 16, None],
              "target_modules": ["attn_q", "attn_v"], "alpha_multiplier": 2.0}
    config = get_adapter(spec).build(values, BuildContext(layout, "SEQ_CLS"))
    assert isinstance(config, LoraConfig)
    assert config.layers_to_transform == [0, 2]
    assert sorted(config.rank_pattern.values()) == [2, 16]
    assert sorted(config.alpha_pattern.values()) == [4.0, 32.0]
    assert set(config.target_modules) == {"attention.self.query", "attention.self.value"}


def test_built_model_has_exactly_the_sampled_lora_parameters() -> None:
    spec = load_space("lora")
    space = spec.bind(LAYERS)
    builder = get_adapter(spec)
    rng = np.random.default_rng(0)
    head = HIDDEN * 2 + 2  # the classifier, trained alongside (PEFT's modules_to_save)
    for _ in range(12):
        values = space.assemble(space.sample(rng))
        model = tiny_bert()
        layout = model_layout(model)
        peft_model = builder.apply(model, values, BuildContext(layout, "SEQ_CLS"))
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        assert trainable == expected_lora_params(values) + head, values
        assert builder.count_parameters(values, layout) == trainable
        # nothing outside the kept layers carries LoRA
        kept = {i for i, k in enumerate(values["layers"]) if k}
        for name, _ in peft_model.named_parameters():
            if "lora_A" in name:
                assert int(name.split("layer.")[1].split(".")[0]) in kept
