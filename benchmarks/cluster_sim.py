"""A search at cluster scale, simulated: does autopeft's driver keep 64 GPUs busy?

    .venv/bin/python benchmarks/cluster_sim.py --optimizers random mobo --out benchmarks/results/cluster_sim

A Ray head declares 64 CPUs and 64 GPUs (Ray schedules by declared resources, so to the
runner this is a 64-GPU node); the demo's search (its space, objectives, optimizer, Ray Tune
runner, MLflow store and journal, all autopeft's own) runs ``--trials`` trials at
concurrency 64 with ``--gpus-per-trial 1``. Only the trial itself is a stand-in: it sleeps a
duration drawn from ``--duration LOW HIGH`` seconds and reports what a trial reports, its
accuracy from a synthetic function of the configuration (a band of learning rates that learn,
gains that saturate in the adapter's size) and its trainable share exact, from autopeft's own
parameter counter (computed in the driver when the trial is asked for and carried in its Tune
config). A stand-in that imported torch would cost 330 MB a worker, 21 GB for 64.

Measured: the optimizer's ask time against the trials told and pending; the driver process's
CPU per trial (all its threads: Tune's loop, the searcher, MLflow logging, the journal) and
the Ray system processes' (GCS, raylet); MLflow writes per second (client calls that write);
the time to the last trial against the ideal (the sum of the sleeps over 64 GPUs); each GPU's
idle gap between one trial's end and the next one's start; and the packing (no declared GPU
holding two trials at once). ``--time-budget`` caps a search: where the driver cannot keep
up, how far it got is the figure. The table goes to ``--out``/cluster_sim.md (figures.json
holds the same), the per-ask figures to asks_<optimizer>.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import psutil
import ray
from mlflow.tracking import MlflowClient

import autopeft
from autopeft.driver import runner
from autopeft.objectives import OBJECTIVE_PREFIX

ROOT = Path(__file__).resolve().parents[1]
SIM = "simulated"  # the key of the Tune config that carries a stand-in trial's answers
# Plain strings here, so that the stand-in, shipped by value, refers to no autopeft module.
STATUS, STRATEGY_REPORT, DEVICE, GPUS = runner.STATUS, runner.STRATEGY_REPORT, runner.DEVICE, runner.GPUS


def synthetic_accuracy(config: dict, share: float, rng_seed: int) -> float:
    """A PEFT-shaped accuracy: learns in a band of learning rates around 3e-3 and gains with
    the adapter's size (saturating), at or below the majority class (0.6) elsewhere."""
    band = math.exp(-((math.log10(config.get("learning_rate", 3e-3)) + 2.5) / 0.6) ** 2)
    gain = 1.0 - math.exp(-share / 0.15)
    noise = random.Random(rng_seed).gauss(0.0, 0.015)
    return min(0.85, max(0.55, 0.6 + 0.2 * band * (0.3 + 0.7 * gain) + noise))


def sleeping_trial(params: dict) -> None:
    """The stand-in trial: sleeps its drawn duration on whatever Ray gave it, then reports.
    Shipped by value (this module is __main__), so a worker imports neither torch nor autopeft."""
    from ray import tune

    answers = params[SIM]
    time.sleep(answers["seconds"])
    gpus = ",".join(str(g) for g in ray.get_gpu_ids())
    tune.report({STATUS: "completed", "best_epoch": 0,
                 OBJECTIVE_PREFIX + "accuracy": answers["accuracy"], "dev_accuracy": answers["accuracy"],
                 OBJECTIVE_PREFIX + "trainable_percent": answers["trainable_percent"],
                 "trainable_percent": answers["trainable_percent"], "train_seconds": answers["seconds"],
                 STRATEGY_REPORT: "{}", DEVICE: f"simulated: sleeps on GPU {gpus}", GPUS: gpus})


