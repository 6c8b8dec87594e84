"""End to end on the tiny model, with Ray Tune and MLflow for real: the Python API with a custom
objective that fails once (the search must go on), outcome constraints, a search in which no trial
learned. The real CLI on the real demo model and data is in test_demo.py."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

import autopeft
from autopeft.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]  # its searches share one Ray


def runs_of(tracking_uri: str, experiment: str):
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("autopeft.role") == "search"]
    children = [r for r in runs if r.data.tags.get("autopeft.role") == "trial"]
    return client, parents, children


def test_python_api_with_a_custom_objective_that_fails_once(tiny_model_dir, sentiment_csv, tmp_path) -> None:
    calls = []

    @autopeft.objective("maximize")
    def flaky_accuracy(trial: autopeft.TrialOutput) -> float:
        calls.append(1)  # runs in a Ray worker; the flag file makes the failure happen once
        flag = tmp_path / "failed-once"
        if not flag.exists():
            flag.write_text("x")
            raise RuntimeError("flaky objective")
        return trial.metrics["accuracy"]

    result = autopeft.search(
        task="classification", model=str(tiny_model_dir), train_file=str(sentiment_csv),
        text_column="review", label_column="verdict", objectives=[flaky_accuracy, "trainable_percent"],
        optimizer="random", trials=4, concurrency=2, max_train_examples=64, max_length=32,
        output_dir=str(tmp_path / "runs"), experiment="api", progress=False)
    statuses = sorted(t.status for t in result.trials)
    assert statuses == ["completed", "completed", "completed", "failed"]
    failed = next(t for t in result.trials if t.status == "failed")
    assert "flaky objective" in failed.error
    assert result.front and all(t.status == "completed" for t in result.front)
    assert list(result.table().columns[:3]) == ["trial", "flaky_accuracy", "trainable_percent"]

    _, parents, children = runs_of(result.tracking_uri, "api")
    errors = [c.data.tags.get("autopeft.failure", "") for c in children
              if c.data.tags["autopeft.status"] == "failed"]
    assert len(children) == 4 and len(errors) == 1 and "flaky objective" in errors[0]
    # Every trial names the Ray node it ran on, the failed one too: here the one local node.
    assert {c.data.tags.get("autopeft.node") for c in children} == {"127.0.0.1"}  # the local Ray is on loopback


def test_trials_outside_the_outcome_constraints_stay_off_the_front(tiny_model_dir, sentiment_csv, tmp_path,
                                                                  capsys) -> None:
    config = tmp_path / "search.yaml"
    config.write_text(f"task: classification\nmodel: {tiny_model_dir}\n"
                      f"data: {{train_file: {sentiment_csv}, text_column: review, label_column: verdict}}\n"
                      "trials: 2\noptimizer: mobo\n"
                      "optimizer_options: {n_initial: 2, outcome_constraints: {dev_accuracy: ['>=', 2.0]}}\n"
                      "fidelity: {max_train_examples: 32, max_length: 32}\n")
    code = main(["search", "--config", str(config), "--output-dir", str(tmp_path / "runs"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1 and "no completed trial met the outcome constraints" in captured.err
    assert "2 outside the outcome constraints" in captured.out
    _, parents, children = runs_of(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", "autopeft")
    assert [c.data.tags["autopeft.status"] for c in children] == ["completed", "completed"]
    assert {c.data.tags["autopeft.feasible"] for c in children} == {"false"}
    assert {c.data.tags["autopeft.pareto"] for c in children} == {"false"}


def test_a_search_where_no_trial_learned_says_so_and_keeps_them_off_the_front(tiny_model_dir, sentiment_csv,
                                                                              tmp_path, capsys) -> None:
    # 16 examples, 2 steps: the trial stays at the majority class (the task's trivial score).
    flags = ["search", "--task", "classification", "--model", str(tiny_model_dir), "--train-file", str(sentiment_csv),
             "--text-column", "review", "--label-column", "verdict", "--optimizer", "random", "--trials", "1",
             "--max-train-examples", "16", "--max-length", "16", "--quiet"]
    code = main([*flags, "--output-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("autopeft: no trial learned: all 1 that ran scored no better")
    _, _, children = runs_of(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", "autopeft")
    assert [c.data.tags["autopeft.pareto"] for c in children] == ["false"]
    # --no-learned-only: the same trial, now an ordinary one, is the front.
    assert main([*flags, "--no-learned-only", "--output-dir", str(tmp_path / "all")]) == 0
    _, _, children = runs_of(f"sqlite:///{tmp_path / 'all' / 'mlflow.db'}", "autopeft")
    assert [c.data.tags["autopeft.pareto"] for c in children] == ["true"]
