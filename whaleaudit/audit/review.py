"""The analysts' review of an audit: flags, reasons and notes, and the history of every change.

Stored in the audit's ``review.sqlite``, the only mutable file of an audit. Each action is one
``BEGIN IMMEDIATE`` transaction, so browser tabs, server threads and other processes can write at once
without losing a change: a writer waits (``busy_timeout``) rather than failing, reads the old state inside
its own write lock, and appends it to ``history`` beside the new state. WAL journaling lets readers (the
pages, the CSV export) see a consistent snapshot while someone writes, and ``synchronous=FULL`` makes a
committed flag survive a crash of the server or the machine. One connection per :class:`Review` (threads
take turns on it) keeps an action at a few milliseconds: opening and closing a connection per action would
checkpoint the WAL every time.

Tables::

    flags    one row per image ever touched: image, flagged (0/1), reason, note, who, "when"
    history  append-only: seq, image, action (flag/unflag/note), old and new flagged/reason/note, who, "when"
"""

from __future__ import annotations

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

_SCHEMA = """
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
                    con.executescript(_SCHEMA)
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
            last = con.execute("SELECT max(seq) FROM history").fetchone()[0]
            return (*self._opened[1:], last or 0)

    def history(self, last: int | None = None) -> pd.DataFrame:
        """Every change ever made (or only the ``last`` ones), oldest first."""
        if last is None:
            return self._read("SELECT * FROM history ORDER BY seq")
        return self._read("SELECT * FROM (SELECT * FROM history ORDER BY seq DESC LIMIT ?) ORDER BY seq", (last,))

    def _read(self, sql: str, params: tuple = ()) -> pd.DataFrame:
        with self._connect() as con:
            cursor = con.execute(sql, params)
            columns = [d[0] for d in cursor.description]
            return pd.DataFrame(cursor.fetchall(), columns=columns)


def _image_ids(images) -> list[str]:
    if isinstance(images, str):
        images = [images]
    images = list(dict.fromkeys(images))
    bad = [i for i in images if not isinstance(i, str) or not i]
    if bad:
        raise ValueError(f"image ids must be non-empty strings, got {bad[:5]}")
    return images
