"""The causal-LM task on a tiny LLaMA: prompt masking, chat formatting, exact match from
greedy generation, and every adapter method and strategy building, training, generating and
reloading on a decoder with grouped-query attention."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from peft import PeftModel

from autopeft.trial.binding import get_adapter
from autopeft.adapters.peft_family import METHODS
from autopeft.config import DataConfig, Fidelity, SearchConfig
from autopeft.driver.setup import prepare
from autopeft.errors import DataError, ObjectiveError
from autopeft.tasks import DataSource, make_task
from autopeft.tasks.causal_lm import IGNORE, greedy_answers, normalize_answer
from autopeft.training.loop import Hyperparameters, planned_steps, train
from autopeft.trial.run import build_model, loader, run_trial

from conftest import write_answers_csv


@pytest.fixture(scope="module")
def answers_csv(tmp_path_factory):
    return write_answers_csv(tmp_path_factory.mktemp("answers") / "qa.csv", rows=200)


@pytest.fixture(scope="module")
def lm_setups(tiny_llama_dir, answers_csv):
    def make(space: str = "lora", chat: bool = True, train_examples: int = 48, **fixed):
        config = SearchConfig(model=str(tiny_llama_dir), task="causal_lm", optimizer="random", space=space,
                              fixed=fixed, objectives=["exact_match", "trainable_percent"],
                              data=DataConfig(train_file=str(answers_csv), prompt_column="question",
                                              response_column="answer", chat_template=chat),
                              fidelity=Fidelity(max_train_examples=train_examples, max_length=40, batch_size=8,
                                                max_eval_examples=16))
        return prepare(config)

    return make


def test_prompt_tokens_are_masked_and_the_response_ends_with_eos(lm_setups) -> None:
    setup, _ = lm_setups()
    task = setup.task
    tokenizer = task.load_tokenizer(setup.model_path)
    example = setup.train_tokens[0]
    labels = np.array(example["labels"])
    answer = labels[labels != IGNORE].tolist()
    assert answer[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(answer[:-1]) in ("positive", "negative")
    # The prompt is the chat-formatted question, masked; the answer follows it directly.
    start = len(labels) - len(answer)
    assert (labels[:start] == IGNORE).all() and example["input_ids"][start:] == answer
    prompt = tokenizer.decode(example["input_ids"][:start])
    assert prompt.startswith("user says the") and prompt.endswith("[SEP] assistant says")


def test_a_long_example_keeps_its_answer_and_both_ends_of_its_prompt(tiny_llama_dir) -> None:
    from datasets import Dataset

    task = make_task("causal_lm")
    task.chat_template = True
    tokenizer = task.load_tokenizer(str(tiny_llama_dir))
    split = Dataset.from_dict({"prompt": ["word " * 100 + "final question?", "short question?"],
                               "response": ["yes", "answer " * 100]})
    long_prompt, long_answer = task.tokenize(split, tokenizer, max_length=16)
    assert len(long_prompt["input_ids"]) == 16 and long_prompt["labels"][:-2] == [IGNORE] * 14
    assert tokenizer.decode(long_prompt["input_ids"][-2:]) == "yes [SEP]"
    prompt = tokenizer.decode(long_prompt["input_ids"][:-2])
    assert prompt.startswith("user says word") and prompt.endswith("question? [SEP] assistant says")
    # A response too long keeps its start, after the whole (short) prompt, and no end of sequence.
    assert len(long_answer["input_ids"]) == 16
    answer = [t for t in long_answer["labels"] if t != IGNORE]
    assert tokenizer.decode(answer) == " ".join(["answer"] * len(answer)) and tokenizer.eos_token_id not in answer
    assert tokenizer.decode(long_answer["input_ids"][:16 - len(answer)]).endswith("assistant says")


def test_exact_match_is_scored_from_greedy_generation(lm_setups) -> None:
    """Batched, left-padded, cached generation gives each prompt's greedy answer: the argmax
    continuation computed one prompt at a time by full forward passes."""
    setup, optimizer = lm_setups()
    tokenizer = setup.task.load_tokenizer(setup.model_path)
    model = setup.task.load_model(setup.model_path, setup.data).eval()
    batch = next(iter(loader(setup.dev_tokens, tokenizer, 8, False, 0, setup.task.collator(tokenizer))))
    # Answers of one token and the end of sequence: evaluation generates 2 tokens at most.
    answers = greedy_answers(model, batch, 2, tokenizer.eos_token_id, tokenizer.pad_token_id)
    for i, row in enumerate(batch["input_ids"]):
        x = row[: int((batch["labels"][i] != IGNORE).nonzero()[0])][None]
        expected = []
        with torch.no_grad():
            for _ in range(2):
                token = int(model(input_ids=x).logits[0, -1].argmax())
                if token == tokenizer.eos_token_id:
                    break
                expected.append(token)
                x = torch.cat([x, torch.tensor([[token]])], 1)
        assert answers[i] == expected
    evaluation = setup.task.evaluate(model, [batch], tokenizer)
    # The split's loss is transformers' own: the mean over response tokens, the prompt masked.
    with torch.no_grad():
        assert evaluation.loss == pytest.approx(float(model(**batch).loss), rel=1e-5)
    assert evaluation.generations == [tokenizer.decode(a) for a in answers]
    assert len(evaluation.references) == 8 and set(evaluation.references) <= {"positive", "negative"}
    assert evaluation.metrics["exact_match"] == np.mean([g.strip() == r for g, r in
                                                         zip(evaluation.generations, evaluation.references)])


def test_training_teaches_the_answers(lm_setups) -> None:
    """A LoRA trial takes dev exact match from chance to most answers right."""
    setup, optimizer = lm_setups(train_examples=160, layers=[True] * 4, rank=[8] * 4, alpha_multiplier=2,
                                 target_modules=["attn_q", "attn_v", "ffn_up", "ffn_down"], learning_rate=5e-3)
    setup.fidelity.epochs = 6
    result = run_trial(setup, optimizer.ask(), keep_model=True)
    assert result.metrics["exact_match"] >= 0.8, result.curves
    assert result.curves[-1]["dev_loss"] < result.curves[0]["dev_loss"]
    assert result.cost["peak_memory_mb"] > 0
    # Answers read off the teacher-forced pass (where greedy decoding reproduces the
    # reference) are what generating every answer gives.
    task, tokenizer, model = setup.task, setup.task.load_tokenizer(setup.model_path), result.model.eval()
    batch = next(iter(loader(setup.dev_tokens, tokenizer, 16, False, 0, task.collator(tokenizer))))
    evaluation = task.evaluate(model, [batch], tokenizer)
    generated = greedy_answers(model, batch, 4, tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert evaluation.generations == [tokenizer.decode(g) for g in generated]
    assert sum(g == r for g, r in zip(evaluation.generations, evaluation.references)) >= 12


def test_long_responses_have_no_exact_match(tmp_path, tiny_llama_dir) -> None:
    import pandas as pd

    path = tmp_path / "essays.csv"
    pd.DataFrame({"q": [f"question {i}" for i in range(60)],
                  "a": [f"a long answer of many words number {i}" for i in range(60)]}).to_csv(path, index=False)
    task = make_task("causal_lm")
    data = task.load_data(DataSource(str(path), columns={"prompt": "q", "response": "a"}), seed=0)
    assert task.primary_metric == "perplexity"
    with pytest.raises(ObjectiveError, match="needs short answers"):
        task.check_objectives([("exact_match", "exact_match")], data)
    with pytest.raises(DataError, match="--response-column is required for a causal_lm task"):
        task.load_data(DataSource(str(path), columns={"prompt": "q"}), seed=0)
    with pytest.raises(DataError, match="--label-column does not apply to a causal_lm task"):
        task.load_data(DataSource(str(path), columns={"prompt": "q", "response": "a", "label": "a"}), seed=0)


def _train_generate_reload(setup, optimizer, tmp_path, reload_with_peft: bool = True) -> None:
    config = optimizer.ask()
    task = setup.task
    tokenizer = task.load_tokenizer(setup.model_path)
    batches = loader(setup.train_tokens, tokenizer, 8, True, 0, task.collator(tokenizer))
    builder = get_adapter(setup.space.spec)
    model = build_model(setup, config, planned_steps(len(batches), setup.fidelity), batches)
    outcome = train(model, task, batches, batches, Hyperparameters(learning_rate=5e-3), setup.fidelity,
                    torch.device("cpu"), hooks=builder.training_hooks(model), tokenizer=tokenizer)
    assert math.isfinite(outcome.best.loss) and len(outcome.best.generations) == len(setup.train_tokens)
    builder.save(model, tmp_path)
    if not reload_with_peft:
        return
    reloaded = PeftModel.from_pretrained(task.load_model(setup.model_path, setup.data), str(tmp_path)).eval()
    model.eval()
    batch = next(iter(loader(setup.dev_tokens, tokenizer, 16, False, 0, task.collator(tokenizer))))
    batch.pop("labels")  # a reloaded AdaLoRA model (PEFT 0.21) fails when asked for a loss in inference
    with torch.no_grad():
        before, after = model(**batch).logits, reloaded(**batch).logits
    assert torch.allclose(before, after, atol=1e-5), (before - after).abs().max()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_peft_family_method_works_on_llama(lm_setups, method, tmp_path) -> None:
    setup, optimizer = lm_setups("peft_family", method=method)
    _train_generate_reload(setup, optimizer, tmp_path)


def test_lora_llm_preset_with_bf16_and_gradient_checkpointing(lm_setups) -> None:
    """The decoder preset's memory dimensions reach the model; QLoRA is pinned off, saying why,
    where there is no GPU with bitsandbytes."""
    setup, optimizer = lm_setups("lora_llm", precision="bf16", gradient_checkpointing=True)
    config = optimizer.ask()
    model = build_model(setup, config)
    base = model.get_base_model()
    assert base.is_gradient_checkpointing and base.model.embed_tokens.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    result = run_trial(setup, config)
    assert math.isfinite(result.curves[-1]["dev_loss"]) and result.cost["peak_memory_mb"] > 0
    if not torch.cuda.is_available():
        assert setup.space.fixed["quantization"] == "none"
        assert any("quantization pinned to 'none'" in note for note in setup.data.notes)


@pytest.mark.parametrize("strategy", ["flexora", "ist", "increlora", "light_peft"])
def test_every_strategy_trains_a_llama(lm_setups, strategy, tmp_path) -> None:
    """Each strategy runs its stages on a decoder with grouped-query attention (Light-PEFT
    prunes whole key/value groups) and saves an adapter that reloads to the same outputs."""
    from autopeft.trial.loading import load_adapter

    pruning = {"light_peft_head_prune": 0.5, "light_peft_neuron_prune": 0.5} if strategy == "light_peft" else {}
    setup, optimizer = lm_setups("strategies", strategy=strategy, **pruning,
                                 target_modules=["attn_q", "attn_k", "attn_v", "attn_o", "ffn_up", "ffn_down"])
    result = run_trial(setup, optimizer.ask(), save_to=tmp_path, keep_model=True)
    assert math.isfinite(result.curves[-1]["dev_loss"]) and result.strategy["name"] == strategy
    if strategy == "light_peft":
        # Half of each layer's 2 key/value groups: one key/value head and its 2 query heads.
        assert result.strategy["light_peft_kv_heads_removed"] == 4
        assert result.strategy["light_peft_heads_removed"] == 8
    task, tokenizer = setup.task, setup.task.load_tokenizer(setup.model_path)
    reloaded = load_adapter(task.load_model(setup.model_path, setup.data), tmp_path).eval()
    batch = next(iter(loader(setup.dev_tokens, tokenizer, 16, False, 0, task.collator(tokenizer))))
    batch.pop("labels")
    with torch.no_grad():
        before, after = result.model.eval()(**batch).logits, reloaded(**batch).logits
    assert torch.allclose(before, after, atol=1e-5), (before - after).abs().max()


@pytest.mark.parametrize("space", ["autopeft_sapa"])
def test_bottleneck_adapters_find_the_llama_mlp(lm_setups, space, tmp_path) -> None:
    """Serial and parallel adapters hook LLaMA's gated MLP (up/gate in, down out) and the
    per-layer prefix its attention; all three train and generate."""
    setup, optimizer = lm_setups(space, serial_k=3, parallel_k=3, prefix_k=3)
    assert setup.layout.roles["ffn_up"] == "mlp.up_proj" and setup.layout.roles["ffn_down"] == "mlp.down_proj"
    _train_generate_reload(setup, optimizer, tmp_path, reload_with_peft=False)


def test_demo_lm_picks_its_budget_only_where_the_user_left_the_defaults(tmp_path) -> None:
    from autopeft.driver.inputs import check_inputs

    config = SearchConfig(task="demo-lm", output_dir=str(tmp_path))
    check_inputs(config)
    assert (config.trials, config.space, config.fidelity.max_train_examples, config.fidelity.max_length) == \
        (6, "lora_llm", 160, 96)
    assert config.objectives == ["exact_match", "trainable_percent", "peak_memory_mb"]
    mine = SearchConfig(task="demo-lm", trials=3, space="lora", fidelity=Fidelity(max_train_examples=32),
                        output_dir=str(tmp_path))
    check_inputs(mine)
    assert (mine.trials, mine.space, mine.fidelity.max_train_examples, mine.fidelity.max_length) == \
        (3, "lora", 32, 64)
