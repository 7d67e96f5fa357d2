"""The chat server on blocking sockets and threads (lessons 04 and 06).

Each connection gets two threads:

- a **reader**, which blocks in ``recv`` (through ``chatlib.framing.FrameReader``)
  and hands every whole payload to the room;
- a **writer**, which sleeps until the room has something for its member, then
  blocks in ``sendall`` until the bytes are out.

Why two?  A member that stops reading fills its socket's buffers, and then
``sendall`` blocks.  If the thread that blocked were the one broadcasting a
line, everybody would wait for the slowest member.  With a writer per member,
only that member's writer waits; the room keeps queueing for it, up to its
limit, and then drops it (see ``chatlib.room``).

All the rules live in the room (``chatlib.room.Room``), which is not
thread-safe: one lock guards every call into it.  The lock is held only for
that quick bookkeeping, never while a socket blocks, nor while a password is
hashed: the reader checks a ``join``'s password in its own thread
(``PasswordCheck``), so a join makes only its own member wait.  The message
store's ``append`` does run under the lock: it gives each line its place in
the room's one order (see ``chatlib.room``).

Closing a connection, whatever the reason, goes the same way: the writer sends
what is still queued (the last payload may be an ``error``) and shuts the
sending side (the peer sees end of stream); the reader keeps reading and
throwing away until the peer closes too, so the peer's last bytes do not turn
our close into a reset that destroys the ``error`` before it is read.  A peer
that does neither within ``grace`` seconds is cut off.

TLS needs care here, because OpenSSL does not let two threads use one
connection's TLS state at once, and our reader and writer run at the same
time.  So the TLS state never touches the socket (``ssl.MemoryBIO``, the
sans-I/O way, like the room): see ``chatlib.tls.TLSStream``, which the client
uses too.  The handshake runs in the connection's reader thread, with one
deadline (twice ``grace``); goodbye is TLS's close_notify, then end of stream.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
import time

from chatlib.framing import DEFAULT_MAX_FRAME, FrameReader, ProtocolError
from chatlib.room import Member, Outgoing, Room
from chatlib.tls import TLSStream

log = logging.getLogger(__name__)

DEFAULT_GRACE = 5.0  # seconds a closing connection has to take its last bytes and hang up
_HANG_GUARD = 30.0  # the longest stop() waits for any one thread; only a bug waits that long


def listen(host: str, port: int, backlog: int = 128) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (``port=0``: the OS picks one).

    ``socket.create_server`` sets ``SO_REUSEADDR`` on Unix, so a server can be
    restarted at once on the same port.  Raises ``OSError`` (``socket.gaierror``
    for an unknown host) when it cannot listen there.
    """
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return socket.create_server(address[:2], family=family, backlog=backlog)


def _shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass  # already closed or never connected: nothing left to shut


