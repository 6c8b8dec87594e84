"""A search's journal: what a search killed at any moment needs to continue (``--resume``).

Ray Tune can restore an experiment, but from a checkpoint of its searcher taken every so many
seconds, not at every trial: a restored search would ask its optimizer again for trials it
had already proposed, with a random stream that moved on. The journal instead holds the
optimizer itself, the trials it proposed and not yet heard back on (written after each ask
and each trial end), and every trial's record (a file per trial, written as it starts and
ends: rewriting every record at every event made the driver's time per trial grow with the
search, benchmarks/scale.py). Tune tells the searcher a trial's result and then its
callbacks, in one step, so each write sees a state in which both agree. A trial counts as
ended only once the optimizer's told state is written too: a crash between the two reruns it.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopeft.errors import AutopeftError
from autopeft.results.records import HypervolumeLog, TrialRecord

if TYPE_CHECKING:
    from autopeft.optimizers import Optimizer
    from autopeft.space import Config

JOURNAL_FILE = "journal.pkl"
RECORDS = "records"  # the folder beside it with a file per trial


def journal_path(out_dir: Path, name: str) -> Path:
    """Where search ``name`` keeps its journal: beside its Ray Tune experiments."""
    path = out_dir / "ray" / name / JOURNAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    with partial.open("wb") as fh:
        pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(partial, path)


@dataclass
class Journal:
    """The state of a search in progress; :meth:`save` writes it to ``path``."""

    path: Path
    optimizer: Optimizer
    #: trials proposed and not yet told to the optimizer: number -> configuration
    pending: dict[int, Config] = field(default_factory=dict)
    #: every trial that started, by number (the monitor's records)
    records: dict[int, TrialRecord] = field(default_factory=dict)
    hypervolume: HypervolumeLog | None = None
    #: the number the next new trial gets
    next_number: int = 1
    #: how many times the search has been resumed
    resumes: int = 0

    def save(self, *records: TrialRecord) -> None:
        """Write ``records``, then the optimizer's side; each file whole or not at all (a
        crash mid-write leaves the previous one)."""
        for record in records:
            self.save_record(record)
        _write(self.path, {k: v for k, v in self.__dict__.items() if k not in ("path", "records")})

    def save_record(self, record: TrialRecord) -> None:
        _write(self.path.parent / RECORDS / f"{record.number:06d}.pkl", record)

    @classmethod
    def load(cls, path: Path) -> Journal:
        if not path.is_file():
            raise AutopeftError("cannot resume: the search's journal is not there (it is kept in the "
                                "output directory of the machine that ran the driver)", source=str(path))
        with path.open("rb") as fh:
            state: dict[str, Any] = pickle.load(fh)
        records = {}
        for file in sorted((path.parent / RECORDS).glob("*.pkl")):
            with file.open("rb") as fh:
                record = pickle.load(fh)
            records[record.number] = record
        return cls(path=path, records=records, **state)

    def finished(self) -> list[TrialRecord]:
        """The trials that ended (completed, stopped, failed) and were told: never run again."""
        return [r for r in self.records.values()
                if r.status not in ("running", "interrupted") and r.number not in self.pending]

    def to_rerun(self) -> list[tuple[int, Config]]:
        """The trials a crash interrupted, by number: proposed, or started, and never ended."""
        ended = {r.number for r in self.finished()}
        numbers = (set(self.pending) | set(self.records)) - ended
        return sorted((n, self.pending.get(n) or self.records[n].config) for n in numbers)
