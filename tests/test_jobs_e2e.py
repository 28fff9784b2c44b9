"""End to end: the demo build started from the dashboard is a background job, seen by every tab, in headless
Chromium against a real ``streamlit run`` server (the tiny demo recipe, so that it ends in seconds).

Two tabs click "Build the demo audit" together and one build runs; a reload shows its progress again; its
process killed with SIGKILL shows as an error naming the log, a new click resumes it, and the demo opens.
"""

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect
from _helpers_dashboard import chromium, free_port, serve, settle

from whaleaudit import jobs

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]
BUILD = "Build the demo audit"


def wait_for(ident, audits, until, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = jobs.read(ident, jobs=jobs.folder(audits))
        if job is not None and until(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {ident} never got there: {jobs.read(ident, jobs=jobs.folder(audits))}")


def test_the_demo_build_outlives_reloads_is_built_once_for_two_tabs_and_resumes_after_a_kill(tmp_path, monkeypatch):
    audits = tmp_path / "audits"
    monkeypatch.setenv("WHALEAUDIT_HOME", str(tmp_path))
    env = dict(os.environ, WHALEAUDIT_AUDITS=str(audits), WHALEAUDIT_DEMO_RECIPE="tiny", OMP_NUM_THREADS="1")
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port)]
    ident = jobs.job_id("demo", jobs.demo_arguments(audits, "tiny"))
    with chromium() as browser, serve(command, port, cwd=REPO, env=env, log=tmp_path / "streamlit.log") as base:
        tabs = [browser.new_page(viewport={"width": 1400, "height": 1000}) for _ in range(2)]
        for tab in tabs:
            tab.goto(base)
            tab.get_by_role("button", name=BUILD).wait_for(timeout=60_000)
        for tab in tabs:  # both click before either has seen the build start
            tab.get_by_role("button", name=BUILD).click()
        for tab in tabs:
            tab.get_by_text("Building the demo audit ·").wait_for(timeout=60_000)
        assert [j.id for j in jobs.list_jobs(jobs=jobs.folder(audits))] == [ident]

        wait_for(ident, audits, lambda j: j.stage not in ("", "starting") or not j.active)  # under way
        tabs[0].reload()
        settle(tabs[0], "Building the demo audit ·")  # the reloaded page's run has ended: no second offer
        assert tabs[0].get_by_role("button", name=BUILD).count() == 0
        job = wait_for(ident, audits, lambda j: j.stage.startswith(("Training", "Computing maps")) or not j.active)
        assert job.active, job.sentence()
        os.killpg(job.pid, signal.SIGKILL)
        for tab in tabs:
            error = tab.get_by_text("Building the demo audit failed. The job stopped without finishing")
            expect(error).to_contain_text(job.log, timeout=60_000)

        tabs[1].get_by_role("button", name=BUILD).click()
        for tab in tabs:
            tab.get_by_role("heading", name="Overview · demo").wait_for(timeout=120_000)
        log = Path(job.log).read_text()
        assert "drawn already" in log and log.count("demo: Drawing") == 1  # resumed, not started over
        settle(tabs[0], "Overview · demo")
        assert tabs[0].locator('[data-testid="stException"]').count() == 0
    done = jobs.read(ident, jobs=jobs.folder(audits))
    assert done.status == jobs.DONE
