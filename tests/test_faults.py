"""Trials that fail in each way trials fail (an exception, a NaN loss, out of memory under the
memory cap, a killed worker), injected with ``AUTOPEFT_FAILPOINTS``: each recorded as failed
with its reason, and the search completes its budget (tiny model, real Ray, real MLflow)."""

from __future__ import annotations

import json

import pytest
import torch
from mlflow.tracking import MlflowClient

import autopeft
from autopeft.training import failpoints
from autopeft.trial.failures import failure_reason, memory_cap
from autopeft.driver.runner import check_cluster_paths, ray_session
from autopeft.errors import ClusterError
from autopeft.results.tracking import ATTEMPTS, FAILURE, NODE, STATUS

#: what each kind's recorded reason says
REASONS = {"exception": "injected fault: the trial raised", "nan_loss": "training loss is nan",
           "out_of_memory": "out of memory", "worker_killed": "worker process died"}


def test_an_allocation_past_the_memory_cap_fails_and_the_cap_goes_with_the_block() -> None:
    with memory_cap(0.25):
        with pytest.raises((MemoryError, RuntimeError)) as err:
            torch.ones(2**30, dtype=torch.uint8)  # 1 GB
        assert failure_reason(err.value).startswith("out of memory: ")
    assert torch.ones(2**30, dtype=torch.uint8).numel() == 2**30
    assert failure_reason(ValueError("bad value\nmore")) == "ValueError: bad value"


def test_faults_follow_the_configuration_and_the_share(monkeypatch) -> None:
    configs = [{"rank": r, "lr": r / 7} for r in range(400)]
    assert all(failpoints.fault_for(c) is None for c in configs)  # unset: nothing happens
    monkeypatch.setenv(failpoints.ENV, json.dumps({"share": 0.25, "kinds": ["exception", "hang"]}))
    faults = [failpoints.fault_for(c) for c in configs]
    assert faults == [failpoints.fault_for(c) for c in configs]
    assert 0.18 < sum(f is not None for f in faults) / len(faults) < 0.32
    assert {f for f in faults if f} == {"exception", "hang"}


def test_a_node_that_cannot_see_a_folder_is_named(tmp_path) -> None:
    with ray_session():
        check_cluster_paths({"output folder": str(tmp_path)})
        with pytest.raises(ClusterError, match=r"cannot see the model folder at /no/such/model"):
            check_cluster_paths({"output folder": str(tmp_path), "model folder": "/no/such/model"})


@pytest.mark.slow
def test_each_fault_is_recorded_with_its_reason_and_the_search_goes_on(
        tiny_model_dir, sentiment_csv, tmp_path, monkeypatch) -> None:
    kinds = list(REASONS)
    monkeypatch.setenv(failpoints.ENV, json.dumps({"share": 0.8, "kinds": kinds}))
    result = autopeft.search(
        task="classification", model=str(tiny_model_dir), train_file=str(sentiment_csv), text_column="review",
        label_column="verdict", optimizer="random", trials=8, seed=1, max_train_examples=48, max_length=32,
        output_dir=str(tmp_path / "runs"), experiment="faults", progress=False, trial_memory=1.0, retries=1,
        learned_only=False)  # too few steps to learn: every completed trial counts
    assert len(result.trials) == 8
    client = MlflowClient(result.tracking_uri)
    met = set()
    for record in result.trials:
        run = client.get_run(record.run_id)
        fault = failpoints.fault_for(record.config)
        assert run.data.tags[NODE]  # every trial names its Ray node, failed or not
        if fault is None:
            assert record.status == run.data.tags[STATUS] == "completed"
            continue
        met.add(fault)
        assert record.status == run.data.tags[STATUS] == "failed"
        assert REASONS[fault] in run.data.tags[FAILURE], (fault, run.data.tags[FAILURE])
        # a dead worker is retried (limits.retries), an error of the trial's own is not
        assert run.data.tags.get(ATTEMPTS, "1") == ("2" if fault == "worker_killed" else "1")
    assert len(met) >= 3, met  # seed 1's eight configurations meet most kinds
    assert result.front


def test_a_trial_that_errs_before_it_starts_is_recorded_as_failed() -> None:
    # Seen on a GPU machine: a node whose workers could not import the trainable (a module
    # missing there) ended trials that Tune never started; the driver knew nothing of them and
    # the search died with a KeyError. Each is now started for the listeners, then failed.
    from types import SimpleNamespace

    from autopeft.driver.runner import _Forward

    events = []

    class Listener:
        def on_start(self, trial_id, config, number=None):
            events.append(("start", trial_id, config))

        def on_failed(self, trial_id, error, node=None, status="failed"):
            events.append(("failed", trial_id, error))

    trial = SimpleNamespace(trial_id="t1", config={"params": {"rank": 4}}, last_result={}, location=None,
                            get_error=lambda: RuntimeError("The actor with name ImplicitFunc failed to import"))
    forward = _Forward([Listener()], {})
    forward.on_trial_error(0, [trial], trial)
    assert events == [("start", "t1", {"rank": 4}),
                      ("failed", "t1", "The actor with name ImplicitFunc failed to import")]
