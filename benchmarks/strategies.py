"""Plain LoRA against each training strategy on the demo model and data, at one fixed budget.

    nice -n 5 .venv/bin/python benchmarks/strategies.py --out benchmarks/results/strategies
    .venv/bin/python benchmarks/strategies.py --report --out benchmarks/results/strategies

Every run trains the same adapter (LoRA rank 8, alpha 16, on q, k, v, attention output, FFN up
and down of all 6 layers; IncreLoRA grows to the same number of parameters) on the same 2,000
training examples of at most 64 tokens, one epoch in batches of 16 (125 steps); the strategies
add their own stages on top (Flexora's search stage, Light-PEFT's estimation), which are paid
for in time. Every knob of every strategy is fixed (``KNOBS``: the authors' values, or
autopeft's default where a short trial needs another, each marked), none drawn at random: a
run checks that its configuration holds no knob it did not fix. The strategies learn at
different speeds, so each gets its learning rate picked from the same grid
(``--grid``) by dev accuracy on a selection seed (``--select-seed``, 0), and is then reported
over other seeds (``--seeds``, 1 2 3): the seeds reported were not used to choose. Dev accuracy
is the trial's (best epoch); test accuracy is the saved adapter's on the test split, reloaded
with autopeft's loader. Each run is its own process (peak memory is the process's resident
set, which never shrinks), on 2 threads, one after the other; times are only comparable from a
run on an otherwise idle machine. Rows are appended to ``OUT/runs.csv``; a rerun skips the
(strategy, seed, learning rate) rows already there.

``--extend N`` adds up to N rates beyond an edge of the grid while a strategy's pick sits at
it; ``--epochs 3`` trains three times as long (the best epoch on dev is kept). Runs pin the
learning rate in a copy of the preset whose range covers any grid.

``--knobs '{"light_peft": {"light_peft_head_prune": 0.0}}'`` replaces some of a strategy's
``KNOBS`` (a probe of what a knob does: give it its own ``--out``, as rows are keyed by strategy,
seed and rate only).

``--task demo-lm`` runs the same comparison on SmolLM2-135M-Instruct (30 layers, grouped-query
attention) answering "fresh"/"rotten" at demo-lm's fidelity (160 training examples of at most
96 tokens, batches of 8: 20 steps; 64 dev examples), the "accuracy" columns then holding exact
match from greedy generation; the test split is not scored there (``--no-test``: about 75 s a
run):

    .venv/bin/python benchmarks/strategies.py --task demo-lm --grid 1e-3 --select-seed 0 --seeds 0 \
        --no-test --out benchmarks/results/lm_strategies
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

STRATEGIES = ("none", "flexora", "ist", "increlora", "light_peft")
ALL_ROLES = ["attn_q", "attn_k", "attn_v", "attn_o", "ffn_up", "ffn_down"]
FIXED = {"target_modules": ALL_ROLES, "alpha_multiplier": 2}
GRID = (1e-3, 2.5e-3, 5e-3)
#: every knob of each strategy, fixed: the authors' value unless marked (autopeft's default,
#: where the authors' does not fit a trial of a few hundred steps)
KNOBS = {
    "none": {"layers": True, "rank": 8},
    "flexora": {"rank": 8, "flexora_gate_lr": 0.01, "flexora_select": "positive"},
    "ist": {"layers": True, "rank": 8, "ist_update_share": 0.5},  # autopeft's default (authors: 0.25)
    "increlora": {"increlora_target_rank": 8, "increlora_top_h": 4},  # the authors' GLUE range: 5-10
    "light_peft": {"layers": True, "rank": 8, "light_peft_head_prune": 0.3333,
                   "light_peft_neuron_prune": 0.3333, "light_peft_module_prune": 0.75,
                   "light_peft_rank_prune": 0.5,
                   "light_peft_mask_lr": 0.01},  # autopeft's default (authors: the adapter's rate)
}
#: per task: its metric, and the fidelity every run trains at
TASKS = {
    "demo": {"metric": "accuracy", "fidelity": {"max_train_examples": 2000, "epochs": 1, "max_length": 64,
                                                "batch_size": 16}},
    "demo-lm": {"metric": "exact_match", "fidelity": {"max_train_examples": 160, "max_eval_examples": 64,
                                                      "epochs": 1, "max_length": 96, "batch_size": 8}},
}
FIELDS = ["strategy", "seed", "learning_rate", "dev_accuracy", "test_accuracy", "trainable_params", "base_params",
          "layer_params", "examples_per_second", "train_seconds", "last_stage_examples_per_second",
          "peak_memory_mb", "report"]


def wide_rate_space() -> Path:
    """The strategies preset with one learning-rate range wide enough for any grid: the preset's
    ranges (each strategy's own, for a search) would refuse a grid rate outside them."""
    import yaml

    from autopeft.space.parse import PRESET_DIR

    space = yaml.safe_load((Path(PRESET_DIR) / "strategies.yaml").read_text())
    rate = space["parameters"]["learning_rate"]
    rate.pop("ranges", None)
    rate.update(low=1e-5, high=1e-1)
    path = Path(tempfile.mkdtemp()) / "strategies_wide_rate.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def run_one(strategy: str, seed: int, learning_rate: float, task: str = "demo", test: bool = True,
            epochs: int = 1, knobs: dict | None = None) -> dict:
    """One trial in this process; the row for runs.csv. ``knobs`` replace some of ``KNOBS``."""
    import torch

    from autopeft.config import SearchConfig
    from autopeft.driver.setup import load_setup, prepare
    from autopeft.config import Fidelity
    from autopeft.trial.run import evaluate_adapter, run_trial

    torch.set_num_threads(2)
    fixed = {"strategy": strategy, **FIXED, **KNOBS[strategy], **(knobs or {}), "learning_rate": learning_rate}
    settings = TASKS[task]
    config = SearchConfig(task=task, space=str(wide_rate_space()), optimizer="random", seed=seed, fixed={},
                          fidelity=Fidelity(**{**settings["fidelity"], "epochs": epochs}))
    if fixed.get("layers") is True:  # every layer of the model
        fixed["layers"] = [True] * load_setup(config).layout.num_layers
    config.fixed = fixed
    setup, optimizer = prepare(config)
    trial_config = optimizer.ask()
    drawn = [k for k in trial_config if k.startswith(f"{strategy}_")]
    if drawn:  # a knob left to the optimizer would differ from seed to seed
        raise SystemExit(f"{strategy}: knobs {drawn} are not fixed in KNOBS")
    metric = settings["metric"]
    with tempfile.TemporaryDirectory() as tmp:
        result = run_trial(setup, trial_config, save_to=Path(tmp))
        test = evaluate_adapter(setup, Path(tmp), setup.data.test).metrics[metric] if test else float("nan")
    layers = sum(p.numel() for p in setup.task.load_model(setup.model_path, setup.data)
                 .get_submodule(setup.layout.layers_path).parameters())
    last = [k for k in result.timing if k.endswith("_stage_examples_per_second")][-1]
    report = {k: v for k, v in result.strategy.items() if not isinstance(v, (dict, list))}
    return {"strategy": strategy, "seed": seed, "learning_rate": learning_rate,
            "dev_accuracy": result.metrics[metric],
            "test_accuracy": test, "trainable_params": int(result.cost["trainable_params"]),
            "base_params": int(result.cost["base_params"]),
            "layer_params": int(result.strategy.get("light_peft_layer_params_after", layers)),
            "examples_per_second": result.cost["examples_per_second"],
            "train_seconds": result.cost["train_seconds"],
            "last_stage_examples_per_second": result.timing[last],
            "peak_memory_mb": result.cost["peak_memory_mb"], "report": json.dumps(report)}


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh))


