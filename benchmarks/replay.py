"""Replay optimizers against the tables of real trainings (``benchmarks/peft_table.py``).

Each optimizer is autopeft's own, made by ``make_optimizer`` over the space a search of the
task binds (``examples/lora_demo.yaml`` on all-MiniLM-L6-v2), and driven through the ask/tell
interface a search uses, one trial at a time. A proposal is answered from the table:

- its **dev accuracy** is that of the **nearest configuration in the table** (the table holds a
  uniform sample of the space, not every configuration): nearest in a Gower distance over the
  space's dimensions (a dimension active in one and not the other counts 1; otherwise the
  difference on its [0, 1] scale, the learning rate on its log scale), fixed here so that it
  does not move with any optimizer's encoding. Where that configuration was trained with
  several training seeds, one of them answers, drawn per (replicate, configuration): every
  optimizer of a replicate gets the same answer for the same configuration, and the noise of
  one trial is in the answers;
- its **trainable share** is computed exactly for the proposal itself, by the parameter counter
  of the bound space (it equals the table's measured value on every trained configuration: the
  report checks it).

The hypervolume of each replicate's answers after k evaluations is computed against one fixed
reference point per task: the accuracy of the majority class on the dev examples (a trial at or
below it learned nothing) and the largest trainable share of the space. Replicate r of every
optimizer uses seed r, so all start from the same initial designs (``n_initial``, the
search's default of 10 for 50 trials): differences are paired.

    .venv/bin/python benchmarks/replay.py run --optimizers random tpe nsga2 optuna_gp mobo
    .venv/bin/python benchmarks/replay.py report

Each finished replicate appends its evaluations to ``OUT/evaluations.csv.gz`` (resumable);
``--label NAME --options JSON`` runs an optimizer with other options under another name (a
MOBO variant measured against the same replicates).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import multiprocessing
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from peft_table import FIDELITY, SPACE, TASKS, read_table, task_options  # noqa: E402

DIRECTIONS = ["maximize", "minimize"]  # accuracy, trainable_percent
CHECKPOINTS = (12, 25, 50)
#: the optimizers whose asks take seconds: run after the cheap ones, replicate by replicate.
#: every evaluation of every replicate, compressed: the configurations repeat (5 MB as text)
EVALUATIONS = "evaluations.csv.gz"
#: the number of configurations each task's table held when its replicates ran: the table grows
#: (peft_table.py resumes), and replicates answered from different pools do not pair
POOLS = "pools.json"
MODEL_BASED = ("mobo", "optuna_gp")
FIELDS = ["task", "optimizer", "replicate", "evaluation", "accuracy", "trainable_percent", "distance",
          "ask_seconds", "config"]


@dataclass
class Problem:
    """One task's table, the space its search binds, and the fixed reference point."""

    task: str
    space: object
    configs: list[dict]
    accuracies: list[list[float]]  # per configuration, one value per training seed
    columns: np.ndarray  # configurations x dimensions: value on [0, 1], NaN where inactive
    reference: np.ndarray
    count_error: float  # largest |table - counter| of the trainable share
    knowledge: object = None  # what a search of the task passes its optimizer (reference, floors, analytic)

    def answer(self, config: dict, replicate: int) -> tuple[float, float, float]:
        """(dev accuracy, trainable share, distance to the configuration that answered)."""
        x = self.row(config)
        active = ~np.isnan(x)
        other = ~np.isnan(self.columns)
        gap = np.where(active & other, np.abs(np.nan_to_num(self.columns) - np.nan_to_num(x)), 0.0)
        distance = (gap + (active != other)).sum(axis=1)
        i = int(distance.argmin())
        seeds = self.accuracies[i]
        draw = zlib.crc32(f"{replicate}:{i}".encode()) % len(seeds)
        return seeds[draw], self.trainable_percent(config), float(distance[i])

    def row(self, config: dict) -> np.ndarray:
        return np.array([_position(d, config[d.name]) if d.name in config else np.nan for d in self.space.dimensions])

    def trainable_percent(self, config: dict) -> float:
        return float(self.space.derive(self.space.assemble(config))["trainable_percent"])


