"""``chatlib serve`` as a program (PROTOCOL.md section 3), run as a user would run it."""

from __future__ import annotations

import queue
import re
import signal
import socket
import subprocess
import sys
import threading

import pytest
from rawclient import WAIT, RawClient

from chatlib import cli

LISTENING = re.compile(r"listening on (\S+):(\d+)")


class ServeProcess:
    """``python -m chatlib serve ARGS`` with its output read line by line."""

    def __init__(self, *args: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chatlib", "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next_line(self) -> str | None:
        try:
            return self.lines.get(timeout=WAIT)
        except queue.Empty:
            pytest.fail(f"chatlib serve printed nothing within {WAIT} s")

    def address(self) -> tuple[str, int]:
        line = self.next_line()
        assert line is not None, f"no listening line; stderr: {self.process.stderr.read()}"
        match = LISTENING.search(line)
        assert match, line
        return match.group(1), int(match.group(2))

    def finish(self) -> tuple[int, str]:
        """Wait for the exit; return the exit code and everything on stderr."""
        try:
            code = self.process.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"chatlib serve did not exit within {WAIT} s")
        self._reader.join(WAIT)
        stderr = self.process.stderr.read()
        self.process.stdout.close()
        self.process.stderr.close()
        return code, stderr

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.finish()


@pytest.fixture
def serve_process():
    started: list[ServeProcess] = []

    def start(*args: str) -> ServeProcess:
        process = ServeProcess(*args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.mark.parametrize("engine", ["threads", "asyncio"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_server_cleanly(serve_process, engine, signum):
    server = serve_process("--port", "0", "--engine", engine)
    host, port = server.address()
    assert host == "127.0.0.1" and port > 0
    ana, stranger = RawClient((host, port)), RawClient((host, port))
    try:
        ana.join("ana")
        ana.send(type="say", text="¿me oyes?")
        assert ana.recv()["text"] == "¿me oyes?"
        server.process.send_signal(signum)
        for client in (ana, stranger):
            client.expect_error("server-shutdown")
            client.expect_end()
    finally:
        ana.close()
        stranger.close()
    code, stderr = server.finish()
    assert code == 0
    assert "Traceback" not in stderr
    # The port is free again at once.
    with socket.create_server((host, port)):
        pass


def test_a_taken_port_is_one_clear_line(serve_process):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = serve_process("--port", str(port))
        code, stderr = server.finish()
    assert code != 0
    assert server.next_line() is None  # nothing on stdout
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert f"127.0.0.1:{port}" in lines[0] and "already in use" in lines[0]


def test_an_address_not_on_this_machine_is_one_clear_line(serve_process):
    # ::2 is a literal, so nothing is looked up and nothing is sent anywhere;
    # this machine simply does not have it.
    server = serve_process("--host", "::2", "--port", "0")
    code, stderr = server.finish()
    assert code != 0
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("chatlib serve: cannot listen on [::2]:0")


def test_a_port_out_of_range_is_refused_by_the_parser(serve_process):
    server = serve_process("--port", "70000")
    code, stderr = server.finish()
    assert code == 2
    assert "Traceback" not in stderr
    assert "70000 is out of range (0 to 65535)" in stderr


def test_listening_on_every_interface_is_said_on_stderr(monkeypatch, capsys):
    # Checked without really opening a port to the network: run_forever is replaced.
    calls = []
    monkeypatch.setattr(cli.serve, "run_forever", lambda *a, **k: calls.append((a, k)) or 0)
    assert cli.main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 0
    assert "every network interface" in capsys.readouterr().err
    assert calls[0][0] == ("threads", "0.0.0.0", 0)
    assert cli.main(["serve", "--port", "0"]) == 0
    assert capsys.readouterr().err == ""


def test_the_options_reach_the_server(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.serve, "run_forever", lambda *a, **k: calls.append((a, k)) or 0)
    argv = ["serve", "--engine", "asyncio", "--max-frame", "1000", "--max-text", "50"]
    cli.main([*argv, "--queue-limit", "7", "--history", "0"])
    assert calls == [
        (
            ("asyncio", "127.0.0.1", cli.terminal.DEFAULT_PORT),
            {"max_frame": 1000, "max_text": 50, "queue_limit": 7, "history_size": 0},
        )
    ]


def test_the_options_are_applied(serve_process):
    server = serve_process("--port", "0", "--max-text", "5", "--engine", "asyncio")
    address = server.address()
    client = RawClient(address)
    try:
        client.join("ana")
        client.send(type="say", text="123456")
        assert "limit is 5" in client.expect_error("too-long")["detail"]
    finally:
        client.close()
    server.process.send_signal(signal.SIGTERM)
    assert server.finish()[0] == 0


def test_help_documents_the_options():
    result = subprocess.run(
        [sys.executable, "-m", "chatlib", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 0
    for option in ("--host", "--port", "--engine", "--max-frame", "--max-text", "--queue-limit"):
        assert option in result.stdout
