"""The bug stepper: the seed's exchange one action at a time (lessons 01 and 02).

::

    from chatlib.widgets import BugStepper

    stepper = BugStepper()       # shows two consoles, servidor.py and cliente.py
    stepper                      # (last line of a cell) and the buttons

Each click on **Next** does one thing a student would do in two terminals:
start the server (it waits for a connection), start the client (it connects),
type a line in the client, answer in the server, type again in the client.
Both scripts are the seed's, run as real processes on 127.0.0.1 through
``chatlib.console``; what each prints appears in its console as it happens,
the crash too, its traceback's last line in red.  **Reset** kills both
processes and starts over on a new port.

From code (tests, or a lesson that drives it)::

    stepper.step()               # the next action; returns once its effect shows
    stepper.status               # {"servidor.py": "crashed", "cliente.py": "waiting for input"}
    stepper.state                # the status line the widget shows, in words
    stepper.screen("servidor.py")
    stepper.reset(); stepper.close()

Creating a stepper stops the one created before it with the same ``key``, so
running the cell again does not leave the old processes waiting at their
prompts; give two steppers in one notebook different keys.

Lesson 02 can step through its fixed scripts with the same buttons: pass
``server_script=``/``client_script=`` (e.g. ``chatlib.lesson01.edited_copy``)
and, since the story is then another one, ``steps=`` with its own texts.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ipywidgets as widgets

from chatlib.console import Console, ConsoleEvent
from chatlib.lesson01 import HOST, LISTENING, free_port
from chatlib.original import CLIENT_SCRIPT, SERVER_SCRIPT

SERVER, CLIENT = "servidor.py", "cliente.py"
STEP_TIMEOUT = 20.0  # seconds a step may take to show its effect; only a hang takes this long
QUIET = 3.0  # seconds of silence after which a fixed script counts as back in recv()

_current: dict[str, BugStepper] = {}  # key -> the stepper made last with that key


@dataclass(frozen=True)
class Step:
    button: str  # what the Next button says before the step
    explanation: str  # what happens, shown once the step is done


STEPS = (
    Step(
        "start the server",
        "servidor.py binds 127.0.0.1 and a port, listens, and waits in accept() for a client.",
    ),
    Step(
        "the client connects",
        "cliente.py connects; the server's accept() returns a new socket for this "
        "client. The client asks you for a line.",
    ),
    Step(
        "the client sends",
        "cliente.py sends your line with sendall() and waits in recv(). The server's "
        "recv() returns it; the server asks for an answer.",
    ),
    Step(
        "the server answers",
        "servidor.py sends the answer, then calls close() on the connection inside "
        "its while True loop, goes round, and calls recv() on the socket it just "
        "closed. The client got the answer, closed its own socket the same way, and "
        "asks for another line.",
    ),
    Step(
        "the client sends again",
        "cliente.py calls sendall() on the socket it closed at the end of the first "
        "round. Both scripts are dead: the conversation lasted exactly one exchange.",
    ),
)


class BugStepper:
    """servidor.py and cliente.py, one action per click.  See the module docstring."""

    def __init__(
        self,
        client_lines: tuple[str, str] = ("hola, servidor", "¿sigues ahí?"),
        server_line: str = "hola, cliente",
        *,
        server_script: str | Path = SERVER_SCRIPT,
        client_script: str | Path = CLIENT_SCRIPT,
        steps: tuple[Step, ...] = STEPS,
        key: str = "stepper",
    ):
        if len(steps) != len(STEPS):
            raise ValueError(f"the exchange has {len(STEPS)} steps; steps= gives {len(steps)}")
        previous = _current.get(key)
        if previous is not None:
            previous.close()
        _current[key] = self
        self.key = key
        self.steps = steps
        self.client_lines = client_lines
        self.server_line = server_line
        self.server_script = server_script
        self.client_script = client_script
        self.port = 0
        self.server: Console | None = None
        self.client: Console | None = None
        self.steps_done = 0
        self.problem = ""  # set when a step did not show its effect in time
        self._step_started = 0.0
        # One step at a time; and, apart, the widgets' values are set by one thread
        # at a time (a step, or a console's reader thread).  The render lock is
        # never held while waiting for a console, so a reader thread never waits
        # for a step to finish.
        self._stepping = threading.Lock()
        self._rendering = threading.RLock()
        self._closed = False

        self._status = widgets.HTML()
        self._next = widgets.Button(
            icon="play", button_style="primary", layout=widgets.Layout(width="auto")
        )
        self._next.on_click(lambda _: self.step())
        self._reset = widgets.Button(description="Reset", icon="refresh")
        self._reset.on_click(lambda _: self.reset())
        self._next.add_class("chatlib-stepper-next")
        self._reset.add_class("chatlib-stepper-reset")
        self._screens = {SERVER: widgets.HTML(), CLIENT: widgets.HTML()}
        for name, screen in self._screens.items():
            screen.add_class("chatlib-console")
            screen.add_class(f"chatlib-console-{name.split('.')[0]}")
            screen.layout = widgets.Layout(flex="1 1 0", min_width="20em", margin="0 10px 0 0")
        buttons = widgets.HBox([self._next, self._reset])
        consoles = widgets.HBox(list(self._screens.values()))
        self.widget = widgets.VBox([self._status, buttons, consoles])
        self.widget.add_class("chatlib-stepper")
        self._widgets = [self._status, self._next, self._reset, buttons, consoles, self.widget]
        self._widgets += list(self._screens.values())
        self.reset()

    def __repr__(self) -> str:
        return f"<BugStepper {self.steps_done}/{len(self.steps)} steps: {self.state}>"

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # What it shows ---------------------------------------------------------------

    def console(self, name: str) -> Console | None:
        """The running (or ended) script called ``name``; None before it starts."""
        if name not in (SERVER, CLIENT):
            raise KeyError(f"the consoles are {SERVER!r} and {CLIENT!r}, not {name!r}")
        return self.server if name == SERVER else self.client

    def screen(self, name: str) -> str:
        """What the console called ``name`` (servidor.py, cliente.py) shows, as text."""
        console = self.console(name)
        return "" if console is None else console.screen()

    @property
    def status(self) -> dict[str, str]:
        """Each script's situation: not started, running, waiting for input,
        crashed, ended, stopped."""
        return {name: _status_of(self.console(name)) for name in (SERVER, CLIENT)}

    @property
    def finished(self) -> bool:
        return self.steps_done == len(self.steps)

    @property
    def state(self) -> str:
        """The status line: which step, and what each script is doing."""
        where = f"step {self.steps_done} of {len(self.steps)}" if self.steps_done else "ready"
        scripts = ", ".join(f"{name} {word}" for name, word in self.status.items())
        problem = f" ({self.problem})" if self.problem else ""
        return f"{where}: {scripts}{problem}"

    # Stepping ----------------------------------------------------------------------

    def step(self) -> str:
        """Do the next action and wait (up to STEP_TIMEOUT) until its effect shows.

        Returns ``state``.  After the last step it does nothing: press Reset.
        """
        with self._stepping:
            if self._closed or self.finished:
                return self.state
            with self._rendering:
                self._next.disabled = True  # a second click waits for this step
            self.problem = ""
            action, done = self._actions()[self.steps_done]
            self._step_started = time.monotonic()
            try:
                action()
            except (RuntimeError, TimeoutError) as error:
                self.problem = str(error)
            else:
                if not self._wait(done):
                    self.problem = f"nothing more happened within {STEP_TIMEOUT:g} s"
            self.steps_done += 1
            self._render()
            return self.state

    def _actions(self) -> list[tuple[Callable[[], None], Callable[[], bool]]]:
        """For each step: what to do, and when it has shown its effect.

        With the seed's scripts every step ends in something definite (a prompt,
        a crash).  A fixed script may instead go back to waiting in recv(), which
        shows nothing; ``_settled`` accepts that after QUIET seconds of silence.
        """
        first, second = self.client_lines

        def server_listening() -> bool:
            return LISTENING in self.server.stdout or not self.server.running

        def connected() -> bool:
            server_saw = "Conexion establecida" in self.server.stdout or not self.server.running
            return server_saw and _at_rest(self.client)

        def server_got_it() -> bool:
            return _at_rest(self.server) or not self.client.running

        def client_got_answer() -> bool:
            return _at_rest(self.client) and self._settled(self.server)

        def client_sent_again() -> bool:
            server_got_it = self.server.running and self.server.is_waiting_for_input
            return server_got_it or self._settled(self.client)

        return [
            (self._start_server, server_listening),
            (self._start_client, connected),
            (lambda: self.client.type(first), server_got_it),
            (lambda: self.server.type(self.server_line), client_got_answer),
            (lambda: self.client.type(second), client_sent_again),
        ]

    def _settled(self, console: Console) -> bool:
        """At a prompt, ended, or silent for QUIET seconds since this step began."""
        if _at_rest(console):
            return True
        last = max(self._step_started, console.events[-1].t)
        return time.monotonic() - last >= QUIET

    def _start_server(self) -> None:
        self.server = self._console(self.server_script, SERVER)

    def _start_client(self) -> None:
        self.client = self._console(self.client_script, CLIENT)

    def _console(self, script, name: str) -> Console:
        return Console(script, HOST, str(self.port), name=name, on_event=self._on_console_event)

    def _wait(self, done: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + STEP_TIMEOUT
        while time.monotonic() < deadline:
            if done():
                return True
            time.sleep(0.05)
        return False

    def reset(self) -> None:
        """Kill both scripts and get ready to start again, on a new port from the OS."""
        with self._stepping:
            for console in (self.client, self.server):
                if console is not None:
                    console.stop()
            self.server = self.client = None
            self.port = free_port()
            self.steps_done = 0
            self.problem = ""
            self._render()

    def close(self) -> None:
        """Kill both scripts and close the widgets."""
        with self._stepping:
            if self._closed:
                return
            for console in (self.client, self.server):
                if console is not None:
                    console.stop()
            with self._rendering:
                self._closed = True
                for widget in self._widgets:
                    widget.close()
        if _current.get(self.key) is self:
            del _current[self.key]

    # Rendering ----------------------------------------------------------------------

    def _on_console_event(self, event: ConsoleEvent) -> None:
        # On a console's reader thread: it only sets values of existing widgets.
        with self._rendering:
            if not self._closed:
                self._render_status()
                self._render_console(event.console)

    def _render(self) -> None:
        with self._rendering:
            if self._closed:
                return
            self._render_status()
            if self.finished:
                self._next.description = "done: press Reset to go again"
                self._next.disabled = True
            else:
                number = self.steps_done + 1
                self._next.description = f"step {number}: {self.steps[self.steps_done].button}"
                self._next.disabled = False
            for name in self._screens:
                self._render_console(name)

    def _render_status(self) -> None:
        if self.steps_done:
            said = self.steps[self.steps_done - 1].explanation
        else:
            said = "Press the button to take the first step."
        self._status.value = (
            f"<div class='chatlib-stepper-state'><b>{html.escape(self.state)}</b></div>"
            f"<div class='chatlib-stepper-said'>{html.escape(said)}</div>"
        )

    def _render_console(self, name: str) -> None:
        self._screens[name].value = render_console(name, self.console(name), self.port)


def _at_rest(console: Console | None) -> bool:
    """Waiting at a prompt, or ended: nothing more will happen until someone types."""
    return console is not None and (console.is_waiting_for_input or not console.running)


def _status_of(console: Console | None) -> str:
    if console is None:
        return "not started"
    if console.running:
        return "waiting for input" if console.is_waiting_for_input else "running"
    if console.crash is not None:
        return "crashed"
    if console.returncode is not None and console.returncode < 0:
        return "stopped"
    return "ended"


def render_console(name: str, console: Console | None, port: int) -> str:
    """One terminal window: its title, the command, the output; the crash in red."""
    e = html.escape
    if console is None:
        body = f"<span class='chatlib-term-dim'>(not started: it will run on port {port})</span>"
    else:
        crash = console.crash
        parts = [f"<span class='chatlib-term-cmd'>$ {e(console.command)}</span>\n"]
        for kind, text in _segments(console.events):
            if kind == "stdout":
                parts.append(e(text))
            elif kind == "typed":
                parts.append(f"<b class='chatlib-term-typed'>{e(text)}</b>\n")
            else:
                shown = e(text)
                if crash is not None:
                    # The traceback's last line, the one to read first, stands out.
                    last = e(crash.error)
                    shown = shown.replace(last, f"<b class='chatlib-term-crash'>{last}</b>")
                parts.append(f"<span class='chatlib-term-err'>{shown}</span>")
        body = "".join(parts)
    title = e(name)
    state = e(_status_of(console))
    return (
        f"{_TERMINAL_STYLE}<div class='chatlib-term'>"
        f"<div class='chatlib-term-title'>{title} <span>({state})</span></div>"
        f"<pre class='chatlib-term-body'>{body}</pre></div>"
    )


def _segments(events: list[ConsoleEvent]) -> list[tuple[str, str]]:
    """Output as runs of one kind: a traceback arrives in pieces, it shows as one."""
    runs: list[tuple[str, str]] = []
    for event in events:
        if event.kind not in ("stdout", "stderr", "typed"):
            continue
        if runs and runs[-1][0] == event.kind != "typed":
            runs[-1] = (event.kind, runs[-1][1] + event.text)
        else:
            runs.append((event.kind, event.text))
    return runs


_TERMINAL_STYLE = """<style>
.chatlib-term { border-radius: 6px; overflow: hidden; border: 1px solid #333; }
.chatlib-term-title { background: #3c3c3c; color: #eee; padding: 3px 8px;
  font: 600 12px var(--jp-ui-font-family, sans-serif); }
.chatlib-term-title span { font-weight: normal; color: #bbb; }
.chatlib-term-body { margin: 0; background: #1e1e1e; color: #ddd; padding: 8px;
  font: 12px/1.4 var(--jp-code-font-family, monospace); white-space: pre-wrap;
  overflow-wrap: anywhere; min-height: 12em; max-height: 24em; overflow-y: auto; }
.chatlib-term-cmd { color: #8ae234; }
.chatlib-term-typed { color: #fce94f; }
.chatlib-term-err { color: #ffb0b0; }
.chatlib-term-crash { color: #ff5555; font-size: 1.1em; }
.chatlib-term-dim { color: #888; }
.chatlib-stepper .widget-html-content { line-height: 1.4; }
.chatlib-stepper-said { margin: 0.2em 0 0.4em 0; max-width: 60em; }
</style>"""
