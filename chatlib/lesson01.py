"""Lesson 01's experiment: run the seed's two scripts against each other.

    from chatlib.lesson01 import run_original_exchange

    run = run_original_exchange(["hola, servidor", "¿sigues ahí?"], ["hola, cliente"])
    print(run.server.screen())      # servidor.py's terminal
    print(run.client.screen())      # cliente.py's terminal
    run.diagram()                   # what happened, in order, wire included

It does what a student does with two terminals: start ``servidor.py``, wait
until it says it is listening, start ``cliente.py``, type.  The port comes
from the operating system, the client talks to the server through a
recording ``chatlib.proxy.Proxy`` (so the bytes on the wire can be shown),
and everything is stopped before the function returns, so it can be run
again and again.
"""

from __future__ import annotations

import atexit
import html
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from chatlib.console import Console
from chatlib.original import CLIENT_SCRIPT, SERVER_SCRIPT
from chatlib.proxy import Proxy, WireEvent
from chatlib.sequence import SequenceDiagram, sequence_diagram

HOST = "127.0.0.1"
LISTENING = "Servidor esperando conexion"  # what servidor.py prints once it listens


def free_port() -> int:
    """A port that was free a moment ago: the scripts need a number, not 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@dataclass
class Exchange:
    """What one run of the two scripts left behind (everything already stopped)."""

    server: Console
    client: Console
    wire: list[WireEvent] = field(default_factory=list)
    port: int = 0
    timed_out: bool = False  # True if the run hit its time limit (it should not)

    def diagram(self) -> SequenceDiagram:
        """The sequence diagram of this run, drawn from its trace."""
        return sequence_diagram(self.client.events, self.server.events, self.wire)

    def terminals(self) -> Terminals:
        """Both consoles side by side, as two terminal windows would show them."""
        return Terminals([self.server, self.client])


def run_original_exchange(
    client_lines: list[str],
    server_lines: list[str],
    port: int | None = None,
    via_proxy: bool = True,
    *,
    server_script: str | Path = SERVER_SCRIPT,
    client_script: str | Path = CLIENT_SCRIPT,
    timeout: float = 30.0,
) -> Exchange:
    """Run ``servidor.py`` then ``cliente.py`` on 127.0.0.1, typing the given lines.

    Returns when both scripts have ended, or are left waiting at a prompt with
    nothing more to type (they are then stopped, as a student would press
    Ctrl-C), or after ``timeout`` seconds at the latest.
    """
    port = port or free_port()
    server = client = proxy = None
    try:
        server = Console(server_script, HOST, str(port), typing=server_lines, name="servidor.py")
        server.wait_for(lambda c: LISTENING in c.stdout or not c.running, timeout)
        if LISTENING not in server.stdout:
            server.stop()
            last = server.screen().strip().splitlines() or ["(nothing)"]
            raise RuntimeError(f"servidor.py did not start listening on port {port}: {last[-1]}")
        client_port = port
        if via_proxy:
            proxy = Proxy((HOST, port))
            client_port = proxy.address[1]
        client = Console(
            client_script, HOST, str(client_port), typing=client_lines, name="cliente.py"
        )
        timed_out = not _wait_until_done([server, client], timeout)
        for console in (client, server):
            console.stop()
        wire = _finished_wire(proxy) if proxy else []
        return Exchange(server, client, wire, port, timed_out)
    finally:
        for console in (client, server):
            if console is not None:
                console.stop()
        if proxy is not None:
            proxy.stop()


def _wait_until_done(consoles: list[Console], timeout: float, idle: float = 0.5) -> bool:
    """Wait until each console has ended or sits at a prompt with nothing left to type.

    "Sits at a prompt" must hold for ``idle`` seconds, so a line that only
    looked like a prompt for a moment does not count.
    """
    deadline = time.monotonic() + timeout
    stuck_since: dict[int, float] = {}
    while time.monotonic() < deadline:
        now = time.monotonic()
        done = 0
        for index, console in enumerate(consoles):
            if not console.running:
                done += 1
            elif console.is_waiting_for_input and console.lines_left == 0:
                stuck_since.setdefault(index, now)
                done += now - stuck_since[index] >= idle
            else:
                stuck_since.pop(index, None)
        if done == len(consoles):
            return True
        time.sleep(0.05)
    return False


def _finished_wire(proxy: Proxy, grace: float = 1.0) -> list[WireEvent]:
    """The proxy's events once every relayed direction has ended, or ``grace`` s passed.

    Stopping the proxy shuts its sockets, which its relays would see as closes;
    only what happened before that is the real trace.
    """
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        events = list(proxy.events)
        connections = {e.connection for e in events}
        ended = {(e.connection, e.direction) for e in events if e.kind in ("close", "reset")}
        refused = {e.connection for e in events if e.kind == "refused"}
        if all(len([d for c, d in ended if c == n]) == 2 or n in refused for n in connections):
            break
        time.sleep(0.02)
    stopping = time.monotonic()
    return [e for e in proxy.events if e.t < stopping]


# ---------------------------------------------------------------------------
# Showing scripts and consoles


def listing(script: str | Path) -> str:
    """A script's text with line numbers, the way tracebacks count them."""
    lines = Path(script).read_text(encoding="utf-8").splitlines()
    return "\n".join(f"{number:>3}  {line}" for number, line in enumerate(lines, 1))


_COPIES = tempfile.mkdtemp(prefix="chatlib-lesson01-")
atexit.register(shutil.rmtree, _COPIES, ignore_errors=True)


def edited_copy(script: str | Path, remove: str) -> Path:
    """A copy of ``script`` without the line(s) reading ``remove``, in a temporary folder.

    The copy keeps the original's name (so its traceback still says
    ``servidor.py``), and the original is left untouched.
    """
    script = Path(script)
    lines = script.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if line.strip() != remove.strip()]
    if len(kept) == len(lines):
        raise ValueError(f"{script.name} has no line that reads {remove.strip()!r}")
    folder = Path(tempfile.mkdtemp(dir=_COPIES))
    copy = folder / script.name
    copy.write_text("".join(kept), encoding="utf-8")
    return copy


class Terminals:
    """Consoles shown side by side like terminal windows (plain text elsewhere)."""

    def __init__(self, consoles: list[Console]):
        self.consoles = consoles

    def __repr__(self) -> str:
        parts = []
        for console in self.consoles:
            parts.append(f"── {console.name} ──\n$ {console.command}\n{console.screen()}")
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        panes = "".join(_pane_html(console) for console in self.consoles)
        return f'<div style="display:flex;gap:12px;flex-wrap:wrap">{panes}</div>'


def _pane_html(console: Console) -> str:
    body = [f'<span style="color:#8ae234">$ {html.escape(console.command)}</span>\n']
    for event in console.events:
        text = html.escape(event.text)
        if event.kind == "stdout":
            body.append(text)
        elif event.kind == "stderr":
            body.append(f'<span style="color:#ff8c8c">{text}</span>')
        elif event.kind == "typed":
            body.append(f'<b style="color:#fce94f">{text}</b>\n')
    return (
        '<div style="flex:1;min-width:360px">'
        f'<div style="background:#444;color:#eee;padding:2px 8px;font:12px sans-serif;'
        f'border-radius:6px 6px 0 0">{html.escape(console.name)}</div>'
        '<pre style="margin:0;background:#1e1e1e;color:#ddd;padding:8px;font-size:12px;'
        "font-family:ui-monospace,Menlo,Consolas,'DejaVu Sans Mono',monospace;"
        'white-space:pre-wrap;overflow-x:auto;border-radius:0 0 6px 6px">'
        f"{''.join(body)}</pre></div>"
    )
