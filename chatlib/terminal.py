"""``chatlib chat``: the chat in a terminal.

    chatlib serve                   # in one terminal: a server on 127.0.0.1:5050
    chatlib chat --nick ana         # in others: join it
    chatlib chat --nick bob --host 127.0.0.1 --port 5050
    chatlib chat --nick eva --tls --cafile certs/ca.pem --password-stdin   # lesson 07

It runs in one of two modes:

- **interactive**, when both stdin and stdout are a terminal.  A chat has to
  read and write at the same time: lines from the room arrive while you are in
  the middle of typing yours.  Printing them straight to the terminal would
  garble the half-typed line, so ``prompt_toolkit`` owns the bottom line (the
  prompt) and ``patch_stdout`` makes every ``print`` appear *above* it, with
  the prompt redrawn underneath, what you typed intact.
- **plain**, when stdin is a pipe or a file: each line read is sent, each event
  is printed as a line.  That is how a script or a test drives it::

      printf 'hola\\n/who\\n' | chatlib chat --nick bot --port 5001

  At the end of the input it waits (a few seconds at most) until the room has
  echoed back everything it said, then leaves.

Either way the lines look like this::

    12:03 ana: hola
    -- bob joined

Commands: ``/who`` (who is here), ``/quit`` (leave; Ctrl-D and Ctrl-C too),
``/help``; to send a line that starts with ``/``, type it twice (``//``).

Failures (a refused connection, a taken nick, the server shutting down) end
with one line on stderr and exit code 1; leaving on purpose exits with 0.
The client itself is ``chatlib.client.ChatClient``; this module only shows it.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib
import ipaddress
import os
import queue
import sys
import threading
import time

from chatlib.accounts import AccountsError, read_password
from chatlib.client import DISCONNECTED, ChatClient, ChatConnectionError, ChatError, Event
from chatlib.tls import TLSSetupError, client_context

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5050  # not the seed's 5000: on recent macOS the AirPlay receiver holds it
TEXT_LIMIT = 4000  # the servers' default limit on a line (PROTOCOL.md)
ECHO_WAIT = 5.0  # plain mode: how long to wait at the end of input for our lines to come back
HELP = "-- /who: who is here · /quit: leave (or Ctrl-D) · //text: send a line starting with /"


# The command line -----------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``chatlib chat`` (connection options are added here too)."""
    parser.add_argument("--nick", required=True, help="your name in the room (1 to 32 characters)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="the server (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="the server's port (default: %(default)s)"
    )
    # Lesson 07: TLS and accounts.
    parser.add_argument(
        "--tls",
        action="store_true",
        help="connect over TLS and check the server's certificate (against --cafile, "
        "or else the system's authorities)",
    )
    parser.add_argument(
        "--cafile",
        metavar="FILE",
        help="trust the certificate authority in this PEM file, such as the ca.pem of "
        "'chatlib certs make' (implies --tls)",
    )
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="the first line of stdin is your password (for scripts); on a terminal you "
        "are asked for it, without echo, whenever the server wants one",
    )


def client_options(args: argparse.Namespace) -> dict:
    """Keyword arguments for ``ChatClient`` from the options (``TLSSetupError`` if bad)."""
    if getattr(args, "tls", False) or getattr(args, "cafile", None):
        return {"ssl_context": client_context(getattr(args, "cafile", None))}
    return {}


def run(args: argparse.Namespace) -> int:
    """Connect, join, chat until the user leaves or the connection ends; the exit code."""
    try:
        client = ChatClient(args.host, args.port, **client_options(args))
        password = None
        if getattr(args, "password_stdin", False):
            password = read_password(f"password for {args.nick}: ")
    except (TLSSetupError, AccountsError) as error:
        return fail(str(error))
    try:
        welcome = join(client, args.nick, password)
    except KeyboardInterrupt:
        client.close()
        return fail("interrupted before joining")
    except ChatError as refusal:
        client.close()
        asked = password is not None or sys.stdin.isatty()
        return fail(refusal_line(refusal, args.nick, password_sent=asked))
    except ChatConnectionError as error:
        hint = ""
        if client.ssl_context is None and not str(error).startswith("cannot connect"):
            hint = " (if the server uses TLS, add --tls)"
        elif "not trusted" in str(error) and not getattr(args, "cafile", None):
            hint = " (for a classroom's own authority, add --cafile ca.pem)"
        return fail(f"{error}{hint}")
    try:
        if sys.stdin.isatty() and sys.stdout.isatty():
            return run_interactive(client, welcome)
        return run_plain(client, welcome)
    except KeyboardInterrupt:  # Ctrl-C outside the prompt: leaving is what it asks for
        return 0
    finally:
        client.close()


def fail(line: str) -> int:
    print(f"chatlib chat: {line}", file=sys.stderr)
    return 1