def selected_rates(rows: list[dict], select_seed: int) -> dict[str, float]:
    """Per strategy, the learning rate of the best dev accuracy on the selection seed."""
    best: dict[str, tuple[float, float]] = {}
    for row in rows:
        if int(row["seed"]) != select_seed:
            continue
        dev, lr = float(row["dev_accuracy"]), float(row["learning_rate"])
        if row["strategy"] not in best or dev > best[row["strategy"]][0]:
            best[row["strategy"]] = (dev, lr)
    return {name: lr for name, (_, lr) in best.items()}


def report(out: Path, select_seed: int, seeds: list[int]) -> str:
    rows = read_rows(out / "runs.csv")
    chosen = selected_rates(rows, select_seed)
    grid = sorted({float(r["learning_rate"]) for r in rows if int(r["seed"]) == select_seed})
    lines = [f"Learning-rate selection: dev accuracy on seed {select_seed}", "",
             "| strategy | " + " | ".join(f"lr {g:g}" for g in grid) + " | chosen |",
             "|---|" + "---|" * (len(grid) + 1)]
    for name in STRATEGIES:
        cells = {float(r["learning_rate"]): float(r["dev_accuracy"]) for r in rows
                 if r["strategy"] == name and int(r["seed"]) == select_seed}
        if cells:
            lines.append(f"| {name} | " + " | ".join(f"{cells[g]:.3f}" if g in cells else "-" for g in grid)
                         + f" | {chosen.get(name, float('nan')):g} |")
    by = defaultdict(list)
    for row in rows:
        if int(row["seed"]) in seeds and chosen.get(row["strategy"]) == float(row["learning_rate"]):
            by[row["strategy"]].append(row)

    def stat(items: list[dict], key: str, fmt: str = "{:.3f}") -> str:
        values = np.array([float(r[key]) for r in items])
        spread = f" ± {fmt.format(values.std(ddof=1))}" if len(values) > 1 else ""
        return fmt.format(values.mean()) + spread

    lines += ["", f"At the chosen learning rate, seeds {', '.join(map(str, seeds))} (mean ± standard deviation)", "",
              "| strategy | lr | seeds | dev acc | test acc | trainable | base params | layer params | "
              "train ex/s (all stages) | last stage ex/s | train s (all stages) | peak RSS MB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in STRATEGIES:
        items = by.get(name, [])
        if not items:
            continue
        lines.append(" | ".join([f"| {name}", f"{chosen[name]:g}", str(len(items)), stat(items, "dev_accuracy"),
                                 stat(items, "test_accuracy"), stat(items, "trainable_params", "{:,.0f}"),
                                 stat(items, "base_params", "{:,.0f}"), stat(items, "layer_params", "{:,.0f}"),
                                 stat(items, "examples_per_second", "{:.1f}"),
                                 stat(items, "last_stage_examples_per_second", "{:.1f}"),
                                 stat(items, "train_seconds", "{:.1f}"), stat(items, "peak_memory_mb", "{:.0f}")])
                     + " |")
    return "\n".join(lines)


def edge_rate(rows: list[dict], strategy: str, select_seed: int, step: float) -> float | None:
    """The next rate beyond the grid's edge where the strategy's best dev accuracy sits at that
    edge (a pick at the edge says the best rate may lie outside), or None when it is inside."""
    cells = {float(r["learning_rate"]): float(r["dev_accuracy"]) for r in rows
             if r["strategy"] == strategy and int(r["seed"]) == select_seed}
    if len(cells) < 2:
        return None
    best = max(cells, key=lambda lr: (cells[lr], -lr))  # ties: the lower rate
    if best == min(cells):
        return float(f"{best / step:.3g}")
    if best == max(cells):
        return float(f"{best * step:.3g}")
    return None


def run_and_append(path: Path, strategy: str, seed: int, lr: float, task: str, test: bool,
                   epochs: int = 1, knobs: dict | None = None) -> dict | None:
    proc = subprocess.run([sys.executable, __file__, "--one", strategy, str(seed), str(lr), "--task", task,
                           "--epochs", str(epochs), "--knobs", json.dumps({strategy: knobs or {}}),
                           *([] if test else ["--no-test"])],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"{strategy} seed {seed} lr {lr:g} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    new = not path.is_file()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)
    print(f"{strategy} seed {seed} lr {lr:g}: dev {row['dev_accuracy']:.3f} test {row['test_accuracy']:.3f} "
          f"trainable {row['trainable_params']} base {row['base_params']} {row['train_seconds']:.0f}s", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=float, nargs="+", default=list(GRID))
    parser.add_argument("--select-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/strategies"))
    parser.add_argument("--report", action="store_true", help="only print the tables of runs.csv")
    parser.add_argument("--task", choices=sorted(TASKS), default="demo")
    parser.add_argument("--no-test", action="store_true", help="do not score the test split")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per run (3: a budget three times longer)")
    parser.add_argument("--extend", type=int, default=0, metavar="N",
                        help="up to N rates added beyond an edge of --grid while a strategy's pick sits there, "
                             "one grid step further each time")
    parser.add_argument("--knobs", type=json.loads, default={}, metavar="JSON",
                        help="knobs in place of KNOBS' values, by strategy, e.g. '{\"light_peft\": "
                             "{\"light_peft_head_prune\": 0.0}}' (a probe: give it its own --out)")
    parser.add_argument("--one", nargs=3, metavar=("STRATEGY", "SEED", "LR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), float(args.one[2]), args.task, not args.no_test,
                                 args.epochs, args.knobs.get(args.one[0]))))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "runs.csv"
    if not args.report:
        def done() -> set[tuple[str, int, float]]:
            return {(r["strategy"], int(r["seed"]), float(r["learning_rate"])) for r in read_rows(path)}

        step = max(b / a for a, b in zip(sorted(args.grid), sorted(args.grid)[1:])) if len(args.grid) > 1 else 2.0
        for strategy in args.strategies:
            for lr in args.grid:
                if (strategy, args.select_seed, lr) not in done():
                    run_and_append(path, strategy, args.select_seed, lr, args.task, not args.no_test, args.epochs,
                                   args.knobs.get(strategy))
            for _ in range(args.extend):
                lr = edge_rate(read_rows(path), strategy, args.select_seed, step)
                if lr is None:
                    break
                if (strategy, args.select_seed, lr) not in done():
                    run_and_append(path, strategy, args.select_seed, lr, args.task, not args.no_test, args.epochs,
                                   args.knobs.get(strategy))
        chosen = selected_rates(read_rows(path), args.select_seed)
        for seed in args.seeds:
            for strategy in args.strategies:
                if strategy in chosen and (strategy, seed, chosen[strategy]) not in done():
                    run_and_append(path, strategy, seed, chosen[strategy], args.task, not args.no_test,
                                   args.epochs, args.knobs.get(strategy))
    table = report(args.out, args.select_seed, args.seeds)
    (args.out / "table.txt").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
