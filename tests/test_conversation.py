"""chatlib.conversation, lesson 02's fixed one-to-one chat, on real loopback sockets.

Both sides are scripted with ``ScriptedTerminal``; the server runs in a thread.
Every wait has a generous timeout that only guards against a hang.
"""

from __future__ import annotations

import re
import signal
import socket
import struct
import subprocess
import sys
import threading

import pytest

from chatlib import conversation
from chatlib.conversation import (
    ChatError,
    ScriptedTerminal,
    converse_as_client,
    converse_as_server,
    open_listener,
    problem_with,
    run_client,
    run_server,
)

HOST = "127.0.0.1"
HANG = 30  # seconds: long enough never to fire on a busy machine, short enough to fail


class Server:
    """``conversation.serve`` in a thread, with a scripted operator."""

    def __init__(self, typed, *, clients=1, port=0):
        self.terminal = ScriptedTerminal(typed)
        self.listener = open_listener(HOST, port)
        self.port = self.listener.getsockname()[1]
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(clients,), daemon=True)
        self.thread.start()

    def _run(self, clients):
        try:
            with self.listener:
                conversation.serve(
                    self.listener,
                    ask=self.terminal.ask,
                    show=self.terminal.show,
                    clients=clients,
                )
        except BaseException as error:  # reported by finish()
            self.error = error

    def finish(self) -> list[str]:
        self.thread.join(HANG)
        assert not self.thread.is_alive(), "the server did not finish: it hangs"
        assert self.error is None, f"the server raised {self.error!r}"
        return self.terminal.screen


def client(port, typed) -> list[str]:
    """Run ``run_client`` in a thread, so that a deadlock fails the test instead of hanging it."""
    terminal = ScriptedTerminal(typed)
    raised: list[BaseException] = []

    def talk():
        try:
            run_client(HOST, port, ask=terminal.ask, show=terminal.show)
        except BaseException as error:
            raised.append(error)

    thread = threading.Thread(target=talk, daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), f"the client hangs; its screen so far: {terminal.screen}"
    if raised:
        raise raised[0]
    return terminal.screen


def connected_pair():
    """A real TCP connection over loopback: (server side, client side)."""
    with socket.create_server((HOST, 0)) as listener:
        client_side = socket.create_connection(listener.getsockname(), timeout=HANG)
        server_side, _ = listener.accept()
    server_side.settimeout(HANG)
    return server_side, client_side


