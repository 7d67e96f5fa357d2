"""Accounts (chatlib.accounts): scrypt hashes only, checked on join, repeated failures slowed."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import threading
import time
import unicodedata

import pytest

from chatlib import accounts as accounts_module
from chatlib.accounts import (
    DEFAULT_PARAMS,
    Accounts,
    AccountsError,
    FailureThrottle,
    ScryptParams,
    read_password,
)
from chatlib.client import ChatClient, ChatError
from chatlib.history import MessageStore
from chatlib.serve import start_server

WAIT = 30.0  # seconds; only guards against a hang
ENGINES = ["threads", "asyncio"]
PASSWORD = "caballo correcto batería grapa"  # never to be found on disk
CHEAP = ScryptParams(n=2**4)  # for the tests that only count hashes


class FakeClock:
    """Time that moves only when a test says so: the lock-outs are measured, not waited for."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def accounts(tmp_path, clock):
    with Accounts(tmp_path / "chat.db", throttle=FailureThrottle(clock=clock)) as accounts:
        yield accounts


def chatlib(*args: str, stdin: str = "", check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chatlib", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=check,
    )


# Managing accounts -------------------------------------------------------------------


def test_add_check_remove(accounts):
    accounts.add("Ana", PASSWORD)
    assert accounts.check("Ana", PASSWORD)
    assert accounts.check("ana", PASSWORD)  # one nick, however it is capitalised, as in the room
    assert not accounts.check("Ana", PASSWORD.upper())
    assert accounts.nicks() == ["Ana"] and "ANA" in accounts and len(accounts) == 1
    accounts.remove("ANA")
    assert not accounts.check("Ana", PASSWORD)
    with pytest.raises(AccountsError, match="no account 'ana'"):
        accounts.remove("ana")


def test_an_existing_account_is_not_replaced(accounts):
    accounts.add("Ana", PASSWORD)
    with pytest.raises(AccountsError, match="'Ana' already has an account"):
        accounts.add("aNA", "another password")
    assert accounts.check("ana", PASSWORD)


@pytest.mark.parametrize(
    "nick, password, problem",
    [
        ("", PASSWORD, "1 to 32 characters"),
        ("two\nlines", PASSWORD, "control characters"),
        ("ana", "", "empty"),
        ("ana", "x" * 1025, "limit is 1024"),
    ],
)
def test_a_bad_nick_or_password_is_refused(accounts, nick, password, problem):
    with pytest.raises(AccountsError, match=problem):
        accounts.add(nick, password)
    assert len(accounts) == 0


# How a password is kept --------------------------------------------------------------


def test_a_row_holds_a_salt_and_an_scrypt_hash_that_anyone_can_recompute(accounts):
    accounts.add("ana", PASSWORD)
    accounts.add("ben", PASSWORD)  # the same password
    with sqlite3.connect(accounts.path) as db:
        rows = db.execute("SELECT nick, salt, hash, n, r, p FROM accounts ORDER BY nick").fetchall()
    assert DEFAULT_PARAMS == ScryptParams(n=2**14, r=8, p=1, salt_size=16, dklen=32)
    for _nick, salt, digest, n, r, p in rows:
        assert (len(salt), len(digest), n, r, p) == (16, 32, 2**14, 8, 1)
        expected = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
        assert digest == expected
    (_, salt_a, hash_a, *_), (_, salt_b, hash_b, *_) = rows
    assert salt_a != salt_b and hash_a != hash_b  # the salt makes equal passwords look different


def test_a_password_is_compared_in_constant_time(accounts, monkeypatch):
    accounts.add("ana", PASSWORD)
    calls = []
    real = accounts_module.hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(accounts_module.hmac, "compare_digest", spy)
    assert accounts.verify("ana", PASSWORD) and not accounts.verify("ana", "nope")
    assert calls == [(32, 32), (32, 32)]


def test_an_unknown_nick_costs_one_hash_like_a_known_one(accounts, monkeypatch):
    accounts.add("ana", PASSWORD)
    hashed = []
    real = accounts_module.scrypt_hash
    monkeypatch.setattr(
        accounts_module, "scrypt_hash", lambda *args: hashed.append(args[2]) or real(*args)
    )
    assert not accounts.verify("nobody", PASSWORD)
    assert not accounts.verify("ana", "wrong")
    assert hashed == [DEFAULT_PARAMS, DEFAULT_PARAMS]  # the same work either way


def test_a_password_typed_composed_or_decomposed_is_one_password(accounts):
    composed = "contraseña"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    accounts.add("ana", composed)
    assert accounts.check("ana", decomposed)


def test_stored_parameters_are_used_so_the_cost_can_be_raised_later(tmp_path):
    with Accounts(tmp_path / "chat.db", params=CHEAP) as old:
        old.add("ana", PASSWORD)
    with Accounts(tmp_path / "chat.db") as new:  # default, dearer parameters from now on
        new.add("ben", PASSWORD)
        assert new.check("ana", PASSWORD) and new.check("ben", PASSWORD)
        rows = dict(new._db.execute("SELECT nick, n FROM accounts").fetchall())
    assert rows == {"ana": 2**4, "ben": 2**14}


