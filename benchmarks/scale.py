"""Searches at scale on one store: does the driver's time per trial stay flat as a search grows
to hundreds of trials, does ``autopeft front`` answer quickly on such a search, and do several
searches share one MLflow tracking server?

    .venv/bin/python benchmarks/scale.py
        # the full run (~21 min on the 2-core machine): 300 trials of random and of tpe,
        # `autopeft front` timed on the 300-trial search, then 3 searches of 20 trials at once
        # on one `mlflow server` (after one such search alone, for comparison)
    .venv/bin/python benchmarks/scale.py --trials 30 --optimizers random --parallel-trials 5
        # a quick check of the script itself (~4 min)

Each trial is as cheap as a real trial gets: a 4-layer BERT of hidden size 32 (random weights,
the demo model's tokenizer) trained on 16 examples of 16 tokens for one epoch and scored on 16,
so the driver's own work (suggest, dispatch, logging) is a large share of each trial.

1. One search per optimizer (``--optimizers``), ``--trials`` trials at concurrency 1, in this
   process, on a SQLite store in the work folder (both searches in one store, experiments
   ``scale-<optimizer>``). The driver's time per trial is measured three ways:
   - from the MLflow child runs (as anyone can read them): the gap between trial k's end time
     and trial k+1's start time (tell, the rest of logging the end, suggest, dispatch, logging
     the start), and each run's own duration (start to end);
   - the cycle, from trial k's start to trial k+1's start (in-process clock), split into the
     trial's time in its worker (its ``trial_seconds`` metric), autopeft's driver code
     (profiled here by wrapping, not editing, its methods: optimizer ask and tell, journal
     writes, MLflow calls, hypervolume, front/progress, the monitor's own work, and Tune's
     experiment-state checkpoint that pickles the searcher) and the rest (Ray Tune's dispatch
     and result plumbing, process wake-ups);
   - ``SearchResult.timings`` totals divided by the trials.
   Windows: cycles 1-10, 91-100 and the last ten; mean / median / p90 in ms; and the
   Theil-Sen slope over every cycle (ms per 100 trials); the load average at each cycle; and
   the driver thread's CPU time per component, which the shared machine's load inflates far less
   than wall time. The journal (parent run tag ``autopeft.driver.journal``, rewritten at every ask,
   start and end) is read back: its size and the time of one ``pickle.dumps`` of it, and of one
   ``save()`` of the live journal.
2. ``python -m autopeft.cli front --output-dir DIR --experiment scale-<first optimizer>`` on the
   big search, 3 times, and ``python -m autopeft.cli --help`` 3 times (Python startup and the
   CLI's import); then, 3 times in a fresh interpreter, the same command split into importing
   the modules it loads and the command itself (reading the store, the front, the table).
3. A real ``mlflow server`` (SQLite backend, proxied artifacts, one worker), one search of
   ``--parallel-trials`` trials alone, then ``--parallel-searches`` such searches at once
   (``python -m autopeft.cli search ... --tracking-uri http://127.0.0.1:PORT --experiment eI``,
   each with its own local Ray and output folder); each search's wall time and MLflow gaps, and a
   check that each experiment holds one search with exactly that many completed child runs. The
   server's process group is stopped afterwards.

The 1-minute load average is printed before each measurement and sampled during it: the machine
is shared. The table is printed and written to ``--out`` (scale.txt), with one CSV of per-cycle
figures per big search beside it.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import pickle
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
CHEAP = {"max_train_examples": 16, "max_length": 16, "max_eval_examples": 16, "epochs": 1, "batch_size": 16}

LINES: list[str] = []


def say(text: str = "") -> None:
    print(text, flush=True)
    LINES.append(text)


# ---------------------------------------------------------------- load


def load_line(what: str) -> str:
    one, five, fifteen = os.getloadavg()
    return f"[load before {what}: {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min), {os.cpu_count()} CPUs]"


class LoadSampler:
    """The 1-minute load average every few seconds while a block runs."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        s = self.samples or [os.getloadavg()[0]]
        return f"load during: mean {statistics.fmean(s):.2f}, min {min(s):.2f}, max {max(s):.2f} ({len(s)} samples)"


