"""A blocking chat client with a receiver thread (PROTOCOL.md section 2).

This is the client the terminal (``chatlib chat``) and the notebook chat panels
are built on::

    from chatlib.client import ChatClient

    client = ChatClient("127.0.0.1", port, on_event=print)
    welcome = client.connect("ana")      # {"type": "welcome", "users": [...], ...}
    client.say("hola")
    client.who()                         # ["ana", "bob"]
    event = client.events.get(timeout=5) # or read events from the queue
    client.close()

How it is built:

- **Sending** happens on the caller's thread.  A lock keeps each frame whole
  when several threads send at once (a widget callback and a cell, say).
- **Receiving** happens on one background thread, started once the server has
  welcomed us.  Every frame becomes a ``dict`` that goes to the queue
  ``client.events`` (for code that polls) and to ``on_event(event)`` if one was
  given (called *on the receiver thread*, except for the welcome, which comes
  on the thread that called ``connect()``: keep it short, and do not call
  ``who()`` from it, which waits for the receiver thread).
- **TLS**: the receiver and the senders share one TLS connection, and OpenSSL
  does not let two threads use one at once, which an ``ssl.SSLSocket`` read in
  one thread and written in another would do.  So the client works TLS in
  memory through ``chatlib.tls.TLSStream``, as the threads engine does: no two
  threads are ever inside the TLS state together, and ``close()`` ends with
  TLS's close_notify.
- The event stream is the whole conversation as this client saw it: first the
  ``welcome``, then ``message``, ``joined``, ``left``, ``users``, ``error``,
  and always, exactly once, a last event made here, not by the server::

      {"type": "disconnected", "reason": "the server shut down", "code": "server-shutdown"}

  ``code`` is ``None`` when there is no protocol error code for the reason
  (``"you left"`` after ``close()``, or a server that just closed).

Errors come in two kinds: ``ChatError(code, detail)`` when the server said no
(a taken nick: the connection stays open, so ``connect()`` can try another
nick), and ``ChatConnectionError`` when there is no usable connection at all
(refused, unknown host, a failed TLS handshake, not a chat server).  Its
message is one sentence a user can act on.
"""

from __future__ import annotations

import json
import queue
import socket
import ssl
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from chatlib.framing import DEFAULT_MAX_FRAME, FrameReader, ProtocolError, encode_frame
from chatlib.tls import TLSStream

Event = dict[str, Any]

DISCONNECTED = "disconnected"

# Errors after which the server closes the connection: when the connection
# then ends, the error says why better than "the server closed the connection".
_FATAL_CODES = {"server-shutdown", "too-slow", "too-large", "truncated"}


