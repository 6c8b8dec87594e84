"""A search's journal: what a search killed at any moment needs to continue (``--resume``).

Ray Tune can restore an experiment, but from a checkpoint of its searcher taken every so many
seconds, not at every trial: a restored search would ask its optimizer again for trials it
had already proposed, with a random stream that moved on. The journal instead holds the
optimizer itself, the trials it proposed and not yet heard back on, and every trial's record,
and is written whole (atomically) after each ask, each trial start and each trial end. Tune
tells the searcher a trial's result and then its callbacks, in one step, so each write sees a
state in which both agree; a crash between them loses the result, and the trial is rerun.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopeft.errors import AutopeftError
from autopeft.optimizers import Optimizer
from autopeft.records import HypervolumeLog, TrialRecord
from autopeft.space import Config

JOURNAL_FILE = "journal.pkl"


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

    def save(self) -> None:
        """Write the journal in one piece: a crash mid-write leaves the previous one whole."""
        state = {k: v for k, v in self.__dict__.items() if k != "path"}
        partial = self.path.with_suffix(".tmp")
        with partial.open("wb") as fh:
            pickle.dump(state, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(partial, self.path)

    @classmethod
    def load(cls, path: Path) -> Journal:
        if not path.is_file():
            raise AutopeftError("cannot resume: the search's journal is not there (it is kept in the "
                                "output directory of the machine that ran the driver)", source=str(path))
        with path.open("rb") as fh:
            state: dict[str, Any] = pickle.load(fh)
        return cls(path=path, **state)

    def finished(self) -> list[TrialRecord]:
        """The trials that ended (completed, stopped, failed): never run again."""
        return [r for r in self.records.values() if r.status not in ("running", "interrupted")]

    def to_rerun(self) -> list[tuple[int, Config]]:
        """The trials a crash interrupted, by number: proposed, or started, and never ended."""
        numbers = set(self.pending) | {r.number for r in self.records.values()
                                       if r.status in ("running", "interrupted")}
        return sorted((n, self.pending.get(n) or self.records[n].config) for n in numbers)
