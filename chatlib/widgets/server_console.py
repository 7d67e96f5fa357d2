"""The server console: who is in a running chat server, what is said, what goes wrong.

::

    from chatlib.serve import start_server
    from chatlib.widgets import ServerConsole

    server = start_server()
    console = ServerConsole(server)   # shows: address, state, members, counters, events
    console                           # (last line of a cell)
    console.members                   # ["ana", "beto"]
    console.wait_for("ana: hola")     # for tests and checks
    console.close()                   # stops watching (the server keeps running)

How it knows: the console is one of the room's observers (``Room.observers``,
see ``chatlib.room``).  The room tells it every join, every line said, every
leave with its reason and every error the server sends, and to whom, such as
``error nick-taken to connection 2``.  The room does that on the server's own
thread, where every member waits for it, so the console does nothing there but
put what it is told on a queue.  Its own watcher thread takes the queue every
``interval`` seconds, reads the counters (``server.stats()``) and redraws.  It
keeps the last ``max_events`` events (the members and counters are always
whole).
"""

from __future__ import annotations

import html
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets

from chatlib.widgets.panel import colour_of, wait_until_shown

KEPT = 200  # events kept and shown
SHOWN_TEXT = 300  # characters of a line shown; a 4,000-character line would flood the log


@dataclass(frozen=True)
class ServerEvent:
    """One line of the console: ``kind`` is a room event's type, or ``note`` for the console's."""

    ts: float
    text: str
    kind: str = "note"
    nick: str | None = None  # whose event it is, for its colour

    def __str__(self) -> str:
        return f"{_seconds(self.ts)} {self.text}"


class ServerConsole:
    """A live view of ``server`` (a handle from ``chatlib.serve.start_server``)."""

    def __init__(self, server, *, interval: float = 0.25, max_events: int = KEPT):
        self.server = server
        self.interval = interval
        self.members: list[str] = []
        self.stats: dict[str, int] = {}
        self.events: deque[ServerEvent] = deque(maxlen=max_events)
        self._told: queue.SimpleQueue[tuple[float, dict[str, Any]]] = queue.SimpleQueue()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._shut_down = False  # the room said so
        self._room = server.room

        self._header = widgets.HTML()
        self._members = widgets.HTML()
        self._log = widgets.HTML()
        self._log.add_class("chatlib-server-log")
        self.widget = widgets.VBox([self._header, self._members, self._log])
        self.widget.add_class("chatlib-server-console")
        self._widgets = [self._header, self._members, self._log, self.widget]

        self._watcher: threading.Thread | None = None
        if not server.running:
            self._note("the server is not running")
            self._render()
            return
        self._note("watching the server")
        # Listen first, then read who is in: a join or a leave in between is
        # told as well, and applying it on top of the list changes nothing wrong.
        self._room.observers.append(self._observe)
        self.members = _members_of(server)
        self._look(draw=True)
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
        """The events shown now, one a line: ``14:05:01 ana: hola``."""
        with self._changed:
            return "\n".join(str(e) for e in self.events)

    def wait_for(
        self, condition: str | Callable[[ServerConsole], object], timeout: float = 10.0
    ) -> None:
        """Wait until ``condition`` (text in ``text()``, or a function given the
        console) holds; ``TimeoutError`` with what it shows otherwise."""
        wait_until_shown(self, self._changed, condition, timeout, "the server console")

    def close(self) -> None:
        """Stop watching and close the widgets; the server itself keeps running."""
        self._stop.set()
        self._unsubscribe()
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=10)
        for widget in self._widgets:
            widget.close()

    # Watching ----------------------------------------------------------------------

    def _observe(self, event: dict[str, Any]) -> None:
        """Called by the room, on the server's thread: only take note, at once."""
        self._told.put((time.time(), event))

    def _unsubscribe(self) -> None:
        try:
            self._room.observers.remove(self._observe)
        except ValueError:
            pass  # already done

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            was_shut_down = self._shut_down
            self._look()
            if was_shut_down:
                # One more look after the room said shutdown, for a connection
                # accepted as the server stopped; the room has nothing more to say.
                self._unsubscribe()
                return

    def _look(self, draw: bool = False) -> None:
        """Take what the room told, read the counters, redraw if anything changed."""
        told = []
        while True:
            try:
                told.append(self._told.get_nowait())
            except queue.Empty:
                break
        stats = self.stats
        if self.server.running:
            try:
                stats = self.server.stats()
            except (RuntimeError, TimeoutError):  # it stopped as we asked
                pass
        with self._changed:
            for ts, event in told:
                self._apply(ts, event)
            if draw or told or stats != self.stats:
                self.stats = stats
                self._render()
                self._changed.notify_all()

    def _apply(self, ts: float, event: dict[str, Any]) -> None:
        kind, nick = event.get("type"), event.get("nick")
        if kind == "joined":
            if nick not in self.members:
                self.members.append(nick)
            self._note(f"{nick} joined", kind, nick, ts)
        elif kind == "left":
            if nick in self.members:
                self.members.remove(nick)
            reason = event.get("reason")
            why = "" if reason == "left" else f" ({reason})"  # "ana left (too-slow)"
            self._note(f"{nick} left{why}", kind, nick, ts)
        elif kind == "message":
            self._note(f"#{event['id']} {nick}: {_short(event['text'])}", kind, nick, event["ts"])
        elif kind == "error":
            text = f"error {event['code']} to {event['to']}: {_short(event['detail'])}"
            self._note(text, kind, None, ts)
        elif kind == "shutdown":
            self._shut_down = True
            self._note("the server stopped: every connection is told server-shutdown", ts=ts)

    def _note(
        self, text: str, kind: str = "note", nick: str | None = None, ts: float | None = None
    ) -> None:
        with self._changed:
            self.events.append(ServerEvent(time.time() if ts is None else ts, text, kind, nick))

    # Drawing -----------------------------------------------------------------------

    def _render(self) -> None:
        e = html.escape
        host, port = self.server.address[:2]
        running = self.server.running
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
        self._log.value = "".join(_row(event) for event in self.events)


