"""The server console: who is in a running chat server, and what happened, live.

::

    from chatlib.serve import start_server
    from chatlib.widgets import ServerConsole

    server = start_server()
    console = ServerConsole(server)   # shows: address, state, members, counters, events
    console                           # (last line of a cell)
    console.members                   # ["ana", "beto"]
    console.wait_for("beto joined")   # for tests and checks
    console.close()                   # stops watching (the server keeps running)

How it knows: a watcher thread looks at the server every ``interval`` seconds
(``server.stats()`` and the room's member list) and writes down what changed,
so a join or a leave shows within that interval.  It only reads: the server
does not know it is watched.  What is said in the room is not seen this way;
the conversation is what the chat panels show.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import ipywidgets as widgets

from chatlib.widgets.panel import clock, colour_of

KEPT = 500  # events kept


@dataclass(frozen=True)
class ServerEvent:
    ts: float
    text: str

    def __str__(self) -> str:
        return f"{clock(self.ts)} {self.text}"


class ServerConsole:
    """A live view of ``server`` (a handle from ``chatlib.serve.start_server``)."""

    def __init__(self, server, *, interval: float = 0.25):
        self.server = server
        self.interval = interval
        self.members: list[str] = []
        self.stats: dict[str, int] = {}
        self.events: list[ServerEvent] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()

        self._header = widgets.HTML()
        self._members = widgets.HTML()
        self._log = widgets.HTML()
        self._log.add_class("chatlib-server-log")
        self.widget = widgets.VBox([self._header, self._members, self._log])
        self.widget.add_class("chatlib-server-console")
        self._widgets = [self._header, self._members, self._log, self.widget]

        self._note("watching the server")
        self._look()
        self._watcher = threading.Thread(
            target=self._watch, name=f"server-console-{self._port}", daemon=True
        )
        self._watcher.start()

    def __repr__(self) -> str:
        return f"<ServerConsole of {self.server!r}: {len(self.members)} members>"

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    @property
    def _port(self) -> int:
        return self.server.address[1]

    # For code ----------------------------------------------------------------------

    def text(self) -> str:
        """The events shown so far, one a line: ``14:05 ana joined``."""
        with self._changed:
            return "\n".join(str(e) for e in self.events)

    def wait_for(
        self, condition: str | Callable[[ServerConsole], object], timeout: float = 10.0
    ) -> None:
        """Wait until ``condition`` (text in ``text()``, or a function given the
        console) holds; ``TimeoutError`` with what it shows otherwise."""
        if isinstance(condition, str):
            wanted = condition

            def condition(console: ServerConsole) -> bool:
                return wanted in console.text()

        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"the server console did not show what was expected within "
                        f"{timeout:g} s; it shows:\n{self.text()}"
                    )
                self._changed.wait(left)

    def close(self) -> None:
        """Stop watching and close the widgets; the server itself keeps running."""
        self._stop.set()
        if self._watcher is not threading.current_thread():
            self._watcher.join(timeout=10)
        for widget in self._widgets:
            widget.close()

    # Watching ----------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            if not self._look():
                return  # the server stopped: nothing more will change

    def _look(self) -> bool:
        """Read the server once, note what changed, render; False once it stopped."""
        running = self.server.running
        members: list[str] = []
        stats: dict[str, int] = {}
        if running:
            try:
                members, stats = _members_of(self.server), self.server.stats()
            except (RuntimeError, TimeoutError):  # it stopped as we looked
                running = False
        with self._changed:
            for nick in members:
                if nick not in self.members:
                    self._note(f"{nick} joined")
            for nick in self.members:
                if nick not in members:
                    self._note(f"{nick} left")
            self.members, self.stats = members, stats
            if not running:
                self._note("the server stopped")
            self._render(running)
            self._changed.notify_all()
        return running

    def _note(self, text: str) -> None:
        with self._changed:
            self.events.append(ServerEvent(time.time(), text))
            del self.events[:-KEPT]

    def _render(self, running: bool) -> None:
        e = html.escape
        host, port = self.server.address[:2]
        state = "running" if running else "stopped"
        colour = "#2e7d32" if running else "#c62828"
        self._header.value = (
            f"{_STYLE}<div class='chatlib-server-head'><b>chat server</b> "
            f"({e(self.server.engine)} engine) on {e(host)}:{port} "
            f"<span style='color:{colour}'>● {state}</span></div>"
        )
        counters = " · ".join(f"{e(k.replace('_', ' '))} {v}" for k, v in self.stats.items())
        chips = "".join(
            f"<span class='chatlib-server-chip' style='background:{colour_of(m)}'>{e(m)}</span>"
            for m in self.members
        )
        self._members.value = (
            f"<div>members ({len(self.members)}): {chips or '<i>nobody</i>'}</div>"
            f"<div class='chatlib-server-stats'>{counters}</div>"
        )
        self._log.value = "".join(
            f"<div><span class='chatlib-server-time'>{_seconds(ev.ts)}</span> {e(ev.text)}</div>"
            for ev in self.events[-200:]
        )


def _seconds(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def _members_of(server) -> list[str]:
    """The room's member list, read from this thread without a lock of the server's.

    The room is only ever changed on the server's own threads; reading the
    list while it changes can fail with RuntimeError, so read until it holds
    still.
    """
    for _ in range(100):
        try:
            return list(server.room.users())
        except RuntimeError:  # "dictionary changed size during iteration"
            time.sleep(0.001)
    return []


_STYLE = """<style>
.chatlib-server-console { border: 1px solid var(--jp-border-color2, #ccc); border-radius: 6px;
  padding: 6px; }
.chatlib-server-console .widget-html-content { line-height: 1.4; white-space: normal; }
.chatlib-server-chip { display: inline-block; padding: 0 0.45em; margin: 0 0.2em;
  border-radius: 0.8em; color: #fff; }
.chatlib-server-stats { font-size: 0.85em; color: var(--jp-ui-font-color2, #666); }
.chatlib-server-log { height: 12em; overflow-y: auto; display: flex;
  flex-direction: column-reverse; font: 12px/1.4 var(--jp-code-font-family, monospace);
  border-top: 1px solid var(--jp-border-color2, #ddd); margin-top: 4px; }
.chatlib-server-log > .widget-html-content { flex: 0 0 auto; }
.chatlib-server-time { color: var(--jp-ui-font-color2, #888); }
</style>"""
