"""The search driver: validate everything, run the trials, then report and export the front
(``autopeft.search`` and ``autopeft search`` call it; a module name of its own, so that importing
it never shadows the ``autopeft.search`` function)."""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autopeft.adapters import AdapterBuilder, get_adapter
from autopeft.config import SECTIONS, SearchConfig, config_record
from autopeft.costs import COSTS
from autopeft.errors import ConfigError, ModelError
from autopeft.journal import Journal, journal_path
from autopeft.inputs import RESULT_METRICS, check_inputs, task_fidelity, check_model_reference, outcome_constraints
from autopeft.models import ModelLayout, model_layout
from autopeft.objectives import Objective
from autopeft.optimizers import OPTIMIZERS, Optimizer, make_optimizer
from autopeft.optimizers.outcomes import OutcomeConstraint
from autopeft.progress import ProgressLine
from autopeft.reference import Knowledge, search_knowledge
from autopeft.records import HypervolumeLog, ObjectiveInfo, TrialRecord, front_of, front_table, meets
from autopeft.resume import driver_identity, resume_search
from autopeft.report import front_markdown, format_front, plot_front_html, plot_front_png, plot_hypervolume_png
from autopeft.runner import NODE_IP, OBJECTIVE_PREFIX, STRATEGY_REPORT, ray_session, run_trials
from autopeft.measure import Stopwatch
from autopeft.space import Config, SearchSpace, SpaceSpec
from autopeft.space.space import Derive
from autopeft.strategies import NO_STRATEGY, STRATEGY_PARAMETER, strategy_class
from autopeft.tasks import make_task
from autopeft.tasks.loading import quantization_unavailable
from autopeft.tracking import CONFIG_ARTIFACT, DRIVER, JOURNAL, SearchTracker
from autopeft.tasks.base import TaskData
from autopeft.trial import SearchSetup, by_length, quiet_libraries, score_adapter

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


