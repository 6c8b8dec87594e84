"""`autopeft search --ray-address HOST:PORT` on an existing two-node Ray cluster.

The module starts a real cluster with the `ray` CLI on this machine: a head node and a worker
node, each with one CPU, so that two concurrent trials (one CPU each) must run one on each node.
A 2-trial search on the tiny model, with the real CLI in a subprocess, shows from MLflow that the
trials ran on both nodes: every child run's ``autopeft.node`` tag is the IP address of the Ray
node its trial ran on, and the two nodes have different loopback addresses (127.0.0.2 and
127.0.0.3; all of 127.0.0.0/8 is loopback on Linux), so that the tags tell them apart.

Why not 127.0.0.1: Ray (2.60) rewrites a node IP address of ``127.0.0.1``/``localhost`` to the
machine's routable address, in `ray start --node-ip-address` and in the address a node or driver
connects to (unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which `ray start` refuses for a worker
node). Only a node whose IP address is exactly 127.0.0.1 binds its ports to loopback alone: these
two nodes' GCS and raylet ports listen on all interfaces while the module runs (the runtime-env
agents bind the node's IP). So the cluster requires a token (RAY_AUTH_MODE=token), a random one of
its own in RAY_AUTH_TOKEN; ~/.ray/auth_token is neither read nor written.

Shared filesystem, what this shows and what it does not. Both nodes are on this machine's disk,
but where the test may make a mount namespace (as root, with `unshare`), the worker node runs in
one in which a folder of the test is hidden under an empty tmpfs:

* The training data needs no shared filesystem: the train file is in the hidden folder, the
  worker node cannot see it, and its trial completes anyway. The driver loads and tokenizes the
  data and ships it inside the ``SearchSetup`` that ``tune.with_parameters`` puts in Ray's
  object store.
* The model folder and the output folder must be at the same path on every node: trials load the
  model from ``setup.model_path`` and Tune writes their checkpoints (adapters) under
  ``OUTPUT_DIR/ray``, which the driver reads back. autopeft checks this before the trials: a
  search whose model folder is hidden from the worker node fails, naming the node and the folder.
  Both folders are visible to both nodes in the search that succeeds.
* Without a mount namespace nothing is hidden: the search still shows trials on both nodes, the
  data claim is then not shown, and the model-folder test is skipped.

The cluster runs under its own short ``--temp-dir`` with random ports; it is stopped by killing
the processes it started (those that name that directory, and their descendants), never with
`ray stop`, which stops every Ray on the machine. Teardown fails if any of them is left.
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
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from conftest import write_sentiment_csv
from test_search_e2e import runs_of

pytestmark = pytest.mark.slow

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"


@dataclass
class Cluster:
    address: str       #: the head's GCS address, for --ray-address
    env: dict[str, str]  #: the environment that reaches it (the token)
    temp_dir: str
    #: a folder the worker node cannot see (None where no mount namespace can be made)
    hidden: Path | None

    def worker_sees(self, path: Path) -> bool:
        """Whether ``path`` exists in the worker node's mount namespace."""
        raylets = [p for p in _cluster_processes(self.temp_dir)
                   if p.name() == "raylet" and f"--node_ip_address={WORKER_IP}" in p.cmdline()]
        assert len(raylets) == 1, raylets
        return Path(f"/proc/{raylets[0].pid}/root{path}").exists()


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


#: runs a command in a new mount namespace with an empty tmpfs over the folder "$0"
_HIDE = 'mount -t tmpfs -o size=1m autopeft-hidden "$0" && exec "$@"'


