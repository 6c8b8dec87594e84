"""`make demo` as a new user meets it: its config run by the real CLI on the real model and data
(Ray Tune and MLflow for real), what it prints and stores; then the MLflow UI in a real headless
Chromium, following the README: `autopeft ui` with no flags. Its first printed link is the latest
search's page, whose description shows the front (test scores, configurations); the experiment
opens on its runs, not on MLflow's GenAI trace view. Before, the demo logged to the experiment
`demo` while `ui` looked in `autopeft` and printed no link."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

from autopeft.results.tracking import EXPERIMENT_KIND, NOTE
from autopeft.tasks import demo_model_path

from test_search_e2e import runs_of

pytestmark = pytest.mark.slow
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def demo_cli_search(tmp_path_factory):
    """What a new user does first: `make demo`'s config (``examples/demo.yaml``: MOBO, early
    stopping, two trials at once, the final evaluation beside LoRA r 8 q/v, the experiment
    ``demo``, the demo's fidelity of 1,200 examples) run by the real CLI, with 4 trials instead
    of 8 (with 3, no trial reached the front: two stopped early, one at the majority class). At
    400 examples (50 steps) every trial stayed at the majority class: the demo's fidelity is the
    least at which most of its space learns (80% of the table's configurations).
    ``(the finished process, the output folder, the folder it ran in)``."""
    tmp = tmp_path_factory.mktemp("demo")
    root = Path(__file__).resolve().parents[1]
    shutil.copytree(root / "examples", tmp / "examples")
    config = yaml.safe_load((root / "examples" / "demo.yaml").read_text())
    config.update(trials=4)
    (tmp / "demo_small.yaml").write_text(yaml.safe_dump(config))
    out = tmp / "runs"
    cmd = [sys.executable, "-m", "autopeft.cli", "search", "--config", "demo_small.yaml", "--output-dir", str(out),
           "--objective", "accuracy", "--objective", "trainable_percent", "--objective", "macro_f1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out, tmp


@pytest.fixture(scope="module")
def browser() -> str:
    if BROWSER is None:
        if os.environ.get("AUTOPEFT_REQUIRE_BROWSER"):  # .ci/run installs Chromium: it must be there
            pytest.fail("no Chromium found, and AUTOPEFT_REQUIRE_BROWSER is set")
        pytest.skip("no Chromium here (apt-get install chromium)")
    return BROWSER


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui(demo_cli_search):
    """The demo's search and `autopeft ui` serving its store, with no flag but the folder and
    a free port: (the search's process output, the links it printed in order, the folder)."""
    _, out, tmp = demo_cli_search
    port = _free_port()
    log = (tmp / "ui.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "autopeft.cli", "ui", "--output-dir", str(out),
                               "--port", str(port)], stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the MLflow UI did not start") from None
                time.sleep(1)
        links = [tuple(line.strip().split(": ", 1)) for line in (tmp / "ui.log").read_text().splitlines()
                 if line.startswith("  ") and ": http://" in line]
        yield out, links, tmp
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def _render(browser: str, url: str, tmp: Path, screenshot: Path | None = None) -> str:
    """The page's DOM after its scripts ran (and a screenshot of it)."""
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp / 'chromium-profile'}", "--window-size=1400,1000",
             "--virtual-time-budget=30000"]
    if screenshot is not None:
        subprocess.run(flags + [f"--screenshot={screenshot}", url], capture_output=True, timeout=180)
    return subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=180).stdout


def _latest(out: Path):
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("demo")
    parent = client.search_runs([experiment.experiment_id], "tags.`autopeft.role` = 'search'")[0]
    trials = client.search_runs([experiment.experiment_id], "tags.`autopeft.role` = 'trial'")
    return client, experiment, parent, [t for t in trials if t.data.tags.get("autopeft.pareto") == "true"]


def test_the_first_link_ui_prints_shows_the_demo_front_in_a_real_browser(ui, browser) -> None:
    out, links, tmp = ui
    client, experiment, parent, front = _latest(out)
    assert experiment.tags.get(EXPERIMENT_KIND[0]) == EXPERIMENT_KIND[1]
    note = parent.data.tags[NOTE]
    assert "Pareto front:" in note and "test_accuracy" in note and all(t.info.run_name in note for t in front)

    what, link = links[0]  # the first thing `autopeft ui` prints
    assert what == f"the front of the latest search ({parent.info.run_name}, experiment demo)"
    assert parent.info.run_id in link
    shot = tmp / "search-run-page.png"
    page = _render(browser, link, tmp, shot)
    assert "Pareto front:" in page, page[-3000:]
    for trial in front:
        assert trial.info.run_name in page
    assert "test_accuracy" in page
    assert shot.is_file() and shot.stat().st_size > 20_000  # a rendered page, not a blank one
    if os.environ.get("AUTOPEFT_SCREENSHOTS"):  # keep it for people to look at
        shutil.copy(shot, Path(os.environ["AUTOPEFT_SCREENSHOTS"]) / shot.name)


