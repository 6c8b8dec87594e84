"""The device check (benchmarks/gpu_check.py) on a CPU: without a GPU it stops at once with one
line; its dry run goes through every step (a demo trial on each path, concurrent trials, the
LM's memory, a demo-lm search on a tiny LLaMA) and writes its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the check would run for real")
def test_without_a_gpu_it_stops_at_once_with_one_line(tmp_path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and done.stderr.strip().startswith("gpu_check: no CUDA GPU is visible")
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_dry_run_goes_through_every_step(tmp_path, tiny_llama_dir) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path / "out"),
                           "--tiny-lm", str(tiny_llama_dir)], capture_output=True, text=True, timeout=900,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((tmp_path / "out" / "figures.json").read_text())
    assert {"a_trial_gpu", "a_trial_cpu", "b_concurrent_2", "c_lora_bf16",
            "d_demo_lm_search"} <= set(figures)
    assert figures["a_trial_cpu"]["device"] == "cpu" and figures["a_trial_gpu"]["examples_per_second"] > 0
    assert figures["b_concurrent_2"]["completed"] == 2 and figures["c_lora_bf16"]["peak_memory_mb"] > 0
    assert figures["d_demo_lm_search"]["trials"] == 2
    assert "(a) one demo trial" in (tmp_path / "out" / "summary.md").read_text()
