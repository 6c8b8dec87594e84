"""MLflow: one parent run per search, one nested child run per trial.

Uses ``MlflowClient`` with explicit run ids rather than mlflow's fluent API, whose active-run
stack is global state that nested, concurrent trials would have to share.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from autopeft.errors import AutopeftError, ConfigError
from autopeft.results.records import ObjectiveInfo, TrialRecord, front_of, learned, parse_param

from autopeft.results.tags import (ATTEMPTS, BASELINE, CONFIG_ARTIFACT, DEVICE, DRIVER, EVALUATES, EXPERIMENT_KIND,  # noqa: F401
                                   GPUS,
                                   FAILURE, FEASIBLE, JOURNAL, LEGACY_FAILURE, NODE, NOTE, OBJECTIVES, PARENT,
                                   PARETO, RESUMES, REUSED, ROLE, STATUS, TRIAL_NUMBER)

MAX_PARAM = 6000  # MLflow's limit on a param value's length


def _now_ms() -> int:
    return int(time.time() * 1000)


def flat_numbers(report: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a nested report as MLflow metric names (``flexora_gate.3``); lists of
    records (a schedule) stay in the report's JSON artifact only."""
    out: dict[str, float] = {}
    for key, value in report.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool) or isinstance(value, (int, float)):
            out[name] = float(value)
        elif isinstance(value, dict):
            out.update(flat_numbers(value, f"{name}."))
    return out