def test_the_experiment_opens_on_its_runs_not_on_traces(ui, browser) -> None:
    out, links, tmp = ui
    _, _, parent, _ = _latest(out)
    searches = dict(links)["the searches of experiment demo"]
    shot = tmp / "experiment-page.png"
    page = _render(browser, searches, tmp, shot)
    assert parent.info.run_name in page, page[-3000:]
    assert "Detect Issues in Your Traces" not in page  # MLflow's GenAI overview
    if os.environ.get("AUTOPEFT_SCREENSHOTS"):
        shutil.copy(shot, Path(os.environ["AUTOPEFT_SCREENSHOTS"]) / shot.name)


def test_cli_search_on_the_demo(demo_cli_search, tmp_path) -> None:
    proc, out, _ = demo_cli_search
    assert "Pareto front" in proc.stdout and "trial-000" in proc.stdout
    # The reference point and its sources, in the log and after the front.
    rule = ("hypervolume reference: accuracy 0.", "(the majority class on dev)", "trainable_percent",
            "(the space's largest)", "learned nothing")
    assert all(part in proc.stdout for part in rule) and all(part in proc.stderr for part in rule)

    uri = f"sqlite:///{out / 'mlflow.db'}"
    client, parents, children = runs_of(uri, "demo")
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.data.tags["autopeft.status"] for c in children} <= {"completed", "stopped", "failed"}
    completed = [c for c in children if c.data.tags["autopeft.status"] == "completed"]
    assert completed, [c.data.tags.get("autopeft.failure") for c in children]
    for child in completed:
        assert {"accuracy", "trainable_percent", "macro_f1", "dev_accuracy"} <= set(child.data.metrics)
        assert any(k.startswith("layers.") for k in child.data.params)
    on_front = [c for c in children if c.data.tags["autopeft.pareto"] == "true"]
    assert on_front and all("test_accuracy" in c.data.metrics for c in on_front)
    majority = float(parent.data.params["reference_rule"].split("accuracy ")[1].split(" ")[0])
    assert all(c.data.metrics["accuracy"] > majority for c in on_front)
    assert "the majority class on dev" in parent.data.params["reference_rule"]
    assert len(client.get_metric_history(parent.info.run_id, "hypervolume")) == 4

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto_front.csv", "pareto_front.png", "pareto_front.html", "adapters"} <= artifacts
    local = Path(client.download_artifacts(parent.info.run_id, "", str(tmp_path / "dl")))
    table = pd.read_csv(local / "pareto_front.csv")
    assert sorted(table["trial"]) == sorted(c.info.run_name for c in on_front)
    # Every exported adapter loads with stock PEFT onto a fresh base model.
    for name in table["trial"]:
        base = AutoModelForSequenceClassification.from_pretrained(demo_model_path(), num_labels=2)
        model = PeftModel.from_pretrained(base, str(local / "adapters" / name))
        assert any("lora_A" in n for n, _ in model.named_parameters())

    front = subprocess.run([sys.executable, "-m", "autopeft.cli", "front", "--output-dir", str(out)],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert front.returncode == 0, front.stderr
    assert f"front of {len(on_front)}" in front.stdout
    for name in table["trial"]:
        assert name in front.stdout

    # For scripts: the same runs as JSON and CSV, with MLflow's own metric and param names.
    def results(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "autopeft.cli", *args, "--output-dir", str(out)],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done.stdout

    front_rows = json.loads(results("front", "--format", "json"))
    assert {r["run_id"] for r in front_rows} == {c.info.run_id for c in on_front}
    assert all(r["pareto"] is True and r["status"] == "completed" for r in front_rows)
    trial_rows = list(csv.DictReader(io.StringIO(results("trials", "--format", "csv"))))
    assert sorted(int(r["trial"]) for r in trial_rows) == sorted(int(c.data.tags["autopeft.trial_number"])
                                                                 for c in children)
    by_id = {r["run_id"]: r for r in trial_rows}
    for child in children:
        row = by_id[child.info.run_id]
        assert set(child.data.metrics) | set(child.data.params) <= set(row)
        for name, value in child.data.metrics.items():
            assert float(row[name]) == pytest.approx(value)
