"""Macro-averaged F1 on the dev split: every class counts the same, however rare.

Use: ``autopeft search --objective macro_f1 --objective trainable_percent`` (registered by entry
point in pyproject.toml; ``objectives/macro_f1.py:macro_f1`` names the same function by path)
"""

import numpy as np

import autopeft


@autopeft.objective("maximize")
def macro_f1(trial: autopeft.TrialOutput) -> float:
    classes = np.union1d(trial.labels, trial.predictions)
    scores = []
    for c in classes:
        tp = np.sum((trial.predictions == c) & (trial.labels == c))
        predicted, actual = np.sum(trial.predictions == c), np.sum(trial.labels == c)
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return float(np.mean(scores))