# ---------------------------------------------------------------- inputs


def tiny_model(path: Path) -> Path:
    """As tests/conftest.py's ``tiny_model_dir``: a 4-layer BERT, hidden 32, random weights."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from autopeft.tasks import demo_model_path

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertForSequenceClassification(config).save_pretrained(path)
    for name in TOKENIZER_FILES:
        shutil.copy(Path(demo_model_path()) / name, path / name)
    return path


def sentiment_csv(path: Path, rows: int = 120, seed: int = 0) -> Path:
    """As tests/conftest.py's ``write_sentiment_csv``: the label is given away by one word."""
    import random

    rng = random.Random(seed)
    fillers = ["the film", "this movie", "the plot", "its cast", "the ending", "the score", "a scene"]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review", "verdict"])
        for i in range(rows):
            label = rng.choice(["pos", "neg"])
            word = rng.choice(["great", "wonderful", "superb"] if label == "pos" else ["awful", "dull", "bad"])
            writer.writerow([f"{rng.choice(fillers)} was {word} number {i}", label])
    return path


# ---------------------------------------------------------------- statistics


def stats(values: list[float]) -> tuple[float, float, float]:
    """(mean, median, p90) of ``values``."""
    if not values:
        return (float("nan"),) * 3
    ordered = sorted(values)
    p90 = float(np.percentile(ordered, 90))
    return statistics.fmean(ordered), statistics.median(ordered), p90


def cell(values: list[float], scale: float = 1000.0) -> str:
    mean, median, p90 = stats(values)
    return f"{mean * scale:7.0f} {median * scale:7.0f} {p90 * scale:7.0f}"


def slope_per_100(values: list[float], scale: float = 1000.0) -> float:
    """The Theil-Sen slope of ``values`` (one per cycle) per 100 cycles: the median of the
    slopes between every two cycles, which a few slow cycles (the first, a busy moment of the
    shared machine) do not tilt as they tilt a least-squares line."""
    from scipy.stats import theilslopes

    if len(values) < 3:
        return float("nan")
    return float(theilslopes(np.asarray(values) * scale)[0] * 100)


# ---------------------------------------------------------------- profiling the driver


