"""A search from Python with a custom objective: accuracy on the dev snippets that are
hard to read (long ones), against the share of trainable parameters.

    python examples/custom_objective.py

Runs the built-in demo (all-MiniLM-L6-v2 on Rotten Tomatoes) at a small budget.
"""

import numpy as np

import autopeft


@autopeft.objective("maximize")
def long_snippet_accuracy(trial: autopeft.TrialOutput) -> float:
    """Dev accuracy on the longer half of the snippets (by token count)."""
    lengths = np.concatenate([b["attention_mask"].sum(-1).numpy() for b in trial.dev_batches])
    long = lengths >= np.median(lengths)
    return float((trial.predictions[long] == trial.labels[long]).mean())


def main() -> None:
    result = autopeft.search(
        task="demo",
        objectives=[long_snippet_accuracy, "trainable_percent", "macro_f1"],
        trials=6,
        max_train_examples=400,
        max_eval_examples=400,
        experiment="custom-objective-example",
    )
    print(result)
    print(result.table()[["trial", "long_snippet_accuracy", "trainable_percent", "macro_f1"]])


if __name__ == "__main__":
    main()
