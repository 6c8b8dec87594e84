"""The CLI's own surface: flags made from the config fields, looking at spaces before a
search, and exit codes."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autopeft import cli
from autopeft.config import SECTIONS, SearchConfig, load_config
from autopeft.driver.describe import count_configurations
from autopeft.space import load_space, presets


def config_fields():
    for f in dataclasses.fields(SearchConfig):
        if f.name in SECTIONS:
            yield from ((f"{f.name}.{g.name}", g) for g in dataclasses.fields(SECTIONS[f.name]))
        elif f.metadata.get("cli", True):
            yield f.name, f


def test_every_config_field_is_a_flag_with_the_fields_help() -> None:
    search = cli.build_parser()._subparsers._group_actions[0].choices["search"]
    by_dest = {a.dest: a for a in search._actions}
    for dest, f in config_fields():
        assert dest in by_dest, f"no flag for {dest}"
        assert by_dest[dest].help.startswith(f.metadata["help"]), dest
    args = search.parse_args(["--max-train-examples", "5", "--objective", "a", "--objective", "b",
                              "--label-column", "y"])
    assert (getattr(args, "fidelity.max_train_examples"), args.objectives, getattr(args, "data.label_column")) \
        == (5, ["a", "b"], "y")


def test_spaces_lists_every_preset_with_its_description(capsys) -> None:
    assert cli.main(["spaces"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == presets()
    assert all(len(line.split()) > 3 for line in lines)  # name, adapter and a description


def test_space_describes_a_preset_for_a_model_without_training(tiny_model_dir, capsys) -> None:
    assert cli.main(["space", "lora", "--model", str(tiny_model_dir), "--samples", "300"]) == 0
    out = capsys.readouterr().out
    assert "4 layers" in out
    assert "encoded width the optimizer sees: 16" in out  # 4 keep bits, 4 ranks, 6 modules, alpha, lr
    assert "configurations: 160,000 (for each value of the continuous learning_rate" in out  # 5^4 x 2^6 x 4
    low, high = (int(x.replace(",", "")) for x in re.search(r"trainable parameters: ([\d,]+) to ([\d,]+)", out).groups())
    assert 0 < low < high


def test_space_with_a_forbidden_value_fails_as_a_search_would(tmp_path, capsys) -> None:
    space = tmp_path / "bad.yaml"
    space.write_text("adapter: lora\nparameters:\n  rank:\n    type: choice\n    values: [0, 8]\n")
    assert cli.main(["space", str(space)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{space}:3" in err and "value 0 is not allowed" in err


def test_the_count_of_configurations_is_exact(tmp_path) -> None:
    space_file = tmp_path / "small.yaml"
    space_file.write_text("adapter: lora\nparameters:\n"
                          "  layers: {type: per_layer, element: {type: bool}}\n"
                          "  rank: {type: per_layer, element: {type: choice, values: [2, 4]}, when: {layers: true}}\n"
                          "  alpha_multiplier: {type: choice, values: [1, 2]}\n")
    space = load_space(str(space_file)).bind(3)
    rng = np.random.default_rng(0)
    seen = {space.key(space.sample(rng)) for _ in range(5000)}
    assert len(seen) == 3 ** 3 * 2  # each layer: off, or on with one of two ranks
    assert count_configurations(space) == f"{len(seen)}"


def test_a_crash_has_its_own_exit_code_and_keeps_the_traceback(monkeypatch, capsys) -> None:
    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setitem(cli.HANDLERS, "spaces", broken)
    assert cli.main(["spaces"]) == cli.EXIT_CRASH == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug" in err and "crashed" in err


@pytest.mark.parametrize("argv", [["--help"], ["search", "--help"]])
def test_help_exits_zero(argv, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 0 and "usage: autopeft" in capsys.readouterr().out


def test_input_checks_import_no_heavy_library(tmp_path) -> None:
    """What keeps ``--help`` and input errors fast (timed in benchmarks/cli_startup.py)."""
    code = ("import sys\nfrom autopeft.cli import main\ncode = main(['search', '--optimizer', 'nope'])\n"
            "heavy = [m for m in ('torch', 'ray', 'mlflow', 'botorch', 'transformers', 'peft', 'datasets') "
            "if m in sys.modules]\nprint(code, heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.stdout.strip() == "2 []", done.stdout + done.stderr
    assert "unknown optimizer 'nope'" in done.stderr


def test_public_names_stay_what_they_are_after_their_modules_load() -> None:
    """``autopeft.search`` is the function even once the module that defines it is imported
    (a submodule of the same name would replace the lazily loaded attribute)."""
    import autopeft
    import autopeft.driver.drive  # noqa: F401
    import autopeft.trial.loading  # noqa: F401
    import autopeft.objectives  # noqa: F401

    assert callable(autopeft.search) and autopeft.search.__module__ == "autopeft.driver.drive"
    assert callable(autopeft.objective) and callable(autopeft.load_adapter)
    assert set(autopeft.__all__) <= set(dir(autopeft))


@pytest.mark.parametrize("name", ["demo.yaml", "search.yaml"])
def test_the_example_configs_pass_the_input_checks(name) -> None:
    from autopeft.driver.inputs import check_inputs

    root = Path(__file__).resolve().parents[1]
    config = load_config(str(root / "examples" / name), {})
    if not Path(config.space).is_absolute() and config.space.endswith(".yaml"):
        config.space = str(root / config.space)  # `make demo` runs from the checkout's root
    check_inputs(config)
