"""The MLflow UI as a user sees it, in a real headless Chromium: `autopeft ui` opens the
experiment on its runs (not MLflow's GenAI trace view), and the search's run page shows the
front table (test scores, configurations) in its description."""

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
def ui(tiny_search):
    """A finished search and `autopeft ui` serving its store."""
    result, tmp = tiny_search
    port = _free_port()
    log = (tmp / "ui.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "autopeft.cli", "ui", "--output-dir", str(tmp / "runs"),
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
        links = dict(line.strip().split(": ", 1) for line in (tmp / "ui.log").read_text().splitlines()
                     if line.startswith("  ") and ": http://" in line)
        yield result, links, tmp
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


def test_the_search_run_page_shows_the_front_in_a_real_browser(ui, browser) -> None:
    result, links, tmp = ui
    client = MlflowClient(result.tracking_uri)
    experiment = client.get_experiment_by_name("autopeft")
    assert experiment.tags.get(EXPERIMENT_KIND[0]) == EXPERIMENT_KIND[1]
    note = client.get_run(result.run_id).data.tags[NOTE]
    # The front leads the description until a final evaluation is put above it (test_evaluate's).
    assert f"**Pareto front: {len(result.front)} of 3 completed trials**" in note
    assert note.startswith(("**Pareto front", "**Final evaluation"))
    assert "test_accuracy" in note and all(t.name in note for t in result.front)

    shot = tmp / "search-run-page.png"
    search_name = client.get_run(result.run_id).info.run_name
    link = links[f"the front of the latest search ({search_name})"]  # what `autopeft ui` prints
    assert result.run_id in link
    page = _render(browser, link, tmp, shot)
    assert "Pareto front:" in page, page[-3000:]
    for trial in result.front:
        assert trial.name in page
    assert "test_accuracy" in page
    assert shot.is_file() and shot.stat().st_size > 20_000  # a rendered page, not a blank one
    if os.environ.get("AUTOPEFT_SCREENSHOTS"):  # keep it for people to look at
        shutil.copy(shot, Path(os.environ["AUTOPEFT_SCREENSHOTS"]) / shot.name)


def test_the_experiment_opens_on_its_runs_not_on_traces(ui, browser) -> None:
    result, links, tmp = ui
    search_name = MlflowClient(result.tracking_uri).get_run(result.run_id).info.run_name
    shot = tmp / "experiment-page.png"
    page = _render(browser, links["the searches"], tmp, shot)
    assert search_name in page, page[-3000:]
    assert "Detect Issues in Your Traces" not in page  # MLflow's GenAI overview
    if os.environ.get("AUTOPEFT_SCREENSHOTS"):
        shutil.copy(shot, Path(os.environ["AUTOPEFT_SCREENSHOTS"]) / shot.name)
