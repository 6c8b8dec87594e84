"""Light-PEFT on LLaMA-style decoders (tiny ``LlamaForCausalLM`` from a config): head pruning
keeps the query -> key/value grouping of grouped-query attention, the gated FFN loses whole
neurons, the pruned model computes what the masked one did, and base -> plan -> adapter
reloads it. Multi-head LLaMA (as many key/value heads as query heads) prunes per head."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from autopeft.trial.loading import ADAPTER_INFO, load_adapter
from autopeft.models import model_layout
from autopeft.strategies.base import StrategyContext
from autopeft.strategies.light_peft import LightPeft, LightPeftConfig, PruningPlan, apply_plan
from autopeft.strategies.light_peft.plan import lowest
from autopeft.strategies.light_peft.strategy import ESTIMATE, TRAIN, _keep, _keep_groups

LAYERS, HEADS, HEAD_DIM, HIDDEN, FFN, VOCAB = 2, 4, 16, 64, 128, 128
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_llama(kv_heads: int = 2, attn: str = "eager", seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer LLaMA with 4 query heads of 16 dims; weights large enough that every head
    and neuron visibly moves the logits (the default 0.02 init barely does)."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, num_key_value_heads=kv_heads, head_dim=HEAD_DIM,
                         tie_word_embeddings=True, attn_implementation=attn)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0.0, 0.3)
    return model.eval()


def _ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(seed))


def zeroed(model: LlamaForCausalLM, plan: PruningPlan) -> LlamaForCausalLM:
    """``model`` with the heads and neurons ``plan`` drops silenced in place, without slicing:
    the removed query heads' ``o_proj`` columns and the removed neurons' ``down_proj`` columns
    are zero (what masking them to 0 computes)."""
    with torch.no_grad():
        for index, layer in enumerate(model.model.layers):
            for head in set(range(HEADS)) - set(plan.heads.get(index, range(HEADS))):
                layer.self_attn.o_proj.weight[:, head * HEAD_DIM:(head + 1) * HEAD_DIM] = 0
            gone = sorted(set(range(FFN)) - set(plan.neurons.get(index, range(FFN))))
            layer.mlp.down_proj.weight[:, gone] = 0
    return model


# -- the plan on its own ---------------------------------------------------------------------

#: layer 0 keeps key/value group 1 (query heads 2, 3), layer 1 group 0; half the neurons go
GROUP_PLAN = PruningPlan(HEAD_DIM, {0: (2, 3), 1: (0, 1)},
                         {0: tuple(range(0, FFN, 2)), 1: tuple(range(FFN // 2, FFN))}, kv_groups=2)
#: one query head from every group: still uniform (1 query head per key/value head)
ONE_PER_GROUP_PLAN = PruningPlan(HEAD_DIM, {0: (1, 2), 1: (0, 3)}, {1: tuple(range(0, FFN, 3))}, kv_groups=2)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("plan", [GROUP_PLAN, ONE_PER_GROUP_PLAN], ids=["whole-groups", "one-per-group"])
def test_gqa_pruned_model_computes_what_the_zeroed_model_computes(plan: PruningPlan, attn: str) -> None:
    ids = _ids()
    with torch.no_grad():
        full = tiny_llama(attn=attn)(ids).logits
        expected = zeroed(tiny_llama(attn=attn), plan)(ids).logits
        model = tiny_llama(attn=attn)
        pruned = apply_plan(model, model_layout(model), plan)(ids).logits
    assert (expected - full).abs().max() > 0.1  # the removed heads and neurons mattered
    torch.testing.assert_close(pruned, expected, atol=1e-4, rtol=1e-4)


def test_gqa_pruned_shapes_and_bookkeeping_and_training() -> None:
    model = tiny_llama()
    apply_plan(model, model_layout(model), ONE_PER_GROUP_PLAN)
    first, second = model.model.layers
    # One query head per key/value head in layer 0: q and o lose 2 heads, k and v none.
    attn = first.self_attn
    assert attn.q_proj.weight.shape == (2 * HEAD_DIM, HIDDEN) and attn.o_proj.weight.shape == (HIDDEN, 2 * HEAD_DIM)
    assert attn.k_proj.weight.shape == attn.v_proj.weight.shape == (2 * HEAD_DIM, HIDDEN)
    assert attn.num_key_value_groups == 1 and second.self_attn.num_key_value_groups == 1
    assert first.mlp.gate_proj.weight.shape == (FFN, HIDDEN) and first.mlp.intermediate_size == FFN
    kept = len(range(0, FFN, 3))
    mlp = second.mlp
    assert mlp.gate_proj.weight.shape == mlp.up_proj.weight.shape == (kept, HIDDEN)
    assert mlp.down_proj.weight.shape == (HIDDEN, kept) and mlp.intermediate_size == kept

    model = tiny_llama()
    apply_plan(model, model_layout(model), GROUP_PLAN)
    for layer in model.model.layers:  # a whole group went: one key/value head and its 2 query heads
        attn = layer.self_attn
        assert attn.q_proj.weight.shape == (2 * HEAD_DIM, HIDDEN)
        assert attn.k_proj.weight.shape == attn.v_proj.weight.shape == (HEAD_DIM, HIDDEN)
        assert attn.num_key_value_groups == 2
    # Layer 0 keeps group 1: its k rows are the original key/value head 1.
    original = tiny_llama().model.layers[0].self_attn.k_proj.weight
    assert torch.equal(model.model.layers[0].self_attn.k_proj.weight, original[HEAD_DIM:])

    model.train()
    ids = _ids()
    loss = model(ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())
    # The key/value cache holds the pruned heads: one token at a time gives the full pass's logits.
    model.eval()
    with torch.no_grad():
        step = model(ids[:, :-1], use_cache=True)
        assert step.past_key_values.layers[0].keys.shape[1] == 1
        last = model(ids[:, -1:], past_key_values=step.past_key_values).logits[:, -1]
        torch.testing.assert_close(last, model(ids).logits[:, -1], atol=1e-4, rtol=1e-4)


def test_plans_that_would_break_the_grouping_are_refused() -> None:
    with pytest.raises(ValueError, match="unequal groups"):
        PruningPlan(HEAD_DIM, {0: (0, 2, 3)}, {}, kv_groups=2)  # group 0 keeps 1, group 1 keeps 2
    with pytest.raises(ValueError, match="sorted"):
        PruningPlan(HEAD_DIM, {0: (2, 0)}, {}, kv_groups=2)
    PruningPlan(HEAD_DIM, {0: (0, 2, 3)}, {}, kv_groups=1)  # multi-head: any subset


def test_gqa_heads_are_pruned_by_group_and_mha_heads_as_before() -> None:
    # Per head, the lowest two of layer 0 are heads 2 and 0; by group (means 0.55 and 0.5),
    # group 1 (heads 2, 3) goes.
    masks = torch.tensor([[0.5, 0.6, 0.1, 0.9], [0.9, 0.8, 0.7, 0.6]])
    assert _keep_groups(masks, 2, 0.5) == {0: (0, 1), 1: (0, 1)}
    assert _keep_groups(masks, 4, 0.5) == {0: (0, 1, 2, 3), 1: (0, 1, 2, 3)}  # one group: it stays
    for share in (0.25, 0.5, 0.75):  # groups of one: exactly the per-head rule
        assert _keep_groups(masks, 1, share) == {i: _keep(row, lowest(row, share)) for i, row in enumerate(masks)}


# -- the strategy, estimation to reload ------------------------------------------------------

def _estimate_and_prune(kv_heads: int, removed_heads: dict[int, list[int]]):
    """Run Light-PEFT's stages by hand on a tiny LLaMA with LoRA everywhere: masks set to 0
    for ``removed_heads`` and 64 random neurons, 1 elsewhere. Returns (the masked estimation
    model's logits, the strategy, the pruned training model, the input ids)."""
    base = tiny_llama(kv_heads)
    layout = model_layout(base)
    ctx = StrategyContext(layout=layout, device=torch.device("cpu"), seed=0, train_tokens=None, loader=None)
    config = LightPeftConfig(head_prune=0.5, neuron_prune=0.25, module_prune=0.0, rank_prune=0.0)
    strategy = LightPeft(config, ctx)
    strategy.before_wrap(ESTIMATE, base)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():  # LoRA B starts at zero: give every module a visible contribution
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.3, generator=generator)
    model = strategy.after_wrap(ESTIMATE, model).eval()
    with torch.no_grad():
        # Pruning follows the accumulated importance; the masks make the estimation model
        # compute what the pruned one will.
        strategy.head_importance.fill_(1.0)
        strategy.neuron_importance.fill_(1.0)
        for layer, heads in removed_heads.items():
            strategy.head_mask[layer, heads] = 0.0
            strategy.head_importance[layer, heads] = 0.0
        gone = torch.randperm(LAYERS * FFN, generator=torch.Generator().manual_seed(3))[:LAYERS * FFN // 4]
        strategy.neuron_mask.view(-1)[gone] = 0.0
        strategy.neuron_importance.view(-1)[gone] = 0.0
        ids = _ids()
        masked = model(ids).logits
    strategy.on_train_end(SimpleNamespace(model=model))
    pruned_base = strategy.before_wrap(TRAIN, tiny_llama(kv_heads))
    pruned = strategy.wrap(TRAIN, pruned_base, {}, SimpleNamespace(task_type="CAUSAL_LM"), None).eval()
    return masked, strategy, pruned, ids


def _save_and_reload(strategy: LightPeft, model: torch.nn.Module, kv_heads: int, tmp_path) -> torch.nn.Module:
    model.save_pretrained(tmp_path)
    strategy.save(model, tmp_path)
    (tmp_path / ADAPTER_INFO).write_text(json.dumps({"adapter": "lora", "strategy": "light_peft"}))
    return load_adapter(tiny_llama(kv_heads), tmp_path).eval()


def test_gqa_strategy_prunes_groups_trains_on_and_reloads(tmp_path) -> None:
    masked, strategy, pruned, ids = _estimate_and_prune(2, {0: [2, 3], 1: [0, 1]})
    plan = strategy.plan
    assert plan.kv_groups == 2 and plan.heads == {0: (0, 1), 1: (2, 3)}
    assert plan.kv_heads(0) == (0,) and plan.kv_heads(1) == (1,)
    assert sum(len(v) for v in plan.neurons.values()) == LAYERS * FFN * 3 // 4
    report = strategy.report()
    assert report["light_peft_heads_removed"] == 4 and report["light_peft_kv_heads_removed"] == 2
    assert report["light_peft_neurons_removed"] == LAYERS * FFN // 4
    # The pruned model, with the estimated LoRA sliced to it (k and v by key/value head),
    # computes what the masked estimation model computed.
    with torch.no_grad():
        torch.testing.assert_close(pruned(ids).logits, masked, atol=1e-4, rtol=1e-4)
    attn = pruned.base_model.model.model.layers[1].self_attn
    assert attn.k_proj.lora_B["default"].weight.shape == (HEAD_DIM, 4)
    assert attn.o_proj.lora_A["default"].weight.shape == (4, 2 * HEAD_DIM)
    # base -> plan -> adapter gives the same model back.
    text = plan.to_json()
    assert PruningPlan.from_json(text) == plan and json.loads(text)["kv_groups"] == 2
    reloaded = _save_and_reload(strategy, pruned, 2, tmp_path)
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, pruned(ids).logits)
    # Importances where the lowest heads (2 and 0 in layer 0) are not a group: the group with
    # the lower mean goes whole.
    with torch.no_grad():
        strategy.head_importance.copy_(torch.tensor([[0.5, 0.6, 0.1, 0.9], [0.9, 0.8, 0.7, 0.6]]))
    assert strategy._prune_base().heads == {0: (0, 1), 1: (0, 1)}


def test_mha_llama_prunes_single_heads_and_reloads(tmp_path) -> None:
    masked, strategy, pruned, ids = _estimate_and_prune(HEADS, {0: [1, 2], 1: [0, 3]})
    plan = strategy.plan
    assert plan.kv_groups == 1 and plan.heads == {0: (0, 3), 1: (1, 2)}
    assert "light_peft_kv_heads_removed" not in strategy.report()
    with torch.no_grad():
        torch.testing.assert_close(pruned(ids).logits, masked, atol=1e-4, rtol=1e-4)
    attn = pruned.base_model.model.model.layers[0].self_attn
    assert attn.k_proj.base_layer.weight.shape == (2 * HEAD_DIM, HIDDEN) and attn.num_key_value_groups == 1
    reloaded = _save_and_reload(strategy, pruned, HEADS, tmp_path)
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, pruned(ids).logits)


def test_plans_saved_before_gqa_support_load_as_multi_head() -> None:
    old = json.dumps({"head_dim": 16, "heads": {"0": [0, 1]}, "neurons": {"1": [2, 5]}})
    plan = PruningPlan.from_json(old)
    assert plan == PruningPlan(16, {0: (0, 1)}, {1: (2, 5)}) and plan.kv_groups == 1
