"""Length-prefixed frames (PROTOCOL.md section 1), kept free of I/O.

TCP delivers a stream of bytes, not messages: one ``send`` may arrive as two
``recv`` calls, and two sends as one.  A frame puts a 4-byte big-endian length
in front of each payload so the receiver knows where one message ends::

    +----------------------+---------------------------+
    | length: 4 bytes      | payload: `length` bytes   |
    +----------------------+---------------------------+

``FrameDecoder`` is fed whatever bytes arrived, in pieces of any size, and
hands back the whole payloads.  It never touches a socket, so the blocking
helpers and the asyncio helpers at the bottom share it, and tests can feed it
one byte at a time.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator

HEADER = struct.Struct("!I")
HEADER_SIZE = HEADER.size  # 4
DEFAULT_MAX_FRAME = 64 * 1024


class ProtocolError(Exception):
    """The peer broke the framing rules.  ``code`` is the PROTOCOL.md error code."""

    code = "bad-message"

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class FrameTooLarge(ProtocolError):
    """A header announced more bytes than the receiver accepts."""

    code = "too-large"


class Truncated(ProtocolError):
    """The stream ended inside a header or a payload."""

    code = "truncated"


def encode_frame(payload: bytes) -> bytes:
    """Return ``payload`` with its 4-byte length in front."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise TypeError(f"a frame carries bytes, not {type(payload).__name__}")
    if len(payload) > 0xFFFFFFFF:
        raise ValueError("a payload must be shorter than 4 GiB")
    return HEADER.pack(len(payload)) + bytes(payload)


class FrameDecoder:
    """Turns a byte stream, fed in any pieces, into whole payloads, in order.

    >>> decoder = FrameDecoder()
    >>> decoder.feed(b"\\x00\\x00\\x00\\x02h")
    []
    >>> decoder.feed(b"i\\x00\\x00")
    [b'hi']
    >>> decoder.feed(b"\\x00\\x00")
    [b'']
    >>> decoder.end()          # the stream closed at a frame boundary: fine
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME):
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._start = 0  # where the unread bytes begin in _buffer
        self._needed: int | None = None  # payload length once its header is read
        self._broken: ProtocolError | None = None

    @property
    def pending(self) -> int:
        """How many bytes are buffered towards a frame not yet complete."""
        return len(self._buffer) - self._start

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data`` and return every payload it completed (maybe none)."""
        return list(self.iter_feed(data))

    def iter_feed(self, data: bytes) -> Iterator[bytes]:
        if self._broken is not None:
            raise self._broken
        self._buffer += data
        while True:
            available = len(self._buffer) - self._start
            if self._needed is None:
                if available < HEADER_SIZE:
                    break
                (length,) = HEADER.unpack_from(self._buffer, self._start)
                if length > self.max_frame:
                    # Refuse before buffering a byte of the payload.
                    self._broken = FrameTooLarge(
                        f"a frame announced {length} bytes; the limit is {self.max_frame}"
                    )
                    self._buffer = bytearray()
                    self._start = 0
                    raise self._broken
                self._start += HEADER_SIZE
                self._needed = length
                available -= HEADER_SIZE
            if available < self._needed:
                break
            end = self._start + self._needed
            payload = bytes(self._buffer[self._start : end])
            self._start = end
            self._needed = None
            yield payload
        self._compact()

    def _compact(self) -> None:
        # Drop consumed bytes only when they are at least half the buffer, so
        # each byte is copied a bounded number of times: the cost stays linear.
        if self._start and self._start * 2 >= len(self._buffer):
            del self._buffer[: self._start]
            self._start = 0

    def end(self) -> None:
        """Say the stream has ended; raise ``Truncated`` if it ended mid-frame."""
        if self._broken is not None:
            raise self._broken
        if self._needed is not None:
            have = len(self._buffer) - self._start
            raise Truncated(f"the stream ended {self._needed - have} bytes short of a payload")
        if self.pending:
            raise Truncated(f"the stream ended inside a header ({self.pending} of 4 bytes)")


# Thin helpers for blocking sockets -------------------------------------------


def send_frame(sock: socket.socket, payload: bytes) -> None:
    """Send one whole frame on a blocking socket."""
    sock.sendall(encode_frame(payload))


class FrameReader:
    """Reads whole payloads from a blocking socket, one ``recv`` at a time."""

    def __init__(self, sock: socket.socket, max_frame: int = DEFAULT_MAX_FRAME, bufsize=65536):
        self.sock = sock
        self.decoder = FrameDecoder(max_frame)
        self.bufsize = bufsize
        self._ready: list[bytes] = []

    def read(self) -> bytes | None:
        """Return the next payload, or ``None`` when the peer closed cleanly."""
        while not self._ready:
            data = self.sock.recv(self.bufsize)
            if not data:
                self.decoder.end()  # raises Truncated mid-frame
                return None
            self._ready.extend(self.decoder.iter_feed(data))
        return self._ready.pop(0)

    def __iter__(self) -> Iterator[bytes]:
        while (payload := self.read()) is not None:
            yield payload


# Thin helpers for asyncio streams ---------------------------------------------


async def write_frame(writer: asyncio.StreamWriter, payload: bytes) -> None:
    """Write one frame and wait until the transport has room again."""
    writer.write(encode_frame(payload))
    await writer.drain()


async def read_frame(
    reader: asyncio.StreamReader, max_frame: int = DEFAULT_MAX_FRAME
) -> bytes | None:
    """Read one payload from a stream, or ``None`` on a clean end of stream."""
    try:
        header = await reader.readexactly(HEADER_SIZE)
    except asyncio.IncompleteReadError as short:
        if not short.partial:
            return None
        raise Truncated(
            f"the stream ended inside a header ({len(short.partial)} of 4 bytes)"
        ) from None
    (length,) = HEADER.unpack(header)
    if length > max_frame:
        raise FrameTooLarge(f"a frame announced {length} bytes; the limit is {max_frame}")
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as short:
        raise Truncated(
            f"the stream ended {length - len(short.partial)} bytes short of a payload"
        ) from None
