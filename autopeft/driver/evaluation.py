"""Final evaluation: retrain every member of a search's front at full fidelity with several
seeds, score dev and test, and recompute the front from the means.

A search ranks configurations on cheap, single-seed trials; what a user deploys should rest on
the figures AutoPEFT reports, full-fidelity retraining over seeds. The retrained runs are
nested under the search's parent run (``autopeft.role=evaluation``), each linked to the trial
it re-evaluates (``autopeft.evaluates`` = that trial's run id).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from autopeft.config import Fidelity, SearchConfig, config_from_record
from autopeft.costs import COSTS
from autopeft.errors import AutopeftError
from autopeft.results.records import ObjectiveInfo, TrialRecord, front_of, summarize_config
from autopeft.results.tracking import CONFIG_ARTIFACT, REUSED, StoredSearch, evaluation_run, finish_evaluation_run

#: the default fidelity of a final evaluation: every training and dev example
FULL = {"max_train_examples": None, "max_eval_examples": None}


@dataclass
class MemberEvaluation:
    """One front member (or baseline) retrained with several seeds."""

    trial: TrialRecord
    dev: dict[str, list[float]] = field(default_factory=dict)   # objective -> one value per seed
    test: dict[str, list[float]] = field(default_factory=dict)  # test metric -> one value per seed
    errors: list[str] = field(default_factory=list)
    on_front: bool = False
    #: the baseline's name; None for a front member
    baseline: str | None = None

    @property
    def name(self) -> str:
        return self.baseline or self.trial.name

    def mean(self, name: str) -> float:
        return float(np.mean(self.dev[name]))


def stored_config(client: MlflowClient, stored: StoredSearch) -> SearchConfig:
    """The configuration a search ran with (logged beside it when it started)."""
    run_id = stored.parent.info.run_id
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp))
            data = json.loads(path.read_text())
    except Exception:  # noqa: BLE001 - any store's "not there" error: the answer is the same
        raise AutopeftError(f"search {stored.parent.info.run_name} has no {CONFIG_ARTIFACT} (it was run "
                            "by an autopeft without final evaluation); rerun the search") from None
    return config_from_record(data, f"{stored.parent.info.run_name}/{CONFIG_ARTIFACT}")


def final_fidelity(searched: Fidelity, fidelity: dict[str, Any] | None) -> Fidelity:
    """The fidelity of a final evaluation: the search's with every example, then ``fidelity``."""
    unknown = set(fidelity or {}) - {f.name for f in dataclasses.fields(Fidelity)}
    if unknown:
        raise AutopeftError(f"unknown fidelity setting {sorted(unknown)[0]}")
    return dataclasses.replace(searched, **{**FULL, **(fidelity or {})})


def baseline_jobs(setup: Any, baselines: list[str], seeds: int) -> list[tuple[MemberEvaluation, Any, int, int]]:
    """(evaluation, setup, seed, i) for each of ``seeds`` seeds of each baseline, trained as
    ``setup`` (the final evaluation's) says."""
    from autopeft.driver.baselines import baseline_setup, resolve_baselines

    jobs = []
    for baseline in resolve_baselines(baselines) if baselines else []:
        pinned = baseline_setup(setup, baseline)
        record = TrialRecord(0, baseline.name, pinned.space.fixed, status="completed")
        evaluation = MemberEvaluation(record, baseline=baseline.name)
        jobs += [(evaluation, pinned, setup.seed + i, i) for i in range(seeds)]
    return jobs


def train_baselines_ahead(config: SearchConfig) -> dict[tuple[str, int], Any]:
    """Start training the baselines of ``config``'s final evaluation now, as Ray tasks with a
    1/``concurrency`` share of the machine each (Ray must be up), and return them by (name,
    seed) for :func:`evaluate` to collect. They need nothing from the search, and started
    before it they run in the slots its trials leave free (its last trials, its stopped ones)
    instead of after it."""
    from autopeft.driver.setup import load_setup
    from autopeft.driver.runner import submit

    final = dataclasses.replace(config, fidelity=final_fidelity(config.fidelity, config.final_fidelity or None))
    return {(e.baseline, seed): submit(retrain, (dataclasses.replace(job_setup, seed=seed), {}), config.concurrency)
            for e, job_setup, seed, _ in baseline_jobs(load_setup(final), config.baselines, config.final_seeds)}


