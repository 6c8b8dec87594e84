"""The search's ears: every trial event (start, epoch, end) goes to the records, the journal,
MLflow and the progress line, in that order."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from autopeft.driver.inputs import RESULT_METRICS
from autopeft.driver.journal import Journal
from autopeft.driver.progress import ProgressLine
from autopeft.driver.runner import DEVICE, GPUS, NODE_IP, STRATEGY_REPORT
from autopeft.objectives import OBJECTIVE_PREFIX
from autopeft.optimizers.knowledge import Knowledge
from autopeft.optimizers.outcomes import OutcomeConstraint
from autopeft.results.records import HypervolumeLog, ObjectiveInfo, TrialRecord, front_of, meets
from autopeft.results.tracking import SearchTracker
from autopeft.space import Config, SearchSpace
from autopeft.strategies import NO_STRATEGY, STRATEGY_PARAMETER
from autopeft.training.measure import Stopwatch


class Monitor:
    """Keeps the trial records and forwards each event to MLflow and the progress line."""

    def __init__(self, objectives: list[ObjectiveInfo], tracker: SearchTracker, progress: ProgressLine,
                 known: Knowledge, constraints: list[OutcomeConstraint], space: SearchSpace,
                 journal: Journal) -> None:
        self.objectives = objectives
        self.space = space
        self.constraints = constraints
        self.tracker = tracker
        self.progress = progress
        self.journal = journal
        # A resumed search starts from the trials that ended before it was interrupted.
        self.records: dict[str, TrialRecord] = {r.trial_id: r for r in journal.finished()}
        self.tracking = Stopwatch()
        self.hypervolume = journal.hypervolume = journal.hypervolume or HypervolumeLog(objectives, known.reference,
                                                                                        known.why)
        self._front_size: int | None = None

    def on_start(self, trial_id: str, config: Config, number: int | None = None) -> None:
        number = number or len(self.records) + 1
        record = self.journal.records.get(number)
        if record is not None:  # interrupted by a crash: run again, in the same MLflow run
            record.trial_id, record.status, record.error, record.node, record.curves = \
                trial_id, "running", None, None, []
            record.attempts += 1
            with self.tracking:
                self.tracker.restart_trial(record, record.attempts)
        else:
            record = TrialRecord(number, trial_id, dict(config),
                                 strategy=self.space.assemble(config).get(STRATEGY_PARAMETER) or NO_STRATEGY)
            with self.tracking:
                self.tracker.start_trial(record)
        self.records[trial_id] = self.journal.records[number] = record
        self.journal.save_record(record)
        self._show()

    def on_epoch(self, trial_id: str, point: dict[str, float]) -> None:
        # Tune adds its own bookkeeping (pid, time_this_iter_s, ...) to every report.
        point = {k: v for k, v in point.items() if k in _CURVE_KEYS or k.startswith("dev_")}
        record = self.records[trial_id]
        record.curves.append(point)
        with self.tracking:
            self.tracker.log_epoch(record, point)

    def on_complete(self, trial_id: str, result: dict[str, Any], adapter_dir: Path | None) -> None:
        record = self.records[trial_id]
        record.status = "completed"
        record.objectives = {o.name: float(result[OBJECTIVE_PREFIX + o.name]) for o in self.objectives}
        record.metrics = {k: float(v) for k, v in result.items()
                          if k in RESULT_METRICS or k.startswith("dev_") or k.endswith(_STAGE_SUFFIXES)}
        record.feasible = meets(record, self.constraints, self.objectives)
        record.strategy_report = json.loads(result.get(STRATEGY_REPORT) or "{}")
        record.adapter_dir = adapter_dir
        record.node = result.get(NODE_IP)
        record.device, record.gpus = result.get(DEVICE), result.get(GPUS)
        self._finished(record)

    def on_stopped(self, trial_id: str, result: dict[str, Any]) -> None:
        # Its objectives are those at the rung where it stopped: a low-fidelity observation,
        # kept for the record and never on the front.
        record = self.records[trial_id]
        record.status = "stopped"
        record.objectives = {o.name: float(result[OBJECTIVE_PREFIX + o.name]) for o in self.objectives}
        record.metrics = {k: float(v) for k, v in result.items() if k in _CURVE_KEYS or k.startswith("dev_")}
        record.node = result.get(NODE_IP)
        self._finished(record)

    def on_failed(self, trial_id: str, error: str, node: str | None = None, status: str = "failed",
                  result: dict[str, Any] | None = None) -> None:
        record = self.records[trial_id]
        record.status, record.error, record.node = status, error, node
        record.device, record.gpus = (result or {}).get(DEVICE), (result or {}).get(GPUS)
        self._finished(record)

    def _finished(self, record: TrialRecord) -> None:
        hv = self.hypervolume.add(list(self.records.values()))
        self.journal.save(record)  # before the store: --resume brings the store in line with it
        with self.tracking:
            self.tracker.finish_trial(record)
            self.tracker.log_hypervolume(hv, len(self.hypervolume.curve))
        self._show(ended=True)

    def _show(self, ended: bool = False) -> None:
        if not self.progress.enabled:
            return  # the front over every record at every event grows with the search
        records = list(self.records.values())
        if ended or self._front_size is None:  # the front changes only when a trial ends
            self._front_size = len(front_of(records, self.objectives))
        hv = self.hypervolume.curve[-1] if self.hypervolume.curve else 0.0
        counts = Counter(r.status for r in records)
        self.progress.update(counts["completed"], counts["running"], counts["failed"], self._front_size, hv,
                             stopped=counts["stopped"])


#: what a trial's curve point keeps: where in training it is, and the training loss
_CURVE_KEYS = ("epoch", "step", "progress", "train_steps", "train_loss")
#: per-stage figures of a trial (``search_stage_seconds``, ``train_stage_examples_per_second``)
_STAGE_SUFFIXES = ("_stage_seconds", "_stage_examples_per_second")
