"""A trial trains a real PEFT model, measures it truthfully, and fails loudly on NaN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import AutoTokenizer

import autopeft
from autopeft.config import DataConfig, SearchConfig
from autopeft.errors import TrialError
from autopeft.training.measure import count_parameters
from autopeft.driver.setup import prepare
from autopeft.config import Fidelity
from autopeft.training.loop import Hyperparameters, train
from autopeft.trial.run import build_model, by_length, evaluate_adapter, loader, run_trial


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


def test_evaluation_batches_go_shortest_first_and_score_the_same(setup) -> None:
    setup, optimizer = setup
    dev = setup.data.dev
    # Texts of many lengths: the fixture's reviews are all the same length.
    varied = dev.map(lambda row, i: {"text": " ".join([row["text"]] * (1 + i % 4))}, with_indices=True)
    tokens = setup.task.tokenize(varied, AutoTokenizer.from_pretrained(setup.model_path), 32)
    ordered = by_length(tokens)
    lengths = [len(ids) for ids in ordered["input_ids"]]
    assert lengths == sorted(lengths) and len(set(lengths)) > 1
    assert sorted(map(tuple, ordered["input_ids"])) == sorted(map(tuple, tokens["input_ids"]))
    model = build_model(setup, optimizer.ask()).eval()
    tok = AutoTokenizer.from_pretrained(setup.model_path)
    plain, by_len = (setup.task.evaluate(model, loader(t, tok, 16, False, 0)) for t in (tokens, ordered))
    # Each example keeps its label (padding to other lengths moves logits by float noise only).
    assert by_len.labels.tolist() == [int(label) for label in ordered["labels"]]
    assert plain.loss == pytest.approx(by_len.loss, abs=1e-5)
    assert abs(plain.metrics["accuracy"] - by_len.metrics["accuracy"]) <= 1 / len(tokens)


@pytest.mark.parametrize("max_norm", [0.0, 1e-3])
def test_gradients_are_clipped_to_max_grad_norm(setup, max_norm) -> None:
    from autopeft.training.loop import TrainingHooks

    setup, optimizer = setup
    norms: list[float] = []

    class Norms(TrainingHooks):
        def after_optimizer_step(self, loop):
            grads = [p.grad for g in loop.optimizer.param_groups for p in g["params"] if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    model = build_model(setup, optimizer.ask())
    tok = AutoTokenizer.from_pretrained(setup.model_path)
    batches = loader(setup.train_tokens, tok, 8, True, 0)
    train(model, setup.task, batches, batches, Hyperparameters(max_grad_norm=max_norm), setup.fidelity,
          torch.device("cpu"), hooks=[Norms()])
    if max_norm:
        assert max(norms) <= max_norm * 1.0001
    else:  # unclipped gradients of a fresh head are far larger than that
        assert max(norms) > 100 * 1e-3


def test_front_members_are_scored_on_test_by_every_quality_objective(setup, tmp_path) -> None:
    # Before: with macro-F1 as an objective the front's test column was accuracy only.
    from pathlib import Path

    from autopeft.objectives import resolve_objective
    from autopeft.trial.run import score_adapter

    setup, optimizer = setup
    seen = []
    macro_f1 = resolve_objective(str(Path(__file__).parents[1] / "objectives/macro_f1.py:macro_f1"))

    @autopeft.objective("maximize")
    def test_size(trial) -> float:
        seen.append(len(trial.predictions))
        return float(len(trial.predictions))

    setup.objectives = [*setup.objectives, macro_f1, test_size]
    config = optimizer.ask()
    result = run_trial(setup, config, save_to=tmp_path / "adapter")
    scores = score_adapter(setup, tmp_path / "adapter", setup.data.test, config, result.cost)
    assert set(scores) == {"accuracy", "macro_f1", "test_size"}  # no cost objective
    assert seen == [len(setup.dev_tokens), len(setup.data.test)] and scores["test_size"] == len(setup.data.test)
    evaluation = evaluate_adapter(setup, tmp_path / "adapter", setup.data.test)
    pred, gold = evaluation.predictions, evaluation.labels
    f1 = [2 * ((pred == c) & (gold == c)).sum() / ((pred == c).sum() + (gold == c).sum()) for c in (0, 1)]
    assert scores["macro_f1"] == pytest.approx(float(np.nanmean(f1)))
