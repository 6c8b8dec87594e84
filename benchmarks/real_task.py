"""autopeft MOBO against random search on the demo task at a reduced fidelity: the dev
hypervolume after the same number of trials, when MOBO passes random search's final
hypervolume, and the test scores of each final front.

    ray start --head --num-cpus 1      # optional: trials on one core, the other left free
    nice -n 5 .venv/bin/python benchmarks/real_task.py --ray-address auto \\
        --out benchmarks/results/real_task

The defaults: 12 trials per search, 3 seeds, 600 training and 300 dev examples of at most 32
tokens, one epoch in batches of 8 (75 steps; in batches of 16 no trial left the majority
class), on ``real_task_space.yaml``: the ``lora`` preset with learning
rates of 1e-3 to 3e-2, because at the preset's 1e-4 to 5e-3 almost no configuration learns
anything in so few steps and every trial scores the majority class.

Each finished search appends its trials to ``OUT/trials.csv`` (so an interrupted run resumes
with the searches not yet there); ``--report`` only prints the table and writes
``OUT/table.txt``. Every search uses the same objectives (dev accuracy, trainable %) and the
hypervolumes share one reference point (the worst value seen per objective over all
searches), so they compare across optimizers and seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

import autopeft
from autopeft.pareto import hypervolume_curve, pareto_mask

DIRECTIONS = ["maximize", "minimize"]  # accuracy, trainable_percent: the demo's objectives
FIELDS = ["optimizer", "seed", "trial", "status", "accuracy", "trainable_percent", "pareto",
          "test_accuracy", "config"]


def run(args: argparse.Namespace, path: Path) -> None:
    done = set()
    if path.exists():
        with path.open() as fh:
            done = {(r["optimizer"], int(r["seed"])) for r in csv.DictReader(fh)}
    for name in args.optimizers:
        for seed in range(args.seeds):
            if (name, seed) in done:
                continue
            with tempfile.TemporaryDirectory() as out:
                result = autopeft.search(
                    task="demo", trials=args.trials, optimizer=name, seed=seed, concurrency=args.concurrency,
                    max_train_examples=args.max_train_examples, max_eval_examples=args.max_eval_examples,
                    max_length=args.max_length, batch_size=args.batch_size, space=str(args.space),
                    output_dir=out,
                    ray_address=args.ray_address, progress=False)
            new = not path.exists()
            with path.open("a", newline="") as fh:
                writer = csv.DictWriter(fh, FIELDS)
                if new:
                    writer.writeheader()
                for t in sorted(result.trials, key=lambda t: t.number):
                    writer.writerow({"optimizer": name, "seed": seed, "trial": t.number, "status": t.status,
                                     "accuracy": t.objectives.get("accuracy", ""),
                                     "trainable_percent": t.objectives.get("trainable_percent", ""),
                                     "pareto": t.pareto, "test_accuracy": t.test_metrics.get("accuracy", ""),
                                     "config": json.dumps(t.config)})
            print(f"{name} seed {seed}: {len(result.front)} on the front, {result.seconds:.0f} s", flush=True)


def report(args: argparse.Namespace, path: Path) -> str:
    runs: dict[tuple[str, int], list[dict]] = defaultdict(list)
    with path.open() as fh:
        for row in csv.DictReader(fh):
            runs[row["optimizer"], int(row["seed"])].append(row)

    def values(rows: list[dict]) -> np.ndarray:
        return np.array([[float(r["accuracy"]), float(r["trainable_percent"])] if r["status"] == "completed"
                         else [np.nan, np.nan] for r in sorted(rows, key=lambda r: int(r["trial"]))])

    every = np.concatenate([values(rows) for rows in runs.values()])
    every = every[~np.isnan(every).any(axis=1)]
    reference = np.array([every[:, 0].min(), every[:, 1].max()])
    curves = {key: hypervolume_curve(values(rows), DIRECTIONS, reference) for key, rows in runs.items()}
    optimizers = sorted({k[0] for k in runs}, key=lambda n: (n != "mobo", n))
    mean_curve = {n: np.mean([c for (o, _), c in curves.items() if o == n], axis=0) for n in optimizers}
    lines = [f"demo task, {args.max_train_examples} train / {args.max_eval_examples} dev examples of at most "
             f"{args.max_length} tokens, 1 epoch in batches of {args.batch_size}, space {args.space.name}, {args.trials} trials per search; "
             f"reference point (worst seen): accuracy "
             f"{reference[0]:.3f}, trainable % {reference[1]:.4f}", ""]
    target = mean_curve["random"][-1] if "random" in mean_curve else None
    for name in optimizers:
        seeds = sorted(s for o, s in runs if o == name)
        finals = [curves[name, s][-1] for s in seeds]
        reach = ""
        if target is not None:
            hit = np.flatnonzero(mean_curve[name] >= target)
            reach = f"reaches random's mean final hypervolume after {hit[0] + 1 if len(hit) else '>'} trials"
        lines.append(f"{name:<8} dev hypervolume {np.mean(finals):.4f} ± {np.std(finals):.4f} "
                     f"({len(seeds)} seeds: {', '.join(f'{v:.4f}' for v in finals)}); {reach}")
        for s in seeds:
            rows = [r for r in runs[name, s] if r["pareto"] == "True"]
            rows.sort(key=lambda r: -float(r["accuracy"]))
            front = "; ".join(f"{float(r['accuracy']):.3f} / {float(r['trainable_percent']):.3f}% "
                              f"/ test {float(r['test_accuracy']):.3f}" for r in rows)
            best_test = max(float(r["test_accuracy"]) for r in rows)
            lines.append(f"    seed {s}: front (dev acc / trainable % / test acc): {front}; "
                         f"best test accuracy {best_test:.3f}")
    # The front of each search, checked again here from the stored values.
    for key, rows in runs.items():
        done = sorted((r for r in rows if r["status"] == "completed"), key=lambda r: int(r["trial"]))
        mask = pareto_mask(values(done), DIRECTIONS)
        assert {r["trial"] for r, m in zip(done, mask) if m} == {r["trial"] for r in rows if r["pareto"] == "True"}, key
    text = "\n".join(lines)
    (path.parent / "table.txt").write_text(text + "\n")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--optimizers", nargs="+", default=["mobo", "random"])
    parser.add_argument("--max-train-examples", type=int, default=600)
    parser.add_argument("--max-eval-examples", type=int, default=300)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--space", type=Path, default=Path(__file__).parent / "real_task_space.yaml")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="trials at a time (random search proposes the same trials at any value)")
    parser.add_argument("--ray-address", default=None, help="an existing Ray cluster ('auto': the local one)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/real_task"))
    parser.add_argument("--report", action="store_true", help="only print the table")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "trials.csv"
    if not args.report:
        run(args, path)
    print(report(args, path))


if __name__ == "__main__":
    main()
