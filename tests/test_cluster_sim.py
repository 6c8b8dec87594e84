"""The cluster-scale simulation (benchmarks/cluster_sim.py) at a toy size: the real driver,
runner, optimizer and MLflow store around trials that sleep, on a Ray head that declares more
GPUs than the machine has. Every trial completes, each declared GPU is used and none holds two
trials at once, and the figures the plan for large clusters rests on are written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cluster_sim.py"


def test_a_simulated_gpu_cluster_runs_every_trial_one_to_a_gpu(tmp_path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--optimizers", "random", "--trials", "12",
                           "--concurrency", "4", "--duration", "1", "2", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads((tmp_path / "figures.json").read_text())
    assert row["completed"] == 12 and row["asked"] == 12
    assert row["gpus_used"] == 4 and row["overlaps"] == 0
    assert row["driver_cpu_per_trial"] > 0 and row["writes_per_trial"] > 0 and 0 < row["busy"] <= 1
    asks = (tmp_path / "asks_random.csv").read_text().splitlines()
    assert asks[0] == "ask,told,pending,seconds" and len(asks) == 13
    assert "| random | 12 of 12 asked |" in (tmp_path / "cluster_sim.md").read_text()
