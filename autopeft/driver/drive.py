"""The search driver: validate everything, run the trials, then report and export the front
(``autopeft.search`` and ``autopeft search`` call it; a module name of its own, so that importing
it never shadows the ``autopeft.search`` function)."""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autopeft.config import SECTIONS, SearchConfig, config_record
from autopeft.costs import COSTS
from autopeft.driver.inputs import outcome_constraints
from autopeft.driver.journal import Journal, journal_path
from autopeft.driver.monitor import Monitor
from autopeft.driver.progress import ProgressLine
from autopeft.driver.resume import resume_search
from autopeft.driver.runner import ray_session, run_trials
from autopeft.driver.setup import prepare
from autopeft.errors import ConfigError
from autopeft.objectives import Objective
from autopeft.optimizers.knowledge import Knowledge
from autopeft.results.crashes import driver_identity
from autopeft.results.records import HypervolumeLog, ObjectiveInfo, TrialRecord, front_of, front_table
from autopeft.results.report import front_markdown, format_front, plot_front_html, plot_front_png, plot_hypervolume_png
from autopeft.results.tracking import CONFIG_ARTIFACT, DRIVER, JOURNAL, SearchTracker
from autopeft.trial.run import SearchSetup, score_adapter

#: keyword names of :func:`search` that live in a nested section of SearchConfig
_NESTED = {f.name: f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}


@dataclass
class SearchResult:
    """What a finished search found: every trial, the Pareto front and where it is stored."""

    objectives: list[ObjectiveInfo]
    trials: list[TrialRecord]
    front: list[TrialRecord]
    reference_point: np.ndarray
    hypervolume: list[float]
    run_id: str
    tracking_uri: str
    artifact_uri: str = ""
    seconds: float = 0.0
    #: where the wall time went: ray_start, suggest, tracking, fit (all trials), final_report
    timings: dict[str, float] = field(default_factory=dict)
    #: the data searched on: files, columns, labels, sizes and what loading dropped
    data: str = ""
    #: the front retrained at full fidelity over seeds (``final_seeds``; autopeft.evaluate)
    evaluation: pd.DataFrame | None = None
    #: the hypervolume's reference point and where each value comes from; which trials count
    reference_rule: str = ""

    def table(self) -> pd.DataFrame:
        """The front as a DataFrame (objectives, test scores, costs, configuration)."""
        return front_table(self.front, self.objectives)

    def __str__(self) -> str:
        return f"{self.data}\n\n{format_front(self.front, self.objectives)}" if self.data else \
            format_front(self.front, self.objectives)


def reference_rule(objectives: list[ObjectiveInfo], known: Knowledge) -> str:
    """The hypervolume's reference point, where each value comes from, and which trials
    learned nothing (what the log, the parent run and the plot say)."""
    text = "hypervolume " + HypervolumeLog(objectives, known.reference, known.why).rule
    floors = [f"{o.name} {'at or below' if o.direction == 'maximize' else 'at or above'} {o.floor:.4g}"
              for o in objectives if o.floor is not None]
    if floors:
        text += f"; trials with {' or '.join(floors)} learned nothing: listed among the trials, never on the front"
    return text


def describe_data(setup: SearchSetup) -> str:
    """What the search trains and scores on, and what loading dropped."""
    data = setup.data
    labels = f"labels {data.label_names}; " if data.label_names else ""
    text = (f"data: {data.description}; {labels}{len(setup.train_tokens)} train, "
            f"{len(setup.dev_tokens)} dev, {len(data.test)} test examples")
    return text + "".join(f"\n  note: {note}" for note in data.notes)


