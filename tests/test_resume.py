"""Resuming a search whose driver was killed: the real CLI, SIGKILLed mid-search, then
`--resume`; compared with the same search run without a break (tiny model, real Ray, real
MLflow store)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from autopeft.driver.journal import Journal
from autopeft.driver.reaper import ray_descendants
from autopeft.results.records import TrialRecord
from autopeft.driver.runner import OptimizerSearcher
from autopeft.results.tracking import ATTEMPTS, RESUMES, STATUS, TRIAL_NUMBER, load_search

from conftest import write_sentiment_csv

TRIALS = 4


class Recorder:
    """An optimizer that hands out numbered configurations and records what it is told."""

    def __init__(self) -> None:
        self.asks, self.told = 0, []

    def ask(self) -> dict:
        self.asks += 1
        return {"x": self.asks}

    def tell(self, config, values, metrics=None) -> None:
        self.told.append(config["x"])


def test_a_resumed_searcher_reruns_what_was_interrupted_first_and_tells_each_trial_once(tmp_path) -> None:
    journal = Journal(tmp_path / "journal.pkl", Recorder())
    searcher = OptimizerSearcher(journal.optimizer, ["accuracy"], journal=journal)
    for trial in ("a", "b", "c"):
        searcher.suggest(trial)
    searcher.on_trial_complete("a", {"autopeft_status": "completed", "objective/accuracy": 0.5})
    journal.records[1] = TrialRecord(1, "a", {"x": 1}, status="completed")
    journal.records[2] = TrialRecord(2, "b", {"x": 2})  # running when the driver died
    journal.save(*journal.records.values())  # trial 3 was proposed and never started

    resumed = Journal.load(tmp_path / "journal.pkl")
    assert resumed.to_rerun() == [(2, {"x": 2}), (3, {"x": 3})] and resumed.optimizer.told == [1]
    searcher = OptimizerSearcher(resumed.optimizer, ["accuracy"], journal=resumed)
    proposed = [searcher.suggest(t) for t in ("d", "e", "f")]
    assert [(p["number"], p["params"]) for p in proposed] == [(2, {"x": 2}), (3, {"x": 3}), (4, {"x": 4})]
    assert resumed.optimizer.asks == 4  # reruns are not asked for again
    for trial in ("d", "e", "f"):
        searcher.on_trial_complete(trial, {"autopeft_status": "completed", "objective/accuracy": 0.5})
    assert resumed.optimizer.told == [1, 2, 3, 4]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "autopeft.cli", *args]


def _trial_runs(client: MlflowClient, experiment: str) -> tuple[object, list]:
    stored = load_search(client, experiment)  # its trials' runs, by trial number
    return stored.parent, stored.runs


@pytest.mark.slow
def test_a_search_killed_mid_way_resumes_as_if_nothing_happened(tiny_model_dir, tmp_path) -> None:
    data = write_sentiment_csv(tmp_path / "reviews.csv", rows=400)
    config = tmp_path / "search.yaml"
    # TPE models after two random designs: its later proposals depend on every earlier result.
    config.write_text(f"""
task: classification
model: {tiny_model_dir}
data: {{train_file: {data}, text_column: review, label_column: verdict}}
optimizer: tpe
optimizer_options: {{n_initial: 2}}
trials: {TRIALS}
seed: 3
fidelity: {{max_train_examples: 240, max_length: 32, epochs: 2}}
output_dir: {tmp_path / 'runs'}
learned_only: false
""")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    search = _cli("search", "--config", str(config), "--quiet")
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")

    subprocess.run(search + ["--experiment", "whole"], check=True, env=env, capture_output=True)
    _, whole = _trial_runs(client, "whole")
    assert len(whole) == TRIALS

    driver = subprocess.Popen(search + ["--experiment", "killed"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ray_processes: list[psutil.Process] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None:
        ray_processes += [p for p in ray_descendants(driver.pid).values() if p not in ray_processes]
        exp = client.get_experiment_by_name("killed")
        done = exp and client.search_runs([exp.experiment_id], f"tags.`{STATUS}` = 'completed'")
        if done and len(done) >= 2:
            break
        time.sleep(0.2)
    assert driver.poll() is None, "the search ended before it could be killed"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    # Ray's processes go with the driver (its agents used to outlive it for ever).
    _, alive = psutil.wait_procs(ray_processes, timeout=20)
    assert ray_processes and not alive, [p.name() for p in alive]

    parent, before = _trial_runs(client, "killed")
    assert parent.data.tags[STATUS] == "running" and 2 <= len(before) < TRIALS
    front = subprocess.run(_cli("front", "--output-dir", str(tmp_path / "runs"), "--experiment", "killed"),
                           env=env, capture_output=True, text=True)
    assert front.returncode == 0, front.stderr
    parent, before = _trial_runs(client, "killed")
    assert parent.data.tags[STATUS] == "interrupted" and parent.info.status == "KILLED"
    assert {r.data.tags[STATUS] for r in before} <= {"completed", "interrupted"}

    resumed = subprocess.run(search + ["--experiment", "killed", "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    parent, after = _trial_runs(client, "killed")
    assert parent.data.tags[STATUS] == "completed" and parent.data.tags[RESUMES] == "1"
    # One run per trial, every trial completed, and the same proposals as without the kill.
    assert [int(r.data.tags[TRIAL_NUMBER]) for r in after] == list(range(1, TRIALS + 1))
    assert all(r.data.tags[STATUS] == "completed" for r in after)
    assert [r.data.params for r in after] == [r.data.params for r in whole]
    completed_before = [r.info.run_id for r in before if r.data.tags[STATUS] == "completed"]
    assert all(ATTEMPTS not in r.data.tags for r in after if r.info.run_id in completed_before)
    assert [r.data.metrics["accuracy"] for r in after] == pytest.approx([r.data.metrics["accuracy"] for r in whole])


@pytest.mark.parametrize("name", ["mobo", "tpe", "nsga2", "random"])
def test_an_optimizer_from_a_journal_proposes_what_it_would_have(name, tmp_path, one_torch_thread) -> None:
    """The journal pickles the optimizer whole: restored mid-search (one proposal open), it
    goes on with the proposals of an uninterrupted run (random stream and model included)."""
    from autopeft.optimizers import make_optimizer
    from autopeft.space import load_space

    from test_optimizers import objective

    space = load_space("lora").bind(4)

    def run(steps: int, break_at: int | None = None) -> list[dict]:
        optimizer = make_optimizer(name, space, ["maximize", "minimize"], seed=5, n_initial=3)
        asked = []
        for step in range(steps):
            config = optimizer.ask()
            asked.append(config)
            if step == break_at:  # killed with this proposal open: restored from the journal
                Journal(tmp_path / f"{name}.pkl", optimizer).save()
                optimizer = Journal.load(tmp_path / f"{name}.pkl").optimizer
            optimizer.tell(config, objective(config))
        return asked

    assert run(6, break_at=3) == run(6)