class ChatError(Exception):
    """The server refused a request: ``code`` from PROTOCOL.md, ``detail`` for people."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{detail} ({code})")
        self.code = code
        self.detail = detail


class ChatConnectionError(ConnectionError):
    """There is no usable connection to the server; ``str()`` says why, in one sentence."""


class ChatClient:
    """One member of a chat room, over one TCP (or TLS) connection.

    ``host`` and ``port`` say where the server is.  With ``ssl_context`` the
    connection is wrapped in TLS and the server's certificate is checked
    against ``server_hostname`` (default: ``host``).  ``timeout`` bounds the
    connection, the TLS handshake and the wait for the welcome, in seconds;
    once joined, the client waits for the server as long as it takes.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        on_event: Callable[[Event], object] | None = None,
        timeout: float = 10.0,
        max_frame: int = DEFAULT_MAX_FRAME,
    ):
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self.on_event = on_event
        self.timeout = timeout
        self.max_frame = max_frame
        self.events: queue.Queue[Event] = queue.Queue()
        self.nick: str | None = None  # as the server welcomed us

        self._sock: socket.socket | None = None  # the TCP socket: timeouts, shutdown, close
        self._stream: socket.socket | TLSStream | None = None  # the same, as bytes in and out
        self._reader: FrameReader | None = None
        self._receiver: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._closing = False  # we asked for the end: errors after that are expected
        self._ended = False  # the connection is over for good
        self._who_waiters: deque[queue.Queue | None] = deque()

    def __repr__(self) -> str:
        state = "joined" if self.joined else "ended" if self._ended else "not joined"
        return f"<ChatClient {self.nick or '-'} @ {self._where} ({state})>"

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def joined(self) -> bool:
        """True between a welcome and the end of the connection."""
        return self._receiver is not None and not self._ended

    # Joining ----------------------------------------------------------------

    def connect(self, nick: str, password: str | None = None) -> Event:
        """Connect (once), join as ``nick`` and return the server's ``welcome``.

        Raises ``ChatError`` when the server refuses the join (``nick-taken``,
        ``bad-nick``, ``auth-failed``...): the connection stays open, so calling
        ``connect()`` again with another nick tries again on it.  Raises
        ``ChatConnectionError`` when there is no connection to try on.
        """
        with self._state_lock:
            if self._ended:
                raise ChatConnectionError("this client's connection has ended; make a new client")
            if self._receiver is not None:
                raise RuntimeError(f"already joined as {self.nick!r}")
        if self._sock is None:
            self._sock, self._stream = self._open()
            self._reader = FrameReader(self._stream, max_frame=self.max_frame)
        join: Event = {"type": "join", "nick": nick}
        if password is not None:
            join["password"] = password
        try:
            self._send(join)
            welcome = self._wait_for_welcome()
        except ChatConnectionError:
            self._abandon()
            raise
        self.nick = welcome.get("nick", nick)
        self._sock.settimeout(None)  # from now on, silence is normal
        self._receiver = threading.Thread(
            target=self._receive, name=f"chat-receiver-{self.nick}", daemon=True
        )
        self._deliver(welcome)
        self._receiver.start()
        return welcome

    def _open(self) -> tuple[socket.socket, socket.socket | TLSStream]:
        """Connect, and shake hands if TLS; every failure becomes one sentence.

        Returns the socket and the stream to read and write: the socket itself,
        or TLS over it.
        """
        where = self._where
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except ConnectionRefusedError:
            raise ChatConnectionError(
                f"cannot connect to {where}: connection refused (is the server running?)"
            ) from None
        except socket.gaierror as error:
            raise ChatConnectionError(
                f"cannot connect to {where}: unknown host ({error.strerror})"
            ) from None
        except TimeoutError:
            raise ChatConnectionError(
                f"cannot connect to {where}: no answer within {self.timeout:g} s"
            ) from None
        except OSError as error:
            raise ChatConnectionError(
                f"cannot connect to {where}: {error.strerror or error}"
            ) from None
        # Send each line at once: without this, Nagle's algorithm holds a small
        # frame back until the previous one is acknowledged (up to 40 ms on Linux).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is None:
            return sock, sock
        tls = TLSStream(
            sock,
            self.ssl_context,
            server_side=False,
            server_hostname=self.server_hostname or self.host,
        )
        try:
            tls.handshake(self.timeout)
            return sock, tls
        except ssl.SSLCertVerificationError as error:
            sock.close()
            raise ChatConnectionError(
                f"TLS with {where} failed: the server's certificate is not trusted "
                f"({error.verify_message})"
            ) from None
        except ssl.SSLError as error:
            sock.close()
            hint = " (is the server using TLS?)" if "WRONG_VERSION" in str(error) else ""
            raise ChatConnectionError(
                f"TLS handshake with {where} failed: {error.reason or error}{hint}"
            ) from None
        except OSError as error:  # TimeoutError included
            sock.close()
            raise ChatConnectionError(
                f"TLS handshake with {where} failed: {error.strerror or error or 'no answer'}"
            ) from None

    def _wait_for_welcome(self) -> Event:
        where = self._where
        while True:
            try:
                payload = self._reader.read()
            except TimeoutError:
                raise ChatConnectionError(
                    f"{where} did not answer the join within {self.timeout:g} s"
                ) from None
            except ProtocolError as error:
                raise ChatConnectionError(
                    f"{where} did not answer like a chat server ({error.detail})"
                ) from None
            except OSError as error:
                raise ChatConnectionError(
                    f"the connection to {where} broke: {error.strerror or error}"
                ) from None
            if payload is None:
                raise ChatConnectionError(f"{where} closed the connection before welcoming us")
            event = _decode(payload)
            if event is None:
                raise ChatConnectionError(f"{where} did not answer like a chat server")
            if event["type"] == "welcome":
                return event
            if event["type"] == "error":
                raise ChatError(str(event.get("code")), str(event.get("detail", "")))
            # Anything else before the welcome is not for us yet: drop it.

    # Talking ----------------------------------------------------------------

    def say(self, text: str) -> None:
        """Send one chat line; it comes back as a ``message`` event, like everyone's."""
        if not isinstance(text, str):
            raise TypeError(f"say() takes a str, not {type(text).__name__}")
        self._require_joined()
        self._send({"type": "say", "text": text})

    def who(self, *, wait: bool = True, timeout: float | None = 10.0) -> list[str] | None:
        """Ask who is in the room and return the list of nicks.

        The answer also arrives as a ``users`` event.  With ``wait=False`` this
        only sends the question and returns ``None`` (use that from
        ``on_event``, or from code that shows events anyway).
        """
        self._require_joined()
        if wait and threading.current_thread() is self._receiver:
            raise RuntimeError("who() from on_event would wait for itself; use who(wait=False)")
        answer: queue.Queue | None = queue.Queue(maxsize=1) if wait else None
        with self._send_lock:
            # Answers come back in the order the questions went out, so each
            # question takes its place in line (None: nobody waits for that one).
            self._who_waiters.append(answer)
            self._send_unlocked({"type": "who"})
        if answer is None:
            return None
        try:
            users = answer.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer to who within {timeout:g} s") from None
        if users is None:
            raise ChatConnectionError("the connection ended before the server answered who")
        return users

    def leave(self) -> None:
        """Say goodbye and close.  Safe to call more than once, from any thread."""
        with self._state_lock:
            first_call = not self._closing
            self._closing = True
            sock, stream = self._sock, self._stream  # the receiver may end it meanwhile
        if first_call and sock is not None:
            try:
                self._send({"type": "leave"})
                if isinstance(stream, TLSStream):
                    stream.end()  # close_notify: the TLS way to say goodbye
            except (ChatConnectionError, OSError):
                pass  # already gone: leaving is done
            try:
                # shutdown, not close: it wakes the receiver thread's recv().
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        receiver = self._receiver
        if receiver is None:
            self._abandon()  # never joined: no thread will close the socket
        elif receiver is not threading.current_thread():
            receiver.join(timeout=self.timeout)

    close = leave

    # The plumbing -----------------------------------------------------------

    def _require_joined(self) -> None:
        if self._receiver is None:
            raise RuntimeError("join first: call connect(nick)")
        if self._ended:
            raise ChatConnectionError("the connection has ended")

    def _send(self, message: Event) -> None:
        with self._send_lock:
            self._send_unlocked(message)

    def _send_unlocked(self, message: Event) -> None:
        stream = self._stream
        if stream is None:
            raise ChatConnectionError("the connection has ended")
        frame = encode_frame(json.dumps(message, ensure_ascii=False).encode("utf-8"))
        try:
            stream.sendall(frame)
        except OSError as error:
            raise ChatConnectionError(
                f"the connection to {self._where} broke: {error.strerror or error}"
            ) from None

    def _receive(self) -> None:
        """The receiver thread: read frames until the connection ends."""
        reason, code = "the server closed the connection", None
        try:
            for payload in self._reader:
                event = _decode(payload)
                if event is None:
                    reason, code = "the server sent something that is not a chat message", None
                    break
                if event["type"] == "users":
                    self._answer_who(event.get("users"))
                elif event["type"] == "error" and event.get("code") in _FATAL_CODES:
                    reason, code = _fatal_reason(event), event.get("code")
                self._deliver(event)
        except ProtocolError as error:
            reason, code = f"the connection broke: {error.detail}", error.code
        except OSError as error:  # ssl.SSLError included
            if not self._closing:
                why = getattr(error, "strerror", None) or error
                reason, code = f"the connection broke: {why}", None
        if self._closing:
            reason, code = "you left", None
        self._abandon()
        while self._who_waiters:
            waiter = self._who_waiters.popleft()
            if waiter is not None:
                waiter.put(None)
        self._deliver({"type": DISCONNECTED, "reason": reason, "code": code})

    def _answer_who(self, users) -> None:
        if self._who_waiters:
            waiter = self._who_waiters.popleft()
            if waiter is not None:
                waiter.put(list(users or []))

    def _abandon(self) -> None:
        """Close the socket for good (idempotent)."""
        with self._state_lock:
            self._ended = True
            sock, self._sock, self._stream = self._sock, None, None
        if sock is not None:
            sock.close()

    def _deliver(self, event: Event) -> None:
        self.events.put(event)
        callback = self.on_event
        if callback is None:
            return
        try:
            callback(event)
        except Exception:
            # A bug in the callback must not stop the client from receiving.
            print("chatlib.client: on_event raised; still receiving.", file=sys.stderr)
            traceback.print_exc()


def _decode(payload: bytes) -> Event | None:
    """A server payload as a dict with a string ``type``, or ``None`` if it is not one."""
    try:
        event = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return None
    return event


def _fatal_reason(error: Event) -> str:
    code = error.get("code")
    if code == "server-shutdown":
        return "the server shut down"
    if code == "too-slow":
        return "the server dropped us for reading too slowly"
    return str(error.get("detail") or code)
