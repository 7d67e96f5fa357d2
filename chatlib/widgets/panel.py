"""A chat panel for the notebook: one member of a room, in one cell.

::

    from chatlib.widgets import ChatPanel

    panel = ChatPanel("ana", port=port)   # connects and joins as ana
    panel                                 # shows it (last line of a cell)
    panel.send("hola")                    # what Enter does, from code
    panel.wait_for("beto: hola")          # what it shows, for tests and checks
    panel.close()                         # leaves, stops the receiver, closes the widgets

What it shows, top to bottom: who you are and whether you are connected; who
is in the room; the conversation (each line with the sender's initials in the
sender's colour, the name and the time; your own lines set apart; joins and
leaves as quiet notices; the server's errors in red), scrolled to the newest
line; a box where Enter sends.

How it is built: ``ChatClient`` (``chatlib/client.py``) does the talking and
calls back on its receiver thread.  That thread only appends to a list and
sets widget *values*; every widget is created here, on the cell's thread.  The
conversation is one ``HTML`` widget, re-rendered from that list (the last
``SHOWN`` lines), and made to stay on the newest line by CSS alone: its box is
a ``flex-direction: column-reverse`` scroller, whose starting position is the
bottom.  Everything a name or a line contains is escaped, so a nick like
``<script>`` shows as text.
"""

from __future__ import annotations

import html
import re
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import ipywidgets as widgets

from chatlib.client import ChatClient, ChatConnectionError, ChatError

SHOWN = 200  # lines rendered in the conversation; older ones stay in .entries
KEPT = 2000  # lines kept in .entries
GROUP_SECONDS = 300  # lines from the same sender this close share one heading
RENDER_INTERVAL = 0.1  # seconds between two renders of a panel, at least
PLACEHOLDER = "Write a message; Enter sends"

# Dark enough for white initials and for names on a light background, and far
# apart in hue; the nick picks one, so a member has the same colour everywhere.
PALETTE = (
    "#1565c0",  # blue
    "#c62828",  # red
    "#00838f",  # teal
    "#6a1b9a",  # purple
    "#ad1457",  # pink
    "#5d4037",  # brown
    "#e65100",  # orange
    "#2e7d32",  # green
    "#455a64",  # blue grey
    "#827717",  # olive
)


@dataclass(frozen=True)
class Entry:
    """One line of the conversation as the panel shows it.

    ``kind`` is ``"message"`` (a chat line), ``"notice"`` (someone joined or
    left, we connected or disconnected) or ``"error"`` (the server or the
    connection said no).
    """

    kind: str
    text: str
    nick: str = ""
    ts: float = 0.0
    own: bool = False

    def as_text(self) -> str:
        if self.kind == "message":
            return f"{self.nick}: {self.text}"
        if self.kind == "error":
            return f"! {self.text}"
        return f"* {self.text}"


def colour_of(nick: str) -> str:
    """The same colour for the same nick, in every panel and every run."""
    return PALETTE[zlib.crc32(nick.casefold().encode("utf-8")) % len(PALETTE)]


def initials_of(nick: str) -> str:
    """``"ana"`` -> ``"A"``, ``"ana maria"`` -> ``"AM"``, ``"x_y"`` -> ``"XY"``."""
    words = [w for w in re.split(r"[\s._\-]+", nick) if w]
    if not words:
        return "?"
    return "".join(w[0] for w in words[:2]).upper()


def clock(ts: float) -> str:
    """Seconds since the epoch as the local time of day, ``14:05``."""
    return time.strftime("%H:%M", time.localtime(ts))


class EnterToSend:
    """Decides when the line in the panel's box goes out.

    ipywidgets 8 gives two signals and neither is enough alone.  With
    ``continuous_update=False`` the box's value reaches the kernel when the
    line is committed: on Enter, but also when the box loses focus (clicking
    another panel must not send a half-typed line).  Enter also sends a
    ``submit`` event, which arrives *before* the value it submits
    (ipywidgets issues #2446 and #4034).  So:

    - Enter (or the Send button) with a line already in the kernel sends it;
    - Enter with nothing there yet waits, and the value that follows is sent;
    - a value with no Enter waiting (the box lost focus) stays in the box.

    Blank lines are never sent.  Each method returns the line to send, or None.
    """

    def __init__(self) -> None:
        self._waiting = False

    def submitted(self, current: str) -> str | None:
        if current.strip():
            self._waiting = False
            return current
        self._waiting = True
        return None

    def committed(self, value: str) -> str | None:
        if not self._waiting:
            return None
        self._waiting = False
        return value if value.strip() else None


