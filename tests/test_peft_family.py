"""Every method of the PEFT family space trains on a real (tiny) model, counts its parameters
exactly, and saves an adapter that reloads, with stock PeftModel.from_pretrained, to the
same logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import AutoTokenizer

from autopeft.trial.binding import get_adapter
from autopeft.adapters.peft_family import METHODS
from autopeft.config import DataConfig, SearchConfig
from autopeft.errors import SpaceError
from autopeft.training.measure import count_parameters
from autopeft.driver.setup import prepare
from autopeft.space import load_space
from autopeft.config import Fidelity
from autopeft.training.loop import Hyperparameters, planned_steps, train
from autopeft.trial.run import build_model, loader


@pytest.fixture(scope="module")
def family_setups(tiny_model_dir, tmp_path_factory):
    from conftest import write_sentiment_csv
    csv = write_sentiment_csv(tmp_path_factory.mktemp("family") / "r.csv", rows=160)

    def make(method: str):
        config = SearchConfig(model=str(tiny_model_dir), task="classification", optimizer="random",
                              space="peft_family", fixed={"method": method},
                              data=DataConfig(train_file=str(csv), text_column="review", label_column="verdict"),
                              fidelity=Fidelity(max_train_examples=48, max_length=24, batch_size=8))
        return prepare(config)

    return make


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_trains_counts_and_reloads_to_identical_logits(family_setups, method, tmp_path) -> None:
    setup, optimizer = family_setups(method)
    config = optimizer.ask()
    values = setup.space.assemble(config)
    assert values["method"] == method
    tokenizer = AutoTokenizer.from_pretrained(setup.model_path)
    batches = loader(setup.train_tokens, tokenizer, 8, True, 0)
    builder = get_adapter(setup.space.spec)
    model = build_model(setup, config, planned_steps(len(batches), setup.fidelity), batches)
    trainable, _ = count_parameters(model)
    expected = builder.count_parameters(values, setup.layout)
    if expected is not None:  # EVA redistributes rank from data, LoKr's factorisation varies
        assert expected == trainable, (method, values)
    train(model, setup.task, batches, batches, Hyperparameters(learning_rate=5e-3), setup.fidelity,
          torch.device("cpu"), hooks=builder.training_hooks(model))
    builder.save(model, tmp_path)
    base = setup.task.load_model(setup.model_path, setup.data)
    reloaded = PeftModel.from_pretrained(base, str(tmp_path)).eval()
    model.eval()
    batch = next(iter(loader(setup.dev_tokens, tokenizer, 16, False, 0)))
    batch.pop("labels")
    with torch.no_grad():
        before, after = model(**batch).logits, reloaded(**batch).logits
    assert torch.allclose(before, after, atol=1e-5), (method, (before - after).abs().max())


def test_an_option_active_for_a_method_that_does_not_take_it(tmp_path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("adapter: peft\nparameters:\n  method: {type: choice, values: [lora, prefix]}\n"
                    "  num_virtual_tokens: {type: int, low: 4, high: 16}\n")
    with pytest.raises(SpaceError, match="'num_virtual_tokens' would be active for method 'lora'") as info:
        get_adapter(load_space(str(path)))
    assert info.value.line == 4
    path.write_text("adapter: peft\nparameters:\n  method: {type: choice, values: [lora, qlora2]}\n")
    with pytest.raises(SpaceError, match=r"unknown method\(s\) \['qlora2'\]"):
        get_adapter(load_space(str(path)))


def test_family_space_conditions_each_option_on_its_methods() -> None:
    space = load_space("peft_family").bind(6)
    rng = np.random.default_rng(0)
    for _ in range(200):
        values = space.assemble(space.sample(rng))
        method = values["method"]
        for name, value in values.items():
            if name in ("method", "learning_rate"):
                continue
            active = value is not None and not (isinstance(value, list) and all(v is None for v in value))
            assert active == (name in METHODS[method].takes), (method, name, value)
