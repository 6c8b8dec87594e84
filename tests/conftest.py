"""Shared fixtures: a tiny BERT on disk (real tokenizer, random weights) and small tables."""

from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from autopeft.tasks import demo_model_path

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module's tests: small GP fits on a shared 2-core machine are
    many times slower with 2 intra-op threads than with 1 whenever another process is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for a module's in-process searches, started as a search starts its own: a
    search uses the Ray it finds running and leaves it up, and each start and stop costs seconds
    of both cores. Not for a module that sets environment variables for its trials' workers
    (they inherit the environment Ray started in) or that needs a Ray of its own."""
    from autopeft.driver.runner import ray_session

    with ray_session():
        yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer BERT with hidden size 32, saved like any local model folder."""
    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)  # the same random weights in every run: tests do not depend on luck
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertForSequenceClassification(config).save_pretrained(path)
    for name in TOKENIZER_FILES:
        shutil.copy(Path(demo_model_path()) / name, path / name)
    return path


#: a chat template in the ChatML form SmolLM2 uses, for the tiny LLaMA's tokenizer
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} says {{ m['content'] }} [SEP] {% endfor %}"
                 "{% if add_generation_prompt %}assistant says{% endif %}")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer LLaMA (grouped-query attention: 4 query heads, 2 key/value heads; gated MLP;
    tied embeddings) with the demo's real tokenizer, [SEP] as its end of sequence and a chat
    template, saved like any local model folder."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=30522, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=101, eos_token_id=102, pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(demo_model_path())
    tokenizer.eos_token = "[SEP]"
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    return path


def write_answers_csv(path: Path, rows: int = 240, seed: int = 0) -> Path:
    """The sentiment table posed as prompts with one-word answers (columns question, answer)."""
    import pandas as pd

    table = pd.read_csv(write_sentiment_csv(path.with_suffix(".src.csv"), rows, seed))
    table = pd.DataFrame({"question": [f"{t}. positive or negative?" for t in table["review"]],
                          "answer": ["positive" if v == "pos" else "negative" for v in table["verdict"]]})
    table.to_csv(path, index=False)
    return path


def write_sentiment_csv(path: Path, rows: int = 240, seed: int = 0, pair: bool = False) -> Path:
    """An easy two-class table: the label is given away by one word."""
    rng = random.Random(seed)
    fillers = ["the film", "this movie", "the plot", "its cast", "the ending", "the score", "a scene"]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review", "premise", "verdict"] if pair else ["review", "verdict"])
        for i in range(rows):
            label = rng.choice(["pos", "neg"])
            word = rng.choice(["great", "wonderful", "superb"] if label == "pos" else ["awful", "dull", "bad"])
            text = f"{rng.choice(fillers)} was {word} number {i}"
            writer.writerow([text, f"premise {i % 7}", label] if pair else [text, label])
    return path


@pytest.fixture
def sentiment_csv(tmp_path: Path) -> Path:
    return write_sentiment_csv(tmp_path / "reviews.csv")


#: what lets a LoRA on the tiny random BERT beat the majority class of the sentiment table
#: in a few seconds (with 192 examples in batches of 8, 4 epochs): at the lora preset's
#: rates below this, every trial stays at the majority class, which is never on a front
LEARNS = {"learning_rate": 5e-3}


@pytest.fixture(scope="session")
def tiny_search(tiny_model_dir, tmp_path_factory):
    """A finished 3-trial random search of LoRA on the tiny model, stored under ``TMP/runs``:
    (its SearchResult, TMP). For tests of what is done with a search afterwards. Its trials
    train long enough to learn (4 epochs at 5e-3): a front holds only trials above the
    majority class."""
    import autopeft

    tmp = tmp_path_factory.mktemp("search")
    data = write_sentiment_csv(tmp / "reviews.csv")
    result = autopeft.search(
        task="classification", model=str(tiny_model_dir), train_file=str(data), text_column="review",
        label_column="verdict", optimizer="random", trials=3, max_train_examples=192, max_length=32,
        batch_size=8, epochs=4, fixed=LEARNS, output_dir=str(tmp / "runs"), progress=False)
    assert result.front
    return result, tmp


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files with end-to-end tests (``slow``) first, each file's tests kept together and in
    order: ``make test`` hands whole files to two processes in this order (``--dist loadfile``),
    so the long ones start early and the quick ones fill the gaps at the end (in the default
    order, most tests first, the demo's three-minute file came last and ran alone)."""
    order = {path: i for i, path in enumerate(dict.fromkeys(item.path for item in items))}
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (item.path not in slow, order[item.path]))
