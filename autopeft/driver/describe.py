"""``autopeft space``: a search space checked against a model and described, with no training."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from typing import Any

import numpy as np

from autopeft.space import Bool, Choice, Dimension, Float, Int, Parameter, PerLayer, Scalar, SearchSpace, Subset

_INACTIVE = object()
_ENUMERATION_LIMIT = 1_000_000  # assignments tried per group of linked dimensions


def describe_space(name_or_path: str, *, model: str | None = None, num_labels: int = 2,
                   samples: int = 2000, seed: int = 0, task: str = "classification") -> str:
    """The space's parameters, the encoded width the optimizer sees, how many configurations it
    holds and the trainable-parameter range over ``samples`` sampled configurations, bound to
    ``model`` loaded as ``task`` loads it (the demo model by default; a demo task's own model),
    with a ``num_labels`` head for classification. Raises the same one-line
    errors as a search does for the same space and model."""
    from autopeft.trial.binding import get_adapter
    from autopeft.errors import ConfigError
    from autopeft.driver.inputs import check_model_reference
    from autopeft.models import model_layout
    from autopeft.trial.binding import bind_space, parameter_counter
    from autopeft.space import load_space
    from autopeft.tasks import TaskData, demo_model_path, make_task
    from autopeft.trial.run import quiet_libraries

    quiet_libraries()
    spec = load_space(name_or_path)
    builder = get_adapter(spec)
    kind = make_task(task)
    if not model and not kind.builtin_model and kind.peft_task_type != "SEQ_CLS":
        raise ConfigError(f"--model is required to describe a space for a {task} task", key="model")
    model = model or (kind.default_model() if kind.builtin_model else demo_model_path())
    check_model_reference(model)
    labels = [str(i) for i in range(num_labels)] if kind.peft_task_type == "SEQ_CLS" else []
    layout = model_layout(kind.load_model(model, TaskData(None, None, None, labels)))
    space = bind_space(spec, builder, layout)

    lines = [f"{spec.name} ({spec.source}): adapter '{spec.adapter}'" + (f" - {spec.description}" if spec.description else ""),
             f"model {model}: {layout.num_layers} layers, {layout.num_parameters:,} parameters"
             + (f" with a {num_labels}-label head" if labels else f" ({task})"), "", "parameters:"]
    width = max(len(p) for p in spec.parameters)
    lines += [f"  {name:<{width}}  {describe_parameter(p, layout.num_layers)}" for name, p in spec.parameters.items()]
    lines += [f"  constraint: {e.describe()}" for e in spec.constraints]
    lines += ["", f"dimensions: {len(space.dimensions)}; encoded width the optimizer sees: {space.encoded_width}",
              f"configurations: {count_configurations(space)}"]
    counter = parameter_counter(builder, layout)
    lines.append(f"trainable parameters: {_count_range(space, counter, layout.num_parameters, samples, seed)}")
    return "\n".join(lines)


def describe_parameter(param: Parameter, num_layers: int) -> str:
    """``per layer (6): choice of [2, 4, 8, 16] when layers = True``, and the like."""
    if isinstance(param, Subset):
        text = f"subset of {list(param.values)} (at least {param.min_size})"
    elif isinstance(param, PerLayer):
        text = f"per layer ({num_layers}): {_describe_dimension(param.element)}"
        if param.min_selected:
            text += f", at least {param.min_selected} selected"
    else:
        assert isinstance(param, Scalar)
        text = _describe_dimension(param.dimension)
        if param.ranges:
            text += "; " + ", ".join(f"[{d.low:g}, {d.high:g}] when {param.ranges_by} = {v}" for v, d in param.ranges)
    if param.when:
        text += " when " + " and ".join(f"{n} in {list(v)}" if len(v) > 1 else f"{n} = {v[0]}" for n, v in param.when)
    return text


def _describe_dimension(dim: Dimension) -> str:
    if isinstance(dim, Bool):
        return "bool"
    if isinstance(dim, Choice):
        return f"choice of {list(dim.values)}"
    kind = "int" if isinstance(dim, Int) else "float"
    return f"{kind} in [{dim.low:g}, {dim.high:g}]" + (", log scale" if dim.log else "")


def count_configurations(space: SearchSpace) -> str:
    """How many distinct configurations the dimensions allow, inactive ones counted once:
    exact per group of dimensions linked by ``when`` conditions (per-layer bits and their
    ranks, a strategy and its knobs), multiplied over groups. Constraints (``min_selected``,
    expressions) and continuous dimensions are said, not counted."""
    groups = _linked_groups(space.dimensions)
    continuous = [d.name for d in space.dimensions if isinstance(d, Float)]
    log10, exact = 0.0, True
    for group in groups:
        discrete = [d for d in group if not isinstance(d, Float)]
        n, group_exact = _count_group(discrete)
        log10 += math.log10(n)
        exact &= group_exact
    number = f"{10 ** log10:,.0f}" if log10 < 7 else f"about 10^{log10:.1f}"
    text = number if exact else f"at most {number}"
    notes = []
    if continuous:
        notes.append(f"for each value of the continuous {', '.join(sorted(_base_names(continuous)))}")
    if space.constraints or space.spec.constraints:
        notes.append("before the space's constraints")
    return text + (f" ({'; '.join(notes)})" if notes else "")


def _base_names(names: list[str]) -> set[str]:
    return {n.split("[")[0].split(".")[0] for n in names}


def _linked_groups(dims: list[Dimension]) -> list[list[Dimension]]:
    """Dimensions joined when one's condition names the other (union-find over names)."""
    parent = {d.name: d.name for d in dims}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for d in dims:
        for name, _ in d.condition.clauses if d.condition else ():
            if name in parent:
                parent[find(d.name)] = find(name)
    groups: dict[str, list[Dimension]] = defaultdict(list)
    for d in dims:
        groups[find(d.name)].append(d)
    return list(groups.values())


def _values(dim: Dimension) -> list[Any]:
    if isinstance(dim, Bool):
        return [False, True]
    if isinstance(dim, Choice):
        return list(dim.values)
    assert isinstance(dim, Int)
    return list(range(dim.low, dim.high + 1))


def _count_group(dims: list[Dimension]) -> tuple[int, bool]:
    """(count, exact). The dimensions that conditions name (a strategy, a layer's keep bit)
    are enumerated; for each consistent assignment of them every other dimension multiplies
    the count by its number of values where active, by one where not. Exact unless the named
    dimensions alone have too many assignments (then the product bound)."""
    named = {name for d in dims if d.condition for name, _ in d.condition.clauses}
    controllers = [d for d in dims if d.name in named]
    leaves = [d for d in dims if d.name not in named]
    options = [_values(d) + ([_INACTIVE] if d.condition else []) for d in controllers]
    if math.prod(len(o) for o in options) > _ENUMERATION_LIMIT:
        return math.prod(len(o) for o in options) * math.prod(len(_values(d)) + 1 for d in leaves), False
    count = 0
    for combo in itertools.product(*options):
        config = {d.name: v for d, v in zip(controllers, combo, strict=True) if v is not _INACTIVE}
        if all((d.condition is None or d.condition.holds(config)) == (v is not _INACTIVE)
               for d, v in zip(controllers, combo, strict=True)):
            count += math.prod(len(_values(d)) if d.condition is None or d.condition.holds(config) else 1
                               for d in leaves)
    return max(count, 1), True


def _count_range(space: SearchSpace, counter: Any, base: int, samples: int, seed: int) -> str:
    if counter is None:
        return "not known without building each model (this adapter does not count analytically)"
    rng = np.random.default_rng(seed)
    counts, unknown = [], 0
    for _ in range(samples):
        derived = counter(space.assemble(space.sample(rng)))
        if "trainable_params" in derived:
            counts.append(derived["trainable_params"])
        else:
            unknown += 1
    if not counts:
        return ("not known before training for any sampled configuration (a strategy that prunes or "
                "grows, or a method counted only once built)")
    low, high = min(counts), max(counts)
    text = (f"{low:,} to {high:,} ({100 * low / base:.3g}% to {100 * high / base:.3g}% of the base model), "
            f"head included, over {samples} sampled configurations")
    if unknown:
        text += (f"; {unknown} of them are not counted (a strategy that prunes or grows decides it while "
                 f"training, or the method is counted only once built)")
    return text
