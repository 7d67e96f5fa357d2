"""The message history in SQLite (chatlib.history): kept before it is sent, and through a kill."""

from __future__ import annotations

import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading

import pytest
from chatevents import next_of

from chatlib.client import ChatClient
from chatlib.history import MessageStore, StoreError
from chatlib.serve import start_server

WAIT = 30.0  # seconds; only guards against a hang
ENGINES = ["threads", "asyncio"]
LISTENING = re.compile(r"listening on (\S+):(\d+)")


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


@pytest.fixture
def store(tmp_path):
    with MessageStore(tmp_path / "chat.db") as store:
        yield store


# The store on its own ------------------------------------------------------------------


def test_ids_increase_and_recent_gives_the_last_n_oldest_first(store):
    ids = [store.append("ana", f"línea {n} 🦜", 1700000000.0 + n) for n in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert store.recent(2) == [
        {"type": "message", "id": ids[3], "nick": "ana", "text": "línea 3 🦜", "ts": 1700000003.0},
        {"type": "message", "id": ids[4], "nick": "ana", "text": "línea 4 🦜", "ts": 1700000004.0},
    ]
    assert [m["id"] for m in store.recent(100)] == ids
    assert store.recent(0) == []
    assert store.count() == 5


def test_an_empty_store_has_no_history(store):
    assert store.recent(20) == []


def test_ids_are_never_reused_even_after_rows_are_deleted(store):
    first = store.append("ana", "uno", 1.0)
    last = store.append("ana", "dos", 2.0)
    with sqlite3.connect(store.path) as other:
        other.execute("DELETE FROM messages WHERE id = ?", (last,))
    assert store.append("ana", "tres", 3.0) > last > first


def test_the_file_is_in_wal_mode_with_full_fsyncs(store):
    with sqlite3.connect(store.path) as other:  # WAL is a property of the file
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL, per connection


def test_a_commit_is_visible_from_another_connection_at_once(store):
    message_id = store.append("ana", "ya está", 5.0)
    with sqlite3.connect(store.path) as other:
        assert other.execute("SELECT text FROM messages WHERE id = ?", (message_id,)).fetchone()
        # Another process could be reading right now; the writer is not blocked by it.
        other.execute("BEGIN")
        other.execute("SELECT count(*) FROM messages").fetchone()
        store.append("ben", "while a reader reads", 6.0)
        other.execute("COMMIT")
    assert store.count() == 2


@pytest.mark.parametrize(
    "make_bad, expected",
    [
        (lambda tmp: tmp / "missing" / "chat.db", "does not exist"),
        (lambda tmp: tmp, "is a folder"),
        (
            lambda tmp: (tmp / "notes.db").write_text("not a database" * 100) and tmp / "notes.db",
            "not an SQLite database",
        ),
    ],
    ids=["no folder", "a folder", "not a database"],
)
def test_a_file_that_cannot_hold_messages_is_one_sentence(tmp_path, make_bad, expected):
    with pytest.raises(StoreError) as failed:
        MessageStore(make_bad(tmp_path))
    assert expected in str(failed.value)
    assert "\n" not in str(failed.value)


# In a running room -------------------------------------------------------------------


def test_a_message_is_on_disk_before_anyone_receives_it(engine, store):
    found: list[bool] = []

    def look_in_the_file(event: dict) -> None:  # on the receiver thread, as the line arrives
        if event["type"] == "message":
            with sqlite3.connect(store.path) as other:
                row = other.execute(
                    "SELECT nick, text FROM messages WHERE id = ?", (event["id"],)
                ).fetchone()
            found.append(row == (event["nick"], event["text"]))

    with start_server(engine, store=store) as server:
        ana = ChatClient(*server.address, on_event=look_in_the_file)
        ben = ChatClient(*server.address, on_event=look_in_the_file)
        try:
            ana.connect("ana")
            ben.connect("ben")
            for n in range(20):
                ana.say(f"line {n}")
            for client in (ana, ben):
                for _ in range(20):
                    next_of(client, "message")
        finally:
            ana.close()
            ben.close()
    assert found == [True] * 40


def test_a_message_the_store_cannot_keep_reaches_nobody(engine, tmp_path):
    class FullDisk(MessageStore):
        def append(self, nick, text, ts):
            if text == "lost":
                raise sqlite3.OperationalError("database or disk is full")
            return super().append(nick, text, ts)

    with FullDisk(tmp_path / "chat.db") as store, start_server(engine, store=store) as server:
        ana, ben = ChatClient(*server.address), ChatClient(*server.address)
        try:
            ana.connect("ana")
            ben.connect("ben")
            next_of(ana, "joined")
            ana.say("kept")
            assert next_of(ben, "message")["text"] == "kept"
            ana.say("lost")  # the server drops ana rather than send what it could not keep
            assert next_of(ben, "left") == {"type": "left", "nick": "ana"}
            assert ben.who() == ["ben"]
        finally:
            ana.close()
            ben.close()
        assert [m["text"] for m in store.recent(10)] == ["kept"]


def test_a_newcomer_gets_the_stored_history_exactly(engine, store):
    with start_server(engine, store=store, history_size=5) as server:
        ana = ChatClient(*server.address)
        try:
            ana.connect("ana")
            for n in range(8):
                ana.say(f"mensaje {n}, ñ")
            said = [next_of(ana, "message") for _ in range(8)]
            late = ChatClient(*server.address)
            try:
                history = late.connect("late")["history"]
            finally:
                late.close()
        finally:
            ana.close()
    assert history == said[-5:]  # id, nick, text and ts as everyone saw them


def test_the_history_outlives_the_server(engine, tmp_path):
    with MessageStore(tmp_path / "chat.db") as store, start_server(engine, store=store) as server:
        ana = ChatClient(*server.address)
        ana.connect("ana")
        ana.say("antes del reinicio")
        said = next_of(ana, "message")
        ana.close()
    with MessageStore(tmp_path / "chat.db") as store, start_server(engine, store=store) as server:
        ben = ChatClient(*server.address)
        try:
            assert ben.connect("ben")["history"] == [said]
            ben.say("después")
            assert next_of(ben, "message")["id"] > said["id"]
        finally:
            ben.close()


# chatlib serve --db, killed with SIGKILL and started again ---------------------------------


class ServeProcess:
    """``python -m chatlib serve --port 0 ARGS`` in a process of its own."""

    def __init__(self, *args: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chatlib", "serve", "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        line = self._next_line()
        match = LISTENING.search(line or "")
        if not match:
            self.kill()
            pytest.fail(f"chatlib serve did not start: {line!r} {self.process.stderr.read()}")
        self.address = (match.group(1), int(match.group(2)))

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _next_line(self) -> str | None:
        try:
            return self._lines.get(timeout=WAIT)
        except queue.Empty:
            return None

    def kill(self) -> int:
        """SIGKILL: no goodbye, no cleanup, no flush; what is not on disk is gone."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        code = self.process.wait(WAIT)
        self.process.stdout.close()
        self.process.stderr.close()
        return code


@pytest.fixture
def serve_process():
    started: list[ServeProcess] = []

    def start(*args: str) -> ServeProcess:
        started.append(ServeProcess(*args))
        return started[-1]

    yield start
    for process in started:
        process.kill()


def test_sigkill_and_restart_keep_every_acknowledged_message(engine, serve_process, tmp_path):
    db = str(tmp_path / "chat.db")
    server = serve_process("--engine", engine, "--db", db, "--history", "100")
    ana = ChatClient(*server.address)
    ana.connect("ana")
    for n in range(30):
        ana.say(f"mensaje {n}")
    acknowledged = [next_of(ana, "message") for _ in range(30)]  # each came back: it was sent
    assert server.kill() == -signal.SIGKILL
    ana.close()

    again = serve_process("--engine", engine, "--db", db, "--history", "100")
    ben = ChatClient(*again.address)
    try:
        assert ben.connect("ben")["history"] == acknowledged
    finally:
        ben.close()


def test_sigkill_in_the_middle_of_a_burst_loses_nothing_that_was_sent(
    engine, serve_process, tmp_path
):
    db = str(tmp_path / "chat.db")
    server = serve_process("--engine", engine, "--db", db, "--history", "1000")
    ana = ChatClient(*server.address)
    ana.connect("ana")
    received: list[dict] = []
    killed = threading.Event()

    def collect() -> None:
        while (event := ana.events.get(timeout=WAIT))["type"] != "disconnected":
            if event["type"] == "message":
                received.append(event)
                if len(received) == 50:
                    server.process.send_signal(signal.SIGKILL)  # while lines are in flight
                    killed.set()

    collector = threading.Thread(target=collect)
    collector.start()
    try:
        for n in range(500):
            if killed.is_set():
                break
            ana.say(f"ráfaga {n}")
    except ConnectionError:
        pass  # the server died under us: that is the experiment
    collector.join(WAIT)
    assert killed.is_set() and len(received) >= 50
    server.kill()
    ana.close()

    again = serve_process("--engine", engine, "--db", db, "--history", "1000")
    ben = ChatClient(*again.address)
    try:
        history = ben.connect("ben")["history"]
    finally:
        ben.close()
    # Everything anyone was sent is there, the same; maybe a few more it had stored.
    assert history[: len(received)] == received
    assert [m["text"] for m in history] == [f"ráfaga {n}" for n in range(len(history))]


def test_serve_with_an_unusable_db_is_one_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatlib",
            "serve",
            "--port",
            "0",
            "--db",
            str(tmp_path / "no" / "x.db"),
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "does not exist" in result.stderr
