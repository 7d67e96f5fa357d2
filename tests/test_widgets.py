"""The widgets driven from code, against real servers on 127.0.0.1 (no browser:
tests/browser/ types into them for real).

The panels' box is driven the way the browser drives it: the messages the
front end sends (a ``submit`` event, a new ``value``) are fed to the widget's
own message handler, in the order ipywidgets 8 sends them.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import warnings

import pytest

from chatlib.client import ChatClient, ChatError
from chatlib.serve import start_server
from chatlib.widgets import BugStepper, ChatPanel, ServerConsole, show_room
from chatlib.widgets import room as room_module
from chatlib.widgets.panel import SHOWN, EnterToSend, colour_of, initials_of
from chatlib.widgets.stepper import CLIENT, SERVER

CRASH = "OSError: [Errno 9] Bad file descriptor"

# A warning from a widget would show in a student's cell: here it fails the test.
pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(params=["threads", "asyncio"])
def server(request):
    handle = start_server(engine=request.param)
    yield handle
    handle.stop()


@pytest.fixture
def panels(server):
    """``panels("ana", "beto")``: joined panels, closed at the end of the test."""
    made: list[ChatPanel] = []

    def make(*nicks: str) -> list[ChatPanel]:
        for nick in nicks:
            made.append(ChatPanel(nick, *server.address))
        return made[-len(nicks) :]

    yield make
    for panel in made:
        panel.close()


def frontend_submit(panel: ChatPanel) -> None:
    """What the browser sends when Enter is pressed in the box."""
    panel._input._handle_msg(
        {"content": {"data": {"method": "custom", "content": {"event": "submit"}}}, "buffers": []}
    )


def frontend_value(panel: ChatPanel, value: str) -> None:
    """What the browser sends when the box's line is committed (Enter, or leaving it)."""
    panel._input._handle_msg(
        {"content": {"data": {"method": "update", "state": {"value": value}}}, "buffers": []}
    )


def said(panel: ChatPanel) -> list[str]:
    return [f"{m.nick}: {m.text}" for m in panel.messages]


# Deciding when the box sends: pure rules ---------------------------------------


def test_enter_then_value_sends_the_value():
    enter = EnterToSend()
    assert enter.submitted("") is None  # ipywidgets 8.1: the submit comes first
    assert enter.committed("hola") == "hola"
    assert enter.committed("more") is None  # only one line per Enter


def test_value_then_enter_sends_the_value():
    enter = EnterToSend()
    assert enter.committed("hola") is None  # on its own: leaving the box
    assert enter.submitted("hola") == "hola"


def test_leaving_the_box_sends_nothing_and_blank_lines_never_go():
    enter = EnterToSend()
    assert enter.committed("half a line") is None
    assert enter.submitted("   ") is None
    assert enter.committed("   ") is None
    assert enter.submitted("") is None
    assert enter.committed("") is None


# Panels talking through a real server --------------------------------------------


def test_a_line_sent_in_one_panel_shows_in_both(panels):
    ana, beto = panels("ana", "beto")
    assert ana.send("hola, ¿qué tal? ñ")
    beto.wait_for("ana: hola, ¿qué tal? ñ")
    ana.wait_for("ana: hola, ¿qué tal? ñ")
    assert ana.messages[-1].own and not beto.messages[-1].own
    assert "chatlib-own" in ana._log.value and "chatlib-own" not in beto._log.value
    assert "hola, ¿qué tal? ñ" in beto._log.value
    assert ana.state == beto.state == "connected"


def test_enter_in_the_box_sends_and_clears_it(panels):
    ana, beto = panels("ana", "beto")
    frontend_submit(ana)
    frontend_value(ana, "typed and Enter")
    beto.wait_for("ana: typed and Enter")
    assert ana._input.value == ""


def test_leaving_the_box_keeps_the_line_until_enter(panels):
    ana, beto = panels("ana", "beto")
    frontend_value(ana, "a draft")  # the box lost focus
    ana.send("a line sent after the draft")
    beto.wait_for("ana: a line sent after the draft")
    assert said(beto) == ["ana: a line sent after the draft"]
    assert ana._input.value == "a draft"
    frontend_submit(ana)  # back in the box, Enter
    beto.wait_for("ana: a draft")
    assert ana._input.value == ""


def test_an_empty_line_is_never_sent(panels):
    ana, beto = panels("ana", "beto")
    assert not ana.send("")
    assert not ana.send("   \t")
    frontend_submit(ana)  # Enter on the empty box
    frontend_submit(ana)
    ana.send("only this")
    beto.wait_for("ana: only this")
    assert said(beto) == ["ana: only this"]