def wait_until_shown(view, changed: threading.Condition, condition, timeout: float, who: str):
    """Wait until ``condition`` holds for ``view`` (a panel or a console).

    ``condition`` is a string that shows up in ``view.text()``, or a function
    given the view; ``changed`` is notified whenever the view changes.  Raises
    ``TimeoutError`` saying what the view shows if ``timeout`` seconds go by.
    """
    if isinstance(condition, str):
        wanted = condition

        def condition(view) -> bool:
            return wanted in view.text()

    deadline = time.monotonic() + timeout
    with changed:
        while not condition(view):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"{who} did not show what was expected within {timeout:g} s; "
                    f"it shows:\n{view.text()}"
                )
            changed.wait(left)


class ChatPanel:
    """A member of the room at ``host:port``, joined as ``nick``, as a widget.

    It connects at once (``connect=False`` to call ``connect()`` later); a
    refused connection or a refused nick shows in the panel, in red, rather
    than raising.  Display it by leaving it as a cell's last expression, or
    with ``display(panel)``; ``panel.widget`` is the ipywidgets box itself.
    """

    def __init__(
        self,
        nick: str,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        connect: bool = True,
        timeout: float = 10.0,
    ):
        if port is None:
            raise TypeError("ChatPanel needs the server's port: ChatPanel('ana', port=PORT)")
        self.nick = nick
        self.host = host
        self.port = port
        self.timeout = timeout
        self.entries: list[Entry] = []
        self.members: list[str] = []
        self.state = "not connected"  # "connected", "disconnected"
        self.client: ChatClient | None = None
        self._changed = threading.Condition()  # guards entries, members, state
        self._enter = EnterToSend()
        self._closed = False
        self._last_render = 0.0
        self._pending: threading.Timer | None = None  # a render due soon

        self._header = widgets.HTML()
        self._header.add_class("chatlib-header")
        self._members = widgets.HTML()
        self._members.add_class("chatlib-members")
        self._log = widgets.HTML()
        self._log.add_class("chatlib-log")
        self._input = widgets.Text(
            placeholder=PLACEHOLDER,
            continuous_update=False,
            layout=widgets.Layout(flex="1 1 auto", width="auto"),
        )
        self._input.add_class("chatlib-input")
        self._input.observe(self._on_input_value, names="value")
        self._input.on_msg(self._on_input_msg)
        self._button = widgets.Button(
            description="Send", tooltip="Send the line (Enter does the same)"
        )
        self._button.add_class("chatlib-send")
        self._button.layout.width = "5em"
        self._button.on_click(self._on_button)
        composer = widgets.HBox([self._input, self._button])
        composer.add_class("chatlib-composer")
        self.widget = widgets.VBox([self._header, self._members, self._log, composer])
        self.widget.add_class("chatlib-panel")
        self.widget.add_class(f"chatlib-panel-{_css_name(nick)}")
        self._all_widgets = [self._header, self._members, self._log, self._input]
        self._all_widgets += [self._button, composer, self.widget]
        self._render()
        if connect:
            self.connect()

    def __repr__(self) -> str:
        return f"<ChatPanel {self.nick} @ {self.host}:{self.port} ({self.state})>"

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # What the panel shows, for code ------------------------------------------

    @property
    def messages(self) -> list[Entry]:
        """The chat lines shown so far (no notices, no errors)."""
        with self._changed:
            return [e for e in self.entries if e.kind == "message"]

    @property
    def errors(self) -> list[Entry]:
        with self._changed:
            return [e for e in self.entries if e.kind == "error"]

    def text(self) -> str:
        """The conversation as plain text, one entry a line: ``ana: hola``,
        ``* beto joined``, ``! nick-taken: ...``."""
        with self._changed:
            return "\n".join(e.as_text() for e in self.entries)

    def wait_for(
        self, condition: str | Callable[[ChatPanel], object], timeout: float = 10.0
    ) -> None:
        """Wait until ``condition`` holds: a string that shows up in ``text()``,
        or a function given the panel.  Raises ``TimeoutError`` saying what the
        panel shows, if ``timeout`` seconds go by first."""
        wait_until_shown(self, self._changed, condition, timeout, f"{self.nick}'s panel")
        with self._changed:
            if self._pending is not None:
                self._render()  # so that the widgets show what was waited for

    # Talking -------------------------------------------------------------------

    def connect(self) -> bool:
        """Connect and join; on failure show why (in red) and return False."""
        if self.client is not None and self.client.joined:
            return True
        self._set_state("connecting")
        self.client = ChatClient(
            self.host, self.port, on_event=self._on_event, timeout=self.timeout
        )
        try:
            self.client.connect(self.nick)
        except ChatError as error:
            self.client.close()
            self._add(Entry("error", f"{error.code}: {error.detail}", ts=time.time()))
            self._set_state("not joined")
            return False
        except ChatConnectionError as error:
            self._add(Entry("error", str(error), ts=time.time()))
            self._set_state("disconnected")
            return False
        return True

    def send(self, text: str) -> bool:
        """Send ``text`` as a chat line, as Enter does.  A blank line is not sent.

        Returns whether it went out.  The line shows in the panel when the
        server sends it back, in the room's order, like everyone else's.
        """
        if not text.strip():
            return False
        if self.client is None or not self.client.joined:
            self._add(Entry("error", "not connected: the line was not sent", ts=time.time()))
            return False
        try:
            self.client.say(text)
        except ChatConnectionError as error:
            self._add(Entry("error", f"{error}: the line was not sent", ts=time.time()))
            return False
        return True

    def close(self) -> None:
        """Leave the room, stop the receiver thread and close the widgets."""
        if self._closed:
            return
        self._closed = True
        if self.client is not None:
            self.client.close()  # joins the receiver thread
        with self._changed:
            if self._pending is not None:
                self._pending.cancel()
                self._pending = None
        for widget in self._all_widgets:
            widget.close()

    # The box: Enter, the Send button -------------------------------------------

    def _on_input_msg(self, _widget, content, _buffers) -> None:
        if content.get("event") == "submit":
            self._send_from_box(self._enter.submitted(self._input.value))

    def _on_button(self, _button) -> None:
        self._send_from_box(self._enter.submitted(self._input.value))

    def _on_input_value(self, change) -> None:
        self._send_from_box(self._enter.committed(change["new"]))

    def _send_from_box(self, line: str | None) -> None:
        if line is not None and self.send(line):
            self._input.value = ""

    # Events from the receiver thread -------------------------------------------

    def _on_event(self, event: dict) -> None:
        kind = event.get("type")
        now = time.time()
        if kind == "welcome":
            self.nick = str(event.get("nick", self.nick))
            self._set_members(event.get("users") or [])
            for old in event.get("history") or []:
                self._add(self._message_entry(old))
            self._add(Entry("notice", f"you joined as {self.nick}", ts=now), state="connected")
        elif kind == "message":
            self._add(self._message_entry(event))
        elif kind == "joined":
            nick = str(event.get("nick", "?"))
            with self._changed:
                if nick not in self.members:
                    self.members.append(nick)
            self._add(Entry("notice", f"{nick} joined", ts=now))
        elif kind == "left":
            nick = str(event.get("nick", "?"))
            with self._changed:
                self.members = [m for m in self.members if m != nick]
            self._add(Entry("notice", f"{nick} left", ts=now))
        elif kind == "users":
            self._set_members(event.get("users") or [])
        elif kind == "error":
            code, detail = event.get("code", "error"), event.get("detail", "")
            self._add(Entry("error", f"{code}: {detail}", ts=now))
        elif kind == "disconnected":
            with self._changed:
                self.members = []
            reason = event.get("reason") or "the connection ended"
            self._add(Entry("notice", f"disconnected: {reason}", ts=now), state="disconnected")

    def _message_entry(self, event: dict) -> Entry:
        nick = str(event.get("nick", "?"))
        return Entry(
            "message",
            str(event.get("text", "")),
            nick=nick,
            ts=float(event.get("ts") or time.time()),
            own=nick.casefold() == self.nick.casefold(),
        )

    # State changes and rendering, under one lock -------------------------------

    def _add(self, entry: Entry, state: str | None = None) -> None:
        with self._changed:
            self.entries.append(entry)
            del self.entries[:-KEPT]
            if state is not None:
                self.state = state
            self._show_changes()

    def _set_members(self, users) -> None:
        with self._changed:
            self.members = [str(u) for u in users]
            self._show_changes()

    def _set_state(self, state: str) -> None:
        with self._changed:
            self.state = state
            self._show_changes()

    def _show_changes(self) -> None:
        """Tell waiters, and render now, or soon if the last render was a moment ago.

        A burst of lines would otherwise re-send the whole conversation for each
        one; at most one render per RENDER_INTERVAL, and always one after the last.
        """
        self._changed.notify_all()
        wait = self._last_render + RENDER_INTERVAL - time.monotonic()
        if wait <= 0:
            self._render()
        elif self._pending is None:
            self._pending = threading.Timer(wait, self._render)
            self._pending.daemon = True
            self._pending.start()

    def _render(self) -> None:
        with self._changed:
            if self._pending is not None:
                self._pending.cancel()
                self._pending = None
            self._last_render = time.monotonic()
            if self._closed:
                return
            connected = self.state == "connected"
            self._header.value = render_header(self.nick, self.state, self.host, self.port)
            self._members.value = render_members(self.members, self.nick)
            self._log.value = render_entries(self.entries[-SHOWN:])
            self._input.disabled = not connected
            self._input.placeholder = PLACEHOLDER if connected else f"{self.state}: cannot send"
            self._button.disabled = not connected


