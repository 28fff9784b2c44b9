"""The review store: flag semantics, history, durability, and no lost change under concurrent writers."""

import io
import json
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
from _helpers_dashboard import make_audit, review_worker

from whaleaudit.audit.export import flagged_csv
from whaleaudit.audit.review import REASONS, Review
from whaleaudit.audit.store import open_audit
from whaleaudit.errors import StoreError

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _state(review: Review) -> dict:
    frame = review.flags(include_unflagged=True)
    return {r.image: (int(r.flagged), r.reason, r.note) for r in frame.itertuples()}


def test_flag_unflag_note_and_their_history(tmp_path):
    review = Review(tmp_path / "review.sqlite")
    review.flag(["a", "b"], "attention on water", "fin tiny", who="ana")
    review.note("a", "look at the ice too", who="ben")
    review.unflag(["b"], who="ben")
    review.note("c", "not flagged, just noted")

    flags = review.flags()
    assert list(flags.columns) == ["image", "reason", "note", "who", "when"]
    assert flags[["image", "reason", "note", "who"]].values.tolist() == [
        ["a", "attention on water", "look at the ice too", "ben"]]
    unflagged = review.state("b")
    assert [unflagged[k] for k in ("flagged", "reason", "note", "who")] == [False, "", "fin tiny", "ben"]
    assert review.state("c")["note"] == "not flagged, just noted" and not review.state("c")["flagged"]
    assert review.state("never") == {"image": "never", "flagged": False, "reason": "", "note": "", "who": "",
                                     "when": ""}

    history = review.history()
    assert history[["image", "action", "old_flagged", "new_flagged", "old_reason", "new_reason", "old_note",
                    "new_note", "who"]].values.tolist() == [
        ["a", "flag", 0, 1, "", "attention on water", "", "fin tiny", "ana"],
        ["b", "flag", 0, 1, "", "attention on water", "", "fin tiny", "ana"],
        ["a", "note", 1, 1, "attention on water", "attention on water", "fin tiny", "look at the ice too", "ben"],
        ["b", "unflag", 1, 0, "attention on water", "", "fin tiny", "fin tiny", "ben"],
        ["c", "note", 0, 0, "", "", "", "not flagged, just noted", ""],
    ]
    when = [datetime.fromisoformat(w) for w in history["when"]]
    assert all(w.utcoffset().total_seconds() == 0 for w in when) and when == sorted(when)
    assert abs((datetime.now(timezone.utc) - when[-1]).total_seconds()) < 60


def test_bad_input_is_refused_and_changes_nothing(tmp_path):
    review = Review(tmp_path / "review.sqlite")
    with pytest.raises(ValueError, match="not one of"):
        review.flag(["a"], "looks odd")
    with pytest.raises(ValueError, match="non-empty strings"):
        review.flag(["a", ""], REASONS[0])
    assert review.history().empty and review.flags().empty


