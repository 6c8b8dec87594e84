"""Search spaces: a declarative YAML format, bound to a model's layers for the optimizers."""

from autopeft.space.dimensions import Bool, Choice, Condition, Dimension, Float, Int
from autopeft.space.parameters import AtLeast, Parameter, PerLayer, Scalar, Subset
from autopeft.space.parse import describe_presets, load_space, parse_space, presets, resolve_space_path
from autopeft.space.space import Config, SearchSpace, SpaceSpec

__all__ = [
    "AtLeast", "Bool", "Choice", "Condition", "Config", "Dimension", "Float", "Int", "Parameter",
    "PerLayer", "Scalar", "SearchSpace", "SpaceSpec", "Subset", "describe_presets", "load_space", "parse_space",
    "presets", "resolve_space_path",
]
