"""How the two engines use their sockets: what the contract tests cannot see from outside.

The contract (tests/test_contract.py) checks what a client receives.  These
tests look inside the engines, at the socket options and system calls that
decide how fast and how safely it arrives.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time

import pytest
from rawclient import WAIT, RawClient

from chatlib.framing import FrameDecoder
from chatlib.room import WRITE_SIZE, Outgoing
from chatlib.serve import start_server
from chatlib.tls import client_context, make_classroom_certs, server_context

ENGINES = ["threads", "asyncio"]


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting after {WAIT} s for {what}")
        time.sleep(0.01)


def on_server(handle, function):
    """Call ``function(engine_object)`` where the engine's state may be read safely."""
    server = handle._server
    if handle.engine == "asyncio":
        return handle._loop_thread.call(lambda: function(server))
    with server._lock:
        return function(server)


def accepted_sockets(handle) -> list:
    """The server's end of every connection in its room."""

    def sockets(server):
        if handle.engine == "asyncio":
            return [c.writer.get_extra_info("socket") for c in server._connections.values()]
        return [c.sock for c in server._connections.values()]

    return on_server(handle, sockets)


# Small frames leave at once -------------------------------------------------------------


def test_every_accepted_socket_sends_small_frames_at_once(engine):
    """TCP_NODELAY: otherwise a frame can wait for the 40 ms delayed acknowledgement."""
    with start_server(engine) as server:
        clients = [RawClient(server.address) for _ in range(3)]
        try:
            clients[0].join("ana")
            clients[1].send(type="who")  # connected, not joined: a socket all the same
            clients[1].expect_error("not-joined")
            clients[2].join("ben")
            found = accepted_sockets(server)
            assert len(found) == 3
            for sock in found:
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            for client in clients:
                client.close()


# One system call for everything a writer finds waiting -------------------------------------


def say_at_once(handle, nick: str, texts: list[str]) -> None:
    """Hand the room several says from ``nick`` in one go, as if they had arrived together.

    The room queues them all before any writer can run (the threads engine's
    lock is held, or the event loop is busy with this call), so every writer
    wakes to find all of them waiting.
    """

    def feed(server):
        member = next(m for m in server._connections if m.nick == nick)
        for text in texts:
            payload = json.dumps({"type": "say", "text": text}).encode()
            server._wake(server.room.receive(member, payload))

    on_server(handle, feed)


def count_writes(monkeypatch, handle, nick: str) -> list[int]:
    """Record the size of every write the engine makes to ``nick``'s socket, from now on."""

    def target(server):
        conn = next(c for m, c in server._connections.items() if m.nick == nick)
        return conn.writer if handle.engine == "asyncio" else conn.sock

    watched = on_server(handle, target)
    sizes: list[int] = []
    cls = asyncio.StreamWriter if handle.engine == "asyncio" else socket.socket
    name = "write" if handle.engine == "asyncio" else "sendall"
    original = getattr(cls, name)

    def spy(self, data, *args):
        if self is watched:
            sizes.append(len(data))
        return original(self, data, *args)

    monkeypatch.setattr(cls, name, spy)
    return sizes


def test_a_writer_sends_what_is_waiting_in_one_call(engine, monkeypatch):
    with start_server(engine) as server:
        ana, ben = RawClient(server.address), RawClient(server.address)
        try:
            ana.join("ana")
            ben.join("ben")
            ana.recv_type("joined")
            writes = count_writes(monkeypatch, server, "ben")
            texts = [f"línea {n}" for n in range(10)]
            say_at_once(server, "ana", texts)
            assert [ben.recv_type("message")["text"] for _ in texts] == texts
            assert [ana.recv_type("message")["text"] for _ in texts] == texts
            assert len(writes) == 1  # ten frames, one system call
            assert ben.who() == ["ana", "ben"]  # and the next answer goes out too
            assert len(writes) == 2
        finally:
            ana.close()
            ben.close()