def test_no_password_in_clear_anywhere_on_disk(engine, tmp_path):
    db = tmp_path / "chat.db"
    wrong_guess = "adivinanza-equivocada-Ñ"
    with Accounts(db) as accounts, MessageStore(db) as store:
        accounts.add("ana", PASSWORD)
        with start_server(engine, store=store, authenticator=accounts) as server:
            client = ChatClient(*server.address)
            try:
                with pytest.raises(ChatError):
                    client.connect("ana", wrong_guess)
                client.connect("ana", PASSWORD)
                client.say("hola")
                while client.events.get(timeout=WAIT)["type"] != "message":
                    pass
            finally:
                client.close()
            # While the server runs, the newest pages sit in the write-ahead log.
            files = [p for p in tmp_path.iterdir() if p.name.startswith("chat.db")]
            assert {p.name for p in files} >= {"chat.db", "chat.db-wal"}
            assert_absent(files, [PASSWORD, wrong_guess])
    assert_absent(list(tmp_path.iterdir()), [PASSWORD, wrong_guess])


def assert_absent(files, secrets):
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            for form in (secret.encode("utf-8"), secret.encode("utf-16-le"), secret[:8].encode()):
                assert form not in data, f"{secret!r} found in {path.name}"


# Over the real protocol ----------------------------------------------------------------


def test_good_and_bad_passwords_over_the_protocol(engine, accounts):
    accounts.add("ana", PASSWORD)
    with start_server(engine, authenticator=accounts) as server:
        client = ChatClient(*server.address)
        try:
            for password in (None, "wrong", PASSWORD + " "):
                with pytest.raises(ChatError) as refused:
                    client.connect("ana", password)
                assert refused.value.code == "auth-failed"
            with pytest.raises(ChatError) as refused:
                client.connect("nobody", PASSWORD)  # no account: the same refusal
            assert refused.value.code == "auth-failed"
            assert refused.value.detail == "wrong nick or password"
            welcome = client.connect("ANA", PASSWORD)  # on the same connection, still open
            assert welcome["users"] == ["ANA"]
        finally:
            client.close()


# Repeated failures are slowed down -------------------------------------------------------


def test_failures_after_the_free_ones_shut_the_nick_for_doubling_times(accounts, clock):
    accounts.add("ana", PASSWORD)
    throttle = accounts.throttle
    waits = []
    for _ in range(10):
        assert not accounts.check("ana", "guess")
        waits.append(throttle.wait("ana"))
        clock.advance(waits[-1])  # the guesser waits exactly as long as it must
    assert waits == [0, 0, 1, 2, 4, 8, 16, 32, 60, 60]


def test_a_shut_nick_is_refused_at_once_without_hashing_even_the_right_password(accounts, clock):
    accounts.add("ana", PASSWORD)
    for _ in range(3):
        assert not accounts.check("ana", "guess")
    hashes = accounts.hashes_computed
    assert not accounts.check("ana", PASSWORD)  # shut for one second
    assert accounts.hashes_computed == hashes  # no hash: the refusal costs the room nothing
    clock.advance(0.999)
    assert not accounts.check("ana", PASSWORD)
    clock.advance(0.001)
    assert accounts.check("ana", PASSWORD)
    assert accounts.throttle.wait("ana") == 0 and accounts.throttle.tracked() == 0


