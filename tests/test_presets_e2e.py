"""Every shipped search space runs a whole search on the demo model and data, tiny budget (the
strategies preset in test_strategies_e2e.py)."""

from __future__ import annotations

import pytest

import autopeft
from autopeft.space import presets

from conftest import write_answers_csv

pytestmark = pytest.mark.slow


#: test_strategies_e2e.py's CLI search runs the strategies preset end to end (and checks more):
#: a second whole search of it here cost 25 s of CI and found nothing the first does not
COVERED_ELSEWHERE = {"strategies"}


@pytest.mark.parametrize("preset", [p for p in presets() if p not in COVERED_ELSEWHERE])
def test_preset_search_on_the_demo(preset, local_ray, tmp_path, tiny_llama_dir) -> None:
    @autopeft.objective("maximize")
    def answered(trial: autopeft.TrialOutput) -> float:  # a closure: pickled by value for Ray
        assert len(trial.generations) == len(trial.references) and set(trial.references) <= {"positive", "negative"}
        return float(len(trial.generations))

    # The decoder preset on a tiny LLaMA answering questions (the demo's model is an encoder).
    task = {"task": "demo"} if preset != "lora_llm" else {
        "task": "causal_lm", "model": str(tiny_llama_dir), "train_file": str(write_answers_csv(tmp_path / "qa.csv")),
        "prompt_column": "question", "response_column": "answer",
        "objectives": ["exact_match", "peak_memory_mb", answered]}
    result = autopeft.search(**task, space=preset, optimizer="random", trials=2, seed=1,
                             max_train_examples=32, max_eval_examples=32, max_length=32,
                             output_dir=str(tmp_path), experiment=preset, progress=False,
                             learned_only=False)  # 32 examples learn nothing: the front is every completed trial
    errors = [t.error for t in result.trials if t.status != "completed"]
    assert not errors, errors
    assert result.front and all(m.test_metrics for m in result.front)
    assert all(t.metrics["trainable_params"] > 0 for t in result.trials)
    if preset == "lora_llm":  # a custom objective got every dev example's generation
        seen = {t.objectives["answered"] for t in result.trials}
        assert len(seen) == 1 and 20 <= seen.pop() <= 28  # the dev split: a tenth of 240
