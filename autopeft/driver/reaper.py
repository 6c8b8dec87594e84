"""A watchdog that ends the processes a driver started once the driver is gone, however it went.

A local Ray started by ``ray.init`` stops with ``ray.shutdown``; a driver killed with SIGKILL
never gets there, and two of Ray's processes (its dashboard and runtime-env agents, ~185 MB)
then live on for ever, orphaned. Ray has no option for this, so the driver starts this small
process beside it: it holds the read end of a pipe whose write end only the driver holds (the
kernel closes it however the driver ends), keeps a list of the driver's Ray descendants while the
driver lives, and ends those still running once the pipe closes.

Run as ``python -m autopeft.driver.reaper PID``; :func:`reap_descendants` starts it.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

#: how often the list of descendants is renewed (s): Ray starts its processes within seconds
POLL_SECONDS = 1.0
#: how long the processes get to end on SIGTERM before SIGKILL (s)
GRACE_SECONDS = 3.0
#: the environment variable that marks the processes started under a watchdog
TOKEN = "AUTOPEFT_REAPER_TOKEN"


@contextmanager
def reap_descendants() -> Iterator[None]:
    """For the block and after it, however this process ends: its descendants that outlive it
    are ended by a watchdog process (see the module's docstring)."""
    read_end, write_end = os.pipe()
    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    # A session of its own: a Ctrl-C or a kill of the driver's process group spares it.
    watchdog = subprocess.Popen([sys.executable, "-m", "autopeft.driver.reaper", str(os.getpid()), token],
                                stdin=read_end, start_new_session=True, close_fds=True,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    os.close(read_end)
    watchdog.stdout.read(1)  # it has listed what was there before: Ray may start now
    watchdog.stdout.close()
    os.set_inheritable(write_end, False)  # only this process may hold the pipe open
    # Every process started in the block inherits the token: the watchdog finds them by it
    # even when they were started between two of its looks (and were orphaned since).
    before = os.environ.get(TOKEN)
    os.environ[TOKEN] = token
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TOKEN, None)
        else:
            os.environ[TOKEN] = before
        os.close(write_end)  # a normal end: the watchdog ends what the block left, then exits
        try:
            watchdog.wait(timeout=2 * GRACE_SECONDS + 5)
        except subprocess.TimeoutExpired:
            watchdog.kill()


def ray_descendants(pid: int) -> dict[int, psutil.Process]:
    """``pid``'s descendants that are Ray's (its binaries, scripts and ``ray::`` workers)."""
    found = {}
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return {}
    for child in children:
        try:
            if _is_ray(child):
                found[child.pid] = child
        except psutil.Error:
            pass
    return found


def _is_ray(process: psutil.Process) -> bool:
    return "ray" in " ".join(process.cmdline()[:2]).lower()


def _carrying(token: str) -> dict[int, psutil.Process]:
    """Ray's processes whose environment holds ``token`` (of those this user may read). Ray's
    alone: another thread of the driver may have started a process of its own meanwhile (a
    test's MLflow server was), which inherited the token and is none of this block's."""
    found = {}
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and process.environ().get(TOKEN) == token and _is_ray(process):
                found[process.pid] = process
        except psutil.Error:
            pass
    return found


def watch(driver: int, token: str) -> None:
    """Keep a list of ``driver``'s Ray descendants until standard input closes, then end
    them, and every process that carries ``token``."""
    # Ray processes the driver had before it asked for this one are not this block's.
    before = set(ray_descendants(driver))
    sys.stdout.write("+")
    sys.stdout.close()
    known: dict[int, psutil.Process] = {}
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], POLL_SECONDS)
        if ready and not os.read(sys.stdin.fileno(), 1):
            break  # EOF: the driver is gone, or left the block
        # Orphans are reparented to init: keep every process seen, psutil's handle remembers
        # its start time, so a reused pid is never mistaken for it.
        known.update({pid: p for pid, p in ray_descendants(driver).items() if pid not in before})
    known.update({pid: p for pid, p in ray_descendants(driver).items() if pid not in before})
    known.update(_carrying(token))
    alive = [p for p in known.values() if p.is_running()]
    for process in alive:
        try:
            process.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, still = psutil.wait_procs(alive, timeout=GRACE_SECONDS)
    for process in still:
        try:
            process.kill()
        except psutil.Error:
            pass


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch(int(sys.argv[1]), sys.argv[2])
