"""Bottleneck adapters and the AutoPEFT SAPA builder: placement, formula, parameter count, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import (BertConfig, BertForSequenceClassification, LlamaConfig,
                          LlamaForSequenceClassification)

from autopeft.adapters import BuildContext
from autopeft.trial.binding import get_adapter
from autopeft.adapters.bottleneck import (ATTRIBUTE, BottleneckConfig, FFNAdapters, bottleneck_state_dict,
                                          insert_bottlenecks, load_bottlenecks, save_bottlenecks)
from autopeft.adapters.sapa import (OFF_K, head_modules, head_parameter_count, module_size,
                                    sapa_parameter_count, sapa_plan)
from autopeft.config import DataConfig, SearchConfig
from autopeft.errors import SpaceError
from autopeft.models import model_layout
from autopeft.driver.setup import prepare
from autopeft.space import load_space
from autopeft.config import Fidelity
from autopeft.trial.run import evaluate_adapter, run_trial

HIDDEN, LAYERS = 32, 4


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(
        vocab_size=100, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
        intermediate_size=64, num_labels=2))


def tiny_llama(seed: int = 0, kv_heads: int | None = None) -> LlamaForSequenceClassification:
    torch.manual_seed(seed)
    heads = 2 if kv_heads is None else 4
    return LlamaForSequenceClassification(LlamaConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=heads,
        num_key_value_heads=kv_heads, intermediate_size=64, pad_token_id=0, num_labels=2))


def batch(seed: int = 0, size: int = 4, length: int = 9) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (size, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0  # some padding: prefix and adapters must respect the mask alike
    ids[0, -3:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.arange(size) % 2}


def logits(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in inputs.items() if k != "labels"}).logits


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def sapa_values(keep: list[bool], serial: int = OFF_K, parallel: int = OFF_K, prefix: int = OFF_K) -> dict:
    return {"layers": keep, "serial_k": serial, "parallel_k": parallel, "prefix_k": prefix}


def test_sizes_halve_per_step_and_the_largest_k_is_off() -> None:
    assert [module_size(k, 768) for k in range(OFF_K + 1)] == [768, 384, 192, 96, 48, 24, 12, 6, 3, 1, 0]
    assert [module_size(k, 32) for k in (0, 4, 5, 9)] == [32, 2, 1, 1]
    assert module_size(np.int64(2), 32) == 8 and module_size(None, 32) == 0
    with pytest.raises(SpaceError, match="0..10"):
        module_size(11, 32)


def test_invalid_configurations_are_refused() -> None:
    layout = model_layout(tiny_bert())
    with pytest.raises(SpaceError, match="at least one must be on"):
        sapa_plan(sapa_values([True] * LAYERS), layout)
    with pytest.raises(SpaceError, match="no layer is kept"):
        sapa_plan(sapa_values([False] * LAYERS, serial=1), layout)
    space = load_space("autopeft_sapa").bind(LAYERS)
    config = space.sample(np.random.default_rng(0))
    assert not space.is_valid({**config, "serial_k": OFF_K, "parallel_k": OFF_K, "prefix_k": OFF_K})


@pytest.mark.parametrize("make", [tiny_bert, tiny_llama])
def test_inserted_adapters_start_as_the_identity(make) -> None:
    model = make()
    inputs = batch()
    before = logits(model, inputs)
    layout = model_layout(model)
    inserted = insert_bottlenecks(model, layout, BottleneckConfig(tuple(range(layout.num_layers)), 4, 8))
    assert len(inserted) == layout.num_layers
    assert torch.equal(logits(model, inputs), before)


def test_adapted_ffn_computes_serial_plus_scaled_parallel() -> None:
    """On LLaMA's MLP: y' = y + S(y) + s * P(x), x the MLP input, y the down projection's output."""
    model = tiny_llama()
    layout = model_layout(model)
    assert (layout.roles["ffn_up"], layout.roles["ffn_down"]) == ("mlp.up_proj", "mlp.down_proj")
    mlp = model.model.layers[1].mlp
    x = torch.randn(2, 5, 32)
    y = mlp(x).detach()
    (adapters,) = insert_bottlenecks(model, layout, BottleneckConfig((1,), 3, 5, parallel_scale=2.5))
    for p in adapters.parameters():
        torch.nn.init.normal_(p)
    with torch.no_grad():
        expected = y + adapters.serial(y) + 2.5 * adapters.parallel(x)
        assert torch.allclose(mlp(x), expected, atol=1e-5)
        adapters.detach()
        assert torch.allclose(mlp(x), y)