def evaluate_front(client: MlflowClient, stored: StoredSearch, *, seeds: int = 3,
                   fidelity: dict[str, Any] | None = None, objectives: list[Any] | None = None,
                   baselines: list[str] | None = None, concurrency: int = 1, ray_address: str | None = None,
                   ahead: dict[tuple[str, int], Any] | None = None, progress: bool = True) -> list[MemberEvaluation]:
    """Retrain each front member of ``stored`` with ``seeds`` training seeds at full fidelity
    (all examples; ``fidelity`` overrides any of its fields) on the search's own data splits,
    ``concurrency`` retrainings at once (on Ray, on the cluster at ``ray_address`` if given),
    log each run under the search, and mark the members that stay on the front of the means.
    ``objectives`` replaces the stored ones (needed for objectives defined in Python).
    ``baselines`` (names, or ``["all"]``) are trained the same way and join the front of the
    means, so that a member a hand-made configuration beats drops off it. ``ahead`` holds
    baselines already training (:func:`train_baselines_ahead`)."""
    from autopeft.driver.setup import load_setup
    from autopeft.driver.runner import collect, run_jobs

    ahead = ahead or {}
    for key, value in (("--seeds", seeds), ("--concurrency", concurrency)):
        if value < 1:
            raise AutopeftError(f"must be a positive integer, got {value}", key=key)
    front = stored.front()
    if not front:
        raise AutopeftError(f"search {stored.parent.info.run_name} has no front to evaluate")
    config = stored_config(client, stored)
    searched = config.fidelity
    config.fidelity = final_fidelity(searched, fidelity)
    if objectives is not None:
        config.objectives = list(objectives)
    setup = load_setup(config)  # the search's seed: the same data splits as the search
    names = [o.name for o in setup.objectives]
    # setup.seed: the seed the search's trials trained with (its training seed where one was given)
    runs = [(e, setup, setup.seed + i, i) for e in map(MemberEvaluation, front) for i in range(seeds)]
    runs += baseline_jobs(setup, baselines or [], seeds)
    run_ids: dict[int, str] = {}

    # Training is seeded: at the search's fidelity and seed, a front member's trial is its own
    # retraining, so its scores stand for that seed rather than training it again.
    reused = [config.fidelity == searched and seed == setup.seed and not e.baseline
              and bool(e.trial.test_metrics) and all(n in e.trial.objectives for n in names)
              for e, _, seed, _ in runs]

    def start(k: int) -> None:
        evaluation, _, seed, i = runs[k]
        if progress:
            print(f"evaluating {evaluation.name}, seed {seed} ({i + 1}/{seeds})"
                  + (": the search's own trial (the same fidelity and seed)" if reused[k] else ""), file=sys.stderr)
        run_ids[k] = evaluation_run(client, stored, evaluation.trial, seed, config.fidelity, evaluation.baseline)
        if reused[k]:
            client.set_tag(run_ids[k], REUSED, "true")

    def done(k: int, scores: dict[str, Any] | None, error: str | None) -> None:
        evaluation, _, seed, _ = runs[k]
        if error is not None:
            evaluation.errors.append(f"seed {seed}: {error}")
            finish_evaluation_run(client, run_ids[k], {}, {}, error=evaluation.errors[-1])
            return
        for name in names:
            evaluation.dev.setdefault(name, []).append(scores["dev"][name])
        for name, value in scores["test"].items():
            evaluation.test.setdefault(name, []).append(value)
        finish_evaluation_run(client, run_ids[k], {**scores["dev"], **scores["cost"]},
                              {f"test_{name}": v for name, v in scores["test"].items()}, node=scores.get("node"))

    started = [k for k, (e, _, seed, _) in enumerate(runs) if (e.baseline, seed) in ahead]
    train = [k for k in range(len(runs)) if not reused[k] and k not in started]
    for k in sorted(set(range(len(runs))) - set(train) - set(started)):
        trial = runs[k][0].trial
        start(k)
        done(k, {"dev": {n: trial.objectives[n] for n in names}, "test": trial.test_metrics,
                 "cost": {c: v for c, v in trial.metrics.items() if c in COSTS}, "node": trial.node}, None)
    for k in started:
        start(k)
        done(k, *collect(ahead[runs[k][0].baseline, runs[k][2]]))
    run_jobs(retrain, [(dataclasses.replace(runs[k][1], seed=runs[k][2]),
                        {} if runs[k][0].baseline else runs[k][0].trial.config) for k in train],
             concurrency=min(concurrency, max(1, len(train))), ray_address=ray_address,
             on_start=lambda j: start(train[j]), on_done=lambda j, scores, error: done(train[j], scores, error))
    results = list({id(e): e for e, *_ in runs}.values())
    _mark_front(results, [ObjectiveInfo(o.name, o.direction) for o in setup.objectives])
    return results