def _search_params(config: SearchConfig, setup: SearchSetup, objectives: list[ObjectiveInfo]) -> dict[str, Any]:
    """What the parent run's params say of the search."""
    params = {"model": setup.model_path, "task": config.task, "space": setup.space.spec.name,
              "space_file": setup.space.spec.source, "optimizer": config.optimizer, "trials": config.trials,
              "concurrency": config.concurrency, "seed": config.seed,
              "data_seed": config.data_seed, "training_seed": config.training_seed,
              "objectives": ",".join(f"{o.name}:{o.direction}" for o in objectives),
              "optimizer_options": config.optimizer_options,
              "fixed": config.fixed, "train_examples": len(setup.train_tokens),
              "dev_examples": len(setup.dev_tokens), "test_examples": len(setup.data.test),
              "data": setup.data.description, "labels": ",".join(setup.data.label_names),
              "data_notes": "; ".join(setup.data.notes) or "none",
              **{f"fidelity.{k}": v for k, v in dataclasses.asdict(config.fidelity).items()},
              **{f"early_stopping.{k}": v for k, v in dataclasses.asdict(config.early_stopping).items()},
              **{f"limits.{k}": v for k, v in dataclasses.asdict(config.limits).items() if v is not None}}
    if config.warm_start:
        params["warm_start"] = config.warm_start if isinstance(config.warm_start, str) else \
            f"{len(config.warm_start)} configurations"
    return params


