"""Plain LoRA against each training strategy on the demo model and data, at one fixed budget.

    nice -n 5 .venv/bin/python benchmarks/strategies.py --seeds 3 --out benchmarks/results/strategies
    .venv/bin/python benchmarks/strategies.py --report --out benchmarks/results/strategies

Every run trains the same adapter (LoRA rank 8, alpha 16, on q, k, v, attention output, FFN up
and down of all 6 layers, learning rate 1e-3) on the same 2,000 training examples of at most 64
tokens, one epoch in batches of 16 (125 steps), with the same seed for every strategy; the
strategies add their own stages on top (Flexora's search stage, Light-PEFT's estimation),
which are paid for in time. Dev accuracy is the trial's (best epoch); test accuracy is the
saved adapter's on the test split, reloaded with autopeft's loader. Each run is its own
process (peak memory is the process's resident set, which never shrinks), on 2 threads, one
after the other. Rows are appended to ``OUT/runs.csv``; a rerun skips the rows there.
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
FIXED = {"target_modules": ALL_ROLES, "alpha_multiplier": 2, "learning_rate": 1e-3}
KNOBS = {
    "none": {"layers": True, "rank": 8},
    "flexora": {"rank": 8},
    "ist": {"layers": True, "rank": 8, "ist_update_share": 0.25},
    "increlora": {"increlora_target_rank": 8, "increlora_top_h": 4},
    "light_peft": {"layers": True, "rank": 8, "light_peft_head_prune": 0.3333,
                   "light_peft_neuron_prune": 0.3333, "light_peft_module_prune": 0.75,
                   "light_peft_rank_prune": 0.5},
}
FIELDS = ["strategy", "seed", "dev_accuracy", "test_accuracy", "trainable_params", "base_params",
          "layer_params", "examples_per_second", "train_seconds", "last_stage_examples_per_second",
          "peak_memory_mb", "report"]


def run_one(strategy: str, seed: int) -> dict:
    """One trial in this process; the row for runs.csv."""
    import torch

    from autopeft.config import SearchConfig
    from autopeft.search import prepare
    from autopeft.training import Fidelity
    from autopeft.trial import evaluate_adapter, run_trial

    torch.set_num_threads(2)
    fixed = {"strategy": strategy, **FIXED, **KNOBS[strategy]}
    if fixed.get("layers") is True:
        fixed["layers"] = [True] * 6
    config = SearchConfig(task="demo", space="strategies", optimizer="random", seed=seed, fixed=fixed,
                          fidelity=Fidelity(max_train_examples=2000, epochs=1, max_length=64, batch_size=16))
    setup, optimizer = prepare(config)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_trial(setup, optimizer.ask(), save_to=Path(tmp))
        test = evaluate_adapter(setup, Path(tmp), setup.data.test).metrics["accuracy"]
    layers = sum(p.numel() for p in setup.task.load_model(setup.model_path, setup.data)
                 .get_submodule(setup.layout.layers_path).parameters())
    last = [k for k in result.timing if k.endswith("_stage_examples_per_second")][-1]
    report = {k: v for k, v in result.strategy.items() if not isinstance(v, (dict, list))}
    return {"strategy": strategy, "seed": seed, "dev_accuracy": result.metrics["accuracy"],
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


def report(out: Path) -> str:
    rows = read_rows(out / "runs.csv")
    by = defaultdict(list)
    for row in rows:
        by[row["strategy"]].append(row)

    def stat(items: list[dict], key: str, fmt: str = "{:.3f}") -> str:
        values = np.array([float(r[key]) for r in items])
        spread = f" ± {fmt.format(values.std(ddof=1))}" if len(values) > 1 else ""
        return fmt.format(values.mean()) + spread

    lines = ["| strategy | seeds | dev acc | test acc | trainable | base params | layer params | "
             "train ex/s (all stages) | last stage ex/s | train s (all stages) | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in STRATEGIES:
        items = by.get(name, [])
        if not items:
            continue
        lines.append(" | ".join([f"| {name}", str(len(items)), stat(items, "dev_accuracy"),
                                 stat(items, "test_accuracy"), stat(items, "trainable_params", "{:,.0f}"),
                                 stat(items, "base_params", "{:,.0f}"), stat(items, "layer_params", "{:,.0f}"),
                                 stat(items, "examples_per_second", "{:.1f}"),
                                 stat(items, "last_stage_examples_per_second", "{:.1f}"),
                                 stat(items, "train_seconds", "{:.1f}"), stat(items, "peak_memory_mb", "{:.0f}")])
                     + " |")
    lines.append("")
    lines.append("mean ± standard deviation over seeds " + ", ".join(sorted({r["seed"] for r in rows})))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/strategies"))
    parser.add_argument("--report", action="store_true", help="only print the table of runs.csv")
    parser.add_argument("--one", nargs=2, metavar=("STRATEGY", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]))))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "runs.csv"
    if not args.report:
        done = {(r["strategy"], r["seed"]) for r in read_rows(path)}
        for seed in range(args.seeds):
            for strategy in args.strategies:
                if (strategy, str(seed)) in done:
                    continue
                proc = subprocess.run([sys.executable, __file__, "--one", strategy, str(seed)],
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"{strategy} seed {seed} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                    continue
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                new = not path.is_file()
                with path.open("a", newline="") as fh:
                    writer = csv.DictWriter(fh, fieldnames=FIELDS)
                    if new:
                        writer.writeheader()
                    writer.writerow(row)
                print(f"{strategy} seed {seed}: dev {row['dev_accuracy']:.3f} test {row['test_accuracy']:.3f} "
                      f"trainable {row['trainable_params']} base {row['base_params']} "
                      f"{row['train_seconds']:.0f}s", flush=True)
    table = report(args.out)
    (args.out / "table.txt").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
