"""The front as people read it: a terminal table, a PNG plot and an interactive HTML plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers; the plots are files
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import plotly.graph_objects as go  # noqa: E402

from autopeft.results.records import ObjectiveInfo, TrialRecord, summarize_config  # noqa: E402


def format_front(front: list[TrialRecord], objectives: list[ObjectiveInfo]) -> str:
    """A fixed-width table of the front for the terminal."""
    if not front:
        return "(the front is empty: no completed trial yet, or none that meets the outcome constraints)"
    test_keys = sorted({k for r in front for k in r.test_metrics})
    header = ["trial"] + [f"{o.name} ({'max' if o.direction == 'maximize' else 'min'})"
                          for o in objectives] + [f"test_{k}" for k in test_keys] + ["configuration"]
    rows = []
    for r in front:
        rows.append([r.name] + [f"{r.objectives[o.name]:.4g}" for o in objectives]
                    + [f"{r.test_metrics[k]:.4g}" if k in r.test_metrics else "-" for k in test_keys]
                    + [summarize_config(r.config)])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    widths[-1] = 0  # the configuration column is left ragged
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths[:-1]] + ["-" * 13])]
                     + [line(r) for r in rows])


#: MLflow keeps at most this many characters of a tag value (a run's description is one)
NOTE_LIMIT = 8000


def front_markdown(front: list[TrialRecord], objectives: list[ObjectiveInfo], completed: int,
                   heading: str = "", limit: int = NOTE_LIMIT) -> str:
    """The front as a Markdown table for the parent run's description in the MLflow UI:
    objectives, test scores and each member's configuration; rows past ``limit`` characters
    are left to ``pareto_front.csv``."""
    test_keys = sorted({k for r in front for k in r.test_metrics})
    head = [f"**Pareto front: {len(front)} of {completed} completed trials**" + (f" ({heading})" if heading else ""),
            "",
            "| trial | " + " | ".join(f"{o.name} ({'max' if o.direction == 'maximize' else 'min'})"
                                     for o in objectives)
            + "".join(f" | test_{k}" for k in test_keys) + " | configuration |",
            "|---" * (2 + len(objectives) + len(test_keys)) + "|"]
    tail = ["", "Chosen on dev scores; the test split scored only the front's members, after the search. "
                "Artifacts: `pareto_front.csv`, `.png`, `.html`, `hypervolume.png`, `adapters/<trial>/` "
                "(`autopeft export` writes them ready to load)."]
    rows = [f"| {r.name} | " + " | ".join(f"{r.objectives[o.name]:.4g}" for o in objectives)
            + "".join(f" | {r.test_metrics[k]:.4g}" if k in r.test_metrics else " | -" for k in test_keys)
            + f" | {summarize_config(r.config).replace('|', '/')} |" for r in front]
    if not front:
        rows = ["| (none: no completed trial met the constraints) |" + " |" * (len(objectives) + len(test_keys))]
    size = sum(len(x) + 1 for x in head + tail) + 80
    kept = []
    for row in rows:
        if size + len(row) + 1 > limit:
            kept.append(f"| ... {len(rows) - len(kept)} more in `pareto_front.csv` |")
            break
        kept.append(row)
        size += len(row) + 1
    return "\n".join(head + kept + tail)


def spans_decades(values: Sequence[float]) -> bool:
    """Whether an axis should be logarithmic: positive values whose largest is over ten times
    the smallest (trainable percentages run from 0.01 to 1 and more)."""
    values = [v for v in values if v is not None]
    return bool(values) and min(values) > 0 and max(values) / min(values) > 10


def _axes(objectives: list[ObjectiveInfo]) -> tuple[ObjectiveInfo, ObjectiveInfo]:
    # With more than two objectives the plots show the first two; the CSV has them all.
    return objectives[0], objectives[1]


def plot_front_png(records: list[TrialRecord], front: list[TrialRecord],
                   objectives: list[ObjectiveInfo], path: Path) -> None:
    y_obj, x_obj = _axes(objectives)
    done = [r for r in records if r.status == "completed"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.scatter([r.objectives[x_obj.name] for r in done], [r.objectives[y_obj.name] for r in done],
               c="#bbbbbb", label="trials", zorder=2)
    pts = sorted((r.objectives[x_obj.name], r.objectives[y_obj.name], r.name) for r in front)
    ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color="#d62728", zorder=1)
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], c="#d62728", label="Pareto front", zorder=3)
    for x, y, name in pts:
        ax.annotate(name.replace("trial-", "#"), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if spans_decades([r.objectives[x_obj.name] for r in done]):
        ax.set_xscale("log")
    ax.set_xlabel(f"{x_obj.name} ({x_obj.direction})")
    ax.set_ylabel(f"{y_obj.name} ({y_obj.direction})")
    ax.set_title(f"Pareto front: {len(front)} of {len(done)} completed trials")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_front_html(records: list[TrialRecord], front: list[TrialRecord],
                    objectives: list[ObjectiveInfo], path: Path) -> None:
    y_obj, x_obj = _axes(objectives)
    done = [r for r in records if r.status == "completed"]
    on_front = {r.trial_id for r in front}
    fig = go.Figure()
    for label, group, color in (("trials", [r for r in done if r.trial_id not in on_front], "#999999"),
                                ("Pareto front", [r for r in done if r.trial_id in on_front], "#d62728")):
        fig.add_trace(go.Scatter(
            x=[r.objectives[x_obj.name] for r in group], y=[r.objectives[y_obj.name] for r in group],
            mode="markers", name=label, marker={"color": color, "size": 9},
            text=[f"{r.name}<br>" + "<br>".join(f"{o.name}={r.objectives[o.name]:.4g}" for o in objectives)
                  + "<br>" + summarize_config(r.config).replace(" ", "<br>") for r in group],
            hoverinfo="text"))
    fig.update_layout(title="autopeft Pareto front", xaxis_title=f"{x_obj.name} ({x_obj.direction})",
                      yaxis_title=f"{y_obj.name} ({y_obj.direction})", template="plotly_white")
    if spans_decades([r.objectives[x_obj.name] for r in done]):
        fig.update_xaxes(type="log")
    # The plotly.js bundle is inlined so the file opens offline (MLflow's UI, air-gapped hosts).
    fig.write_html(str(path), include_plotlyjs=True)


def plot_hypervolume_png(curve: list[float], path: Path, rule: str = "", reference: Sequence[float] = (),
                         objectives: list[ObjectiveInfo] = ()) -> None:
    """The hypervolume after each finished trial, titled with its reference point and rule."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot(range(1, len(curve) + 1), curve, marker="o")
    ax.set_xlabel("finished trials")
    ax.set_ylabel("dominated hypervolume")
    if len(reference):
        point = ", ".join(f"{o.name} {v:.4g}" for o, v in zip(objectives, reference, strict=True))
        ax.set_title(f"reference point: {point}\n{rule.removeprefix('reference: ')}", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _evaluated(table: pd.DataFrame, objectives: list[ObjectiveInfo]) -> pd.DataFrame:
    y_obj, x_obj = _axes(objectives)
    return table[table[f"{y_obj.name}_mean"].notna() & table[f"{x_obj.name}_mean"].notna()]


def plot_evaluation_png(table: pd.DataFrame, objectives: list[ObjectiveInfo], path: Path) -> None:
    """The final evaluation: each front member's mean over seeds (bars: one sd) and the
    baselines, trained alike, on the same axes; the front of the means is joined up."""
    y_obj, x_obj = _axes(objectives)
    rows = _evaluated(table, objectives)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for kind, color, marker in (("front member", "#d62728", "o"), ("baseline", "#222222", "s")):
        part = rows[rows["kind"] == kind]
        ax.errorbar(part[f"{x_obj.name}_mean"], part[f"{y_obj.name}_mean"],
                    yerr=part[f"{y_obj.name}_std"].fillna(0), fmt=marker, color=color, capsize=3,
                    label="search's front" if kind == "front member" else "baselines", zorder=3)
        for _, r in part.iterrows():
            ax.annotate(r["trial"].replace("trial-", "#"), (r[f"{x_obj.name}_mean"], r[f"{y_obj.name}_mean"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)
    front = rows[rows["on_front"]].sort_values(f"{x_obj.name}_mean")
    ax.step(front[f"{x_obj.name}_mean"], front[f"{y_obj.name}_mean"], where="post", color="#d62728", alpha=0.4)
    if spans_decades(list(rows[f"{x_obj.name}_mean"])):
        ax.set_xscale("log")
    seeds = int(rows["seeds"].max()) if len(rows) else 0
    ax.set_xlabel(f"{x_obj.name} ({x_obj.direction})")
    ax.set_ylabel(f"{y_obj.name} on dev ({y_obj.direction}), mean ± sd")
    ax.set_title(f"Final evaluation: every point trained alike, {seeds} seed{'s' if seeds != 1 else ''} each")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_evaluation_html(table: pd.DataFrame, objectives: list[ObjectiveInfo], path: Path) -> None:
    """:func:`plot_evaluation_png` as an interactive plot (hover: every mean ± sd and test score)."""
    y_obj, x_obj = _axes(objectives)
    rows = _evaluated(table, objectives)
    shown = [c[:-5] for c in rows.columns if c.endswith("_mean")]
    fig = go.Figure()
    for kind, color, symbol in (("front member", "#d62728", "circle"), ("baseline", "#222222", "square")):
        part = rows[rows["kind"] == kind]
        fig.add_trace(go.Scatter(
            x=part[f"{x_obj.name}_mean"], y=part[f"{y_obj.name}_mean"], mode="markers+text",
            name="search's front" if kind == "front member" else "baselines",
            text=list(part["trial"]), textposition="top right",
            error_y={"type": "data", "array": list(part[f"{y_obj.name}_std"].fillna(0))},
            marker={"color": color, "size": 10, "symbol": symbol},
            hovertext=[f"{r['trial']}<br>" + "<br>".join(
                f"{n}={r[f'{n}_mean']:.4g} ± {0 if pd.isna(r[f'{n}_std']) else r[f'{n}_std']:.2g}"
                for n in shown if not pd.isna(r[f"{n}_mean"])) + "<br>" + str(r["configuration"])
                for _, r in part.iterrows()],
            hoverinfo="text"))
    fig.update_layout(title="autopeft final evaluation: front members and baselines",
                      xaxis_title=f"{x_obj.name} ({x_obj.direction})",
                      yaxis_title=f"{y_obj.name} on dev ({y_obj.direction})", template="plotly_white")
    if spans_decades(list(rows[f"{x_obj.name}_mean"])):
        fig.update_xaxes(type="log")
    fig.write_html(str(path), include_plotlyjs=True)
