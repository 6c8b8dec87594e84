"""The search configuration: one dataclass, filled from a YAML file and/or CLI flags."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopeft._yaml import LineDict, load_yaml
from autopeft.errors import ConfigError
from autopeft.training import Fidelity

DEFAULT_DIR = Path("autopeft-runs")


@dataclass
class DataConfig:
    train_file: str | None = None
    dev_file: str | None = None
    test_file: str | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None


@dataclass
class SearchConfig:
    """Everything ``autopeft search`` needs; every field has a usable default."""

    model: str | None = field(default=None, metadata={"help": "local folder or hub id; the demo model by default"})
    task: str | None = field(default=None, metadata={
        "help": "'demo' or a task type ('classification'); by default 'classification' when data is "
                "given, else 'demo'"})
    data: DataConfig = field(default_factory=DataConfig)
    space: str = field(default="lora", metadata={"help": "preset name in search_spaces/ or a YAML path"})
    fixed: dict[str, Any] = field(default_factory=dict, metadata={"help": "parameters pinned to a value"})
    objectives: list[str] = field(default_factory=lambda: ["accuracy", "trainable_percent"])
    reference_point: dict[str, float] = field(default_factory=dict,
                                              metadata={"help": "worst acceptable value per objective"})
    optimizer: str = "mobo"
    optimizer_options: dict[str, Any] = field(default_factory=dict)
    trials: int = 12
    concurrency: int = 1
    fidelity: Fidelity = field(default_factory=Fidelity)
    seed: int = 0
    tracking_uri: str | None = field(default=None, metadata={"help": "MLflow URI; sqlite in autopeft-runs/ by default"})
    experiment: str = "autopeft"
    ray_address: str | None = None
    output_dir: str = str(DEFAULT_DIR)

    def check(self) -> None:
        given = [f"data.{k}" for k, v in dataclasses.asdict(self.data).items() if v is not None]
        if self.task is None:
            self.task = "classification" if given else "demo"
        elif self.task == "demo" and given:
            raise ConfigError(f"the demo uses its own data, but {given[0].replace('_', '-')} was given; "
                              f"leave out --task demo (or set task: classification) to search on "
                              f"your data", key="task")
        for name in ("trials", "concurrency", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "seed" else 1):
                raise ConfigError(f"must be a {'non-negative' if name == 'seed' else 'positive'} "
                                  f"integer, got {value!r}", key=name)
        for f in dataclasses.fields(Fidelity):
            value = getattr(self.fidelity, f.name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"must be a positive integer, got {value!r}", key=f"fidelity.{f.name}")

    @property
    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{(Path(self.output_dir) / 'mlflow.db').resolve()}"


def _build(cls: type, data: Any, source: str, prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping, got {type(data).__name__}", source=source,
                          key=prefix.rstrip(".") or None)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        line = data.line_of(key) if isinstance(data, LineDict) else None
        name = str(key).replace("-", "_")
        if name not in fields:
            raise ConfigError(f"unknown key; allowed are {sorted(fields)}", source=source,
                              key=f"{prefix}{key}", line=line)
        nested = {"data": DataConfig, "fidelity": Fidelity}.get(name) if not prefix else None
        kwargs[name] = _build(nested, value, source, f"{name}.") if nested else value
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(str(err), source=source) from None


def load_config(path: str | None, overrides: dict[str, Any]) -> SearchConfig:
    """A config file (optional) with CLI ``overrides`` on top (keys like ``fidelity.epochs``)."""
    base = load_yaml(path) if path else LineDict()
    config = _build(SearchConfig, base, path or "command line")
    for key, value in overrides.items():
        if value is None:
            continue
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, leaf, value)
    if isinstance(config.objectives, str):
        config.objectives = [config.objectives]
    config.check()
    return config