def test_markup_in_nicks_and_lines_is_shown_as_text(panels):
    (ana,) = panels("ana")
    evil = "<script>alert(1)</script>"
    (intruder,) = panels(evil)
    intruder.send("<b>bold?</b> & <img src=x onerror=alert(1)>")
    ana.wait_for("<b>bold?</b>")
    intruder.wait_for(lambda panel: panel.state == "connected")  # and its widgets show it
    page = ana._log.value + ana._members.value + intruder._header.value
    assert "<script>" not in page and "<b>bold?</b>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in ana._log.value
    assert "&lt;b&gt;bold?&lt;/b&gt; &amp; &lt;img src=x onerror=alert(1)&gt;" in ana._log.value


def test_joins_and_leaves_are_notices_and_the_member_list_follows(panels):
    ana, beto = panels("ana", "beto")
    ana.wait_for("* beto joined")
    beto.wait_for(lambda panel: panel.members == ["ana", "beto"])
    assert ana.members == ["ana", "beto"]
    assert "chatlib-notice" in ana._log.value and "beto (you)" in beto._members.value
    beto.close()
    ana.wait_for("* beto left")
    assert ana.members == ["ana"]
    assert ana.messages == []  # notices are not chat lines


def test_server_errors_show_in_red(panels):
    ana, beto = panels("ana", "beto")
    ana.send("x" * 5000)
    ana.wait_for(lambda panel: panel.errors)
    assert ana.errors[0].text.startswith("too-long:")
    assert "chatlib-error" in ana._log.value
    (second_ana,) = panels("ANA")
    assert second_ana.state == "not joined"
    assert second_ana.errors[0].text.startswith("nick-taken:")
    ana.send("still here")
    beto.wait_for("ana: still here")
    assert said(beto) == ["ana: still here"]  # the refused line went to nobody


def test_a_refused_connection_is_a_sentence_in_the_panel():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody listens here once closed
    panel = ChatPanel("ana", "127.0.0.1", port)
    try:
        panel.wait_for(lambda panel: panel.state == "disconnected")
        assert "connection refused" in panel.errors[0].text
        assert not panel.send("hola")
        assert panel._input.disabled
    finally:
        panel.close()


def test_a_server_that_stops_leaves_the_panel_disconnected(server):
    panel = ChatPanel("ana", *server.address)
    try:
        server.stop()
        panel.wait_for(lambda p: p.state == "disconnected")
        assert "disconnected: the server shut down" in panel.text()
        assert panel.members == [] and panel._input.disabled
    finally:
        panel.close()


def test_a_burst_arrives_whole_in_order_and_renders_the_newest_lines(panels):
    ana, beto, carla = panels("ana", "beto", "carla")
    for n in range(SHOWN + 50):
        ana.send(f"line {n}")
    beto.wait_for(f"ana: line {SHOWN + 49}", timeout=60)
    # Renders are spaced out in a burst, and the last one comes by itself:
    # carla's widget gets there with nobody waiting on her panel.
    deadline = time.monotonic() + 60
    while f"line {SHOWN + 49}<" not in carla._log.value and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"line {SHOWN + 49}<" in carla._log.value
    assert [m.text for m in beto.messages] == [f"line {n}" for n in range(SHOWN + 50)]
    assert f"line {SHOWN + 49}<" in beto._log.value
    assert ">line 0<" not in beto._log.value  # only the last SHOWN entries are rendered


def test_close_leaves_the_room_stops_the_receiver_and_closes_the_widgets(server):
    watcher = ChatPanel("watcher", *server.address)
    panel = ChatPanel("ana", *server.address)
    receiver = panel.client._receiver
    assert receiver.is_alive()
    panel.close()
    assert not receiver.is_alive()
    watcher.wait_for("* ana left")
    assert panel.widget.comm is None and panel._input.comm is None  # closed widgets
    panel.close()  # twice is fine
    watcher.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("chat-receiver-")]


def test_panels_make_no_warnings(server):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ana = ChatPanel("ana", *server.address)
        frontend_submit(ana)
        frontend_value(ana, "hola")
        ana.wait_for("ana: hola")
        ana.close()
    assert [str(w.message) for w in caught] == []


def test_colours_and_initials():
    assert colour_of("ana") == colour_of("ANA")  # the same member everywhere
    assert len({colour_of(n) for n in ("ana", "beto", "carla")}) == 3
    assert initials_of("ana") == "A"
    assert initials_of("ana maria") == "AM"
    assert initials_of("x_y") == "XY"
    assert initials_of("---") == "?"


