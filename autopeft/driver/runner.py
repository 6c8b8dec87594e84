"""Running trials with Ray Tune: the optimizer as a Tune searcher, trials as a function
trainable, and trial events forwarded to listeners (MLflow tracking, progress) in the driver.

Tracking happens in the driver, not in the workers, so that a SQLite MLflow store has a
single writer however many trials run at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import ray
import torch
from ray import tune
from ray.tune import Callback, Checkpoint
from ray.tune.result import NODE_IP
from ray.tune.search import Searcher

from autopeft.config import EarlyStopping, Limits
from autopeft.errors import ClusterError
from autopeft.trial.failures import failure_reason, memory_cap
from autopeft.driver.journal import Journal
from autopeft.optimizers import Optimizer
from autopeft.driver.reaper import reap_descendants
from autopeft.schedulers import make_scheduler
from autopeft.space import Config
from autopeft.trial.run import SearchSetup, run_trial
from autopeft.devices import DeviceReport, Placement, choose_device
from autopeft.objectives import OBJECTIVE_PREFIX

_log = logging.getLogger(__name__)

STATUS = "autopeft_status"
#: the result key holding the strategy's report, as JSON (Tune flattens nested results)
STRATEGY_REPORT = "strategy_report"
#: where a trial trained, in its final report: the device and why, and the GPUs Ray assigned it
DEVICE, GPUS = "device", "gpu_ids"


class TrialListener(Protocol):
    """Receives the life of every trial, in the driver process."""

    def on_start(self, trial_id: str, config: Config, number: int | None = None) -> None:
        """``number``: the trial's place in the search (in the order it was proposed)."""
    def on_epoch(self, trial_id: str, point: dict[str, float]) -> None: ...
    def on_complete(self, trial_id: str, result: dict[str, Any], adapter_dir: Path | None) -> None: ...
    def on_stopped(self, trial_id: str, result: dict[str, Any]) -> None: ...
    def on_failed(self, trial_id: str, error: str, node: str | None = None, status: str = "failed") -> None:
        """``status``: "failed", or "interrupted" for a trial the search's time budget ended."""


