"""Parameter counts follow the rule that decides what trains, on every architecture autopeft
knows: what a space's constraints and ``trainable_percent`` say is what the built model
trains, for every adapter."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import (DebertaV2Config, DebertaV2Model, DistilBertConfig, DistilBertModel, LlamaConfig,
                          LlamaModel, RobertaConfig, RobertaModel)

from autopeft.trial.binding import get_adapter
from autopeft.config import DataConfig, SearchConfig
from autopeft.training.measure import count_parameters
from autopeft.driver.setup import prepare
from autopeft.tasks import demo_model_path
from autopeft.config import Fidelity
from autopeft.trial.run import build_model

from conftest import TOKENIZER_FILES

SMALL = dict(vocab_size=30522, hidden_size=32, num_attention_heads=2, intermediate_size=64)
ARCHITECTURES = {
    # DistilBERT's head is pre_classifier + classifier (PEFT trains both: names end in "classifier")
    "distilbert": lambda: DistilBertModel(DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2,
                                                           hidden_dim=64)),
    # RoBERTa's head is one module with two linears inside
    "roberta": lambda: RobertaModel(RobertaConfig(**SMALL, num_hidden_layers=2, pad_token_id=0)),
    # DeBERTa's pooler is new in a base checkpoint: it trains, and counts
    "deberta": lambda: DebertaV2Model(DebertaV2Config(**SMALL, num_hidden_layers=2, pooler_hidden_size=32)),
    "llama": lambda: LlamaModel(LlamaConfig(**SMALL, num_hidden_layers=2, num_key_value_heads=1,
                                            pad_token_id=0)),
}
NEW_HEAD = {"distilbert": ["classifier", "pre_classifier"], "roberta": ["classifier"],
            "deberta": ["classifier", "pooler"], "llama": ["score"]}


@pytest.fixture(scope="module")
def base_dirs(tmp_path_factory) -> dict[str, Path]:
    """Base checkpoints (no task head), as people download them."""
    dirs = {}
    for name, make in ARCHITECTURES.items():
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp(name)
        make().save_pretrained(path)
        for file in TOKENIZER_FILES:
            shutil.copy(Path(demo_model_path()) / file, path / file)
        dirs[name] = path
    return dirs


def setups(model_dir: Path, csv: Path, space: str, fixed: dict):
    config = SearchConfig(model=str(model_dir), optimizer="random", space=space, fixed=fixed,
                          data=DataConfig(train_file=str(csv), text_column="review", label_column="verdict"),
                          fidelity=Fidelity(max_train_examples=16, max_length=16, batch_size=8))
    return prepare(config)


CASES = [("lora", {}), ("autopeft_sapa", {"prefix_k": 10}), ("peft_family", {"method": "dora"}),
         ("peft_family", {"method": "loha"}), ("peft_family", {"method": "vera"}),
         ("peft_family", {"method": "ia3"})]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("space, fixed", CASES, ids=[f"{s}-{f.get('method', '')}" for s, f in CASES])
def test_count_equals_what_trains(base_dirs, sentiment_csv, arch, space, fixed) -> None:
    # Before: the count took modules named exactly classifier or score (missing DistilBERT's
    # pre_classifier, which PEFT trains), and SAPA trained DeBERTa's new pooler while LoRA
    # did not; DeBERTa's projections were not found at all.
    setup, optimizer = setups(base_dirs[arch], sentiment_csv, space, fixed)
    assert list(setup.layout.head_modules) == NEW_HEAD[arch]
    builder = get_adapter(setup.space.spec)
    for _ in range(3):
        config = optimizer.ask()
        values = setup.space.assemble(config)
        trainable, _ = count_parameters(build_model(setup, config, total_steps=10))
        assert builder.count_parameters(values, setup.layout) == trainable, (arch, space, config)