def join(client: ChatClient, nick: str, password: str | None = None, tries: int = 3) -> Event:
    """Join as ``nick``; on a terminal, ask for the password when the server wants one."""
    attempt = 1
    while True:
        if password is not None and client.ssl_context is None and not _loopback(client.host):
            print(
                "chatlib chat: warning: without --tls your password crosses the network "
                "unencrypted: anyone on the way can read it",
                file=sys.stderr,
            )
        try:
            return client.connect(nick, password)
        except ChatError as refusal:
            if refusal.code != "auth-failed" or attempt >= tries or not sys.stdin.isatty():
                raise
            if password is not None:
                print(f"chatlib chat: {refusal.detail}", file=sys.stderr)
            try:
                password = read_password(f"password for {nick}: ")
            except AccountsError:  # Ctrl-D or Ctrl-C at the prompt
                raise refusal from None
            attempt += 1


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refusal_line(refusal: ChatError, nick: str, password_sent: bool = True) -> str:
    if refusal.code == "nick-taken":
        return f"the nick {nick!r} is taken in this room; choose another with --nick"
    if refusal.code == "bad-nick":
        return f"the server refused the nick {nick!r}: {refusal.detail}"
    if refusal.code == "auth-failed" and not password_sent:
        return (
            f"the server wants a password for {nick!r}: run on a terminal to be asked "
            "for it, or give it as the first line of stdin with --password-stdin"
        )
    return f"the server refused to let {nick!r} in: {refusal.detail}"


# What the lines look like (no I/O) ------------------------------------------


