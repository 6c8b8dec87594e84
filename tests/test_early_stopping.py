"""Multi-objective early stopping: the ranking, MO-ASHA's decisions, rung reports from a real
trial, and a real Ray Tune search whose stopped trials reach MLflow and the optimizer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

import autopeft
from autopeft.config import DataConfig, EarlyStopping, Fidelity, SearchConfig
from autopeft.driver.setup import prepare
from autopeft.errors import ConfigError
from autopeft.driver.inputs import check_inputs
from autopeft.schedulers import make_scheduler
from autopeft.schedulers.moasha import crowding_distances, non_domination_ranks, priority_ranks
from autopeft.trial.run import run_trial
from autopeft.objectives import OBJECTIVE_PREFIX

from conftest import write_sentiment_csv

DIRECTIONS = {"accuracy": "maximize", "trainable_percent": "minimize"}


def report(progress: float, accuracy: float, percent: float) -> dict[str, float]:
    return {"progress": progress, "objective/accuracy": accuracy, "objective/trainable_percent": percent}


def test_non_domination_ranks_and_crowding() -> None:
    losses = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, 1.0], [2.0, 2.0]])
    assert non_domination_ranks(losses).tolist() == [0, 0, 0, 1, 2]
    crowding = crowding_distances(losses[:3])
    assert np.isinf(crowding[0]) and np.isinf(crowding[1]) and crowding[2] == pytest.approx(2.0)
    # Within rank 0 the boundary rows (tied) come first, then the crowded middle one.
    assert priority_ranks(losses).tolist() == [0, 0, 2, 3, 4]


def test_moasha_keeps_the_top_third_of_each_rung_by_multi_objective_rank() -> None:
    scheduler = make_scheduler(DIRECTIONS, EarlyStopping("moasha", reduction_factor=3, rungs=2))
    assert scheduler.milestones == pytest.approx((1 / 9, 1 / 3))
    decide = scheduler.decide
    assert decide("a", report(0.12, 0.6, 1.0)) == "CONTINUE"  # the first at a rung goes on
    assert decide("b", report(0.12, 0.5, 2.0)) == "STOP"      # dominated by a
    assert decide("c", report(0.12, 0.5, 0.5)) == "CONTINUE"  # not dominated: ties with a for 1st
    assert decide("c", report(0.20, 0.9, 0.5)) == "CONTINUE"  # between rungs: not judged again
    assert decide("d", report(0.12, 0.4, 3.0)) == "STOP"
    # A report without the objectives (an epoch's end) is never judged.
    assert decide("e", {"progress": 0.5, "dev_accuracy": 0.1}) == "CONTINUE"
    assert decide("a", report(0.34, 0.5, 1.0)) == "CONTINUE"
    assert decide("c", report(0.34, 0.7, 0.5)) == "CONTINUE"  # dominates a, but 2 of 2: top ceil(2/3)=1
    assert scheduler.stopped == {"b": 0.12, "d": 0.12}
    fifo = make_scheduler(DIRECTIONS, EarlyStopping())
    assert fifo.milestones == () and fifo.stopped == {}


def test_moasha_does_not_stop_a_trial_that_beats_the_rung() -> None:
    scheduler = make_scheduler(DIRECTIONS, EarlyStopping("moasha", reduction_factor=2, rungs=1))
    for i in range(4):  # each newcomer dominates everyone before it
        assert scheduler.decide(str(i), report(0.5, 0.5 + i / 10, 1.0 - i / 10)) == "CONTINUE"


@pytest.fixture
def setup(tiny_model_dir, sentiment_csv):
    config = SearchConfig(model=str(tiny_model_dir), task="classification", optimizer="random",
                          data=DataConfig(train_file=str(sentiment_csv), text_column="review",
                                          label_column="verdict"),
                          fidelity=Fidelity(max_train_examples=96, epochs=2, max_length=32, batch_size=16))
    setup, optimizer = prepare(config)
    return setup, optimizer


def test_a_trial_reports_its_objectives_at_each_rung(setup) -> None:
    setup, optimizer = setup
    setup = dataclasses.replace(setup, milestones=(1 / 4, 1 / 2))
    points: list[dict] = []
    result = run_trial(setup, optimizer.ask(), on_epoch=points.append)
    # 96 examples / 16 = 6 steps an epoch, 12 in all: rungs after steps 3 and 6; step 6 ends
    # epoch 1 too, whose report reuses the rung's evaluation.
    rungs = [p for p in points if OBJECTIVE_PREFIX + "accuracy" in p]
    assert [p["step"] for p in rungs] == [3.0, 6.0]
    assert [p["progress"] for p in rungs] == [0.25, 0.5]
    assert [p["epoch"] for p in points] == [0.5, 1.0, 1.0, 2.0]
    assert points[1]["dev_accuracy"] == points[2]["dev_accuracy"]
    for p in rungs:
        assert p[OBJECTIVE_PREFIX + "accuracy"] == p["dev_accuracy"]
        # A parameter count is known before training ends, and equals the final one.
        assert p[OBJECTIVE_PREFIX + "trainable_percent"] == pytest.approx(result.objectives["trainable_percent"])
    assert result.timing["train_steps"] == 12
    assert len(result.curves) == 2  # the kept epoch is chosen among epochs' ends only


def test_search_with_moasha_stops_trials_and_records_them(tiny_model_dir, tmp_path) -> None:
    data = write_sentiment_csv(tmp_path / "reviews.csv", rows=300)
    result = autopeft.search(
        task="classification", model=str(tiny_model_dir), train_file=str(data), text_column="review",
        label_column="verdict", optimizer="tpe", trials=8, max_train_examples=96, epochs=2, max_length=32,
        scheduler="moasha", reduction_factor=2, rungs=2, output_dir=str(tmp_path / "runs"), progress=False)
    stopped = [t for t in result.trials if t.status == "stopped"]
    completed = [t for t in result.trials if t.status == "completed"]
    assert stopped and completed, [t.status for t in result.trials]
    assert all(t.status in ("completed", "stopped") for t in result.trials)
    assert {t.name for t in result.front} <= {t.name for t in completed}
    full = max(t.metrics["train_steps"] for t in completed)
    for t in stopped:
        # Stopped at a rung (1/4 or 1/2 of 12 steps), with the objectives it had there.
        assert t.metrics["train_steps"] in (3.0, 6.0) and t.metrics["train_steps"] < full
        assert set(t.objectives) == {"accuracy", "trainable_percent"}

    client = MlflowClient(result.tracking_uri)
    for t in result.trials:
        run = client.get_run(t.run_id)
        assert run.data.tags["autopeft.status"] == t.status
        assert run.info.status == "FINISHED"
        # The run shows the trial's final figures, not those of a rung or epoch logged on the way
        # (MLflow shows a metric's value at its highest step).
        assert run.data.metrics["train_steps"] == t.metrics["train_steps"]
        assert all(run.data.metrics[k] == pytest.approx(v) for k, v in t.objectives.items())
    run = client.get_run(stopped[0].run_id)
    assert "accuracy" in run.data.metrics and run.data.metrics["progress"] <= 0.5
    assert client.get_run(result.run_id).data.params["early_stopping.scheduler"] == "moasha"


def test_stopped_trials_reach_the_optimizer_as_low_fidelity_observations(setup) -> None:
    from autopeft.driver.runner import OptimizerSearcher

    setup, _ = setup
    told = []

    class Recorder:
        def tell(self, config, values, metrics=None):
            told.append(("tell", values))

        def tell_stopped(self, config, values, metrics=None, *, fidelity):
            told.append(("stopped", values, fidelity))

    searcher = OptimizerSearcher(Recorder(), ["accuracy", "trainable_percent"], stopped={"t1": 0.25})
    searcher._pending = {"t1": {}, "t2": {}}
    searcher.on_trial_complete("t1", {**report(0.25, 0.6, 1.5), "dev_accuracy": 0.6})
    searcher.on_trial_complete("t2", {"autopeft_status": "failed"})
    assert told == [("stopped", [0.6, 1.5], 0.25), ("tell", None)]


def test_early_stopping_needs_objectives_known_part_way(tiny_model_dir) -> None:
    config = SearchConfig(model=str(tiny_model_dir), task="demo", objectives=["accuracy", "train_seconds"],
                          early_stopping=EarlyStopping("moasha"))
    with pytest.raises(ConfigError, match="train_seconds.*known only when a trial ends"):
        check_inputs(config)
    config.early_stopping = EarlyStopping("asha-typo")
    with pytest.raises(ConfigError, match="unknown scheduler 'asha-typo'"):
        check_inputs(config)
    config.early_stopping = EarlyStopping("moasha", reduction_factor=1)
    with pytest.raises(ConfigError, match="reduction_factor"):
        check_inputs(config)


@pytest.mark.parametrize("name", ["mobo", "random", "tpe", "nsga2"])
def test_every_optimizer_takes_a_stopped_trial_as_an_observation(name) -> None:
    from autopeft.optimizers import make_optimizer
    from autopeft.space import load_space

    optimizer = make_optimizer(name, load_space("lora").bind(4), ["maximize", "minimize"], seed=0, n_initial=2)
    config = optimizer.ask()
    optimizer.tell_stopped(config, [0.55, 0.2], {"dev_accuracy": 0.55}, fidelity=1 / 3)
    if name == "mobo":
        assert [list(y) for _, y, _ in optimizer._observed] == [[0.55, 0.2]] and not optimizer._failed
    else:
        (trial,) = optimizer.study.trials
        assert trial.state.name == "COMPLETE" and trial.values == [0.55, 0.2]
        assert trial.user_attrs["fidelity"] == pytest.approx(1 / 3)
    assert optimizer.ask() != config


def test_identical_results_share_a_place_at_a_rung() -> None:
    losses = np.array([[1, 0], [.9, 1], [1, .1], [1, .9], [.8, .5], [.2, .8], [.8, .5]])
    places = priority_ranks(losses)
    assert places[4] == places[6]
    scheduler = make_scheduler({"a": "minimize", "b": "minimize"}, EarlyStopping("moasha", rungs=1))
    decisions = [scheduler.decide(str(i), {"progress": 0.34, "objective/a": a, "objective/b": b})
                 for i, (a, b) in enumerate(losses)]
    assert decisions[6] == "CONTINUE"  # ties with trial 4, which holds a promoted place
