"""The concepts step killed anywhere: a half-written set of concept files never reads as a finished one, and
running the step again gives the files of an uninterrupted run, byte for byte.

Every trial works on its own copy of one small real audit (a tiny model's precompute of 80 drawn photos), in
one of the two states a user meets: no concept files yet, or a complete set from an older run (other
parameters), which a crash must either leave whole or replace whole. The precompute writes the concepts into
its ``.partial`` folder before the swap: killed while it writes them, or just before a step of its finish, it
leaves a finished audit with complete concepts or a ``.partial`` folder that resumes with no photo to compute.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from _helpers_engine import make_dataset, tiny_model, workdir

from whaleaudit.audit.concepts import (
    CONCEPT_EVIDENCE,
    CONCEPTS_INFO,
    CONCEPTS_TABLE,
    open_concepts,
    write_concepts,
)
from whaleaudit.audit.precompute import precompute
from whaleaudit.audit.store import MANIFEST, open_audit, partial_dir
from whaleaudit.data.dataset import load_dataset
from whaleaudit.errors import StoreError
from whaleaudit.explain import concepts as concepts_module

pytestmark = pytest.mark.slow  # trains the tiny model on first use
CONCEPT_FILES = (CONCEPTS_TABLE, CONCEPT_EVIDENCE, CONCEPTS_INFO)
ENV = dict(os.environ, PYTHONWARNINGS="ignore",
           OMP_NUM_THREADS=str(torch.get_num_threads()))  # every run the same threads: the same sums


@dataclass
class Audits:
    """The material every trial starts from: ``base`` (the precompute's audit, concepts written by it),
    ``reference`` (a copy without them, then one uninterrupted ``whaleaudit concepts``), ``stale`` (a copy
    with the concepts of an older run), the reference run's ``seconds`` and ``writing`` (from its first
    concept file to concepts.json) and the two complete ``sets`` of concept files, by name."""

    labels: Path
    base: Path
    reference: Path
    stale: Path
    seconds: float
    writing: float
    sets: dict

    def copy(self, start: str, to: Path) -> Path:
        """A copy of the audit in state ``start``: "fresh" (no concept files) or "stale" (an older run's)."""
        return shutil.copytree(self.stale if start == "stale" else self.base, to,
                               ignore=None if start == "stale" else shutil.ignore_patterns("concept*"))


def concepts_command(audit: Path) -> list[str]:
    return [sys.executable, "-m", "whaleaudit", "concepts", str(audit)]


def concept_entries(folder: Path) -> dict:
    """``{name: inode}`` of the concept files and their temporary files in ``folder`` (empty while it is not
    there): any write, rename or removal by the step changes it."""
    try:
        return {e.name: e.inode() for e in os.scandir(folder) if e.name.startswith("concept")}
    except FileNotFoundError:
        return {}


def wait_for_a_concept_write(folder: Path, proc: subprocess.Popen) -> None:
    before = concept_entries(folder)
    while proc.poll() is None and concept_entries(folder) == before:
        time.sleep(0.001)


def concept_set(audit: Path) -> dict:
    return {name: (audit / name).read_bytes() for name in CONCEPT_FILES}


def assert_never_half_written(audit: Path, complete: dict) -> str:
    """After a kill: the audit reads as having no concepts yet (with what to run), or its three concept files
    are, byte for byte, one of the ``complete`` sets; returns "none" or that set's name."""
    try:
        read = open_concepts(open_audit(audit))
    except StoreError as e:
        assert "no evidence concepts computed yet. Compute them with `python -m whaleaudit concepts" in str(e), str(e)
        return "none"
    on_disk = {name: (audit / name).read_bytes() if (audit / name).exists() else None for name in CONCEPT_FILES}
    matched = [label for label, files in complete.items() if files == on_disk]
    which = {name: [label for label, files in complete.items() if files[name] == data] for name, data in on_disk.items()}
    assert matched, f"a half-written set reads as complete ({read.info.get('n_concepts')} concepts): {which}"
    return matched[0]


def assert_same_files(audit: Path, reference: Path) -> None:
    assert sorted(os.listdir(audit)) == sorted(os.listdir(reference))   # no temporary file left either
    for name in os.listdir(reference):
        assert (audit / name).read_bytes() == (reference / name).read_bytes(), name


def run_again(audit: Path) -> None:
    done = subprocess.run(concepts_command(audit), check=False, env=ENV, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()


@pytest.fixture(scope="module")
def audits(tmp_path_factory) -> Audits:
    root = tmp_path_factory.mktemp("concepts-crash")
    labels = make_dataset(workdir() / "concepts-crash", n_per_species=40, seed=5)
    base = precompute(load_dataset(labels), tiny_model("cam").with_suffix(".pth"), root / "base", causal=0.0,
                      workers=0, progress=False)
    stale = shutil.copytree(base, root / "stale", ignore=shutil.ignore_patterns("concept*"))
    with pytest.MonkeyPatch.context() as mp:   # an older run: one concept per class, never split
        mp.setattr(concepts_module, "SPLIT_AT", float("inf"))
        write_concepts(open_audit(stale))
    reference = shutil.copytree(base, root / "reference", ignore=shutil.ignore_patterns("concept*"))
    started = time.perf_counter()
    proc = subprocess.Popen(concepts_command(reference), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_a_concept_write(reference, proc)
    first_write = time.perf_counter()
    while proc.poll() is None and not (reference / CONCEPTS_INFO).exists():
        time.sleep(0.001)
    writing = time.perf_counter() - first_write
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
    proc.stderr.close()
    sets = {"reference": concept_set(reference), "stale": concept_set(stale)}
    assert all(sets["reference"][name] != sets["stale"][name] for name in CONCEPT_FILES)  # a mix would show
    return Audits(labels, base, reference, stale, time.perf_counter() - started, writing, sets)


def test_the_concepts_step_killed_anywhere_reruns_to_the_same_files(audits, tmp_path):
    """Five SIGKILLs of ``whaleaudit concepts`` at random moments: after a random share of the reference run's
    time (mostly while it loads and computes), or at a random point of its writing (timed from its first
    concept file); on fresh and stale audits. After each: never a half-written set read as complete; a rerun
    ends with the reference's files."""
    rng, kills, trials = random.Random(16), 0, []
    for attempt in range(12):
        start, trigger = ("fresh", "stale")[attempt % 2], ("share", "writing", "writing")[attempt % 3]
        audit = audits.copy(start, tmp_path / f"trial-{attempt}")
        proc = subprocess.Popen(concepts_command(audit), env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        if trigger == "share":
            time.sleep(rng.uniform(0, 1) * audits.seconds)
        else:
            wait_for_a_concept_write(audit, proc)
            time.sleep(rng.uniform(0, audits.writing))
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=300)
        trials.append((start, trigger, killed, assert_never_half_written(audit, audits.sets)))
        run_again(audit)
        assert_same_files(audit, audits.reference)
        if kills == 5:
            break
    assert kills == 5, trials


DYING = """
import os, signal, sys
import whaleaudit.cli, whaleaudit.explain.concepts

audit, steps = {audit!r}, []

def dying(operation):
    def step(path, *args, **kwargs):
        if os.fspath(path).startswith(audit):
            steps.append(path)
            if len(steps) == {step}:
                os.kill(os.getpid(), signal.SIGKILL)
        return operation(path, *args, **kwargs)
    return step

for name in ("replace", "rename", "unlink", "remove", "rmdir"):
    setattr(os, name, dying(getattr(os, name)))
sys.exit(whaleaudit.cli.main(["concepts", audit]))
"""


def test_the_concepts_step_killed_before_each_of_its_file_operations(audits, tmp_path):
    """The moments a random kill rarely meets, between two renames: the step, started over an older run's
    concepts, kills itself just before its k-th rename or removal in the audit, for every k until it finishes.
    After each: never a half-written set read as complete; a rerun ends with the reference's files."""
    outcomes = []
    for step in range(1, 20):
        audit = audits.copy("stale", tmp_path / f"step-{step}")
        done = subprocess.run([sys.executable, "-c", DYING.format(audit=str(audit), step=step)], check=False, env=ENV,
                              capture_output=True, timeout=300)
        if done.returncode == 0:
            break
        assert done.returncode == -signal.SIGKILL, done.stderr.decode()
        outcomes.append(assert_never_half_written(audit, audits.sets))
        run_again(audit)
        assert_same_files(audit, audits.reference)
    else:
        pytest.fail(f"the step still had file operations to do after {step}: {outcomes}")
    assert len(outcomes) >= 2, outcomes
    assert_same_files(audit, audits.reference)   # the run that was not killed


def precompute_command(labels: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "whaleaudit", "precompute", "--labels", str(labels), "--model",
            str(tiny_model("cam").with_suffix(".pth")), "--out", str(out), "--causal", "0", "--workers", "0",
            "--quiet"]


def assert_resumes_or_finished(out: Path, base: Path, command: list[str]) -> str:
    """After a precompute was killed: ``out`` is a finished audit whose concepts are complete, or there is no
    finished audit and the ``.partial`` folder resumes, with no photo left to compute; either way the same
    command run again gives ``base``, the uninterrupted precompute's audit. Returns "finished" or "resumed"."""
    finished = (out / MANIFEST).is_file()
    if finished:   # a finished store never lacks its concepts
        assert assert_never_half_written(out, {"reference": concept_set(base)}) == "reference"
    else:
        assert partial_dir(out).is_dir()
    done = subprocess.run(command, check=False, env=ENV, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    if not finished:
        assert open_audit(out).manifest["timings"]["images_computed"] == 0   # resumed: only the concepts redone
    assert sorted(os.listdir(out)) == sorted(os.listdir(base))
    assert not any(p.exists() for p in (partial_dir(out), out.with_name(out.name + ".old")))
    for name in os.listdir(base):
        if name != MANIFEST:
            assert (out / name).read_bytes() == (base / name).read_bytes(), name
    manifests = [open_audit(folder).manifest for folder in (out, base)]
    for m in manifests:
        m.pop("timings")
    assert manifests[0] == manifests[1]
    return "finished" if finished else "resumed"


def test_a_precompute_killed_while_it_writes_the_concepts_resumes(audits, tmp_path):
    """``whaleaudit precompute`` SIGKILLed at a random point of the concepts it writes into its ``.partial``
    folder: no finished audit without its concepts; the same command run again resumes with no photo to
    compute and gives the uninterrupted precompute's audit."""
    out, rng = tmp_path / "audit", random.Random(19)
    command = precompute_command(audits.labels, out)
    for _ in range(3):   # a run that ends before its kill is thrown away and tried again
        proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_a_concept_write(partial_dir(out), proc)
        time.sleep(rng.uniform(0, audits.writing))
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=300)
        if killed:
            break
        shutil.rmtree(out)
    assert killed, "the precompute ended before every kill"
    assert assert_resumes_or_finished(out, audits.base, command) in ("resumed", "finished")


PRECOMPUTE_DYING = """
import os, signal, sys
import whaleaudit.cli

out, target = {out!r}, {target!r}

def dying(operation):
    def step(path, *args, **kwargs):
        if (operation.__name__, os.path.basename(os.fspath(path))) == target and os.fspath(path).startswith(out):
            os.kill(os.getpid(), signal.SIGKILL)
        return operation(path, *args, **kwargs)
    return step

for name in ("replace", "unlink"):
    setattr(os, name, dying(getattr(os, name)))
sys.exit(whaleaudit.cli.main({args!r}))
"""


@pytest.mark.parametrize("target", [
    ("replace", CONCEPT_EVIDENCE + ".tmp"),   # the concepts half-written, in the .partial folder
    ("replace", "audit.partial"),            # the store complete, concepts and all, before the swap
    ("unlink", "progress.json"),             # swapped into place, the resume files not yet removed
])
def test_a_precompute_killed_at_each_step_of_its_finish_resumes_or_is_finished(audits, tmp_path, target):
    """The moments a random kill rarely meets: the precompute kills itself just before one file operation of its
    finish. After each: a finished audit with complete concepts, or a ``.partial`` folder that resumes with no
    photo to compute; the same command run again gives the uninterrupted precompute's audit."""
    out = tmp_path / "audit"
    command = precompute_command(audits.labels, out)
    script = PRECOMPUTE_DYING.format(out=str(out), target=target, args=command[3:])
    done = subprocess.run([sys.executable, "-c", script], check=False, env=ENV, capture_output=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    expected = "finished" if target[0] == "unlink" else "resumed"
    assert assert_resumes_or_finished(out, audits.base, command) == expected
