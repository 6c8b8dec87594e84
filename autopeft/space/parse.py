"""Reading search-space YAML files (and the presets shipped in ``search_spaces/``)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from autopeft._yaml import LineDict, load_yaml
from autopeft.errors import SpaceError
from autopeft.space.constraints import compile_expression
from autopeft.space.dimensions import Bool, Choice, Dimension, Float, Int
from autopeft.space.parameters import Parameter, PerLayer, Scalar, Subset
from autopeft.space.space import SpaceSpec

#: the presets: ``search_spaces/`` in the source tree, installed as the package ``autopeft.search_spaces``
PRESET_DIR = Path(str(files("autopeft.search_spaces")))

_TOP_KEYS = {"name", "description", "adapter", "parameters", "constraints"}
_PARAM_KEYS = {
    "bool": {"type", "description", "when"},
    "choice": {"type", "description", "when", "values", "encoding"},
    "int": {"type", "description", "when", "low", "high", "log", "ranges"},
    "float": {"type", "description", "when", "low", "high", "log", "ranges"},
    "subset": {"type", "description", "when", "values", "min_size"},
    "per_layer": {"type", "description", "when", "element", "min_selected"},
}


def presets() -> list[str]:
    """Names of the search spaces shipped in ``search_spaces/``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def describe_presets() -> str:
    """One line per preset: its name, adapter and description."""
    lines = []
    for name in presets():
        data = load_yaml(PRESET_DIR / f"{name}.yaml")
        lines.append(f"{name:<16} {data.get('adapter', '?'):<6} {data.get('description', '')}")
    return "\n".join(lines)


