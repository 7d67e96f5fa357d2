"""The chat room as pure logic (lesson 06): who is in, who is sent what, in which order.

There are no sockets and no threads here.  A server engine tells the room what
happened on the network (a member connected, a payload arrived, a socket
closed, some payloads went out) and asks it what to send to whom.  This is the
way ``h11`` does HTTP: the rules live in one plain object, fed events, and the
I/O lives in thin shells around it.  Both engines, ``chatlib.server_threads``
and ``chatlib.server_asyncio``, are such shells, so they share every rule::

    >>> room = Room(clock=lambda: 1700000000.0)
    >>> ana, ben = room.connect(), room.connect()
    >>> _ = room.receive(ana, b'{"type": "join", "nick": "ana"}')
    >>> _ = room.receive(ben, b'{"type": "join", "nick": "ben"}')
    >>> _ = room.receive(ben, b'{"type": "say", "text": "hola"}')
    >>> for payload in room.take(ana).payloads:
    ...     print(payload.decode())
    {"type":"welcome","nick":"ana","users":["ana"],"history":[]}
    {"type":"joined","nick":"ben"}
    {"type":"message","id":1,"nick":"ben","text":"hola","ts":1700000000.0}

Every event method returns the members it *touched*: those with something new
to send, or that must now be closed.  The engine wakes their writers, and each
writer calls ``take()``, sends the frames (``Outgoing.writes`` joins them into
as few system calls as it can) and, once they are out, calls ``sent()``.

The rules (PROTOCOL.md section 2), each kept in one place below:

- one order: ``_say`` numbers a message and queues the same bytes to every
  member at once, so all members, the sender too, see the same sequence;
- a nick is 1 to 32 characters without control characters, unique when case
  is ignored (``nick_problem``, ``nick_key``); a bad join leaves the
  connection open for another try;
- each member's queue is bounded: what is waiting plus what the engine has
  taken but not yet sent.  When it would overflow, the member is dropped
  (``_drop_slow``): its queue is emptied, it is sent only ``error too-slow``,
  and the others are told it ``left``.  A member that stops reading therefore
  costs at most ``queue_limit`` payloads of memory and never slows anyone down;
- a closing member is sent nothing new; what was queued before still goes out,
  then the connection is closed.

History: with a ``store``, message ids come from ``store.append`` (called
before anyone is sent the message) and ``welcome.history`` from
``store.recent``.  Without one, the room numbers messages 1, 2, 3, ... itself
and keeps the last ``history_size`` messages in memory (default 20; 0 turns
history off).  ``append`` runs inside the room's event (under the threads
engine's lock, on the asyncio engine's loop) although it waits for the disk,
because the id it returns is the message's place in the room's one order,
and the message must be kept before anyone can see it.  Run outside, two
lines could be numbered 7 and 8 and reach the members as 8 then 7, or reach
them before they are on disk.  One ``fsync`` per line is a price a chat can
pay.  The history in a ``welcome`` is shortened, oldest first, until
the ``welcome`` fits in one frame of ``max_payload`` bytes.

Passwords: with an ``authenticator``, a ``join`` is checked in two steps,
because a password check is slow on purpose (scrypt, 0.05 to 0.1 s) and the
room must never wait for it.  ``receive`` does the quick checks (a good nick,
a password given) and leaves the member a ``PasswordCheck``; the engine runs
it outside the room, where it makes only that member wait, and reports the
answer with ``password_checked``, which refuses the join or lets it in (if the
nick is still free: someone may have taken it meanwhile)::

    >>> class OnePassword:
    ...     def check(self, nick, password):
    ...         return password == "s3cret"
    >>> room = Room(authenticator=OnePassword())
    >>> ana = room.connect()
    >>> room.receive(ana, b'{"type": "join", "nick": "ana", "password": "s3cret"}')
    []
    >>> check = ana.password_check        # the engine runs this without the room
    >>> [m.nick for m in room.password_checked(ana, check.run())]
    ['ana']

Observers: whatever wants to watch the room (``chatlib.widgets.ServerConsole``,
a log) appends a callable to ``room.observers``.  At the end of every event,
once the room's state is whole again, each observer is called with a ``dict``
shaped like a protocol message, one per thing that happened::

    {"type": "joined", "nick": "ana"}                        a join was let in
    {"type": "message", "id": 1, "nick": "ana", "text": "hola", "ts": 1700000000.0}
    {"type": "left", "nick": "ana", "reason": "left"}        see LEFT_REASONS
    {"type": "error", "code": "nick-taken", "detail": "...", "to": "connection 2"}
    {"type": "shutdown"}                                     the last: the server stops

``message`` comes once it is queued for every member, ``error`` only for an
error that is really sent, and ``to`` names the member by its nick, or as
``connection N`` before it has joined::

    >>> room = Room(clock=lambda: 1700000000.0)
    >>> room.observers.append(print)
    >>> ana, ana2 = room.connect(), room.connect()
    >>> _ = room.receive(ana, b'{"type": "join", "nick": "ana"}')
    {'type': 'joined', 'nick': 'ana'}
    >>> _ = room.receive(ana2, b'{"type": "join", "nick": "ANA"}')  # doctest: +NORMALIZE_WHITESPACE
    {'type': 'error', 'code': 'nick-taken',
     'detail': "'ana' is already here; choose another nick", 'to': 'connection 2'}
    >>> _ = room.receive(ana, b'{"type": "say", "text": "hola"}')
    {'type': 'message', 'id': 1, 'nick': 'ana', 'text': 'hola', 'ts': 1700000000.0}
    >>> _ = room.closed(ana)
    {'type': 'left', 'nick': 'ana', 'reason': 'connection lost'}

An observer runs inside the room's event, on the engine's thread (under the
threads engine's lock, on the asyncio engine's loop), so every member waits
while it runs: it must be quick, and must not feed the room events.  The
console only puts what it is told on a queue, and draws from its own thread.
An observer that raises is logged and otherwise ignored: watching never breaks
the room.  Appending to ``observers`` and removing from it are safe from any
thread; an observer removed while an event is being told may hear that one.

A ``Room`` is not thread-safe: the threads engine holds one lock around every
call, and the asyncio engine calls it from its event loop only.  The one
exception is ``PasswordCheck.run``, which touches nothing in the room.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from chatlib import messages
from chatlib.framing import DEFAULT_MAX_FRAME, HEADER, HEADER_SIZE
from chatlib.messages import Join, Leave, MessageError, Say, Who

log = logging.getLogger(__name__)

DEFAULT_MAX_TEXT = 4000
DEFAULT_QUEUE_LIMIT = 1024
DEFAULT_HISTORY = 20
MAX_NICK = 32
WRITE_SIZE = 64 * 1024  # bytes an engine hands the OS in one call (Outgoing.writes)

# Why a member left, as an observer's ``left`` event says it: a member's
# ``closing`` reason, in words where it is not an error code.  A member closed
# without any of these (reset, broken, cut off) left with "connection lost".
LEFT_REASONS = {"leave": "left", "end of stream": "hung up"}
CONNECTION_LOST = "connection lost"

Observer = Callable[[dict[str, Any]], object]

# Room for the digits of a message id that is not known yet when the size of
# its payload is checked (see _say).
_ID_ROOM = 20


class Store(Protocol):
    """Where messages are kept (lesson 07 puts them in SQLite)."""

    def append(self, nick: str, text: str, ts: float) -> int:
        """Keep a message and return its id, larger than every id before."""

    def recent(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` messages, oldest first, as ``message`` objects."""


