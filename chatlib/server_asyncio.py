"""The chat server as asyncio coroutines (lessons 05 and 06).

The same room (``chatlib.room.Room``) and the same shape as
``chatlib.server_threads``, with tasks where that module has threads:

- ``_handle`` is started by ``asyncio.start_server`` for every connection and
  is its **reader**: it awaits whole frames (``chatlib.framing.read_frame``)
  and hands each payload to the room;
- a **writer** task per connection waits on an ``asyncio.Event`` until the
  room has something for its member, writes it and awaits ``drain()``, which
  is where a member that stops reading makes only its own writer wait.

Everything runs on one thread, the event loop's, so the room needs no lock:
between two ``await``\\ s nothing else runs.  The price: a call into the room
must never block, or every member would wait.  So the one slow step, the
password check of a ``join`` (a deliberately slow hash), runs in a worker
thread (``asyncio.to_thread``), while the reader of that member alone awaits
it.  The message store's ``append`` stays on the loop, as the room's
docstring explains.

Closing follows the threads engine: the writer sends what is queued (maybe an
``error`` last) and ends our sending side with ``write_eof()``; the reader reads
and throws away until the peer hangs up; a peer that takes longer than
``grace`` seconds is cut off with ``transport.abort()``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from chatlib.framing import DEFAULT_MAX_FRAME, ProtocolError, read_frame
from chatlib.room import Member, Room

log = logging.getLogger(__name__)

DEFAULT_GRACE = 5.0  # seconds a closing connection has to take its last bytes and hang up
_HANG_GUARD = 30.0  # the longest aclose() waits for the connections; only a bug waits that long
_TURNS_TO_HANDLE = 5  # turns of the loop from an accepted socket to our handler, with margin


class _Connection:
    def __init__(self, member: Member, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.member = member
        self.reader = reader
        self.writer = writer
        self.wakeup = asyncio.Event()  # set when the room has something for the writer
        self.task: asyncio.Task[None] | None = None  # the reader, running _handle
        self.writer_task: asyncio.Task[None] | None = None
        self.deadline: asyncio.TimerHandle | None = None  # cuts off a peer that will not hang up


class AsyncioServer:
    """A broadcast chat room served by asyncio.  ``await create(...)``, then ``await aclose()``."""

    engine = "asyncio"

    def __init__(
        self,
        room: Room,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        grace: float = DEFAULT_GRACE,
    ):
        self.room = room
        self.ssl_context = ssl_context
        self.max_frame = max_frame
        self.grace = grace
        self.address: tuple[str, int] = ("", 0)
        self._server: asyncio.Server | None = None
        self._connections: dict[Member, _Connection] = {}
        self._goodbyes: set[asyncio.Task[None]] = set()  # connections met while stopping
        self._stopping = False

    @classmethod
    async def create(
        cls, room: Room, host: str = "127.0.0.1", port: int = 0, **options: object
    ) -> AsyncioServer:
        """Start listening on ``host``:``port``; raises ``OSError`` if it cannot."""
        server = cls(room, **options)  # type: ignore[arg-type]
        await server.start(host, port)
        return server

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._handle, host, port, ssl=self.ssl_context, backlog=128
        )
        self.address = self._server.sockets[0].getsockname()[:2]

    # One connection -------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stopping:
            task = asyncio.current_task()
            assert task is not None
            self._goodbyes.add(task)
            try:
                await self._say_goodbye(writer)
            finally:
                self._goodbyes.discard(task)
            return
        conn = _Connection(self.room.connect(), reader, writer)
        self._connections[conn.member] = conn
        conn.task = asyncio.current_task()
        conn.writer_task = asyncio.create_task(self._write_loop(conn))
        self._wake([conn.member])  # not empty if the room is shutting down
        try:
            await self._read_loop(conn)
        except Exception:  # a bug, or a store that failed: lose this member, not the server
            log.exception("connection %s failed", conn.member)
            self._wake(self.room.closed(conn.member))
        finally:
            try:
                await self._finish(conn)
            finally:
                conn.writer.transport.abort()  # a no-op once closed; frees the socket if not

    async def _say_goodbye(self, writer: asyncio.StreamWriter) -> None:
        # Accepted just as the server stops: the room answers it server-shutdown,
        # which we send here, as aclose() is no longer waiting for new connections.
        member = self.room.connect()
        farewell = self.room.take(member)
        self.room.closed(member)
        try:
            for data, _count in farewell.writes():
                writer.write(data)
            _close(writer)  # sends what is buffered, then closes
            await asyncio.wait_for(writer.wait_closed(), self.grace)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.transport.abort()  # a no-op once closed

    async def _read_loop(self, conn: _Connection) -> None:
        member = conn.member
        try:
            while True:
                payload = await read_frame(conn.reader, self.max_frame)
                if payload is None:
                    self._wake(self.room.end_of_stream(member))
                    break
                self._wake(self.room.receive(member, payload))
                if (check := member.password_check) is not None:
                    # A join with a password: the hash runs in a worker thread, so
                    # the loop, and every other member, goes on meanwhile.
                    ok = await asyncio.to_thread(check.run)
                    self._wake(self.room.password_checked(member, ok))
                if member.closing or member.closed:
                    break  # it left, or was dropped: stop listening to it
                # read_frame does not give way while frames are already buffered:
                # without this, one sender's burst would fill everyone's queue
                # before a single writer could run.
                await asyncio.sleep(0)
        except ProtocolError as error:  # too-large or truncated
            self._wake(self.room.stream_error(member, error.code, error.detail))
        except OSError:  # reset by the peer, or cut off by us
            self._wake(self.room.closed(member))
        # Read and throw away until the peer hangs up (see the module's docstring).
        try:
            while await conn.reader.read(65536):
                pass
        except OSError:
            pass

    async def _write_loop(self, conn: _Connection) -> None:
        member, writer = conn.member, conn.writer
        try:
            while True:
                batch = self.room.take(member)
                if not batch:
                    conn.wakeup.clear()
                    await conn.wakeup.wait()
                    continue
                # Everything waiting goes in one write (or a few, for a big batch).
                for data, count in batch.writes():
                    writer.write(data)
                    await writer.drain()  # waits while the peer is not reading
                    self.room.sent(member, count)
                if batch.close:
                    if writer.can_write_eof():
                        writer.write_eof()  # the peer reads end of stream
                    else:
                        # TLS cannot half-close: its close_notify ends the stream, and
                        # asyncio reads on until the peer's own (or the deadline).
                        _close(writer)
                    return
        except Exception as error:  # the peer is gone, or we cut it off
            if not isinstance(error, OSError):
                log.exception("connection %s failed", member)
            self._wake(self.room.closed(member))
            writer.transport.abort()  # wakes the reader too

    async def _finish(self, conn: _Connection) -> None:
        assert conn.writer_task is not None
        await conn.writer_task  # it ends once the room says close, or its socket fails
        del self._connections[conn.member]
        self._wake(self.room.closed(conn.member))  # tells the room 'left' if still in
        _close(conn.writer)
        try:
            await conn.writer.wait_closed()  # the deadline, if any, still guards this
        except OSError:
            pass
        if conn.deadline is not None:
            conn.deadline.cancel()

    def _wake(self, members: list[Member]) -> None:
        """Wake the writers of ``members``; start the clock on those now closing."""
        for member in members:
            conn = self._connections.get(member)
            if conn is None:
                continue
            conn.wakeup.set()
            if (member.closing or member.closed) and conn.deadline is None:
                loop = asyncio.get_running_loop()
                conn.deadline = loop.call_later(self.grace, conn.writer.transport.abort)

    # Stopping -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Tell every member ``server-shutdown``, close every connection, stop listening."""
        if self._stopping or self._server is None:
            return
        self._stopping = True
        self._wake(self.room.shutdown())
        # Stop accepting, then give a connection accepted a moment ago the few
        # turns of the loop it needs to reach _handle (transport, protocol, our
        # task), where it hears server-shutdown too.  Closing the Server before
        # that would make Python 3.11 drop it silently, its socket left open.
        loop = asyncio.get_running_loop()
        for listener in self._server.sockets:
            loop.remove_reader(listener.fileno())
        for _ in range(_TURNS_TO_HANDLE):
            await asyncio.sleep(0)
        self._server.close()  # the port is free from here on
        # Give every writer up to `grace` seconds to send what is queued and the
        # error (each connection's deadline cuts off a member that is not reading);
        # then close, without waiting for each member to hang up first.
        writers = [c.writer_task for c in self._connections.values() if c.writer_task]
        if writers:
            await asyncio.wait(writers, timeout=self.grace)
        for conn in list(self._connections.values()):
            _close(conn.writer)
        handlers = [c.task for c in self._connections.values() if c.task] + list(self._goodbyes)
        if handlers:
            await asyncio.wait(handlers, timeout=_HANG_GUARD)
        await self._server.wait_closed()

    def stats(self) -> dict[str, int]:
        stats = self.room.stats()
        stats["tasks"] = 2 * len(self._connections)
        return stats


def _close(writer: asyncio.StreamWriter) -> None:
    """Close once: a second ``close()`` of a TLS transport forgets its connection, after
    which ``transport.abort()`` (the deadline) would do nothing."""
    if not writer.is_closing():
        writer.close()