def test_bert_adapters_sit_in_the_ffn_of_kept_layers_only() -> None:
    model = tiny_bert()
    insert_bottlenecks(model, model_layout(model), BottleneckConfig((0, 2), serial_size=4))
    names = [n for n, m in model.named_modules() if isinstance(m, FFNAdapters)]
    assert names == [f"bert.encoder.layer.{i}.{ATTRIBUTE}" for i in (0, 2)]
    # the base model's own parameter names are untouched (its checkpoint still loads)
    assert "bert.encoder.layer.0.output.dense.weight" in model.state_dict()


def test_sapa_parameter_count_equals_the_built_models_trainable_parameters() -> None:
    spec = load_space("autopeft_sapa")
    space = spec.bind(LAYERS)
    builder = get_adapter(spec)
    rng = np.random.default_rng(0)
    base = tiny_bert()
    layout = model_layout(base)
    head = head_parameter_count(base)
    assert head_modules(base) == ["classifier"] and head == HIDDEN * 2 + 2
    state = base.state_dict()
    differences, prefix_seen = [], set()
    for _ in range(60):
        values = space.assemble(space.sample(rng))
        model = BertForSequenceClassification(base.config)
        model.load_state_dict(state)
        built = builder.apply(model, values, BuildContext(layout, "SEQ_CLS"))
        prefix_on = values["prefix_k"] < OFF_K
        prefix_seen.add(prefix_on)
        differences.append(abs(trainable(built) - sapa_parameter_count(values, layout, head)))
        kept = {i for i, k in enumerate(values["layers"]) if k}
        for name, p in built.named_parameters():
            if p.requires_grad and (ATTRIBUTE in name or ".prefix." in name):
                # every module, the prefix included, in the kept layers only (AutoPEFT's placement)
                assert int(name.split("layer.")[1].split(".")[0]) in kept, (name, values)
            elif p.requires_grad:
                assert "classifier" in name, name
    print(f"SAPA parameter count: {len(differences)} configurations, max difference {max(differences)}")
    assert prefix_seen == {True, False}
    assert max(differences) == 0


