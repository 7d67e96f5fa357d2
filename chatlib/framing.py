"""Length-prefixed frames (PROTOCOL.md section 1), kept free of I/O.

TCP delivers a stream of bytes, not messages: one ``send`` may arrive as two
``recv`` calls, and two sends as one.  A frame puts a 4-byte big-endian length
in front of each payload so the receiver knows where one message ends::

    +----------------------+---------------------------+
    | length: 4 bytes      | payload: `length` bytes   |
    +----------------------+---------------------------+

``FrameDecoder`` is fed whatever bytes arrived, in pieces of any size, and
hands back the whole payloads.  It never touches a socket, so tests (and
lesson 03) can feed it one byte at a time.  Below it sit thin I/O shells: the
blocking ``send_frame``/``FrameReader`` (built on the decoder) and the asyncio
``write_frame``/``read_frame`` (built on ``StreamReader.readexactly``).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import deque
from collections.abc import Iterator

HEADER = struct.Struct("!I")
HEADER_SIZE = HEADER.size  # 4
MAX_PAYLOAD = 0xFFFFFFFF  # the largest length four bytes can announce
DEFAULT_MAX_FRAME = 64 * 1024


class ProtocolError(Exception):
    """The peer broke the framing rules.  ``code`` is the PROTOCOL.md error code.

    ``payloads`` holds the payloads that the same ``feed`` completed before it
    met the error, so that nothing the peer sent correctly is lost.
    """

    code = "bad-message"

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail
        self.payloads: list[bytes] = []


class FrameTooLarge(ProtocolError):
    """A header announced more bytes than the receiver accepts."""

    code = "too-large"


class Truncated(ProtocolError):
    """The stream ended inside a header or a payload."""

    code = "truncated"


def encode_frame(payload: bytes) -> bytes:
    """Return ``payload`` with its 4-byte length in front.

    >>> encode_frame(b"hi")
    b'\\x00\\x00\\x00\\x02hi'
    """
    if isinstance(payload, str):
        raise TypeError("a frame carries bytes, not str: encode the text first, text.encode()")
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise TypeError(f"a frame carries bytes, not {type(payload).__name__}")
    payload = bytes(payload)  # len() of a memoryview counts items, not bytes
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("a payload must be shorter than 4 GiB")
    return HEADER.pack(len(payload)) + payload


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

    The decoder holds only the frame in progress (its header, then its
    payload as it arrives), never more than ``max_frame`` bytes, and it checks
    a header before it keeps a single byte of that header's payload.  Each
    byte fed is looked at a bounded number of times, so the cost is linear in
    the bytes fed, whatever the size of the pieces.

    After an error the decoder stays broken: every later ``feed`` or ``end``
    raises the same kind of error, because the stream has lost its place.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME):
        if not isinstance(max_frame, int) or not 0 <= max_frame <= MAX_PAYLOAD:
            raise ValueError(f"max_frame must be an int from 0 to {MAX_PAYLOAD}, not {max_frame!r}")
        self.max_frame = max_frame
        self._partial = bytearray()  # the frame in progress: header bytes, then payload bytes
        self._needed: int | None = None  # the payload's length once its header is complete
        self._broken: ProtocolError | None = None

    @property
    def pending(self) -> int:
        """How many bytes are held towards a frame not yet complete."""
        return len(self._partial)

    @property
    def broken(self) -> bool:
        """True once the stream broke the rules; the decoder accepts nothing more."""
        return self._broken is not None

    @property
    def state(self) -> str:
        """Where the decoder is, in words: ``"reading a payload, 3 of 13 bytes"``."""
        if self._broken is not None:
            return f"broken: {self._broken.code}"
        if self._needed is None:
            return f"reading a header, {len(self._partial)} of {HEADER_SIZE} bytes"
        return f"reading a payload, {len(self._partial)} of {self._needed} bytes"

    def __repr__(self) -> str:
        return f"<FrameDecoder max_frame={self.max_frame}, {self.state}>"

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data`` and return every payload it completed (maybe none).

        Raises ``FrameTooLarge`` when a header announces more than
        ``max_frame``; the payloads completed before that header are on the
        error's ``payloads``.
        """
        payloads, error = self._parse(data)
        if error is not None:
            error.payloads = payloads
            raise error
        return payloads

    def iter_feed(self, data: bytes) -> Iterator[bytes]:
        """Like ``feed``, but yields the payloads one by one, then raises any error.

        The decoder takes ``data`` in at once, when this is called, even if
        the iterator is never used.
        """
        payloads, error = self._parse(data)
        return self._replay(payloads, error)

    @staticmethod
    def _replay(payloads: list[bytes], error: ProtocolError | None) -> Iterator[bytes]:
        yield from payloads
        if error is not None:
            error.payloads = payloads
            raise error

    def end(self) -> None:
        """Say the stream has ended; raise ``Truncated`` if it ended mid-frame."""
        self._raise_if_broken()
        if self._needed is not None:
            short = self._needed - len(self._partial)
            self._broken = Truncated(
                f"the stream ended {short} bytes short of a {self._needed}-byte payload"
            )
        elif self._partial:
            self._broken = Truncated(
                f"the stream ended inside a header ({len(self._partial)} of {HEADER_SIZE} bytes)"
            )
        self._raise_if_broken()

    def _raise_if_broken(self) -> None:
        if self._broken is not None:
            # A fresh exception each time: re-raising one object keeps growing its traceback.
            raise type(self._broken)(self._broken.detail)

    def _parse(self, data: bytes) -> tuple[list[bytes], ProtocolError | None]:
        """Consume all of ``data``; return the payloads completed and the error met, if any."""
        self._raise_if_broken()
        view = memoryview(data).cast("B")  # slicing a view copies nothing
        position, size = 0, len(view)
        payloads: list[bytes] = []
        while position < size:
            if self._needed is None:
                if not self._partial and size - position >= HEADER_SIZE:
                    (length,) = HEADER.unpack_from(view, position)
                    position += HEADER_SIZE
                else:
                    # The header was cut: collect its 4 bytes across pieces.
                    take = min(HEADER_SIZE - len(self._partial), size - position)
                    self._partial += view[position : position + take]
                    position += take
                    if len(self._partial) < HEADER_SIZE:
                        break
                    (length,) = HEADER.unpack(self._partial)
                    self._partial.clear()
                if length > self.max_frame:
                    # Refused here, before one byte of the payload is kept.
                    self._broken = FrameTooLarge(
                        f"a frame announced {length} bytes; the limit is {self.max_frame}"
                    )
                    return payloads, self._broken
                self._needed = length
            needed = self._needed
            if not self._partial and size - position >= needed:
                # The whole payload is in this piece: slice it out, nothing buffered.
                payloads.append(bytes(view[position : position + needed]))
                position += needed
            else:
                take = min(needed - len(self._partial), size - position)
                self._partial += view[position : position + take]
                position += take
                if len(self._partial) < needed:
                    break
                payloads.append(bytes(self._partial))
                self._partial.clear()
            self._needed = None
        return payloads, None


