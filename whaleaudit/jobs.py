"""Background jobs: long work started from the dashboard runs in its own process, not in a browser session.

A job is a detached ``python -m whaleaudit jobs run <id>`` process in its own session (``start_new_session``), so
a reload, a closed tab or a restarted server never stops it. Its state is ``<audits>/.jobs/<id>.json``, written
atomically by the job itself as it goes: kind, arguments, pid, stage, share done, images per second, start and
end, the error in a sentence, the log file (``<id>.log``, the process's output). The id follows from the kind and
the arguments, so asking for the same work again joins the running job.

While a job runs, its process holds an exclusive ``flock`` on ``<id>.lock``; the starter takes that lock before
it starts the process and hands it over (the process inherits the locked file), so no two processes ever run the
same job. A job whose state says it runs but whose lock is free has died (killed, or the machine restarted):
it is reported as such, and starting it again resumes the work (the demo build and the precompute resume from
what they left). Cancelling sends SIGTERM to the job's process group.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, fields
from pathlib import Path

from . import workspace
from .errors import WhaleAuditError
from .files import write_json

log = logging.getLogger(__name__)

FOLDER = ".jobs"
#: States a job writes; "died" is never written: it is what a "running" state without its process reads as.
RUNNING, DONE, FAILED, CANCELLED, DIED = "running", "done", "failed", "cancelled", "died"
#: Seconds between two progress writes (a new stage, and a step's first rate, are written at once).
WRITE_EVERY = 0.5
#: How long a starter retries a lock held for an instant by someone reading the state (see :func:`_is_locked`).
LOCK_PATIENCE = 0.5


@dataclass
class Job:
    """A job's state as read from its file; ``status`` is "died" where the file says running but nobody runs it."""

    id: str
    kind: str
    arguments: dict
    status: str
    log: str
    pid: int | None = None
    stage: str = ""
    share: float = 0.0
    images_per_second: float | None = None
    started: float | None = None
    updated: float | None = None
    finished: float | None = None
    error: str | None = None
    result: str | None = None

    @property
    def active(self) -> bool:
        return self.status == RUNNING

    @property
    def title(self) -> str:
        """What the job does, for a page's progress bar."""
        if self.kind == "demo":
            return "Building the demo audit"
        if self.kind == "concepts":
            return f"Finding the evidence concepts of {Path(self.arguments['audit']).name}"
        return f"Job {self.id}"

    def sentence(self) -> str:
        """What became of the job, in a sentence a page can show."""
        if self.status == FAILED:
            return f"{self.error} (log: {self.log})"
        if self.status == DIED:
            return (f"The job stopped without finishing: its process ({self.pid}) is gone, killed or stopped by a "
                    f"restart. Its log is {self.log}. Start it again to resume where it stopped.")
        if self.status == CANCELLED:
            return f"Cancelled (log: {self.log})."
        if self.status == DONE:
            return f"Done: {self.result}."
        rate = f", {self.images_per_second:.0f} images/s" if self.images_per_second else ""
        return f"{self.stage or 'starting'}: {self.share:.0%}{rate}"


def folder(audits: Path | None = None) -> Path:
    """Where the jobs' states live: ``<audits>/.jobs`` (the dashboard's audits folder by default)."""
    return Path(audits if audits is not None else workspace.audits()) / FOLDER


def job_id(kind: str, arguments: dict) -> str:
    """The same kind with the same arguments is the same job."""
    digest = hashlib.sha256(json.dumps(arguments, sort_keys=True).encode()).hexdigest()[:10]
    return f"{kind}-{digest}"


