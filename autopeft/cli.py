"""The ``autopeft`` command: ``search``, ``front``, ``trials``, ``evaluate``, ``export``,
``spaces``, ``space`` and ``ui``.

Exit codes: 0 done; 1 a search finished without a feasible trial (every trial failed, none
learned more than the task's trivial score, or none met the outcome constraints); 2 bad input (a one-line message names the problem and
its place); 3 a crash (a bug: the traceback is printed); 130 interrupted.

Only the standard library and the config module load before a command runs: ``--help`` and
input errors answer at once, and each command imports what it uses.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

from autopeft.config import DEFAULT_DIR, SECTIONS, Fidelity, SearchConfig, load_config
from autopeft.errors import AutopeftError

BASELINES_HELP = ("also train standard hand-made configurations alike and show them with the front: those "
                  "named, or all (full_finetuning, lora_r8_qv, lora_r8_all_linear, bottleneck, ia3) with "
                  "no name")
EXIT_OK, EXIT_NO_FEASIBLE, EXIT_BAD_INPUT, EXIT_CRASH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
FORMATS = ("table", "json", "csv")


def add_config_flags(parser: argparse.ArgumentParser, cls: type, prefix: str = "", defaults: bool = True) -> None:
    """One flag per field of ``cls`` (nested config classes as their own groups), with the
    field's help; the destination is the field's dotted path in :class:`SearchConfig`."""
    titles = {"data": "data (your own; the task is then classification unless --task says otherwise)",
              "fidelity": "fidelity (how cheaply each trial trains)",
              "early_stopping": "early stopping (which trials stop before their end)",
              "limits": "limits (time, failures, resources per trial)"}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if f.name in SECTIONS and not prefix:
            add_config_flags(parser.add_argument_group(titles[f.name]), SECTIONS[f.name], f"{f.name}.")
            continue
        if meta.get("cli", True) is False:
            continue
        flag = "--" + meta.get("flag", f.name).replace("_", "-")
        kind = str(f.type)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = "" if default in (None, [], {}) or not defaults else f" (default: {default})"
        if meta.get("nargs"):  # a list given at once; the flag alone means "all"
            parser.add_argument(flag, dest=prefix + f.name, nargs=meta["nargs"], metavar="NAME",
                                type=lambda text: text, help=meta["help"])
        elif kind.startswith("list"):
            parser.add_argument(flag, dest=prefix + f.name, action="append", metavar="NAME",
                                help=meta["help"] + (f" (default: {', '.join(default)})" if default else ""))
        elif kind.startswith("bool"):  # None unless given, so that a config file's value stands
            parser.add_argument(flag, dest=prefix + f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=meta["help"])
        else:
            parse = int if kind.startswith("int") else float if kind.startswith("float") else str
            parser.add_argument(flag, dest=prefix + f.name, type=parse,
                                metavar=f.name.upper(), help=meta["help"] + shown)


def add_store_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that find a stored search."""
    parser.add_argument("--run-id", help="the search's MLflow run id (default: the latest search)")
    parser.add_argument("--tracking-uri")
    parser.add_argument("--experiment", default=None,
                        help="the MLflow experiment to look in (default: any: the store's latest search)")
    parser.add_argument("--output-dir", default=str(DEFAULT_DIR))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autopeft", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("search", help="run a search and print its Pareto front",
                       description="Search PEFT configurations; flags override the --config file.")
    p.add_argument("--config", help="YAML file with any of the settings below (and fixed, "
                                    "reference_point, optimizer_options)")
    add_config_flags(p, SearchConfig)
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_ID",
                   help="continue the experiment's latest search (or search RUN_ID) whose driver died; "
                        "give the same settings as when it started")

    for name, what in (("front", "the Pareto front"), ("trials", "every trial")):
        q = sub.add_parser(name, help=f"print {what} of a search stored in MLflow (the latest by default)")
        q.add_argument("--format", choices=FORMATS, default="table",
                       help="table for people; json or csv (the MLflow runs' metric and param names) for scripts")
        add_store_flags(q)
    v = sub.add_parser("evaluate", help="retrain a search's front at full fidelity with several seeds "
                                        "and report dev and test mean and sd")
    v.add_argument("--seeds", type=int, default=3, help="training seeds per front member (default: 3)")
    v.add_argument("--baselines", nargs="*", metavar="NAME", help=BASELINES_HELP)
    v.add_argument("--concurrency", type=int, default=1,
                   help="retrainings at once, on Ray (CPUs and GPUs are split evenly; default: 1)")
    v.add_argument("--ray-address", help="run the retrainings on the Ray cluster at this address")
    add_config_flags(v.add_argument_group("fidelity (default: the search's, with every training and dev "
                                          "example)"), Fidelity, "fidelity.", defaults=False)
    add_store_flags(v)
    e = sub.add_parser("export", help="write a search's adapters as folders that load with stock PEFT, "
                                      "each with a model card")
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument("--pareto", action="store_true", help="every member of the front")
    which.add_argument("--trial", nargs="+", metavar="NAME", help="these trials (trial-0003 or 3)")
    e.add_argument("--out", required=True, help="folder to write one folder per trial into")
    e.add_argument("--config-only", action="store_true",
                   help="the PEFT configuration (adapter_config.json) and card without weights, to train elsewhere")
    e.add_argument("--base-model", metavar="HUB_ID",
                   help="the base model's hub id, where the search ran on a local folder autopeft "
                        "cannot name (default: found from the search)")
    e.add_argument("--register", metavar="NAME",
                   help="also register each exported adapter as a version of this MLflow registered model")
    add_store_flags(e)

    sub.add_parser("spaces", help="list the search-space presets")
    s = sub.add_parser("space", help="check a search space and describe it for a model, without training")
    s.add_argument("space", metavar="NAME_OR_FILE", help="a preset name or a YAML file")
    s.add_argument("--model", help="local model folder or hub id (default: the demo model)")
    s.add_argument("--num-labels", type=int, default=2, help="labels of the task head counted in (default: 2)")
    s.add_argument("--task", default="classification",
                   help="how the model is loaded: classification (default), causal_lm, demo or demo-lm")
    s.add_argument("--samples", type=int, default=2000,
                   help="configurations sampled for the trainable-parameter range (default: 2000)")

    ui = sub.add_parser("ui", help="open the MLflow UI on the search store")
    ui.add_argument("--tracking-uri")
    ui.add_argument("--output-dir", default=str(DEFAULT_DIR))
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--experiment", default=None,
                    help="the experiment whose pages are printed (default: every experiment that holds a search)")
    return parser