# A room in one cell ----------------------------------------------------------------


def test_show_room_again_replaces_the_room_before():
    first = show_room(["ana", "beto"], display=False)
    try:
        first["ana"].send("hola")
        first["beto"].wait_for("ana: hola")
        old_port = first.port
        second = show_room(["carla"], engine="asyncio", display=False)
        assert not first.server.running
        assert all(p.state == "disconnected" for p in first.panels)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", old_port), timeout=5).close()
        assert second.server.running and second["carla"].state == "connected"
        assert room_module._shown["room"] is second
        with pytest.raises(KeyError, match="carla"):
            second["ana"]
        other = show_room(["dani"], key="another", display=False)
        assert second.server.running and other.server.running  # another key: both stay
    finally:
        for room in [first, *room_module._shown.values()]:
            room.stop()
        room_module._shown.clear()
    assert not second.server.running and not other.server.running


def test_a_room_with_its_server_console():
    room = show_room(["ana", "beto"], engine="asyncio", console=True, display=False)
    try:
        room.console.wait_for("beto joined")
        assert room.console.members == ["ana", "beto"]
        assert room.console.widget in room.widget.children
    finally:
        room.stop()
        room_module._shown.clear()
    assert room.console.widget.comm is None and not room.server.running


def test_a_room_needs_a_nick():
    with pytest.raises(ValueError, match="at least one nick"):
        show_room([], display=False)


# The bug stepper ------------------------------------------------------------------------


def test_the_stepper_reaches_each_crash_at_its_step_and_resets():
    stepper = BugStepper()
    try:
        for _round in range(2):  # the second round proves Reset
            assert stepper.status == {SERVER: "not started", CLIENT: "not started"}
            stepper.step()
            assert "Servidor esperando conexion en 127.0.0.1" in stepper.screen(SERVER)
            stepper.step()
            assert "Conexion establecida" in stepper.screen(SERVER)
            assert stepper.status[CLIENT] == "waiting for input"
            stepper.step()
            assert "Mensaje del cliente: hola, servidor" in stepper.screen(SERVER)
            assert stepper.status == {SERVER: "waiting for input", CLIENT: "running"}
            stepper.step()  # the server answers, closes, and dies at recv()
            assert stepper.status == {SERVER: "crashed", CLIENT: "waiting for input"}
            assert stepper.server.crash.error == CRASH
            assert "Respuesta del servidor: hola, cliente" in stepper.screen(CLIENT)
            assert f"<b class='chatlib-term-crash'>{CRASH}</b>" in stepper._screens[SERVER].value
            stepper.step()  # the client sends on the socket it closed
            assert stepper.status == {SERVER: "crashed", CLIENT: "crashed"}
            assert stepper.client.crash.error == CRASH
            assert stepper.finished and stepper._next.disabled
            assert stepper.problem == ""
            server, client = stepper.server, stepper.client
            stepper.reset()
            assert not server.running and not client.running
            assert stepper.state.startswith("ready")
    finally:
        stepper.close()


def test_a_traceback_that_arrives_in_pieces_still_has_its_last_line_in_red():
    from types import SimpleNamespace

    from chatlib.console import ConsoleEvent, parse_traceback
    from chatlib.widgets.stepper import render_console

    pieces = ["Traceback (most recent call last):\n", '  File "s.py", line 1, in <module>\n']
    pieces += ["    x()\n", "OSError: ", "[Errno 9] Bad file descriptor\n"]
    events = [
        ConsoleEvent(0.0, SERVER, "stdout", "Escribe: "),
        ConsoleEvent(0.0, SERVER, "typed", "a"),
    ]
    events += [ConsoleEvent(0.0, SERVER, "stderr", piece) for piece in pieces]
    console = SimpleNamespace(
        events=events,
        command="python servidor.py",
        crash=parse_traceback("".join(pieces)),
        running=False,
        returncode=1,
    )
    shown = render_console(SERVER, console, 5050)
    assert f"<b class='chatlib-term-crash'>{CRASH}</b>" in shown
    assert "(crashed)" in shown and "<b class='chatlib-term-typed'>a</b>" in shown


def test_a_new_stepper_stops_the_one_before_with_its_key():
    first = BugStepper()
    first.step()
    process = first.server
    assert process.running
    other = BugStepper(key="another")
    other.step()
    second = BugStepper()
    try:
        assert not process.running
        assert first._closed and first.widget.comm is None
        assert other.server.running  # another key: left alone
    finally:
        second.close()
        other.close()
    assert not other.server.running