def _train(model: torch.nn.Module, steps: int = 5) -> None:
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(steps):
        loss = model(**batch(seed=step)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("prefix_k", [3, OFF_K], ids=["prefix-on", "prefix-off"])
def test_saved_adapter_loads_onto_a_fresh_base_with_the_same_logits(tmp_path, prefix_k: int) -> None:
    builder = get_adapter(load_space("autopeft_sapa"))
    values = sapa_values([True, False, True, True], serial=2, parallel=3, prefix=prefix_k)
    base = tiny_bert()
    inputs = batch(seed=99)
    untrained = logits(base, inputs)
    model = builder.apply(base, values, BuildContext(model_layout(base), "SEQ_CLS"))
    _train(model)
    trained = logits(model, inputs)
    assert not torch.allclose(trained, untrained)
    builder.save(model, tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"bottleneck_config.json", "bottleneck_model.safetensors"} <= files
    assert "head_model.safetensors" in files
    assert ({"prefix_config.json", "prefix_model.safetensors"} <= files) == (prefix_k < OFF_K)
    fresh = tiny_bert()
    torch.nn.init.normal_(fresh.classifier.weight)  # a fresh head differs: the trained one must load
    loaded = builder.load(fresh, tmp_path)
    assert torch.allclose(logits(loaded, inputs), trained, atol=1e-6)
    assert trainable(loaded) == 0
    # the bottlenecks were trained (no longer the identity) and came back as they were
    weights, reloaded = bottleneck_state_dict(base), bottleneck_state_dict(fresh)
    assert weights.keys() == reloaded.keys() and all(torch.equal(weights[k], reloaded[k]) for k in weights)
    assert all(weights[k].abs().sum() > 0 for k in weights if ".up.weight" in k)


def test_llama_insertion_count_prefix_and_reload(tmp_path) -> None:
    builder = get_adapter(load_space("autopeft_sapa"))
    base = tiny_llama()
    layout = model_layout(base)
    head = head_parameter_count(base)
    assert head_modules(base) == ["score"] and head == 32 * 2  # LLaMA's score has no bias
    for values in (sapa_values([True, False], serial=1), sapa_values([False, True], parallel=0),
                   sapa_values([True, True], serial=5, parallel=9, prefix=2),
                   sapa_values([True, False], prefix=0)):
        model = builder.apply(tiny_llama(), values, BuildContext(layout, "SEQ_CLS"))
        assert trainable(model) == sapa_parameter_count(values, layout, head), values
    # grouped-query attention: the prefix has one key and value per key/value head (2 x 8 wide)
    gqa = tiny_llama(kv_heads=2)
    gqa_layout = model_layout(gqa)
    assert gqa_layout.prefix_width == 16
    values = sapa_values([True, False], serial=2, prefix=3)
    model = builder.apply(gqa, values, BuildContext(gqa_layout, "SEQ_CLS"))
    assert trainable(model) == sapa_parameter_count(values, gqa_layout, head)
    # the prefix reaches LLaMA's (causal) attention: changing it changes the logits
    values = sapa_values([True, True], serial=3, prefix=3)
    model = builder.apply(base, values, BuildContext(layout, "SEQ_CLS"))
    inputs = batch(seed=5)
    _train(model, steps=3)
    trained = logits(model, inputs)
    with torch.no_grad():
        key = model.model.layers[0].self_attn.prefix.key
        saved = key.clone()
        key.add_(1.0)
        assert not torch.allclose(logits(model, inputs), trained)
        key.copy_(saved)
    builder.save(model, tmp_path)
    loaded = builder.load(tiny_llama(), tmp_path)
    assert torch.allclose(logits(loaded, inputs), trained, atol=1e-6)


def test_bottleneck_files_round_trip(tmp_path) -> None:
    model = tiny_bert()
    layout = model_layout(model)
    config = BottleneckConfig((1, 3), serial_size=0, parallel_size=2, parallel_scale=1.0)
    (first, _) = insert_bottlenecks(model, layout, config)
    torch.nn.init.normal_(first.parallel.up.weight)
    save_bottlenecks(model, config, tmp_path)
    fresh = tiny_bert()
    assert load_bottlenecks(fresh, layout, tmp_path) == config
    inputs = batch()
    assert torch.equal(logits(fresh, inputs), logits(model, inputs))


def test_a_sapa_trial_trains_saves_and_scores_the_same_after_reload(tiny_model_dir, sentiment_csv,
                                                                    tmp_path) -> None:
    """Through the search's own trial code: build, train, count, save, reload on a fresh base."""
    config = SearchConfig(model=str(tiny_model_dir), task="classification", optimizer="random",
                          space="autopeft_sapa", fixed={"serial_k": 3, "parallel_k": 4, "prefix_k": 3},
                          data=DataConfig(train_file=str(sentiment_csv), text_column="review",
                                          label_column="verdict"),
                          fidelity=Fidelity(max_train_examples=64, epochs=1, max_length=24, batch_size=16))
    setup, optimizer = prepare(config)
    trial_config = optimizer.ask()
    result = run_trial(setup, trial_config, save_to=tmp_path / "adapter")
    values = setup.space.assemble(trial_config)
    base = setup.task.load_model(setup.model_path, setup.data)
    head = head_parameter_count(base)
    assert result.cost["trainable_params"] == sapa_parameter_count(values, setup.layout, head)
    reloaded = evaluate_adapter(setup, tmp_path / "adapter", setup.data.dev)
    assert reloaded.metrics["accuracy"] == pytest.approx(result.objectives["accuracy"])


def test_builder_count_matches_the_built_model_through_the_layout() -> None:
    """The count the search uses for constraints (layout-based) is the built model's."""
    from autopeft.adapters import BuildContext
    from autopeft.trial.binding import get_adapter
    from autopeft.models import model_layout
    from autopeft.space import load_space

    spec = load_space("autopeft_sapa")
    builder = get_adapter(spec)
    rng = np.random.default_rng(7)
    for _ in range(10):
        model = tiny_bert()
        layout = model_layout(model)
        space = spec.bind(layout.num_layers, derive=lambda v: {})
        values = space.assemble(space.sample(rng))
        built = builder.apply(model, values, BuildContext(layout, "SEQ_CLS"))
        assert builder.count_parameters(values, layout) == sum(
            p.numel() for p in built.parameters() if p.requires_grad)


def _positionless(make):
    """The tiny model with no position information at all: PEFT's prefix tuning shifts the
    inputs' positions by the prefix length (and ignores ``position_ids``); the per-layer prefix
    does not. Without positions the two must agree exactly."""
    def build():
        model = make()
        if hasattr(model, "bert"):
            torch.nn.init.zeros_(model.bert.embeddings.position_embeddings.weight)
        else:  # rotary embeddings with no rotation
            model.model.rotary_emb.inv_freq.zero_()
            model.model.rotary_emb.original_inv_freq.zero_()
        return model
    return build


@pytest.mark.parametrize("make", [tiny_bert, tiny_llama], ids=["bert", "llama"])
def test_per_layer_prefix_on_every_layer_computes_what_pefts_prefix_tuning_does(make) -> None:
    # PEFT's prefix tuning (every layer) is the reference: with the same key and value vectors
    # the per-layer prefix gives the same logits, padding (BERT) and causal masks (LLaMA) alike.
    from peft import PrefixTuningConfig, get_peft_model

    from autopeft.adapters.prefix import insert_prefixes

    make = _positionless(make)
    tokens, inputs = 3, batch(seed=4)
    reference = get_peft_model(make(), PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=tokens))
    embedding = reference.prompt_encoder["default"].embedding.weight
    with torch.no_grad():
        embedding.normal_(0, 0.5)
    ours = make()
    layout = model_layout(ours)
    prefixes = insert_prefixes(ours, layout, tuple(range(layout.num_layers)), tokens)
    heads, head_dim = prefixes[0].key.shape[0], prefixes[0].key.shape[2]
    # PEFT's layout: tokens x (layers x 2) x kv heads x head dim, key before value per layer.
    vectors = embedding.detach().view(tokens, 2 * layout.num_layers, heads, head_dim).permute(1, 2, 0, 3)
    with torch.no_grad():
        for i, prefix in enumerate(prefixes):
            prefix.key.copy_(vectors[2 * i])
            prefix.value.copy_(vectors[2 * i + 1])
    moved = (logits(ours, inputs) - logits(make(), inputs)).abs().max()
    apart = (logits(ours, inputs) - logits(reference, inputs)).abs().max()
    assert moved > 1e-4 and apart < 1e-6, (moved, apart)


def test_no_two_sapa_configurations_build_the_same_model() -> None:
    # Before: on a narrow model several log2 sizes gave the same width (k = 5..9 all give 1
    # on this 32-wide model), so the optimizer could pay for one model several times.
    from autopeft.trial.binding import _Identity

    spec = load_space("autopeft_sapa")
    base = tiny_bert()
    layout = model_layout(base)
    builder = get_adapter(spec)
    space = spec.bind(LAYERS, identity=_Identity(builder, layout))
    rng = np.random.default_rng(0)
    models: dict[tuple, set] = {}
    for _ in range(300):
        # a few learning rates, so that equal models with equal training come up
        config = {**space.sample(rng), "learning_rate": float(rng.choice([1e-3, 2e-3]))}
        values = space.assemble(config)
        plan = sapa_plan(values, layout)
        # what the builder builds from it, and how it trains
        built = (plan.bottleneck, plan.prefix_tokens, values["learning_rate"])
        models.setdefault(built, set()).add(space.key(config))
    assert len(models) > 100 and sum(len(keys) for keys in models.values()) == len(models)