# Thin helpers for blocking sockets -------------------------------------------


def send_frame(sock: socket.socket, payload: bytes) -> None:
    """Send one whole frame on a blocking socket."""
    sock.sendall(encode_frame(payload))


class FrameReader:
    """Reads whole payloads from a blocking socket, one ``recv`` at a time."""

    def __init__(
        self, sock: socket.socket, max_frame: int = DEFAULT_MAX_FRAME, bufsize: int = 65536
    ):
        self.sock = sock
        self.decoder = FrameDecoder(max_frame)
        self.bufsize = bufsize
        self._ready: deque[bytes] = deque()
        self._error: ProtocolError | None = None  # raised once the good payloads are read

    def read(self) -> bytes | None:
        """Return the next payload, or ``None`` when the peer closed cleanly.

        Raises ``FrameTooLarge`` or ``Truncated`` when the stream breaks the
        rules, but only after handing out every payload that came before.
        """
        while not self._ready:
            if self._error is not None:
                raise self._error
            data = self.sock.recv(self.bufsize)
            try:
                if not data:
                    self.decoder.end()  # raises Truncated mid-frame
                    return None
                self._ready.extend(self.decoder.feed(data))
            except ProtocolError as error:
                self._ready.extend(error.payloads)
                self._error = error
        return self._ready.popleft()

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
    """Read one payload from a stream, or ``None`` on a clean end of stream.

    The header is checked before the payload is read, so an oversize frame is
    refused with ``FrameTooLarge`` without waiting for (or keeping) its bytes.
    """
    try:
        header = await reader.readexactly(HEADER_SIZE)
    except asyncio.IncompleteReadError as short:
        if not short.partial:
            return None
        raise Truncated(
            f"the stream ended inside a header ({len(short.partial)} of {HEADER_SIZE} bytes)"
        ) from None
    (length,) = HEADER.unpack(header)
    if length > max_frame:
        raise FrameTooLarge(f"a frame announced {length} bytes; the limit is {max_frame}")
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as short:
        raise Truncated(
            f"the stream ended {length - len(short.partial)} bytes short of a {length}-byte payload"
        ) from None
