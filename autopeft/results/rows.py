"""Trial rows (one dict per trial, named as in MLflow) written for scripts or people."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

#: the columns a terminal table of trials shows besides the objectives (all are in json/csv)
_TABLE_COLUMNS = ("trial", "status", "learned", "pareto")


def format_rows(rows: list[dict[str, Any]], fmt: str, objectives: list[str] | None = None) -> str:
    """``json`` (a list of objects), ``csv`` (a header with every key that any row has, in
    first-seen order) or ``table`` (trial, status, whether it learned, front membership and
    the objectives)."""
    if fmt == "json":
        return json.dumps([{k: _plain(v) for k, v in row.items()} for row in rows], indent=1) + "\n"
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    shown = [*_TABLE_COLUMNS, *(objectives or [])]
    cells = [shown] + [[_cell(row.get(c)) for c in shown] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(shown))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells) + "\n"


def _plain(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