def start(kind: str, arguments: dict, *, jobs: Path | None = None) -> tuple[Job, bool]:
    """Start the job ``kind`` with ``arguments`` in its own process, or join it if it runs already.

    Returns the job and whether this call started it. ``arguments`` must be JSON; the job reads them back.
    """
    if kind not in KINDS:
        raise WhaleAuditError(f"kind={kind!r}: no such job; choose one of {sorted(KINDS)}.")
    jobs = folder() if jobs is None else Path(jobs)
    jobs.mkdir(parents=True, exist_ok=True)
    ident = job_id(kind, arguments)
    fd = _take_lock(jobs / f"{ident}.lock", patience=LOCK_PATIENCE)
    if fd is None:
        return _joined(jobs, ident), False
    try:
        log_path = jobs / f"{ident}.log"
        write_json(jobs / f"{ident}.json", {"id": ident, "kind": kind, "arguments": arguments, "status": RUNNING,
                                            "log": str(log_path), "pid": None, "stage": "starting", "share": 0.0,
                                            "started": time.time(), "updated": time.time()})
        with open(log_path, "wb") as out:
            command = [sys.executable, "-m", "whaleaudit", "jobs", "run", ident, "--folder", str(jobs),
                       "--lock-fd", str(fd)]
            process = subprocess.Popen(command, pass_fds=(fd,), start_new_session=True, stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=subprocess.STDOUT)
    finally:
        os.close(fd)  # the job's process holds the lock from here on
    threading.Thread(target=process.wait, daemon=True).start()  # reaps it when it ends: no zombie in the server
    return read(ident, jobs=jobs), True


def _joined(jobs: Path, ident: str) -> Job:
    """The running job another call started; its state file may still be a moment away."""
    for _ in range(50):
        job = read(ident, jobs=jobs)
        if job is not None:
            return job
        time.sleep(0.02)
    raise WhaleAuditError(f"{jobs / ident}.lock is held but the job wrote no state; remove the lock file if no "
                          "whaleaudit process runs.")


def read(ident: str, *, jobs: Path | None = None) -> Job | None:
    """The job ``ident`` as its file says, "died" where it says running and no process holds its lock."""
    jobs = folder() if jobs is None else Path(jobs)
    path = jobs / f"{ident}.json"
    job = _read_state(path)
    if job is not None and job.status == RUNNING and not _is_locked(jobs / f"{ident}.lock"):
        job = _read_state(path)  # it may have ended just now
        if job is not None and job.status == RUNNING:
            job.status = DIED
    return job


def _read_state(path: Path) -> Job | None:
    try:
        state = json.loads(path.read_text())
        return Job(**{k: v for k, v in state.items() if k in {f.name for f in fields(Job)}})
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, AttributeError) as e:
        raise WhaleAuditError(f"{path}: unreadable job state ({e}); delete it to forget the job.") from None


def list_jobs(*, jobs: Path | None = None) -> list[Job]:
    """Every job with a state file, the latest started first."""
    jobs = folder() if jobs is None else Path(jobs)
    found = [read(p.stem, jobs=jobs) for p in sorted(jobs.glob("*.json"))] if jobs.is_dir() else []
    return sorted((j for j in found if j is not None), key=lambda j: j.started or 0, reverse=True)


