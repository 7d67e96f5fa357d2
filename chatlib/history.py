"""The room's memory (lesson 07): every message kept in SQLite before anyone sees it.

    store = MessageStore("chat.db")
    start_server(store=store)        # or: chatlib serve --db chat.db

The room (``chatlib.room``) calls ``store.append(nick, text, ts)`` for each
``say`` *before* it queues the message to any member, and the id it returns is
the message's id; a newcomer's ``welcome.history`` comes from
``store.recent(n)``.  So once any member has been sent a message, it is on
disk: a server killed at any moment (``kill -9``, a crash, a power cut) and
started again on the same file has every message it ever delivered.

Why the message is safe on disk when ``append`` returns
--------------------------------------------------------

- **WAL** (``PRAGMA journal_mode=WAL``): a commit appends the new rows to a
  write-ahead log, the ``-wal`` file beside the database, instead of rewriting
  pages of the database itself.  A commit is one sequential write, and readers
  (another process running ``chatlib users``, a lesson peeking with the
  ``sqlite3`` module) never block the writer, nor the writer them.
- **synchronous=FULL**: SQLite calls ``fsync`` on the log at every commit, so
  the commit returns only once the disk has the bytes.  With WAL, the lighter
  ``NORMAL`` already survives a killed *process* (the bytes sit in the
  operating system's cache, which outlives it), but an operating-system crash
  or a power cut can lose the last commits; ``FULL`` does not.  The price is
  one ``fsync`` per message, well under a millisecond to a few milliseconds on
  an SSD: a chat's rate of messages never notices it.
- one transaction per message: ``append`` commits before it returns.  A
  message that was never committed was never sent to anybody.

The ids come from ``INTEGER PRIMARY KEY AUTOINCREMENT``: always larger than
any id the table ever held, even if old rows are deleted, as PROTOCOL.md asks
("``id`` (int, increasing)").

What is stored: the id, the nick, the text and the time, nothing else.  A
``join`` (the only message with a password) is never stored; passwords live in
``chatlib.accounts``, as scrypt hashes only.

A ``MessageStore`` may be called from any thread (the threads engine calls it
with the room's lock held); one lock serialises the calls on its connection.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    nick TEXT NOT NULL,
    text TEXT NOT NULL,
    ts   REAL NOT NULL
)
"""
BUSY_TIMEOUT = 10.0  # seconds to wait for another process holding the write lock


class StoreError(Exception):
    """A database file that cannot be used; ``str()`` says why in one sentence."""


def connect(path: str | os.PathLike, what: str = "database") -> sqlite3.Connection:
    """Open (or create) the SQLite file at ``path`` in WAL mode with full fsyncs.

    Shared with ``chatlib.accounts``, which keeps its table in the same file.
    Raises ``StoreError`` when the file cannot be opened or is not a database.
    """
    if os.path.isdir(path):
        raise StoreError(f"the {what} {path} is a folder, not a file")
    try:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, check_same_thread=False)
    except sqlite3.Error as error:
        raise StoreError(f"cannot open the {what} {path}: {_why(error, path)}") from None
    try:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"the {what} {path} cannot use a write-ahead log (mode {mode})")
        db.execute("PRAGMA synchronous=FULL")
    except sqlite3.Error as error:
        db.close()
        raise StoreError(f"cannot use the {what} {path}: {_why(error, path)}") from None
    except StoreError:
        db.close()
        raise
    return db


def _why(error: sqlite3.Error, path: str | os.PathLike) -> str:
    text = str(error)
    if "file is not a database" in text:
        return "it is not an SQLite database"
    if "unable to open" in text:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            return f"the folder {folder} does not exist"
        return "permission denied, or the folder cannot be written"
    if "readonly" in text:
        return "the file is read-only"
    return text


class MessageStore:
    """The chat's messages in an SQLite file; a ``chatlib.room.Store``."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._db = connect(self.path, "message database")
        self._lock = threading.Lock()
        try:
            with self._db:
                self._db.execute(SCHEMA)
        except sqlite3.Error as error:
            self._db.close()
            raise StoreError(
                f"cannot use the message database {self.path}: {_why(error, self.path)}"
            ) from None

    def append(self, nick: str, text: str, ts: float) -> int:
        """Keep one message, durably, and return its id (larger than every id before)."""
        with self._lock, self._db:  # the with-block commits (fsync) before it ends
            cursor = self._db.execute(
                "INSERT INTO messages (nick, text, ts) VALUES (?, ?, ?)", (nick, text, ts)
            )
            return int(cursor.lastrowid)

    def recent(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` messages, oldest first, as PROTOCOL.md ``message`` objects."""
        if n <= 0:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT id, nick, text, ts FROM messages ORDER BY id DESC LIMIT ?", (n,)
            ).fetchall()
        return [
            {"type": "message", "id": id_, "nick": nick, "text": text, "ts": ts}
            for id_, nick, text, ts in reversed(rows)
        ]

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM messages").fetchone()[0]

    def close(self) -> None:
        """Close the file (safe to call twice).  Nothing is lost without it: commits are on disk."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> MessageStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MessageStore {self.path}>"