# Rendering: pure functions from what the panel knows to HTML -------------------

STYLE = """<style>
.chatlib-panel { border: 1px solid var(--jp-border-color2, #ccc); border-radius: 6px;
  padding: 6px; min-width: 15em; background: var(--jp-layout-color1, #fff); }
.chatlib-panel .widget-html-content { line-height: 1.35; }
.chatlib-head { display: flex; align-items: center; gap: 0.5em; }
.chatlib-title { font-weight: 600; font-size: 1.05em; }
.chatlib-state { margin-left: auto; font-size: 0.85em; color: var(--jp-ui-font-color2, #666); }
.chatlib-state .chatlib-dot { font-size: 0.9em; }
.chatlib-state-connected .chatlib-dot { color: #2ca02c; }
.chatlib-state-connecting .chatlib-dot { color: #ff7f0e; }
.chatlib-state-disconnected .chatlib-dot, .chatlib-state-not-joined .chatlib-dot,
.chatlib-state-not-connected .chatlib-dot { color: #d62728; }
.chatlib-members .widget-html-content { font-size: 0.85em; color: var(--jp-ui-font-color2, #666);
  white-space: normal; }
.chatlib-chip { display: inline-block; padding: 0 0.45em; margin: 0 0.2em 0.15em 0;
  border-radius: 0.8em; color: #fff; font-size: 0.95em; }
.chatlib-log { height: 17em; overflow-y: auto; display: flex; flex-direction: column-reverse;
  border-top: 1px solid var(--jp-border-color2, #ddd);
  border-bottom: 1px solid var(--jp-border-color2, #ddd); margin: 4px 0; }
.chatlib-log > .widget-html-content { flex: 0 0 auto; align-self: stretch; line-height: 1.35;
  white-space: normal; }
.chatlib-msg { display: flex; gap: 0.5em; padding: 0.25em 0.35em; }
.chatlib-msg.chatlib-cont { padding-top: 0; }
.chatlib-msg.chatlib-own { background: var(--jp-layout-color2, #f0f4f8); }
.chatlib-avatar { flex: 0 0 1.9em; height: 1.9em; border-radius: 50%; color: #fff;
  font-weight: 600; font-size: 0.8em; display: flex; align-items: center; justify-content: center;
  margin-top: 0.15em; }
.chatlib-cont .chatlib-avatar { visibility: hidden; height: 0; }
.chatlib-body { min-width: 0; flex: 1 1 auto; }
.chatlib-who { font-weight: 600; }
.chatlib-you { font-weight: normal; color: var(--jp-ui-font-color2, #666); }
.chatlib-time { font-size: 0.8em; color: var(--jp-ui-font-color2, #888); margin-left: 0.4em; }
.chatlib-text { white-space: pre-wrap; overflow-wrap: anywhere;
  color: var(--jp-ui-font-color0, #111); }
.chatlib-notice { text-align: center; font-size: 0.85em; font-style: italic;
  color: var(--jp-ui-font-color2, #777); padding: 0.15em 0; }
.chatlib-error { color: #b00020; background: #fde7ea; border-radius: 4px; padding: 0.2em 0.5em;
  margin: 0.15em 0; font-size: 0.9em; white-space: pre-wrap; overflow-wrap: anywhere; }
</style>"""