def retrain(setup: Any, config: dict[str, Any]) -> dict[str, Any]:
    """One retraining (runs in a worker): train ``config`` with ``setup`` (its seed and
    fidelity), score dev and test; returns the dev objectives, the costs, the test scores and
    the address of the node it ran on (this machine's when it ran in-process)."""
    import ray

    from autopeft.trial.run import run_trial, score_adapter

    with tempfile.TemporaryDirectory() as tmp:
        result = run_trial(setup, config, save_to=Path(tmp) / "adapter")
        cost = {k: v for k, v in result.cost.items() if k in COSTS}
        test = score_adapter(setup, Path(tmp) / "adapter", setup.data.test, config, cost)
    # Run in the driver's process (no Ray): this machine, named as autopeft's local Ray names it.
    node = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
    return {"dev": dict(result.objectives), "cost": cost, "test": test, "node": node}


def _mark_front(results: list[MemberEvaluation], objectives: list[ObjectiveInfo]) -> None:
    scored = [r for r in results if all(r.dev.get(o.name) for o in objectives)]
    records = [TrialRecord(i, str(i), {}, status="completed", objectives={o.name: r.mean(o.name) for o in objectives})
               for i, r in enumerate(scored)]
    for record in front_of(records, objectives):
        scored[record.number].on_front = True