def _hiding_prefix(folder: Path) -> list[str] | None:
    """The command prefix that runs a command with ``folder`` hidden, if this process may make
    a mount namespace (root; user namespaces are left alone: untested with Ray); else None."""
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux") or os.geteuid() != 0:
        return None
    prefix = [unshare, "--mount", "--propagation", "private", "sh", "-c", _HIDE, str(folder)]
    probe = folder / "probe"
    probe.touch()
    try:
        check = subprocess.run([*prefix, "test", "!", "-e", str(probe)], capture_output=True, timeout=30)
    finally:
        probe.unlink()
    return prefix if check.returncode == 0 else None


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


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A head and a worker node started with `ray start`, one CPU each, on two loopback
    addresses; the worker node in a mount namespace that hides a folder, where possible."""
    ray_cli = _ray_cli()
    if ray_cli is None:
        pytest.skip("the `ray` command is not installed")
    if not sys.platform.startswith("linux") or not (_can_bind(HEAD_IP) and _can_bind(WORKER_IP)):
        pytest.skip(f"needs the loopback addresses {HEAD_IP} and {WORKER_IP} (Linux)")
    hidden = tmp_path_factory.mktemp("worker-cannot-see")
    hide = _hiding_prefix(hidden)
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
        _run([*(hide or []), ray_cli, "start", "--address", address, "--node-ip-address", WORKER_IP, *common],
             env, timeout=120)
        # `ray start` returns once its node is registered; wait anyway until the GCS lists both
        # nodes alive, from a driver of its own (this process keeps no Ray state of the cluster).
        waited = _run([sys.executable, "-c", _WAIT_FOR_NODES, address], env, timeout=120)
        assert json.loads(waited.strip().splitlines()[-1]) == [HEAD_IP, WORKER_IP], waited
        cluster = Cluster(address, env, temp_dir, hidden if hide else None)
        if hide:
            marker = hidden / "marker"
            marker.touch()
            assert not cluster.worker_sees(marker) and cluster.worker_sees(Path(temp_dir))
        yield cluster
    finally:
        left = _stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray processes left running: {left}"


def _search(cluster: Cluster, model: Path, data: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "autopeft.cli", "search", "--model", str(model), "--train-file", str(data),
           "--text-column", "review", "--label-column", "verdict", "--optimizer", "random", "--trials", "3",
           "--concurrency", "2", "--max-train-examples", "48", "--max-length", "32",
           "--ray-address", cluster.address, "--output-dir", str(out), "--quiet", "--no-learned-only"]
    return subprocess.run(cmd, capture_output=True, text=True, env=cluster.env, timeout=420, cwd=out.parent)


def test_search_runs_trials_on_both_nodes_of_a_cluster(cluster, tiny_model_dir, tmp_path) -> None:
    data = write_sentiment_csv((cluster.hidden or tmp_path) / "reviews.csv")
    if cluster.hidden:
        assert data.exists() and not cluster.worker_sees(data)
        assert cluster.worker_sees(tiny_model_dir) and cluster.worker_sees(tmp_path)
    out = tmp_path / "runs"
    proc = _search(cluster, tiny_model_dir, data, out)
    assert proc.returncode == 0, proc.stderr[-4000:]

    client, parents, children = runs_of(f"sqlite:///{out / 'mlflow.db'}", "autopeft")
    assert len(parents) == 1 and len(children) == 3
    assert parents[0].info.status == "FINISHED"
    assert [c.data.tags["autopeft.status"] for c in children] == ["completed"] * 3, \
        [c.data.tags.get("autopeft.failure") for c in children]
    # One CPU per trial, one per node, two trials at once: both nodes train; the worker node's
    # trials trained on data from a file that node cannot see (where it was hidden). Three
    # trials, not two: a trial of a few seconds can end before the worker's actor has started,
    # and Ray Tune then reuses the head's actor for the second (it did once in 2026-12-06's run);
    # a third trial makes that less likely, not impossible.
    assert {c.data.tags["autopeft.node"] for c in children} == {HEAD_IP, WORKER_IP}
    # The front's adapters came back from the trials' checkpoints (through the shared disk).
    assert "adapters" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}


def test_a_model_folder_that_a_node_cannot_see_is_named(cluster, tiny_model_dir, tmp_path) -> None:
    if cluster.hidden is None:
        pytest.skip("cannot hide a folder from one node here (a mount namespace needs root and unshare)")
    model = cluster.hidden / "model"
    shutil.copytree(tiny_model_dir, model)
    assert not cluster.worker_sees(model)
    proc = _search(cluster, model, write_sentiment_csv(tmp_path / "reviews.csv"), tmp_path / "runs")
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert WORKER_IP in proc.stderr and str(model) in proc.stderr, proc.stderr[-4000:]