def _position(dim, value) -> float:
    from autopeft.space import Bool, Choice

    if isinstance(dim, Bool):
        return float(value)
    if isinstance(dim, Choice):
        return dim.values.index(value) / max(len(dim.values) - 1, 1)
    return float(dim.encode(value)[0])


def completed_rows(task: str, table_dir: Path) -> tuple[dict[str, list[float]], dict[str, float]]:
    """The table's completed rows: dev accuracies by configuration (JSON key, every training
    seed's), and each configuration's trainable share as measured."""
    by_config: dict[str, list[float]] = defaultdict(list)
    measured: dict[str, float] = {}
    for rows in read_table(table_dir / f"{task}.csv").values():
        for r in rows:
            if r["status"] == "completed":
                by_config[r["config"]].append(float(r["accuracy"]))
                measured[r["config"]] = float(r["trainable_percent"])
    return by_config, measured


def load_problem(task: str, table_dir: Path) -> Problem:
    from autopeft.config import SearchConfig
    from autopeft.driver.setup import load_setup

    options = task_options(task, table_dir)
    config = SearchConfig(space=str(SPACE), seed=0, data_seed=0)
    for key, value in options.items():
        if key in ("train_file", "text_column", "label_column"):
            setattr(config.data, key, value)
        else:
            setattr(config, key, value)
    for key, value in FIDELITY.items():
        setattr(config.fidelity, key, value)
    setup = load_setup(config)
    space = setup.space
    by_config, measured = completed_rows(task, table_dir)
    keys = sorted(by_config)
    configs = [json.loads(k) for k in keys]
    problem = Problem(task, space, configs, [by_config[k] for k in keys], np.zeros((0, 0)), np.zeros(2), 0.0)
    problem.columns = np.stack([problem.row(c) for c in configs])
    problem.count_error = max(abs(problem.trainable_percent(c) - measured[k]) for c, k in zip(configs, keys))
    # What a search of this task knows before its first trial, from the product's own rule:
    # the reference (the majority class on dev, the space's largest trainable share), the
    # accuracy floor and the analytic trainable share.
    from autopeft.objectives import resolve_objectives
    from autopeft.optimizers.knowledge import search_knowledge

    objectives = resolve_objectives(["accuracy", "trainable_percent"])
    problem.knowledge = search_knowledge(objectives, space, setup.floors, {})
    problem.reference = np.array([problem.knowledge.reference[o.name] for o in objectives])
    return problem


_PROBLEMS: dict[str, Problem] = {}


def replay(task: str, name: str, optimizer: str, options: dict, replicate: int, evaluations: int,
           n_initial: int) -> list[dict]:
    """One replicate: ``evaluations`` asks of ``optimizer``, each answered from the table.

    The optimizer gets what a search would pass it (the reference point; to MOBO also the
    analytic objectives and floors); ``options`` override any of it (``null`` removes one),
    and ``legacy_designs`` / ``legacy_encoding`` bring back the uniform initial designs and
    the encoding without a code for inactive dimensions, for the ablations."""
    import torch

    from autopeft.optimizers import OPTIMIZERS, make_optimizer

    torch.set_num_threads(1)
    problem = _PROBLEMS[task]
    known = problem.knowledge
    names = ["accuracy", "trainable_percent"]
    given = {"reference_point": [known.reference.get(n) for n in names]}
    if OPTIMIZERS.get(optimizer).uses_knowledge:
        given.update(analytic=[known.analytic.get(n) for n in names], floors=[known.floors.get(n) for n in names])
    options = {**given, "n_initial": n_initial, **options}
    legacy = {k: options.pop(k) for k in ("legacy_designs", "legacy_encoding") if k in options}
    with _legacy(**legacy):
        opt = make_optimizer(optimizer, problem.space, DIRECTIONS, seed=replicate, **options)
        rows = []
        for k in range(1, evaluations + 1):
            started = time.perf_counter()
            config = opt.ask()
            seconds = time.perf_counter() - started
            accuracy, share, distance = problem.answer(config, replicate)
            opt.tell(config, [accuracy, share])
            rows.append({"task": task, "optimizer": name, "replicate": replicate, "evaluation": k,
                         "accuracy": accuracy, "trainable_percent": share, "distance": round(distance, 4),
                         "ask_seconds": round(seconds, 3), "config": json.dumps(config, sort_keys=True)})
    return rows


