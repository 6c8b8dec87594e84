"""A search against a real `mlflow server` (SQLite backend, proxied artifacts), with two
trials logging at once and the server down for a while in the middle: MLflow's client
retries with backoff (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, 7 by default: about 4 minutes), so
nothing is lost."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import autopeft
from autopeft.results.tracking import PARENT, ROLE, STATUS

TRIALS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow server` on 127.0.0.1:``port``; stop() and start() again keep its store."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port, self.process = root, port, None
        self.uri = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        mlflow = Path(sys.executable).parent / "mlflow"
        # One worker and no job runner: a plain server takes ~40 s to start and leaves workers behind.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.process = subprocess.Popen(
            [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2)
                return
            except OSError:
                assert self.process.poll() is None, "mlflow server exited"
                time.sleep(0.5)
        raise TimeoutError("mlflow server did not answer")

    def stop(self) -> None:
        os.killpg(self.process.pid, 15)
        self.process.wait(timeout=30)


@pytest.fixture
def server(tmp_path):
    server = Server(tmp_path / "server", _free_port())
    server.start()
    yield server
    if server.process.poll() is None:
        server.stop()


@pytest.mark.slow
def test_a_search_logs_to_a_tracking_server_that_goes_down_for_a_while(
        server, tiny_model_dir, sentiment_csv, tmp_path) -> None:
    client = MlflowClient(server.uri)
    outage: dict[str, float] = {}

    def take_the_server_down_after_a_trial() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            exp = client.get_experiment_by_name("served")
            if exp and client.search_runs([exp.experiment_id], f"tags.`{STATUS}` = 'completed'"):
                break
            time.sleep(0.3)
        server.stop()
        outage["from"] = time.monotonic()
        time.sleep(8)
        server.start()
        outage["to"] = time.monotonic()

    chaos = threading.Thread(target=take_the_server_down_after_a_trial, daemon=True)
    chaos.start()
    result = autopeft.search(
        task="classification", model=str(tiny_model_dir), train_file=str(sentiment_csv), text_column="review",
        label_column="verdict", optimizer="random", trials=TRIALS, concurrency=2, max_train_examples=160,
        max_length=32, epochs=2, tracking_uri=server.uri, experiment="served", output_dir=str(tmp_path / "runs"),
        progress=False)
    chaos.join(timeout=200)
    assert outage.get("to"), "the server was never taken down and back"
    assert outage["to"] - outage["from"] >= 8

    exp = client.get_experiment_by_name("served")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parent = next(r for r in runs if r.data.tags.get(ROLE) == "search")
    trials = [r for r in runs if r.data.tags.get(PARENT) == parent.info.run_id]
    assert parent.info.run_id == result.run_id and parent.data.tags[STATUS] == "completed"
    assert len(trials) == TRIALS and all(r.data.tags[STATUS] == "completed" for r in trials)
    for run, record in zip(sorted(trials, key=lambda r: r.info.run_name), result.trials):
        assert run.data.metrics["accuracy"] == pytest.approx(record.objectives["accuracy"])
        # the curve points logged while the server was away are there too
        assert len(client.get_metric_history(run.info.run_id, "dev_accuracy")) >= 2
    assert "pareto_front.csv" in {a.path for a in client.list_artifacts(result.run_id)}