def resolve_space_path(name_or_path: str) -> Path:
    """A preset name (``lora``) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.is_file():
            raise SpaceError("search-space file not found", source=str(path))
        return path
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if not preset.is_file():
        raise SpaceError(f"unknown search space '{name_or_path}'; presets are {presets()} "
                         f"or give a path to a YAML file", key="space")
    return preset


def load_space(name_or_path: str) -> SpaceSpec:
    """Parse a search-space file; errors name the file, key and line."""
    path = resolve_space_path(name_or_path)
    return parse_space(load_yaml(path), source=str(path), default_name=path.stem)


def parse_space(data: LineDict, source: str | None = None, default_name: str = "custom") -> SpaceSpec:
    def fail(message: str, key: str | None = None, line: int | None = None) -> SpaceError:
        return SpaceError(message, source=source, key=key, line=line)

    unknown = set(data) - _TOP_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise fail(f"unknown key; allowed are {sorted(_TOP_KEYS)}", key, data.line_of(key))
    for required in ("adapter", "parameters"):
        if required not in data:
            raise fail("missing required key", required, 1)
    params_data = data["parameters"]
    if not isinstance(params_data, dict) or not params_data:
        raise fail("expected a non-empty mapping of parameters", "parameters", data.line_of("parameters"))

    parameters: dict[str, Parameter] = {}
    for name, body in params_data.items():
        line = params_data.line_of(name)
        parameters[name] = _parse_parameter(str(name), body, line, parameters, fail)
    constraints = data.get("constraints", [])
    if not isinstance(constraints, list):
        raise fail("expected a list of expressions", "constraints", data.line_of("constraints"))
    lines = getattr(constraints, "lines", [data.line_of("constraints")] * len(constraints))
    expressions = tuple(compile_expression(text, set(parameters), source, line)
                        for text, line in zip(constraints, lines, strict=True))
    return SpaceSpec(adapter=str(data["adapter"]), parameters=parameters,
                     name=str(data.get("name", default_name)), source=source,
                     description=str(data.get("description", "")), constraints=expressions)


def _parse_parameter(name: str, body: Any, line: int | None, earlier: dict[str, Parameter],
                     fail) -> Parameter:
    if not isinstance(body, dict) or "type" not in body:
        raise fail("expected a mapping with a 'type'", f"parameters.{name}", line)
    kind = body["type"]
    if kind not in _PARAM_KEYS:
        raise fail(f"unknown type '{kind}'; expected one of {sorted(_PARAM_KEYS)}",
                   f"parameters.{name}.type", body.line_of("type"))
    unknown = set(body) - _PARAM_KEYS[kind]
    if unknown:
        key = sorted(unknown)[0]
        raise fail(f"unknown key for a {kind} parameter; allowed are {sorted(_PARAM_KEYS[kind])}",
                   f"parameters.{name}.{key}", body.line_of(key))
    when = _parse_when(name, body, earlier, fail)
    try:
        if kind == "per_layer":
            element = body.get("element")
            if not isinstance(element, dict) or element.get("type") not in {"bool", "choice", "int", "float"}:
                raise ValueError("'element' must be a bool, choice, int or float parameter")
            sub = _parse_parameter(name, element, element.line_of("type"), earlier, fail)
            min_selected = int(body.get("min_selected", 0))
            if min_selected and not isinstance(sub.dimension, Bool):
                raise ValueError("'min_selected' applies to per-layer bool vectors only")
            return PerLayer(name, element=sub.dimension, min_selected=min_selected, when=when, line=line)
        if kind == "subset":
            values = body.get("values")
            if not isinstance(values, list) or not values or len(set(map(str, values))) != len(values):
                raise ValueError("'values' must be a non-empty list of distinct names")
            return Subset(name, values=tuple(map(str, values)), min_size=int(body.get("min_size", 1)),
                          when=when, line=line)
        dimension = _parse_dimension(kind, body)
    except (ValueError, TypeError) as err:
        raise fail(str(err), f"parameters.{name}", line) from None
    by, ranges = _parse_ranges(name, kind, body, earlier, fail)
    return Scalar(name, dimension=dimension, when=when, line=line, ranges_by=by, ranges=ranges)


def _parse_ranges(name: str, kind: str, body: dict, earlier: dict[str, Parameter], fail) -> tuple:
    """``ranges: {strategy: {ist: [1e-3, 2e-2]}}``: another range while ``strategy`` is ``ist``."""
    if "ranges" not in body:
        return None, ()
    key, line = f"parameters.{name}.ranges", body.line_of("ranges")
    ranges = body["ranges"]
    if not isinstance(ranges, dict) or len(ranges) != 1:
        raise fail("'ranges' must map one earlier parameter to {value: [low, high]}", key, line)
    (by, table), = ranges.items()
    ref = earlier.get(by)
    if not isinstance(ref, Scalar) or not isinstance(ref.dimension, (Choice, Bool)) or ref.ranges:
        raise fail(f"'ranges' names '{by}', which is not a choice or bool parameter defined above it", key, line)
    if not isinstance(table, dict) or not table:
        raise fail(f"'ranges.{by}' must map values of '{by}' to [low, high]", key, line)
    out = []
    for value, bounds in table.items():
        # A value the parameter does not offer (a narrowed copy of a preset) is accepted: its
        # range is never active, as a 'when' on such a value is.
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise fail(f"the range for {by} = {value} must be [low, high]", key, line)
        try:
            out.append((value, _parse_dimension(kind, {"low": bounds[0], "high": bounds[1],
                                                      "log": body.get("log", False)})))
        except ValueError as err:
            raise fail(f"the range for {by} = {value}: {err}", key, line) from None
    return by, tuple(out)


def _parse_dimension(kind: str, body: dict) -> Dimension:
    if kind == "bool":
        return Bool("")
    if kind == "choice":
        values = body.get("values")
        if not isinstance(values, list) or not values:
            raise ValueError("'values' must be a non-empty list")
        if any(isinstance(v, (list, dict)) for v in values) or len(set(values)) != len(values):
            raise ValueError("'values' must be distinct scalars")
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        encoding = body.get("encoding", "ordinal" if numeric else "onehot")
        if encoding not in {"ordinal", "onehot"}:
            raise ValueError(f"'encoding' must be ordinal or onehot, got {encoding!r}")
        if numeric and encoding == "ordinal":
            values = sorted(values)
        return Choice("", values=tuple(values), encoding=encoding)
    low, high, log = body.get("low"), body.get("high"), bool(body.get("log", False))
    if kind == "int":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)) or low > high:
            raise ValueError("'low' and 'high' must be integers with low <= high")
        if log and low < 1:
            raise ValueError("a log-scale int needs low >= 1")
        return Int("", low=low, high=high, log=log)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low >= high:
        raise ValueError("'low' and 'high' must be numbers with low < high")
    if log and low <= 0:
        raise ValueError("a log-scale float needs low > 0")
    return Float("", low=float(low), high=float(high), log=log)


def _parse_when(name: str, body: dict, earlier: dict[str, Parameter], fail) -> tuple:
    """``when: {a: x, b: [y, z]}``: active while a == x and b is y or z."""
    when = body.get("when")
    if when is None:
        return ()
    line = body.line_of("when")
    if not isinstance(when, dict) or not when:
        raise fail("'when' must map earlier parameters to their value(s)", f"parameters.{name}.when", line)
    clauses = []
    for ref, values in when.items():
        if ref not in earlier:
            raise fail(f"'when' names '{ref}', which is not a parameter defined above it",
                       f"parameters.{name}.when", line)
        clauses.append((ref, tuple(values) if isinstance(values, list) else (values,)))
    return tuple(clauses)