class _PlainStream:
    """A TCP connection, as the reader (``recv``) and the writer (``sendall``, ``end``) use it."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def recv(self, bufsize: int) -> bytes:
        return self.sock.recv(bufsize)

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def end(self) -> None:
        """No more from us: the peer reads end of stream."""
        _shutdown(self.sock, socket.SHUT_WR)


class _Connection:
    def __init__(
        self,
        sock: socket.socket,
        stream: _PlainStream | TLSStream,
        member: Member,
        lock: threading.Lock,
    ):
        self.sock = sock  # the TCP socket: for shutdown, close and the grace period
        self.stream = stream  # the same connection as bytes in and out (TLS or not)
        self.member = member
        self.wakeup = threading.Condition(lock)  # the writer sleeps here
        self.reader: threading.Thread | None = None
        self.writer: threading.Thread | None = None
        self.deadline: threading.Timer | None = None  # cuts off a peer that will not hang up


class ThreadedServer:
    """A broadcast chat room served by threads.  ``start()``, then ``stop()``."""

    engine = "threads"

    def __init__(
        self,
        room: Room,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        grace: float = DEFAULT_GRACE,
    ):
        self.room = room
        self.ssl_context = ssl_context
        self.max_frame = max_frame
        self.grace = grace
        self._listener = listen(host, port)  # fails here, before any thread starts
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._lock = threading.Lock()
        self._connections: dict[Member, _Connection] = {}
        self._handshaking: set[socket.socket] = set()  # TLS handshakes not done yet
        self._handlers: set[threading.Thread] = set()  # every connection's reader thread
        self._stopping = False
        # Writing a byte to _wake_w wakes the accept loop so that it can stop.
        self._wake_r, self._wake_w = socket.socketpair()
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"chat-accept-{self.address[1]}", daemon=True
        )

    def start(self) -> None:
        self._acceptor.start()

    # Accepting -----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        self._listener.setblocking(False)  # a client may vanish between select and accept
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r:  # stop() was called
                        while self._accept_one():
                            pass  # those already waiting hear server-shutdown too
                        return
                    self._accept_one()

    def _accept_one(self) -> bool:
        """Accept one waiting connection and start its thread; False if none was waiting."""
        try:
            sock, _address = self._listener.accept()
        except BlockingIOError:
            return False
        except OSError as error:  # e.g. out of file descriptors
            log.warning("accept failed: %s", error)
            time.sleep(0.1)  # do not spin while the condition lasts
            return False
        sock.setblocking(True)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Send each small frame at once.  Without this, Nagle's algorithm holds
            # a frame back until the previous one is acknowledged, and the peer
            # delays its acknowledgement by up to 40 ms (asyncio sets it too).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handler = threading.Thread(target=self._serve_connection, args=(sock,), daemon=True)
        with self._lock:
            self._handlers.add(handler)
        handler.start()
        return True

    def _serve_connection(self, sock: socket.socket) -> None:
        """The reader thread: TLS handshake, join the room, read until the end."""
        try:
            if self.ssl_context is None:
                stream: _PlainStream | TLSStream | None = _PlainStream(sock)
            else:
                stream = self._handshake(sock)
                if stream is None:
                    return
            farewell = None
            with self._lock:
                member = self.room.connect()
                if self._stopping:
                    # Accepted just as the server stops: the room answers it
                    # server-shutdown, which we send below, as no writer will start.
                    farewell = self.room.take(member)
                    self.room.closed(member)
                else:
                    conn = self._register(sock, stream, member)
            if farewell is not None:
                self._say_goodbye(sock, stream, farewell)
                return
            try:
                self._read_loop(conn)
            finally:
                self._finish(conn)
        finally:
            with self._lock:
                self._handlers.discard(threading.current_thread())

    def _register(
        self, sock: socket.socket, stream: _PlainStream | TLSStream, member: Member
    ) -> _Connection:
        """Give the new member its writer thread.  Called with the lock held."""
        conn = _Connection(sock, stream, member, self._lock)
        self._connections[member] = conn
        conn.reader = threading.current_thread()
        conn.writer = threading.Thread(target=self._write_loop, args=(conn,), daemon=True)
        conn.writer.start()
        return conn

    @staticmethod
    def _say_goodbye(
        sock: socket.socket, stream: _PlainStream | TLSStream, farewell: Outgoing
    ) -> None:
        try:
            for data, _count in farewell.writes():  # a small frame into an empty buffer: no wait
                stream.sendall(data)
            stream.end()
        except OSError:
            pass
        finally:
            sock.close()

    def _handshake(self, sock: socket.socket) -> TLSStream | None:
        """The TLS handshake, in the connection's own thread, so the accept loop never waits."""
        assert self.ssl_context is not None
        tls = TLSStream(sock, self.ssl_context, server_side=True)
        with self._lock:
            self._handshaking.add(sock)  # stop() shuts it if the handshake is still waiting
        try:
            tls.handshake(timeout=self.grace * 2)  # a client that never says hello is cut off
            return tls
        except OSError as error:  # ssl.SSLError and TimeoutError are OSErrors
            log.info("TLS handshake failed: %s", error)
            sock.close()
            return None
        finally:
            with self._lock:
                self._handshaking.discard(sock)

    # Reading and writing ------------------------------------------------------------

    def _read_loop(self, conn: _Connection) -> None:
        member = conn.member
        reader = FrameReader(conn.stream, self.max_frame)
        try:
            while True:
                payload = reader.read()
                with self._lock:
                    if payload is None:
                        self._wake(self.room.end_of_stream(member))
                        break
                    self._wake(self.room.receive(member, payload))
                    check = member.password_check
                if check is not None:
                    # A join with a password: the hash takes this thread a moment,
                    # without the lock, so only this member waits for it.
                    ok = check.run()
                    with self._lock:
                        self._wake(self.room.password_checked(member, ok))
                if member.closing or member.closed:
                    break  # it left, or was dropped: stop listening to it
        except ProtocolError as error:  # too-large or truncated
            with self._lock:
                self._wake(self.room.stream_error(member, error.code, error.detail))
        except OSError:  # reset by the peer, or cut off by us
            with self._lock:
                self._wake(self.room.closed(member))
        except Exception:  # a bug, or a store that failed: lose this member, not the server
            log.exception("connection %s failed", member)
            with self._lock:
                self._wake(self.room.closed(member))
        # Read and throw away until the peer hangs up (see the module's docstring).
        try:
            while conn.sock.recv(65536):
                pass
        except OSError:
            pass

    def _write_loop(self, conn: _Connection) -> None:
        member = conn.member
        try:
            while True:
                with self._lock:
                    while not (batch := self.room.take(member)):
                        conn.wakeup.wait()
                # Everything waiting goes in one sendall (or a few, for a big batch).
                for data, count in batch.writes():
                    conn.stream.sendall(data)  # blocks while the peer is not reading
                    with self._lock:
                        self.room.sent(member, count)
                if batch.close:
                    conn.stream.end()  # the peer reads end of stream
                    return
        except Exception as error:  # the peer is gone, or we cut it off
            if not isinstance(error, OSError):
                log.exception("connection %s failed", member)
            with self._lock:
                self._wake(self.room.closed(member))
            _shutdown(conn.sock, socket.SHUT_RDWR)  # wakes the reader too

    def _finish(self, conn: _Connection) -> None:
        assert conn.writer is not None
        conn.writer.join()  # it ends once the room says close, or its socket fails
        with self._lock:
            del self._connections[conn.member]
            self._wake(self.room.closed(conn.member))  # tells the room 'left' if still in
            deadline = conn.deadline
        if deadline is not None:
            deadline.cancel()
            deadline.join()
        conn.sock.close()

    def _wake(self, members: list[Member]) -> None:
        """Wake the writers of ``members``; start the clock on those now closing.

        Called with the lock held.
        """
        for member in members:
            conn = self._connections.get(member)
            if conn is None:
                continue
            conn.wakeup.notify()
            if (member.closing or member.closed) and conn.deadline is None and not self._stopping:
                conn.deadline = threading.Timer(
                    self.grace, _shutdown, args=(conn.sock, socket.SHUT_RDWR)
                )
                conn.deadline.daemon = True
                conn.deadline.start()

    # Stopping -----------------------------------------------------------------------

    def stop(self) -> None:
        """Tell every member ``server-shutdown``, close every socket, join every thread."""
        with self._lock:
            if self._stopping:
                return
            # One step, so that a connection the room meets from now on is one
            # the room answers server-shutdown (see _serve_connection).
            self._stopping = True
            self._wake(self.room.shutdown())
            connections = list(self._connections.values())
        self._wake_w.send(b"x")
        if self._acceptor.ident is not None:  # it was started
            self._acceptor.join(_HANG_GUARD)
        self._listener.close()  # the port is free from here on
        with self._lock:
            handshaking = list(self._handshaking)
        # Give every writer up to `grace` seconds to send what is queued and the
        # error; a member that is not reading does not get longer than that.
        give_up_at = time.monotonic() + self.grace
        for conn in connections:
            assert conn.writer is not None
            conn.writer.join(max(0.0, give_up_at - time.monotonic()))
        for conn in connections:
            _shutdown(conn.sock, socket.SHUT_RDWR)  # ends the readers' recv
        for sock in handshaking:
            _shutdown(sock, socket.SHUT_RDWR)
        with self._lock:
            handlers = list(self._handlers)
        for handler in handlers:
            handler.join(_HANG_GUARD)
        self._wake_r.close()
        self._wake_w.close()

    def stats(self) -> dict[str, int]:
        with self._lock:
            stats = self.room.stats()
            stats["threads"] = 2 * len(self._connections)
            return stats
