"""Background jobs: real ``whaleaudit jobs run`` processes building the tiny demo, started, joined, killed,
resumed and cancelled the way the dashboard does it."""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from whaleaudit import jobs
from whaleaudit.audit.store import open_audit
from whaleaudit.errors import WhaleAuditError

pytestmark = pytest.mark.slow  # each job trains the tiny demo's model
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A workspace of its own: the demo's data, model and audits, and the jobs' states under audits/.jobs."""
    monkeypatch.setenv("WHALEAUDIT_HOME", str(tmp_path))
    monkeypatch.delenv("WHALEAUDIT_AUDITS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path


def wait_for(ident, until, timeout=300):
    """Poll the job's state until ``until(job)`` holds; returns the job."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = jobs.read(ident)
        if job is not None and until(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {ident} never got there: {jobs.read(ident)}")


def test_a_job_runs_in_its_own_process_and_every_other_start_joins_it(home):
    arguments = jobs.demo_arguments(home / "audits", "tiny")
    with ThreadPoolExecutor(8) as pool:  # eight tabs clicking at once
        results = list(pool.map(lambda _: jobs.start("demo", arguments), range(8)))
    assert sum(started for _, started in results) == 1
    assert len({job.id for job, _ in results}) == 1
    ident = results[0][0].id
    job = wait_for(ident, lambda j: j.pid is not None)
    assert job.pid != os.getpid() and os.getsid(job.pid) == job.pid  # a session of its own: outlives the server
    assert jobs.start("demo", arguments) == (jobs.read(ident), False) or jobs.read(ident).status == jobs.DONE
    rates, stages = set(), []
    while (job := jobs.read(ident)).active:
        rates.add(job.images_per_second)
        if not stages or stages[-1] != job.stage:
            stages.append(job.stage)
        time.sleep(0.05)
    assert job.status == jobs.DONE and job.share == 1.0 and job.finished >= job.started
    assert job.result == str(home / "audits" / "demo") and open_audit(home / "audits" / "demo").images.shape[0] == 24
    assert any(r and r > 0 for r in rates), "no images per second was ever reported"
    assert any(s.startswith("Training") for s in stages) and any(s.startswith("Computing maps") for s in stages)
    assert "demo: ready" in Path(job.log).read_text()
    state = json.loads((home / "audits" / ".jobs" / f"{ident}.json").read_text())
    assert state["kind"] == "demo" and state["arguments"] == arguments and state["pid"] == job.pid


def test_a_job_outlives_its_starter_and_a_killed_one_reads_dead_with_its_log_and_resumes(home):
    """Started by a process that then exits (a server stopped or restarted), the job goes on; killed, it is
    reported dead, and a new start resumes it from the steps it finished."""
    arguments = jobs.demo_arguments(home / "audits", "tiny")
    server = subprocess.run([sys.executable, "-c", "from whaleaudit import jobs; import sys; "
                             f"print(jobs.start('demo', {arguments!r})[0].id)"], capture_output=True, text=True,
                            check=True)
    job = wait_for(server.stdout.strip(), lambda j: j.stage.startswith("Computing maps") or not j.active)
    assert job.active, job.sentence()
    os.killpg(job.pid, signal.SIGKILL)
    died = wait_for(job.id, lambda j: j.status == jobs.DIED, timeout=30)
    assert "its process" in died.sentence() and died.log in died.sentence() and "resume" in died.sentence()
    assert not (home / "audits" / "demo" / "manifest.json").exists()  # never taken for a finished audit
    again, started = jobs.start("demo", arguments)
    assert started and again.id == job.id
    done = wait_for(job.id, lambda j: not j.active)
    assert done.status == jobs.DONE, done.sentence()
    log = Path(done.log).read_text()
    assert "drawn already" in log and "trained already" in log  # resumed, not started over
    open_audit(home / "audits" / "demo")


def test_a_cancelled_job_stops_with_its_processes_and_says_so(home):
    job, _ = jobs.start("demo", jobs.demo_arguments(home / "audits", "tiny"))
    job = wait_for(job.id, lambda j: j.stage.startswith("Training") or not j.active)
    assert job.active, job.sentence()
    jobs.cancel(job.id)
    done = wait_for(job.id, lambda j: not j.active, timeout=60)
    assert done.status == jobs.CANCELLED and "Cancelled" in done.sentence()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(job.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the job's processes outlived the cancel")
    with pytest.raises(WhaleAuditError, match="is not running \\(cancelled\\)"):
        jobs.cancel(job.id)
    listed = subprocess.run([sys.executable, "-m", "whaleaudit", "jobs"], capture_output=True, text=True)
    assert listed.returncode == 0 and f"{job.id}  cancelled" in listed.stdout
    refused = subprocess.run([sys.executable, "-m", "whaleaudit", "jobs", "cancel", job.id], capture_output=True,
                             text=True)
    assert refused.returncode == 1 and "is not running (cancelled)" in refused.stderr
    jobs.forget(job.id)
    assert jobs.list_jobs() == []


def test_bad_requests_are_refused_with_a_sentence(home):
    with pytest.raises(WhaleAuditError, match="kind='train': no such job"):
        jobs.start("train", {})
    with pytest.raises(WhaleAuditError, match="no job 'demo-x'"):
        jobs.cancel("demo-x")
    folder = jobs.folder()
    folder.mkdir(parents=True)
    (folder / "demo-y.json").write_text("{half")
    (folder / "demo-z.json").write_text('{"id": "demo-z"}')
    for ident in ("demo-y", "demo-z"):
        with pytest.raises(WhaleAuditError, match=rf"{ident}\.json: unreadable job state .* delete it"):
            jobs.read(ident)
    run = subprocess.run([sys.executable, "-m", "whaleaudit", "jobs", "run", "demo-y", "--folder", str(folder),
                          "--lock-fd", "0"], capture_output=True, text=True)
    assert run.returncode == 2 and "started without its lock" in run.stderr


def test_the_dashboard_builds_the_demo_as_a_job_every_session_sees_it_and_a_dead_one_resumes(home, monkeypatch):
    """AppTest sessions as two browser tabs: one starts the build, the other sees its progress and cancels it; a
    build killed with SIGKILL shows as an error with its log, a new click resumes it, and the demo opens."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("WHALEAUDIT_DEMO_RECIPE", "tiny")
    monkeypatch.syspath_prepend(str(REPO))
    first, second = (AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=60) for _ in range(2))
    first.run()
    assert "No audit found" in first.info[0].value
    build = [b for b in first.button if b.label == "Build the demo audit"]
    build[0].click().run()
    ident = jobs.job_id("demo", jobs.demo_arguments(home / "audits", "tiny"))
    assert jobs.read(ident).active
    second.run()
    bars = second.get("progress")
    assert len(bars) == 1 and bars[0].proto.text.startswith("Building the demo audit · ")
    assert [b.label for b in second.button] == ["Cancel"]  # running: no second build to start
    second.button[0].click().run()
    assert wait_for(ident, lambda j: not j.active, timeout=60).status == jobs.CANCELLED
    second.run()
    assert [b.label for b in second.button] == ["Build the demo audit"] and not second.error

    [b for b in second.button if b.label == "Build the demo audit"][0].click().run()
    job = wait_for(ident, lambda j: j.stage.startswith("Training") or not j.active)
    assert job.active, job.sentence()
    os.killpg(job.pid, signal.SIGKILL)
    wait_for(ident, lambda j: j.status == jobs.DIED, timeout=30)
    first.run()
    assert "Building the demo audit failed. The job stopped without finishing" in first.error[0].value
    assert job.log in first.error[0].value
    [b for b in first.button if b.label == "Build the demo audit"][0].click().run()
    done = wait_for(ident, lambda j: not j.active)
    assert done.status == jobs.DONE and "drawn already" in Path(done.log).read_text()  # resumed, not started over
    first.run()
    assert not first.exception and first.title[0].value == "Overview · demo"
    second.run()
    assert not second.exception and second.title[0].value == "Overview · demo"