class Authenticator(Protocol):
    """Who may use which nick (lesson 07 checks hashed passwords).

    ``check`` is called outside the room, from any thread, several at once:
    it must be thread-safe.
    """

    def check(self, nick: str, password: str) -> bool: ...


@dataclass(frozen=True)
class PasswordCheck:
    """A ``join`` waiting for its password to be checked, which the engine does outside the room."""

    nick: str
    password: str = field(repr=False)  # never in a log
    authenticator: Authenticator = field(repr=False)

    def run(self) -> bool:
        """Ask the authenticator: slow (a hash), so never call it inside the room."""
        return self.authenticator.check(self.nick, self.password)


def nick_problem(nick: str) -> str | None:
    """Say what is wrong with ``nick``, or return ``None`` if it is a good nick."""
    if not 1 <= len(nick) <= MAX_NICK:
        return f"a nick has 1 to {MAX_NICK} characters; {nick!r} has {len(nick)}"
    for char in nick:
        if unicodedata.category(char) == "Cc":  # \n, \t, \x1b (terminal escapes), DEL...
            return f"a nick has no control characters; {nick!r} has {char!r}"
    return None


def nick_key(nick: str) -> str:
    """The form two nicks are compared in: 'Ana', 'ANA' and 'ana' are one nick."""
    # NFC first, so 'é' typed as one character or as 'e' + accent is one nick too.
    return unicodedata.normalize("NFC", nick).casefold()