class Profiler:
    """Wraps methods of autopeft's driver classes (in this process only) and charges each
    call's exclusive time (less that of wrapped calls inside it) to the current cycle: cycle k
    runs from trial k's ``on_start`` to trial k+1's."""

    def __init__(self) -> None:
        self.cycle = 0
        self.cycle_starts: list[float] = []  # perf_counter at each on_start
        self.cycle_loads: list[float] = []  # the 1-minute load average then
        self.charges: dict[int, dict[str, float]] = {}  # wall seconds
        self.cpu: dict[int, dict[str, float]] = {}  # the driver thread's CPU seconds
        self.calls: dict[int, dict[str, int]] = {}
        self.journal: Any = None  # the live Journal, as last saved
        self._stack: list[list[float]] = []
        self._patched: list[tuple[Any, str, Any]] = []

    def _charge(self, label: str, seconds: float, cpu: float) -> None:
        bucket = self.charges.setdefault(self.cycle, {})
        bucket[label] = bucket.get(label, 0.0) + seconds
        bucket = self.cpu.setdefault(self.cycle, {})
        bucket[label] = bucket.get(label, 0.0) + cpu
        calls = self.calls.setdefault(self.cycle, {})
        calls[label] = calls.get(label, 0) + 1

    def wrap(self, owner: Any, attr: str, label: str, before: Callable[[], None] | None = None) -> None:
        original = owner.__dict__[attr]
        profiler = self

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if before is not None:
                before()
            profiler._stack.append([0.0, 0.0])
            started, cpu_started = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                took, cpu = time.perf_counter() - started, time.thread_time() - cpu_started
                inner, inner_cpu = profiler._stack.pop()
                if profiler._stack:
                    profiler._stack[-1][0] += took
                    profiler._stack[-1][1] += cpu
                profiler._charge(label, took - inner, cpu - inner_cpu)

        setattr(owner, attr, wrapper)
        self._patched.append((owner, attr, original))

    def _next_cycle(self) -> None:
        self.cycle += 1
        self.cycle_starts.append(time.perf_counter())
        self.cycle_loads.append(os.getloadavg()[0])

    def install(self) -> None:
        from ray.tune.execution.tune_controller import TuneController

        from autopeft.driver import journal, monitor, runner
        from autopeft.results import records, tracking

        self.wrap(monitor.Monitor, "on_start", "monitor other", before=self._next_cycle)
        for name in ("on_complete", "on_failed", "on_stopped", "_finished"):
            self.wrap(monitor.Monitor, name, "monitor other")
        self.wrap(monitor.Monitor, "_show", "front + progress line")
        self.wrap(records.HypervolumeLog, "add", "hypervolume")
        self.wrap(runner.OptimizerSearcher, "suggest", "optimizer ask")
        self.wrap(runner.OptimizerSearcher, "on_trial_complete", "optimizer tell")
        self.wrap(runner.OptimizerSearcher, "save", "Tune searcher checkpoint")
        self.wrap(journal.Journal, "save", "journal write")
        self.wrap(journal.Journal, "save_record", "journal write")
        wrapped_save = journal.Journal.__dict__["save"]  # keep the live journal as well

        def save(this: Any, *records: Any) -> None:
            self.journal = this
            wrapped_save(this, *records)

        journal.Journal.save = save
        self._patched.append((journal.Journal, "save", wrapped_save))
        for name in ("start_trial", "finish_trial", "log_epoch", "log_hypervolume"):
            self.wrap(tracking.SearchTracker, name, f"MLflow {name}")
        self.wrap(TuneController, "checkpoint", "Tune experiment checkpoint")

    def uninstall(self) -> None:
        for owner, attr, original in reversed(self._patched):
            setattr(owner, attr, original)
        self._patched.clear()


COMPONENTS = ("optimizer ask", "optimizer tell", "journal write", "MLflow start_trial", "MLflow finish_trial",
              "MLflow log_epoch", "MLflow log_hypervolume", "hypervolume",
              "front + progress line", "monitor other", "Tune experiment checkpoint", "Tune searcher checkpoint")


# ---------------------------------------------------------------- part 1: one big search