def cmd_search(args: argparse.Namespace) -> int:
    from autopeft.driver.inputs import check_inputs

    overrides = {k: v for k, v in vars(args).items() if k not in {"command", "config", "quiet", "resume"}}
    if overrides.get("baselines") == []:  # the flag alone: every baseline
        overrides["baselines"] = ["all"]
    config = load_config(args.config, overrides)
    check_inputs(config)  # before the heavy imports below: bad input answers at once
    from autopeft.driver.drive import run_search
    from autopeft.results.records import learned

    result = run_search(config, progress=not args.quiet, resume=args.resume)
    failed = [t for t in result.trials if t.status not in ("completed", "stopped")]
    stopped = [t for t in result.trials if t.status == "stopped"]
    infeasible = [t for t in result.trials if t.status == "completed" and not t.feasible]
    idle = [t for t in result.trials if t.status == "completed" and not learned(t, result.objectives)]
    print(f"\nPareto front ({len(result.front)} of {len(result.trials)} trials, {len(failed)} failed"
          f"{f', {len(stopped)} stopped early' if stopped else ''}"
          f"{f', {len(infeasible)} outside the outcome constraints' if infeasible else ''}"
          f"{f', {len(idle)} that learned nothing' if idle else ''}, "
          f"{result.seconds:.0f}s):\n")
    print(result)
    print(f"\n{result.reference_rule}")
    if result.evaluation is not None:
        from autopeft.driver.evaluation import format_evaluation

        fidelity = "the final fidelity" if config.final_fidelity else "full fidelity"
        print(f"\nThe front retrained at {fidelity}, {config.final_seeds} seed{'s' if config.final_seeds != 1 else ''} "
              f"(mean ± sd)"
              f"{', with the baselines' if config.baselines else ''}:\n")
        print(format_evaluation(result.evaluation, result.objectives))
    print(f"\nMLflow run {result.run_id} in {result.tracking_uri}")
    print(f"artifacts (pareto_front.csv/.png/.html, adapters/): {result.artifact_uri}")
    if not result.front and infeasible:  # any feasible completed trial would be on the front
        print("autopeft: no completed trial met the outcome constraints", file=sys.stderr)
        return EXIT_NO_FEASIBLE
    ran = [t for t in result.trials if t.status in ("completed", "stopped")]
    if not result.front and ran and not any(learned(t, result.objectives) for t in ran):
        floors = ", ".join(f"{o.name} {o.floor:.4g}" for o in result.objectives if o.floor is not None)
        print(f"autopeft: no trial learned: all {len(ran)} that ran scored no better than the task's trivial "
              f"score ({floors}); train longer (more examples or epochs) or search higher learning rates",
              file=sys.stderr)
        return EXIT_NO_FEASIBLE
    if not result.front:
        first = failed[0].error if failed else "no trial ran"
        print(f"autopeft: every trial failed; the first error was: {first}", file=sys.stderr)
        return EXIT_NO_FEASIBLE
    return EXIT_OK


def _tracking_uri(args: argparse.Namespace) -> str:
    return SearchConfig(tracking_uri=args.tracking_uri, output_dir=args.output_dir).resolved_tracking_uri


def _stored_search(args: argparse.Namespace) -> tuple[Any, Any]:
    """The MLflow client and the search that ``add_store_flags``' flags name."""
    from autopeft.results.tracking import open_search

    return open_search(_tracking_uri(args), args.experiment, args.run_id, explicit_uri=bool(args.tracking_uri))