class Member:
    """One connection to the room, joined or not.  The engine keeps it as a handle."""

    def __init__(self, number: int):
        self.number = number  # the connection's number, for people reading logs
        self.nick: str | None = None  # set by a good join
        self.closing: str | None = None  # why we are closing it, once we are
        self.closed = False  # its socket is gone; nothing more is sent
        self.outbox: deque[bytes] = deque()  # payloads waiting for the engine
        self.in_flight = 0  # payloads taken by the engine, not yet reported sent
        self.password_check: PasswordCheck | None = None  # a join the engine must check

    @property
    def queued(self) -> int:
        """How much of the member's bounded queue is in use."""
        return len(self.outbox) + self.in_flight

    def __repr__(self) -> str:
        state = " closed" if self.closed else f" closing ({self.closing})" if self.closing else ""
        if self.password_check is not None and not state:
            state = " (checking a password)"
        nick = f" {self.nick!r}" if self.nick is not None else ""
        return f"<Member {self.number}{nick}{state}>"


@dataclass
class Outgoing:
    """What ``take()`` hands an engine: payloads to send, then whether to close."""

    payloads: list[bytes]
    close: bool

    def __bool__(self) -> bool:
        return bool(self.payloads) or self.close

    def writes(self, size: int = WRITE_SIZE) -> Iterator[tuple[bytes, int]]:
        """The payloads as frames, joined into pieces of about ``size`` bytes.

        Yields ``(data, count)``: the bytes for one ``write`` or ``sendall``, and
        how many payloads they carry (for ``Room.sent``).  A writer that wakes to
        find many small payloads waiting makes one system call for them, not one
        each; and it never holds a copy of more than ``size`` bytes plus one
        frame, however much the member's queue holds.

            >>> list(Outgoing([b"hi", b"", b"ho"], close=False).writes())
            [(b'\\x00\\x00\\x00\\x02hi\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02ho', 3)]
        """
        parts: list[bytes] = []
        held = 0
        for payload in self.payloads:
            parts += (HEADER.pack(len(payload)), payload)
            held += HEADER_SIZE + len(payload)
            if held >= size:
                yield b"".join(parts), len(parts) // 2
                parts, held = [], 0
        if parts:
            yield b"".join(parts), len(parts) // 2