# The server console -------------------------------------------------------------------


WAIT = 30.0  # seconds; only guards against a hang


def console_of(server, **options) -> ServerConsole:
    return ServerConsole(server, interval=0.05, **options)


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {WAIT} s for {what}"
        time.sleep(0.01)


def next_event(client: ChatClient, kind: str) -> dict:
    while (event := client.events.get(timeout=WAIT))["type"] != kind:
        assert event["type"] != "disconnected", event
    return event


def test_the_server_console_shows_joins_and_leaves(server):
    console = console_of(server)
    try:
        ana = ChatPanel("ana", *server.address)
        console.wait_for("ana joined")
        assert console.members == ["ana"]
        assert "ana" in console._members.value and "members (1)" in console._members.value
        ana.close()
        console.wait_for("ana left")
        assert console.members == []
        server.stop()
        console.wait_for("the server stopped")
        assert "stopped" in console._header.value
    finally:
        console.close()


def test_the_server_console_shows_what_is_said_and_the_errors_sent(server):
    console = console_of(server)
    ana = ChatClient(*server.address)
    impostor = ChatClient(*server.address)
    try:
        ana.connect("ana")
        ana.say("hola <b>a todos</b>")
        with pytest.raises(ChatError):
            impostor.connect("ANA")
        console.wait_for("error nick-taken")
        console.wait_for("ana: hola")
        lines = console.text().splitlines()
        said = next(line for line in lines if "ana: hola" in line)
        assert said.endswith("#1 ana: hola <b>a todos</b>")
        refused = next(line for line in lines if "nick-taken" in line)
        assert re.search(r"error nick-taken to connection \d+: 'ana' is already here", refused)
        assert console.members == ["ana"]  # the impostor never got in
        shown = console._log.value
        assert "hola &lt;b&gt;a todos&lt;/b&gt;" in shown and "<b>a todos" not in shown
        assert "chatlib-server-row chatlib-server-error'" in shown
        assert "chatlib-server-row chatlib-server-message'" in shown
    finally:
        impostor.close()
        ana.close()
        console.close()


def test_the_console_lists_who_was_in_before_it_started(server, panels):
    panels("ana", "beto")
    wait_until(lambda: server.stats()["members"] == 2, "two members")
    console = console_of(server)
    try:
        assert console.members == ["ana", "beto"]
        (carla,) = panels("carla")
        console.wait_for("carla joined")
        assert console.members == ["ana", "beto", "carla"]
    finally:
        console.close()


def test_the_console_keeps_the_last_events_only(server):
    console = console_of(server, max_events=5)
    ana = ChatClient(*server.address)
    try:
        ana.connect("ana")
        for n in range(30):
            ana.say(f"line {n}")
        console.wait_for("ana: line 29")
        assert [str(e).split(" ", 1)[1] for e in console.events] == [
            f"#{n} ana: line {n - 1}" for n in range(26, 31)
        ]
        assert console._log.value.count("chatlib-server-row") == 5
    finally:
        ana.close()
        console.close()


def test_when_the_server_stops_the_console_shows_who_was_told_and_stops_watching(server):
    console = console_of(server)
    ana = ChatClient(*server.address)
    ana.connect("ana")
    console.wait_for("ana joined")
    server.stop()
    try:
        console.wait_for("the server stopped")
        console.wait_for("ana left (server-shutdown)")
        assert "error server-shutdown to ana" in console.text()
        console._watcher.join(WAIT)  # nothing more will happen: it stops by itself
        assert not console._watcher.is_alive()
        assert console._observe not in server.room.observers
    finally:
        ana.close()
        console.close()


def test_closing_the_console_stops_listening_and_the_room_goes_on(server):
    console = console_of(server)
    assert console._observe in server.room.observers
    ana = ChatClient(*server.address)
    try:
        ana.connect("ana")
        console.wait_for("ana joined")
        console.close()
        assert console._observe not in server.room.observers
        assert not console._watcher.is_alive()
        shown = console.text()
        ana.say("nobody watches")
        assert next_event(ana, "message")["text"] == "nobody watches"  # the room goes on
        assert console.text() == shown and console._told.empty()
        assert console.widget.comm is None
        console.close()  # twice is harmless
    finally:
        ana.close()


def test_a_console_on_a_stopped_server_says_so():
    server = start_server()
    server.stop()
    console = console_of(server)
    try:
        assert "the server is not running" in console.text()
        assert console._observe not in server.room.observers
        assert "stopped" in console._header.value
    finally:
        console.close()
