"""How the two engines use their sockets: what the contract tests cannot see from outside.

The contract (tests/test_contract.py) checks what a client receives.  These
tests look inside the engines, at the socket options and system calls that
decide how fast and how safely it arrives.
"""

from __future__ import annotations

import socket

import pytest
from rawclient import RawClient

from chatlib.serve import start_server

ENGINES = ["threads", "asyncio"]


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


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