class Probe:
    """What the driver does, counted by wrapping (not editing) the searcher's ask and tell and
    the MLflow client's writing calls."""

    def __init__(self, low: float, high: float, seed: int) -> None:
        self.low, self.high, self.seed = low, high, seed
        self.reset()

    def reset(self) -> None:
        """Ready for the next search."""
        self.setup = None
        self.asks: list[dict] = []
        self.told = 0
        self.writes = 0

    def install(self) -> None:
        probe = self

        def trial_trainable(setup, resources, limits):
            probe.setup = setup
            return sleeping_trial

        runner.trial_trainable = trial_trainable
        suggest, complete = runner.OptimizerSearcher.suggest, runner.OptimizerSearcher.on_trial_complete

        def timed_suggest(searcher, trial_id):
            pending = len(probe.asks) - probe.told
            started = time.perf_counter()
            asked = suggest(searcher, trial_id)
            seconds = time.perf_counter() - started
            if isinstance(asked, dict):
                probe.asks.append({"ask": len(probe.asks) + 1, "told": probe.told, "pending": pending,
                                   "seconds": seconds})
                asked[SIM] = probe.answers(asked["params"], len(probe.asks))
            return asked

        def counted_complete(searcher, trial_id, result=None, error=False):
            probe.told += 1
            return complete(searcher, trial_id, result, error)

        runner.OptimizerSearcher.suggest = timed_suggest
        runner.OptimizerSearcher.on_trial_complete = counted_complete
        for name in dir(MlflowClient):
            if name.startswith(("log_", "set_", "create_", "update_", "delete_")):
                setattr(MlflowClient, name, self._counting(getattr(MlflowClient, name)))

    def _counting(self, method):
        def counted(*args, **kwargs):
            self.writes += 1
            return method(*args, **kwargs)
        return counted

    def answers(self, config: dict, number: int) -> dict:
        share = self.setup.knowledge.analytic["trainable_percent"](self.setup.space.scope(config))
        draw = self.seed * 100_003 + number
        return {"seconds": random.Random(draw).uniform(self.low, self.high), "trainable_percent": share,
                "accuracy": synthetic_accuracy(config, share, draw)}


def ray_system_cpu() -> float:
    """CPU seconds of the Ray processes this driver started, its trial workers left out."""
    total = 0.0
    for proc in psutil.Process().children(recursive=True):
        try:
            if not proc.name().startswith("ray::"):
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


