"""How long the ``autopeft`` command takes to answer before any work: ``--help``, an input
error, and ``import autopeft``. The target: under 1.5 s on the project's 2-core machine.

    .venv/bin/python benchmarks/cli_startup.py [--repeats 5]

Each command runs in a fresh interpreter (``sys.executable -m autopeft.cli``: the same code
the installed ``autopeft`` script calls); the table gives the median and the worst wall time.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "autopeft --help": ["--help"],
    "autopeft search --help": ["search", "--help"],
    "input error (unknown space)": ["search", "--space", "no_such_space", "--trials", "1"],
    "input error (trials 0)": ["search", "--trials", "0"],
    "input error (unknown optimizer)": ["search", "--optimizer", "no_such_optimizer"],
    "input error (missing data file)": ["search", "--train-file", "no_such.csv", "--text-column", "t",
                                        "--label-column", "l", "--model", "."],
}


def wall(args: list[str], cwd: str) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, capture_output=True)
    return time.perf_counter() - start, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    runs = {name: [sys.executable, "-m", "autopeft.cli", *argv] for name, argv in COMMANDS.items()}
    runs["python -c 'import autopeft'"] = [sys.executable, "-c", "import autopeft"]
    print(f"| command | exit | median s | worst s |  ({args.repeats} runs each)\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as cwd:  # no autopeft-runs/ left behind
        for name, command in runs.items():
            times, code = [], 0
            for _ in range(args.repeats):
                seconds, code = wall(command, cwd)
                times.append(seconds)
            print(f"| {name} | {code} | {statistics.median(times):.2f} | {max(times):.2f} |", flush=True)


if __name__ == "__main__":
    main()