def run_search(config: SearchConfig, *, progress: bool = True, resume: str | bool | None = None) -> SearchResult:
    """Run a whole search as ``config`` says; see :func:`search` for the keyword form.
    ``resume``: continue the search with that run id (True: the experiment's latest), whose
    driver died, with the same ``config``."""
    started = time.monotonic()
    # Checking fills in what the task decides (objectives, trials, space, fidelity): on a copy,
    # so that the caller's config still means "the task's" for its next search.
    config = dataclasses.replace(config)
    setup, optimizer = prepare(config)
    known = setup.knowledge
    objectives = [ObjectiveInfo(o.name, o.direction, known.floors.get(o.name)) for o in setup.objectives]
    out_dir = Path(config.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tracker = SearchTracker(config.resolved_tracking_uri, config.experiment,
                            out_dir / "artifacts" if not config.tracking_uri else None)
    if resume:
        journal, name = resume_search(tracker, config, None if resume is True else str(resume))
        run_id = tracker.parent_id
    else:
        name = f"search-{time.strftime('%Y%m%d-%H%M%S')}"
        journal = Journal(journal_path(out_dir, name), optimizer)
        run_id = tracker.start_search(name, {**_search_params(config, setup, objectives),
                                             "reference_rule": reference_rule(objectives, known)}, objectives,
                                      tags={JOURNAL: str(journal.path.resolve()), DRIVER: driver_identity()})
        tracker.client.log_dict(run_id, config_record(config), CONFIG_ARTIFACT)
        journal.save()
    if progress:
        print(f"{describe_data(setup)}\n{reference_rule(objectives, known)}", file=sys.stderr)
    line = ProgressLine(config.trials, enabled=progress)
    monitor = Monitor(objectives, tracker, line, known,
                       outcome_constraints(config, [o.name for o in objectives]), setup.space, journal)
    # One Ray for the trials and the final evaluation's retrainings (starting one costs ~8 s).
    with ray_session(config.ray_address) as ray_seconds:
        ahead = {}
        if config.final_seeds and config.baselines and config.concurrency > 1:
            from autopeft.driver.evaluation import train_baselines_ahead

            ahead = train_baselines_ahead(config)
        try:
            timings = run_trials(setup, journal.optimizer, trials=config.trials - len(journal.finished()),
                                 concurrency=config.concurrency, listeners=[monitor], storage=out_dir / "ray" / name,
                                 ray_address=config.ray_address, early_stopping=config.early_stopping,
                                 limits=config.limits, journal=journal)
            line.close()
            timings["ray_start_seconds"] = ray_seconds
            timings["tracking_seconds"] = monitor.tracking.seconds
            result = _finish(config, setup, tracker, monitor, objectives, run_id, started, timings)
        except BaseException as err:
            line.close()
            cut = [r for r in monitor.records.values() if r.status == "running"]
            for record in cut:
                record.status, record.error = "interrupted", "the search ended before the trial finished"
                tracker.finish_trial(record)
            journal.save(*cut)  # the interrupted trials run again on --resume
            tracker.fail_search(f"{type(err).__name__}: {err}")
            raise
        if config.final_seeds and result.front:
            from autopeft.driver.evaluation import evaluate

            result.evaluation = evaluate(run_id, experiment=config.experiment, tracking_uri=result.tracking_uri,
                                         seeds=config.final_seeds, objectives=config.objectives,
                                         fidelity=config.final_fidelity or None, baselines=config.baselines or None,
                                         concurrency=config.concurrency, ray_address=config.ray_address,
                                         ahead=ahead, progress=progress)
    return result


def _finish(config: SearchConfig, setup: SearchSetup, tracker: SearchTracker, monitor: Monitor,
            objectives: list[ObjectiveInfo], run_id: str, started: float,
            timings: dict[str, float]) -> SearchResult:
    final_started = time.monotonic()
    records = sorted(monitor.records.values(), key=lambda r: r.number)
    front = front_of(records, objectives)
    for record in front:
        record.pareto = True
        if record.adapter_dir is not None:
            # The test split is only ever used here, on the finished front: never for selection.
            record.test_metrics = score_adapter(setup, record.adapter_dir, setup.data.test, record.config,
                                                {k: v for k, v in record.metrics.items() if k in COSTS})
    log = monitor.hypervolume
    reference = log.reference if log.reference is not None else np.array([])
    curve = list(log.curve)
    with tempfile.TemporaryDirectory() as tmp:
        files = {"pareto_front.csv": Path(tmp) / "pareto_front.csv",
                 "pareto_front.png": Path(tmp) / "pareto_front.png",
                 "pareto_front.html": Path(tmp) / "pareto_front.html",
                 "hypervolume.png": Path(tmp) / "hypervolume.png"}
        front_table(front, objectives).to_csv(files["pareto_front.csv"], index=False)
        plot_front_png(records, front, objectives, files["pareto_front.png"])
        plot_front_html(records, front, objectives, files["pareto_front.html"])
        plot_hypervolume_png(curve, files["hypervolume.png"], log.rule, reference, objectives)
        adapters = {r.name: r.adapter_dir for r in front if r.adapter_dir is not None}
        completed = sum(r.status == "completed" for r in records)
        heading = f"{config.optimizer}, {len(records)} trials; {setup.data.description}" + (
            f"; labels {', '.join(setup.data.label_names)}" if setup.data.label_names else "")
        tracker.finish_search(records, files, adapters,
                              description=front_markdown(front, objectives, completed, heading))
    artifact_uri = tracker.client.get_run(run_id).info.artifact_uri
    timings["final_report_seconds"] = time.monotonic() - final_started
    return SearchResult(objectives, records, front, reference, curve, run_id, tracker.tracking_uri,
                        artifact_uri, time.monotonic() - started, timings, describe_data(setup),
                        reference_rule=reference_rule(objectives, setup.knowledge))


def search(config: SearchConfig | None = None, *, objectives: list[str | Objective] | None = None,
           progress: bool = True, resume: str | bool | None = None, **options: Any) -> SearchResult:
    """Run a search from Python.

    ``options`` are SearchConfig fields or their nested ones by plain name
    (``train_file``, ``text_column``, ``max_train_examples``, ``epochs``, ...). ``objectives``
    mixes built-in names, ``FILE.py:FUNCTION`` references and :class:`Objective` values.

    Example::

        result = autopeft.search(task="demo", trials=8, objectives=["accuracy", my_latency])
        print(result.table())
    """
    config = dataclasses.replace(config) if config else SearchConfig()
    for key, value in options.items():
        target, leaf = config, _NESTED.get(key, key)
        *parents, leaf = leaf.split(".")
        for parent in parents:
            target = getattr(target, parent)
        if not hasattr(target, leaf):
            raise ConfigError(f"unknown search option '{key}'")
        setattr(target, leaf, value)
    if objectives is not None:
        config.objectives = list(objectives)
    return run_search(config, progress=progress, resume=resume)


