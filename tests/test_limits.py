"""Limits on a search (`limits:` in a config, `--trial-timeout` ...): a trial that hangs past
its timeout, a search that keeps failing, a time budget, and per-trial resources; each on a
real search (tiny model, real Ray, real MLflow store)."""

from __future__ import annotations

import time

import pytest
import ray

import autopeft
from autopeft.cli import build_parser
from autopeft.config import Limits, load_config
from autopeft.errors import ClusterError, ConfigError
from autopeft.driver.runner import Resources, plan_resources, ray_session

from test_search_e2e import runs_of


def _search(tiny_model_dir, sentiment_csv, tmp_path, objective, **options):
    return autopeft.search(
        task="classification", model=str(tiny_model_dir), train_file=str(sentiment_csv),
        text_column="review", label_column="verdict", objectives=[objective, "trainable_percent"],
        optimizer="random", max_train_examples=48, max_length=32, output_dir=str(tmp_path / "runs"),
        experiment="limits", progress=False, learned_only=False, **options)  # too few steps to learn


@pytest.mark.parametrize("key, value, message", [
    ("trial_timeout", 0, "must be a positive number"),
    ("max_failures", 1.5, "must be a positive integer"),
    ("gpus_per_trial", -1, "must be a non-negative number"),
])
def test_bad_limits_are_config_errors_naming_the_key(tmp_path, key, value, message) -> None:
    path = tmp_path / "search.yaml"
    path.write_text(f"limits: {{{key}: {value}}}\n")
    with pytest.raises(ConfigError, match=message) as err:
        load_config(str(path), {})
    assert f"limits.{key}" in str(err.value)


def test_limits_come_from_flags_as_numbers() -> None:
    args = build_parser().parse_args(["search", "--trial-timeout", "90.5", "--max-failures", "3",
                                      "--gpus-per-trial", "0.5"])
    assert vars(args)["limits.trial_timeout"] == 90.5 and vars(args)["limits.max_failures"] == 3
    assert vars(args)["limits.gpus_per_trial"] == 0.5


def test_resources_per_trial_override_the_even_split() -> None:
    # Two declared GPUs: Ray schedules them as it would real ones, and this machine has none.
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False)
    try:
        with ray_session():
            assert plan_resources(2) == Resources(1, 1.0)
            assert plan_resources(4).gpus_per_trial == 0.5
            assert plan_resources(2, Limits(cpus_per_trial=1, gpus_per_trial=0.25)) == Resources(1, 0.25)
            assert plan_resources(2, Limits(gpus_per_trial=0)).gpus_per_trial == 0
            with pytest.raises(ClusterError, match="asks for 3 GPUs and the largest node has 2"):
                plan_resources(2, Limits(gpus_per_trial=3))
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_a_trial_past_its_timeout_fails_and_the_search_goes_on(tiny_model_dir, sentiment_csv, tmp_path) -> None:
    flag = tmp_path / "hung-once"

    @autopeft.objective("maximize")
    def hangs_once(trial: autopeft.TrialOutput) -> float:
        if not flag.exists():  # runs in the trial's worker: the first trial hangs
            flag.write_text("x")
            time.sleep(600)
        return trial.metrics["accuracy"]

    started = time.monotonic()
    result = _search(tiny_model_dir, sentiment_csv, tmp_path, hangs_once, trials=3, trial_timeout=15)
    assert time.monotonic() - started < 300  # not the 600 s of the hang
    assert sorted(t.status for t in result.trials) == ["completed", "completed", "failed"]
    failed = next(t for t in result.trials if t.status == "failed")
    assert "trial timeout (15 s)" in failed.error
    _, _, children = runs_of(result.tracking_uri, "limits")
    reasons = [c.data.tags.get("autopeft.failure", "") for c in children if c.data.tags["autopeft.status"] == "failed"]
    assert len(children) == 3 and len(reasons) == 1 and "trial timeout" in reasons[0]


@pytest.mark.slow
def test_max_failures_ends_the_search(tiny_model_dir, sentiment_csv, tmp_path) -> None:
    @autopeft.objective("maximize")
    def always_fails(trial: autopeft.TrialOutput) -> float:
        raise RuntimeError("broken objective")

    result = _search(tiny_model_dir, sentiment_csv, tmp_path, always_fails, trials=6, max_failures=2)
    assert [t.status for t in result.trials] == ["failed", "failed"]
    assert all("broken objective" in t.error for t in result.trials)
    _, parents, children = runs_of(result.tracking_uri, "limits")
    assert len(children) == 2 and parents[0].info.status == "FINISHED"


@pytest.mark.slow
def test_the_time_budget_ends_the_search_and_marks_what_it_cut(tiny_model_dir, sentiment_csv, tmp_path) -> None:
    @autopeft.objective("maximize")
    def slow(trial: autopeft.TrialOutput) -> float:
        time.sleep(300)  # the first trial is still running when the budget ends
        return trial.metrics["accuracy"]

    started = time.monotonic()
    # The budget counts from the start of Ray Tune's run: 45 s lets the first trial start on a
    # 2-core machine busy with another test (at 20 s it once had not, and nothing was cut).
    result = _search(tiny_model_dir, sentiment_csv, tmp_path, slow, trials=20, time_budget=45)
    assert time.monotonic() - started < 240  # not the 300 s of the trial
    assert [t.status for t in result.trials] == ["interrupted"] and not result.front
    assert "time budget (45 s)" in result.trials[0].error
    _, parents, children = runs_of(result.tracking_uri, "limits")
    assert parents[0].info.status == "FINISHED" and len(children) == 1
    assert children[0].info.status == "KILLED" and children[0].data.tags["autopeft.status"] == "interrupted"
    assert "time budget (45 s)" in children[0].data.tags["autopeft.failure"]


def test_the_local_ray_listens_on_loopback_only() -> None:
    import os

    import psutil

    from autopeft.driver.reaper import TOKEN

    with ray_session():
        token = os.environ[TOKEN]
        ray_pids = set()
        for process in psutil.process_iter():
            try:
                if process.environ().get(TOKEN) == token:
                    ray_pids.add(process.pid)
            except psutil.Error:
                pass
        listening = [c for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.pid in ray_pids]
        assert ray.util.get_node_ip_address() == "127.0.0.1"
    assert listening and {c.laddr.ip for c in listening} <= {"127.0.0.1", "::ffff:127.0.0.1"}, \
        sorted({(c.laddr.ip, c.laddr.port) for c in listening})
