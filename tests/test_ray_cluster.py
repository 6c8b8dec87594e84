"""`autopeft search --ray-address HOST:PORT` on an existing two-node Ray cluster.

The test starts a real cluster with the `ray` CLI on this machine: a head node and a worker node,
each with one CPU, so that two concurrent trials (one CPU each) must run one on each node. It runs
a 2-trial search on the tiny model with the real CLI in a subprocess, and shows from MLflow that
the trials ran on both nodes: every child run's ``autopeft.node`` tag is the Ray node IP address
its trial ran on, and the two nodes are given different loopback addresses (127.0.0.2 and
127.0.0.3; all of 127.0.0.0/8 is loopback on Linux) so that the tags tell them apart.

Why not 127.0.0.1: Ray (2.60) rewrites a node IP address of ``127.0.0.1``/``localhost`` to the
machine's routable address, in `ray start --node-ip-address` and in the address a node or driver
connects to, unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which `ray start` refuses for a worker
node. Only a node whose IP address is exactly 127.0.0.1 binds its ports to loopback; these two
nodes' GCS and raylet ports listen on all interfaces while the test runs (Ray's runtime-env agent
binds the node's IP). The cluster therefore runs with token authentication and a random token of
its own (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN), and the test never reads or writes
~/.ray/auth_token.

Shared filesystem, what this shows and what it does not:

* The training data reaches the worker without a filesystem: the driver loads and tokenizes it
  and ships it inside the ``SearchSetup`` that ``tune.with_parameters`` puts in Ray's object
  store. Both nodes are on one disk here, so the test cannot prove that no trial reads the file.
* The model is not shipped: each trial loads it from ``setup.model_path``, a local directory,
  which must exist at the same path on every node (or be a hub id each node can download).
* Each trial's checkpoint (its trained adapter) is written by the trial to Tune's storage path,
  ``OUTPUT_DIR/ray/...``, and read back by the driver (test scores, adapter artifacts). With a
  local path on a multi-node cluster that needs a filesystem shared by all nodes; without one,
  Tune refuses to persist a worker-node checkpoint ("Unable to set up cluster storage").
  On one machine both nodes share the disk, so this test passes either way: it shows trials on
  two nodes, not that a cluster without a shared filesystem works.

The cluster runs under its own short ``--temp-dir`` with random ports; it is stopped by ending
the processes it started (every process naming that directory, and their descendants), never
with `ray stop`, which would stop every Ray on the machine. The test checks that none is left.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from conftest import write_sentiment_csv
from test_search_e2e import runs_of

pytestmark = pytest.mark.slow

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"


def _ray_cli() -> str | None:
    """The `ray` next to this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else shutil.which("ray")


def _can_bind(host: str) -> bool:
    try:
        with socket.socket() as sock:
            sock.bind((host, 0))
        return True
    except OSError:
        return False


def _free_port() -> int:
    """A port free on every interface: the GCS listens on all of them (see above)."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _cluster_processes(tag: str) -> list[psutil.Process]:
    """The live processes whose command line names ``tag`` (the cluster's temp dir), and all
    their descendants (Ray's agents and workers rename themselves ``ray::...``)."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid != os.getpid() and any(tag in arg for arg in proc.info["cmdline"] or ()):
                found[proc.pid] = proc
                found.update((child.pid, child) for child in proc.children(recursive=True))
        except psutil.Error:
            continue
    return [p for p in found.values() if _alive(p)]


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _stop_cluster(tag: str) -> list[str]:
    """Kill the cluster's processes (SIGKILL, as `ray stop --force` does: on SIGTERM the raylets
    take ~10 s and the GCS server does not exit) until none is left, and return what still runs
    after 20 s (nothing, normally). Zombies count as gone: init reaps them."""
    deadline = time.monotonic() + 20
    while (procs := _cluster_processes(tag)) and time.monotonic() < deadline:
        for proc in procs:  # again each round: a raylet may have started a worker meanwhile
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=2)
    return [f"{p.pid} {p.name()}" for p in _cluster_processes(tag)]


def _run(cmd: list[str], env: dict[str, str], timeout: float, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    assert proc.returncode == 0, f"{' '.join(cmd[:3])} ... failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture
def two_node_cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """A head and a worker node started with `ray start`, one CPU each, on two loopback
    addresses: yields (the head's address, the environment to reach it with)."""
    ray_cli = _ray_cli()
    if ray_cli is None:
        pytest.skip("the `ray` command is not installed")
    if not sys.platform.startswith("linux") or not (_can_bind(HEAD_IP) and _can_bind(WORKER_IP)):
        pytest.skip(f"needs the loopback addresses {HEAD_IP} and {WORKER_IP} (Linux)")
    # Short on purpose: Ray's Unix sockets live under it, and their paths are limited to 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="autopeft-ray-", dir="/tmp")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0"}
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    common = ["--num-cpus", "1", "--num-gpus", "0", "--object-store-memory", str(100 * 1024 ** 2),
              "--temp-dir", temp_dir, "--min-worker-port", "0", "--max-worker-port", "0",
              "--disable-usage-stats"]
    address = f"{HEAD_IP}:{_free_port()}"
    try:
        _run([ray_cli, "start", "--head", "--node-ip-address", HEAD_IP, "--port", address.split(":")[1],
              "--include-dashboard", "false", *common], env, timeout=120)
        _run([ray_cli, "start", "--address", address, "--node-ip-address", WORKER_IP, *common], env, timeout=120)
        # `ray start` returns once its node is registered; wait anyway until the GCS lists both
        # nodes alive, from a separate driver (this process keeps no Ray state of the cluster's).
        waited = _run([sys.executable, "-c", _WAIT_FOR_NODES, address], env, timeout=120)
        assert json.loads(waited.strip().splitlines()[-1]) == sorted([HEAD_IP, WORKER_IP]), waited
        yield address, env
    finally:
        left = _stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray processes left running: {left}"


_WAIT_FOR_NODES = """
import json, sys, time
import ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
deadline = time.monotonic() + 60
while True:
    alive = sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])
    if len(alive) >= 2 or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps(alive))
"""


def test_search_runs_trials_on_both_nodes_of_a_cluster(two_node_cluster, tiny_model_dir, tmp_path) -> None:
    address, env = two_node_cluster
    data = write_sentiment_csv(tmp_path / "reviews.csv")
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "autopeft.cli", "search", "--model", str(tiny_model_dir),
           "--train-file", str(data), "--text-column", "review", "--label-column", "verdict",
           "--optimizer", "random", "--trials", "2", "--concurrency", "2", "--max-train-examples", "48",
           "--max-length", "32", "--ray-address", address, "--output-dir", str(out), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=420, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]

    client, parents, children = runs_of(f"sqlite:///{out / 'mlflow.db'}", "autopeft")
    assert len(parents) == 1 and len(children) == 2
    assert parents[0].info.status == "FINISHED"
    assert {c.data.tags["autopeft.status"] for c in children} == {"completed"}, \
        [c.data.tags.get("autopeft.failure") for c in children]
    # One CPU per trial, one per node, two trials at once: one trial on each node.
    assert sorted(c.data.tags["autopeft.node"] for c in children) == [HEAD_IP, WORKER_IP]
    # The front's adapters came back from the trials' checkpoints (via the shared disk here).
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert "adapters" in artifacts
