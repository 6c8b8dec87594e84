"""MLflow: one parent run per search, one nested child run per trial.

Uses ``MlflowClient`` with explicit run ids rather than mlflow's fluent API, whose active-run
stack is global state that nested, concurrent trials would have to share.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from autopeft.records import ObjectiveInfo, TrialRecord

ROLE = "autopeft.role"
STATUS = "autopeft.status"
FEASIBLE = "autopeft.feasible"  # "false" on a completed trial that breaks an outcome constraint
PARETO = "autopeft.pareto"
PARENT = "mlflow.parentRunId"
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
        return found.experiment_id
    location = artifact_root.resolve().as_uri() if artifact_root else None
    return client.create_experiment(name, artifact_location=location)


class SearchTracker:
    """Writes a search into MLflow; all calls come from the driver process."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id(self.client, experiment, artifact_root)
        self.parent_id: str | None = None

    def start_search(self, name: str, params: dict[str, Any], objectives: list[ObjectiveInfo]) -> str:
        tags = {ROLE: "search", STATUS: "running",
                "autopeft.objectives": json.dumps([[o.name, o.direction] for o in objectives])}
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
                "autopeft.trial_number": str(record.number)}
        run = self.client.create_run(self.experiment_id, run_name=record.name, tags=tags)
        record.run_id = run.info.run_id
        self._log_params(record.run_id, {"strategy": record.strategy, **record.config})

    def log_epoch(self, record: TrialRecord, point: dict[str, float]) -> None:
        step = int(point.get("epoch", 0))
        metrics = [Metric(k, float(v), _now_ms(), step) for k, v in point.items()
                   if k != "epoch" and isinstance(v, (int, float))]
        self.client.log_batch(record.run_id, metrics=metrics)

    def finish_trial(self, record: TrialRecord) -> None:
        status = "FINISHED" if record.status == "completed" else "FAILED"
        values = {**record.metrics, **record.objectives}
        metrics = [Metric(k, float(v), _now_ms(), 0) for k, v in values.items()]
        tags = [RunTag(STATUS, record.status)]
        if record.status == "completed":
            tags.append(RunTag(FEASIBLE, str(record.feasible).lower()))
        if record.error:
            tags.append(RunTag("autopeft.error", record.error[:5000]))
        report = {k: v for k, v in record.strategy_report.items() if k != "name"}
        metrics += [Metric(k, v, _now_ms(), 0) for k, v in flat_numbers(report).items()]
        self.client.log_batch(record.run_id, metrics=metrics, tags=tags)
        if report:
            self.client.log_dict(record.run_id, record.strategy_report, "strategy.json")
        self.client.set_terminated(record.run_id, status=status)

    def log_hypervolume(self, value: float, step: int) -> None:
        """The search's hypervolume after its ``step``-th finished trial (logged as it happens)."""
        self.client.log_metric(self.parent_id, "hypervolume", value, _now_ms(), step)

    def finish_search(self, records: list[TrialRecord], files: dict[str, Path], adapters: dict[str, Path],
                      status: str = "completed") -> None:
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
        self.client.set_tag(self.parent_id, STATUS, status)
        self.client.set_terminated(self.parent_id, status="FINISHED" if status == "completed" else "FAILED")

    def fail_search(self, message: str) -> None:
        if self.parent_id:
            self.client.set_tag(self.parent_id, "autopeft.error", message[:5000])
            self.client.set_tag(self.parent_id, STATUS, "failed")
            self.client.set_terminated(self.parent_id, status="FAILED")


def latest_search(client: MlflowClient, experiment: str) -> tuple[Any, list[Any]]:
    """The newest search run of ``experiment`` and its trial runs (for ``autopeft front``)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None, []
    parents = client.search_runs([exp.experiment_id], filter_string=f"tags.`{ROLE}` = 'search'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        return None, []
    parent = parents[0]
    children = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.`{PARENT}` = '{parent.info.run_id}'",
                                  max_results=10_000)
    return parent, children


