"""Hypervolume against evaluations for autopeft's MOBO and its peers on multi-objective
test problems, every optimizer as an Optuna sampler on the same define-by-run objectives.

    nice -n 19 .venv/bin/python benchmarks/optimizers.py --seeds 5 --evals 40 \\
        --out benchmarks/results
    .venv/bin/python benchmarks/optimizers.py --report --out benchmarks/results
    .venv/bin/python benchmarks/optimizers.py --ask-cost

``mobo-gp`` and ``mobo-gp-init10`` get no reference point (they infer one, as Optuna's GP and
BoTorch samplers do), with MOBO's default random start and with the peers' 10 random designs;
``mobo-*-ref`` get each problem's reference point (as a user would state the worst acceptable
values). Rows named ``*-old`` are from before the local-search acquisition, failure handling
and copula clamp (kept for reference). Runs append to ``OUT/runs.csv`` (one row
per evaluation) and runs already there are skipped, so an interrupted grid resumes, and
grids run separately can be concatenated. ``--report`` prints the table (mean ± std of the
hypervolume fraction after the last evaluation; evaluations to reach random search's mean
final hypervolume) and writes ``OUT/table.txt`` and ``OUT/hypervolume.png``.
``--ask-cost`` times MOBO suggestions with 100 and 101 observations on the LoRA space bound
to 6 layers (the first ask of a process includes one-time compilations).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _problems import Problem, problems  # noqa: E402

# (seed, the problem's hypervolume reference in its directions) -> a sampler. Only autopeft's
# MOBO takes the reference (a user states the worst acceptable value per objective); Optuna's
# samplers have no such argument and GPSampler/BoTorchSampler infer their own.
SamplerFactory = Callable[[int, list[float]], optuna.samplers.BaseSampler]
# Cheaper NUTS than AutoPEFT's (128/64/4): about half the cost of a SAAS ask.
CHEAP_SAAS = {"surrogate": "saas", "saas_warmup": 64, "saas_samples": 32, "saas_thinning": 4}


def samplers() -> dict[str, SamplerFactory]:
    """Optimizers by name; Optuna's peers keep their defaults (10 random startup trials)
    except NSGA-II, whose default population of 50 would never leave the first generation."""
    def mobo(seed: int, ref: list[float] | None, **options: object) -> optuna.samplers.BaseSampler:
        from autopeft.optimizers import MOBOSampler
        return MOBOSampler(seed=seed, reference_point=ref, **options)

    def botorch(seed: int, ref: list[float]) -> optuna.samplers.BaseSampler:
        from optuna_integration import BoTorchSampler
        return BoTorchSampler(seed=seed)

    s = optuna.samplers
    return {
        # The fair rows: no reference point (inferred, as a user who states none gets), with
        # MOBO's default start and with the peers' 10 random designs.
        "mobo-gp": lambda seed, ref: mobo(seed, None),
        "mobo-gp-init10": lambda seed, ref: mobo(seed, None, n_initial=10),
        # With the problem's reference point, as a user who states worst acceptable values.
        "mobo-gp-ref": lambda seed, ref: mobo(seed, ref),
        "mobo-saas-ref": lambda seed, ref: mobo(seed, ref, surrogate="saas"),  # AutoPEFT's NUTS settings
        "mobo-saas-cheap-ref": lambda seed, ref: mobo(seed, ref, **CHEAP_SAAS),
        "random": lambda seed, ref: s.RandomSampler(seed=seed),
        "tpe": lambda seed, ref: s.TPESampler(seed=seed),
        "nsga2": lambda seed, ref: s.NSGAIISampler(seed=seed, population_size=8),
        "optuna-gp": lambda seed, ref: s.GPSampler(seed=seed),
        "optuna-botorch": botorch,
    }


def run_one(problem: Problem, make: SamplerFactory, seed: int, evals: int) -> list[tuple[float, float]]:
    """(hypervolume fraction so far, seconds the sampler spent on this trial) per evaluation."""
    study = optuna.create_study(directions=problem.directions,
                                sampler=make(seed, problem.reference.tolist()))
    out = []
    for _ in range(evals):
        started = time.perf_counter()
        trial = study.ask()
        values = problem.evaluate(trial)  # the suggestions happen here, define-by-run
        seconds = time.perf_counter() - started
        study.tell(trial, values)
        front = np.array([t.values for t in study.trials if t.values is not None])
        out.append((problem.hv_fraction(front), seconds))
    return out


def run_grid(args: argparse.Namespace) -> None:
    path = args.out / "runs.csv"
    done = set()
    if path.exists():
        with path.open() as fh:
            done = {(r["problem"], r["optimizer"], int(r["seed"])) for r in csv.DictReader(fh)}
    factories, makers = samplers(), problems()
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(["problem", "optimizer", "seed", "evaluation", "hv_fraction", "seconds"])
        for problem_name in args.problems:
            problem = makers[problem_name]()
            for name in args.optimizers:
                for seed in range(args.seeds):
                    if (problem_name, name, seed) in done:
                        continue
                    started = time.perf_counter()
                    rows = run_one(problem, factories[name], seed, args.evals)
                    for i, (hv, sec) in enumerate(rows, 1):
                        writer.writerow([problem_name, name, seed, i, f"{hv:.6f}", f"{sec:.4f}"])
                    fh.flush()
                    print(f"{problem_name:<14}{name:<16}seed {seed}: hv {rows[-1][0]:.3f} "
                          f"({time.perf_counter() - started:.0f} s)", flush=True)


def load(path: Path) -> dict[tuple[str, str], np.ndarray]:
    """``seeds x evals`` hypervolume fractions and seconds per (problem, optimizer)."""
    runs: dict[tuple, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    with path.open() as fh:
        for r in csv.DictReader(fh):
            runs[r["problem"], r["optimizer"]][int(r["seed"])].append(
                (float(r["hv_fraction"]), float(r["seconds"])))
    out = {}
    for key, by_seed in runs.items():
        n = min(len(v) for v in by_seed.values())
        out[key] = np.array([by_seed[s][:n] for s in sorted(by_seed)])  # seeds x evals x 2
    return out


def report(args: argparse.Namespace) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = load(args.out / "runs.csv")
    names = [p for p in problems() if any(k[0] == p for k in data)]
    lines = ["hypervolume fraction after the last evaluation: mean ± std over seeds "
             "[evaluations for the mean curve to reach random search's mean final hypervolume] "
             "(seconds per suggestion, mean over evaluations 11 on, after every optimizer's "
             "random start)", ""]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, problem in zip(axes[0], names):
        lines.append(problem)
        target = data[problem, "random"][:, -1, 0].mean() if (problem, "random") in data else None
        for (p, opt), arr in sorted(data.items(), key=lambda kv: -kv[1][:, -1, 0].mean()):
            if p != problem:
                continue
            hv = arr[:, :, 0]
            mean, std = hv.mean(axis=0), hv.std(axis=0)
            reach = "-"
            if target is not None:
                hit = np.nonzero(mean >= target)[0]
                reach = str(hit[0] + 1) if len(hit) else f">{hv.shape[1]}"
            lines.append(f"  {opt:<24}{mean[-1]:.3f} ± {std[-1]:.3f}  [{reach:>3}]  "
                         f"({arr[:, 10:, 1].mean():.2f} s)  {hv.shape[0]} seeds x {hv.shape[1]} evals")
            x = np.arange(1, hv.shape[1] + 1)
            color = f"C{list(samplers()).index(opt) % 10}" if opt in samplers() else None
            ax.plot(x, mean, label=opt, color=color)
            ax.fill_between(x, mean - std, mean + std, alpha=0.15, color=color)
        ax.set_title(problem)
        ax.set_xlabel("evaluations")
        ax.set_ylabel("hypervolume / true front's")
        ax.legend(fontsize=7)
        lines.append("")
    fig.tight_layout()
    fig.savefig(args.out / "hypervolume.png", dpi=90)
    text = "\n".join(lines)
    (args.out / "table.txt").write_text(text + "\n")
    print(text)


def ask_cost() -> None:
    """Seconds for MOBO suggestions after 100 and 101 observations of a synthetic LoRA
    objective: the first ask in a process also compiles (BoTorch's fused C++ kernel once per
    machine, cached on disk; the SAAS NUTS sampler once per 16 observations), the second is
    what every later ask of a search costs."""
    from autopeft.optimizers import make_optimizer
    from autopeft.space import load_space

    space = load_space("lora").bind(6)
    rng = np.random.default_rng(0)
    configs = [space.sample(rng) for _ in range(100)]

    def values(config: dict) -> list[float]:
        x = space.encode(config)
        return [float(np.mean(x)), float(np.sum(x ** 2))]

    for options in ({"surrogate": "gp"}, {"surrogate": "saas"}, CHEAP_SAAS):
        opt = make_optimizer("mobo", space, ["maximize", "minimize"], seed=0, **options)
        for c in configs:
            opt.tell(c, values(c))
        for n in (100, 101):
            started = time.perf_counter()
            config = opt.ask()
            print(f"ask with {n} observations, lora space (6 layers, {space.encoded_width} encoded "
                  f"dims), {options}: {time.perf_counter() - started:.1f} s "
                  f"(source: {opt.last_ask_source})", flush=True)
            opt.tell(config, values(config))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=list(problems()))
    parser.add_argument("--optimizers", nargs="+",
                        default=["random", "tpe", "nsga2", "optuna-gp", "optuna-botorch", "mobo-gp",
                                 "mobo-gp-init10", "mobo-gp-ref"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--evals", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--report", action="store_true", help="only print the table and plot")
    parser.add_argument("--ask-cost", action="store_true", help="only time asks at 100 and 101 observations")
    args = parser.parse_args()
    # BoTorch's small matrices run several times faster on one thread on a shared machine.
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if args.ask_cost:
        ask_cost()
    elif args.report:
        report(args)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        run_grid(args)
        report(args)


if __name__ == "__main__":
    main()
