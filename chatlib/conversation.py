"""Lesson 02: the seed's one-to-one chat, with ``close()`` and its friends fixed.

The same strict turn-taking as ``servidor.py`` and ``cliente.py`` in
``chatlib/original/``: the client types a line, the server's operator answers
it, the client types the next line, and so on.  What changed, and why:

- ``close()`` comes after the conversation, not inside its loop, so the second
  exchange no longer dies with ``OSError: [Errno 9] Bad file descriptor``.
  (A ``close()`` after ``while True`` is never reached: the loop needs ways out.)
- ``recv()`` returning ``b""`` means the other side closed the connection.  It
  is not a message: every later ``recv()`` would return ``b""`` at once, and a
  loop that only reads would spin for ever.  Here it ends the conversation.
- An empty line is refused before it is sent, with a message, and the same
  person is asked again.  ``sendall(b"")`` puts no bytes on the wire, so the
  other side would go on waiting for a turn that never comes, and both would
  freeze.  We refuse rather than send a placeholder such as ``(empty)``: a
  placeholder cannot be told apart from someone typing those very words, and
  here what you type is exactly what travels.
- A line longer than 1024 bytes is refused too: the other side reads a turn
  with one ``recv(1024)``, as in the seed, and the rest would be read as the
  next turn.
- A refused connection, a reset one, a port already in use: one sentence
  (``ChatError``), not a traceback.
- The listening socket sets ``SO_REUSEADDR``, so the server can restart at once
  on the same port instead of failing with "Address already in use".
- The server talks with one client after another.  A client that connects
  while another is talking waits in the queue (lesson 04 serves them at once).
- ``/quit``, the end of input (Ctrl-D; Ctrl-Z then Enter on Windows) and Ctrl-C
  end the program cleanly.  When the server's operator leaves, the server stops.

What is still wrong, on purpose: like the seed, this is plain text over TCP.
TCP carries a stream of bytes, not messages, and nothing marks where a line
ends.  On loopback one ``recv(1024)`` almost always holds the whole line, but
TCP promises nothing of the kind: a line can arrive in two pieces (the second
read as the next turn), and a character cut between them shows as ``�``.
Lesson 03 (framing) fixes that.

Run it in two terminals::

    chatlib conversation server [--host H] [--port P]
    chatlib conversation client [--host H] [--port P]

(``python -m chatlib conversation ...`` and ``python -m chatlib.conversation ...``
do the same.)

The functions take the keyboard and the screen as parameters (``ask`` works
like ``input``, ``show`` like ``print``), so tests and lessons can script both
sides; ``ScriptedTerminal`` is such a pair.
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import socket
import sys
from collections.abc import Callable, Iterable

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5050  # not the seed's 5000: on recent macOS the AirPlay receiver holds it
QUIT = "/quit"
TURN_BYTES = 1024  # one turn is one recv(1024), as in the seed

Ask = Callable[[str], str]  # like input(): shows a prompt, returns a line, EOFError at the end
Show = Callable[[str], None]  # like print()


class ChatError(Exception):
    """A connection problem, already put in one sentence for the user."""


def explain(error: OSError, where: str) -> str:
    """Put a socket error in one sentence; ``where`` is the ``HOST:PORT`` involved."""
    if isinstance(error, ConnectionRefusedError):
        return f"could not connect to {where}: nobody is listening there (is the server running?)"
    if isinstance(error, ConnectionResetError | ConnectionAbortedError):
        return f"the connection with {where} was reset: the other side vanished without closing"
    if isinstance(error, BrokenPipeError):
        return f"the connection with {where} is gone: the other side had already closed it"
    if isinstance(error, socket.gaierror):
        return f"cannot find the host of {where}: {error.strerror}"
    if error.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", None)):
        return f"{where} is already in use: is another server running there? Try another --port"
    if error.errno in (errno.EADDRNOTAVAIL, getattr(errno, "WSAEADDRNOTAVAIL", None)):
        return f"{where} is not an address of this machine"
    if isinstance(error, TimeoutError):
        return f"{where} did not answer in time"
    return f"{where}: {error.strerror or error}"


# --- one turn: what may be sent, what was received --------------------------------------


def problem_with(line: str) -> str | None:
    """Why ``line`` cannot travel as one turn, or None when it can."""
    if line == "":
        return (
            "an empty line sends no bytes, so the other side would wait for ever; "
            f"type something, or {QUIT} to leave"
        )
    size = len(line.encode())
    if size > TURN_BYTES:
        return f"that line is {size} bytes and a turn carries at most {TURN_BYTES}"
    return None


def next_line(ask: Ask, show: Show, prompt: str) -> str | None:
    """Ask until the user types a line that can be sent; None means they are leaving."""
    while True:
        try:
            line = ask(prompt)
        except EOFError:  # end of input: Ctrl-D, or a script that ran out of lines
            return None
        if line.strip() == QUIT:
            return None
        problem = problem_with(line)
        if problem is None:
            return line
        show(f"(not sent: {problem})")


def receive_text(sock: socket.socket) -> str | None:
    """Read one turn; None when the other side has closed the connection."""
    data = sock.recv(TURN_BYTES)
    if not data:  # b"": the peer closed, and every later recv() would return b"" at once
        return None
    # A character cut in two by the stream shows as "�" instead of crashing (lesson 03).
    return data.decode("utf-8", errors="replace")


# --- the two sides of a conversation ----------------------------------------------------


def converse_as_client(sock: socket.socket, ask: Ask, show: Show) -> None:
    """Say a line, wait for the answer, again, until one side leaves."""
    while True:
        line = next_line(ask, show, "you: ")
        if line is None:
            show("you left the conversation")
            return
        sock.sendall(line.encode())
        answer = receive_text(sock)
        if answer is None:
            show("the server left the conversation")
            return
        show(f"server: {answer}")


def converse_as_server(conn: socket.socket, ask: Ask, show: Show) -> bool:
    """Wait for a line, answer it, again.  False when the operator wants to stop."""
    while True:
        message = receive_text(conn)
        if message is None:
            show("the client left the conversation")
            return True
        show(f"client: {message}")
        answer = next_line(ask, show, "your answer: ")
        if answer is None:
            show("you left the conversation")
            return False
        conn.sendall(answer.encode())


# --- the programs: a server that serves clients one after another, and a client ---------


def open_listener(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> socket.socket:
    """A listening socket on ``host:port`` (0: the OS picks) that survives a restart."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if os.name == "posix":
            # The connections a server closed first linger in TIME_WAIT for a minute or
            # so; without this option they keep the port "already in use".  (On Windows
            # it would let another program share the port: the standard library, too,
            # sets it on POSIX only.)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen()  # the queue of waiting clients: min(SOMAXCONN, 128) by default
    except (OSError, OverflowError) as error:
        listener.close()
        if isinstance(error, OverflowError):  # a port beyond 65535
            raise ChatError(f"{host}:{port} is not a valid address: {error}") from None
        raise ChatError(explain(error, f"{host}:{port}")) from None
    return listener


