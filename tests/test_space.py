"""The search-space format: parsing, errors with lines, binding, sampling and encoding."""

from __future__ import annotations

import numpy as np
import pytest

from autopeft.trial.binding import get_adapter
from autopeft.errors import ConfigError, SpaceError
from autopeft.space import load_space, presets


def write(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


def test_lora_preset_binds_to_any_layer_count() -> None:
    spec = load_space("lora")
    assert "lora" in presets()
    for layers in (6, 32):
        space = spec.bind(layers)
        names = [d.name for d in space.dimensions]
        assert names.count("layers.0") == 1 and f"layers.{layers - 1}" in names
        assert f"rank.{layers - 1}" in names and f"rank.{layers}" not in names


def test_samples_are_valid_and_conditional_dimensions_follow_their_parent() -> None:
    space = load_space("lora").bind(6)
    rng = np.random.default_rng(0)
    for _ in range(200):
        config = space.sample(rng)
        assert space.is_valid(config)
        kept = [i for i in range(6) if config[f"layers.{i}"]]
        assert kept, "at least one layer is kept"
        assert {k for k in config if k.startswith("rank.")} == {f"rank.{i}" for i in kept}
        assert any(config[f"target_modules.{m}"] for m in ("attn_q", "attn_k", "attn_v", "attn_o",
                                                            "ffn_up", "ffn_down"))


def test_encoding_is_fixed_width_in_unit_cube_and_ignores_inactive_values() -> None:
    space = load_space("lora").bind(6)
    rng = np.random.default_rng(1)
    for _ in range(50):
        x = space.encode(space.sample(rng))
        assert x.shape == (space.encoded_width,)
        assert (x >= 0).all() and (x <= 1).all()
    config = space.sample(rng)
    config = {**config, "layers.0": False}
    assert space.canonical(config) == {k: v for k, v in config.items() if k != "rank.0"}


def test_neighbours_differ_in_one_choice_and_stay_valid() -> None:
    space = load_space("lora").bind(4)
    rng = np.random.default_rng(2)
    config = space.sample(rng)
    neighbours = space.neighbours(config, rng)
    assert neighbours
    assert all(space.is_valid(n) for n in neighbours)
    assert all(space.key(n) != space.key(config) for n in neighbours)


def test_assemble_gives_per_layer_lists_for_the_adapter() -> None:
    space = load_space("lora").bind(3)
    config = {"layers.0": True, "layers.1": False, "layers.2": True, "rank.0": 4, "rank.2": 16,
              "target_modules.attn_q": True, "target_modules.attn_k": False,
              "target_modules.attn_v": True, "target_modules.attn_o": False,
              "target_modules.ffn_up": False, "target_modules.ffn_down": False,
              "alpha_multiplier": 2, "learning_rate": 1e-3}
    assert space.is_valid(config)
    values = space.assemble(config)
    assert values["layers"] == [True, False, True]
    assert values["rank"] == [4, None, 16]
    assert values["target_modules"] == ["attn_q", "attn_v"]


def test_fixed_values_are_not_searched_and_must_be_allowed() -> None:
    spec = load_space("lora")
    space = spec.bind(6, fixed={"rank": 8, "learning_rate": 1e-3})
    assert not any(d.name.startswith("rank.") or d.name == "learning_rate" for d in space.dimensions)
    config = space.sample(np.random.default_rng(0))
    values = space.assemble(config)
    assert values["learning_rate"] == 1e-3
    assert all(r == 8 for r, keep in zip(values["rank"], values["layers"]) if keep)
    with pytest.raises(SpaceError, match="rank.*got 3, expected one of"):
        spec.bind(6, fixed={"rank": 3})
    with pytest.raises(SpaceError, match="7 values, the model has 6 layers"):
        spec.bind(6, fixed={"layers": [True] * 7})


@pytest.mark.parametrize("text, message, line", [
    ("adapter: lora\nparameters:\n  rank: {type: choice, values: [1, 2]\n", "malformed YAML", 4),
    ("adapter: lora\nparameters:\n  rank:\n    type: choise\n", "unknown type 'choise'", 4),
    ("adapter: lora\nparameters:\n  rank:\n    type: choice\n    vals: [1]\n", "unknown key", 5),
    ("adapter: lora\nparamters: {}\n", "unknown key", 2),
    ("adapter: lora\nparameters:\n  rank: {type: int, low: 4, high: 2}\n", "low <= high", 3),
    ("adapter: lora\nparameters:\n  rank:\n    type: choice\n    values: [2]\n    when: {layers: true}\n",
     "not a parameter defined above", 6),
])
def test_bad_space_files_name_the_problem_and_line(tmp_path, text: str, message: str, line: int) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_space(path)
    assert info.value.line == line
    assert f"{path}:{line}" in str(info.value)


def test_unknown_adapter_and_parameter_are_errors_with_lines(tmp_path) -> None:
    spec = load_space(write(tmp_path, "adapter: lorax\nparameters:\n  rank: {type: bool}\n"))
    with pytest.raises(SpaceError, match="unknown adapter 'lorax'"):
        get_adapter(spec)
    spec = load_space(write(tmp_path, "adapter: lora\nparameters:\n  layers: {type: bool}\n  heads: {type: bool}\n"))
    with pytest.raises(SpaceError, match="takes no parameter 'heads'") as info:
        get_adapter(spec)
    assert info.value.line == 4


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(SpaceError, match="unknown search space 'nope'.*lora"):
        load_space("nope")


CONSTRAINED = """adapter: lora
parameters:
  layers:
    type: per_layer
    element: {type: bool}
  rank:
    type: per_layer
    element: {type: choice, values: [2, 4, 8]}
    when: {layers: true}
  alpha_multiplier: {type: choice, values: [1, 2]}
constraints:
  - "sum(layers) >= 2"
  - "max(r for r in rank if r) <= 4 or alpha_multiplier == 1"
"""


def test_expression_constraints_hold_for_every_sample_and_neighbour(tmp_path) -> None:
    space = load_space(write(tmp_path, CONSTRAINED)).bind(4)
    rng = np.random.default_rng(0)
    for _ in range(100):
        config = space.sample(rng)
        values = space.assemble(config)
        assert sum(values["layers"]) >= 2
        assert max(r for r in values["rank"] if r) <= 4 or values["alpha_multiplier"] == 1
        assert all(space.is_valid(n) for n in space.neighbours(config, rng))


@pytest.mark.parametrize("constraint, message", [
    ("sum(layerz) >= 1", "names 'layerz', which is neither a parameter"),
    ("__import__('os')", "calls something other than"),
    ("alpha_multiplier.real > 1", "uses Attribute"),
    ("sum(layers) >=", "cannot parse"),
])
def test_bad_constraints_name_their_line(tmp_path, constraint, message) -> None:
    text = CONSTRAINED.replace('"sum(layers) >= 2"', f'"{constraint}"')
    with pytest.raises(SpaceError, match=message) as info:
        load_space(write(tmp_path, text))
    assert info.value.line == 12


def test_unsatisfiable_constraint_is_caught_before_any_trial(tmp_path) -> None:
    text = CONSTRAINED.replace('"sum(layers) >= 2"', '"sum(layers) >= 5"')
    with pytest.raises(SpaceError, match="no configuration .* meets the constraint 'sum") as info:
        load_space(write(tmp_path, text)).bind(4)
    assert info.value.line == 12


def test_derived_quantities_need_an_adapter_that_counts(tmp_path) -> None:
    text = CONSTRAINED.replace('"sum(layers) >= 2"', '"trainable_percent <= 0.1"')
    with pytest.raises(SpaceError, match="cannot compute before training"):
        load_space(write(tmp_path, text)).bind(4)
    space = load_space(write(tmp_path, text)).bind(
        4, derive=lambda v: {"trainable_percent": 0.01 * sum(r or 0 for r in v["rank"])})
    for _ in range(20):
        values = space.assemble(space.sample(np.random.default_rng(_)))
        assert 0.01 * sum(r or 0 for r in values["rank"]) <= 0.1


RANGES = """adapter: lora
parameters:
  strategy: {type: choice, values: [none, ist, increlora]}
  learning_rate:
    type: float
    low: 1.0e-4
    high: 5.0e-3
    log: true
    ranges:
      strategy:
        ist: [1.0e-3, 2.0e-2]
"""


def test_a_range_per_value_of_another_parameter(tmp_path) -> None:
    """The learning rate per strategy: IST's trials draw from [1e-3, 2e-2] in a dimension of
    their own, the others from the parameter's range; the trial sees one learning_rate."""
    space = load_space(write(tmp_path, RANGES)).bind(6)
    rng = np.random.default_rng(0)
    seen = {"ist": [], "other": []}
    for _ in range(400):
        config = space.sample(rng)
        lr = space.assemble(config)["learning_rate"]
        if config["strategy"] == "ist":
            assert set(config) == {"strategy", "learning_rate.ist"} and lr == config["learning_rate.ist"]
            seen["ist"].append(lr)
        else:
            assert set(config) == {"strategy", "learning_rate"}
            seen["other"].append(lr)
        assert space.is_valid(config)
    assert 1e-3 <= min(seen["ist"]) and max(seen["ist"]) <= 2e-2 and max(seen["ist"]) > 5e-3
    assert 1e-4 <= min(seen["other"]) < 1e-3 and max(seen["other"]) <= 5e-3
    # a configuration carrying the range of another strategy is not valid
    assert not space.is_valid({"strategy": "none", "learning_rate.ist": 1e-2})
    # a range for a value the parameter does not offer (a narrowed copy) is never active
    narrowed = load_space(write(tmp_path, RANGES.replace("[none, ist, increlora]", "[none, increlora]"))).bind(6)
    assert not any("learning_rate.ist" in narrowed.sample(rng) for _ in range(50))
    # pinned, the value holds whatever the strategy
    pinned = load_space(write(tmp_path, RANGES)).bind(6, fixed={"learning_rate": 1e-3})
    for strategy in ("none", "ist"):
        assert pinned.assemble({"strategy": strategy})["learning_rate"] == 1e-3


@pytest.mark.parametrize("ranges, message", [
    ("ranges: {rank: {2: [1.0e-3, 2.0e-2]}}", "'rank', which is not a choice or bool parameter defined above"),
    ("ranges: {strategy: {ist: [2.0e-2, 1.0e-3]}}", "the range for strategy = ist: 'low' and 'high'"),
    ("ranges: {strategy: {ist: 1.0e-3}}", r"must be \[low, high\]"),
])
def test_bad_ranges_name_the_problem(tmp_path, ranges: str, message: str) -> None:
    text = ("adapter: lora\nparameters:\n  strategy: {type: choice, values: [none, ist]}\n"
            f"  learning_rate:\n    type: float\n    low: 1.0e-4\n    high: 5.0e-3\n    log: true\n    {ranges}\n"
            "  rank: {type: choice, values: [2, 4]}\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_space(write(tmp_path, text))
    assert info.value.line == 9