def evaluation_table(results: list[MemberEvaluation], objectives: list[ObjectiveInfo]) -> pd.DataFrame:
    """One row per member: mean and standard deviation over seeds of each dev objective and
    test metric, the seeds that ran, and whether it stays on the front of the means."""
    rows = []
    for r in results:
        row: dict[str, Any] = {"trial": r.name, "kind": "baseline" if r.baseline else "front member",
                               "seeds": len(next(iter(r.dev.values()), [])), "on_front": r.on_front}
        for name, values in [*((o.name, r.dev.get(o.name, [])) for o in objectives),
                             *((f"test_{k}", v) for k, v in sorted(r.test.items()))]:
            row[f"{name}_mean"] = float(np.mean(values)) if values else None
            row[f"{name}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        row["search_" + objectives[0].name] = None if r.baseline else r.trial.objectives.get(objectives[0].name)
        row["configuration"] = summarize_config(r.trial.config)
        row["errors"] = "; ".join(r.errors)
        rows.append(row)
    return pd.DataFrame(rows)


def _shown(table: pd.DataFrame, objectives: list[ObjectiveInfo]) -> list[str]:
    """The columns an evaluation shows: the objectives, then every test metric."""
    return [o.name for o in objectives] + sorted({c[:-5] for c in table.columns
                                                  if c.startswith("test_") and c.endswith("_mean")})


def _mean_sd(row: pd.Series, name: str) -> str:
    mean, sd = row.get(f"{name}_mean"), row.get(f"{name}_std")
    if mean is None or pd.isna(mean):
        return "-"
    return f"{mean:.4g}" + ("" if sd is None or pd.isna(sd) else f" ± {sd:.2g}")


def format_evaluation(table: pd.DataFrame, objectives: list[ObjectiveInfo]) -> str:
    """The evaluation table for the terminal: mean ± sd per column, the front marked."""
    names = _shown(table, objectives)
    width = max([10, *(len(t) for t in table["trial"])])
    lines = ["  ".join(["trial".ljust(width), "seeds", *(f"{n:>18}" for n in names), "front"])]
    for _, row in table.iterrows():
        cells = [_mean_sd(row, n).rjust(18) for n in names]
        lines.append("  ".join([row["trial"].ljust(width), f"{row['seeds']:>5}", *cells,
                                "yes" if row["on_front"] else "no"]))
    return "\n".join(lines)


def evaluate(run_id: str | None = None, *, experiment: str | None = None, tracking_uri: str | None = None,
             output_dir: str | None = None, seeds: int = 3, fidelity: dict[str, Any] | None = None,
             objectives: list[Any] | None = None, baselines: list[str] | None = None,
             concurrency: int = 1, ray_address: str | None = None,
             ahead: dict[tuple[str, int], Any] | None = None, progress: bool = True) -> pd.DataFrame:
    """Retrain the front of search ``run_id`` (default: the experiment's latest) at full
    fidelity with ``seeds`` seeds, and the ``baselines`` (names or ``["all"]``) with it,
    ``concurrency`` at once; logs the runs, ``evaluation.csv`` and the plot
    ``evaluation_front.png``/``.html`` under the search and returns the table (see
    :func:`evaluation_table`)."""
    from autopeft.results.report import plot_evaluation_html, plot_evaluation_png
    from autopeft.results.tracking import open_search

    uri = SearchConfig(tracking_uri=tracking_uri, **({"output_dir": output_dir} if output_dir else {})
                       ).resolved_tracking_uri
    client, stored = open_search(uri, experiment, run_id, explicit_uri=bool(tracking_uri))
    results = evaluate_front(client, stored, seeds=seeds, fidelity=fidelity, objectives=objectives,
                             baselines=baselines, concurrency=concurrency, ray_address=ray_address,
                             ahead=ahead, progress=progress)
    table = evaluation_table(results, stored.objectives)
    with tempfile.TemporaryDirectory() as tmp:
        table.to_csv(Path(tmp) / "evaluation.csv", index=False)
        plot_evaluation_png(table, stored.objectives, Path(tmp) / "evaluation_front.png")
        plot_evaluation_html(table, stored.objectives, Path(tmp) / "evaluation_front.html")
        for name in ("evaluation.csv", "evaluation_front.png", "evaluation_front.html"):
            client.log_artifact(stored.parent.info.run_id, str(Path(tmp) / name))
    _describe(client, stored, table)
    table.attrs["objectives"] = stored.objectives
    return table


def evaluation_markdown(table: pd.DataFrame, objectives: list[ObjectiveInfo]) -> str:
    """The evaluation as a Markdown table (mean ± sd), for the search's description."""
    names = _shown(table, objectives)
    seeds = int(table["seeds"].max()) if len(table) else 0
    lines = [f"**Final evaluation: trained alike, {seeds} seed{'s' if seeds != 1 else ''} each**", "",
             "| | kind | " + " | ".join(names) + " | on the front |", "|---" * (3 + len(names)) + "|"]
    for _, row in table.iterrows():
        cells = [_mean_sd(row, n) for n in names]
        lines.append(f"| {row['trial']} | {row['kind']} | " + " | ".join(cells)
                     + f" | {'yes' if row['on_front'] else 'no'} |")
    return "\n".join(lines + ["", "Artifacts: `evaluation.csv`, `evaluation_front.png`, `.html`."])


def _describe(client: MlflowClient, stored: StoredSearch, table: pd.DataFrame) -> None:
    """Put the evaluation first in the search's description (the MLflow UI's run page), above
    the search-time front, replacing an earlier evaluation's."""
    from autopeft.results.report import NOTE_LIMIT
    from autopeft.results.tracking import NOTE

    run_id = stored.parent.info.run_id
    note = client.get_run(run_id).data.tags.get(NOTE, "")
    marker = "\n\n---\n\n"
    front = note.split(marker, 1)[1] if note.startswith("**Final evaluation") and marker in note else note
    text = evaluation_markdown(table, stored.objectives) + marker + front
    client.set_tag(run_id, NOTE, text[:NOTE_LIMIT])