def prepare(config: SearchConfig) -> tuple[SearchSetup, Optimizer]:
    """Check and load everything a search needs, before anything is written anywhere."""
    setup = load_setup(config)
    objectives = setup.objectives
    options = dict(config.optimizer_options)
    # A third of a small budget goes to random designs (at least two points per objective plus
    # two), so that a 12-trial search still spends half its trials on a model; every optimizer
    # starts from the same designs for the same seed.
    options.setdefault("n_initial", max(2 * (len(objectives) + 1), min(10, config.trials // 3)))
    warm = warm_start_configs(config, setup.space) if config.warm_start else []
    if "n_initial" not in config.optimizer_options:
        # Every warm configuration gets tried: they take the place of random designs.
        options["n_initial"] = max(options["n_initial"], len(warm))
    known = setup.knowledge = search_knowledge(objectives, setup.space, setup.floors, references(config, objectives))
    if OPTIMIZERS.get(config.optimizer).uses_knowledge:
        options.setdefault("analytic", [known.analytic.get(o.name) for o in objectives])
        options.setdefault("floors", [known.floors.get(o.name) for o in objectives])
    optimizer = make_optimizer(config.optimizer, setup.space, [o.direction for o in objectives], seed=config.seed,
                               reference_point=[known.reference.get(o.name) for o in objectives], **options)
    if warm:
        optimizer.warm_start(warm)
    return setup, optimizer


def warm_start_configs(config: SearchConfig, space: SearchSpace) -> list[Config]:
    """The configurations a warm start tries first: the front of search ``config.warm_start``
    (best first in the first objective), or the configurations given from Python."""
    from autopeft.tracking import stored_front

    if not isinstance(config.warm_start, str):
        return [dict(c) for c in config.warm_start]
    space_name, front = stored_front(config.resolved_tracking_uri, config.warm_start)
    if space_name != space.spec.name:
        raise ConfigError(f"search {config.warm_start} searched space '{space_name}', this one "
                          f"'{space.spec.name}': a warm start needs the same space", key="warm_start")
    return [r.config for r in front]


def load_setup(config: SearchConfig) -> SearchSetup:
    """Check the inputs, then load the task's data, the model's layout and the bound space
    that every trial of ``config`` shares."""
    checked = check_inputs(config)
    quiet_libraries()
    spec, objectives = checked.spec, checked.objectives
    builder = get_adapter(spec)

    task = make_task(config.task)
    data_seed = config.seed if config.data_seed is None else config.data_seed
    data = task.load_data(config.data.source(), data_seed)
    task.check_objectives([(o.name, o.metric) for o in objectives if o.metric], data)
    if task.defaults.why and config.fidelity == task_fidelity(task.defaults):
        data.notes.append(task.defaults.why)
    model_path = config.model or task.default_model()
    check_model_reference(model_path)
    if Path(model_path).exists():  # Ray's workers run in folders of their own: no relative paths
        model_path = str(Path(model_path).resolve())
    try:
        tokenizer = task.load_tokenizer(model_path)
        layout = model_layout(task.load_model(model_path, data))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load: {str(err).splitlines()[0]}", source=model_path, key="model") from None
    fixed = {**model_option_pins(spec, data, config.fixed), **config.fixed}
    space = bind_space(spec, builder, layout, fixed)

    fid = config.fidelity
    train = data.train.shuffle(seed=data_seed)
    if fid.max_train_examples:
        train = train.select(range(min(fid.max_train_examples, len(train))))
    dev = data.dev if not fid.max_eval_examples else data.dev.shuffle(seed=data_seed).select(
        range(min(fid.max_eval_examples, len(data.dev))))
    return SearchSetup(task=task, model_path=model_path, data=data, floors=task.floors(dev),
                       train_tokens=task.tokenize(train, tokenizer, fid.max_length),
                       dev_tokens=by_length(task.tokenize(dev, tokenizer, fid.max_length)),
                       layout=layout, space=space, objectives=objectives, fidelity=fid,
                       seed=config.seed if config.training_seed is None else config.training_seed)


def model_option_pins(spec: SpaceSpec, data: TaskData, fixed: dict[str, Any]) -> dict[str, Any]:
    """Model-loading dimensions this machine cannot search, pinned off, each with a note
    (``data.notes``) saying why: 4-bit base weights without a GPU or bitsandbytes (an input
    error where the user pinned them on)."""
    param = spec.parameters.get("quantization")
    reason = quantization_unavailable()
    if fixed.get("quantization") == "4bit" and reason:
        raise ConfigError(reason, key="fixed.quantization")
    if param is None or reason is None or "4bit" not in param.extremes():
        return {}
    data.notes.append(f"quantization pinned to 'none': {reason}")
    return {"quantization": "none"}


def references(config: SearchConfig, objectives: list[Objective]) -> dict[str, float]:
    """The worst acceptable value of each objective that has one: the config's, else the one
    the objective was declared with (``@autopeft.objective(..., reference=...)``)."""
    found = {o.name: config.reference_point.get(o.name, o.reference) for o in objectives}
    return {name: float(value) for name, value in found.items() if value is not None}


@dataclass(frozen=True)
class _ParameterCount:
    """Trainable-parameter figures of a configuration, for constraints (a class rather than a
    closure: the space travels to Ray workers and into searcher checkpoints by pickle)."""

    builder: AdapterBuilder
    layout: ModelLayout

    def __call__(self, values: dict[str, Any]) -> dict[str, float]:
        if not strategy_class(values.get(STRATEGY_PARAMETER) or NO_STRATEGY).keeps_parameter_count:
            return {}  # the strategy decides the count while training: unknown beforehand
        count = self.builder.count_parameters(values, self.layout)
        if count is None:  # unknown for this configuration: constraints on it cannot hold
            return {}
        return {"trainable_params": count, "trainable_percent": 100.0 * count / self.layout.num_parameters}


@dataclass(frozen=True)
class _Identity:
    """The builder's canonical form of a configuration (a class, not a closure: it pickles)."""

    builder: AdapterBuilder
    layout: ModelLayout

    def __call__(self, config: Config) -> Config:
        return self.builder.canonical(config, self.layout)


def bind_space(spec: SpaceSpec, builder: AdapterBuilder, layout: ModelLayout,
               fixed: dict[str, Any] | None = None) -> SearchSpace:
    """``spec`` bound to a model: its layers, its parameter counts for constraints, and the
    builder's canonical form of a configuration."""
    builder.check_layout(spec, layout)
    return spec.bind(layout.num_layers, fixed=fixed, derive=parameter_counter(builder, layout),
                     identity=_Identity(builder, layout))


def parameter_counter(builder: AdapterBuilder, layout: ModelLayout) -> Derive | None:
    """``values -> {trainable_params, trainable_percent}`` without building a model, for
    constraints and ``autopeft space``; None where the builder cannot count (an empty dict
    for a configuration whose strategy decides its count while training)."""
    if type(builder).count_parameters is AdapterBuilder.count_parameters:
        return None
    return _ParameterCount(builder, layout)


class _Monitor:
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

    def on_failed(self, trial_id: str, error: str, node: str | None = None, status: str = "failed") -> None:
        record = self.records[trial_id]
        record.status, record.error, record.node = status, error, node
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
    monitor = _Monitor(objectives, tracker, line, known,
                       outcome_constraints(config, [o.name for o in objectives]), setup.space, journal)
    # One Ray for the trials and the final evaluation's retrainings (starting one costs ~8 s).
    with ray_session(config.ray_address) as ray_seconds:
        ahead = {}
        if config.final_seeds and config.baselines and config.concurrency > 1:
            from autopeft.evaluation import train_baselines_ahead

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
            from autopeft.evaluation import evaluate

            result.evaluation = evaluate(run_id, experiment=config.experiment, tracking_uri=result.tracking_uri,
                                         seeds=config.final_seeds, objectives=config.objectives,
                                         fidelity=config.final_fidelity or None, baselines=config.baselines or None,
                                         concurrency=config.concurrency, ray_address=config.ray_address,
                                         ahead=ahead, progress=progress)
    return result


def _finish(config: SearchConfig, setup: SearchSetup, tracker: SearchTracker, monitor: _Monitor,
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


