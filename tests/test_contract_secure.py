"""The contract tests again, with TLS, accounts and the SQLite history all switched on.

Every test of ``tests/test_contract.py`` runs here a second time, on both
engines.  Those tests start servers with ``start_server`` and connect with
``RawClient``, names they look up in their own module; an autouse fixture
swaps those two names, for the length of each test, for versions that switch
everything on:

- every server gets a TLS certificate from a classroom authority
  (``chatlib.tls``), a fresh SQLite file holding both its message history
  (``chatlib.history``) and its accounts (``chatlib.accounts``), and requires
  a password on every join;
- every client speaks TLS, trusting that authority, and sends the password of
  the nick it joins as.

The tests use nicks nobody can list in advance (``member000`` to
``member199``...), so the authenticator creates the account of a nick the first
time it is asked about it, with the password that nick's clients send, and
then checks the join against the stored hash like any other.  A test that
brings its own ``store``, ``authenticator`` or ``ssl_context`` keeps it.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading

import pytest
import rawclient
import test_contract

from chatlib import serve
from chatlib.accounts import Accounts, FailureThrottle, ScryptParams
from chatlib.history import MessageStore
from chatlib.room import nick_key
from chatlib.tls import client_context, make_classroom_certs, server_context

# The contract's tests, and the fixtures they ask for, collected here too.
FIXTURES = ("engine", "start", "server", "connect")
globals().update(
    {
        name: item
        for name, item in vars(test_contract).items()
        if name.startswith("test_") or name in FIXTURES
    }
)

# One rule needs its TLS form: below, after the contract's tests are collected.
del test_a_stream_that_ends_inside_a_frame_is_truncated  # noqa: F821

# Cheap hashes: the contract tests join hundreds of nicks.  The real cost is
# tested in test_accounts.py; the code path here is the same.
CHEAP = ScryptParams(n=2**4, r=8, p=1)


def password_for(nick: str) -> str:
    return f"pässwörd of {nick_key(nick)}"


class CreateOnFirstJoin:
    """Accounts that create a nick's account (with ``password_for``) when first asked."""

    def __init__(self, accounts: Accounts):
        self.accounts = accounts
        self._lock = threading.Lock()

    def check(self, nick: str, password: str) -> bool:
        with self._lock:
            if nick not in self.accounts:
                self.accounts.add(nick, password_for(nick))
        return self.accounts.check(nick, password)


class TLSStream:
    """A TLS socket whose ``shutdown(SHUT_WR)`` ends the TCP stream and keeps TLS readable.

    ``SSLSocket.shutdown`` drops the TLS layer, after which the server's answer
    (an ``error truncated``) could not be read; the tests that end a stream
    half-way mean "the sender stops here", which is the TCP shutdown.
    """

    def __init__(self, tls: socket.socket):
        self._tls = tls

    def shutdown(self, how: int) -> None:
        socket.socket.shutdown(self._tls, how)

    def __getattr__(self, name: str):
        return getattr(self._tls, name)


@pytest.fixture(scope="module")
def authority(tmp_path_factory):
    return make_classroom_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(autouse=True)
def everything_on(monkeypatch, tmp_path, authority):
    trusting = client_context(authority.ca)
    opened: list = []

    class SecureRawClient(rawclient.RawClient):
        def __init__(self, address, *, rcvbuf=None, ssl_context=None):
            super().__init__(address, rcvbuf=rcvbuf, ssl_context=ssl_context or trusting)
            self.sock = TLSStream(self.sock)

        def send(self, **message) -> None:
            if message.get("type") == "join" and "password" not in message:
                if isinstance(message.get("nick"), str):
                    message["password"] = password_for(message["nick"])
            super().send(**message)

    def secure_start_server(engine_name, host="127.0.0.1", port=0, **options):
        db = tmp_path / f"chat-{len(opened)}.db"
        store = MessageStore(db)
        accounts = Accounts(db, params=CHEAP, throttle=FailureThrottle())
        opened.extend([store, accounts])
        options.setdefault("ssl_context", server_context(authority.cert, authority.key))
        options.setdefault("store", store)
        options.setdefault("authenticator", CreateOnFirstJoin(accounts))
        try:
            return serve.start_server(engine_name, host, port, **options)
        except BaseException:  # e.g. a taken port: the files opened for it are closed too
            for resource in (store, accounts):
                opened.remove(resource)
                resource.close()
            raise

    monkeypatch.setattr(test_contract, "RawClient", SecureRawClient)
    monkeypatch.setattr(test_contract, "start_server", secure_start_server)
    yield
    serve.stop_all()  # before the files close under a server still running
    for resource in opened:
        resource.close()


def test_the_swap_is_in_place(start):
    """The tests above really run secure: a plain client is refused, TLS with a password gets in."""
    server = start()
    plain = rawclient.RawClient(server.address)
    try:
        plain.send(type="join", nick="ana", password=password_for("ana"))
        try:
            answer = plain.recv()  # the server hangs up...
        except (OSError, AssertionError):  # ...or resets, or sends a TLS alert, not a frame
            answer = None
        assert answer is None
    finally:
        plain.close()
    secure = test_contract.RawClient(server.address)
    try:
        secure.send(type="join", nick="ana", password="wrong")
        secure.expect_error("auth-failed")
        assert secure.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert secure.join("ana")["users"] == ["ana"]
        secure.send(type="say", text="guardado")
        message = secure.recv_type("message")
    finally:
        secure.close()
    assert server.room.store.recent(1) == [message]


@pytest.mark.parametrize(
    "tail", [b"\x00\x00", struct.pack("!I", 10) + b"abc"], ids=["in a header", "in a payload"]
)
def test_a_stream_that_ends_inside_a_frame_is_truncated_over_tls(server, connect, tail):
    """The contract's truncation rule, in the form TLS allows.

    Over TCP the sender can shut its side and still read the server's
    ``error truncated``.  TLS has no such half-close in OpenSSL: a TCP end of
    stream without TLS's own closing message is an attack for all TLS knows
    (someone cutting the connection to shorten what was said), and the
    connection is dead for both directions.  So the rule kept is the one that
    matters: the partial frame is never delivered as a message, the member is
    dropped, and the room is told it left.  The error reaches the sender if TLS
    still can carry it.
    """
    ana, cut = connect(), connect()
    ana.join("ana")
    cut.join("cut")
    ana.recv_type("joined")
    cut.send_raw(tail)
    cut.sock.shutdown(socket.SHUT_WR)
    try:
        answer = cut.recv()
    except ssl.SSLError:  # the server's TLS gave up with an alert: the connection is gone
        answer = None
    if answer is not None:
        assert answer["type"] == "error" and answer["code"] == "truncated", answer
    assert ana.recv() == {"type": "left", "nick": "cut"}
    assert ana.who() == ["ana"]