def test_many_guesses_at_once_hash_no_more_than_the_free_ones(accounts, monkeypatch):
    """Checks run outside the room, several at once: the lock-out must hold all the same."""
    accounts.add("ana", PASSWORD)
    real_verify = accounts.verify

    def slow_verify(nick, password):
        time.sleep(0.2)  # the guesses overlap, as a burst of joins would
        return real_verify(nick, password)

    monkeypatch.setattr(accounts, "verify", slow_verify)
    guessers = 20
    start = threading.Barrier(guessers)
    answers: list[bool] = []

    def guess() -> None:
        start.wait(WAIT)
        answers.append(accounts.check("ana", "guess"))

    threads = [threading.Thread(target=guess) for _ in range(guessers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert answers == [False] * guessers
    assert accounts.hashes_computed == 3  # the free failures; the others were refused at once
    assert accounts.throttle.wait("ana") > 0
    assert accounts.check("ana", PASSWORD) is False  # still shut, even for the right password


def test_the_lock_out_is_per_nick(accounts):
    accounts.add("ana", PASSWORD)
    accounts.add("ben", PASSWORD)
    for _ in range(5):
        accounts.check("ANA", "guess")
    assert accounts.throttle.wait("ana") > 0
    assert accounts.check("ben", PASSWORD)


def test_old_failures_are_forgotten(accounts, clock):
    accounts.add("ana", PASSWORD)
    for _ in range(6):
        accounts.check("ana", "guess")
        clock.advance(accounts.throttle.wait("ana"))
    clock.advance(15 * 60 + 1)
    assert not accounts.check("ana", "guess")  # counts as a first failure again
    assert accounts.throttle.wait("ana") == 0


def test_the_record_of_failures_is_bounded(tmp_path, clock):
    throttle = FailureThrottle(clock=clock, max_tracked=100)
    with Accounts(tmp_path / "chat.db", params=CHEAP, throttle=throttle) as accounts:
        for n in range(1000):
            for _ in range(4):
                accounts.check(f"guess{n}", "x")
        assert throttle.tracked() == 100
        assert throttle.wait("guess999") > 0  # the most recent are the ones kept
        assert throttle.wait("guess0") == 0


def test_a_guesser_is_slowed_down_while_the_room_goes_on(engine, accounts, clock):
    accounts.add("ana", PASSWORD)
    accounts.add("ben", "ben's password")
    with start_server(engine, authenticator=accounts) as server:
        ben, guesser = ChatClient(*server.address), ChatClient(*server.address)
        try:
            ben.connect("ben", "ben's password")
            for guess in ("1234", "qwerty", "hunter2"):
                with pytest.raises(ChatError):
                    guesser.connect("ana", guess)
            hashes = accounts.hashes_computed
            for _ in range(20):  # now as fast as it likes: each is refused at once
                with pytest.raises(ChatError) as refused:
                    guesser.connect("ana", PASSWORD)
                assert refused.value.code == "auth-failed"
            assert accounts.hashes_computed == hashes
            ben.say("sigo aquí")  # the room never waited for the guesser
            while (event := ben.events.get(timeout=WAIT))["type"] != "message":
                pass
            assert event["text"] == "sigo aquí"
            clock.advance(1.0)
            assert guesser.connect("ana", PASSWORD)["users"] == ["ben", "ana"]
        finally:
            ben.close()
            guesser.close()


# Reading a password ----------------------------------------------------------------------


def test_read_password_asks_twice_on_a_terminal(monkeypatch):
    answers = iter(["uno", "dos"])
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(accounts_module.getpass, "getpass", lambda prompt: next(answers))
    with pytest.raises(AccountsError, match="differ"):
        read_password(confirm=True)


# The command line ------------------------------------------------------------------------


def test_users_add_list_remove(tmp_path):
    db = str(tmp_path / "chat.db")
    added = chatlib("users", "add", "Ana", "--db", db, stdin=PASSWORD + "\n")
    assert (added.returncode, added.stdout) == (0, f"added 'Ana' to {db}\n")
    assert chatlib("users", "list", "--db", db).stdout == "Ana\n"
    with Accounts(db) as accounts:
        assert accounts.check("ana", PASSWORD)  # the newline is not part of the password
    removed = chatlib("users", "remove", "ana", "--db", db)
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert chatlib("users", "list", "--db", db).stdout == ""


@pytest.mark.parametrize(
    "args, stdin, message",
    [
        (["users", "add", "ana"], PASSWORD, "'ana' already has an account"),
        (["users", "add", "ben"], "", "no password on stdin"),
        (["users", "add", "ben"], "\n", "the password is empty"),
        (["users", "add", "x" * 33], PASSWORD, "1 to 32 characters"),
        (["users", "remove", "zoe"], "", "there is no account 'zoe'"),
    ],
)
def test_users_errors_are_one_line(tmp_path, args, stdin, message):
    db = str(tmp_path / "chat.db")
    chatlib("users", "add", "ana", "--db", db, stdin=PASSWORD, check=True)
    result = chatlib(*args, "--db", db, stdin=stdin)
    assert result.returncode == 1
    assert result.stderr.startswith("chatlib users: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_users_on_a_missing_file(tmp_path):
    result = chatlib("users", "remove", "ana", "--db", str(tmp_path / "none.db"))
    assert result.returncode == 1 and "does not exist" in result.stderr
    assert not (tmp_path / "none.db").exists()


def test_serve_accounts_and_chat_with_a_password_from_stdin(tmp_path):
    from test_history import ServeProcess

    db = str(tmp_path / "chat.db")
    chatlib("users", "add", "ana", "--db", db, stdin=PASSWORD, check=True)
    server = ServeProcess("--db", db, "--accounts")
    try:
        port = str(server.address[1])
        good = chatlib(
            "chat", "--nick", "ana", "--port", port, "--password-stdin", stdin=f"{PASSWORD}\nhola\n"
        )
        assert good.returncode == 0, good.stderr
        assert good.stdout.splitlines()[-1].endswith("ana: hola")
        bad = chatlib("chat", "--nick", "ana", "--port", port, "--password-stdin", stdin="no\n")
        assert bad.returncode == 1
        assert (
            bad.stderr
            == "chatlib chat: the server refused to let 'ana' in: wrong nick or password\n"
        )
        none = chatlib("chat", "--nick", "ana", "--port", port, stdin="hola\n")
        assert none.returncode == 1 and "--password-stdin" in none.stderr
    finally:
        server.kill()


def test_serve_accounts_without_db_is_one_line():
    result = chatlib("serve", "--port", "0", "--accounts")
    assert result.returncode == 1
    assert result.stderr == "chatlib serve: --accounts needs --db FILE, the file that holds them\n"
