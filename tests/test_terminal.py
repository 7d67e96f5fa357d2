"""``chatlib chat``: its line formatting, and the real program driven through pipes
(plain mode) and, where tmux is installed, through a real terminal."""

from __future__ import annotations

import queue
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from chatlib.client import ChatClient
from chatlib.serve import start_server
from chatlib.terminal import clean, format_event, parse_input, welcome_lines

WAIT = 15  # seconds; only guards against a hang
LINE = re.compile(r"^\d\d:\d\d (?P<nick>[^:]+): (?P<text>.*)$")


# The pure parts -------------------------------------------------------------------


def test_parse_input():
    assert parse_input("hola") == ("say", "hola")
    assert parse_input("  ") == ("none", "")
    assert parse_input("/who") == ("who", "")
    assert parse_input("/QUIT now") == ("quit", "")
    assert parse_input("/help") == ("help", "")
    assert parse_input("/nope x") == ("unknown", "/nope")
    assert parse_input("//who is that") == ("say", "/who is that")


def test_format_event():
    message = {"type": "message", "id": 1, "nick": "ana", "text": "hola ñ", "ts": 0.0}
    assert LINE.match(format_event(message)).group("nick", "text") == ("ana", "hola ñ")
    assert format_event({"type": "joined", "nick": "bob"}) == "-- bob joined"
    assert format_event({"type": "left", "nick": "bob"}) == "-- bob left"
    assert format_event({"type": "users", "users": ["ana", "bob"]}) == "-- here: ana, bob"
    assert format_event({"type": "error", "code": "too-long", "detail": "too long"}) == (
        "!! too long"
    )
    assert format_event({"type": "error", "code": "server-shutdown", "detail": "bye"}) is None
    assert format_event({"type": "something-new"}) is None
    welcome = {"type": "welcome", "nick": "ana", "users": ["ana"], "history": [message]}
    lines = welcome_lines(welcome)
    assert LINE.match(lines[0]) and lines[-1] == "-- you are ana; here: ana"


def test_control_characters_are_shown_not_obeyed():
    assert clean("\x1b[2J\rgotcha\n") == "\\x1b[2J\\rgotcha\\n"
    assert clean("hola ñ, ¿qué tal? 😀") == "hola ñ, ¿qué tal? 😀"
    line = format_event({"type": "message", "nick": "ana", "text": "\x1b[31mred", "ts": 0.0})
    assert "\x1b" not in line and line.endswith("\\x1b[31mred")


# The program through pipes --------------------------------------------------------


@pytest.fixture
def server():
    with start_server("threads", "127.0.0.1", 0) as handle:
        yield handle


@pytest.fixture
def ana(server):
    client = ChatClient(*server.address[:2])
    client.connect("ana")
    yield client
    client.close()