def experiment_id(client: MlflowClient, name: str, artifact_root: Path | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        if EXPERIMENT_KIND[0] not in found.tags:  # an experiment made by hand or an older autopeft
            client.set_experiment_tag(found.experiment_id, *EXPERIMENT_KIND)
        return found.experiment_id
    location = artifact_root.resolve().as_uri() if artifact_root else None
    return client.create_experiment(name, artifact_location=location, tags=dict([EXPERIMENT_KIND]))


class SearchTracker:
    """Writes a search into MLflow; all calls come from the driver process."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id(self.client, experiment, artifact_root)
        self.parent_id: str | None = None

    def start_search(self, name: str, params: dict[str, Any], objectives: list[ObjectiveInfo],
                     tags: dict[str, str] | None = None) -> str:
        tags = {ROLE: "search", STATUS: "running",
                OBJECTIVES: json.dumps([[o.name, o.direction, o.floor] for o in objectives]), **(tags or {})}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self.parent_id = run.info.run_id
        self._log_params(self.parent_id, params)
        return self.parent_id

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = [Param(str(k), str(v)[:MAX_PARAM]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=items[i:i + 100])

    def start_trial(self, record: TrialRecord) -> None:
        tags = {PARENT: self.parent_id, ROLE: "trial", STATUS: "running",
                TRIAL_NUMBER: str(record.number)}
        run = self.client.create_run(self.experiment_id, run_name=record.name, tags=tags)
        record.run_id = run.info.run_id
        self._log_params(record.run_id, {"strategy": record.strategy, **record.config})

    def restart_trial(self, record: TrialRecord, attempt: int) -> None:
        """``record``'s run, running again: its trial is rerun after a crash interrupted it
        (the first attempt's curve points stay in its history, before the new ones)."""
        self.client.update_run(record.run_id, status="RUNNING")
        self.client.log_batch(record.run_id, tags=[RunTag(STATUS, "running"), RunTag(ATTEMPTS, str(attempt))])
        for tag in (FAILURE, NODE, DEVICE, GPUS):
            if tag in self.client.get_run(record.run_id).data.tags:
                self.client.delete_tag(record.run_id, tag)

    def log_epoch(self, record: TrialRecord, point: dict[str, float]) -> None:
        step = int(point.get("step", point.get("epoch", 0)))
        metrics = [Metric(k, float(v), _now_ms(), step) for k, v in point.items()
                   if k != "step" and isinstance(v, (int, float))]
        self.client.log_batch(record.run_id, metrics=metrics)

    def finish_trial(self, record: TrialRecord) -> None:
        # A trial stopped early did what it was asked to (a low-fidelity observation).
        status = {"completed": "FINISHED", "stopped": "FINISHED", "interrupted": "KILLED"}.get(record.status, "FAILED")
        values = {**record.metrics, **record.objectives}
        # At the trial's last step: MLflow shows a metric's value at its highest step, and the
        # rungs and epochs logged the same names on the way (at their training step).
        step = int(record.metrics.get("train_steps", 0))
        metrics = [Metric(k, float(v), _now_ms(), step) for k, v in values.items()]
        tags = [RunTag(STATUS, record.status)]
        if record.status == "completed":
            tags.append(RunTag(FEASIBLE, str(record.feasible).lower()))
        if record.error:
            tags.append(RunTag(FAILURE, record.error[:5000]))
        if record.node:
            tags.append(RunTag(NODE, record.node))
        if record.device:
            tags += [RunTag(DEVICE, record.device[:5000]), RunTag(GPUS, record.gpus or "")]
        report = {k: v for k, v in record.strategy_report.items() if k != "name"}
        metrics += [Metric(k, v, _now_ms(), step) for k, v in flat_numbers(report).items()]
        self.client.log_batch(record.run_id, metrics=metrics, tags=tags)
        if report:
            self.client.log_dict(record.run_id, record.strategy_report, "strategy.json")
        self.client.set_terminated(record.run_id, status=status)

    def log_hypervolume(self, value: float, step: int) -> None:
        """The search's hypervolume after its ``step``-th finished trial (logged as it happens)."""
        self.client.log_metric(self.parent_id, "hypervolume", value, _now_ms(), step)

    def finish_search(self, records: list[TrialRecord], files: dict[str, Path], adapters: dict[str, Path],
                      status: str = "completed", description: str = "") -> None:
        """Mark the front, log test scores, artifacts and adapters, and write ``description``
        (the front as Markdown) where the MLflow UI shows it first, on the parent run's page."""
        for record in records:
            if record.run_id is None:
                continue
            self.client.set_tag(record.run_id, PARETO, str(record.pareto).lower())
            if record.test_metrics:
                self.client.log_batch(record.run_id, metrics=[
                    Metric(f"test_{k}", float(v), _now_ms(), 0) for k, v in record.test_metrics.items()])
        for path in files.values():
            self.client.log_artifact(self.parent_id, str(path))
        if adapters:
            # log_artifacts keeps a folder's name only through a staging folder of the right shape
            with tempfile.TemporaryDirectory() as tmp:
                for name, src in adapters.items():
                    shutil.copytree(src, Path(tmp) / name)
                self.client.log_artifacts(self.parent_id, tmp, artifact_path="adapters")
        if description:
            self.client.set_tag(self.parent_id, NOTE, description)
        self.client.set_tag(self.parent_id, STATUS, status)
        self.client.set_terminated(self.parent_id, status="FINISHED" if status == "completed" else "FAILED")

    def fail_search(self, message: str) -> None:
        if self.parent_id:
            self.client.set_tag(self.parent_id, FAILURE, message[:5000])
            self.client.set_tag(self.parent_id, STATUS, "failed")
            self.client.set_terminated(self.parent_id, status="FAILED")


def evaluation_run(client: MlflowClient, stored: StoredSearch, trial: TrialRecord, seed: int,
                   fidelity: Any, baseline: str | None = None) -> str:
    """A run for one retraining of ``trial`` with ``seed``, nested under the search; for a
    ``baseline`` (``trial`` then holds its pinned values), a baseline run of that name."""
    tags = {PARENT: stored.parent.info.run_id, ROLE: "baseline" if baseline else "evaluation", STATUS: "running",
            **({BASELINE: baseline} if baseline else {EVALUATES: trial.run_id, TRIAL_NUMBER: str(trial.number)})}
    name = baseline or trial.name
    run = client.create_run(stored.parent.info.experiment_id, run_name=f"{name}-seed{seed}", tags=tags)
    params = {**trial.config, "seed": seed,
              **{f"fidelity.{k}": v for k, v in dataclasses.asdict(fidelity).items()}}
    client.log_batch(run.info.run_id, params=[Param(str(k), str(v)[:MAX_PARAM]) for k, v in params.items()])
    return run.info.run_id


def finish_evaluation_run(client: MlflowClient, run_id: str, dev: dict[str, float], test: dict[str, float],
                          error: str | None = None, node: str | None = None) -> None:
    metrics = [Metric(k, float(v), _now_ms(), 0) for k, v in {**dev, **test}.items()]
    tags = [RunTag(STATUS, "failed" if error else "completed")] + ([RunTag(FAILURE, error[:5000])] if error else [])
    tags += [RunTag(NODE, node)] if node else []
    client.log_batch(run_id, metrics=metrics, tags=tags)
    client.set_terminated(run_id, status="FAILED" if error else "FINISHED")


@dataclass
class StoredSearch:
    """A search read back from MLflow: its parent run, objectives and trials."""

    parent: Any
    objectives: list[ObjectiveInfo]
    records: list[TrialRecord]
    runs: list[Any]  # the trials' MLflow runs, in the order of ``records``

    @property
    def status(self) -> str:
        return self.parent.data.tags.get(STATUS, "running")

    def rows(self, records: list[TrialRecord] | None = None) -> list[dict[str, Any]]:
        """One row per trial with the MLflow run's own names: identity and state, then the
        objectives, the other metrics and the params (a front member's ``pareto`` is true)."""
        front = {r.run_id for r in front_of(self.records, self.objectives)}
        by_id = {run.info.run_id: run for run in self.runs}
        names = [o.name for o in self.objectives]
        out = []
        for record in records if records is not None else self.records:
            run = by_id[record.run_id]
            metrics = run.data.metrics
            out.append({"trial": record.number, "run_id": record.run_id, "status": record.status,
                        "feasible": record.feasible,
                        "learned": learned(record, self.objectives) if record.status == "completed" else None,
                        "pareto": record.run_id in front,
                        **{n: metrics.get(n) for n in names},
                        **{k: metrics[k] for k in sorted(metrics) if k not in names},
                        **{k: parse_param(v) for k, v in sorted(run.data.params.items())},
                        "error": run.data.tags.get(FAILURE) or run.data.tags.get(LEGACY_FAILURE)})
        return out

    def front(self) -> list[TrialRecord]:
        return front_of(self.records, self.objectives)


def load_search(client: MlflowClient, experiment: str | None, run_id: str | None = None) -> StoredSearch | None:
    """The search ``run_id`` (else the newest one) of ``experiment`` (``None``: of any
    experiment in the store) with its trials."""
    if run_id:
        try:
            parent = client.get_run(run_id)
        except MlflowException:
            return None
        if parent.data.tags.get(ROLE) != "search":
            return None
        if experiment is not None and client.get_experiment(parent.info.experiment_id).name != experiment:
            return None
    else:
        parents = latest_searches(client, experiment, 1)
        if not parents:
            return None
        parent = parents[0]
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`{PARENT}` = '{parent.info.run_id}'",
                                  max_results=10_000)
    # [name, direction] (searches before floors), or [name, direction, floor]
    objectives = [ObjectiveInfo(*item) for item in json.loads(parent.data.tags[OBJECTIVES])]
    pairs = []
    for run in children:
        if run.data.tags.get(ROLE) != "trial":
            continue
        metrics = run.data.metrics
        status = run.data.tags.get(STATUS, "running")
        if status == "completed" and not all(o.name in metrics for o in objectives):
            status = "failed"
        pairs.append((TrialRecord(
            int(run.data.tags.get(TRIAL_NUMBER, 0)), run.info.run_id,
            {k: parse_param(v) for k, v in run.data.params.items()},
            status=status, objectives={o.name: metrics[o.name] for o in objectives if o.name in metrics},
            test_metrics={k[5:]: v for k, v in metrics.items() if k.startswith("test_")},
            feasible=run.data.tags.get(FEASIBLE) != "false", run_id=run.info.run_id,
            node=run.data.tags.get(NODE), device=run.data.tags.get(DEVICE), gpus=run.data.tags.get(GPUS)), run))
    pairs.sort(key=lambda pair: pair[0].number)
    return StoredSearch(parent, objectives, [p[0] for p in pairs], [p[1] for p in pairs])


def latest_searches(client: MlflowClient, experiment: str | None, limit: int = 1) -> list[Run]:
    """The parent runs of the newest ``limit`` searches of ``experiment`` (``None``: of every
    experiment in the store), newest first."""
    if experiment is None:
        ids = [e.experiment_id for e in client.search_experiments()]
    else:
        found = client.get_experiment_by_name(experiment)
        ids = [found.experiment_id] if found is not None else []
    if not ids:
        return []
    return client.search_runs(ids, filter_string=f"tags.`{ROLE}` = 'search'",
                              order_by=["attributes.start_time DESC"], max_results=limit)


def searched_experiments(client: MlflowClient) -> list[tuple[str, str]]:
    """(name, id) of every experiment that holds a search, the one with the newest first."""
    out: dict[str, str] = {}
    for run in latest_searches(client, None, 10_000):
        experiment = client.get_experiment(run.info.experiment_id)
        out.setdefault(experiment.name, experiment.experiment_id)
    return list(out.items())


def stored_front(tracking_uri: str, run_id: str) -> tuple[str, list[TrialRecord]]:
    """The space name and the front of search ``run_id``, whatever its experiment; a
    ConfigError naming the run when the store has no such search."""
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        run = None
    if run is None or run.data.tags.get(ROLE) != "search":
        raise ConfigError(f"no search run '{run_id}' in {tracking_uri}", key="warm_start")
    stored = load_search(client, client.get_experiment(run.info.experiment_id).name, run_id)
    return run.data.params.get("space", ""), stored.front()


def open_search(tracking_uri: str, experiment: str | None, run_id: str | None = None, *,
                explicit_uri: bool = False) -> tuple[MlflowClient, StoredSearch]:
    """The client and the search ``run_id`` (else the latest) of ``experiment`` (``None``: of
    any experiment); a one-line AutopeftError when there is no store (a default SQLite file
    that is not there) or no search."""
    if not explicit_uri and tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[10:]).exists():
        raise AutopeftError("no search store here; run `autopeft search` or give --output-dir or "
                            "--tracking-uri", source=tracking_uri[10:])
    client = MlflowClient(tracking_uri=tracking_uri)
    stored = load_search(client, experiment, run_id)
    if stored is not None:
        from autopeft.results.crashes import mark_if_crashed

        if mark_if_crashed(client, stored):
            stored = load_search(client, experiment, stored.parent.info.run_id)
    if stored is None:
        where = f"experiment '{experiment}'" if experiment is not None else "the store"
        raise AutopeftError(f"no search {run_id + ' ' if run_id else ''}found in {where}", source=tracking_uri)
    return client, stored
