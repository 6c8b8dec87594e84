"""Multi-objective early stopping (``--scheduler moasha``) against none (``fifo``) at equal
compute: the dev hypervolume of the trials that trained to the end, against the training
steps the search had spent, over seeds.

    nice -n 5 .venv/bin/python benchmarks/early_stopping.py --out benchmarks/results/early_stopping
    .venv/bin/python benchmarks/early_stopping.py --report --out benchmarks/results/early_stopping

The tasks, data and space are those of ``benchmarks/real_task.py`` (demo: Rotten Tomatoes;
bbc: BBC News topics; 600 train / 300 dev examples per trial, batches of 8, the
``examples/lora_short_trials.yaml`` LoRA space). Each seed runs MOBO twice from the same initial
designs:
``fifo`` for ``--trials`` trials, each trained to the end, and ``moasha`` (rungs at
``reduction_factor ** -k`` of a trial's steps) for ``--es-trials`` trials. A search's compute is
the sum of its trials' optimizer steps (a stopped trial counts the steps it took); the
budget of a seed is what its ``fifo`` search spent, and the early-stopping search is read
at that budget (its later trials are ignored; if it ran out of trials before it, its last
value stands). Hypervolumes count only trials that trained to the end, against one
reference point per task (the worst dev accuracy and largest trainable % of all of them).

Each finished search appends its trials to ``OUT/trials.csv`` (an interrupted run resumes);
the report writes ``OUT/table.txt`` and ``OUT/hypervolume_steps_<task>.png``.
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

import autopeft
from autopeft.pareto import hypervolume_curve

sys.path.insert(0, str(Path(__file__).parent))
from real_task import LENGTHS, SPACE, append_rows, local_ray, task_options  # noqa: E402  (the same tasks and data)

DIRECTIONS = ["maximize", "minimize"]  # accuracy, trainable_percent
FIELDS = ["task", "arm", "seed", "trial", "status", "accuracy", "trainable_percent", "train_steps",
          "seconds", "config"]


def run(args: argparse.Namespace, path: Path) -> None:
    done = set()
    if path.exists():
        with path.open() as fh:
            done = {(r["task"], r["arm"], int(r["seed"])) for r in csv.DictReader(fh)}
    for task in args.tasks:
        for seed in args.only_seeds or range(args.seeds):
            for arm, trials in (("fifo", args.trials), ("moasha", args.es_trials)):
                if (task, arm, seed) in done:
                    continue
                with tempfile.TemporaryDirectory() as out:
                    result = autopeft.search(
                        **task_options(task, args.out), trials=trials, optimizer=args.optimizer, seed=seed,
                        optimizer_options={"n_initial": args.initial}, scheduler=arm,
                        reduction_factor=args.reduction_factor, rungs=args.rungs,
                        max_train_examples=args.max_train_examples, max_eval_examples=args.max_eval_examples,
                        max_length=LENGTHS[task], batch_size=args.batch_size, space=str(args.space),
                        output_dir=out, progress=False)
                if len(result.trials) < trials:
                    raise SystemExit(f"{task} {arm} seed {seed} stopped after {len(result.trials)} trials")
                append_rows(path, FIELDS, [
                    {"task": task, "arm": arm, "seed": seed, "trial": t.number, "status": t.status,
                     "accuracy": t.objectives.get("accuracy", ""),
                     "trainable_percent": t.objectives.get("trainable_percent", ""),
                     "train_steps": t.metrics.get("train_steps", 0), "seconds": f"{result.seconds:.0f}",
                     "config": json.dumps(t.config)} for t in sorted(result.trials, key=lambda t: t.number)])
                stopped = sum(t.status == "stopped" for t in result.trials)
                print(f"{task} {arm} seed {seed}: {stopped} stopped, {len(result.front)} on the front, "
                      f"{result.seconds:.0f} s", flush=True)


def steps_curve(rows: list[dict], reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cumulative training steps, dev hypervolume of the completed trials) after each trial,
    in the order trials ran (one at a time, so the order they finished)."""
    rows = sorted(rows, key=lambda r: int(r["trial"]))
    steps = np.cumsum([float(r["train_steps"] or 0) for r in rows])
    values = np.array([[float(r["accuracy"]), float(r["trainable_percent"])] if r["status"] == "completed"
                       else [np.nan, np.nan] for r in rows])
    return steps, np.array(hypervolume_curve(values, DIRECTIONS, reference))


def at(steps: np.ndarray, hv: np.ndarray, budget: float) -> float:
    """The hypervolume after the last trial that finished within ``budget`` steps."""
    within = np.flatnonzero(steps <= budget + 1e-9)
    return float(hv[within[-1]]) if len(within) else 0.0