def test_a_damaged_review_file_is_a_clear_store_error(tmp_path):
    (tmp_path / "review.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="Move it aside"):
        Review(tmp_path / "review.sqlite")


def test_flags_written_by_one_process_are_read_by_another(tmp_path):
    Review(tmp_path / "review.sqlite").flag(["x"], "label wrong", "=1+1")
    assert Review(tmp_path / "review.sqlite").flags()["note"].tolist() == ["=1+1"]


def test_the_version_changes_with_every_change_whoever_makes_it(tmp_path):
    """The dashboard keeps what it derives from the flags until the version changes."""
    review = Review(tmp_path / "review.sqlite")
    start = review.version()
    assert review.version() == start  # reading changes nothing
    review.flag(["a"], "label wrong")
    after_flag = review.version()
    Review(tmp_path / "review.sqlite").note("a", "by another connection")
    after_note = review.version()
    subprocess.run([sys.executable, "-c", "import sys; from whaleaudit.audit.review import Review; "
                    "Review(sys.argv[1]).unflag(['a'])", str(tmp_path / "review.sqlite")], check=True, cwd=REPO)
    assert len({start, after_flag, after_note, review.version()}) == 4


def test_the_last_changes_of_the_history(tmp_path):
    review = Review(tmp_path / "review.sqlite")
    for k in range(5):
        review.note("a", f"note {k}")
    assert review.history(last=2)["new_note"].tolist() == ["note 3", "note 4"]
    assert review.history(last=2).equals(review.history().tail(2).reset_index(drop=True))


def _saved_then_killed(path, actions: str) -> None:
    """A process makes the review ``actions`` (Python on ``r``, a Review of ``path``), reports them saved and is
    killed at once, with no clean shutdown."""
    code = (f"import os, signal, sys; from whaleaudit.audit.review import Review; r = Review(sys.argv[1]); {actions}; "
            "print('saved', flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL and done.stdout.strip() == "saved", done.stderr


def test_a_flag_reported_saved_survives_the_process_being_killed(tmp_path):
    """The server is killed (no clean shutdown) right after it reported a flag saved."""
    _saved_then_killed(tmp_path / "review.sqlite", "r.flag(['fin_1'], 'attention on ice', 'saved')")
    assert Review(tmp_path / "review.sqlite").flags()[["image", "reason", "note"]].values.tolist() == [
        ["fin_1", "attention on ice", "saved"]]


def _replay(log: list[dict], image: str) -> tuple:
    state = (0, "", "")
    for op in log:
        if image in op["images"]:
            state = {"flag": (1, op["reason"], op["note"]), "unflag": (0, "", state[2]),
                     "note": (state[0], state[1], op["note"])}[op["action"]]
    return state


@pytest.mark.slow
def test_concurrent_threads_and_processes_lose_no_change(tmp_path):
    path, n_ops = tmp_path / "review.sqlite", 350
    shared = [f"shared_{k}" for k in range(6)]
    shared_review = Review(path)
    logs, errors = {}, []

    def run(worker, target):
        try:
            logs[worker] = review_worker(target, worker, n_ops, seed=worker, shared=shared)
        except Exception as e:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(e)

    code = ("import json, sys; sys.path[:0] = sys.argv[1:3]; from _helpers_dashboard import review_worker; "
            "print(json.dumps(review_worker(sys.argv[3], 9, int(sys.argv[4]), 9, json.loads(sys.argv[5]))))")
    other = subprocess.Popen([sys.executable, "-c", code, str(TESTS), str(REPO), str(path), str(n_ops),
                              json.dumps(shared)], stdout=subprocess.PIPE, text=True)
    # three threads share one Review, as the dashboard's sessions do; two open their own connection
    threads = [threading.Thread(target=run, args=(w, shared_review if w < 3 else path)) for w in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out, _ = other.communicate(timeout=300)
    assert not errors and other.returncode == 0
    logs[9] = json.loads(out)

    review = Review(path)
    history = review.history()
    ops = [op for log in logs.values() for op in log]
    assert len(history) == sum(len(op["images"]) for op in ops) >= 2000
    done = sorted((image, op["action"], op["who"]) for op in ops for image in op["images"])
    assert sorted(zip(history["image"], history["action"], history["who"])) == done

    state = _state(review)
    for image, rows in history.groupby("image", sort=False):
        old = rows[["old_flagged", "old_reason", "old_note"]].itertuples(index=False, name=None)
        new = list(rows[["new_flagged", "new_reason", "new_note"]].itertuples(index=False, name=None))
        assert list(old) == [(0, "", "")] + new[:-1], f"{image}: a change was made on a stale state"
        assert state[image] == new[-1]
    for worker, log in logs.items():
        for k in range(4):
            image = f"w{worker}_{k}"
            assert state.get(image, (0, "", "")) == _replay(log, image)


def test_an_export_taken_while_others_write_is_one_consistent_snapshot(tmp_path):
    """Writers flag and unflag whole groups of five in one action; every export shows whole groups only."""
    store = make_audit(tmp_path)
    audit = open_audit(store)
    review = Review(audit.review_path)
    ids = audit.images["image"].tolist()[:30]
    groups = [ids[g:g + 5] for g in range(0, 30, 5)]
    stop = threading.Event()

    def write(k):
        writer, i = Review(audit.review_path), 0
        while not stop.is_set():
            group = groups[(k + i) % len(groups)]
            if i % 3 == 2:
                writer.unflag(group)
            else:
                writer.flag(group, REASONS[i % len(REASONS)], f"op {k}-{i}")
            i += 1

    writers = [threading.Thread(target=write, args=(k,)) for k in range(3)]
    for t in writers:
        t.start()
    try:
        exports = [pd.read_csv(io.BytesIO(flagged_csv(audit, review)), dtype=str, keep_default_na=False)
                   for _ in range(25)]
    finally:
        stop.set()
        for t in writers:
            t.join()
    assert sum(len(e) for e in exports) > 0
    for export in exports:
        for group in groups:
            rows = export[export["image"].isin(group)]
            assert len(rows) in (0, 5) and rows["note"].nunique() <= 1 and rows["reason"].nunique() <= 1


def test_the_review_journals_in_wal_mode_so_readers_never_block_writers(tmp_path):
    Review(tmp_path / "review.sqlite")
    con = sqlite3.connect(tmp_path / "review.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_flags_follow_the_file_at_the_path_when_it_is_moved_aside_or_the_audit_rebuilt(tmp_path):
    """The dashboard keeps one Review per audit for its lifetime, while the file under it may change."""
    store = make_audit(tmp_path)
    review = Review(store / "review.sqlite")
    review.flag(["img_001"], "attention on ice", "before the rebuild")
    make_audit(tmp_path, seed=1)  # a rebuild swaps the folder and carries review.sqlite over
    review.flag(["img_002"], "label wrong", "after the rebuild")
    assert Review(store / "review.sqlite").flags()["note"].tolist() == ["before the rebuild", "after the rebuild"]

    aside = tmp_path / "aside"
    aside.mkdir()
    for part in store.glob("review.sqlite*"):  # an analyst starts a fresh review, as the error message suggests
        part.rename(aside / part.name)
    review.flag(["img_003"], "other", "fresh start")
    assert Review(store / "review.sqlite").flags()["note"].tolist() == ["fresh start"]
    assert len(Review(aside / "review.sqlite").flags()) == 2


# --- the analyst's corrected foregrounds ----------------------------------------------------------------------

#: The schema of the review databases written before corrections existed, as they were created.
OLD_SCHEMA = """
CREATE TABLE flags (image TEXT PRIMARY KEY, flagged INTEGER NOT NULL, reason TEXT NOT NULL, note TEXT NOT NULL,
                    who TEXT NOT NULL, "when" TEXT NOT NULL);
CREATE TABLE history (seq INTEGER PRIMARY KEY AUTOINCREMENT, image TEXT NOT NULL, action TEXT NOT NULL,
                      old_flagged INTEGER NOT NULL, new_flagged INTEGER NOT NULL, old_reason TEXT NOT NULL,
                      new_reason TEXT NOT NULL, old_note TEXT NOT NULL, new_note TEXT NOT NULL, who TEXT NOT NULL,
                      "when" TEXT NOT NULL);
CREATE INDEX history_image ON history (image);
INSERT INTO flags VALUES ('fin_7', 1, 'attention on ice', 'old note', 'ana', '2026-01-02T03:04:05.000006+00:00');
INSERT INTO history VALUES (1, 'fin_7', 'flag', 0, 1, '', 'attention on ice', '', 'old note', 'ana',
                            '2026-01-02T03:04:05.000006+00:00');
"""


def test_corrections_boxes_clear_undo_and_their_history(tmp_path):
    review = Review(tmp_path / "review.sqlite")
    review.correct("a", [(0.1, 0.2, 0.5, 0.6), [0.6, 0.0, 1.0, 0.25]], who="ana")
    review.clear("b", who="ben")
    review.correct("b", [(0, 0, 1, 1)], who="ben")
    review.correct("c", [(0.25, 0.25, 0.75, 0.75)])
    review.undo_correction("c", who="cy")

    current = review.corrections()
    assert current[["image", "boxes", "who"]].values.tolist() == [
        ["a", [(0.1, 0.2, 0.5, 0.6), (0.6, 0.0, 1.0, 0.25)], "ana"], ["b", [(0.0, 0.0, 1.0, 1.0)], "ben"]]
    assert review.correction("c") is None and review.correction("never") is None
    assert review.correction("a")["boxes"] == [(0.1, 0.2, 0.5, 0.6), (0.6, 0.0, 1.0, 0.25)]
    history = review.correction_history()
    a_boxes, c_boxes = [(0.1, 0.2, 0.5, 0.6), (0.6, 0.0, 1.0, 0.25)], [(0.25, 0.25, 0.75, 0.75)]
    assert history[["seq", "image", "action", "old_boxes", "new_boxes", "who"]].values.tolist() == [
        [1, "a", "boxes", None, a_boxes, "ana"],
        [2, "b", "clear", None, [], "ben"],
        [3, "b", "boxes", [], [(0.0, 0.0, 1.0, 1.0)], "ben"],
        [4, "c", "boxes", None, c_boxes, ""],
        [5, "c", "undo", c_boxes, None, "cy"],
    ]
    when = [datetime.fromisoformat(w) for w in history["when"]]
    assert when == sorted(when) and all(w.utcoffset().total_seconds() == 0 for w in when)
    review.clear("a")
    assert review.correction("a")["boxes"] == []
    assert review.flags().empty and review.history().empty  # corrections are not flags


@pytest.mark.parametrize("boxes, message", [
    ([], "no box given"), ([(0.5, 0.1, 0.4, 0.9)], "x0 < x1"), ([(0.1, 0.1, 0.5, 1.5)], "inside the photo"),
    ([(0.1, float("nan"), 0.5, 0.9)], "inside the photo"), ([(0.1, 0.2, 0.3)], "four numbers"),
    ([("left", 0, 1, 1)], "four numbers")])
def test_a_box_that_is_not_one_is_refused_and_changes_nothing(tmp_path, boxes, message):
    review = Review(tmp_path / "review.sqlite")
    with pytest.raises(ValueError, match=message):
        review.correct("a", boxes)
    assert review.corrections().empty and review.correction_history().empty


def test_a_correction_changes_the_version_and_shows_in_another_process(tmp_path):
    review = Review(tmp_path / "review.sqlite")
    start = review.version()
    subprocess.run([sys.executable, "-c", "import sys; from whaleaudit.audit.review import Review; "
                    "Review(sys.argv[1]).correct('fin_2', [(0.2, 0.3, 0.6, 0.7)], who='other')",
                    str(tmp_path / "review.sqlite")], check=True, cwd=REPO)
    assert review.version() != start
    assert review.corrections()[["image", "boxes", "who"]].values.tolist() == [
        ["fin_2", [(0.2, 0.3, 0.6, 0.7)], "other"]]


def test_a_correction_reported_saved_survives_the_process_being_killed(tmp_path):
    _saved_then_killed(tmp_path / "review.sqlite", "r.correct('fin_1', [(0.1, 0.1, 0.4, 0.3)]); r.clear('fin_2')")
    assert Review(tmp_path / "review.sqlite").corrections()[["image", "boxes"]].values.tolist() == [
        ["fin_1", [(0.1, 0.1, 0.4, 0.3)]], ["fin_2", []]]


def test_a_review_written_before_corrections_opens_with_its_flags_unchanged(tmp_path):
    path = tmp_path / "review.sqlite"
    con = sqlite3.connect(path)
    con.executescript(OLD_SCHEMA)
    con.close()
    review = Review(path)
    assert review.flags()[["image", "reason", "note", "who", "when"]].values.tolist() == [
        ["fin_7", "attention on ice", "old note", "ana", "2026-01-02T03:04:05.000006+00:00"]]
    assert review.history()[["seq", "image", "action", "new_note"]].values.tolist() == [[1, "fin_7", "flag", "old note"]]
    review.correct("fin_7", [(0.1, 0.1, 0.9, 0.9)])
    review.flag(["fin_8"], "label wrong")
    assert review.history()["seq"].tolist() == [1, 2]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 1
    assert Review(path).correction("fin_7")["boxes"] == [(0.1, 0.1, 0.9, 0.9)]  # opened again: nothing migrates twice


def test_a_review_from_a_newer_whaleaudit_is_a_clear_store_error(tmp_path):
    con = sqlite3.connect(tmp_path / "review.sqlite")
    con.execute("PRAGMA user_version = 7")
    con.close()
    with pytest.raises(StoreError, match="review schema 7, this WhaleAudit reads up to 1"):
        Review(tmp_path / "review.sqlite")


def test_an_export_snapshot_shows_flags_and_corrections_of_one_moment(tmp_path):
    """A writer flags and corrects each image in turn; a snapshot never holds one without the other."""
    path = tmp_path / "review.sqlite"
    Review(path)
    stop = threading.Event()

    def write():
        writer, i = Review(path), 0
        while not stop.is_set():
            image = f"img_{i}"
            with writer._connect() as con:  # both in one transaction, as a consistent snapshot must show them
                con.execute("BEGIN IMMEDIATE")
                con.execute("INSERT INTO flags VALUES (?, 1, 'other', '', '', '')", (image,))
                con.execute("INSERT INTO corrections VALUES (?, '[]', '', '')", (image,))
                con.execute("COMMIT")
            i += 1

    thread = threading.Thread(target=write)
    thread.start()
    try:
        snapshots = [Review(path).snapshot() for _ in range(40)]
    finally:
        stop.set()
        thread.join()
    assert any(len(flags) for flags, _ in snapshots)
    for flags, corrections in snapshots:
        assert flags["image"].tolist() == corrections["image"].tolist()


def test_concurrent_corrections_lose_no_change_and_chain_their_history(tmp_path):
    """Threads, on one shared Review and on their own connections, correct, clear and undo the same photos: each
    change is recorded on the state it replaced, and the current state is the last change's."""
    path = tmp_path / "review.sqlite"
    shared = Review(path)
    images, errors = ["fin_a", "fin_b", "fin_c"], []

    def work(worker: int) -> None:
        review = shared if worker % 2 else Review(path)
        try:
            for i in range(60):
                image = images[(worker + i) % len(images)]
                if i % 5 == 3:
                    review.clear(image, who=f"w{worker}")
                elif i % 5 == 4:
                    review.undo_correction(image, who=f"w{worker}")
                else:
                    review.correct(image, [(0.01 * worker, 0.01 * i, 0.5, 0.9)], who=f"w{worker}")
        except Exception as e:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    history = Review(path).correction_history()
    assert len(history) == 4 * 60
    current = Review(path).corrections().set_index("image")["boxes"].to_dict()
    for image, rows in history.groupby("image", sort=False):
        assert rows["old_boxes"].tolist() == [None, *rows["new_boxes"].tolist()[:-1]], image
        assert current.get(image) == rows["new_boxes"].iloc[-1]