class Chat:
    """``chatlib chat`` as a child process, its stdout read line by line."""

    def __init__(self, port: int, nick: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chatlib", "chat", "--nick", nick, "--port", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def expect(self, predicate) -> str:
        """The next stdout line for which ``predicate`` is true."""
        deadline = time.monotonic() + WAIT
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                pytest.fail(f"the program ended; it printed {self.seen}")
            self.seen.append(line)
            if predicate(line):
                return line
        pytest.fail(f"not printed within {WAIT} s; it printed {self.seen}")

    def finish(self) -> tuple[int, str]:
        """Close stdin, wait for the exit; the exit code and stderr."""
        if not self.process.stdin.closed:
            self.process.stdin.close()
        code = self.process.wait(WAIT)
        return code, self.process.stderr.read()


def next_message(client: ChatClient, nick: str) -> dict:
    while True:
        event = client.events.get(timeout=WAIT)
        if event["type"] == "message" and event["nick"] == nick:
            return event


def test_lines_are_sent_and_received(server, ana):
    chat = Chat(server.address[1], "bot")
    chat.expect(lambda line: line == "-- you are bot; here: ana, bot")
    ana.say("hola desde ana")
    line = chat.expect(lambda line: line.endswith("hola desde ana"))
    assert LINE.match(line).group("nick", "text") == ("ana", "hola desde ana")

    chat.send("hola desde bot, ñandú")
    assert next_message(ana, "bot")["text"] == "hola desde bot, ñandú"
    chat.expect(lambda line: line.endswith("bot: hola desde bot, ñandú"))  # the echo

    chat.send("/who")
    chat.expect(lambda line: line == "-- here: ana, bot")
    chat.send("//slash")
    assert next_message(ana, "bot")["text"] == "/slash"

    code, errors = chat.finish()
    assert code == 0
    assert errors == ""


def test_end_of_input_waits_for_the_room_to_echo_every_line(server, ana):
    port = server.address[1]
    script = "uno\ndos\n\ntres\n"
    done = subprocess.run(
        [sys.executable, "-m", "chatlib", "chat", "--nick", "bot", "--port", str(port)],
        input=script,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stderr
    echoed = [
        LINE.match(line).group("text") for line in done.stdout.splitlines() if LINE.match(line)
    ]
    assert echoed == ["uno", "dos", "tres"]  # the empty line is not sent
    assert [next_message(ana, "bot")["text"] for _ in range(3)] == ["uno", "dos", "tres"]


def test_a_refused_line_is_shown_and_the_rest_goes_on(server):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatlib",
            "chat",
            "--nick",
            "bot",
            "--port",
            str(server.address[1]),
        ],
        input="x" * 4001 + "\nok\n",
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stderr
    assert any(line.startswith("!! ") for line in done.stdout.splitlines())  # the refusal
    assert done.stdout.splitlines()[-1].endswith("bot: ok")


def test_quit_leaves_and_the_room_is_told(server, ana):
    chat = Chat(server.address[1], "bot")
    chat.expect(lambda line: line.startswith("-- you are bot"))
    chat.send("/quit")
    code, errors = chat.finish()
    assert (code, errors) == (0, "")
    while (event := ana.events.get(timeout=WAIT))["type"] != "left":
        pass
    assert event["nick"] == "bot"


def test_the_server_shutting_down_is_one_line_and_a_failure(server):
    chat = Chat(server.address[1], "bot")
    chat.expect(lambda line: line.startswith("-- you are bot"))
    server.stop()
    code = chat.process.wait(WAIT)
    errors = chat.process.stderr.read()
    assert code == 1
    assert errors == "chatlib chat: the server shut down\n"
    while (line := chat.lines.get(timeout=WAIT)) is not None:  # the rest of stdout
        chat.seen.append(line)
    assert not any("shutting down" in line for line in chat.seen)  # said once, not twice


def run_chat(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chatlib", "chat", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


def test_a_refused_connection_is_one_line_without_a_traceback():
    with socket.socket() as holder:  # bound, not listening: connections are refused
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        done = run_chat("--nick", "ana", "--port", str(port))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"chatlib chat: cannot connect to 127.0.0.1:{port}: "
        "connection refused (is the server running?)\n"
    )


def test_a_taken_nick_is_one_line(server, ana):
    done = run_chat("--nick", "ANA", "--port", str(server.address[1]))
    assert done.returncode == 1
    assert done.stderr == (
        "chatlib chat: the nick 'ANA' is taken in this room; choose another with --nick\n"
    )
    assert "Traceback" not in done.stdout + done.stderr


def test_a_bad_nick_is_one_line(server):
    done = run_chat("--nick", "x" * 40, "--port", str(server.address[1]))
    assert done.returncode == 1
    assert done.stderr.startswith("chatlib chat: the server refused the nick")
    assert done.stderr.count("\n") == 1


# The interactive mode, in a real terminal -----------------------------------------


class Tmux:
    """A tmux server of our own (its own socket), with one window running ``command``."""

    def __init__(self, command: str, name: str):
        self.socket = f"chatlib-test-{name}-{time.monotonic_ns()}"
        self.run("new-session", "-d", "-x", "100", "-y", "20", command)

    def run(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=WAIT
        )
        return done.stdout

    def screen(self) -> list[str]:
        return self.run("capture-pane", "-p").rstrip("\n").split("\n")

    def wait_for(self, predicate) -> list[str]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(0.05)
        pytest.fail("the terminal never showed it; it shows:\n" + "\n".join(self.screen()))

    def close(self) -> None:
        self.run("kill-server")


def chat_in_shell(port: int) -> str:
    """A shell command: the chat as tina, then its exit code, kept on screen."""
    python = shlex.quote(sys.executable)
    return f"{python} -m chatlib chat --nick tina --port {port}; echo EXIT=$?; sleep 60"


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_incoming_lines_never_garble_the_line_being_typed(server, ana):
    port = server.address[1]
    tmux = Tmux(chat_in_shell(port), "typing")
    try:
        tmux.wait_for(lambda screen: "tina>" in screen)  # the prompt is up: keys go to it
        tmux.run("send-keys", "-l", "half of my li")
        tmux.wait_for(lambda screen: "tina> half of my li" in screen)
        for n in range(1, 4):
            ana.say(f"incoming {n}")

        def settled(screen: list[str]) -> bool:
            # The last line is in, and the prompt is drawn again below it (in
            # between, for a moment, prompt_toolkit has erased it to print).
            lines = [line for line in screen if line.strip()]
            return any(line.endswith("incoming 3") for line in lines) and lines[-1].startswith(
                "tina>"
            )

        lines = [line for line in tmux.wait_for(settled) if line.strip()]
        # The lines arrived above the prompt, in order; the typing is intact below.
        incoming = [line for line in lines if LINE.match(line)]
        assert [LINE.match(line).group("text") for line in incoming] == [
            "incoming 1",
            "incoming 2",
            "incoming 3",
        ]
        assert lines[-1] == "tina> half of my li"

        tmux.run("send-keys", "-l", "ne")
        tmux.run("send-keys", "Enter")
        assert next_message(ana, "tina")["text"] == "half of my line"
        tmux.wait_for(lambda screen: any(line.endswith("tina: half of my line") for line in screen))

        tmux.run("send-keys", "-l", "/who")
        tmux.run("send-keys", "Enter")
        tmux.wait_for(lambda screen: "-- here: ana, tina" in screen)

        tmux.run("send-keys", "C-d")
        screen = tmux.wait_for(lambda screen: any(line.startswith("EXIT=") for line in screen))
        assert "EXIT=0" in screen
        assert not any("Traceback" in line for line in screen)
    finally:
        tmux.close()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_interactive_client_ends_cleanly_when_the_server_stops(server):
    port = server.address[1]
    tmux = Tmux(
        chat_in_shell(port),
        "shutdown",
    )
    try:
        tmux.wait_for(lambda screen: "tina>" in screen)
        tmux.run("send-keys", "-l", "never sent")
        server.stop()
        screen = tmux.wait_for(lambda screen: any(line.startswith("EXIT=") for line in screen))
        assert "EXIT=1" in screen
        assert "chatlib chat: the server shut down" in screen
        assert not any("Traceback" in line for line in screen)
    finally:
        tmux.close()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_ctrl_c_at_the_prompt_leaves_cleanly(server, ana):
    port = server.address[1]
    tmux = Tmux(
        chat_in_shell(port),
        "ctrl-c",
    )
    try:
        tmux.wait_for(lambda screen: "tina>" in screen)
        tmux.run("send-keys", "-l", "half typed")
        tmux.run("send-keys", "C-c")
        screen = tmux.wait_for(lambda screen: any(line.startswith("EXIT=") for line in screen))
        assert "EXIT=0" in screen
        assert not any("Traceback" in line for line in screen)
        while (event := ana.events.get(timeout=WAIT))["type"] != "left":
            pass
        assert event["nick"] == "tina"
    finally:
        tmux.close()
