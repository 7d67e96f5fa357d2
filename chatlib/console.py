"""Run a Python script as a student would in a terminal, and record what it shows.

A notebook has no keyboard to lend a script (``input()`` has no stdin under
test), so a ``Console`` types for you: it watches the script's output and,
when a prompt is waiting, types the next of the lines you gave it::

    from chatlib.console import Console
    from chatlib.original import SERVER_SCRIPT

    with Console(SERVER_SCRIPT, "127.0.0.1", "5050", typing=["hola, cliente"]) as server:
        ...start a client...
        server.wait(timeout=30)
    print(server.screen())          # what the terminal would show, typing included

What counts as "a prompt is waiting": the script's last line of output is
unfinished and ends with ``": "`` (the seed's ``Escribe lo que quieres enviar: ``
and ``Escribe tur respuesta: ``), and nothing more has come for ``settle``
seconds (``print("Mensaje: " + "")`` writes its text and its newline apart, so
a prompt is only trusted once the output is quiet).

The API, all of it
------------------

``Console(*python_args, typing=None, name=None, on_event=None, cwd=None, settle=0.1)``
    starts ``python -u *python_args`` (unbuffered, so output arrives as it is
    printed) in its own process group.  ``python_args`` is a script and its
    arguments, or anything ``python`` accepts: ``Console("-m", "chatlib", ...)``.
    With ``typing`` (a list of lines) it types them itself, one per prompt;
    without it, you type.
``console.type(line, timeout=10)``
    waits until a prompt is waiting, then types ``line`` and Enter.  Raises
    ``TimeoutError`` if no prompt comes, ``RuntimeError`` if the script ended.
``console.wait_for(what, timeout=10) -> bool``
    waits until ``what`` (a string) appears in the output, or until
    ``what(console)`` (a function) is true.  False on timeout, never raises.
``console.wait(timeout=None) -> int | None``
    waits for the script to end and all its output to be read: the exit code,
    or None on timeout.
``console.is_waiting_for_input``, ``console.prompt``
    whether a prompt is waiting, and its text (None when not).
``console.lines_left``
    how many of the scripted lines are still to be typed.
``console.events``
    the transcript so far: a list of ``ConsoleEvent``.
``console.screen()``, ``console.stdout``, ``console.stderr``, ``console.crash``
    the terminal as it would look; each stream alone; the traceback it died
    with, as a ``Crash`` (None if it did not die of one).
``console.running``, ``console.returncode``
``console.stop()``
    kills the script (and anything it started), reaps it, closes the pipes.
    Safe to call twice; a ``with`` block calls it for you.
``on_event(event)``
    if given, called for every event as it is recorded, from the thread that
    recorded it (a reader thread, or yours for ``type``).  Calls never overlap
    and come in the order of ``events``.  Keep it quick and do not wait on the
    console inside it.

``stop_all()`` stops every console still running (it also runs at exit), and
``render(events)`` and ``parse_traceback(text)`` work on any transcript.

Every event carries ``t = time.monotonic()``, the clock ``chatlib.proxy`` uses,
so the consoles of a client and a server merge with the wire in time order.
"""

from __future__ import annotations

import atexit
import codecs
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

PROMPT_ENDINGS = (": ",)


@dataclass(frozen=True)
class ConsoleEvent:
    """One thing that happened in a console.  ``t`` is ``time.monotonic()``.

    ``kind`` is one of:

    - ``"start"``: the script started; ``text`` is the command as a student types it;
    - ``"stdout"``, ``"stderr"``: a piece of output, exactly as it arrived;
    - ``"typed"``: a line typed at a prompt (``text`` without the Enter);
    - ``"exit"``: the script ended; ``returncode`` is set, and ``text`` is
      ``"stopped"`` when ``stop()`` killed it rather than it ending by itself.
    """

    t: float
    console: str  # the console's name, e.g. "servidor.py"
    kind: str
    text: str = ""
    returncode: int | None = None

    def __str__(self) -> str:
        if self.kind == "exit":
            how = " (stopped)" if self.text == "stopped" else ""
            return f"{self.console}: exit {self.returncode}{how}"
        return f"{self.console}: {self.kind} {self.text!r}"


