"""Continuing a search whose driver died (``autopeft search ... --resume [RUN_ID]``), and
telling, from the store, a search that crashed from one that runs.

The parent run names the driver running it (host, pid, start time) and its journal
(:mod:`autopeft.driver.journal`). A search still marked running whose driver is gone crashed: its
parent and the trials that were running are marked interrupted, by ``--resume`` and by any
command that reads the search (``autopeft front``, ``trials``, ``evaluate``).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import psutil
from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient

from autopeft.config import SearchConfig, config_record
from autopeft.errors import AutopeftError
from autopeft.driver.journal import Journal
from autopeft.results.crashes import driver_gone, driver_identity, mark_if_crashed
from autopeft.results.tracking import (DRIVER, FAILURE, JOURNAL, RESUMES, STATUS, TRIAL_NUMBER, SearchTracker, StoredSearch,
                               load_search)

#: settings a resumed search may change: they decide how trials run, not which
MAY_CHANGE = ("concurrency", "ray_address", "limits")


def resume_search(tracker: SearchTracker, config: SearchConfig, run_id: str | None) -> tuple[Journal, str]:
    """Reopen search ``run_id`` (else the latest of ``config.experiment``) for ``tracker``:
    its journal, with the store brought in line with it, and the search's name."""
    client = tracker.client
    stored = load_search(client, config.experiment, run_id)
    if stored is None:
        raise AutopeftError(f"no search {run_id + ' ' if run_id else ''}to resume in experiment "
                            f"'{config.experiment}'", source=tracker.tracking_uri)
    parent = stored.parent
    name, parent_id, tags = parent.info.run_name, parent.info.run_id, parent.data.tags
    if stored.status == "completed":
        raise AutopeftError(f"search {name} ({parent_id}) has finished: there is nothing to resume")
    if driver_gone(tags.get(DRIVER)) is False:
        raise AutopeftError(f"search {name} ({parent_id}) is still running "
                            f"(driver pid {json.loads(tags[DRIVER])['pid']}); stop it before resuming")
    if JOURNAL not in tags:
        raise AutopeftError(f"search {name} ({parent_id}) has no journal: it was run by an autopeft "
                            "that could not resume searches")
    _check_same_settings(client, stored, config)
    mark_if_crashed(client, stored)
    journal = Journal.load(Path(tags[JOURNAL]))
    journal.resumes += 1
    _reconcile(tracker, stored, journal)
    tracker.parent_id = parent_id
    client.update_run(parent_id, status="RUNNING")
    client.log_batch(parent_id, tags=[RunTag(STATUS, "running"), RunTag(RESUMES, str(journal.resumes)),
                                      RunTag(DRIVER, driver_identity())])
    if FAILURE in tags:
        client.delete_tag(parent_id, FAILURE)
    return journal, name


def _reconcile(tracker: SearchTracker, stored: StoredSearch, journal: Journal) -> None:
    """Make the store say what the journal says: the journal was written before the store at
    every step, so the store may hold a run the journal never heard of, or a trial's end that
    it did not get to write."""
    for run in stored.runs:
        record = journal.records.get(int(run.data.tags.get(TRIAL_NUMBER, 0)))
        if record is None or record.run_id != run.info.run_id:
            # Started as the driver died, before the journal had it: its trial runs again, and
            # the store keeps one run per trial.
            tracker.client.delete_run(run.info.run_id)
        elif record.status not in ("running", "interrupted") and run.data.tags.get(STATUS) != record.status:
            tracker.finish_trial(record)


def _check_same_settings(client: MlflowClient, stored: StoredSearch, config: SearchConfig) -> None:
    """A resumed search must propose what the original would have: the same settings."""
    from autopeft.driver.evaluation import stored_config

    before = _plain(config_record(stored_config(client, stored)))
    now = _plain(config_record(config))
    changed = [k for k in before if k not in MAY_CHANGE and before[k] != now.get(k)]
    if changed:
        key = changed[0]
        raise AutopeftError(f"--resume needs the search's own settings: '{key}' was {before[key]!r}, "
                            f"now {now.get(key)!r}", source=stored.parent.info.run_id)


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data, default=str))
