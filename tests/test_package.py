"""autopeft as users install it: the built wheel in a fresh environment, used from an empty
folder; plugins from other installed packages, found by entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

from autopeft.errors import PluginError
from autopeft.objectives import Objective, objective
from autopeft.plugins import Registry, instance_of

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--trials", "1", "--max-train-examples", "16", "--max-eval-examples", "16", "--max-length", "16",
        "--batch-size", "8", "--quiet", "--no-learned-only"]


#: `autopeft space PRESET` for each preset named in argv, in one process: {preset: [exit code, output]}
SPACES_IN_ONE_PROCESS = """
import contextlib, io, json, sys
from autopeft.cli import main
shown = {}
for preset in sys.argv[1:]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["space", preset, *(["--task", "demo-lm"] if preset == "lora_llm" else [])])
    shown[preset] = [code, out.getvalue()]
print(json.dumps(shown))
"""


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_the_package_list_names_every_package() -> None:
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {p for p in find_packages(str(ROOT)) if p.startswith("autopeft")}
    assert found <= declared, f"add {sorted(found - declared)} to [tool.setuptools] packages"


def test_a_name_taken_twice_names_both_sources() -> None:
    registry: Registry[Objective] = Registry("objectives", check=instance_of(Objective), error=PluginError,
                                             key="objective")
    first, second = objective("maximize")(lambda t: 1.0), objective("maximize")(lambda t: 2.0)
    registry.register("score", first, "package-a (a:score)")
    registry.register("score", first, "package-a (a:score)")  # the same object again is fine
    with pytest.raises(PluginError, match=r"'score' is registered twice: by package-a \(a:score\) "
                                          r"and by package-b \(b:score\)"):
        registry.register("score", second, "package-b (b:score)")
    with pytest.raises(PluginError, match="is not usable"):
        registry.register("other", "not an objective", "package-c")


PLUGIN = '''
"""A third party's objective and optimizer for autopeft."""
import numpy as np

import autopeft
from autopeft.optimizers.base import Optimizer, sample_unseen


@autopeft.objective("maximize")
def doubled_accuracy(trial):
    return 2 * trial.metrics["accuracy"]


class CountingRandom(Optimizer):
    """Uniform proposals; every configuration it proposes carries its count in a log line."""

    def __init__(self, space, directions, *, seed=0, reference_point=None, **options):
        super().__init__(space, directions, seed=seed, reference_point=reference_point)
        self.rng = np.random.default_rng(seed)
        self.asked = set()

    def ask(self):
        config = sample_unseen(self.space, self.rng, self.asked)
        self.asked.add(self.space.key(config))
        print(f"counting_random ask {len(self.asked)}", flush=True)
        return config

    def tell(self, config, values, metrics=None):
        pass
'''


def make_plugin(root: Path, name: str, entry_points: dict[str, dict[str, str]]) -> Path:
    source = root / name
    source.mkdir()
    (source / f"{name}.py").write_text(PLUGIN)
    groups = "\n".join(f'[project.entry-points."{group}"]\n' + "\n".join(f'{k} = "{v}"' for k, v in points.items())
                       for group, points in entry_points.items())
    (source / "pyproject.toml").write_text(textwrap.dedent(f'''\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name.replace('_', '-')}"
        version = "0.1"

        [tool.setuptools]
        py-modules = ["{name}"]

        ''') + groups + "\n")
    return source


@pytest.mark.slow
def test_the_wheel_and_plugin_packages_installed_in_a_fresh_environment_work_from_an_empty_folder(tmp_path) -> None:
    # Built from a copy of what the build reads, so that setuptools' build/ stays out of the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("autopeft", "search_spaces", "objectives"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", str(venv)], tmp_path).returncode == 0
    python = venv / "bin" / "python"
    # The dependencies: this environment's, by a path entry (no network here). Its own .pth
    # files, the editable checkout's among them, are not read through such an entry.
    purelib = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       tmp_path).stdout.strip())
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    def install(source: Path, name: str) -> None:
        """Build ``source`` into a wheel here (the fresh venv's setuptools has no wheel) and
        install the wheel of distribution ``name`` into the venv."""
        wheels = tmp_path / "wheels"
        done = run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
                    "--wheel-dir", str(wheels), str(source)], tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        wheel = next(wheels.glob(f"{name}-*.whl"))
        done = run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)], tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]

    install(source, "autopeft")

    empty = tmp_path / "empty"
    empty.mkdir()
    autopeft = str(venv / "bin" / "autopeft")
    where = run([str(python), "-c", "import autopeft.space.parse as p, autopeft; print(autopeft.__file__); "
                 "print(p.PRESET_DIR)"], empty).stdout.split()
    assert all(path.startswith(str(venv)) for path in where), where  # the wheel, not the checkout
    listed = run([autopeft, "spaces"], empty)
    presets = sorted(p.stem for p in (ROOT / "search_spaces").glob("*.yaml"))
    assert listed.returncode == 0 and [line.split()[0] for line in listed.stdout.splitlines()] == presets
    # Every preset is read from the wheel and bound to its demo model (lora_llm to SmolLM2 from
    # its GGUF file), by the wheel's `autopeft space` in one process (a process per preset cost a
    # start-up each); test_presets_e2e.py runs a whole search on each from the checkout.
    shown = json.loads(run([str(python), "-c", SPACES_IN_ONE_PROCESS, *presets], empty).stdout)
    for preset in presets:
        code, out = shown[preset]
        # The header names the file the preset was read from; a note may come first (SmolLM2's
        # GGUF file converted to a checkpoint, once per machine).
        header = next((line for line in out.splitlines() if line.startswith(f"{preset} (")), "")
        assert code == 0 and str(venv) in header, f"{preset}: {out[-2000:]}"
        assert "configurations:" in out and "trainable parameters:" in out, preset
    # A search from the wheel alone, with the plugin objective the wheel registers by entry point
    # (macro_f1) and a third party's objective and optimizer, installed as a package beside it.
    # (One search for both: a search of its own for the plugins cost 35 s of CI.)
    install(make_plugin(tmp_path, "autopeft_toy", {
        "autopeft.objectives": {"doubled_accuracy": "autopeft_toy:doubled_accuracy"},
        "autopeft.optimizers": {"counting_random": "autopeft_toy:CountingRandom"}}), "autopeft_toy")
    done = run([autopeft, "search", "--task", "demo", "--space", "lora", "--output-dir", "runs",
                "--optimizer", "counting_random", "--objective", "doubled_accuracy", "--objective", "macro_f1",
                "--objective", "trainable_percent", *TINY], empty)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Pareto front (1 of 1 trials, 0 failed" in done.stdout
    assert "counting_random ask 1" in done.stdout + done.stderr
    rows = json.loads(run([autopeft, "front", "--format", "json", "--output-dir", "runs"], empty).stdout)
    assert rows and "macro_f1" in rows[0] and "test_macro_f1" in rows[0]
    assert rows[0]["doubled_accuracy"] == pytest.approx(2 * rows[0]["dev_accuracy"])
    assert sorted(p.name for p in empty.iterdir()) == ["runs"]

    # A second package that takes a name autopeft already ships: one line naming both.
    install(make_plugin(tmp_path, "autopeft_clash", {"autopeft.objectives": {"macro_f1": "autopeft_clash:doubled_accuracy"}}),
            "autopeft_clash")
    done = run([autopeft, "search", "--objective", "macro_f1", "--objective", "trainable_percent", *TINY], empty)
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1 and "'macro_f1' is registered twice" in line
    assert "autopeft (autopeft.objective_plugins.macro_f1:macro_f1)" in line and "autopeft-clash" in line
