"""A trial trains a real PEFT model, measures it truthfully, and fails loudly on NaN."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from transformers import AutoTokenizer

from autopeft.config import DataConfig, SearchConfig
from autopeft.errors import TrialError
from autopeft.measure import count_parameters
from autopeft.search import prepare
from autopeft.training import Fidelity, Hyperparameters, train
from autopeft.trial import build_model, evaluate_adapter, loader, run_trial


@pytest.fixture
def setup(tiny_model_dir, sentiment_csv):
    config = SearchConfig(model=str(tiny_model_dir), task="classification", optimizer="random",
                          data=DataConfig(train_file=str(sentiment_csv), text_column="review",
                                          label_column="verdict"),
                          fidelity=Fidelity(max_train_examples=120, epochs=2, max_length=32, batch_size=16))
    setup, optimizer = prepare(config)
    return setup, optimizer


def test_trial_trains_measures_and_saves_a_loadable_adapter(setup, tmp_path) -> None:
    setup, optimizer = setup
    config = optimizer.ask()
    epochs = []
    result = run_trial(setup, config, save_to=tmp_path / "adapter", on_epoch=epochs.append)
    assert [p["epoch"] for p in epochs] == [1.0, 2.0] and len(result.curves) == 2
    assert 0.0 <= result.objectives["accuracy"] <= 1.0
    assert result.objectives["accuracy"] == max(p["dev_accuracy"] for p in epochs)
    trainable, _ = count_parameters(build_model(setup, config))
    assert result.cost["trainable_params"] == trainable
    assert result.cost["trainable_percent"] == pytest.approx(100 * trainable / setup.layout.num_parameters)
    assert result.cost["peak_memory_mb"] > 50 and result.cost["examples_per_second"] > 0
    # The saved adapter, on a fresh base model through stock PeftModel.from_pretrained,
    # scores exactly what the trial reported on the same dev examples.
    dev = setup.data.dev
    reloaded = evaluate_adapter(setup, tmp_path / "adapter", dev)
    assert reloaded.metrics["accuracy"] == pytest.approx(result.objectives["accuracy"])
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    base = setup.task.load_model(setup.model_path, setup.data)
    assert isinstance(PeftModel.from_pretrained(base, str(tmp_path / "adapter")), PeftModel)


def test_same_seed_same_trial_result(setup) -> None:
    setup, optimizer = setup
    config = optimizer.ask()
    first, second = run_trial(setup, config), run_trial(setup, config)
    assert first.objectives == second.objectives


def test_nan_loss_fails_the_trial(setup) -> None:
    setup, optimizer = setup

    class NanTask(type(setup.task)):
        def loss(self, model, batch):
            return super().loss(model, batch) * float("nan")

    model = build_model(setup, optimizer.ask())
    tok = AutoTokenizer.from_pretrained(setup.model_path)
    batches = loader(setup.train_tokens, tok, 8, True, 0)
    with pytest.raises(TrialError, match="training loss is nan at step 1"):
        train(model, NanTask(), batches, batches, Hyperparameters(), setup.fidelity, torch.device("cpu"))