_STATE_WORDS = {
    "connected": "connected",
    "connecting": "connecting…",
    "disconnected": "disconnected",
    "not joined": "not joined",
    "not connected": "not connected",
}


def render_header(nick: str, state: str, host: str, port: int) -> str:
    e = html.escape
    css_state = state.replace(" ", "-")
    return (
        f"{STYLE}<div class='chatlib-head'>"
        f"{_avatar(nick)}<span class='chatlib-title'>{e(nick)}</span>"
        f"<span class='chatlib-state chatlib-state-{css_state}'>"
        f"<span class='chatlib-dot'>●</span> {e(_STATE_WORDS.get(state, state))}"
        f" · {e(host)}:{port}</span></div>"
    )


def render_members(members: list[str], me: str) -> str:
    if not members:
        return "<span>nobody in the room</span>"
    chips = "".join(
        f"<span class='chatlib-chip' style='background:{colour_of(m)}'>"
        f"{html.escape(m)}{' (you)' if m.casefold() == me.casefold() else ''}</span>"
        for m in members
    )
    return f"<span>in the room ({len(members)}): </span>{chips}"


def render_entries(entries: list[Entry]) -> str:
    parts = []
    previous: Entry | None = None
    for entry in entries:
        parts.append(_render_entry(entry, previous))
        previous = entry
    return "".join(parts)


