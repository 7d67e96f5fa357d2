"""Widgets for the lessons: chat panels, a room in one cell, the bug stepper,
and a live view of a server.

- ``ChatPanel``      one member of a room (``chatlib/widgets/panel.py``)
- ``show_room``      a server and a panel per nick, side by side (``room.py``)
- ``BugStepper``     the seed's exchange, one action at a time (``stepper.py``)
- ``ServerConsole``  the members and events of a running server (``server_console.py``)

They need ipywidgets and a notebook to be seen, but every one of them can also
be driven and read from code, which is how the tests check them.
"""

from chatlib.widgets.panel import ChatPanel
from chatlib.widgets.room import Room, show_room
from chatlib.widgets.server_console import ServerConsole
from chatlib.widgets.stepper import BugStepper

__all__ = ["BugStepper", "ChatPanel", "Room", "ServerConsole", "show_room"]
