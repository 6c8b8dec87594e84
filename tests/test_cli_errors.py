"""Bad input: a one-line error naming the problem and its place, exit code 2, no MLflow run."""

from __future__ import annotations

from pathlib import Path

import pytest

from autopeft.cli import main


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "runs"


def run_cli(args: list[str], out: Path, capsys) -> tuple[int, str]:
    code = main(["search", "--output-dir", str(out), "--quiet", *args])
    return code, capsys.readouterr().err


def assert_clean_failure(code: int, err: str, out: Path, *fragments: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("autopeft: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    # No MLflow store (so no run) was written for input that was bad from the start.
    assert not (out / "mlflow.db").exists()


def test_malformed_config_yaml(tmp_path, out, capsys) -> None:
    config = tmp_path / "search.yaml"
    config.write_text("trials: 3\nfidelity:\n  epochs: [1\n")
    code, err = run_cli(["--config", str(config)], out, capsys)
    assert_clean_failure(code, err, out, f"{config}:", "malformed YAML")


def test_unknown_config_key_with_line(tmp_path, out, capsys) -> None:
    config = tmp_path / "search.yaml"
    config.write_text("trials: 3\ntrails: 4\n")
    code, err = run_cli(["--config", str(config)], out, capsys)
    assert_clean_failure(code, err, out, f"{config}:2", "'trails'", "unknown key")


def test_unknown_optimizer(out, capsys) -> None:
    code, err = run_cli(["--optimizer", "bayes"], out, capsys)
    assert_clean_failure(code, err, out, "unknown optimizer 'bayes'")


def test_unknown_method_in_space(tmp_path, out, capsys) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("adapter: lora\nparameters:\n  layers:\n    type: per_layer\n    element: {type: bool}\n"
                     "  rank:\n    type: choice\n    values: [4, 8]\n  method:\n    type: choice\n"
                     "    values: [lora]\n")
    code, err = run_cli(["--space", str(space)], out, capsys)
    assert_clean_failure(code, err, out, f"{space}:9", "takes no parameter 'method'")


def test_fixed_rank_outside_its_choices(tmp_path, out, capsys) -> None:
    config = tmp_path / "search.yaml"
    config.write_text("fixed:\n  rank: 3\n")
    code, err = run_cli(["--config", str(config)], out, capsys)
    assert_clean_failure(code, err, out, "'rank'", "got 3, expected one of [2, 4, 8, 16]")


def test_model_path_that_is_not_there(out, capsys) -> None:
    code, err = run_cli(["--model", "./no/such/model"], out, capsys)
    assert_clean_failure(code, err, out, "./no/such/model", "model folder does not exist")


def test_missing_label_column(sentiment_csv, tiny_model_dir, out, capsys) -> None:
    code, err = run_cli(["--task", "classification", "--model", str(tiny_model_dir),
                         "--train-file", str(sentiment_csv), "--text-column", "review",
                         "--label-column", "sentiment"], out, capsys)
    assert_clean_failure(code, err, out, str(sentiment_csv), "label column 'sentiment' not found")


def test_empty_dataset(tmp_path, tiny_model_dir, out, capsys) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("review,verdict\n")
    code, err = run_cli(["--task", "classification", "--model", str(tiny_model_dir), "--train-file",
                         str(empty), "--text-column", "review", "--label-column", "verdict"], out, capsys)
    assert_clean_failure(code, err, out, str(empty), "empty")


def test_objective_file_without_the_function(tmp_path, out, capsys) -> None:
    plugin = tmp_path / "mine.py"
    plugin.write_text("x = 1\n")
    code, err = run_cli(["--objective", "accuracy", "--objective", f"{plugin}:score"], out, capsys)
    assert_clean_failure(code, err, out, str(plugin), "defines no function 'score'")


@pytest.mark.parametrize("command", ["front", "trials"])
def test_results_without_any_search(out, capsys, command) -> None:
    code = main([command, "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "no search store here" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # reading creates no empty store


def test_outcome_constraint_on_an_unknown_metric(tmp_path, out, capsys) -> None:
    config = tmp_path / "search.yaml"
    config.write_text("optimizer_options:\n  outcome_constraints: {peak_mem: ['<=', 100]}\n")
    code, err = run_cli(["--config", str(config)], out, capsys)
    assert_clean_failure(code, err, out, "outcome_constraints", "unknown metric 'peak_mem'")


def test_data_flags_without_task_search_the_users_data(tmp_path, tiny_model_dir, out, capsys) -> None:
    # Before: data flags without --task ran the built-in demo on movie reviews and exited 0.
    missing = tmp_path / "tickets.csv"
    code, err = run_cli(["--model", str(tiny_model_dir), "--train-file", str(missing), "--text-column", "body",
                         "--label-column", "queue"], out, capsys)
    assert_clean_failure(code, err, out, str(missing), "data file not found")


def test_data_flags_with_task_demo_conflict(sentiment_csv, out, capsys) -> None:
    code, err = run_cli(["--task", "demo", "--train-file", str(sentiment_csv), "--text-column", "review",
                         "--label-column", "verdict"], out, capsys)
    assert_clean_failure(code, err, out, "key 'task'", "the demo task uses its own data", "data.train-file")


@pytest.mark.parametrize("parameter, body, message", [
    ("rank", "rank: {type: per_layer, element: {type: choice, values: [0, 4, 8]}}",
     "value 0 is not allowed: 'rank' must be a positive integer"),
    ("rank", "rank: {type: choice, values: [-2, 4]}", "value -2 is not allowed"),
    ("dropout", "dropout: {type: float, low: 0.0, high: 1.5}", "'dropout' must be a number in [0, 1)"),
    ("learning_rate", "learning_rate: {type: float, low: 0.0, high: 0.1}", "'learning_rate' must be a number > 0"),
])
def test_value_a_method_forbids_fails_when_the_space_is_read(tmp_path, out, capsys, parameter, body,
                                                             message) -> None:
    # Before: accepted, then every trial failed at run time ("every trial failed", exit 1).
    space = tmp_path / "space.yaml"
    space.write_text(f"adapter: lora\nparameters:\n  layers: {{type: per_layer, element: {{type: bool}}}}\n"
                     f"  {body}\n")
    code, err = run_cli(["--space", str(space)], out, capsys)
    assert_clean_failure(code, err, out, f"{space}:4", f"key 'parameters.{parameter}'", message)