def _render_entry(entry: Entry, previous: Entry | None) -> str:
    e = html.escape
    if entry.kind == "notice":
        return f"<div class='chatlib-notice'>{e(entry.text)} · {clock(entry.ts)}</div>"
    if entry.kind == "error":
        return f"<div class='chatlib-error'>⚠ {e(entry.text)}</div>"
    continued = (
        previous is not None
        and previous.kind == "message"
        and previous.nick == entry.nick
        and 0 <= entry.ts - previous.ts < GROUP_SECONDS
    )
    classes = "chatlib-msg" + (" chatlib-own" if entry.own else "")
    text = f"<div class='chatlib-text'>{e(entry.text)}</div>"
    avatar = _avatar(entry.nick)
    if continued:
        classes += " chatlib-cont"
        return f"<div class='{classes}'>{avatar}<div class='chatlib-body'>{text}</div></div>"
    you = " <span class='chatlib-you'>(you)</span>" if entry.own else ""
    heading = (
        f"<div><span class='chatlib-who' style='color:{colour_of(entry.nick)}'>"
        f"{e(entry.nick)}</span>{you}<span class='chatlib-time'>{clock(entry.ts)}</span></div>"
    )
    return f"<div class='{classes}'>{avatar}<div class='chatlib-body'>{heading}{text}</div></div>"


def _avatar(nick: str) -> str:
    return (
        f"<span class='chatlib-avatar' style='background:{colour_of(nick)}' "
        f"title='{html.escape(nick, quote=True)}'>{html.escape(initials_of(nick))}</span>"
    )


def _css_name(nick: str) -> str:
    """A CSS-class-safe form of a nick, so a page (or a browser test) can find a panel."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", nick) or "_"
