"""The training strategies on the real demo model and data: each one trains, logs what it
decided and saves an adapter that reloads to the same predictions; the CLI searches the
strategies space and MLflow shows every trial's strategy and costs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from autopeft.config import SearchConfig
from autopeft.trial.loading import load_adapter
from autopeft.driver.setup import prepare
from autopeft.config import Fidelity
from autopeft.trial.run import evaluate_adapter, run_trial

pytestmark = pytest.mark.slow

FIDELITY = Fidelity(max_train_examples=64, max_eval_examples=64, max_length=32, batch_size=16)
EXPECTED = {"flexora": "flexora_layers_kept", "ist": "ist_updates", "increlora": "increlora_total_rank",
            "light_peft": "light_peft_heads_removed"}


@pytest.mark.parametrize("strategy", sorted(EXPECTED))
def test_strategy_trains_the_demo_model_and_reloads(strategy, tmp_path) -> None:
    torch.set_num_threads(2)
    fixed = {"strategy": strategy}
    if strategy == "light_peft":  # the authors' shares, so that something is pruned
        fixed.update(light_peft_head_prune=0.3333, light_peft_neuron_prune=0.3333)
    setup, optimizer = prepare(SearchConfig(task="demo", space="strategies", optimizer="random", seed=3,
                                            fixed=fixed, fidelity=FIDELITY))
    result = run_trial(setup, optimizer.ask(), save_to=tmp_path / "adapter")
    assert result.strategy["name"] == strategy and EXPECTED[strategy] in result.strategy
    assert 0 < result.cost["trainable_params"] < setup.layout.num_parameters
    pruned = strategy == "light_peft"
    assert (result.cost["base_params"] < setup.layout.num_parameters) == pruned
    dev = setup.data.dev.shuffle(seed=3).select(range(64))  # the dev examples the trial saw
    reloaded = evaluate_adapter(setup, tmp_path / "adapter", dev)
    assert reloaded.metrics["accuracy"] == pytest.approx(result.metrics["accuracy"])


def test_cli_searches_strategies_and_mlflow_shows_them(tmp_path) -> None:
    out = tmp_path / "runs"
    config = tmp_path / "search.yaml"
    config.write_text("task: demo\nspace: strategies\noptimizer: random\ntrials: 2\nseed: 2\n"
                      "fixed: {strategy: light_peft, light_peft_head_prune: 0.25}\n"
                      "objectives: [accuracy, base_params]\nlearned_only: false\n"
                      "fidelity: {max_train_examples: 64, max_eval_examples: 64, max_length: 32}\n")
    proc = subprocess.run([sys.executable, "-m", "autopeft.cli", "search", "--config", str(config),
                           "--output-dir", str(out)], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("autopeft")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("autopeft.role") == "trial"]
    assert len(children) == 2
    for child in children:
        assert child.data.tags["autopeft.status"] == "completed", child.data.tags.get("autopeft.failure")
        assert child.data.params["strategy"] == "light_peft"
        metrics = child.data.metrics
        assert metrics["base_params"] < metrics["light_peft_base_params_before"]
        assert metrics["base_params"] == metrics["light_peft_base_params_after"]
        assert metrics["light_peft_heads_removed"] > 0 and metrics["trainable_params"] > 0
        report = json.loads(open(client.download_artifacts(child.info.run_id, "strategy.json")).read())
        assert report["name"] == "light_peft" and "light_peft_neurons_kept" in report
    # The front's adapters carry their pruning plan: base -> plan -> adapter in one call.
    parent = next(r for r in runs if r.data.tags.get("autopeft.role") == "search")
    adapters = client.download_artifacts(parent.info.run_id, "adapters", str(tmp_path / "dl"))
    setup, _ = prepare(SearchConfig(task="demo", space="strategies", seed=2, fidelity=FIDELITY))
    base_params = {c.info.run_name: c.data.metrics["base_params"] for c in children}
    folders = sorted(Path(adapters).iterdir())
    assert folders
    for folder in folders:
        assert (folder / "pruning_plan.json").is_file()
        model = load_adapter(setup.task.load_model(setup.model_path, setup.data), folder)
        base = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n and "modules_to_save" not in n)
        assert base == base_params[folder.name]