def test_a_big_batch_is_written_in_pieces_of_bounded_size():
    payloads = [b"x" * 4000 for _ in range(100)] + [b""] + [b"y" * 70_000]
    writes = list(Outgoing(payloads, close=False).writes(size=WRITE_SIZE))
    assert sum(count for _, count in writes) == len(payloads)
    assert all(len(data) < WRITE_SIZE + 4 + 70_000 for data, _ in writes)
    # A piece ends once it reaches 64 KiB: 17 frames of 4,004 bytes; the last
    # holds the 15 lines left, the empty frame and the big one.
    assert [count for _, count in writes] == [17] * 6
    decoder = FrameDecoder(max_frame=100_000)
    assert [p for data, _ in writes for p in decoder.feed(data)] == payloads


# A password check makes only its own member wait ------------------------------------------

GATE = 15.0  # seconds a held password check waits for the test; less than a client's WAIT


class Gate:
    """An authenticator whose check for ``slow`` waits until the test opens the gate."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.opened = threading.Event()
        self.opened_in_time: list[bool] = []

    def check(self, nick: str, password: str) -> bool:
        if nick == "slow":
            self.reached.set()
            self.opened_in_time.append(self.opened.wait(GATE))
        return password == "pw"


def test_a_password_check_makes_only_its_own_member_wait(engine):
    """A slow check (scrypt) runs outside the room: nobody else waits for it.

    If it held the room (its lock, or the event loop), the line below would
    wait until the gate gave up, and the gate would report it was not opened.
    """
    gate = Gate()
    with start_server(engine, authenticator=gate) as server:
        ana, ben, slow, carla = (RawClient(server.address) for _ in range(4))
        try:
            ana.join("ana", password="pw")
            ben.join("ben", password="pw")
            slow.send(type="join", nick="slow", password="pw")
            assert gate.reached.wait(WAIT)
            # While slow's password is checked, the room talks, and lets others in.
            ana.send(type="say", text="sin esperar")
            assert ben.recv_type("message")["text"] == "sin esperar"
            assert carla.join("carla", password="pw")["users"] == ["ana", "ben", "carla"]
            gate.opened.set()
            assert slow.recv()["users"] == ["ana", "ben", "carla", "slow"]
            assert gate.opened_in_time == [True]
            heard = [ana.recv() for _ in range(4)]
            assert [(m["type"], m.get("nick")) for m in heard] == [
                ("joined", "ben"),
                ("message", "ana"),
                ("joined", "carla"),
                ("joined", "slow"),
            ]
        finally:
            gate.opened.set()
            for client in (ana, ben, slow, carla):
                client.close()


def test_a_member_that_hangs_up_during_its_password_check_never_joins(engine):
    gate = Gate()
    with start_server(engine, authenticator=gate) as server:
        ana, slow = RawClient(server.address), RawClient(server.address)
        try:
            ana.join("ana", password="pw")
            slow.send(type="join", nick="slow", password="pw")
            assert gate.reached.wait(WAIT)
            slow.reset()
            gate.opened.set()
            wait_until(lambda: server.stats()["connections"] == 1, "the reset one to be gone")
            assert ana.who() == ["ana"]  # no 'joined' came before the answer
        finally:
            gate.opened.set()
            ana.close()


# TLS with a reader and a writer at once ------------------------------------------------------


@pytest.fixture(scope="module")
def tls_contexts(tmp_path_factory):
    certs = make_classroom_certs(tmp_path_factory.mktemp("certs"))
    return server_context(certs.cert, certs.key), client_context(certs.ca)


def line_text(sender: int, n: int) -> str:
    """A line whose every character can be checked: long ones span several TLS records."""
    return f"{sender}:{n}:" + "ñá€x"[n % 4] * (n * 197 % 3990)


async def tls_member(address, context, sender: int, everyone: asyncio.Barrier, lines: int):
    """Join, wait for everyone, then send ``lines`` lines while reading every line of the room."""
    reader, writer = await asyncio.open_connection(*address, ssl=context)

    def send(**message) -> None:
        payload = json.dumps(message).encode()
        writer.write(struct.pack("!I", len(payload)) + payload)

    async def recv() -> dict:
        (length,) = struct.unpack("!I", await reader.readexactly(4))
        return json.loads(await reader.readexactly(length))

    async def talk() -> None:
        for n in range(lines):
            send(type="say", text=line_text(sender, n))
            await writer.drain()

    async def listen() -> list[dict]:
        heard = []
        while len(heard) < everyone.parties * lines:
            message = await recv()
            if message["type"] == "message":
                heard.append(message)
            else:
                assert message["type"] == "joined", message
        return heard

    try:
        send(type="join", nick=f"m{sender}")
        assert (await recv())["type"] == "welcome"
        await everyone.wait()  # so that every member hears every line
        _, heard = await asyncio.gather(talk(), listen())
    finally:
        writer.close()
    return heard


def test_tls_members_that_send_and_receive_at_once_get_every_byte(engine, tls_contexts):
    """Each server connection is read and written at the same time, over TLS, for a while.

    A TLS state used by two threads at once corrupts records: a member would
    be cut off ("bad record mac", "decode error") or read damaged text.
    """
    server_ctx, client_ctx = tls_contexts
    members, lines = 5, 200
    # A queue long enough that nobody is dropped while everyone floods the room.
    with start_server(engine, ssl_context=server_ctx, queue_limit=members * lines + 50) as server:

        async def room() -> list[list[dict]]:
            everyone = asyncio.Barrier(members)
            chat = (
                tls_member(server.address, client_ctx, n, everyone, lines) for n in range(members)
            )
            return await asyncio.wait_for(asyncio.gather(*chat), 4 * WAIT)

        heard = asyncio.run(room())
    first = [(m["id"], m["nick"], m["text"]) for m in heard[0]]
    assert len(first) == members * lines
    for other in heard[1:]:
        assert [(m["id"], m["nick"], m["text"]) for m in other] == first
    for sender in range(members):
        texts = [text for _, nick, text in first if nick == f"m{sender}"]
        assert texts == [line_text(sender, n) for n in range(lines)]


def test_the_threads_engine_never_uses_a_tls_state_from_two_threads_at_once(
    tls_contexts, watched_tls
):
    server_ctx, client_ctx = tls_contexts
    members, lines = 4, 100
    with start_server(
        "threads", ssl_context=server_ctx, queue_limit=members * lines + 50
    ) as server:

        async def room() -> list[list[dict]]:
            everyone = asyncio.Barrier(members)
            chat = [
                tls_member(server.address, client_ctx, n, everyone, lines) for n in range(members)
            ]
            return await asyncio.wait_for(asyncio.gather(*chat), 4 * WAIT)

        heard = asyncio.run(room())
    assert [len(h) for h in heard] == [members * lines] * members
    assert len(watched_tls) == members
    for tls in watched_tls:
        assert tls.server_side
        assert tls.overlaps == 0
        assert len(tls.threads) == 2  # its reader and its writer, taking turns


def frame(**message) -> bytes:
    payload = json.dumps(message).encode()
    return struct.pack("!I", len(payload)) + payload


def test_over_tls_the_server_says_goodbye_with_close_notify(engine, tls_contexts):
    """A TCP end without TLS's close_notify could be an attacker cutting the line."""
    server_ctx, client_ctx = tls_contexts
    with start_server(engine, ssl_context=server_ctx) as server:
        raw = socket.create_connection(server.address, timeout=WAIT)
        # suppress_ragged_eofs=False: an end without close_notify raises SSLEOFError.
        with client_ctx.wrap_socket(
            raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False
        ) as tls:
            tls.sendall(frame(type="join", nick="ana") + frame(type="leave"))
            received = b""
            while chunk := tls.recv(65536):
                received += chunk
    (welcome,) = FrameDecoder().feed(received)
    assert json.loads(welcome)["type"] == "welcome"


def test_a_tls_client_that_never_says_hello_is_cut_off(tls_contexts):
    """The threads engine gives a handshake twice the grace period (asyncio: its own 60 s)."""
    server_ctx, _ = tls_contexts
    with start_server("threads", ssl_context=server_ctx, grace=0.25) as server:
        with socket.create_connection(server.address, timeout=WAIT) as silent:
            assert silent.recv(1024) == b""  # the server hung up
            assert server.stats()["connections"] == 0  # it never reached the room