class Room:
    def __init__(
        self,
        *,
        max_text: int = DEFAULT_MAX_TEXT,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        max_payload: int = DEFAULT_MAX_FRAME,
        history_size: int = DEFAULT_HISTORY,
        store: Store | None = None,
        authenticator: Authenticator | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if queue_limit < 1:
            raise ValueError("queue_limit must be at least 1")
        self.max_text = max_text
        self.queue_limit = queue_limit
        self.max_payload = max_payload
        self.history_size = history_size
        self.store = store
        self.authenticator = authenticator
        self.clock = clock

        self._connections: dict[Member, None] = {}  # every open connection, in order
        self._members: dict[str, Member] = {}  # nick_key -> joined member, in join order
        self._history: deque[dict[str, Any]] = deque(maxlen=history_size)
        self._next_id = 1
        self._last_ts = 0.0
        self._connection_count = 0
        self._shut_down = False
        self.peak_queued = 0  # the fullest any member's queue has been
        self.observers: list[Observer] = []  # called with what happened (see the docstring)

        # Filled while one event is handled, emptied by _done().
        self._touched: dict[Member, None] = {}
        self._left_to_announce: deque[str] = deque()
        self._to_tell: list[dict[str, Any]] = []  # for the observers

    # Events from the engine ------------------------------------------------------

    def connect(self) -> Member:
        """A new connection: it may send a ``join`` now."""
        self._connection_count += 1
        member = Member(self._connection_count)
        self._connections[member] = None
        if self._shut_down:
            self._close(member, messages.SERVER_SHUTDOWN, "the server is shutting down")
            self._done()
        return member

    def receive(self, member: Member, payload: bytes) -> list[Member]:
        """One whole payload arrived from ``member``."""
        if member.closing or member.closed:
            return self._done()  # it said goodbye or was dropped: the rest is ignored
        if member.password_check is not None:
            # Each member's payloads are handled in the order it sent them.
            raise RuntimeError(
                f"{member} sent another payload before its password check was reported: "
                "call password_checked() first"
            )
        try:
            request = messages.parse_client(payload)
        except MessageError as problem:
            self._send_error(member, problem.code, problem.detail)
            return self._done()
        if isinstance(request, Join):
            self._join(member, request)
        elif member.nick is None:
            kind = type(request).__name__.lower()
            self._send_error(
                member, messages.NOT_JOINED, f"send a 'join' with your nick before a {kind!r}"
            )
        elif isinstance(request, Say):
            self._say(member, request.text)
        elif isinstance(request, Who):
            self._send(member, messages.encode(messages.users(self.users())))
        elif isinstance(request, Leave):
            self._close(member, "leave")
        return self._done()

    def password_checked(self, member: Member, ok: bool) -> list[Member]:
        """The engine has run ``member.password_check``; ``ok`` is what it answered."""
        check, member.password_check = member.password_check, None
        if member.closing or member.closed:
            return self._done()  # it left, or the server stopped, while the check ran
        if check is None:
            raise RuntimeError(f"{member} has no password check waiting")
        if ok:
            self._admit(member, check.nick)
        else:
            self._send_error(member, messages.AUTH_FAILED, "wrong nick or password")
        return self._done()

    def end_of_stream(self, member: Member) -> list[Member]:
        """The member closed its side cleanly: the same as a ``leave``."""
        self._close(member, "end of stream")
        return self._done()

    def stream_error(self, member: Member, code: str, detail: str) -> list[Member]:
        """The framing broke (``too-large``, ``truncated``): tell it where we can, then close."""
        self._close(member, code, detail)
        return self._done()

    def closed(self, member: Member) -> list[Member]:
        """The connection is gone (closed by us, reset by the peer, broken)."""
        if not member.closed:
            member.closed = True
            member.outbox.clear()
            member.in_flight = 0
            member.password_check = None
            self._connections.pop(member, None)
            self._leave_room(member)
            self._touched[member] = None
        return self._done()

    def shutdown(self) -> list[Member]:
        """The server is stopping: every connection gets ``error server-shutdown``."""
        self._shut_down = True
        for member in list(self._connections):
            self._close(member, messages.SERVER_SHUTDOWN, "the server is shutting down")
        touched = self._done()
        self._observe({"type": "shutdown"})
        self._tell_observers()
        return touched

    # The engine's side of each member's queue --------------------------------------

    def take(self, member: Member) -> Outgoing:
        """Hand over everything waiting for ``member``; ``close`` means: then hang up."""
        if member.closed:
            return Outgoing([], close=True)
        payloads = list(member.outbox)
        member.outbox.clear()
        member.in_flight += len(payloads)
        return Outgoing(payloads, close=member.closing is not None)

    def sent(self, member: Member, count: int) -> None:
        """The engine has written ``count`` of the payloads it took for ``member``."""
        if not member.closed:
            member.in_flight = max(0, member.in_flight - count)

    # Questions ---------------------------------------------------------------------

    def users(self) -> list[str]:
        """The nicks in the room, in the order they joined."""
        return [member.nick for member in self._members.values() if member.nick is not None]

    def stats(self) -> dict[str, int]:
        return {
            "connections": len(self._connections),
            "members": len(self._members),
            "queued": sum(member.queued for member in self._connections),
            "peak_queued": self.peak_queued,
        }

    # The rules ---------------------------------------------------------------------

    def _join(self, member: Member, request: Join) -> None:
        if member.nick is not None:
            self._send_error(
                member, messages.BAD_MESSAGE, f"you have already joined as {member.nick!r}"
            )
            return
        problem = nick_problem(request.nick)
        if problem:
            self._send_error(member, messages.BAD_NICK, problem)
            return
        if self.authenticator is None:
            self._admit(member, request.nick)
        elif request.password is None:
            self._send_error(
                member, messages.AUTH_FAILED, "this server needs a 'password' in the 'join'"
            )
        else:
            # The slow part: the engine runs it outside the room, then calls password_checked.
            member.password_check = PasswordCheck(
                request.nick, request.password, self.authenticator
            )

    def _admit(self, member: Member, nick: str) -> None:
        """Let ``member`` in as ``nick``, unless another member has that nick."""
        key = nick_key(nick)
        if key in self._members:
            taken = self._members[key].nick
            self._send_error(
                member, messages.NICK_TAKEN, f"{taken!r} is already here; choose another nick"
            )
            return
        member.nick = nick
        self._members[key] = member
        self._observe(messages.joined(nick))
        self._send(member, self._welcome(member.nick))
        announcement = messages.encode(messages.joined(member.nick))
        for other in list(self._members.values()):
            if other is not member:
                self._send(other, announcement)

    def _welcome(self, nick: str) -> bytes:
        history = self._recent()
        while True:
            payload = messages.encode(messages.welcome(nick, self.users(), history))
            if len(payload) <= self.max_payload or not history:
                return payload
            history = history[1:]  # too big for one frame: drop the oldest

    def _recent(self) -> list[dict[str, Any]]:
        if self.history_size <= 0:
            return []
        if self.store is not None:
            return list(self.store.recent(self.history_size))
        return list(self._history)

    def _say(self, member: Member, text: str) -> None:
        assert member.nick is not None
        if len(text) > self.max_text:
            self._send_error(
                member,
                messages.TOO_LONG,
                f"the text has {len(text)} characters; the limit is {self.max_text}",
            )
            return
        # Time never runs backwards in the room, even if the clock is set back.
        ts = max(self.clock(), self._last_ts)
        # Check the size before the store keeps it: every member must be able
        # to receive it in one frame.
        if len(messages.encode(messages.message(0, member.nick, text, ts))) + _ID_ROOM > (
            self.max_payload
        ):
            self._send_error(member, messages.TOO_LONG, "the text is too long to fit in a frame")
            return
        if self.store is not None:
            message_id = self.store.append(member.nick, text, ts)  # before anyone sees it
        else:
            message_id = self._next_id
            self._next_id += 1
        self._last_ts = ts
        message = messages.message(message_id, member.nick, text, ts)
        if self.store is None:
            self._history.append(message)
        payload = messages.encode(message)  # encoded once, the same bytes for everyone
        self._observe(dict(message))  # before the sends: a member they drop leaves after it
        for other in list(self._members.values()):
            self._send(other, payload)

    def _send(self, member: Member, payload: bytes) -> bool:
        """Queue ``payload`` for ``member``; False if it will never be sent."""
        if member.closing or member.closed:
            return False  # nothing more is sent to a member on its way out
        if member.queued >= self.queue_limit:
            self._drop_slow(member)
            return False
        member.outbox.append(payload)
        self.peak_queued = max(self.peak_queued, member.queued)
        self._touched[member] = None
        return True

    def _send_error(self, member: Member, code: str, detail: str) -> None:
        if self._send(member, messages.encode(messages.error(code, detail))):
            self._observe_error(member, code, detail)

    def _drop_slow(self, member: Member) -> None:
        member.outbox.clear()  # what it has not been sent, it never will be
        self._close(
            member,
            messages.TOO_SLOW,
            f"you were dropped: {self.queue_limit} messages were waiting for you",
        )

    def _close(self, member: Member, reason: str, error_detail: str | None = None) -> None:
        """Start closing ``member``; with ``error_detail``, ``reason`` is the error code sent."""
        if member.closing or member.closed:
            return
        if error_detail is not None:
            # The one payload allowed past the queue's limit: the reason we hang up.
            member.outbox.append(messages.encode(messages.error(reason, error_detail)))
            self._observe_error(member, reason, error_detail)
        member.closing = reason
        self._touched[member] = None
        self._leave_room(member)

    def _leave_room(self, member: Member) -> None:
        if member.nick is not None and self._members.get(nick_key(member.nick)) is member:
            del self._members[nick_key(member.nick)]
            reason = member.closing or CONNECTION_LOST
            self._observe(
                {**messages.left(member.nick), "reason": LEFT_REASONS.get(reason, reason)}
            )
            # Announced in _done(): telling everyone may drop another slow member,
            # whose own 'left' then waits its turn instead of recursing.
            self._left_to_announce.append(member.nick)

    def _done(self) -> list[Member]:
        while self._left_to_announce:
            announcement = messages.encode(messages.left(self._left_to_announce.popleft()))
            for other in list(self._members.values()):
                self._send(other, announcement)
        touched = list(self._touched)
        self._touched.clear()
        self._tell_observers()
        return touched

    # Observers ---------------------------------------------------------------------

    def _observe(self, event: dict[str, Any]) -> None:
        """Keep ``event`` for the observers, who hear it once this event is handled."""
        if self.observers:  # no observer, no cost
            self._to_tell.append(event)

    def _observe_error(self, member: Member, code: str, detail: str) -> None:
        to = member.nick if member.nick is not None else f"connection {member.number}"
        self._observe({**messages.error(code, detail), "to": to})

    def _tell_observers(self) -> None:
        if not self._to_tell:
            return
        events, self._to_tell = self._to_tell, []
        for observer in tuple(self.observers):  # a copy: another thread may change the list
            for event in events:
                try:
                    observer(dict(event))  # a copy each: one observer cannot change another's
                except Exception:
                    log.exception(
                        "room observer %r failed on %s; the room goes on", observer, event
                    )
