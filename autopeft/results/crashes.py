"""Telling, from the store, a search that crashed from one that runs: the parent run names the
driver running it (host, pid, start time); a search still marked running whose driver is gone
crashed, and it and the trials that were running are marked interrupted by any command that
reads it (``autopeft front``, ``trials``, ``evaluate``) and by ``--resume``."""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING

import psutil
from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient

from autopeft.results.tags import DRIVER, FAILURE, STATUS

if TYPE_CHECKING:
    from autopeft.results.tracking import StoredSearch


def driver_identity() -> str:
    """This process, as the parent run's DRIVER tag names it."""
    me = psutil.Process()
    return json.dumps({"host": socket.gethostname(), "pid": me.pid, "started": me.create_time()})


def driver_gone(tag: str | None) -> bool | None:
    """Whether the driver a DRIVER tag names has ended; None when this machine cannot tell
    (another host, or a search stored before autopeft named its driver)."""
    try:
        info = json.loads(tag or "")
    except json.JSONDecodeError:
        return None
    if info.get("host") != socket.gethostname():
        return None
    try:
        # The start time tells the driver from a later process that got its pid.
        return abs(psutil.Process(int(info["pid"])).create_time() - float(info["started"])) > 1.0
    except psutil.NoSuchProcess:
        return True


def mark_if_crashed(client: MlflowClient, stored: StoredSearch) -> bool:
    """If ``stored`` is marked running but its driver is gone, mark it and its running trials
    interrupted; True if it did."""
    tags = stored.parent.data.tags
    if stored.status != "running" or not driver_gone(tags.get(DRIVER)):
        return False
    pid = json.loads(tags[DRIVER])["pid"]
    for run in stored.runs:
        if run.data.tags.get(STATUS) == "running":
            _mark_interrupted(client, run.info.run_id, f"the search's driver (pid {pid}) ended while it trained")
    _mark_interrupted(client, stored.parent.info.run_id,
                      f"the driver (pid {pid}) ended before the search finished; "
                      f"`autopeft search ... --resume {stored.parent.info.run_id}` continues it")
    return True


def _mark_interrupted(client: MlflowClient, run_id: str, reason: str) -> None:
    client.log_batch(run_id, tags=[RunTag(STATUS, "interrupted"), RunTag(FAILURE, reason)])
    client.set_terminated(run_id, status="KILLED")
