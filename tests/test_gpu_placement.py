"""GPU trials placed as Ray places them, proven on a CPU machine: a head started with
`ray start --num-gpus 2` declares two GPUs, and Ray schedules by declared resources, so this
is autopeft's side of a GPU cluster, faithfully. Each trial's run names the GPU ids Ray
assigned it and the device it trained on (the CPU here, said so); no declared GPU holds more
trials at once than ``1 / gpus_per_trial``; the default split is the GPUs over the
concurrent trials; and a trial asking for more GPU than any node has is a one-line error, not
a wait for ever."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import write_sentiment_csv
from test_ray_cluster import _free_port, _ray_cli, _run, _stop_cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gpu_head():
    """A one-node Ray started with `ray start`, 4 CPUs and 2 declared GPUs: (address, env)."""
    ray_cli = _ray_cli()
    if ray_cli is None:
        pytest.skip("the `ray` command is not installed")
    temp_dir = tempfile.mkdtemp(prefix="autopeft-ray-", dir="/tmp")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0"}
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    address = f"127.0.0.1:{_free_port()}"
    try:
        _run([ray_cli, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", address.split(":")[1],
              "--num-cpus", "4", "--num-gpus", "2", "--include-dashboard", "false",
              "--object-store-memory", str(100 * 1024 ** 2), "--temp-dir", temp_dir, "--disable-usage-stats"],
             env, timeout=120)
        yield address, env
    finally:
        left = _stop_cluster(temp_dir)
        assert not left, f"Ray processes left running: {left}"


def _search(address: str, env: dict, model: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    data = write_sentiment_csv(out.parent / "reviews.csv")
    cmd = [sys.executable, "-m", "autopeft.cli", "search", "--model", str(model), "--train-file", str(data),
           "--text-column", "review", "--label-column", "verdict", "--optimizer", "random",
           "--max-train-examples", "48", "--max-length", "32", "--ray-address", address,
           "--output-dir", str(out), "--quiet", "--no-learned-only", *flags]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=out.parent)


def test_trials_pack_two_to_a_declared_gpu_and_name_it(gpu_head, tiny_model_dir, tmp_path) -> None:
    address, env = gpu_head
    out = tmp_path / "runs"
    proc = _search(address, env, tiny_model_dir, out, "--trials", "8", "--concurrency", "4", "--gpus-per-trial", "0.5")
    assert proc.returncode == 0, proc.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("autopeft")
    trials = client.search_runs([experiment.experiment_id], "tags.`autopeft.role` = 'trial'")
    assert len(trials) == 8
    for run in trials:
        tags = run.data.tags
        assert tags["autopeft.gpus"] in ("0", "1"), tags
        # The CPU, said so: Ray assigned a GPU that this machine does not have.
        assert tags["autopeft.device"].startswith("cpu: no CUDA device") and f"GPU {tags['autopeft.gpus']}" in \
            tags["autopeft.device"]
    assert {run.data.tags["autopeft.gpus"] for run in trials} == {"0", "1"}
    # No declared GPU ever held more than 1 / 0.5 = 2 trials at once.
    events = defaultdict(list)
    for run in trials:
        events[run.data.tags["autopeft.gpus"]] += [(run.info.start_time, 1), (run.info.end_time, -1)]
    for gpu, points in events.items():
        load = peak = 0
        for _, change in sorted(points, key=lambda p: (p[0], p[1])):  # an end before a start at the same ms
            load += change
            peak = max(peak, load)
        assert peak <= 2, (gpu, peak)


def test_the_default_split_is_the_gpus_over_the_concurrent_trials(gpu_head) -> None:
    address, env = gpu_head
    probe = ("import json, sys, ray; from autopeft.driver.runner import plan_resources; "
             "ray.init(address=sys.argv[1], log_to_driver=False, logging_level='ERROR'); "
             "print(json.dumps([plan_resources(n).gpus_per_trial for n in (1, 2, 4, 8)]))")
    done = subprocess.run([sys.executable, "-c", probe, address], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [1.0, 1.0, 0.5, 0.25]


def test_a_trial_asking_more_gpu_than_any_node_has_is_refused_at_once(gpu_head, tiny_model_dir, tmp_path) -> None:
    address, env = gpu_head
    proc = _search(address, env, tiny_model_dir, tmp_path / "runs", "--trials", "1", "--gpus-per-trial", "3")
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = [line for line in proc.stderr.splitlines() if "GPU" in line]
    assert error and "asks for 3 GPUs and the largest node has 2" in error[-1], proc.stderr[-2000:]