@dataclass(frozen=True)
class Crash:
    """The last traceback a script printed, reduced to what a student reads first."""

    error: str  # the last line, e.g. "OSError: [Errno 9] Bad file descriptor"
    file: str  # the file of the innermost frame, as the traceback names it
    line: int  # its line number
    source: str  # that line of code, stripped

    @property
    def script(self) -> str:
        """The file's name without its folder: ``servidor.py``."""
        return Path(self.file).name

    @property
    def exception(self) -> str:
        """The exception's name: ``OSError``."""
        return self.error.split(":", 1)[0]

    def __str__(self) -> str:
        return f"{self.script}, line {self.line}: {self.source}\n{self.error}"


# ---------------------------------------------------------------------------
# Pure helpers: they work on any transcript or text.


def render(events: Iterable[ConsoleEvent]) -> str:
    """The text a terminal would show for one console's events.

    Output appears as it came; a typed line appears after its prompt, followed
    by the Enter, because a terminal echoes what you type.
    """
    shown = []
    for event in events:
        if event.kind in ("stdout", "stderr"):
            shown.append(event.text)
        elif event.kind == "typed":
            shown.append(event.text + "\n")
    return "".join(shown)


_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)')
_CARETS = re.compile(r"^\s*[\^~\s]+$")


def parse_traceback(text: str) -> Crash | None:
    """Find the last traceback in ``text`` and return its innermost frame and error.

    Works for the plain tracebacks of Python 3.11 onwards (with or without the
    ``^^^^`` markers under the failing expression).  None if there is none.
    """
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call")]
    if not starts:
        return None
    body = lines[starts[-1] + 1 :]
    frame, source, error = None, "", ""
    for index, line in enumerate(body):
        found = _FRAME.match(line)
        if found:
            frame = found
            following = body[index + 1] if index + 1 < len(body) else ""
            source = "" if _FRAME.match(following) else following.strip()
        elif line and not line[0].isspace():
            error = line.strip()
            break  # the first unindented line after the frames is the error
    if frame is None or not error:
        return None
    if _CARETS.match(source or " "):
        source = ""
    return Crash(error, frame["file"], int(frame["line"]), source)


# ---------------------------------------------------------------------------
# The console: a process, three pipes and the threads that watch them.

_LIVE: weakref.WeakSet[Console] = weakref.WeakSet()


def stop_all() -> None:
    """Stop every console of this Python process that is still running."""
    for console in list(_LIVE):
        console.stop()


atexit.register(stop_all)


