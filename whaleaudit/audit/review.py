"""The analysts' review of an audit: flags, reasons and notes, corrected foregrounds, and the history of every change.

Stored in the audit's ``review.sqlite``, the only mutable file of an audit. Each action is one
``BEGIN IMMEDIATE`` transaction, so browser tabs, server threads and other processes can write at once
without losing a change: a writer waits (``busy_timeout``) rather than failing, reads the old state inside
its own write lock, and appends it to ``history`` beside the new state. WAL journaling lets readers (the
pages, the CSV export) see a consistent snapshot while someone writes, and ``synchronous=FULL`` makes a
committed flag survive a crash of the server or the machine. One connection per :class:`Review` (threads
take turns on it) keeps an action at a few milliseconds: opening and closing a connection per action would
checkpoint the WAL every time.

Tables::

    flags               one row per image ever touched: image, flagged (0/1), reason, note, who, "when"
    history             append-only: seq, image, action (flag/unflag/note), old and new flagged/reason/note, who,
                        "when"
    corrections         one row per image whose foreground the analyst corrected: image, boxes, who, "when"
    correction_history  append-only: seq, image, action (boxes/clear/undo), old and new boxes, who, "when"

A correction is the analyst's boxes around the animal, stored as JSON ``[[x0, y0, x1, y1], ...]`` in fractions
0..1 of the photo's width and height (left, top, right, bottom). The model sees the photo squashed to a square,
so the same fractions place the boxes on its input and on its maps; they are also what a ``--boxes`` file takes
(:func:`whaleaudit.explain.foreground.read_boxes`). ``[]`` is a cleared foreground: no animal in the photo.
In the history, NULL boxes mean no correction (the audit's own foreground).

The schema's version is SQLite's ``user_version``: 0 for a review written before corrections existed (flags
alone), 1 now. Opening an older file adds the missing tables in one transaction and leaves its flags and
history as they were.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..errors import StoreError

REASONS = ["attention on water", "attention on ice", "attention on another object", "label wrong",
           "image unusable", "other"]

BUSY_TIMEOUT_MS = 30_000
SYNCHRONOUS = "FULL"  # a flag the page shows as saved survives a crash of the server or the machine

_FLAGS = """
CREATE TABLE IF NOT EXISTS flags (
    image   TEXT PRIMARY KEY,
    flagged INTEGER NOT NULL,
    reason  TEXT NOT NULL,
    note    TEXT NOT NULL,
    who     TEXT NOT NULL,
    "when"  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    image       TEXT NOT NULL,
    action      TEXT NOT NULL,
    old_flagged INTEGER NOT NULL,
    new_flagged INTEGER NOT NULL,
    old_reason  TEXT NOT NULL,
    new_reason  TEXT NOT NULL,
    old_note    TEXT NOT NULL,
    new_note    TEXT NOT NULL,
    who         TEXT NOT NULL,
    "when"      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_image ON history (image);
"""
_CORRECTIONS = """
CREATE TABLE corrections (
    image   TEXT PRIMARY KEY,
    boxes   TEXT NOT NULL,
    who     TEXT NOT NULL,
    "when"  TEXT NOT NULL
);
CREATE TABLE correction_history (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    image     TEXT NOT NULL,
    action    TEXT NOT NULL,
    old_boxes TEXT,
    new_boxes TEXT,
    who       TEXT NOT NULL,
    "when"    TEXT NOT NULL
);
CREATE INDEX correction_history_image ON correction_history (image);
"""
#: Schema steps: step k brings a file at ``user_version`` k to k + 1. Step 0 makes a new file, or adds the
#: corrections to a file of the first reviews, which never set a version (hence the flags' IF NOT EXISTS).
MIGRATIONS = (_FLAGS + _CORRECTIONS,)
SCHEMA_VERSION = len(MIGRATIONS)

_UNTOUCHED = (0, "", "")  # flagged, reason, note of an image nobody has touched


def utc_now() -> str:
    """UTC time in ISO 8601 with microseconds, so history sorts as text."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class Review:
    """Flags on the images of one audit, safe to share between threads and processes."""

    def __init__(self, path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._con, self._opened = None, None
        with self._connect():
            pass

    def _file(self) -> tuple | None:
        """What the connection must point at: this process, and the file now at ``path``."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return os.getpid(), None
        return os.getpid(), stat.st_dev, stat.st_ino

    @contextmanager
    def _connect(self):
        """This object's connection, one user at a time. Reopened in a forked process (a connection must not
        cross a fork) and when the file at ``path`` is another one: a rebuilt audit replaces its folder,
        review.sqlite included, and writing on through the old file would lose the flags."""
        with self._lock:
            if self._con is None or self._opened != self._file():
                if self._con is not None and self._opened[0] == os.getpid():
                    self._con.close()
                self._con = None
                try:
                    con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                          check_same_thread=False)
                except sqlite3.DatabaseError as e:
                    raise StoreError(f"{self.path}: the review database cannot be created ({e}).") from None
                try:
                    con.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                    con.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
                    con.execute("PRAGMA journal_mode=WAL")
                    _migrate(con, self.path)
                except sqlite3.DatabaseError as e:
                    con.close()
                    raise StoreError(f"{self.path}: the review database cannot be opened ({e}). Move it aside to "
                                     "start a fresh review; the audit itself is unaffected.") from None
                self._con, self._opened = con, self._file()
            yield self._con

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def flag(self, images: list[str], reason: str, note: str = "", who: str = "") -> None:
        """Flag ``images`` with one reason and note, all in one transaction."""
        if reason not in REASONS:
            raise ValueError(f"reason {reason!r} is not one of {REASONS}")
        self._write("flag", images, who, lambda old: (1, reason, note))

    def unflag(self, images: list[str], who: str = "") -> None:
        """Clear the flag and its reason; a note stays, as it describes the image, not the flag."""
        self._write("unflag", images, who, lambda old: (0, "", old[2]))

    def note(self, image: str, note: str, who: str = "") -> None:
        """Set the note of one image, flagged or not."""
        self._write("note", [image], who, lambda old: (old[0], old[1], note))

    def _write(self, action: str, images, who: str, new_state) -> None:
        images = _image_ids(images)
        when = utc_now()
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                for image in images:
                    row = con.execute("SELECT flagged, reason, note FROM flags WHERE image = ?", (image,)).fetchone()
                    old = tuple(row) if row else _UNTOUCHED
                    new = new_state(old)
                    con.execute('INSERT INTO flags (image, flagged, reason, note, who, "when") VALUES (?,?,?,?,?,?) '
                                'ON CONFLICT(image) DO UPDATE SET flagged=excluded.flagged, reason=excluded.reason, '
                                'note=excluded.note, who=excluded.who, "when"=excluded."when"',
                                (image, *new, who, when))
                    con.execute('INSERT INTO history (image, action, old_flagged, new_flagged, old_reason, new_reason, '
                                'old_note, new_note, who, "when") VALUES (?,?,?,?,?,?,?,?,?,?)',
                                (image, action, old[0], new[0], old[1], new[1], old[2], new[2], who, when))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def flags(self, include_unflagged: bool = False) -> pd.DataFrame:
        """Current state: image, reason, note, who, when of flagged images (with ``include_unflagged``, every
        image ever touched, e.g. noted but not flagged, and a ``flagged`` column)."""
        where = "" if include_unflagged else "WHERE flagged = 1"
        columns = 'image, flagged, reason, note, who, "when"' if include_unflagged else 'image, reason, note, who, "when"'
        frame = self._read(f"SELECT {columns} FROM flags {where} ORDER BY image")
        if include_unflagged:
            frame["flagged"] = frame["flagged"].astype(bool)
        return frame

    def state(self, image: str) -> dict:
        """One image's current state; an untouched image reads as unflagged with no note."""
        frame = self._read('SELECT image, flagged, reason, note, who, "when" FROM flags WHERE image = ?', (image,))
        if frame.empty:
            return {"image": image, "flagged": False, "reason": "", "note": "", "who": "", "when": ""}
        row = frame.iloc[0].to_dict()
        return dict(row, flagged=bool(row["flagged"]))

    def version(self) -> tuple:
        """A stamp that changes with every change to the review, from this process or any other: the file's
        identity and the number of its last change. Cheap enough to ask on every rerun (one index lookup), so
        what the dashboard derives from the flags can be kept until the review changes."""
        with self._connect() as con:
            flags = con.execute("SELECT max(seq) FROM history").fetchone()[0]
            corrections = con.execute("SELECT max(seq) FROM correction_history").fetchone()[0]
            return (*self._opened[1:], flags or 0, corrections or 0)

    def history(self, last: int | None = None) -> pd.DataFrame:
        """Every change ever made (or only the ``last`` ones), oldest first."""
        if last is None:
            return self._read("SELECT * FROM history ORDER BY seq")
        return self._read("SELECT * FROM (SELECT * FROM history ORDER BY seq DESC LIMIT ?) ORDER BY seq", (last,))

    # --- the analyst's foreground -------------------------------------------------------------------------------

    def correct(self, image: str, boxes, who: str = "") -> None:
        """Set the animal of one image to ``boxes``: ``[(x0, y0, x1, y1), ...]`` in fractions of the photo
        (see the module docstring); at least one box (:meth:`clear` says there is no animal)."""
        boxes = check_boxes(boxes)
        if not boxes:
            raise ValueError("no box given: draw at least one box around the animal, or clear the foreground "
                             "if the photo has no animal")
        self._write_correction("boxes", image, boxes, who)

    def clear(self, image: str, who: str = "") -> None:
        """Say the photo shows no animal: no foreground, so no background-attention score."""
        self._write_correction("clear", image, [], who)

    def undo_correction(self, image: str, who: str = "") -> None:
        """Drop the correction of one image: it is scored with the audit's own foreground again."""
        self._write_correction("undo", image, None, who)

    def _write_correction(self, action: str, image: str, boxes: list | None, who: str) -> None:
        (image,) = _image_ids([image])
        new = None if boxes is None else json.dumps(boxes)
        when = utc_now()
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute("SELECT boxes FROM corrections WHERE image = ?", (image,)).fetchone()
                old = row[0] if row else None
                if new is None:
                    con.execute("DELETE FROM corrections WHERE image = ?", (image,))
                else:
                    con.execute('INSERT INTO corrections (image, boxes, who, "when") VALUES (?,?,?,?) '
                                'ON CONFLICT(image) DO UPDATE SET boxes=excluded.boxes, who=excluded.who, '
                                '"when"=excluded."when"', (image, new, who, when))
                con.execute('INSERT INTO correction_history (image, action, old_boxes, new_boxes, who, "when") '
                            "VALUES (?,?,?,?,?,?)", (image, action, old, new, who, when))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def corrections(self) -> pd.DataFrame:
        """Current corrections: image, boxes (a list of ``(x0, y0, x1, y1)`` fractions; empty: no animal), who,
        when; by image."""
        return _parse_boxes(self._read('SELECT image, boxes, who, "when" FROM corrections ORDER BY image'))

    def correction(self, image: str) -> dict | None:
        """One image's correction (as a row of :meth:`corrections`), or None where the analyst made none."""
        frame = _parse_boxes(self._read('SELECT image, boxes, who, "when" FROM corrections WHERE image = ?',
                                        (image,)))
        return None if frame.empty else frame.iloc[0].to_dict()

    def correction_history(self) -> pd.DataFrame:
        """Every correction ever made, oldest first: seq, image, action, old and new boxes (as in
        :meth:`corrections`; None: no correction), who, when."""
        frame = self._read("SELECT * FROM correction_history ORDER BY seq")
        for column in ("old_boxes", "new_boxes"):
            frame[column] = pd.Series([[tuple(b) for b in json.loads(text)] if isinstance(text, str) else None
                                       for text in frame[column]], index=frame.index, dtype=object)
        return frame

    def snapshot(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """:meth:`flags` and :meth:`corrections` read in one transaction, so they show the same moment however
        many analysts write meanwhile (the CSV export)."""
        with self._connect() as con:
            con.execute("BEGIN")
            try:
                frames = [_frame(con.execute(sql)) for sql in (
                    'SELECT image, reason, note, who, "when" FROM flags WHERE flagged = 1 ORDER BY image',
                    'SELECT image, boxes, who, "when" FROM corrections ORDER BY image')]
            finally:
                con.execute("COMMIT")
        return frames[0], _parse_boxes(frames[1])

    def _read(self, sql: str, params: tuple = ()) -> pd.DataFrame:
        with self._connect() as con:
            return _frame(con.execute(sql, params))


def _frame(cursor) -> pd.DataFrame:
    return pd.DataFrame(cursor.fetchall(), columns=[d[0] for d in cursor.description])


def _parse_boxes(frame: pd.DataFrame) -> pd.DataFrame:
    frame["boxes"] = [[tuple(box) for box in json.loads(text)] for text in frame["boxes"]]
    return frame


def _migrate(con: sqlite3.Connection, path: Path) -> None:
    """Bring the file to :data:`SCHEMA_VERSION`, in one transaction that another process cannot interleave;
    a file already there is only read."""
    if con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return
    con.execute("BEGIN IMMEDIATE")
    try:
        at = con.execute("PRAGMA user_version").fetchone()[0]
        if at > SCHEMA_VERSION:
            raise StoreError(f"{path}: review schema {at}, this WhaleAudit reads up to {SCHEMA_VERSION}. Open it "
                             "with the WhaleAudit that wrote it, or update this one.")
        for step in MIGRATIONS[at:]:
            for statement in step.split(";"):
                if statement.strip():
                    con.execute(statement)
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def check_boxes(boxes) -> list[list[float]]:
    """``boxes`` as a list of ``[x0, y0, x1, y1]`` fractions, or ValueError naming the box that is not one."""
    checked = []
    for box in boxes:
        try:
            x0, y0, x1, y1 = (float(v) for v in box)
        except (TypeError, ValueError):
            raise ValueError(f"box {box!r} is not four numbers (x0, y0, x1, y1)") from None
        if not all(map(math.isfinite, (x0, y0, x1, y1))) or not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ValueError(f"box {box!r} is not a box inside the photo: it needs 0 <= x0 < x1 <= 1 and "
                             "0 <= y0 < y1 <= 1, in fractions of the photo's width and height")
        checked.append([x0, y0, x1, y1])
    return checked


def _image_ids(images) -> list[str]:
    if isinstance(images, str):
        images = [images]
    images = list(dict.fromkeys(images))
    bad = [i for i in images if not isinstance(i, str) or not i]
    if bad:
        raise ValueError(f"image ids must be non-empty strings, got {bad[:5]}")
    return images
