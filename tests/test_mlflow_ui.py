"""The MLflow UI as a new user meets it, in a real headless Chromium, following the README:
`make demo`'s config (at a small fidelity), then `autopeft ui` with no flags. Its first printed
link is the latest search's page, whose description shows the front (test scores,
configurations); the experiment opens on its runs, not on MLflow's GenAI trace view. Before,
the demo logged to the experiment `demo` while `ui` looked in `autopeft` and printed no link."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from autopeft.results.tracking import EXPERIMENT_KIND, NOTE

pytestmark = pytest.mark.slow
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


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