def _numbers(result: Mapping[str, Any]) -> dict[str, float]:
    """Every number of a trial's result, objectives by their plain name."""
    return {k.removeprefix(OBJECTIVE_PREFIX): float(v) for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the optimizer's torch work on one thread: BoTorch's small matrices gain little from
    more, and with trials training on the other cores extra threads oversubscribe them (asks
    measured 5-15x slower with 2 threads while a trial trained)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class OptimizerSearcher(Searcher):
    """Ray Tune's face of an autopeft :class:`Optimizer` (ask on suggest, tell on complete)."""

    def __init__(self, optimizer: Optimizer, objective_names: list[str],
                 stopped: Mapping[str, float] | None = None, max_failures: int | None = None,
                 journal: Journal | None = None) -> None:
        super().__init__()
        self.optimizer = optimizer
        self.max_failures = max_failures
        self.failures = 0
        self.objective_names = objective_names
        #: trials the scheduler stopped early (Tune trial id -> progress then)
        self.stopped = stopped if stopped is not None else {}
        #: where every ask is written down; a resumed search's interrupted trials come first
        self.journal = journal
        self._reruns = journal.to_rerun() if journal else []
        self._pending: dict[str, Config] = {}
        self._numbers: dict[str, int] = {}  # Tune trial id -> the trial's number in the search
        self.suggest_seconds = 0.0

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.max_failures is not None and self.failures >= self.max_failures:
            return Searcher.FINISHED  # no new trial; the running ones finish
        started = time.perf_counter()
        if self._reruns:  # proposed before a crash: run again as it was, without a new ask
            number, config = self._reruns.pop(0)
        else:
            with single_thread():
                config = self.optimizer.ask()
            number = self._number()
        self._pending[trial_id], self._numbers[trial_id] = config, number
        if self.journal:
            self.journal.pending.setdefault(number, config)
            self.journal.save()
        self.suggest_seconds += time.perf_counter() - started
        return {"params": config, "number": number}

    def _number(self) -> int:
        if self.journal is None:
            return len(self._numbers) + 1
        self.journal.next_number += 1
        return self.journal.next_number - 1

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        config = self._pending.pop(trial_id, None)
        if config is None:
            return
        number = self._numbers.pop(trial_id, None)
        if self.journal:
            if number not in self.journal.pending:
                return  # told before a crash that lost the trial's record: told once only
            # Written with the trial's record as the listeners finish it (the same Tune step).
            del self.journal.pending[number]
        result = result or {}
        ok = not error and result.get(STATUS) == "completed"
        stopped = not error and trial_id in self.stopped
        self.failures += not ok and not stopped
        values = [result[OBJECTIVE_PREFIX + n] for n in self.objective_names] if ok or stopped else None
        # Every number the trial reported (objectives by name, dev metrics, cost, timing) is
        # available to outcome constraints, e.g. {"peak_memory_gb": ("<=", 8)}.
        started = time.perf_counter()
        with single_thread():
            if stopped:
                self.optimizer.tell_stopped(config, values, _numbers(result), fidelity=self.stopped[trial_id])
            else:
                self.optimizer.tell(config, values, _numbers(result) if ok else None)
        self.suggest_seconds += time.perf_counter() - started

    # Tune checkpoints its searcher; the optimizer's whole state is one picklable object.
    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump((self.optimizer, self._pending, self._numbers), fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            self.optimizer, self._pending, self._numbers = pickle.load(fh)


class _Forward(Callback):
    """Forwards Tune's trial events to the listeners, and stops trials that run past
    ``limits.trial_timeout``."""

    def __init__(self, listeners: list[TrialListener], stopped: Mapping[str, float],
                 limits: Limits | None = None) -> None:
        self.listeners = listeners
        self.stopped = stopped
        self.limits = limits or Limits()
        self.search_started = time.monotonic()
        self._done: set[str] = set()
        self._started: dict[str, float] = {}  # trial id -> when it started (monotonic)
        self._timed_out: set[str] = set()

    # Tune pickles its callbacks with the experiment state; listeners hold live connections
    # (MLflow client, terminal) that belong to this driver process only.
    def __getstate__(self) -> dict:
        return {**self.__dict__, "listeners": [], "stopped": dict(self.stopped)}

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        # Tune has no per-trial wall-clock limit (its stoppers act on reported results, and a
        # hung trial reports nothing), so the trial's worker is killed: Tune then records the
        # trial as errored, and on_trial_error names the timeout.
        timeout = self.limits.trial_timeout
        if timeout is None:
            return
        now = time.monotonic()
        for trial in trials:
            started = self._started.get(trial.trial_id)
            if (trial.status == "RUNNING" and started is not None and now - started > timeout
                    and trial.trial_id not in self._timed_out):
                actor = getattr(trial.temporary_state, "ray_actor", None)
                if actor is not None:
                    self._timed_out.add(trial.trial_id)
                    ray.kill(actor)

    def out_of_time(self) -> bool:
        budget = self.limits.time_budget
        return budget is not None and time.monotonic() - self.search_started >= budget

    def interrupt_running(self) -> None:
        """After the search: the trials that started and never ended (the time budget ran
        out while they trained) are told to the listeners as interrupted."""
        for trial_id in [t for t in self._started if t not in self._done]:
            self._done.add(trial_id)
            for listener in self.listeners:
                listener.on_failed(trial_id, self._budget_reason(), None, "interrupted")

    def _budget_reason(self) -> str:
        return f"the search's time budget ({self.limits.time_budget:g} s) ran out while it trained"

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._started[trial.trial_id] = time.monotonic()
        for listener in self.listeners:
            listener.on_start(trial.trial_id, trial.config["params"], trial.config.get("number"))

    def _seen_start(self, trial: Any) -> None:
        """A trial that ends without having started (its worker could not even load the
        trainable: a missing module on a node) is started for the listeners first, so that it
        is recorded as failed rather than unknown to them."""
        if trial.trial_id not in self._started:
            self.on_trial_start(0, [], trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if STATUS not in result:
            for listener in self.listeners:
                listener.on_epoch(trial.trial_id, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        if trial.trial_id in self._done:
            return
        self._done.add(trial.trial_id)
        self._seen_start(trial)
        if result.get(STATUS) == "completed":
            adapter = Path(trial.checkpoint.path) / "adapter" if trial.checkpoint else None
            for listener in self.listeners:
                listener.on_complete(trial.trial_id, result, adapter)
        elif trial.trial_id in self.stopped:
            for listener in self.listeners:
                listener.on_stopped(trial.trial_id, result)
        elif STATUS not in result and self.out_of_time():
            for listener in self.listeners:
                listener.on_failed(trial.trial_id, self._budget_reason(), _node(trial), "interrupted")
        else:
            for listener in self.listeners:
                listener.on_failed(trial.trial_id, result.get("error", "trial ended without a result"), _node(trial),
                                   result=result)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Retried (limits.retries): its next attempt gets a timeout of its own.
        self._timed_out.discard(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # A crash outside run_trial's own error handling (worker died, out of memory).
        if trial.trial_id in self._done:
            return
        self._done.add(trial.trial_id)
        self._seen_start(trial)
        error = trial.get_error() if hasattr(trial, "get_error") else None
        died = "its worker process died (killed, crashed, or out of memory on its node)"
        message = str(error).strip().splitlines()[-1] if error else died
        if "worker process has died" in message:  # Ray's paragraph on it, in a line
            message = died
        if trial.trial_id in self._timed_out:
            message = f"ran past the trial timeout ({self.limits.trial_timeout:g} s) and was stopped"
        for listener in self.listeners:
            listener.on_failed(trial.trial_id, message, _node(trial))


def _node(trial: Any) -> str | None:
    """The IP address of the Ray node ``trial`` ran on: Tune puts it in every result, and in
    the trial's location once its worker started (a trial that crashed has no result)."""
    node = (trial.last_result or {}).get(NODE_IP)
    if not node:
        location = getattr(getattr(trial, "temporary_state", None), "location", None)
        node = getattr(location, "hostname", None)
    return str(node) if node else None


def _trainable(params: dict, setup: SearchSetup | None = None, threads: int = 1,
               memory_gb: float | None = None) -> None:
    torch.set_num_threads(threads)
    try:
        with memory_cap(memory_gb), tempfile.TemporaryDirectory() as tmp:
            result = run_trial(setup, params["params"], save_to=Path(tmp) / "adapter",
                               on_epoch=lambda point: tune.report(point))
            final = {STATUS: "completed", "best_epoch": result.best_epoch,
                     **{OBJECTIVE_PREFIX + k: v for k, v in result.objectives.items()},
                     **{f"dev_{k}": v for k, v in result.metrics.items()}, **result.cost,
                     **result.timing, STRATEGY_REPORT: json.dumps(result.strategy), **_where(result.placement)}
            tune.report(final, checkpoint=Checkpoint.from_directory(tmp))
    except Exception as err:  # a failing trial must never end the search: report it instead
        tune.report({STATUS: "failed", "error": failure_reason(err), **_where(choose_device(DeviceReport.probe()))})


def trial_trainable(setup: SearchSetup, resources: Resources, limits: Limits) -> Callable[..., None]:
    """The Tune function trainable that runs one trial of the search, given ``{"params": config}``.
    ``benchmarks/cluster_sim.py`` puts a stand-in that sleeps in its place, to measure the
    driver at a concurrency this machine cannot train at."""
    return tune.with_parameters(_trainable, setup=setup, threads=resources.cpus_per_trial,
                                memory_gb=limits.trial_memory)


def _where(placement: Placement | None) -> dict[str, str]:
    """A trial's placement as its report carries it."""
    if placement is None:
        return {}
    return {DEVICE: f"{placement.device}: {placement.reason}", GPUS: ",".join(placement.gpu_ids)}


@dataclass(frozen=True)
class Resources:
    cpus_per_trial: int
    gpus_per_trial: float


def plan_resources(concurrency: int, limits: Limits | None = None) -> Resources:
    """What each trial reserves: ``limits``' CPUs and GPUs per trial where set, else the
    cluster's CPUs (and GPUs, fractionally, at most one) split evenly over concurrent trials."""
    limits = limits or Limits()
    cpus = max(1, int(ray.cluster_resources().get("CPU", os.cpu_count() or 1)) // concurrency)
    # No more than one node has: a trial runs on one node, and a bigger ask waits for ever.
    largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=cpus)
    cpus = max(1, min(cpus, int(largest)))
    gpus = float(ray.cluster_resources().get("GPU", 0.0))
    even_gpus = min(1.0, gpus / concurrency) if gpus else 0.0
    asked = limits.gpus_per_trial
    if asked:  # more than any one node has: Ray would wait for ever for a node that never comes
        most = max((n["Resources"].get("GPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=0.0)
        if asked > most:
            raise ClusterError(f"a trial asks for {asked:g} GPU{'s' if asked != 1 else ''} and the largest node "
                               f"has {most:g}: no trial could start", key="limits.gpus_per_trial")
    return Resources(limits.cpus_per_trial or cpus, even_gpus if asked is None else asked)


@contextmanager
def ray_session(address: str | None = None) -> Iterator[float]:
    """Ray for the block: the runtime already up, the cluster at ``address``, or a local one
    started here and shut down after. Yields the seconds it took to start (0 if it was up)."""
    started = time.perf_counter()
    # Tune's own console reporter would interleave with autopeft's progress line.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    started_here = not ray.is_initialized()
    if not started_here:
        yield 0.0
        return
    # A driver killed outright (SIGKILL) never reaches ray.shutdown: the watchdog ends the Ray
    # processes it leaves.
    with reap_descendants():
        _init_ray(address)
        try:
            yield time.perf_counter() - started
        finally:
            ray.shutdown()


def check_cluster_paths(paths: dict[str, str]) -> None:
    """Every node of the cluster must see ``paths`` (what -> path): trials load the model from
    its folder and Ray Tune writes their adapters to the output folder, on whichever node they
    run. A ClusterError names the first node and path that is not there."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    def missing(paths: list[str]) -> list[str]:
        # Defined here, so Ray ships it by value: a function of this module would have each
        # node import torch and Ray Tune before answering (37 s against 3 s, measured).
        return [p for p in paths if not os.path.exists(p)]

    probe = ray.remote(num_cpus=0, max_retries=0)(missing)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    answers = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                       .remote(list(paths.values())) for n in nodes])
    for node, missing in zip(nodes, answers):
        if missing:
            what = next(k for k, v in paths.items() if v == missing[0])
            raise ClusterError(f"Ray node {node['NodeManagerAddress']} cannot see the {what} at {missing[0]}: "
                               "on a cluster, mount it at the same path on every node (a shared filesystem)")


def _init_ray(address: str | None) -> None:
    """Join the cluster at ``address``, or start a local Ray that listens on 127.0.0.1 only."""
    options = dict(include_dashboard=False, log_to_driver=False, configure_logging=False, logging_level="ERROR")
    if address:
        try:
            ray.init(address=address, **options)
        except ConnectionError as err:
            raise ClusterError(f"cannot join the Ray cluster at {address}: {str(err).splitlines()[0]} (a cluster "
                               "with token authentication needs RAY_AUTH_MODE=token and its RAY_AUTH_TOKEN or "
                               "~/.ray/auth_token here)", key="ray_address") from None
        return
    # Ray replaces a node address of 127.0.0.1 with the machine's network address, and then
    # its servers listen on every interface, unless it is built for one node (as on macOS and
    # Windows): that switch is private, so it is set for this call alone and the result checked.
    from ray._private import ray_constants

    cluster = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        # "local": without it Ray joins whatever cluster `ray start` left on this machine.
        ray.init(address="local", _node_ip_address="127.0.0.1", **options)
    finally:
        if cluster is not None:
            ray_constants.ENABLE_RAY_CLUSTER = cluster
    if ray.util.get_node_ip_address() != "127.0.0.1":
        _log.warning("the local Ray listens on %s, not on 127.0.0.1 alone (this Ray version ignores the switch)",
                     ray.util.get_node_ip_address())


def _threaded(function: Callable[..., Any], threads: int, *args: Any) -> Any:
    torch.set_num_threads(threads)
    return function(*args)


#: one remote function for every job (Ray exports a remote function to the workers once);
#: each job's resources are set by ``.options``. Not retried: a job that fails says why.
_remote_threaded = ray.remote(max_retries=0)(_threaded)


def _error_line(err: BaseException) -> str:
    cause = getattr(err, "cause", None) or err  # a RayTaskError carries the job's own exception
    return f"{type(cause).__name__}: {cause}".strip().splitlines()[0]


def run_jobs(function: Callable[..., Any], jobs: Sequence[tuple], *, concurrency: int = 1,
             ray_address: str | None = None, on_start: Callable[[int], None] = lambda i: None,
             on_done: Callable[[int, Any, str | None], None] = lambda i, result, error: None) -> None:
    """Run ``function(*job)`` for every job, ``concurrency`` at a time on Ray, each with an
    even share of the CPUs (in this process, one after another, when ``concurrency`` is 1 and
    no cluster is given). ``on_start(i)`` and ``on_done(i, result, error)`` run in the driver
    as job ``i`` is dispatched and ends; ``error`` is the failure's one-line reason, and a
    failing job never stops the others.

    Ray Tune is for searches, with a searcher asking for trials; these are independent jobs
    known up front (retrainings of a front), so plain Ray tasks run them."""
    if concurrency == 1 and ray_address is None:
        for i, job in enumerate(jobs):
            on_start(i)
            try:
                result, error = function(*job), None
            except Exception as err:  # one failed job leaves the others standing
                result, error = None, _error_line(err)
            on_done(i, result, error)
        return
    with ray_session(ray_address):
        waiting, running = list(enumerate(jobs)), {}
        while waiting or running:
            while waiting and len(running) < concurrency:
                i, job = waiting.pop(0)
                on_start(i)
                running[submit(function, job, concurrency)] = i
            (ready,), _ = ray.wait(list(running), num_returns=1)
            i = running.pop(ready)
            result, error = collect(ready)
            on_done(i, result, error)


def submit(function: Callable[..., Any], job: tuple, concurrency: int) -> ray.ObjectRef:
    """Start ``function(*job)`` as a Ray task with a 1/``concurrency`` share of the CPUs and
    GPUs (Ray must be up); :func:`collect` gets its outcome."""
    resources = plan_resources(concurrency)
    task = _remote_threaded.options(num_cpus=resources.cpus_per_trial, num_gpus=resources.gpus_per_trial)
    return task.remote(function, resources.cpus_per_trial, *job)


def collect(ref: ray.ObjectRef) -> tuple[Any, str | None]:
    """(result, None) of a task from :func:`submit`, or (None, the reason it failed in one line)."""
    try:
        return ray.get(ref), None
    except Exception as err:  # the job raised, or its worker died
        return None, _error_line(err)


def run_trials(setup: SearchSetup, optimizer: Optimizer, *, trials: int, concurrency: int,
               listeners: list[TrialListener], storage: Path, ray_address: str | None = None,
               early_stopping: EarlyStopping | None = None, limits: Limits | None = None,
               journal: Journal | None = None) -> dict[str, float]:
    """Run ``trials`` trials, ``concurrency`` at a time, on a local Ray (started and shut down
    here) or on the cluster at ``ray_address``, stopping some early as ``early_stopping``
    says; with a ``journal``, every ask is written to it, and the trials it holds as
    interrupted run first. Returns where the driver's time went."""
    with ray_session(ray_address) as ray_seconds:
        timings = {"ray_start_seconds": ray_seconds}
        limits = limits or Limits()
        if ray_address:
            storage.mkdir(parents=True, exist_ok=True)
            marker = storage / f".visible-{os.getpid()}"  # this search's own: not there by chance
            marker.touch()
            paths = {"output folder": str(marker.resolve())}
            if Path(setup.model_path).exists():  # a hub id is fetched by each node itself
                paths["model folder"] = setup.model_path
            try:
                check_cluster_paths(paths)
            finally:
                marker.unlink()
        resources = plan_resources(concurrency, limits)
        scheduler = make_scheduler({o.name: o.direction for o in setup.objectives}, early_stopping or EarlyStopping())
        setup = dataclasses.replace(setup, milestones=scheduler.milestones)
        trainable = tune.with_resources(trial_trainable(setup, resources, limits),
                                        {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial})
        searcher = OptimizerSearcher(optimizer, [o.name for o in setup.objectives], scheduler.stopped,
                                     max_failures=limits.max_failures, journal=journal)
        forward = _Forward(listeners, scheduler.stopped, limits)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=trials,
                                        max_concurrent_trials=concurrency, reuse_actors=True,
                                        time_budget_s=limits.time_budget),
            # Each resume of a search is a new Tune experiment beside the first.
            run_config=tune.RunConfig(name=f"trials-{journal.resumes}" if journal and journal.resumes else "trials",
                                      storage_path=str(storage.resolve()), verbose=0,
                                      callbacks=[forward],
                                      # A retried trial starts again in its own MLflow run.
                                      failure_config=tune.FailureConfig(max_failures=limits.retries or 0),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=None)),
        )
        fit_started = time.perf_counter()
        tuner.fit()
        forward.interrupt_running()
        timings["fit_seconds"] = time.perf_counter() - fit_started
        timings["suggest_seconds"] = searcher.suggest_seconds
    return timings