def serve(
    listener: socket.socket, *, ask: Ask = input, show: Show = print, clients: int | None = None
) -> None:
    """Talk with one client after another, until the operator leaves.

    ``clients`` stops after that many conversations (tests and lessons use it);
    None serves for as long as the operator stays.
    """
    served = 0
    while clients is None or served < clients:
        show("waiting for a client")
        conn, address = listener.accept()
        served += 1
        peer = f"{address[0]}:{address[1]}"
        with conn:  # closes the connection however the conversation ends
            show(f"{peer} connected")
            try:
                keep_serving = converse_as_server(conn, ask, show)
            except OSError as error:  # this client is gone; the server is fine
                show(explain(error, peer))
                keep_serving = True
        if not keep_serving:
            return


def run_server(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    ask: Ask = input,
    show: Show = print,
    clients: int | None = None,
) -> None:
    """Listen on ``host:port`` and serve clients one after another (see ``serve``)."""
    with open_listener(host, port) as listener:
        host, port = listener.getsockname()[:2]
        show(f"listening on {host}:{port}; {QUIT}, Ctrl-D or Ctrl-C stops the server")
        serve(listener, ask=ask, show=show, clients=clients)


def run_client(
    host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, ask: Ask = input, show: Show = print
) -> None:
    """Connect to ``host:port`` and hold one conversation.  Raises ``ChatError``."""
    where = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port))
    except (OSError, OverflowError) as error:
        if isinstance(error, OverflowError):
            raise ChatError(f"{where} is not a valid address: {error}") from None
        raise ChatError(explain(error, where)) from None
    with sock:
        show(f"connected to {where}; {QUIT} or Ctrl-D leaves")
        try:
            converse_as_client(sock, ask, show)
        except OSError as error:  # reset or broken while we talked
            raise ChatError(explain(error, where)) from None


class ScriptedTerminal:
    """A keyboard that types lines from a script, and a screen that keeps what it shows.

    ``ask`` types the next line (after the last one it raises ``EOFError``, as
    Ctrl-D would); ``screen`` holds each prompt with what was typed, and each
    line shown, in order.
    """

    def __init__(self, typed: Iterable[str]):
        self._typed = iter(typed)
        self.screen: list[str] = []

    def ask(self, prompt: str) -> str:
        line = next(self._typed, None)
        if line is None:
            self.screen.append(f"{prompt}^D")
            raise EOFError
        self.screen.append(f"{prompt}{line}")
        return line

    def show(self, text: str) -> None:
        self.screen.append(text)


# --- chatlib conversation server|client (and python -m chatlib.conversation) -------------


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0 to 65535)")
    return int(text)


def _ask_terminal(prompt: str) -> str:
    try:
        return input(prompt)
    except EOFError:
        print(flush=True)  # Ctrl-D leaves the cursor after the prompt: end that line
        raise


DESCRIPTION = (
    "Lesson 02's one-to-one chat: the seed's scripts with close() fixed. "
    "Start the server in one terminal and the client in another; they take "
    f"turns, the client first. {QUIT}, Ctrl-D or Ctrl-C leaves."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command line of both sides: ``server|client [--host H] [--port P]``."""
    parser.add_argument("side", choices=["server", "client"])
    parser.add_argument("--host", default=DEFAULT_HOST, help="default: %(default)s")
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="default: %(default)s (server: 0 = any)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the side ``args`` asks for, at the keyboard; the exit code."""
    show = functools.partial(print, flush=True)  # a pipe would otherwise hold the lines back
    try:
        if args.side == "server":
            if args.host in ("0.0.0.0", ""):
                print("note: listening on every interface: others can connect", file=sys.stderr)
            run_server(args.host, args.port, ask=_ask_terminal, show=show)
        else:
            run_client(args.host, args.port, ask=_ask_terminal, show=show)
    except ChatError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopped (Ctrl-C)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatlib.conversation", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