class Console:
    """One script running as if in its own terminal.  See the module docstring."""

    def __init__(
        self,
        *python_args: str | os.PathLike,
        typing: Iterable[str] | None = None,
        name: str | None = None,
        on_event: Callable[[ConsoleEvent], object] | None = None,
        cwd: str | os.PathLike | None = None,
        settle: float = 0.1,
        prompt_endings: Sequence[str] = PROMPT_ENDINGS,
    ):
        if not python_args:
            raise ValueError("Console needs a script to run, e.g. Console('servidor.py')")
        args = [str(arg) for arg in python_args]
        self.name = name or _name_for(args)
        self.command = "python " + " ".join(_shown(arg) for arg in args)
        self.settle = settle
        self.prompt_endings = tuple(prompt_endings)
        self._on_event = on_event

        self._changed = threading.Condition()  # guards everything below; notified on each event
        self._callbacks_in_order = threading.RLock()
        self._events: list[ConsoleEvent] = []
        self._partial = ""  # stdout after its last newline: a prompt, when one waits
        self._answered = False  # True once the partial line has been typed at
        self._last_output = time.monotonic()
        self._scripted = deque(_one_line_each(typing or ()))
        self._killed = False
        self._exited = False
        self._stopped = False

        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", PYTHON_COLORS="0")
        self._proc = subprocess.Popen(
            [sys.executable, "-u", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            # Its own process group, so stop() can end whatever the script
            # started too, and Ctrl-C in the notebook does not reach it.
            start_new_session=(os.name == "posix"),
        )
        _LIVE.add(self)
        self._record("start", self.command)

        self._readers = [
            self._thread(self._read, self._proc.stdout, "stdout"),
            self._thread(self._read, self._proc.stderr, "stderr"),
        ]
        self._threads = [*self._readers, self._thread(self._reap)]
        if typing is not None:
            self._threads.append(self._thread(self._type_scripted_lines))

    def _thread(self, target, *args) -> threading.Thread:
        kind = args[1] if args else target.__name__.strip("_")
        thread = threading.Thread(
            target=target, args=args, name=f"console {self.name} {kind}", daemon=True
        )
        thread.start()
        return thread

    # Recording -----------------------------------------------------------------

    def _record(self, kind: str, text: str = "", returncode: int | None = None) -> None:
        with self._callbacks_in_order:
            with self._changed:
                event = ConsoleEvent(time.monotonic(), self.name, kind, text, returncode)
                self._events.append(event)
                if kind == "stdout":
                    self._partial = (self._partial + text).rsplit("\n", 1)[-1]
                    self._answered = False
                if kind in ("stdout", "stderr"):
                    self._last_output = event.t
                if kind == "exit":
                    self._exited = True
                self._changed.notify_all()
            if self._on_event is not None:
                try:
                    self._on_event(event)
                except Exception as error:  # a broken callback must not stop the reading
                    sys.unraisablehook(_Unraisable(error, self._on_event))

    def _read(self, pipe: io.BufferedReader, kind: str) -> None:
        decoder = io.IncrementalNewlineDecoder(
            codecs.getincrementaldecoder("utf-8")(errors="replace"), translate=True
        )
        while True:
            try:
                chunk = pipe.read1(4096)
            except (OSError, ValueError):
                chunk = b""  # stop() closed the pipe
            text = decoder.decode(chunk, final=not chunk)
            if text:
                self._record(kind, text)
            if not chunk:
                return

    def _reap(self) -> None:
        for reader in self._readers:
            reader.join()  # all the output is in before the exit is
        returncode = self._proc.wait()
        self._record("exit", "stopped" if self._killed else "", returncode)

    # Typing ----------------------------------------------------------------------

    def _waiting(self) -> bool:
        """Under the lock: is a prompt waiting for typing right now?"""
        return (
            not self._exited
            and not self._answered
            and self._partial.endswith(self.prompt_endings)
            and time.monotonic() - self._last_output >= self.settle
        )

    @property
    def is_waiting_for_input(self) -> bool:
        with self._changed:
            return self._waiting()

    @property
    def prompt(self) -> str | None:
        """The prompt that is waiting, or None."""
        with self._changed:
            return self._partial if self._waiting() else None

    @property
    def lines_left(self) -> int:
        with self._changed:
            return len(self._scripted)

    def type(self, line: str, timeout: float | None = 10.0) -> None:
        """Wait for a prompt, then type ``line`` and Enter, as at a keyboard."""
        _check_one_line(line)
        if not self._wait_until(lambda: self._exited or self._waiting(), timeout):
            raise TimeoutError(
                f"{self.name} asked for no input within {timeout} s; "
                f"its last output: {self._partial or self._last_line()!r}"
            )
        with self._changed:
            if self._exited:
                raise RuntimeError(f"{self.name} has ended; nothing is reading what you type")
            self._answered = True
        self._send(line)

    def _send(self, line: str) -> None:
        # Recorded before it is written, so the transcript never shows the
        # script reacting to a line before the line itself.
        self._record("typed", line)
        try:
            self._proc.stdin.write((line + "\n").encode("utf-8"))
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # it ended as we typed; its exit event says so

    def _type_scripted_lines(self) -> None:
        while True:
            if not self._wait_until(lambda: self._exited or self._waiting(), None):
                return
            with self._changed:
                if self._exited or not self._scripted:
                    return
                line = self._scripted.popleft()
                self._answered = True
            self._send(line)

    # Waiting ---------------------------------------------------------------------

    def _wait_until(self, condition: Callable[[], bool], timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not condition():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return False
                # Wake now and then even without news: "quiet for `settle`
                # seconds" becomes true by the clock alone.
                nap = self.settle / 2 if self.settle > 0 else 0.05
                self._changed.wait(nap if deadline is None else min(nap, deadline - now))
            return True

    def wait_for(self, what: str | Callable[[Console], object], timeout: float = 10.0) -> bool:
        """Wait until ``what`` appears in the output, or ``what(self)`` is true."""
        if isinstance(what, str):
            return self._wait_until(lambda: what in self._output(), timeout)
        return self._wait_until(lambda: bool(what(self)), timeout)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the script to end (its output all read): its exit code, or None."""
        if self._wait_until(lambda: self._exited, timeout):
            return self._proc.returncode
        return None

    # What it showed ------------------------------------------------------------------

    @property
    def events(self) -> list[ConsoleEvent]:
        with self._changed:
            return list(self._events)

    def _output(self, kinds=("stdout", "stderr")) -> str:
        with self._changed:
            return "".join(e.text for e in self._events if e.kind in kinds)

    def _last_line(self) -> str:
        lines = self._output().rstrip("\n").rsplit("\n", 1)
        return lines[-1]

    @property
    def stdout(self) -> str:
        return self._output(("stdout",))

    @property
    def stderr(self) -> str:
        return self._output(("stderr",))

    def screen(self) -> str:
        """What the terminal shows: output and typing, in the order they happened."""
        return render(self.events)

    @property
    def crash(self) -> Crash | None:
        """The traceback the script died with, or None."""
        return parse_traceback(self.stderr)

    @property
    def running(self) -> bool:
        with self._changed:
            return not self._exited

    @property
    def returncode(self) -> int | None:
        with self._changed:
            return self._proc.returncode if self._exited else None

    # Lifetime ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Kill the script and whatever it started, reap it, close the pipes. Idempotent."""
        with self._changed:
            if self._stopped:
                return
            self._stopped = True
            if self._proc.poll() is None:
                self._killed = True
        self._kill()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass  # nothing more can be done than SIGKILL; the reaper keeps trying
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:
                thread.join(timeout=5)
        for pipe in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            try:
                pipe.close()
            except OSError:
                pass
        _LIVE.discard(self)

    def _kill(self) -> None:
        if os.name == "posix":
            try:
                # The group holds the script and anything it started; it
                # outlives the script only if one of those is still alive.
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        elif self._proc.poll() is None:
            self._proc.kill()

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self.stop()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "running" if self.running else f"exit {self.returncode}"
        return f"<Console {self.name} ({state})>"


# ---------------------------------------------------------------------------


def _name_for(args: list[str]) -> str:
    first = args[0]
    if first.endswith(".py"):
        return Path(first).name
    return "python " + " ".join(_shown(a) for a in args)


def _shown(arg: str) -> str:
    """A script as a student would name it, from its own folder."""
    return Path(arg).name if arg.endswith(".py") else arg


def _check_one_line(line: str) -> None:
    if not isinstance(line, str):
        raise TypeError(f"type a str, not {type(line).__name__}")
    if "\n" in line or "\r" in line:
        raise ValueError("type one line at a time (without '\\n'); Enter is added for you")


def _one_line_each(lines: Iterable[str]) -> list[str]:
    lines = list(lines)
    for line in lines:
        _check_one_line(line)
    return lines


class _Unraisable:
    """What ``sys.unraisablehook`` expects to be told about a failed callback."""

    def __init__(self, error: BaseException, callback):
        self.exc_type = type(error)
        self.exc_value = error
        self.exc_traceback = error.__traceback__
        self.err_msg = "Exception in a Console on_event callback"
        self.object = callback
