"""Final evaluation: a search's front retrained at full fidelity over seeds, logged under the
search and linked to the trials it re-evaluates; from Python, the CLI and `search --final-seeds`."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

import autopeft
from autopeft.cli import main
from autopeft.driver.evaluation import evaluate
from autopeft.driver.runner import run_jobs
from autopeft.results.tracking import EVALUATES, PARENT, ROLE

pytestmark = pytest.mark.usefixtures("local_ray")  # its searches, evaluations and jobs share one Ray


def _evaluation_runs(result):
    client = MlflowClient(result.tracking_uri)
    experiment = client.get_experiment_by_name("autopeft")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{ROLE}` = 'evaluation'")
    return client, runs


def test_evaluate_retrains_each_front_member_with_every_seed(tiny_search) -> None:
    result, tmp = tiny_search
    table = evaluate(result.run_id, output_dir=str(tmp / "runs"), seeds=2, fidelity={"max_train_examples": 96},
                     progress=False)
    assert sorted(table["trial"]) == sorted(t.name for t in result.front)
    assert (table["seeds"] == 2).all() and table["on_front"].any()
    assert {"accuracy_mean", "accuracy_std", "test_accuracy_mean", "test_accuracy_std"} <= set(table.columns)
    assert table["accuracy_mean"].between(0, 1).all()

    client, runs = _evaluation_runs(result)
    assert len(runs) == 2 * len(result.front)
    front_ids = {t.run_id for t in result.front}
    for run in runs:
        assert run.data.tags[PARENT] == result.run_id and run.data.tags[EVALUATES] in front_ids
        assert run.data.params["fidelity.max_train_examples"] == "96"
        assert run.data.params["fidelity.max_eval_examples"] == "None"  # full fidelity: all of dev
        assert {"accuracy", "trainable_percent", "test_accuracy"} <= set(run.data.metrics)
    assert {r.data.params["seed"] for r in runs} == {"0", "1"}
    assert "evaluation.csv" in {a.path for a in client.list_artifacts(result.run_id)}
    # The search's own records are untouched: evaluation runs are not trials.
    assert main(["front", "--output-dir", str(tmp / "runs"), "--format", "json"]) == 0


def test_the_cli_evaluates_the_latest_search(tiny_search, capsys) -> None:
    result, tmp = tiny_search
    assert main(["evaluate", "--seeds", "1", "--max-train-examples", "32", "--output-dir", str(tmp / "runs")]) == 0
    out = capsys.readouterr().out
    assert all(t.name in out for t in result.front) and "test_accuracy" in out


def test_bad_seeds_is_a_one_line_error(tiny_search, capsys) -> None:
    _, tmp = tiny_search
    assert main(["evaluate", "--seeds", "0", "--output-dir", str(tmp / "runs")]) == 2
    assert "--seeds" in capsys.readouterr().err


@pytest.mark.slow
def test_a_search_with_final_seeds_evaluates_its_front(tiny_model_dir, sentiment_csv, tmp_path) -> None:
    # concurrency 2: the retrainings run two at a time as Ray tasks on the search's own Ray, and
    # the baseline starts training with the search (it needs nothing from it).
    result = autopeft.search(
        task="classification", model=str(tiny_model_dir), train_file=str(sentiment_csv), text_column="review",
        label_column="verdict", optimizer="random", trials=3, concurrency=2, max_train_examples=48,
        max_length=32, final_seeds=2, baselines=["lora_r8_qv"], output_dir=str(tmp_path / "runs"),
        progress=False, learned_only=False)  # too few steps to learn: the front is every completed trial
    table = result.evaluation
    assert table is not None
    assert sorted(table["trial"]) == sorted([t.name for t in result.front] + ["lora_r8_qv"])
    assert (table["seeds"] == 2).all() and (table["errors"] == "").all()
    runs = _evaluation_runs(result)[1]
    assert len(runs) == 2 * len(result.front)
    assert all(r.info.status == "FINISHED" and "test_accuracy" in r.data.metrics for r in runs)
    # Retrained on Ray tasks, each run names the node it ran on (here the one local node).
    assert {r.data.tags.get("autopeft.node") for r in runs} == {"127.0.0.1"}  # the local Ray is on loopback
    client = MlflowClient(result.tracking_uri)
    baseline_runs = client.search_runs([runs[0].info.experiment_id], filter_string=f"tags.`{ROLE}` = 'baseline'")
    assert sorted(r.data.params["seed"] for r in baseline_runs) == ["0", "1"]
    assert all(r.data.tags[PARENT] == result.run_id and "test_accuracy" in r.data.metrics for r in baseline_runs)


@pytest.mark.parametrize("concurrency", [1, 2])
def test_jobs_run_at_most_concurrency_at_once_and_a_failure_stops_no_other(concurrency) -> None:
    import operator

    running, most, ended = set(), [0], {}

    def start(i):
        running.add(i)
        most[0] = max(most[0], len(running))

    def done(i, result, error):
        running.discard(i)
        ended[i] = (result, error)

    run_jobs(operator.truediv, [(1, 2), (1, 0), (3, 1), (8, 2)], concurrency=concurrency, on_start=start,
             on_done=done)
    assert ended[0] == (0.5, None) and ended[2] == (3.0, None) and ended[3] == (4.0, None)
    assert ended[1][0] is None and ended[1][1].startswith("ZeroDivisionError: ")
    assert most[0] == concurrency


def test_baselines_are_trained_alike_and_drawn_with_the_front(tiny_search, capsys) -> None:
    from autopeft.results.tracking import BASELINE

    result, tmp = tiny_search
    table = evaluate(result.run_id, output_dir=str(tmp / "runs"), seeds=1, fidelity={"max_train_examples": 32},
                     baselines=["lora_r8_qv", "full_finetuning", "bottleneck", "ia3"], progress=False)
    baselines = table[table["kind"] == "baseline"].set_index("trial")
    assert list(baselines.index) == ["lora_r8_qv", "full_finetuning", "bottleneck", "ia3"]
    assert (table[table["kind"] == "front member"]["trial"].str.startswith("trial-")).all()
    assert baselines.loc["full_finetuning", "trainable_percent_mean"] == pytest.approx(100.0)
    # Fewer trainable parameters than LoRA r8 q/v: IA3 scales vectors only.
    assert baselines.loc["ia3", "trainable_percent_mean"] < baselines.loc["lora_r8_qv", "trainable_percent_mean"]
    assert baselines["test_accuracy_mean"].between(0, 1).all()

    client = MlflowClient(result.tracking_uri)
    experiment = client.get_experiment_by_name("autopeft")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{ROLE}` = 'baseline'")
    assert sorted(r.data.tags[BASELINE] for r in runs) == sorted(baselines.index)
    assert all(r.data.tags[PARENT] == result.run_id and r.info.status == "FINISHED" for r in runs)
    lora = next(r for r in runs if r.data.tags[BASELINE] == "lora_r8_qv")
    assert lora.data.params["rank.0"] == "8" and lora.data.params["method"] == "lora"
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"evaluation_front.png", "evaluation_front.html"} <= artifacts
    note = client.get_run(result.run_id).data.tags["mlflow.note.content"]
    assert note.startswith("**Final evaluation") and "| lora_r8_qv | baseline |" in note
    assert "**Pareto front" in note and note.count("**Final evaluation") == 1
    client.download_artifacts(result.run_id, "evaluation_front.html", str(tmp))
    assert "lora_r8_qv" in (tmp / "evaluation_front.html").read_text()


def test_unknown_baseline_and_baselines_without_final_seeds_are_errors(tiny_search, capsys) -> None:
    from autopeft.errors import ConfigError

    result, tmp = tiny_search
    with pytest.raises(ConfigError, match="unknown baseline 'lora_r16'"):
        evaluate(result.run_id, output_dir=str(tmp / "runs"), seeds=1, baselines=["lora_r16"], progress=False)
    assert main(["search", "--task", "demo", "--baselines", "ia3", "--output-dir", str(tmp / "x")]) == 2
    assert "--final-seeds" in capsys.readouterr().err


def test_at_the_search_fidelity_and_seed_a_trial_is_its_own_retraining(tiny_search) -> None:
    from autopeft.driver.setup import load_setup
    from autopeft.driver.evaluation import retrain, stored_config
    from autopeft.results.tracking import REUSED, open_search

    result, tmp = tiny_search
    table = evaluate(result.run_id, output_dir=str(tmp / "runs"), seeds=2, fidelity={"max_train_examples": 192},
                     progress=False)
    assert (table["seeds"] == 2).all()
    client, runs = _evaluation_runs(result)
    reused = [r for r in runs if r.data.tags.get(REUSED) == "true"]
    assert len(reused) == len(result.front) and {r.data.params["seed"] for r in reused} == {"0"}
    member = result.front[0]
    run = next(r for r in reused if r.data.tags[EVALUATES] == member.run_id)
    assert run.data.metrics["test_accuracy"] == pytest.approx(member.test_metrics["accuracy"])
    # ...which is what training it again gives: the same data, fidelity and seed.
    client, stored = open_search(result.tracking_uri, "autopeft", result.run_id)
    again = retrain(load_setup(stored_config(client, stored)), member.config)
    assert again["dev"]["accuracy"] == pytest.approx(member.objectives["accuracy"], abs=1e-9)
    assert again["test"]["accuracy"] == pytest.approx(member.test_metrics["accuracy"], abs=1e-9)
