"""A whole chat room in one cell: a server and one panel per member, side by side.

::

    from chatlib.widgets import show_room

    room = show_room(["ana", "beto", "carla"])   # engine="threads" or "asyncio"
    room["ana"].send("hola")                     # each panel, from code
    room = show_room(["ana", "beto"], console=True)   # and the server's view below
    room.stop()                                  # or just run the cell again

Running the cell again replaces the room: the previous server and its panels
are stopped first (a module-level registry remembers the room shown last with
each ``key``), so a lesson can be re-run as often as you like without leaving
servers behind.  Two rooms side by side in one notebook (a threads one and an
asyncio one, say) take two keys.
"""

from __future__ import annotations

import ipywidgets as widgets

from chatlib.widgets.panel import ChatPanel
from chatlib.widgets.server_console import ServerConsole

# key -> the room shown last with that key, stopped by the next show_room(key=key).
_shown: dict[str, Room] = {}


class Room:
    """A chat server on 127.0.0.1 (port from the OS) and a panel per nick.

    With ``console=True`` a ``ServerConsole`` under the panels shows the
    server's side: its members and their comings and goings.
    """

    def __init__(
        self,
        nicks: list[str],
        engine: str = "threads",
        *,
        host: str = "127.0.0.1",
        console: bool = False,
    ):
        from chatlib.serve import start_server

        if isinstance(nicks, str):
            nicks = [nicks]
        if not nicks:
            raise ValueError("a room needs at least one nick, e.g. show_room(['ana', 'beto'])")
        self.engine = engine
        self.panels: list[ChatPanel] = []
        self.console: ServerConsole | None = None
        self.widget: widgets.VBox | None = None
        self._stopped = False
        self.server = start_server(engine=engine, host=host, port=0)
        self.host, self.port = self.server.address[:2]
        try:
            if console:
                self.console = ServerConsole(self.server)
            for nick in nicks:
                self.panels.append(ChatPanel(nick, self.host, self.port))
        except BaseException:
            self.stop()
            raise
        for panel in self.panels:
            panel.widget.layout.flex = "1 1 0"
            panel.widget.layout.margin = "0 8px 8px 0"
        row = widgets.HBox(
            [p.widget for p in self.panels],
            layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start"),
        )
        self._boxes = [row]
        shown = [row] if self.console is None else [row, self.console.widget]
        self.widget = widgets.VBox(shown)
        self.widget.add_class("chatlib-room")

    def __getitem__(self, nick: str) -> ChatPanel:
        for panel in self.panels:
            if panel.nick == nick:
                return panel
        raise KeyError(f"no panel for {nick!r}; the room has {[p.nick for p in self.panels]}")

    def __repr__(self) -> str:
        nicks = ", ".join(p.nick for p in self.panels)
        state = "stopped" if self._stopped else "running"
        return f"<Room {nicks} on {self.host}:{self.port} ({self.engine}, {state})>"

    def stop(self) -> None:
        """Close every panel and the console, then stop the server.  Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        for panel in self.panels:
            panel.close()
        if self.console is not None:
            self.console.close()
        self.server.stop()
        if self.widget is not None:
            for box in [*self._boxes, self.widget]:
                box.close()


def show_room(
    nicks: list[str],
    engine: str = "threads",
    *,
    console: bool = False,
    key: str = "room",
    display: bool = True,
) -> Room:
    """Start a server in the background and show a panel per nick, side by side.

    The room shown before with the same ``key`` (by an earlier run of the
    cell) is stopped first.  ``console=True`` adds the server console under
    the panels.  Returns the ``Room``: ``room["ana"]`` is ana's panel,
    ``room.console`` the console, ``room.stop()`` ends it all.  Write
    ``room = show_room(...)``: the room itself shows as one line of text, and
    ``room.widget`` shows the panels again.
    """
    previous = _shown.pop(key, None)
    if previous is not None:
        previous.stop()
    room = Room(nicks, engine, console=console)
    _shown[key] = room
    if display:
        from IPython.display import display as show

        show(room.widget)
    return room