def _row(event: ServerEvent) -> str:
    e = html.escape
    text = e(event.text)
    if event.nick is not None:  # the nick in its colour, as in the chat panels
        who = e(event.nick)
        shown = f"<b style='color:{colour_of(event.nick)}'>{who}</b>"
        if event.kind == "message":  # "#3 ana: hola": the id stays grey
            number, _, rest = text.partition(" ")
            text = f"<span class='chatlib-server-id'>{number}</span> {shown}{rest[len(who) :]}"
        else:
            text = shown + text[len(who) :]
    elif event.kind == "error":  # "error too-slow to ana: ...": the code stands out
        word, code, rest = text.split(" ", 2)
        text = f"{word} <b>{code}</b> {rest}"
    mark = {"joined": "→", "left": "←", "error": "⚠"}.get(event.kind, "")
    return (
        f"<div class='chatlib-server-row chatlib-server-{event.kind}'>"
        f"<span class='chatlib-server-time'>{_seconds(event.ts)}</span>"
        f"<span class='chatlib-server-mark'>{mark}</span>"
        f"<span class='chatlib-server-text'>{text}</span></div>"
    )


def _short(text: str) -> str:
    return text if len(text) <= SHOWN_TEXT else text[: SHOWN_TEXT - 1] + "…"


def _seconds(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def _members_of(server) -> list[str]:
    """The room's member list, read once from this thread without a lock of the server's.

    The room is only ever changed on the server's own threads; reading the
    list while it changes can fail with RuntimeError, so read until it holds
    still.  From then on the room's events keep the console's list.
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
.chatlib-server-log { height: 14em; overflow-y: auto; display: flex;
  flex-direction: column-reverse; font: 12px/1.45 var(--jp-code-font-family, monospace);
  border-top: 1px solid var(--jp-border-color2, #ddd); margin-top: 4px; }
.chatlib-server-log > .widget-html-content { flex: 0 0 auto; }
.chatlib-server-row { display: flex; align-items: baseline; }
.chatlib-server-text { flex: 1 1 auto; min-width: 0; white-space: pre-wrap;
  overflow-wrap: anywhere; }
.chatlib-server-time, .chatlib-server-id { color: var(--jp-ui-font-color2, #888); }
.chatlib-server-time { flex: none; }
.chatlib-server-mark { flex: none; width: 1.8em; text-align: center; }
.chatlib-server-note { color: var(--jp-ui-font-color2, #777); font-style: italic; }
.chatlib-server-joined .chatlib-server-mark { color: #2e7d32; }
.chatlib-server-left .chatlib-server-mark { color: #8d6e63; }
.chatlib-server-error { color: #c62828; }
</style>"""
