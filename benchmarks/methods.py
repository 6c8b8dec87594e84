"""Every method of the PEFT family on the demo at one fixed budget: trainable parameters,
dev accuracy, and whether the saved adapter reloads (stock PeftModel.from_pretrained) to
identical logits.

    .venv/bin/python benchmarks/methods.py [--max-train-examples 1000] [--methods lora,dora]

Same training examples, steps, seed and learning rate for all; all layers, rank 8 (shared
rank 8 for VeRA/AdaLoRA), attention query and value projections, 16 virtual tokens for
prefix and prompt tuning.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from transformers import AutoTokenizer

from autopeft.trial.binding import get_adapter
from autopeft.adapters.peft_family import METHODS
from autopeft.config import SearchConfig
from autopeft.training.measure import count_parameters
from autopeft.driver.setup import prepare
from autopeft.config import Fidelity
from autopeft.training.loop import Hyperparameters, planned_steps, train
from autopeft.trial.run import build_model, loader


def fixed_values(method: str, lr: float) -> dict:
    takes = METHODS[method].takes
    values = {"method": method, "learning_rate": lr}
    if "layers" in takes:
        values.update(layers=True, target_modules=["attn_q", "attn_v"])
    if "rank" in takes:
        values.update(rank=8, alpha_multiplier=2)
    if "shared_rank" in takes:
        values["shared_rank"] = 8
    if "num_virtual_tokens" in takes:
        values["num_virtual_tokens"] = 16
    return values


def measure(method: str, args: argparse.Namespace) -> dict:
    """Train one method at the fixed budget; compare the trained and the reloaded logits."""
    config = SearchConfig(task="demo", space="peft_family", optimizer="random",
                          fixed=fixed_values(method, args.learning_rate),
                          fidelity=Fidelity(max_train_examples=args.max_train_examples,
                                            max_eval_examples=args.max_eval_examples))
    setup, optimizer = prepare(config)
    trial_config = optimizer.ask()
    builder = get_adapter(setup.space.spec)
    tokenizer = AutoTokenizer.from_pretrained(setup.model_path)
    train_loader = loader(setup.train_tokens, tokenizer, setup.fidelity.batch_size, True, setup.seed)
    dev_loader = loader(setup.dev_tokens, tokenizer, 64, False, setup.seed)
    model = build_model(setup, trial_config, planned_steps(len(train_loader), setup.fidelity), train_loader)
    trainable, _ = count_parameters(model)
    outcome = train(model, setup.task, train_loader, dev_loader,
                    Hyperparameters.from_values(setup.space.assemble(trial_config)), setup.fidelity,
                    torch.device("cpu"), hooks=builder.training_hooks(model))
    batch = {k: v for k, v in next(iter(dev_loader)).items() if k != "labels"}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        builder.save(model, Path(tmp))
        reloaded = builder.load(setup.task.load_model(setup.model_path, setup.data), Path(tmp)).eval()
        gap = float((model.eval()(**batch).logits - reloaded(**batch).logits).abs().max())
    return {"trainable": trainable, "percent": 100 * trainable / setup.layout.num_parameters,
            "accuracy": outcome.best.metrics["accuracy"], "seconds": outcome.train_seconds, "gap": gap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-train-examples", type=int, default=1000)
    parser.add_argument("--max-eval-examples", type=int, default=500)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    print(f"demo (all-MiniLM-L6-v2, Rotten Tomatoes): {args.max_train_examples} train / "
          f"{args.max_eval_examples} dev examples, 1 epoch, batch 16, lr {args.learning_rate}, seed 0\n")
    print(f"| method | trainable params | % of base | dev accuracy | train s | reloaded logits |")
    print(f"|---|---:|---:|---:|---:|---|")
    for method in args.methods.split(","):
        try:
            r = measure(method, args)
        except Exception as err:  # report and go on to the next method
            print(f"| {method} | failed: {type(err).__name__}: {err} | | | | |", flush=True)
            continue
        same = "identical" if r["gap"] <= 1e-5 else f"differ by {r['gap']:.2g}"
        print(f"| {method} | {r['trainable']:,} | {r['percent']:.3f} | {r['accuracy']:.3f} | "
              f"{r['seconds']:.1f} | {same} (max diff {r['gap']:.1g}) |", flush=True)


if __name__ == "__main__":
    main()
