"""Objectives: built-ins, the decorator, and FILE.py:FUNCTION plugins with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import autopeft
from autopeft.errors import ObjectiveError
from autopeft.objectives import OBJECTIVES, TrialOutput, resolve_objectives

ROOT = Path(__file__).resolve().parents[1]


def output(predictions, labels) -> TrialOutput:
    return TrialOutput(config={}, values={}, model=None, tokenizer=None,
                       predictions=np.array(predictions), labels=np.array(labels),
                       metrics={"accuracy": float(np.mean(np.array(predictions) == np.array(labels)))},
                       cost={"trainable_percent": 0.5})


def test_default_objectives_are_the_tasks() -> None:
    from autopeft.tasks import make_task

    objectives = resolve_objectives(None, make_task("classification").default_objectives)
    assert [(o.name, o.direction) for o in objectives] == [("accuracy", "maximize"),
                                                            ("trainable_percent", "minimize")]
    lm = resolve_objectives(None, make_task("demo-lm").default_objectives)
    assert [(o.name, o.direction) for o in lm] == [("exact_match", "maximize"), ("trainable_percent", "minimize"),
                                                   ("peak_memory_mb", "minimize")]


def test_an_objective_the_task_cannot_score_fails_the_search_up_front(tmp_path) -> None:
    """Checked before any model or data is loaded: not in every trial."""
    from autopeft.config import SearchConfig
    from autopeft.driver.inputs import check_inputs

    with pytest.raises(ObjectiveError, match="reads the metric 'accuracy'.*'demo-lm' task does not report"):
        check_inputs(SearchConfig(task="demo-lm", objectives=["accuracy", "trainable_percent"],
                                  output_dir=str(tmp_path)))
    with pytest.raises(ObjectiveError, match="'exact_match'.*'demo' task does not report"):
        check_inputs(SearchConfig(task="demo", objectives=["exact_match", "trainable_percent"],
                                  output_dir=str(tmp_path)))


def test_shipped_plugins_load_like_a_users_file() -> None:
    f1 = resolve_objectives([f"{ROOT}/objectives/macro_f1.py:macro_f1"])[0]
    assert (f1.name, f1.direction) == ("macro_f1", "maximize")
    # class 0: P=1, R=0.5 -> F1 2/3; class 1: P=2/3, R=1 -> F1 0.8
    assert f1(output([0, 1, 1, 1], [0, 0, 1, 1])) == pytest.approx((2 / 3 + 0.8) / 2)
    latency = resolve_objectives([f"{ROOT}/objectives/inference_latency.py:latency_ms"])[0]
    assert latency.direction == "minimize"


def test_decorator_makes_an_objective_and_rejects_non_finite_values() -> None:
    @autopeft.objective("minimize", name="errors")
    def errors(trial: TrialOutput) -> float:
        return float(np.sum(trial.predictions != trial.labels)) if len(trial.labels) else float("nan")

    assert errors(output([1, 0], [1, 1])) == 1.0
    with pytest.raises(ObjectiveError, match="returned nan"):
        errors(output([], []))
    with pytest.raises(ObjectiveError, match="direction"):
        autopeft.objective("up")


@pytest.mark.parametrize("body, reference, message", [
    ("def f(t):\n    return 1.0\n", "f", "'f' has no direction"),
    ("import autopeft\n@autopeft.objective('maximize')\ndef f(t):\n    return 1.0\n", "g",
     "defines no function 'g'"),
    ("raise RuntimeError('boom')\n", "f", "importing failed: RuntimeError: boom"),
])
def test_bad_objective_files_are_clear_errors(tmp_path, body, reference, message) -> None:
    path = tmp_path / "obj.py"
    path.write_text(body)
    with pytest.raises(ObjectiveError, match=message) as info:
        resolve_objectives([f"{path}:{reference}", "accuracy"])
    assert str(path) in str(info.value)


def test_unknown_and_duplicate_objectives() -> None:
    with pytest.raises(ObjectiveError, match="unknown objective 'acc'"):
        resolve_objectives(["acc"])
    with pytest.raises(ObjectiveError, match="distinct"):
        resolve_objectives(["accuracy", "accuracy"])
    with pytest.raises(ObjectiveError, match="objective file not found"):
        resolve_objectives(["missing.py:f"])
    assert set(OBJECTIVES.names()) >= {"accuracy", "trainable_percent", "peak_memory_mb", "train_seconds"}


def test_declared_reference_reaches_the_optimizer_unless_the_config_gives_one(tiny_model_dir, sentiment_csv) -> None:
    # Before: @objective(..., reference=...) was accepted and never read.
    from autopeft.config import DataConfig, SearchConfig
    from autopeft.driver.setup import prepare

    @autopeft.objective("maximize", reference=0.55)
    def accuracy_floor(trial: TrialOutput) -> float:
        return trial.metrics["accuracy"]

    def reference(given: dict) -> list:
        config = SearchConfig(model=str(tiny_model_dir), objectives=[accuracy_floor, "trainable_percent"],
                              reference_point=given,
                              data=DataConfig(train_file=str(sentiment_csv), text_column="review",
                                              label_column="verdict"))
        return list(prepare(config)[1].reference_point)

    declared, largest = reference({})
    assert declared == 0.55 and largest > 1.0  # the trainable share: the space's largest (issue 24)
    assert reference({"accuracy_floor": 0.6, "trainable_percent": 1.0}) == [0.6, 1.0]
