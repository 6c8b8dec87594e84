"""How much of a search's wall time is autopeft's own overhead rather than training and
evaluation: suggesting (optimizer), dispatching (Ray), logging (MLflow), reporting.

    .venv/bin/python benchmarks/overhead.py [--trials 6] [--max-train-examples 1000]

Runs a real demo search at concurrency 1 and prints, per trial and in total, the time spent
training and evaluating against everything else.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import autopeft


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--max-train-examples", type=int, default=1000)
    parser.add_argument("--max-eval-examples", type=int, default=500)
    parser.add_argument("--optimizer", default="mobo")
    args = parser.parse_args()

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as out:
        result = autopeft.search(task="demo", trials=args.trials, optimizer=args.optimizer,
                                 optimizer_options={"n_initial": 3} if args.optimizer == "mobo" else {},
                                 max_train_examples=args.max_train_examples,
                                 max_eval_examples=args.max_eval_examples, output_dir=out, progress=False)
    total = time.monotonic() - started
    t = result.timings
    trials = [r for r in result.trials if r.status == "completed"]
    work = sum(r.metrics["train_seconds"] + r.metrics["eval_seconds"] for r in trials)
    in_trial = sum(r.metrics["trial_seconds"] for r in trials)
    fit = t["fit_seconds"]
    print(f"demo search: {args.trials} trials ({len(trials)} completed), optimizer {args.optimizer}, "
          f"{args.max_train_examples} train / {args.max_eval_examples} dev examples, concurrency 1\n")
    print(f"{'trial':<11}{'train s':>9}{'eval s':>9}{'in-trial other s':>18}")
    for r in trials:
        m = r.metrics
        print(f"{r.name:<11}{m['train_seconds']:>9.1f}{m['eval_seconds']:>9.1f}"
              f"{m['trial_seconds'] - m['train_seconds'] - m['eval_seconds']:>18.1f}")
    rows = [
        ("training + evaluation", work),
        ("in the trial, other (model build, tokenizer, objectives, adapter save)", in_trial - work),
        ("optimizer suggest/tell (driver)", t["suggest_seconds"]),
        ("MLflow logging (driver)", t["tracking_seconds"]),
        ("Ray Tune dispatch and result handling (rest of fit)",
         fit - in_trial - t["suggest_seconds"] - t["tracking_seconds"]),
        ("Ray start", t["ray_start_seconds"]),
        ("final report (test scores of the front, plots, artifacts)", t["final_report_seconds"]),
        ("setup before trials (load data/model, tokenize) and shutdown",
         total - fit - t["ray_start_seconds"] - t["final_report_seconds"]),
    ]
    print(f"\n{'where the wall time went':<72}{'seconds':>9}{'share':>8}")
    for label, seconds in rows:
        print(f"{label:<72}{seconds:>9.1f}{seconds / total:>8.1%}")
    print(f"{'total':<72}{total:>9.1f}")
    per_trial = (fit - work) / max(len(trials), 1)
    print(f"\noverhead inside the trial loop: {(fit - work) / fit:.1%} of the loop's wall time "
          f"({per_trial:.1f} s per trial); whole search: {(total - work) / total:.1%}")


if __name__ == "__main__":
    main()