def stored_trials(tracking_uri: str, run_id: str) -> tuple[Any, list[Any]]:
    """The parent run and its trial child runs, by trial number."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    parent = client.get_run(run_id)
    runs, token = [], None
    while True:
        page = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'",
                                  max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    trials = [r for r in runs if r.data.tags.get("autopeft.role") == "trial"]
    trials.sort(key=lambda r: int(r.data.tags["autopeft.trial_number"]))
    return parent, trials


def big_search(optimizer: str, trials: int, model: Path, data: Path, out: Path, results: Path) -> dict[str, Any]:
    import psutil

    import autopeft

    experiment = f"scale-{optimizer}"
    say(f"\n## {trials}-trial search, optimizer {optimizer}, concurrency 1 (experiment {experiment})")
    say(load_line("the search"))
    profiler = Profiler()
    profiler.install()
    me = psutil.Process()
    cpu_before = sum(me.cpu_times()[:2])
    started = time.perf_counter()
    try:
        with LoadSampler() as load:
            result = autopeft.search(task="classification", model=str(model), train_file=str(data),
                                     text_column="review", label_column="verdict", optimizer=optimizer,
                                     trials=trials, concurrency=1, output_dir=str(out), experiment=experiment,
                                     progress=False, **CHEAP)
        fit_end = time.perf_counter()
    finally:
        profiler.uninstall()
    wall = fit_end - started
    driver_cpu = sum(me.cpu_times()[:2]) - cpu_before
    completed = sum(r.status == "completed" for r in result.trials)
    say(f"{len(result.trials)} trials, {completed} completed; wall {wall:.0f} s "
        f"({wall / trials:.2f} s per trial); driver process CPU {driver_cpu:.0f} s "
        f"({driver_cpu / trials * 1000:.0f} ms per trial, all its threads)")
    say(load.summary())

    parent, runs = stored_trials(result.tracking_uri, result.run_id)
    by_number = {r.number: r for r in result.trials}
    n = len(runs)
    start = [r.info.start_time / 1000 for r in runs]
    end = [(r.info.end_time or r.info.start_time) / 1000 for r in runs]
    numbers = [int(r.data.tags["autopeft.trial_number"]) for r in runs]
    worker = [by_number[k].metrics.get("trial_seconds", float("nan")) for k in numbers]
    # cycle k (k = 1..n-1): from trial k's start to trial k+1's
    cycles = min(n, len(profiler.cycle_starts)) - 1
    rows = []
    for k in range(1, cycles + 1):
        i = k - 1
        charges, cpu = profiler.charges.get(k, {}), profiler.cpu.get(k, {})
        cycle = profiler.cycle_starts[k] - profiler.cycle_starts[k - 1]
        driver = sum(charges.values())
        rows.append({"cycle": k, "load": profiler.cycle_loads[k - 1], "mlflow_gap": start[i + 1] - end[i],
                     "mlflow_duration": end[i] - start[i],
                     "cycle_seconds": cycle, "worker": worker[i], "driver": driver,
                     "rest": cycle - worker[i] - driver, **{c: charges.get(c, 0.0) for c in COMPONENTS},
                     "driver cpu": sum(cpu.values()), **{f"{c} cpu": cpu.get(c, 0.0) for c in COMPONENTS},
                     "journal_writes": profiler.calls.get(k, {}).get("journal write", 0)})
    with (results / f"cycles_{optimizer}.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    last = (max(cycles - 9, 1), cycles)
    windows = [(1, min(10, cycles)), (91, 100), last]
    windows = [(a, b) for a, b in windows if b <= cycles and a <= b]
    windows = sorted(set(windows))

    def pick(key: str, window: tuple[int, int]) -> list[float]:
        return [row[key] for row in rows if window[0] <= row["cycle"] <= window[1]]

    head = f"{'ms per trial: mean median p90':<46}" + "".join(f"{f'cycles {a}-{b}':>24}" for a, b in windows) + \
        f"{'slope ms/100 trials':>21}"
    say("\n" + head)
    show = [("MLflow gap: end k -> start k+1", "mlflow_gap"),
            ("MLflow run duration: start k -> end k", "mlflow_duration"),
            ("cycle: start k -> start k+1", "cycle_seconds"),
            ("  in the worker (trial_seconds)", "worker"),
            ("  driver, autopeft code (profiled)", "driver"),
            *[(f"    {c}", c) for c in COMPONENTS],
            ("  rest: Tune/Ray dispatch, result plumbing", "rest")]
    for label, key in show:
        say(f"{label:<46}" + "".join(f"{cell(pick(key, w)):>24}" for w in windows)
            + f"{slope_per_100([row[key] for row in rows]):>21.1f}")
    say(f"{'1-minute load average at the cycles (mean)':<46}"
        + "".join(f"{statistics.fmean(pick('load', w)):>24.2f}" for w in windows))
    say(f"(journal writes per cycle: {statistics.fmean(row['journal_writes'] for row in rows):.1f}; "
        f"the last window is cycles {last[0]}-{last[1]}: the last trial has no next start; driver work "
        f"that overlaps the worker's (Tune's checkpoint, epoch logging) makes 'rest' negative at times)")
    say(f"\n{'driver CPU ms per trial (its thread): mean':<46}"
        + "".join(f"{f'cycles {a}-{b}':>24}" for a, b in windows) + f"{'slope ms/100 trials':>21}")
    for label, key in [("  driver, autopeft code (profiled)", "driver cpu"),
                       *[(f"    {c}", f"{c} cpu") for c in COMPONENTS]]:
        say(f"{label:<46}" + "".join(f"{statistics.fmean(pick(key, w)) * 1000:>24.1f}" for w in windows)
            + f"{slope_per_100([row[key] for row in rows]):>21.1f}")
    say("(CPU time is what the machine's load does not inflate: a growth here is work that grows)")

    t = result.timings
    say("\nSearchResult.timings / trials: " + ", ".join(
        f"{k.removesuffix('_seconds')} {v / trials * 1000:.0f} ms" for k, v in t.items())
        + "  (totals: " + ", ".join(f"{k.removesuffix('_seconds')} {v:.1f} s" for k, v in t.items()) + ")")

    journal = Path(parent.data.tags["autopeft.journal"])
    size = journal.stat().st_size
    with journal.open("rb") as fh:
        state = pickle.load(fh)
    dumps = []
    for _ in range(5):
        t0 = time.perf_counter()
        blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        dumps.append(time.perf_counter() - t0)
    parts = {k: len(pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL)) for k, v in state.items()}
    say(f"journal {journal.name}: {size / 1024:.0f} KB after {trials} trials, pickle.dumps "
        f"{statistics.median(dumps) * 1000:.1f} ms (median of 5; {len(blob) / 1024:.0f} KB); by part: "
        + ", ".join(f"{k} {v / 1024:.0f} KB" for k, v in parts.items()))
    live = profiler.journal
    if live is not None:
        saves, live_dumps = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            live.save()  # the finished search's journal, written again as it is
            saves.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            pickle.dumps({k: v for k, v in live.__dict__.items() if k not in ("path", "records")},
                         protocol=pickle.HIGHEST_PROTOCOL)
            live_dumps.append(time.perf_counter() - t0)
        say(f"the live journal (in the driver, after the search): save() {statistics.median(saves) * 1000:.1f} ms, "
            f"pickle.dumps {statistics.median(live_dumps) * 1000:.1f} ms (medians of 5; "
            f"{load_line('these').strip('[]')})")
    first = pick("journal write", windows[0])
    lastw = pick("journal write", windows[-1])
    say(f"journal writes per cycle (all of them): {statistics.fmean(first) * 1000:.1f} ms in cycles "
        f"{windows[0][0]}-{windows[0][1]}, {statistics.fmean(lastw) * 1000:.1f} ms in cycles "
        f"{windows[-1][0]}-{windows[-1][1]}")
    return {"optimizer": optimizer, "experiment": experiment, "run_id": result.run_id, "rows": rows,
            "wall": wall}


# ---------------------------------------------------------------- part 2: autopeft front


def time_command(argv: list[str], repeats: int) -> tuple[list[float], subprocess.CompletedProcess]:
    times, done = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
        times.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return times, done


SPLIT = """
import contextlib, io, json, sys, time
t0 = time.perf_counter()
import autopeft.cli, autopeft.results.report, autopeft.results.rows, autopeft.results.tracking, autopeft.driver.resume
t1 = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    code = autopeft.cli.main(sys.argv[1:])
t2 = time.perf_counter()
heavy = [m for m in ("torch", "botorch", "jax", "ray", "mlflow", "pandas", "matplotlib") if m in sys.modules]
print(json.dumps({"imports": t1 - t0, "command": t2 - t1, "code": code, "heavy": heavy}))
"""


def front_timing(out: Path, experiment: str, trials: int, repeats: int) -> None:
    say(f"\n## autopeft front on the {trials}-trial search ({repeats} runs each, fresh interpreter)")
    say(load_line("the front timings"))
    front = [sys.executable, "-m", "autopeft.cli", "front", "--output-dir", str(out), "--experiment", experiment]
    helper = [sys.executable, "-m", "autopeft.cli", "--help"]
    with LoadSampler(1.0) as load:
        help_times, _ = time_command(helper, repeats)
        front_times, done = time_command(front, repeats)
    say(f"{'command':<62}{'median s':>9}{'min s':>8}{'max s':>8}")
    for label, times in (("python -m autopeft.cli --help (startup, CLI import)", help_times),
                         (f"python -m autopeft.cli front --output-dir DIR --experiment {experiment}", front_times)):
        say(f"{label:<62}{statistics.median(times):>9.2f}{min(times):>8.2f}{max(times):>8.2f}")
    say(f"front's first line: {done.stdout.splitlines()[0] if done.stdout else '(none)'}")
    say(load.summary())
    say(load_line("the split front timings"))
    splits = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        answer = subprocess.run([sys.executable, "-c", SPLIT, "front", "--output-dir", str(out),
                                 "--experiment", experiment], capture_output=True, text=True, cwd=ROOT)
        splits.append({**json.loads(answer.stdout.strip().splitlines()[-1]), "wall": time.perf_counter() - t0})
    say(f"the same, split (median of {repeats}): importing the modules front loads "
        f"{statistics.median(s['imports'] for s in splits):.2f} s, the command itself (MLflow query of "
        f"{trials} runs, front, table) {statistics.median(s['command'] for s in splits):.2f} s, the rest "
        f"(interpreter start and exit) {statistics.median(s['wall'] - s['imports'] - s['command'] for s in splits):.2f} s; "
        f"heavy modules loaded: {', '.join(splits[-1]['heavy'])}")


# ---------------------------------------------------------------- part 3: searches sharing a server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited {server.returncode}; see {folder / 'server.log'}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return server, url
        except OSError:
            time.sleep(0.5)
    stop_group(server)
    raise RuntimeError("mlflow server did not answer /health within 180 s")


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL after 15 s."""
    if process.poll() is not None:
        try:  # the leader ended; its group may not have
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # anything left in the group
    except ProcessLookupError:
        pass