def simulate(optimizer: str, args: argparse.Namespace, work: Path, probe: Probe) -> dict:
    probe.reset()
    self_cpu = resource.getrusage(resource.RUSAGE_SELF)
    system_cpu = ray_system_cpu()
    started = time.perf_counter()
    result = autopeft.search(task="demo", space=str(ROOT / "examples" / "lora_demo.yaml"), optimizer=optimizer,
                             trials=args.trials, concurrency=args.concurrency, gpus_per_trial=1.0,
                             time_budget=args.time_budget, output_dir=str(work / optimizer),
                             experiment=f"cluster-sim-{optimizer}", seed=args.seed, final_seeds=0,
                             progress=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    driver_cpu = (after.ru_utime - self_cpu.ru_utime) + (after.ru_stime - self_cpu.ru_stime)
    done = [t for t in result.trials if t.status == "completed"]
    client = MlflowClient(result.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(f"cluster-sim-{optimizer}").experiment_id],
                              "tags.`autopeft.role` = 'trial'", max_results=10_000)
    parent = client.get_run(result.run_id).info.start_time / 1e3
    starts = sorted(run.info.start_time / 1e3 for run in runs)
    # Trials the time budget cut never reported, so they carry no GPU: the completed ones only.
    completed = [run for run in runs if run.data.tags.get("autopeft.status") == "completed"]
    ends = [run.info.end_time / 1e3 for run in completed]
    by_gpu = defaultdict(list)
    for run in completed:
        if run.info.end_time:
            by_gpu[run.data.tags.get("autopeft.gpus", "?")].append((run.info.start_time / 1e3, run.info.end_time / 1e3))
    overlaps, gaps = 0, []
    for spans in by_gpu.values():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            overlaps += start < end - 0.5  # a trial's run opens a moment before it reaches its worker
            gaps.append(max(0.0, start - end))
    slept = sum(t.metrics.get("train_seconds", 0.0) for t in done)
    asks = probe.asks
    with (args.out / f"asks_{optimizer}.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["ask", "told", "pending", "seconds"])
        writer.writeheader()
        writer.writerows(asks)
    full = [a["seconds"] for a in asks if a["pending"] >= args.concurrency - 1]
    return {"optimizer": optimizer, "completed": len(done), "asked": len(asks), "wall": wall,
            "ideal": slept / args.concurrency, "driver_cpu_per_trial": driver_cpu / max(1, len(done)),
            "ray_cpu_per_trial": (ray_system_cpu() - system_cpu) / max(1, len(done)),
            "writes_per_second": probe.writes / wall, "writes_per_trial": probe.writes / max(1, len(done)),
            "ask_median": statistics.median(a["seconds"] for a in asks),
            "ask_full_median": statistics.median(full) if full else float("nan"),
            "ask_last": statistics.median(a["seconds"] for a in asks[-20:]),
            "gap_median": statistics.median(gaps) if gaps else float("nan"),
            "gap_p90": statistics.quantiles(gaps, n=10)[-1] if len(gaps) > 10 else float("nan"),
            "gpus_used": len(by_gpu), "overlaps": overlaps,
            # the search's start to its first trial's, and to the last of the first wave's
            "first_trial": starts[0] - parent if starts else float("nan"),
            "full": starts[args.concurrency - 1] - parent if len(starts) >= args.concurrency else float("nan"),
            # the declared GPUs' busy share from the first trial's start to the last one's end
            "busy": slept / (args.concurrency * (max(ends) - starts[0])) if ends else float("nan"),
            "max_rss_mb": after.ru_maxrss / 1024}


def table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [f"{args.trials} trials asked at concurrency {args.concurrency} on a Ray head declaring "
             f"{args.concurrency} GPUs, 1 GPU a trial, sleeps of {args.duration[0]:g}-{args.duration[1]:g} s"
             + (f", time budget {args.time_budget:g} s" if args.time_budget else ""),
             f"machine: {psutil.cpu_count()} CPUs, load average at the end {psutil.getloadavg()[0]:.1f}", "",
             "| optimizer | completed | wall s (ideal) | first trial, all GPUs busy, s | GPU busy share | ask s: median, with all others pending, last 20 | driver CPU ms/trial | "
             "Ray GCS+raylet CPU ms/trial | MLflow writes/s (per trial) | GPU idle gap s: median, p90 | GPUs used, "
             "overlaps | driver max RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['optimizer']} | {r['completed']} of {r['asked']} asked | {r['wall']:.0f} ({r['ideal']:.0f}) | "
                     f"{r['first_trial']:.0f}, {r['full']:.0f} | {r['busy']:.2f} | "
                     f"{r['ask_median']:.3f}, {r['ask_full_median']:.3f}, {r['ask_last']:.3f} | "
                     f"{1e3 * r['driver_cpu_per_trial']:.0f} | {1e3 * r['ray_cpu_per_trial']:.0f} | "
                     f"{r['writes_per_second']:.1f} ({r['writes_per_trial']:.1f}) | {r['gap_median']:.2f}, "
                     f"{r['gap_p90']:.2f} | {r['gpus_used']}, {r['overlaps']} | {r['max_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizers", nargs="+", default=["random", "mobo"])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, nargs=2, default=[30.0, 90.0], metavar=("LOW", "HIGH"))
    parser.add_argument("--time-budget", type=float, default=None, help="seconds per search")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cluster_sim")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # The declared head: 64 CPUs, 64 GPUs; the runner finds this Ray up and uses it.
    ray.init(address="local", num_cpus=args.concurrency, num_gpus=args.concurrency, include_dashboard=False,
             log_to_driver=False, configure_logging=False, logging_level="ERROR",
             object_store_memory=256 * 1024 ** 2)
    probe = Probe(*args.duration, seed=args.seed)
    probe.install()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cluster-sim-") as work:
        for optimizer in args.optimizers:
            rows.append(simulate(optimizer, args, Path(work), probe))
            print(table(rows, args), flush=True)
    ray.shutdown()
    (args.out / "cluster_sim.md").write_text(table(rows, args))
    (args.out / "figures.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(main())
