"""What a search loads once and every trial shares: its checked input, the task's data, the
model's layout, the bound space, and the optimizer with what the search knows before any
trial (``prepare``; the final evaluation and the baselines load the same setup)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autopeft.config import SearchConfig
from autopeft.driver.inputs import check_inputs, check_model_reference, task_fidelity
from autopeft.errors import ConfigError, ModelError
from autopeft.models import model_layout
from autopeft.objectives import Objective
from autopeft.optimizers import OPTIMIZERS, Optimizer, make_optimizer
from autopeft.optimizers.knowledge import search_knowledge
from autopeft.space import Config, SearchSpace, SpaceSpec
from autopeft.tasks import make_task
from autopeft.tasks.base import TaskData
from autopeft.tasks.data import data_source
from autopeft.tasks.loading import quantization_unavailable
from autopeft.trial.binding import bind_space, get_adapter
from autopeft.trial.run import SearchSetup, by_length, quiet_libraries


def prepare(config: SearchConfig) -> tuple[SearchSetup, Optimizer]:
    """Check and load everything a search needs, before anything is written anywhere."""
    setup = load_setup(config)
    objectives = setup.objectives
    options = dict(config.optimizer_options)
    # A third of a small budget goes to random designs (at least two points per objective plus
    # two), so that a 12-trial search still spends half its trials on a model; every optimizer
    # starts from the same designs for the same seed.
    options.setdefault("n_initial", max(2 * (len(objectives) + 1), min(10, config.trials // 3)))
    warm = warm_start_configs(config, setup.space) if config.warm_start else []
    if "n_initial" not in config.optimizer_options:
        # Every warm configuration gets tried: they take the place of random designs.
        options["n_initial"] = max(options["n_initial"], len(warm))
    floors = setup.floors if config.learned_only else {}
    known = setup.knowledge = search_knowledge(objectives, setup.space, floors, references(config, objectives))
    if OPTIMIZERS.get(config.optimizer).uses_knowledge:
        options.setdefault("analytic", [known.analytic.get(o.name) for o in objectives])
        options.setdefault("floors", [known.floors.get(o.name) for o in objectives])
    optimizer = make_optimizer(config.optimizer, setup.space, [o.direction for o in objectives], seed=config.seed,
                               reference_point=[known.reference.get(o.name) for o in objectives], **options)
    if warm:
        optimizer.warm_start(warm)
    return setup, optimizer


def warm_start_configs(config: SearchConfig, space: SearchSpace) -> list[Config]:
    """The configurations a warm start tries first: the front of search ``config.warm_start``
    (best first in the first objective), or the configurations given from Python."""
    from autopeft.results.tracking import stored_front

    if not isinstance(config.warm_start, str):
        return [dict(c) for c in config.warm_start]
    space_name, front = stored_front(config.resolved_tracking_uri, config.warm_start)
    if space_name != space.spec.name:
        raise ConfigError(f"search {config.warm_start} searched space '{space_name}', this one "
                          f"'{space.spec.name}': a warm start needs the same space", key="warm_start")
    configs = [r.config for r in front]
    # A knob fixed in one search and searched in the other makes every stored configuration
    # incomplete here; the optimizer would pass them over and the warm start be silently cold.
    if configs and not any(space.is_valid(space.canonical(c)) for c in configs):
        raise ConfigError(f"none of the {len(configs)} configurations on the front of search "
                          f"{config.warm_start} is a configuration of this space: fix and search the "
                          "same knobs (`fixed:`) as that search did", key="warm_start")
    return configs


def load_setup(config: SearchConfig) -> SearchSetup:
    """Check the inputs, then load the task's data, the model's layout and the bound space
    that every trial of ``config`` shares."""
    checked = check_inputs(config)
    quiet_libraries()
    spec, objectives = checked.spec, checked.objectives
    builder = get_adapter(spec)

    task = make_task(config.task)
    data_seed = config.seed if config.data_seed is None else config.data_seed
    data = task.load_data(data_source(config.data), data_seed)
    task.check_objectives([(o.name, o.metric) for o in objectives if o.metric], data)
    if task.defaults.why and config.fidelity == task_fidelity(task.defaults):
        data.notes.append(task.defaults.why)
    model_path = config.model or task.default_model()
    check_model_reference(model_path)
    if Path(model_path).exists():  # Ray's workers run in folders of their own: no relative paths
        model_path = str(Path(model_path).resolve())
    try:
        tokenizer = task.load_tokenizer(model_path)
        layout = model_layout(task.load_model(model_path, data))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load: {str(err).splitlines()[0]}", source=model_path, key="model") from None
    fixed = {**model_option_pins(spec, data, config.fixed), **config.fixed}
    space = bind_space(spec, builder, layout, fixed)

    fid = config.fidelity
    train = data.train.shuffle(seed=data_seed)
    if fid.max_train_examples:
        train = train.select(range(min(fid.max_train_examples, len(train))))
    dev = data.dev if not fid.max_eval_examples else data.dev.shuffle(seed=data_seed).select(
        range(min(fid.max_eval_examples, len(data.dev))))
    return SearchSetup(task=task, model_path=model_path, data=data, floors=task.floors(dev),
                       train_tokens=task.tokenize(train, tokenizer, fid.max_length),
                       dev_tokens=by_length(task.tokenize(dev, tokenizer, fid.max_length)),
                       layout=layout, space=space, objectives=objectives, fidelity=fid,
                       seed=config.seed if config.training_seed is None else config.training_seed)


def model_option_pins(spec: SpaceSpec, data: TaskData, fixed: dict[str, Any]) -> dict[str, Any]:
    """Model-loading dimensions this machine cannot search, pinned off, each with a note
    (``data.notes``) saying why: 4-bit base weights without a GPU or bitsandbytes (an input
    error where the user pinned them on)."""
    param = spec.parameters.get("quantization")
    reason = quantization_unavailable()
    if fixed.get("quantization") == "4bit" and reason:
        raise ConfigError(reason, key="fixed.quantization")
    if param is None or reason is None or "4bit" not in param.extremes():
        return {}
    data.notes.append(f"quantization pinned to 'none': {reason}")
    return {"quantization": "none"}


def references(config: SearchConfig, objectives: list[Objective]) -> dict[str, float]:
    """The worst acceptable value of each objective that has one: the config's, else the one
    the objective was declared with (``@autopeft.objective(..., reference=...)``)."""
    found = {o.name: config.reference_point.get(o.name, o.reference) for o in objectives}
    return {name: float(value) for name, value in found.items() if value is not None}