@contextmanager
def _legacy(legacy_designs: bool = False, legacy_encoding: bool = False) -> Iterator[None]:
    """The code before two of MOBO's changes, for measuring them: uniform initial designs
    (instead of a scrambled Sobol sequence), and inactive dimensions encoded like the lowest
    value of an active one."""
    import autopeft.optimizers.base as base
    import autopeft.optimizers.mobo as mobo
    import autopeft.optimizers.optuna_samplers as samplers
    import autopeft.space.space as space_module

    saved = base.initial_designs, space_module.ACTIVE_FLOOR
    if legacy_designs:
        for module in (base, mobo, samplers):
            module.initial_designs = _uniform_designs
    if legacy_encoding:
        space_module.ACTIVE_FLOOR = 0.0
    try:
        yield
    finally:
        for module in (base, mobo, samplers):
            module.initial_designs = saved[0]
        space_module.ACTIVE_FLOOR = saved[1]


def _uniform_designs(space, seed: int, n: int, first=()) -> list[dict]:
    """The initial designs before Sobol: uniform draws from a stream of their own."""
    from autopeft.errors import SpaceExhausted
    from autopeft.optimizers.base import sample_unseen

    rng = np.random.default_rng([seed, 0x1D])
    designs, seen = [], set()
    for _ in range(n):
        try:
            config = sample_unseen(space, rng, seen)
        except SpaceExhausted:
            break
        seen.add(space.key(config))
        designs.append(config)
    return designs


def _job(args: tuple) -> list[dict]:
    return replay(*args)


def _load(tasks: list[str], tables: Path) -> None:
    """A worker's problems, and every optimizer's code imported now: edits to the source
    while a long replay runs do not reach it."""
    import torch

    import autopeft.optimizers.mobo  # noqa: F401
    import autopeft.optimizers.optuna_samplers  # noqa: F401

    torch.set_num_threads(1)
    for task in tasks:
        _PROBLEMS[task] = load_problem(task, tables)


def pool_size(task: str, table_dir: Path) -> int:
    """The distinct configurations a replay of ``task`` answers from."""
    return len(completed_rows(task, table_dir)[0])


def read_pools(out: Path) -> dict[str, int]:
    return json.loads((out / POOLS).read_text()) if (out / POOLS).exists() else {}


def run(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    path = args.out / EVALUATIONS
    done = set()
    if path.exists():
        with gzip.open(path, "rt", newline="") as fh:
            done = {(r["task"], r["optimizer"], int(r["replicate"])) for r in csv.DictReader(fh)}
    pools = read_pools(args.out)
    for task in args.tasks:
        size = pool_size(task, args.tables)
        if any(t == task for t, _, _ in done) and pools.get(task, size) != size:
            raise SystemExit(f"replay: {args.out} holds {task} replicates answered from {pools[task]} "
                             f"configurations and {args.tables / (task + '.csv')} now holds {size}: "
                             "replay into a new --out")
        pools[task] = size
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / POOLS).write_text(json.dumps(pools, indent=1) + "\n")
    jobs = []
    for name in args.optimizers:
        label = args.label or name
        for task in args.tasks:
            for r in range(args.replicates):
                if (task, label, r) not in done:
                    jobs.append((task, label, name, json.loads(args.options), r, args.evaluations, args.n_initial))
    # The cheap optimizers first; then the model-based ones replicate by replicate, both tasks
    # alike, so that a run cut short still holds paired replicates of every optimizer.
    jobs.sort(key=lambda j: (j[2] in MODEL_BASED, j[4], j[0]))
    # Spawned, not forked: a worker forked from a process that has run torch can hang.
    with multiprocessing.get_context("spawn").Pool(args.workers, _load, (args.tasks, args.tables)) as pool:
        for rows in pool.imap_unordered(_job, jobs):
            new = not path.exists()
            with gzip.open(path, "at", newline="") as fh:  # appended members read back as one file
                writer = csv.DictWriter(fh, FIELDS)
                if new:
                    writer.writeheader()
                writer.writerows(rows)
            print(f"{rows[0]['task']} {rows[0]['optimizer']} replicate {rows[0]['replicate']}: "
                  f"{sum(float(r['ask_seconds']) for r in rows):.0f} s of asks", flush=True)


