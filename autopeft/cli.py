"""The ``autopeft`` command: ``search``, ``front`` and ``ui``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from autopeft.config import DEFAULT_DIR, SearchConfig, load_config
from autopeft.errors import AutopeftError

EXIT_BAD_INPUT = 2


def _search_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="run a search and print its Pareto front",
                       description="Search PEFT configurations; flags override the --config file.")
    p.add_argument("--config", help="YAML file with any of the settings below")
    p.add_argument("--model", help="local model folder or hub id (default: the demo model)")
    p.add_argument("--task", help="'demo' (default) or 'classification' for your own data")
    d = p.add_argument_group("data (for --task classification)")
    for flag in ("train-file", "dev-file", "test-file", "text-column", "text-pair-column", "label-column"):
        d.add_argument(f"--{flag}", dest=f"data.{flag.replace('-', '_')}")
    p.add_argument("--space", help="search space: a preset in search_spaces/ or a YAML path (default: lora)")
    p.add_argument("--objective", action="append", dest="objectives",
                   help="built-in objective or FILE.py:FUNCTION; repeat for several "
                        "(default: accuracy and trainable_percent)")
    p.add_argument("--optimizer", help="mobo (default), random, tpe or nsga2")
    p.add_argument("--trials", type=int)
    p.add_argument("--concurrency", type=int, help="trials at once (CPUs and GPUs are split evenly)")
    f = p.add_argument_group("fidelity (how cheaply each trial trains)")
    for flag in ("max-train-examples", "epochs", "max-steps", "max-length", "batch-size", "max-eval-examples"):
        f.add_argument(f"--{flag}", type=int, dest=f"fidelity.{flag.replace('-', '_')}")
    p.add_argument("--seed", type=int)
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite in autopeft-runs/)")
    p.add_argument("--experiment", help="MLflow experiment name (default: autopeft)")
    p.add_argument("--ray-address", help="address of an existing Ray cluster (default: a local Ray)")
    p.add_argument("--output-dir", help=f"where local runs go (default: {DEFAULT_DIR})")
    p.add_argument("--quiet", action="store_true", help="no progress line")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autopeft", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _search_parser(sub)
    front = sub.add_parser("front", help="print the Pareto front of the latest search in MLflow")
    front.add_argument("--tracking-uri")
    front.add_argument("--experiment", default="autopeft")
    front.add_argument("--output-dir", default=str(DEFAULT_DIR))
    ui = sub.add_parser("ui", help="open the MLflow UI on the search store")
    ui.add_argument("--tracking-uri")
    ui.add_argument("--output-dir", default=str(DEFAULT_DIR))
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    return parser


def _tracking_uri(args: argparse.Namespace) -> str:
    return SearchConfig(tracking_uri=args.tracking_uri, output_dir=args.output_dir).resolved_tracking_uri


def cmd_search(args: argparse.Namespace) -> int:
    from autopeft.search import run_search  # heavy imports only for the commands that need them

    overrides = {k: v for k, v in vars(args).items() if k not in {"command", "config", "quiet"}}
    config = load_config(args.config, overrides)
    result = run_search(config, progress=not args.quiet)
    failed = [t for t in result.trials if t.status != "completed"]
    infeasible = [t for t in result.trials if t.status == "completed" and not t.feasible]
    print(f"\nPareto front ({len(result.front)} of {len(result.trials)} trials, {len(failed)} failed"
          f"{f', {len(infeasible)} outside the outcome constraints' if infeasible else ''}, "
          f"{result.seconds:.0f}s):\n")
    print(result)
    print(f"\nMLflow run {result.run_id} in {result.tracking_uri}")
    print(f"artifacts (pareto_front.csv/.png/.html, adapters/): {result.artifact_uri}")
    if not result.front and infeasible:  # any feasible completed trial would be on the front
        print("autopeft: no completed trial met the outcome constraints", file=sys.stderr)
        return 1
    if not result.front:
        first = failed[0].error if failed else "no trial ran"
        print(f"autopeft: every trial failed; the first error was: {first}", file=sys.stderr)
        return 1
    return 0


def cmd_front(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from autopeft.records import ObjectiveInfo, TrialRecord, front_of, parse_param
    from autopeft.report import format_front
    from autopeft.tracking import FEASIBLE, ROLE, STATUS, latest_search

    client = MlflowClient(tracking_uri=_tracking_uri(args))
    parent, children = latest_search(client, args.experiment)
    if parent is None:
        raise AutopeftError(f"no search found in experiment '{args.experiment}'", source=_tracking_uri(args))
    objectives = [ObjectiveInfo(n, d) for n, d in json.loads(parent.data.tags["autopeft.objectives"])]
    records = []
    for run in children:
        if run.data.tags.get(ROLE) != "trial":
            continue
        metrics = run.data.metrics
        status = run.data.tags.get(STATUS, "running")
        if status == "completed" and not all(o.name in metrics for o in objectives):
            status = "failed"
        records.append(TrialRecord(
            int(run.data.tags.get("autopeft.trial_number", 0)), run.info.run_id,
            {k: parse_param(v) for k, v in run.data.params.items()},
            status=status, objectives={o.name: metrics[o.name] for o in objectives if o.name in metrics},
            test_metrics={k[5:]: v for k, v in metrics.items() if k.startswith("test_")},
            feasible=run.data.tags.get(FEASIBLE) != "false"))
    front = front_of(records, objectives)
    state = parent.data.tags.get(STATUS, "running")
    print(f"search {parent.info.run_name} ({state}): {len(records)} trials, "
          f"{sum(r.status == 'completed' for r in records)} completed, front of {len(front)}\n")
    print(format_front(front, objectives))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", _tracking_uri(args),
               "--host", args.host, "--port", str(args.port), "--workers", "1"]
    artifacts = Path(args.output_dir) / "artifacts"
    if not args.tracking_uri and artifacts.exists():
        command += ["--default-artifact-root", artifacts.resolve().as_uri()]
    print(f"MLflow UI on http://{args.host}:{args.port} (Ctrl-C to stop)", file=sys.stderr)
    return subprocess.call(command, env=env)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"search": cmd_search, "front": cmd_front, "ui": cmd_ui}
    try:
        return handlers[args.command](args)
    except AutopeftError as err:
        print(f"autopeft: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\nautopeft: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
