"""The search configuration: one dataclass, filled from a YAML file and/or CLI flags."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopeft._yaml import LineDict, load_yaml
from autopeft.errors import ConfigError


DEFAULT_DIR = Path("autopeft-runs")


def _help(text: str, **more: Any) -> dict[str, Any]:
    """Field metadata: ``help`` is the CLI flag's help (as PEFT keeps it on its config fields);
    ``flag`` renames the flag; ``cli=False`` keeps a field to config files (mappings)."""
    return {"help": text, **more}


@dataclass
class Fidelity:
    """How cheaply each trial trains: the knobs that trade search cost for signal."""

    max_train_examples: int | None = field(default=2000, metadata=_help("training examples per trial"))
    epochs: int = field(default=1, metadata=_help("epochs per trial (the best epoch on dev is kept)"))
    max_steps: int | None = field(default=None, metadata=_help("stop each trial after this many steps"))
    max_length: int = field(default=64, metadata=_help("tokens per example"))
    batch_size: int = field(default=16, metadata=_help("training batch size"))
    max_eval_examples: int | None = field(default=None, metadata=_help("dev examples per trial (all by default)"))


@dataclass
class EarlyStopping:
    """Which trials stop before the end of their training, and where they are judged."""

    scheduler: str = field(default="fifo", metadata=_help(
        "'fifo' (every trial trains to the end), 'fifo_rungs' (the same, scored on dev at moasha's rungs "
        "on the way) or 'moasha' (stop trials that rank low on all "
        "objectives at rungs: multi-objective successive halving)"))
    reduction_factor: int = field(default=3, metadata=_help(
        "moasha: a trial goes past a rung if it ranks in the top 1/N of the trials that reached it"))
    rungs: int = field(default=2, metadata=_help(
        "moasha, fifo_rungs: rungs at 1/N^k of a trial's training, k = rungs..1"))


@dataclass
class Limits:
    """How long a search and each of its trials may run, how many failed trials it goes on
    after, and what each trial reserves of the machine (or cluster)."""

    trial_timeout: float | None = field(default=None, metadata=_help(
        "seconds a trial may run; past them its worker is stopped and the trial recorded as failed"))
    time_budget: float | None = field(default=None, metadata=_help(
        "seconds the whole search may run; trials still running then are stopped (recorded as "
        "interrupted) and the search ends with the front so far"))
    max_failures: int | None = field(default=None, metadata=_help(
        "start no new trial once this many have failed (those running finish)"))
    cpus_per_trial: int | None = field(default=None, metadata=_help(
        "CPUs each trial reserves (default: the CPUs split evenly over the concurrent trials)"))
    gpus_per_trial: float | None = field(default=None, metadata=_help(
        "GPUs each trial reserves, a fraction allowed (default: the GPUs split evenly, at most one)"))
    trial_memory: float | None = field(default=None, metadata=_help(
        "GB of memory a trial may allocate in its worker; past them it fails as out of memory "
        "(a cap on the process's heap: on a GPU, the device's own memory is the limit)"))
    retries: int | None = field(default=None, metadata=_help(
        "times a trial whose worker died (killed, lost with its node) starts again before it counts "
        "as failed; a trial's own error is not retried: the same configuration and seed fail alike"))

    def check(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            integer = str(f.type).startswith("int")
            zero_ok = f.name in ("gpus_per_trial", "retries")  # 0: trials use no GPU, none retried
            number = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
            if not number or value < 0 or (value == 0 and not zero_ok):
                kind = "integer" if integer else "number"
                raise ConfigError(f"must be a {'non-negative' if zero_ok else 'positive'} {kind}, got {value!r}",
                                  key=f"limits.{f.name}")


@dataclass
class DataConfig:
    """The user's data; giving any of it makes the search a classification on it, unless the
    task says otherwise (``causal_lm``: prompt and response columns)."""

    train_file: str | None = field(default=None, metadata=_help(
        "your data: CSV, TSV, JSON(L), Parquet or a `datasets` folder"))
    dev_file: str | None = field(default=None, metadata=_help("dev split (default: split off the train file)"))
    test_file: str | None = field(default=None, metadata=_help("test split (default: split off the train file)"))
    text_column: str | None = field(default=None, metadata=_help("column with the text (required with a train file)"))
    text_pair_column: str | None = field(default=None, metadata=_help("second text of a pair task"))
    label_column: str | None = field(default=None, metadata=_help("column with the label (required with a train file)"))
    prompt_column: str | None = field(default=None, metadata=_help("causal_lm: column with the prompt"))
    response_column: str | None = field(default=None, metadata=_help(
        "causal_lm: column with the response (the loss is on its tokens only)"))
    chat_template: bool | None = field(default=None, metadata=_help(
        "causal_lm: format each prompt/response pair with the tokenizer's chat template"))


@dataclass
class SearchConfig:
    """Everything ``autopeft search`` needs; every field has a usable default. The CLI's flags
    and their help are made from these fields."""

    model: str | None = field(default=None, metadata=_help(
        "local model folder or hub id (default: the demo model)"))
    task: str | None = field(default=None, metadata=_help(
        "'demo', 'demo-lm' or a task type ('classification', 'causal_lm'); by default "
        "'classification' when data is given, else 'demo'"))
    data: DataConfig = field(default_factory=DataConfig)
    space: str | None = field(default=None, metadata=_help(
        "search space: a preset (`autopeft spaces` lists them) or a YAML file (default: lora; "
        "demo-lm: lora_llm)"))
    fixed: dict[str, Any] = field(default_factory=dict, metadata=_help("parameters pinned to a value", cli=False))
    objectives: list[str] = field(default_factory=list, metadata=_help(
        "an objective's name (built-in or plugin) or FILE.py:FUNCTION; repeat for several (default: "
        "the task's: accuracy and trainable_percent for classification)", flag="objective"))
    reference_point: dict[str, float] = field(default_factory=dict, metadata=_help(
        "worst acceptable value per objective", cli=False))
    learned_only: bool = field(default=True, metadata=_help(
        "keep trials that score no better than the task's trivial score (the majority class) off the "
        "front and tell the optimizer they learned nothing; --no-learned-only treats them as any other"))
    optimizer: str = field(default="mobo", metadata=_help(
        "mobo, random, tpe, nsga2, optuna_gp, or an installed plugin's optimizer"))
    optimizer_options: dict[str, Any] = field(default_factory=dict, metadata=_help(
        "keyword options of the optimizer", cli=False))
    trials: int | None = field(default=None, metadata=_help("trials to run (default: 12; demo-lm: 6)"))
    concurrency: int = field(default=1, metadata=_help("trials at once (CPUs and GPUs are split evenly)"))
    fidelity: Fidelity = field(default_factory=Fidelity)
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    limits: Limits = field(default_factory=Limits)
    seed: int = field(default=0, metadata=_help("seed of data splits, initial designs and training"))
    data_seed: int | None = field(default=None, metadata=_help(
        "seed of the data splits and subsets alone (default: --seed): searches with other seeds on "
        "the same data"))
    training_seed: int | None = field(default=None, metadata=_help(
        "seed of each trial's training alone (default: --seed): the same splits and configurations "
        "trained again with another seed measure the training noise"))
    tracking_uri: str | None = field(default=None, metadata=_help(
        "MLflow tracking URI (default: sqlite in the output dir)"))
    experiment: str = field(default="autopeft", metadata=_help("MLflow experiment name"))
    ray_address: str | None = field(default=None, metadata=_help(
        "address of an existing Ray cluster (default: a local Ray)"))
    output_dir: str = field(default=str(DEFAULT_DIR), metadata=_help("where local runs and artifacts go"))
    final_seeds: int = field(default=0, metadata=_help(
        "after the search, retrain the front at full fidelity with this many seeds (autopeft evaluate)"))
    warm_start: str | list[dict[str, Any]] | None = field(default=None, metadata=_help(
        "RUN_ID of an earlier search in the same space (another task or model): its front is tried "
        "first, in place of random initial designs (from Python also a list of configurations)"))
    baselines: list[str] = field(default_factory=list, metadata=_help(
        "with --final-seeds: also train standard hand-made configurations alike, for comparison: the "
        "names given, or all of them (full_finetuning, lora_r8_qv, lora_r8_all_linear, bottleneck, ia3) "
        "with no name", nargs="*"))
    final_fidelity: dict[str, Any] = field(default_factory=dict, metadata=_help(
        "fidelity of the final evaluation (default: the search's, with every training and dev example)",
        cli=False))

    def check(self) -> None:
        given = [f"data.{k}" for k, v in dataclasses.asdict(self.data).items() if v is not None]
        if self.task is None:
            self.task = "classification" if given else "demo"
        elif self.task in ("demo", "demo-lm") and given:
            raise ConfigError(f"the {self.task} task uses its own data, but {given[0].replace('_', '-')} was "
                              f"given; leave out --task {self.task} (or set a task type such as "
                              f"classification) to search on your data", key="task")
        for name in ("trials", "concurrency", "seed", "data_seed", "training_seed", "final_seeds"):
            value = getattr(self, name)
            if value is None and name in ("trials", "data_seed", "training_seed"):  # the task's, or 12; --seed
                continue
            least = 0 if name in ("seed", "data_seed", "training_seed", "final_seeds") else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ConfigError(f"must be a {'non-negative' if least == 0 else 'positive'} "
                                  f"integer, got {value!r}", key=name)
        if isinstance(self.baselines, str):
            self.baselines = [self.baselines]
        if not isinstance(self.baselines, list):
            raise ConfigError(f"must be a list of baseline names, got {self.baselines!r}", key="baselines")
        unknown = set(self.final_fidelity) - {f.name for f in dataclasses.fields(Fidelity)}
        if unknown:
            raise ConfigError(f"unknown fidelity setting '{sorted(unknown)[0]}'", key="final_fidelity")
        if self.baselines and not self.final_seeds:
            raise ConfigError("baselines are trained in the final evaluation: give final_seeds too "
                              "(--final-seeds K)", key="baselines")
        for f in dataclasses.fields(Fidelity):
            value = getattr(self.fidelity, f.name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"must be a positive integer, got {value!r}", key=f"fidelity.{f.name}")
        stopping = self.early_stopping
        for name, least in (("reduction_factor", 2), ("rungs", 1)):
            value = getattr(stopping, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ConfigError(f"must be an integer of at least {least}, got {value!r}",
                                  key=f"early_stopping.{name}")
        self.limits.check()

    @property
    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{(Path(self.output_dir) / 'mlflow.db').resolve()}"


#: SearchConfig's nested sections: a config file's ``data:``/``fidelity:`` mappings, the CLI's
#: flag groups and ``autopeft.search``'s plain keyword names all read this table
SECTIONS: dict[str, type] = {"data": DataConfig, "fidelity": Fidelity, "early_stopping": EarlyStopping,
                             "limits": Limits}


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
        nested = SECTIONS.get(name) if not prefix else None
        kwargs[name] = _build(nested, value, source, f"{name}.") if nested else value
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(str(err), source=source) from None


def config_record(config: SearchConfig) -> dict[str, Any]:
    """``config`` as plain data, to store beside a search (objectives given as Python objects
    are kept by name)."""
    names = [o if isinstance(o, str) else o.name for o in config.objectives]
    return dataclasses.asdict(dataclasses.replace(config, objectives=names))


def config_from_record(data: dict[str, Any], source: str) -> SearchConfig:
    """The SearchConfig that :func:`config_record` stored."""
    config = _build(SearchConfig, data, source)
    config.check()
    return config


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
