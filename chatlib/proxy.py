"""A loopback relay that records the byte stream, and can re-cut it.

Put it between a client and a server and it shows what really travels:

    with Proxy(("127.0.0.1", server_port)) as proxy:
        ...connect the client to proxy.address instead of the server...
    for event in proxy.events:
        print(event)

TCP promises the bytes arrive in order, not in the pieces they were sent in.
The proxy makes that visible on one machine, where the network would rarely
show it: ``pieces=1`` forwards every byte in its own ``send`` (with ``pause``
seconds between them), and ``merge=0.2`` holds what arrives until the sender
has been quiet for 0.2 s, then forwards it in one ``send``.  With ``hold=True``
every piece waits for ``release()``, so a lesson decides exactly which bytes
the receiver can see, and a ``recv`` cannot race ahead of it.

``open_pair(...)`` sets up the usual experiment: a sender and a receiver on
loopback with a proxy between them.

Everything it relays is recorded as ``WireEvent``s, which is also what a man
in the middle would see.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass

TO_SERVER = "client -> server"
TO_CLIENT = "server -> client"


@dataclass(frozen=True)
class WireEvent:
    """One thing seen on the wire.  ``t`` is ``time.monotonic()``."""

    t: float
    connection: int  # 1 for the first connection accepted, 2 for the next...
    direction: str  # TO_SERVER or TO_CLIENT
    kind: str  # "connect", "data", "close" (the sender shut down), "reset", "refused"
    data: bytes = b""

    def __str__(self) -> str:
        what = repr(self.data) if self.kind == "data" else self.kind
        return f"#{self.connection} {self.direction}: {what}"


class Proxy:
    """Relay connections from ``address`` to ``target``, recording them."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        pieces: int | None = None,
        pause: float = 0.0,
        merge: float | None = None,
        hold: bool = False,
    ):
        self.target = target
        self.pieces = pieces
        self.pause = pause
        self.merge = merge
        self.hold = hold
        self._gate = threading.Condition()
        self._released = {TO_SERVER: 0, TO_CLIENT: 0}  # pieces allowed through while held
        self.events: list[WireEvent] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server((host, port), reuse_port=False)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()
        self._accepter = threading.Thread(target=self._accept_loop, name="proxy", daemon=True)
        self._accepter.start()

    # Recording ----------------------------------------------------------------

    def _record(self, connection: int, direction: str, kind: str, data: bytes = b"") -> None:
        with self._lock:
            self.events.append(WireEvent(time.monotonic(), connection, direction, kind, data))

    def sent(self, direction: str = TO_SERVER) -> bytes:
        """All the bytes relayed in one direction, joined."""
        return b"".join(e.data for e in list(self.events) if e.direction == direction)

    # Relaying -----------------------------------------------------------------

    def _accept_loop(self) -> None:
        connection = 0
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed by stop()
            if self._stopped.is_set():
                client.close()  # stop() connected only to wake this accept()
                return
            connection += 1
            self._record(connection, TO_SERVER, "connect")
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                self._record(connection, TO_SERVER, "refused")
                _reset(client)
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, server]
            for src, dst, direction in ((client, server, TO_SERVER), (server, client, TO_CLIENT)):
                pump = threading.Thread(
                    target=self._pump,
                    args=(connection, src, dst, direction),
                    name=f"proxy-{connection}-{direction}",
                    daemon=True,
                )
                self._threads.append(pump)
                pump.start()

    def _pump(self, connection: int, src: socket.socket, dst: socket.socket, direction: str):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    self._record(connection, direction, "close")
                    dst.shutdown(socket.SHUT_WR)  # pass the sender's FIN along
                    return
                if self.merge:
                    data += self._gather(src)
                self._record(connection, direction, "data", data)
                for piece in self._cut(data):
                    if not self._wait_for_release(direction):
                        return  # stop() was called while the piece was held
                    dst.sendall(piece)
                    if self.pause:
                        time.sleep(self.pause)
        except ConnectionResetError:
            self._record(connection, direction, "reset")
            _reset(dst)
        except OSError:
            pass  # stop() closed the sockets, or the other side is gone too

    def _gather(self, src: socket.socket) -> bytes:
        """Keep reading until the sender has been quiet for ``merge`` seconds."""
        more = bytearray()
        src.settimeout(self.merge)
        try:
            while chunk := src.recv(65536):
                more += chunk
        except TimeoutError:
            pass
        finally:
            src.settimeout(None)
        return bytes(more)

    # Holding pieces back ---------------------------------------------------------

    def release(self, count: int = 1, direction: str = TO_SERVER) -> None:
        """Let ``count`` more held pieces through in ``direction`` (with ``hold=True``).

        A release given before the bytes reach the proxy is kept for them.
        """
        if direction not in self._released:
            raise ValueError(f"direction must be TO_SERVER or TO_CLIENT, not {direction!r}")
        with self._gate:
            self._released[direction] += count
            self._gate.notify_all()

    def release_all(self) -> None:
        """Stop holding: what is held, and all that follows, flows freely."""
        with self._gate:
            self.hold = False
            self._gate.notify_all()

    def _wait_for_release(self, direction: str) -> bool:
        """Wait until a piece may go; False if the proxy is stopping instead."""
        with self._gate:
            self._gate.wait_for(
                lambda: self._stopped.is_set() or not self.hold or self._released[direction] > 0
            )
            if self._stopped.is_set():
                return False
            if self.hold:
                self._released[direction] -= 1
            return True

    def _cut(self, data: bytes) -> list[bytes]:
        if not self.pieces:
            return [data]
        return [data[i : i + self.pieces] for i in range(0, len(data), self.pieces)]

    # Lifetime -------------------------------------------------------------------

    def stop(self) -> None:
        """Close every connection and the listener; safe to call twice."""
        self._stopped.set()
        with self._gate:
            self._gate.notify_all()  # wake pumps waiting for a release
        if self._accepter.is_alive():
            # Closing a listener does not wake a thread blocked in accept() (on
            # Linux it waits forever), so connect once to let it see the stop.
            try:
                socket.create_connection(self.address, timeout=1).close()
            except OSError:
                pass
        self._accepter.join(timeout=5)
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for pump in self._threads:
            pump.join(timeout=5)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


class Pair:
    """A sender and a receiver on loopback, joined through ``proxy``.

    Bytes sent on ``sender`` travel through the proxy to ``receiver``, and back.
    Closing the pair (or leaving its ``with`` block) closes all three.
    """

    def __init__(self, sender: socket.socket, receiver: socket.socket, proxy: Proxy):
        self.sender = sender
        self.receiver = receiver
        self.proxy = proxy

    def close(self) -> None:
        """Close both sockets and stop the proxy; safe to call twice."""
        self.sender.close()
        self.receiver.close()
        self.proxy.stop()

    def __enter__(self) -> Pair:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def open_pair(*, timeout: float = 10.0, **options) -> Pair:
    """Connect a sender to a receiver through a new ``Proxy(**options)``, on loopback.

    Both sockets get ``timeout`` so that a ``recv`` waiting for bytes that
    will never come raises ``TimeoutError`` instead of hanging the notebook.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(timeout)
        proxy = Proxy(listener.getsockname()[:2], **options)
        try:
            sender = socket.create_connection(proxy.address, timeout=timeout)
            try:
                receiver, _ = listener.accept()
            except BaseException:
                sender.close()
                raise
        except BaseException:
            proxy.stop()
            raise
    sender.settimeout(timeout)
    receiver.settimeout(timeout)
    return Pair(sender, receiver, proxy)


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset rather than a polite FIN, as a crashed peer would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