def cmd_results(args: argparse.Namespace) -> int:
    """``front`` and ``trials``."""
    from autopeft.results.report import format_front
    from autopeft.results.rows import format_rows

    _, stored = _stored_search(args)
    records = stored.front() if args.command == "front" else stored.records
    if args.format != "table":
        print(format_rows(stored.rows(records), args.format), end="")
        return EXIT_OK
    completed = sum(r.status == "completed" for r in stored.records)
    print(f"search {stored.parent.info.run_name} ({stored.status}): {len(stored.records)} trials, "
          f"{completed} completed, front of {len(stored.front())}\n")
    if args.command == "front":
        print(format_front(records, stored.objectives))
    else:
        print(format_rows(stored.rows(records), "table", [o.name for o in stored.objectives]), end="")
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from autopeft.driver.evaluation import evaluate, format_evaluation

    fidelity = {k.split(".", 1)[1]: v for k, v in vars(args).items() if k.startswith("fidelity.") and v is not None}
    table = evaluate(args.run_id, experiment=args.experiment, tracking_uri=args.tracking_uri,
                     output_dir=args.output_dir, seeds=args.seeds, fidelity=fidelity,
                     baselines=None if args.baselines is None else args.baselines or ["all"],
                     concurrency=args.concurrency, ray_address=args.ray_address)
    print(format_evaluation(table, table.attrs["objectives"]))
    print("\nruns nested under the search (tags autopeft.role=evaluation, =baseline); evaluation.csv and "
          "evaluation_front.png/.html in its artifacts")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from autopeft.results.export import base_model_of, export_trials, register, select_trials

    client, stored = _stored_search(args)
    records = select_trials(stored, args.trial, args.pareto)
    base = base_model_of(stored.parent.data.params.get("model", ""), args.base_model)
    folders = export_trials(client, stored, records, Path(args.out), base, config_only=args.config_only)
    for folder in folders:
        print(folder)
    if args.register:
        for uri in register(client, stored, records, folders, args.register):
            print(uri)
    if not base.portable:
        print(f"autopeft: note: the adapters name the base model by its local folder {base.name}, which "
              "other machines may not have; pass --base-model HUB_ID to name it", file=sys.stderr)
    return EXIT_OK


def cmd_spaces(args: argparse.Namespace) -> int:
    from autopeft.space import describe_presets

    print(describe_presets())
    return EXIT_OK


def cmd_space(args: argparse.Namespace) -> int:
    from autopeft.driver.describe import describe_space

    print(describe_space(args.space, model=args.model, num_labels=args.num_labels, samples=args.samples,
                         task=args.task))
    return EXIT_OK


def cmd_ui(args: argparse.Namespace) -> int:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", _tracking_uri(args),
               "--host", args.host, "--port", str(args.port), "--workers", "1"]
    artifacts = Path(args.output_dir) / "artifacts"
    if not args.tracking_uri and artifacts.exists():
        command += ["--default-artifact-root", artifacts.resolve().as_uri()]
    url = f"http://{args.host}:{args.port}"
    print(f"MLflow UI on {url} (Ctrl-C to stop)", file=sys.stderr)
    for what, page in _ui_pages(args):
        print(f"  {what}: {url}/{page}", file=sys.stderr)
    return subprocess.call(command, env=env)


def _ui_pages(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Links to the latest search's page (its description holds the front) and to the runs
    of every experiment that holds a search (or of ``--experiment``). MLflow 3.17's UI opens
    in its GenAI mode (traces) whatever the experiment's kind tag says, unless the address
    asks for the runs view."""
    uri = _tracking_uri(args)
    if uri.startswith("sqlite:///") and not Path(uri[10:]).exists():
        return []
    from mlflow.tracking import MlflowClient

    from autopeft.results.tracking import latest_searches, searched_experiments

    client = MlflowClient(tracking_uri=uri)
    view = "?workflowType=machine_learning"
    experiments = searched_experiments(client)
    if args.experiment is not None:
        experiments = [(name, eid) for name, eid in experiments if name == args.experiment]
    pages = []
    latest = latest_searches(client, args.experiment)
    if latest:
        run = latest[0]
        name = client.get_experiment(run.info.experiment_id).name
        pages.append((f"the front of the latest search ({run.info.run_name}, experiment {name})",
                      f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}{view}"))
    pages += [(f"the searches of experiment {name}", f"#/experiments/{eid}{view}") for name, eid in experiments]
    return pages


HANDLERS: dict[str, Any] = {"search": cmd_search, "front": cmd_results, "trials": cmd_results,
                            "export": cmd_export, "evaluate": cmd_evaluate,
                            "spaces": cmd_spaces, "space": cmd_space, "ui": cmd_ui}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except AutopeftError as err:
        print(f"autopeft: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\nautopeft: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # a bug, not the user's input: keep the traceback, and a code of its own
        traceback.print_exc()
        print("autopeft: crashed (a bug in autopeft or a plugin; the traceback is above)", file=sys.stderr)
        return EXIT_CRASH


if __name__ == "__main__":
    sys.exit(main())