def curves(path: Path, problems: dict[str, Problem]) -> dict[tuple[str, str], dict[int, np.ndarray]]:
    """Hypervolume after each evaluation, by replicate, per (task, optimizer), for the tasks
    in ``problems`` (a report of some tasks reads a file that holds others)."""
    from autopeft.pareto import hypervolume_curve

    runs: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    with gzip.open(path, "rt", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["task"] in problems:
                runs[r["task"], r["optimizer"], int(r["replicate"])].append(r)
    out: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(dict)
    for (task, name, rep), rows in runs.items():
        rows.sort(key=lambda r: int(r["evaluation"]))
        values = np.array([[float(r["accuracy"]), float(r["trainable_percent"])] for r in rows])
        out[task, name][rep] = hypervolume_curve(values, DIRECTIONS, problems[task].reference)
    return dict(out)


def paired(by_replicate: list[dict[int, np.ndarray]]) -> list[np.ndarray]:
    """Each optimizer's curves (replicates x evaluations) on the replicates they all have, in
    replicate order and cut to the shortest curve: the rows pair up."""
    common = sorted(set.intersection(*(set(c) for c in by_replicate)))
    length = min(len(c[r]) for c in by_replicate for r in common)
    return [np.array([c[r][:length] for r in common]).reshape(len(common), length) for c in by_replicate]


def report(args: argparse.Namespace) -> str:
    problems = {task: load_problem(task, args.tables) for task in args.tasks}
    hv = curves(args.out / EVALUATIONS, problems)
    lines = []
    for task in args.tasks:
        p = problems[task]
        # The main comparison: the optimizers under their own names; variants ("mobo-...")
        # are measured against the full MOBO on their own replicates, below.
        names = sorted({n for t, n in hv if t == task and "-" not in n}, key=lambda n: (n != "random", n))
        if not names:
            continue
        # Each optimizer on every replicate it has; each difference on the replicates both have.
        main = {n: paired([hv[task, n]])[0] for n in names}
        n_eval = min(h.shape[1] for h in main.values())
        ran_on = read_pools(args.out).get(task, len(p.configs))
        pool = (f"{ran_on} configurations in the table" if ran_on == len(p.configs) else
                f"replicates answered from {ran_on} configurations (the table holds {len(p.configs)} now)")
        lines += [f"## {task}: {pool}; {n_eval} evaluations a replicate; "
                  f"reference point accuracy {p.reference[0]:.4f} (majority class on dev), "
                  f"trainable % {p.reference[1]:.4f} (the space's largest); counter vs table: largest "
                  f"difference {p.count_error:.2e} points of trainable %", ""]
        marks = [c for c in CHECKPOINTS if c <= n_eval]
        head = " | ".join(f"HV after {c}" for c in marks)
        diff = " | ".join(f"minus random after {c}" for c in marks)
        lines += [f"| optimizer | replicates | {head} | {diff} | evaluations to random's HV at {n_eval} |",
                  "|---|---|" + "---|" * (2 * len(marks) + 1)]
        base = main.get("random")
        for name in names:
            h = main[name]
            cells = [str(len(h))] + [_mean_se(h[:, c - 1]) for c in marks]
            if base is not None and name != "random":
                a, b = paired([hv[task, name], hv[task, "random"]])
                cells += [_mean_se(a[:, c - 1] - b[:, c - 1], paired=True) for c in marks]
            else:
                cells += [""] * len(marks)
            target = base[:, n_eval - 1].mean() if base is not None else np.nan
            reach = np.flatnonzero(h.mean(0) >= target)
            cells.append(str(reach[0] + 1) if len(reach) else f"not within {n_eval}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for rival in ("random", "optuna_gp"):
            if "mobo" not in main or rival not in main:
                continue
            a, b = paired([hv[task, "mobo"], hv[task, rival]])
            d = a[:, n_eval - 1] - b[:, n_eval - 1]
            se = d.std(ddof=1) / np.sqrt(len(d))
            lines += ["", f"MOBO minus {rival} on the {len(d)} replicates both have: "
                          + ", ".join(f"after {c}: {_mean_se(a[:, c - 1] - b[:, c - 1], paired=True)}" for c in marks)
                          + f". Power: a true difference of 2.8 SE ({2.8 * se:.4f}) after {n_eval} evaluations "
                            "would be found at the 5% level with 80% power."]
        variants = sorted({n for t, n in hv if t == task and n.startswith("mobo-")})
        if variants and (task, "mobo") in hv:
            lines += ["", "Each MOBO variant (`--label`, `--options`) against MOBO as it stands, paired on "
                          "the replicates both have:", "",
                      "| variant | replicates | evaluations | HV | minus the full MOBO |", "|---|---|---|---|---|"]
            for name in variants:
                v, full = paired([hv[task, name], hv[task, "mobo"]])
                for c in [c for c in CHECKPOINTS if c <= v.shape[1]]:
                    lines.append(f"| {name} | {len(v)} | {c} | {_mean_se(v[:, c - 1])} | "
                                 f"{_mean_se(v[:, c - 1] - full[:, c - 1], paired=True)} |")
        lines.append("")
        _plot(task, main, args.out / f"hypervolume_{task}.png")
    lines.append("Means ± standard errors over replicates; differences are paired by replicate (the same "
                 "seed, initial designs and answers). Evaluations to random's hypervolume: the first k at which "
                 "the optimizer's mean hypervolume reaches random's mean after the last evaluation. The standard "
                 "errors are those of an optimizer's expected hypervolume on this table (its own randomness and "
                 "the seed noise of the answers), not of the tasks themselves.")
    text = "\n".join(lines)
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    return text


def _mean_se(x: np.ndarray, paired: bool = False) -> str:
    se = x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    text = f"{x.mean():+.4f} ± {se:.4f}" if paired else f"{x.mean():.4f} ± {se:.4f}"
    return text + (f" ({x.mean() / se:+.1f} SE)" if paired and se > 0 else "")


def _plot(task: str, curves_: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, h in curves_.items():
        x = np.arange(1, h.shape[1] + 1)
        mean, se = h.mean(0), h.std(0, ddof=1) / np.sqrt(len(h))
        ax.plot(x, mean, label=f"{name} ({len(h)})")
        ax.fill_between(x, mean - se, mean + se, alpha=0.15)
    ax.set(xlabel="evaluations", ylabel="dev hypervolume (fixed reference)", title=f"replay on the {task} table")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--optimizers", nargs="+", default=["random", "tpe", "nsga2", "optuna_gp", "mobo"])
    r.add_argument("--label", default=None, help="record the (single) optimizer under this name")
    r.add_argument("--options", default="{}", help="optimizer options as JSON")
    r.add_argument("--replicates", type=int, default=30)
    r.add_argument("--evaluations", type=int, default=50)
    r.add_argument("--n-initial", type=int, default=10)
    r.add_argument("--workers", type=int, default=2)
    rep = sub.add_parser("report")
    for p in (r, rep):
        p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
        p.add_argument("--tables", type=Path, default=Path("benchmarks/results/peft_table"))
        p.add_argument("--out", type=Path, default=Path("benchmarks/results/replay"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    main()