def report(args: argparse.Namespace, path: Path) -> str:
    runs: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    with path.open() as fh:
        for row in csv.DictReader(fh):
            runs[row["task"], row["arm"], int(row["seed"])].append(row)
    # A search's first trials do not depend on how many follow (asks see only what came
    # before), so a longer run read up to --trials / --es-trials is the shorter one.
    for (task, arm, seed), rows in runs.items():
        rows.sort(key=lambda r: int(r["trial"]))
        del rows[args.trials if arm == "fifo" else args.es_trials:]
    lines = []
    for task in sorted({k[0] for k in runs}):
        seeds = sorted({k[2] for k in runs if k[:2] == (task, "fifo")} & {k[2] for k in runs if k[:2] == (task, "moasha")})
        if not seeds:
            continue
        every = np.array([[float(r["accuracy"]), float(r["trainable_percent"])]
                          for s in seeds for arm in ("fifo", "moasha") for r in runs[task, arm, s]
                          if r["status"] == "completed"])
        reference = np.array([every[:, 0].min(), every[:, 1].max()])
        curves = {(arm, s): steps_curve(runs[task, arm, s], reference) for s in seeds for arm in ("fifo", "moasha")}
        budgets = {s: curves["fifo", s][0][-1] for s in seeds}
        lines += [f"{task}: {len(seeds)} seeds; budget = the fifo search's training steps; reference point "
                  f"accuracy {reference[0]:.3f}, trainable % {reference[1]:.4f}", "",
                  "| arm | trials within the budget (stopped) | dev HV at 1/3 of the budget | at 2/3 | at the budget |",
                  "|---|---|---|---|---|"]
        table: dict[str, dict[str, np.ndarray]] = {}
        for arm in ("fifo", "moasha"):
            hv = {f: np.array([at(*curves[arm, s], f * budgets[s]) for s in seeds]) for f in (1 / 3, 2 / 3, 1.0)}
            counts = [(int((curves[arm, s][0] <= budgets[s] + 1e-9).sum()),
                       sum(r["status"] == "stopped" for r in sorted(runs[task, arm, s], key=lambda r: int(r["trial"]))
                           [: int((curves[arm, s][0] <= budgets[s] + 1e-9).sum())])) for s in seeds]
            table[arm] = hv

            def ms(x: np.ndarray) -> str:
                return f"{x.mean():.4f} ± {x.std(ddof=1) if len(x) > 1 else 0:.4f}"

            lines.append(f"| {arm} | {np.mean([c[0] for c in counts]):.1f} ({np.mean([c[1] for c in counts]):.1f}) | "
                         f"{ms(hv[1 / 3])} | {ms(hv[2 / 3])} | {ms(hv[1.0])} |")
        diff = table["moasha"][1.0] - table["fifo"][1.0]
        lines += ["", f"dev HV at the budget, moasha minus fifo, seed by seed: {diff.mean():+.4f} ± "
                  f"{diff.std(ddof=1) if len(diff) > 1 else 0:.4f}; higher on {int((diff > 1e-12).sum())}, "
                  f"lower on {int((diff < -1e-12).sum())} of {len(seeds)} seeds", ""]
        plot(task, curves, budgets, seeds, path.parent / f"hypervolume_steps_{task}.png")
    text = "\n".join(lines)
    (path.parent / "table.txt").write_text(text + "\n")
    return text


def plot(task: str, curves: dict, budgets: dict[int, float], seeds: list[int], path: Path) -> None:
    """Mean dev hypervolume against the share of the budget spent, with one sd over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, 1, 41)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for arm in ("fifo", "moasha"):
        hv = np.array([[at(*curves[arm, s], g * budgets[s]) for g in grid] for s in seeds])
        mean, sd = hv.mean(0), hv.std(0, ddof=1) if len(hv) > 1 else np.zeros(len(grid))
        ax.plot(grid, mean, label=f"{arm} ({len(seeds)} seeds)")
        ax.fill_between(grid, mean - sd, mean + sd, alpha=0.15)
    ax.set(xlabel="training steps spent (share of the fifo search's total)",
           ylabel="dev hypervolume (completed trials)", title=f"{task}: early stopping at equal compute")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["demo", "bbc"], choices=["demo", "bbc"])
    parser.add_argument("--trials", type=int, default=8, help="trials of the fifo search")
    parser.add_argument("--es-trials", type=int, default=16, help="trials of the early-stopping search")
    parser.add_argument("--initial", type=int, default=4)
    parser.add_argument("--optimizer", default="mobo")
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--rungs", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only-seeds", type=int, nargs="+", default=None)
    parser.add_argument("--max-train-examples", type=int, default=600)
    parser.add_argument("--max-eval-examples", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--space", type=Path, default=SPACE)
    parser.add_argument("--cpus", type=int, default=None, help="a local Ray of this many CPUs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/early_stopping"))
    parser.add_argument("--report", action="store_true", help="only print the table")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "trials.csv"
    if not args.report:
        local_ray(args.cpus)
        run(args, path)
    print(report(args, path))


if __name__ == "__main__":
    main()
