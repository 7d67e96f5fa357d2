"""How the two engines use their sockets: what the contract tests cannot see from outside.

The contract (tests/test_contract.py) checks what a client receives.  These
tests look inside the engines, at the socket options and system calls that
decide how fast and how safely it arrives.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
from rawclient import WAIT, RawClient

from chatlib.framing import FrameDecoder
from chatlib.room import WRITE_SIZE, Outgoing
from chatlib.serve import start_server

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