def reset(sock):
    """Close with an RST instead of a FIN: the peer sees 'connection reset'."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def connected_line(screen):
    """The server's 'HOST:PORT connected' line, with the client's port blanked."""
    return [re.sub(r":\d+ connected$", ":PORT connected", line) for line in screen]


class CountingSocket:
    """Passes recv/sendall through to a socket and counts the recv calls."""

    def __init__(self, sock):
        self.sock = sock
        self.recvs = 0

    def recv(self, size):
        self.recvs += 1
        return self.sock.recv(size)

    def sendall(self, data):
        self.sock.sendall(data)


# --- turns ------------------------------------------------------------------------------


def test_several_turns_in_one_conversation():
    server = Server(["hola, ¿qué tal?", "bien también", "¡adiós!"])
    client_screen = client(server.port, ["hola", "bien, ¿y tú?", "me voy", "/quit"])
    assert client_screen == [
        f"connected to {HOST}:{server.port}; /quit or Ctrl-D leaves",
        "you: hola",
        "server: hola, ¿qué tal?",
        "you: bien, ¿y tú?",
        "server: bien también",
        "you: me voy",
        "server: ¡adiós!",
        "you: /quit",
        "you left the conversation",
    ]
    assert connected_line(server.finish()) == [
        "waiting for a client",
        f"{HOST}:PORT connected",
        "client: hola",
        "your answer: hola, ¿qué tal?",
        "client: bien, ¿y tú?",
        "your answer: bien también",
        "client: me voy",
        "your answer: ¡adiós!",
        "the client left the conversation",
    ]


# --- the peer leaving: b"" ends the loop at once -----------------------------------------


def test_server_sees_the_client_leave_after_one_recv():
    server_side, client_side = connected_pair()
    client_side.close()
    counted = CountingSocket(server_side)
    terminal = ScriptedTerminal([])
    with server_side:
        keep_serving = converse_as_server(counted, terminal.ask, terminal.show)
    assert keep_serving is True
    assert counted.recvs == 1, "the loop read again after recv() returned b'': it spins"
    assert terminal.screen == ["the client left the conversation"]


def test_client_sees_the_server_leave_after_one_recv():
    server_side, client_side = connected_pair()
    server_side.close()
    counted = CountingSocket(client_side)
    terminal = ScriptedTerminal(["hola", "still there?"])
    with client_side:
        converse_as_client(counted, terminal.ask, terminal.show)
    assert counted.recvs == 1
    assert terminal.screen == ["you: hola", "the server left the conversation"]


def test_a_line_that_arrives_split_in_a_character_does_not_crash():
    # The limit this lesson keeps (lesson 03 lifts it): a cut character shows as "�".
    server_side, client_side = connected_pair()
    with server_side, client_side:
        client_side.sendall("ñ".encode()[:1])
        assert conversation.receive_text(server_side) == "\ufffd"


# --- the empty line ----------------------------------------------------------------------


def test_the_empty_line_is_refused_on_both_sides_and_nothing_freezes():
    server = Server(["", "ok"])
    client_screen = client(server.port, ["", "hola", "/quit"])
    refusal = f"(not sent: {problem_with('')})"
    assert "empty line sends no bytes" in refusal
    assert client_screen[1:] == [
        "you: ",
        refusal,
        "you: hola",
        "server: ok",
        "you: /quit",
        "you left the conversation",
    ]
    assert connected_line(server.finish())[2:] == [
        "client: hola",  # the first thing that arrived: the empty line never travelled
        "your answer: ",
        refusal,
        "your answer: ok",
        "the client left the conversation",
    ]


def test_a_line_longer_than_one_turn_is_refused_and_asked_again():
    too_long = "ñ" * 513  # 1026 bytes in UTF-8, though only 513 characters
    assert "1026 bytes" in problem_with(too_long)
    assert problem_with("ñ" * 512) is None
    assert problem_with(" ") is None  # a space is one byte: it travels
    server = Server(["ok"])
    client_screen = client(server.port, [too_long, "short", "/quit"])
    assert client_screen[2] == f"(not sent: {problem_with(too_long)})"
    assert client_screen[3:5] == ["you: short", "server: ok"]
    assert server.finish()[2] == "client: short"


# --- errors in one sentence --------------------------------------------------------------


def test_a_refused_connection_is_one_sentence():
    with socket.socket() as nobody:  # bound but not listening: connecting is refused
        nobody.bind((HOST, 0))
        port = nobody.getsockname()[1]
        with pytest.raises(ChatError) as raised:
            client(port, ["hola"])
    assert str(raised.value) == (
        f"could not connect to {HOST}:{port}: nobody is listening there (is the server running?)"
    )


def test_a_reset_while_the_client_waits_is_one_sentence():
    with socket.create_server((HOST, 0)) as listener:
        port = listener.getsockname()[1]

        def rude_server():
            conn, _ = listener.accept()
            conn.recv(1024)
            reset(conn)

        thread = threading.Thread(target=rude_server, daemon=True)
        thread.start()
        with pytest.raises(ChatError) as raised:
            client(port, ["hola"])
        thread.join(HANG)
    assert str(raised.value) == (
        f"the connection with {HOST}:{port} was reset: the other side vanished without closing"
    )


def test_a_client_that_resets_costs_the_server_one_line_and_it_serves_the_next():
    server = Server(["first answer", "second answer"], clients=2)
    with socket.create_connection((HOST, server.port), timeout=HANG) as rude:
        rude.sendall(b"hola")
        assert rude.recv(1024) == b"first answer"
        reset(rude)
    assert client(server.port, ["again", "/quit"])[2] == "server: second answer"
    screen = connected_line(server.finish())
    sentence = [line for line in screen if "was reset" in line]
    assert len(sentence) == 1 and "Errno" not in sentence[0]
    assert re.fullmatch(rf"the connection with {HOST}:\d+ was reset: .+", sentence[0])
    assert screen[screen.index(sentence[0]) + 1 :] == [
        "waiting for a client",
        f"{HOST}:PORT connected",
        "client: again",
        "your answer: second answer",
        "the client left the conversation",
    ]


def test_a_port_in_use_is_one_sentence():
    with socket.create_server((HOST, 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ChatError, match=rf"^{HOST}:{port} is already in use: "):
            open_listener(HOST, port)


# --- the server: restart at once, clients one after another -----------------------------


def test_the_server_restarts_at_once_on_the_same_port():
    # The operator leaves first, so the server closes first: its side of the
    # connection stays in TIME_WAIT, and that is what blocks a plain bind().
    first = Server(["/quit"])
    assert client(first.port, ["hola"])[-1] == "the server left the conversation"
    assert first.finish()[-1] == "you left the conversation"
    with socket.socket() as plain, pytest.raises(OSError) as in_use:
        plain.bind((HOST, first.port))
    assert in_use.value.errno == 98 or "in use" in str(in_use.value)  # the trap is real

    second = Server(["welcome back"], port=first.port)  # SO_REUSEADDR: binds at once
    assert second.port == first.port
    assert client(second.port, ["hola", "/quit"])[2] == "server: welcome back"
    second.finish()


def test_two_clients_are_served_one_after_another():
    server = Server(["hi, one", "hi, two"], clients=2)
    assert client(server.port, ["one", "/quit"])[2] == "server: hi, one"
    assert client(server.port, ["two"])[2] == "server: hi, two"  # this one ends with EOF
    screen = connected_line(server.finish())
    assert screen.count("waiting for a client") == 2
    assert screen.count(f"{HOST}:PORT connected") == 2
    assert [line for line in screen if line.startswith("client: ")] == [
        "client: one",
        "client: two",
    ]
    assert screen.count("the client left the conversation") == 2


def test_run_server_announces_the_real_port():
    terminal = ScriptedTerminal(["/quit"])
    thread = threading.Thread(
        target=run_server,
        args=(HOST, 0),
        kwargs=dict(ask=terminal.ask, show=terminal.show, clients=1),
        daemon=True,
    )
    thread.start()
    for _ in range(HANG * 100):  # wait for the announcement, without timing anything
        if terminal.screen:
            break
        threading.Event().wait(0.01)
    match = re.match(rf"listening on {HOST}:(\d+); ", terminal.screen[0])
    assert match and int(match.group(1)) != 0
    client(int(match.group(1)), ["hola"])
    thread.join(HANG)
    assert not thread.is_alive()


# --- ways out: /quit and the end of input ------------------------------------------------


@pytest.mark.parametrize("leaving", [["/quit"], [], ["  /quit  "]], ids=["quit", "eof", "spaced"])
def test_the_client_leaves_cleanly(leaving):
    server = Server(["ok"])
    screen = client(server.port, ["hola", *leaving])
    assert screen[-1] == "you left the conversation"
    assert screen[-2] == ("you: ^D" if not leaving else f"you: {leaving[0]}")
    assert server.finish()[-1] == "the client left the conversation"


@pytest.mark.parametrize("leaving", [["/quit"], []], ids=["quit", "eof"])
def test_the_operator_leaving_stops_the_server_and_the_client_is_told(leaving):
    server = Server(leaving, clients=None)  # would serve for ever if leaving did not stop it
    screen = client(server.port, ["hola", "anyone?"])
    assert screen[-2:] == ["you: hola", "the server left the conversation"]
    assert server.finish()[-1] == "you left the conversation"


# --- the program: python -m chatlib.conversation, and chatlib conversation --------------

# The two ways to start it: the module itself, and the sub-command of the chatlib command.
MODULE = ["-m", "chatlib.conversation"]
SUBCOMMAND = ["-m", "chatlib", "conversation"]


def program(*args, command=MODULE, **kwargs):
    return subprocess.Popen(
        [sys.executable, *command, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C must reach the child even if this test run ignores SIGINT.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kwargs,
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", [MODULE, SUBCOMMAND], ids=["module", "subcommand"])
def test_the_program_converses_and_stops_on_ctrl_c(command):
    server = program("server", "--port", "0", command=command)
    try:
        announced = server.stdout.readline()
        port = int(re.search(rf"listening on {HOST}:(\d+)", announced).group(1))
        server.stdin.write("hola, terminal\n")
        server.stdin.flush()
        client_run = program("client", "--port", str(port), command=command)
        out, err = client_run.communicate("hola\n/quit\n", timeout=HANG)
        assert client_run.returncode == 0, err
        assert "server: hola, terminal" in out and "you left the conversation" in out
        assert err == ""
        waiting = 0
        while waiting < 2:  # the second time, it has gone back to accept()
            line = server.stdout.readline()
            assert line, "the server stopped by itself"
            waiting += "waiting for a client" in line
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=HANG)
    finally:
        server.kill()
        server.wait()
    assert server.returncode == 0
    assert err.strip() == "stopped (Ctrl-C)"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", [MODULE, SUBCOMMAND], ids=["module", "subcommand"])
def test_the_program_says_refused_in_one_line_and_fails(command):
    with socket.socket() as nobody:
        nobody.bind((HOST, 0))
        port = nobody.getsockname()[1]
        run = program("client", "--port", str(port), command=command)
        out, err = run.communicate("", timeout=HANG)
    assert run.returncode == 1
    assert err.splitlines() == [
        f"error: could not connect to {HOST}:{port}: nobody is listening there "
        "(is the server running?)"
    ]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", [MODULE, SUBCOMMAND], ids=["module", "subcommand"])
def test_the_program_refuses_a_bad_port_in_one_line(command):
    run = program("server", "--port", "70000", command=command)
    out, err = run.communicate("", timeout=HANG)
    assert run.returncode == 2
    assert "'70000' is not a port (0 to 65535)" in err and "Traceback" not in err


def test_the_chatlib_command_parses_conversation_beside_the_other_commands():
    from chatlib import cli

    parser = cli.build_parser()
    args = parser.parse_args(["conversation", "client", "--host", HOST, "--port", "5051"])
    assert (args.side, args.host, args.port, args.run) == ("client", HOST, 5051, conversation.run)
    assert parser.parse_args(["conversation", "server"]).port == conversation.DEFAULT_PORT
    assert parser.parse_args(["original", "server"]).run is cli.run_original
    assert parser.parse_args(["serve"]).run is cli.run_serve
