"""Does a warm start transfer? MOBO on BBC News topics seeded with the front MOBO found on
the demo task (Rotten Tomatoes), against the cold MOBO searches of ``real_task.py``.

    nice -n 5 .venv/bin/python benchmarks/warm_start.py --real-task benchmarks/results/real_task \\
        --out benchmarks/results/warm_start
    .venv/bin/python benchmarks/warm_start.py --report --real-task benchmarks/results/real_task \\
        --out benchmarks/results/warm_start

Everything but the warm start is ``real_task.py``'s setting for the bbc task (12 trials, 4
initial designs, 600 train / 300 dev examples of 64 tokens, batches of 8, its space), and each
seed is compared with the cold search of the same seed there: the warm search's first
designs are the demo search's front members of that seed (best dev accuracy first, up to 4),
then the same random draws. Hypervolumes use one reference point over all the searches
compared (worst dev accuracy, largest trainable %).
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
from real_task import FIELDS, LENGTHS, SPACE, append_rows, local_ray, task_options, trial_rows  # noqa: E402

DIRECTIONS = ["maximize", "minimize"]


def rows_of(path: Path) -> dict[tuple[str, str, int], list[dict]]:
    runs: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    with path.open() as fh:
        for row in csv.DictReader(fh):
            runs[row["task"], row["optimizer"], int(row["seed"])].append(row)
    return runs


def demo_front(real: dict, seed: int) -> list[dict]:
    front = [r for r in real["demo", "mobo", seed] if r["pareto"] == "True"]
    front.sort(key=lambda r: (-float(r["accuracy"]), float(r["trainable_percent"])))
    return [json.loads(r["config"]) for r in front]


def run(args: argparse.Namespace, real: dict, path: Path) -> None:
    done = {k[2] for k in rows_of(path)} if path.exists() else set()
    for seed in args.seeds:
        if seed in done:
            continue
        with tempfile.TemporaryDirectory() as out:
            result = autopeft.search(
                **task_options("bbc", args.out), trials=args.trials, optimizer="mobo", seed=seed,
                optimizer_options={"n_initial": args.initial}, warm_start=demo_front(real, seed),
                max_train_examples=600, max_eval_examples=300, max_length=LENGTHS["bbc"], batch_size=8,
                space=str(SPACE), output_dir=out, progress=False)
        if len(result.trials) < args.trials:
            raise SystemExit(f"seed {seed} stopped after {len(result.trials)} trials")
        append_rows(path, FIELDS, trial_rows(result, "bbc", "mobo-warm", seed))
        print(f"seed {seed}: {len(result.front)} on the front, {result.seconds:.0f} s", flush=True)


def _values(rows: list[dict]) -> np.ndarray:
    return np.array([[float(r["accuracy"]), float(r["trainable_percent"])] if r["status"] == "completed"
                     else [np.nan, np.nan] for r in sorted(rows, key=lambda r: int(r["trial"]))])


def report(args: argparse.Namespace, real: dict, path: Path) -> str:
    warm = rows_of(path)
    seeds = sorted(k[2] for k in warm if ("bbc", "mobo", k[2]) in real)
    arms = {"cold (real_task mobo)": {s: real["bbc", "mobo", s] for s in seeds},
            "warm from the demo front": {s: warm["bbc", "mobo-warm", s] for s in seeds}}
    every = np.concatenate([_values(rows) for arm in arms.values() for rows in arm.values()])
    every = every[~np.isnan(every).any(axis=1)]
    reference = np.array([every[:, 0].min(), every[:, 1].max()])
    lines = [f"bbc, seeds {seeds}; reference point accuracy {reference[0]:.3f}, trainable % {reference[1]:.4f}", "",
             "| search | dev HV after 1 | after 4 | after 8 | after 12 | best dev acc after 4 | "
             "test acc of the best-on-dev member |", "|---|---|---|---|---|---|---|"]
    finals = {}
    for name, runs in arms.items():
        hv = np.stack([hypervolume_curve(_values(runs[s]), DIRECTIONS, reference) for s in seeds])
        best4 = np.array([np.nanmax(_values(runs[s])[:4, 0]) for s in seeds])
        test = np.array([float(max((r for r in runs[s] if r["pareto"] == "True"),
                                   key=lambda r: (float(r["accuracy"]), -float(r["trainable_percent"])))
                               ["test_accuracy"]) for s in seeds])
        finals[name] = hv[:, -1]

        def ms(x: np.ndarray) -> str:
            return f"{x.mean():.4f} ± {x.std(ddof=1) if len(x) > 1 else 0:.4f}"

        lines.append(f"| {name} | {ms(hv[:, 0])} | {ms(hv[:, 3])} | {ms(hv[:, 7])} | {ms(hv[:, -1])} | "
                     f"{ms(best4)} | {ms(test)} |")
    cold, hot = finals.values()
    diff = hot - cold
    lines += ["", f"final dev HV, warm minus cold, seed by seed: {diff.mean():+.4f} ± "
              f"{diff.std(ddof=1) if len(diff) > 1 else 0:.4f}; higher on {int((diff > 1e-12).sum())}, "
              f"lower on {int((diff < -1e-12).sum())} of {len(seeds)}"]
    text = "\n".join(lines)
    (path.parent / "table.txt").write_text(text + "\n")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real-task", type=Path, default=Path("benchmarks/results/real_task"),
                        help="real_task.py's results (its trials.csv: the demo fronts and the cold searches)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--initial", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=None, help="a local Ray of this many CPUs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/warm_start"))
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    real = rows_of(args.real_task / "trials.csv")
    path = args.out / "trials.csv"
    if not args.report:
        local_ray(args.cpus)
        run(args, real, path)
    print(report(args, real, path))


if __name__ == "__main__":
    main()