def cancel(ident: str, *, jobs: Path | None = None) -> Job:
    """Ask a running job to stop (SIGTERM to its process group); it writes "cancelled" as it goes."""
    job = read(ident, jobs=jobs)
    if job is None:
        raise WhaleAuditError(f"no job {ident!r}; `whaleaudit jobs` lists them.")
    if job.status != RUNNING:
        raise WhaleAuditError(f"job {ident} is not running ({job.status}); nothing to cancel.")
    if job.pid is None:
        raise WhaleAuditError(f"job {ident} is starting; cancel it again in a moment.")
    try:
        os.killpg(job.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it ended on its own meanwhile
    return job


def forget(ident: str, *, jobs: Path | None = None) -> None:
    """Remove a job that no longer runs: its state and its log."""
    jobs = folder() if jobs is None else Path(jobs)
    job = read(ident, jobs=jobs)
    if job is not None and job.status == RUNNING:
        raise WhaleAuditError(f"job {ident} is running; cancel it first.")
    for suffix in (".json", ".log"):
        (jobs / f"{ident}{suffix}").unlink(missing_ok=True)


# --- the job's own process ----------------------------------------------------------------------------------


class Cancelled(BaseException):
    """SIGTERM reached the job (a BaseException, like KeyboardInterrupt, so no ``except Exception`` swallows it)."""


def run(ident: str, jobs: Path, lock_fd: int) -> int:
    """Body of ``whaleaudit jobs run``: do the job, keeping its state file current. Returns an exit code."""
    jobs = Path(jobs)
    if not _holds_lock(lock_fd, jobs / f"{ident}.lock"):
        print(f"job {ident}: started without its lock; start jobs with whaleaudit.jobs.start", file=sys.stderr)
        return 2
    asked_to_stop = []

    def stop(signum, frame):
        asked_to_stop.append(signum)
        raise Cancelled(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)  # before the pid is known: a cancel always finds the handler
    path = jobs / f"{ident}.json"
    state = json.loads(path.read_text())
    state.update(pid=os.getpid(), updated=time.time())
    write_json(path, state)
    reporter = _Reporter(path, state)
    try:
        result = KINDS[state["kind"]](state["arguments"], reporter)
    except (Cancelled, Exception) as e:  # noqa: BLE001 - the page shows a sentence, the log the traceback
        if not isinstance(e, Cancelled):
            traceback.print_exc()
        if asked_to_stop:  # the signal can surface as another error, inside an import say
            reporter.finish(CANCELLED)
            return 143
        reporter.finish(FAILED, error=str(e) if isinstance(e, WhaleAuditError) else f"{type(e).__name__}: {e}")
        return 1
    reporter.finish(DONE, result=str(result))
    return 0


class _Reporter:
    """The progress callback a job's work calls: ``(share, stage, images_per_second=None)``."""

    def __init__(self, path: Path, state: dict):
        self.path, self.state, self.written = path, state, 0.0

    def __call__(self, share: float, stage: str = "", images_per_second: float | None = None) -> None:
        now = time.monotonic()
        news = stage != self.state.get("stage") or (images_per_second and not self.state.get("images_per_second"))
        self.state.update(share=round(min(max(float(share), 0.0), 1.0), 4), stage=stage or self.state.get("stage"),
                          images_per_second=None if images_per_second is None else round(images_per_second, 1),
                          updated=time.time())
        if news or now - self.written >= WRITE_EVERY:
            write_json(self.path, self.state)
            self.written = now
            print(f"{self.state['stage']}: {self.state['share']:.0%}", flush=True)

    def finish(self, status: str, **fields) -> None:
        self.state.update(status=status, finished=time.time(), updated=time.time(), **fields)
        if status == DONE:
            self.state["share"] = 1.0
        write_json(self.path, self.state)
        print(f"job {status}" + (f": {fields['error']}" if "error" in fields else ""), flush=True)


# --- the kinds of job ---------------------------------------------------------------------------------------


def demo_arguments(audits: Path, recipe: str = "full") -> dict:
    """The demo build's arguments: its audit folder, the workspace that holds its data and model, the recipe."""
    return {"out": str(Path(audits).resolve() / "demo"), "root": str(workspace.root()), "recipe": recipe}


def _build_demo(arguments: dict, progress) -> Path:
    from .demo.build import RECIPES, build_demo

    return build_demo(Path(arguments["out"]), root=Path(arguments["root"]), recipe=RECIPES[arguments["recipe"]],
                      progress=progress)


def concepts_arguments(audit: Path) -> dict:
    """The concepts job's arguments: the audit folder whose evidence concepts are found and written."""
    return {"audit": str(Path(audit).resolve())}


def _find_concepts(arguments: dict, progress) -> str:
    """Find an audit's evidence concepts from its store and write them into it (``whaleaudit concepts``)."""
    from .audit.concepts import write_concepts
    from .audit.store import open_audit

    progress(0.0, "opening the audit")
    audit = open_audit(arguments["audit"])
    stage = f"finding the evidence concepts of {len(audit.images):,} photos"
    table = write_concepts(audit, lambda share: progress(0.05 + 0.9 * share, stage)).table
    return f"{len(table)} concepts of {table['species'].nunique()} species written into {audit.path}"


#: kind -> function(arguments, progress) doing the work; its return value is reported as the result.
KINDS = {"demo": _build_demo, "concepts": _find_concepts}


# --- locks --------------------------------------------------------------------------------------------------


def _take_lock(path: Path, patience: float = 0.0) -> int | None:
    """An fd holding the exclusive lock on ``path``, or None if a job holds it. ``patience``: how long to retry
    a lock that a reader (:func:`_is_locked`) holds for an instant."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                os.close(fd)
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    return None
                raise
            time.sleep(0.02)


def _is_locked(path: Path) -> bool:
    """Does a job's process hold the lock? Tried with a shared lock, released at once."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)  # closing drops a lock taken here


def _holds_lock(fd: int, path: Path) -> bool:
    """Is ``fd`` the lock file ``path``, locked by this process (re-taking a held flock succeeds at once)?"""
    try:
        if os.fstat(fd).st_ino != path.stat().st_ino:
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
