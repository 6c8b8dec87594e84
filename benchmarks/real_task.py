"""autopeft MOBO against random search on the demo task at a reduced fidelity: the dev
hypervolume after the same number of trials, and the test scores of each final front.

    nice -n 19 .venv/bin/python benchmarks/real_task.py --trials 10 --seeds 3 \\
        --max-train-examples 300 --max-eval-examples 300

Every search uses the same objectives and a shared reference point (the worst value seen
per objective over all searches), so the hypervolumes are comparable across optimizers.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch

import autopeft
from autopeft.pareto import hypervolume


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--optimizers", nargs="+", default=["mobo", "random"])
    parser.add_argument("--max-train-examples", type=int, default=300)
    parser.add_argument("--max-eval-examples", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)

    results = {}
    for name in args.optimizers:
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as out:
                results[name, seed] = autopeft.search(
                    task="demo", trials=args.trials, optimizer=name, seed=seed,
                    max_train_examples=args.max_train_examples,
                    max_eval_examples=args.max_eval_examples, output_dir=out, progress=False)
            print(f"{name} seed {seed}: {len(results[name, seed].front)} on the front, "
                  f"{results[name, seed].seconds:.0f} s", flush=True)

    first = next(iter(results.values()))
    directions = [o.direction for o in first.objectives]
    names = [o.name for o in first.objectives]
    rows = {key: np.array([[t.objectives[n] for n in names] for t in r.trials if t.status == "completed"])
            for key, r in results.items()}
    every = np.concatenate([v for v in rows.values() if len(v)])
    worst = np.where(np.array(directions) == "maximize", every.min(axis=0), every.max(axis=0))
    print(f"\nreference point (worst seen): {dict(zip(names, worst.round(4)))}")
    print(f"{'optimizer':<10}{'dev hypervolume (mean ± std)':>30}   test scores of the fronts")
    for name in args.optimizers:
        hvs = [hypervolume(rows[name, s], directions, worst) if len(rows[name, s]) else 0.0
               for s in range(args.seeds)]
        tests = [{k: round(v, 3) for k, v in t.test_metrics.items()}
                 for s in range(args.seeds) for t in results[name, s].front]
        print(f"{name:<10}{np.mean(hvs):>22.4g} ± {np.std(hvs):.3g}   {tests}")


if __name__ == "__main__":
    main()