def clean(text: str) -> str:
    """Make text from the network safe to print: control characters shown, not obeyed.

    Without this, a member could send ``"\\x1b[2J"`` and clear everyone's
    screen, or ``"\\r"`` and write over the start of a line.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def format_event(event: Event) -> str | None:
    """One line for an event, or ``None`` for events that show nothing."""
    kind = event.get("type")
    if kind == "message":
        ts = event.get("ts")
        when = time.strftime("%H:%M", time.localtime(ts if isinstance(ts, int | float) else None))
        return f"{when} {clean(str(event.get('nick')))}: {clean(str(event.get('text')))}"
    if kind == "joined":
        return f"-- {clean(str(event.get('nick')))} joined"
    if kind == "left":
        return f"-- {clean(str(event.get('nick')))} left"
    if kind == "users":
        return f"-- here: {clean(', '.join(map(str, event.get('users') or [])))}"
    if kind == "error":
        if event.get("code") in ("server-shutdown", "too-slow"):
            return None  # the connection ends: the last line says why, once
        return f"!! {clean(str(event.get('detail') or event.get('code')))}"
    return None  # welcome (shown once, at the start), disconnected, anything new


def welcome_lines(welcome: Event) -> list[str]:
    lines = [format_event(m) for m in welcome.get("history") or [] if isinstance(m, dict)]
    users = ", ".join(map(str, welcome.get("users") or []))
    lines.append(f"-- you are {clean(str(welcome.get('nick')))}; here: {clean(users)}")
    return [line for line in lines if line]


def parse_input(line: str) -> tuple[str, str]:
    """What a typed line asks for: ``(action, text)``; action is say/who/quit/help/unknown/none."""
    if not line.strip():
        return "none", ""
    if line.startswith("//"):
        return "say", line[1:]
    if line.startswith("/"):
        word = line.split()[0].lower()
        action = {"/who": "who", "/quit": "quit", "/exit": "quit", "/help": "help"}.get(word)
        return (action, "") if action else ("unknown", word)
    return "say", line


def ending(disconnected: Event) -> tuple[str | None, int]:
    """The last line to show and the exit code, for the end of the connection."""
    if disconnected.get("reason") == "you left":
        return None, 0
    return str(disconnected.get("reason")), 1


def _settles_a_line(event: Event, nick: str | None) -> bool:
    """Is this the fate of one of our lines: back from the room, or refused as too long?"""
    if event.get("type") == "message":
        return event.get("nick") == nick
    return event.get("type") == "error" and event.get("code") == "too-long"


# Plain mode: lines in, lines out ---------------------------------------------


def run_plain(client: ChatClient, welcome: Event) -> int:
    """Send each stdin line; print each event; leave at end of input."""
    inbox: queue.Queue[tuple[str, object]] = queue.Queue()
    threading.Thread(target=_read_stdin, args=(inbox,), daemon=True).start()
    threading.Thread(target=_forward_events, args=(client, inbox), daemon=True).start()
    said = settled = 0
    deadline = None  # set at end of input: stop waiting for echoes then
    try:
        for line in welcome_lines(welcome):
            _print(line)
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                kind, item = inbox.get(timeout=timeout)
            except queue.Empty:
                break  # our last lines never came back; leave anyway
            if kind == "event":
                if item["type"] == DISCONNECTED:
                    line, status = ending(item)
                    if line:
                        fail(line)
                    return status
                if item["type"] == "welcome":
                    continue
                settled += _settles_a_line(item, client.nick)
                if (line := format_event(item)) is not None:
                    _print(line)
            elif kind == "line":
                action, text = parse_input(item)
                if action == "say":
                    client.say(text)
                    said += 1
                elif action == "who":
                    client.who(wait=False)
                elif action == "help":
                    _print(HELP)
                elif action == "unknown":
                    _print(f"-- unknown command {text}; /help lists them")
                elif action == "quit":
                    break
            elif kind == "eof":
                deadline = time.monotonic() + ECHO_WAIT
            if deadline is not None and settled >= said:
                break
    except KeyboardInterrupt:
        pass
    except ChatConnectionError:
        pass  # the receiver thread reports why, below
    except BrokenPipeError:
        sys.stdout = None  # whoever read our output stopped: nothing left to tell them
        return 0
    client.leave()
    # Exit 0, unless the connection had already failed on its own.
    while True:
        try:
            kind, item = inbox.get(timeout=client.timeout)
        except queue.Empty:
            return 0
        if kind == "event" and item["type"] == DISCONNECTED:
            line, status = ending(item)
            if line:
                fail(line)
            return status


def _print(line: str) -> None:
    print(line, flush=True)


def _read_stdin(inbox: queue.Queue) -> None:
    # os.read rather than sys.stdin: a daemon thread blocked inside sys.stdin
    # holds its lock, and the interpreter can then abort at exit.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    while True:
        try:
            data = os.read(sys.stdin.fileno(), 65536)
        except OSError:
            data = b""
        pending += decoder.decode(data, final=not data)
        *lines, pending = pending.split("\n")
        for line in lines:
            inbox.put(("line", line.removesuffix("\r")))
        if not data:
            if pending:
                inbox.put(("line", pending))
            inbox.put(("eof", None))
            return


def _forward_events(client: ChatClient, inbox: queue.Queue) -> None:
    while True:
        event = client.events.get()
        inbox.put(("event", event))
        if event["type"] == DISCONNECTED:
            return


# Interactive mode: a prompt that incoming lines never garble -------------------


DIM, BOLD, RESET = "\x1b[2m", "\x1b[1m", "\x1b[0m"


def _styled(line: str) -> str:
    if line.startswith("-- "):
        return f"{DIM}{line}{RESET}"
    if line.startswith("!! "):
        return f"{BOLD}{line}{RESET}"
    return line


def run_interactive(client: ChatClient, welcome: Event) -> int:
    return asyncio.run(_interactive(client, welcome))


async def _ask(session, prompt: str, draft: str) -> str | None:
    """One line from the prompt, or ``None`` for Ctrl-D (end of input) or Ctrl-C."""
    try:
        return await session.prompt_async(prompt, default=draft)
    except (EOFError, KeyboardInterrupt):
        # Caught here, inside the task: a KeyboardInterrupt that escapes a task
        # stops the whole event loop with a traceback.
        return None


async def _interactive(client: ChatClient, welcome: Event) -> int:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.patch_stdout import patch_stdout

    loop = asyncio.get_running_loop()
    ended: asyncio.Future[Event] = loop.create_future()

    def show(event: Event) -> None:  # runs in the event loop
        if event["type"] == DISCONNECTED:
            if not ended.done():
                ended.set_result(event)
        elif event["type"] != "welcome" and (line := format_event(event)) is not None:
            print(_styled(line))

    def pump() -> None:  # a thread: the client's queue into the event loop
        while True:
            event = client.events.get()
            try:
                loop.call_soon_threadsafe(show, event)
            except RuntimeError:  # the loop has closed: nobody is watching
                return
            if event["type"] == DISCONNECTED:
                return

    # raw=True: our dim/bold escapes pass; text from the network is clean()ed.
    with patch_stdout(raw=True):
        for line in welcome_lines(welcome):
            print(_styled(line))
        print(_styled("-- type a line and Enter to send it; /help for the commands"))
        threading.Thread(target=pump, name="chat-terminal-pump", daemon=True).start()
        # erase_when_done: the line you sent comes back from the server, with
        # its time, like everyone's; no need to leave the typed copy above it.
        session: PromptSession[str] = PromptSession(erase_when_done=True)
        draft = ""
        while not ended.done():
            prompt = asyncio.ensure_future(_ask(session, f"{client.nick}> ", draft))
            draft = ""
            await asyncio.wait({prompt, ended}, return_when=asyncio.FIRST_COMPLETED)
            if not prompt.done():  # the connection ended while the prompt waited
                prompt.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await prompt
                break
            typed = prompt.result()
            if typed is None:  # Ctrl-D or Ctrl-C
                break
            action, text = parse_input(typed)
            try:
                if action == "say" and len(text) > TEXT_LIMIT:
                    print(
                        _styled(
                            f"-- that line has {len(text)} characters, the limit is "
                            f"{TEXT_LIMIT}; it is back in the prompt to shorten"
                        )
                    )
                    draft = text
                elif action == "say":
                    client.say(text)
                elif action == "who":
                    client.who(wait=False)
                elif action == "help":
                    print(_styled(HELP))
                elif action == "unknown":
                    print(_styled(f"-- unknown command {text}; /help lists them"))
                elif action == "quit":
                    break
            except ChatConnectionError:  # the end of the connection shows below
                await asyncio.wait({ended}, timeout=client.timeout)
        if not ended.done():
            client.leave()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(ended), client.timeout)
    if not ended.done():
        return 0
    line, status = ending(ended.result())
    if line:
        fail(line)
    return status
