"""A chat client written from PROTOCOL.md alone: socket, struct and json, nothing of chatlib.

The contract tests and the command-line tests talk to the servers through it,
which shows that a client written from the document can talk to either engine.
"""

from __future__ import annotations

import json
import socket
import struct

WAIT = 30.0  # seconds a socket waits; only guards against a hang


class RawClient:
    """A chat client from PROTOCOL.md: 4-byte big-endian length, then UTF-8 JSON."""

    def __init__(self, address, *, rcvbuf: int | None = None, ssl_context=None):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(WAIT)
        sock.connect(address)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_payload(self, payload: bytes) -> None:
        self.sock.sendall(struct.pack("!I", len(payload)) + payload)

    def send(self, **message) -> None:
        self.send_payload(json.dumps(message).encode("utf-8"))

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def recv(self) -> dict | None:
        """The next message, or None at a clean end of stream."""
        header = self._exactly(4)
        if not header:
            return None
        assert len(header) == 4, "the stream ended inside a header"
        (length,) = struct.unpack("!I", header)
        payload = self._exactly(length)
        assert len(payload) == length, "the stream ended inside a payload"
        return json.loads(payload.decode("utf-8"))

    def recv_type(self, kind: str) -> dict:
        """The next message of type ``kind``, skipping others."""
        while True:
            message = self.recv()
            assert message is not None, f"end of stream while waiting for {kind!r}"
            if message["type"] == kind:
                return message

    def expect_error(self, code: str) -> dict:
        message = self.recv()
        assert message is not None and message["type"] == "error", message
        assert message["code"] == code, message
        assert isinstance(message["detail"], str) and message["detail"]
        return message

    def expect_end(self) -> None:
        assert self.recv() is None

    def join(self, nick: str, **extra) -> dict:
        self.send(type="join", nick=nick, **extra)
        welcome = self.recv()
        assert welcome is not None and welcome["type"] == "welcome", welcome
        return welcome

    def who(self) -> list[str]:
        self.send(type="who")
        return self.recv_type("users")["users"]

    def reset(self) -> None:
        """Crash: close with a TCP reset instead of a goodbye."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()