def cli_search(experiment: str, trials: int, model: Path, data: Path, out: Path, url: str) -> list[str]:
    return [sys.executable, "-m", "autopeft.cli", "search", "--model", str(model), "--train-file", str(data),
            "--text-column", "review", "--label-column", "verdict", "--optimizer", "random",
            "--trials", str(trials), "--max-train-examples", str(CHEAP["max_train_examples"]),
            "--max-length", str(CHEAP["max_length"]), "--max-eval-examples", str(CHEAP["max_eval_examples"]),
            "--epochs", "1", "--output-dir", str(out), "--tracking-uri", url, "--experiment", experiment, "--quiet"]


def run_searches(names: list[str], trials: int, model: Path, data: Path, work: Path, url: str,
                 timeout: float) -> dict[str, tuple[float, int]]:
    """Start one CLI search per name at once; (wall seconds, exit code) of each."""
    procs, began, walls = {}, {}, {}
    for name in names:
        log = (work / f"{name}.log").open("w")
        began[name] = time.perf_counter()
        procs[name] = subprocess.Popen(cli_search(name, trials, model, data, work / name, url), cwd=ROOT,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while len(walls) < len(procs):
        for name, proc in procs.items():
            if name not in walls and proc.poll() is not None:
                walls[name] = (time.perf_counter() - began[name], proc.returncode)
        if time.monotonic() > deadline:
            for name, proc in procs.items():
                if name not in walls:
                    stop_group(proc)
                    walls[name] = (time.perf_counter() - began[name], -9)
        time.sleep(0.2)
    for proc in procs.values():
        stop_group(proc)  # nothing of theirs left behind (their Ray is shut down on exit)
    return walls


def check_experiment(url: str, experiment: str, trials: int) -> tuple[str, list[float], list[float]]:
    """(verdict, MLflow gaps, run durations) of the experiment's search on the server."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return "FAIL: no experiment", [], []
    parents = client.search_runs([exp.experiment_id], "tags.`autopeft.role` = 'search'")
    if len(parents) != 1:
        return f"FAIL: {len(parents)} searches", [], []
    _, runs = stored_trials(url, parents[0].info.run_id)
    done = [r for r in runs if r.info.status == "FINISHED" and r.data.tags.get("autopeft.status") == "completed"]
    numbers = sorted(int(r.data.tags["autopeft.trial_number"]) for r in done)
    ok = len(runs) == trials and len(done) == trials and numbers == list(range(1, trials + 1)) \
        and parents[0].data.tags.get("autopeft.status") == "completed"
    verdict = (f"{'OK' if ok else 'FAIL'}: {len(runs)} child runs, {len(done)} completed, "
               f"parent {parents[0].data.tags.get('autopeft.status')}")
    start = [r.info.start_time / 1000 for r in runs]
    end = [(r.info.end_time or r.info.start_time) / 1000 for r in runs]
    gaps = [start[i + 1] - end[i] for i in range(len(runs) - 1)]
    return verdict, gaps, [e - s for s, e in zip(start, end)]


def shared_server(model: Path, data: Path, work: Path, searches: int, trials: int, solo: bool,
                  timeout: float) -> None:
    say(f"\n## {searches} searches at once on one MLflow tracking server ({trials} trials each, random, "
        f"concurrency 1, each its own local Ray)")
    server, url = start_server(work / "server")
    try:
        say(f"mlflow server at {url} (SQLite backend, proxied artifacts, --workers 1)")
        say(f"{'search':<22}{'wall s':>8}{'s/trial':>9}{'gap ms mean/med/p90':>26}"
            f"{'run ms mean/med/p90':>26}  check")
        phases = ([("alone", ["solo"])] if solo else []) + \
            [("at once", [f"e{i}" for i in range(1, searches + 1)])]
        for phase, names in phases:
            say(load_line(f"{len(names)} search(es) {phase}"))
            with LoadSampler() as load:
                walls = run_searches(names, trials, model, data, work, url, timeout)
            for name in names:
                wall, code = walls[name]
                verdict, gaps, durations = check_experiment(url, name, trials)
                if code != 0:
                    verdict = f"FAIL: exit {code} ({work / f'{name}.log'}); " + verdict
                say(f"{name + ' (' + phase + ')':<22}{wall:>8.1f}{wall / trials:>9.2f}{cell(gaps):>26}"
                    f"{cell(durations):>26}  {verdict}")
            say(load.summary())
    finally:
        stop_group(server)
    say(f"server stopped (process group {server.pid}: exit {server.returncode})")


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=300, help="trials of each big search (default: 300)")
    parser.add_argument("--optimizers", default="random,tpe", help="big searches, comma-separated (default: random,tpe)")
    parser.add_argument("--front-repeats", type=int, default=3)
    parser.add_argument("--parallel-searches", type=int, default=3)
    parser.add_argument("--parallel-trials", type=int, default=20)
    parser.add_argument("--no-solo", action="store_true", help="skip the search alone on the server")
    parser.add_argument("--skip-big", action="store_true", help="only the shared-server part")
    parser.add_argument("--skip-server", action="store_true", help="no shared-server part")
    parser.add_argument("--parallel-timeout", type=float, default=1200, help="seconds before the searches are stopped")
    parser.add_argument("--work", help="work folder (default: a new one under /tmp, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/scale/scale.txt"))
    args = parser.parse_args()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="autopeft-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    try:
        import mlflow
        import ray

        say(f"# benchmarks/scale.py {' '.join(sys.argv[1:])}".rstrip())
        say(f"{time.strftime('%Y-%m-%d %H:%M:%S')}; {os.cpu_count()} CPUs; mlflow {mlflow.__version__}, "
            f"ray {ray.__version__}; trial: tiny BERT (4 layers, hidden 32), " + ", ".join(
                f"{k}={v}" for k, v in CHEAP.items()) + "; space lora, objectives accuracy + trainable_percent")
        model = tiny_model(work / "tiny-bert")
        data = sentiment_csv(work / "reviews.csv")
        if not args.skip_big:
            optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()]
            store = work / "store"
            for optimizer in optimizers:
                big_search(optimizer, args.trials, model, data, store, out.parent)
            front_timing(store, f"scale-{optimizers[0]}", args.trials, args.front_repeats)
        if not args.skip_server:
            shared_server(model, data, work / "shared", args.parallel_searches, args.parallel_trials,
                          not args.no_solo, args.parallel_timeout)
        say(f"\ntotal {time.perf_counter() - began:.0f} s; " + load_line("the end").strip("[]"))
    finally:
        out.write_text("\n".join(LINES) + "\n")
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep or args.work:
            print(f"work folder kept: {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
