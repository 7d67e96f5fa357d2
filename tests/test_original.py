"""Lesson 01's ground: the seed's scripts, the console that runs them, the diagram.

(a) chatlib/original/ differs from the seed's copy in docs/seed/ in the address lines only;
(b) run through the real command line, the scripts do exactly what lesson 01 says;
(c) chatlib.console and chatlib.sequence, and lesson 01's helper built on them.

Ports come from the operating system: never the seed's 5000, nor the demo's 5050.
"""

from __future__ import annotations

import difflib
import os
import random
import re
import sys
import textwrap
import threading
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import psutil
import pytest

from chatlib import console as console_module
from chatlib import original
from chatlib.console import Console, ConsoleEvent, parse_traceback, render
from chatlib.lesson01 import edited_copy, free_port, listing, run_original_exchange
from chatlib.proxy import TO_CLIENT, TO_SERVER, WireEvent
from chatlib.sequence import sequence_diagram

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "docs" / "seed"
EBADF = "OSError: [Errno 9] Bad file descriptor"
SERVER_FAILS_AT = "mensaje_recibido = conexion.recv(1024)"
CLIENT_FAILS_AT = "cliente_socket.sendall(mensaje.encode())"
GUARD = 60  # seconds; only ever reached if something hangs


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """Whatever a test starts, it stops: no child process outlives it."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    alive = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"


def port_for_test() -> int:
    port = free_port()
    assert port not in (5000, 5050)
    return port


def write_script(tmp_path: Path, source: str, name: str = "script.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


# (a) The originals are the seed but for the address -------------------------------------


@pytest.mark.parametrize("name", ["servidor.py", "cliente.py"])
def test_original_differs_from_the_seed_only_in_the_address_lines(name):
    seed = (SEED / name).read_text(encoding="utf-8").splitlines()
    ours = (original.HERE / name).read_text(encoding="utf-8").splitlines()
    removed, added = [], []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=seed, b=ours).get_opcodes():
        if tag != "equal":
            removed += seed[i1:i2]
            added += ours[j1:j2]
    assert removed == ["servidor = '192.168.1.110'", "puerto_servidor = 5000"]  # the seed's
    assert len(added) == 3, added
    assert added[0].startswith("import sys")
    assert added[1].startswith("servidor = sys.argv[1]") and "'127.0.0.1'" in added[1]
    assert added[2].startswith("puerto_servidor = int(sys.argv[2])")


def test_the_seed_copy_is_the_seed():
    """docs/seed holds the scripts as the seed printed them: LAN address, typo and all."""
    server = (SEED / "servidor.py").read_text(encoding="utf-8")
    client = (SEED / "cliente.py").read_text(encoding="utf-8")
    assert "servidor = '192.168.1.110'" in server and "servidor = '192.168.1.110'" in client  # seed
    assert 'input("Escribe tur respuesta: ")' in server
    assert server.rstrip().endswith("    conexion.close()")
    assert client.rstrip().endswith("    cliente_socket.close()")
    compile(server, "servidor.py", "exec")
    compile(client, "cliente.py", "exec")


# (b) Through the real command line: one exchange, then Errno 9 on both sides --------------


def cli(*args: str, typing: list[str]) -> Console:
    return Console("-m", "chatlib", "original", *args, typing=typing)


def test_the_cli_runs_the_originals_into_the_bad_file_descriptor():
    port = str(port_for_test())
    with cli("server", "--port", port, typing=["hola, cliente"]) as server:
        assert server.wait_for("Servidor esperando conexion en 127.0.0.1 " + port, GUARD)
        with cli("client", "--port", port, typing=["hola, servidor", "otra vez"]) as client:
            assert client.wait(GUARD) == 1
            assert server.wait(GUARD) == 1

    # The first exchange gets through, both ways.
    assert "Mensaje del cliente: hola, servidor\n" in server.stdout
    assert "Respuesta del servidor: hola, cliente\n" in client.stdout

    # Then each dies of its own close(): the server at once, at its next recv...
    assert server.stderr.rstrip().endswith(EBADF)
    assert (server.crash.script, server.crash.source) == ("servidor.py", SERVER_FAILS_AT)
    assert server.crash.line == listing_line(original.SERVER_SCRIPT, SERVER_FAILS_AT)
    # ...the client once its user has typed a second message, at sendall.
    assert client.stderr.rstrip().endswith(EBADF)
    assert (client.crash.script, client.crash.source) == ("cliente.py", CLIENT_FAILS_AT)
    assert client.crash.line == listing_line(original.CLIENT_SCRIPT, CLIENT_FAILS_AT)
    typed = [e.text for e in client.events if e.kind == "typed"]
    assert typed == ["hola, servidor", "otra vez"]
    assert client.screen().endswith("Escribe lo que quieres enviar: otra vez\n" + client.stderr)

    # The server never asked for a second reply: it died before its next prompt.
    assert server.stdout.count("Escribe tur respuesta: ") == 1


def listing_line(script: Path, source: str) -> int:
    for number, line in enumerate(script.read_text().splitlines(), 1):
        if line.strip() == source:
            return number
    raise AssertionError(f"{source!r} not in {script.name}")


def test_the_client_without_a_server_is_refused():
    with Console(original.CLIENT_SCRIPT, "127.0.0.1", str(port_for_test())) as client:
        assert client.wait(GUARD) == 1
    assert client.crash.exception == "ConnectionRefusedError"
    assert client.crash.source == "cliente_socket.connect((servidor, puerto_servidor))"


# (c) The console ----------------------------------------------------------------------


ASKS_TWICE = """
    name = input("Nombre: ")
    print(f"Hola, {name}")
    colour = input("Color: ")
    print(f"{name} likes {colour}")
"""


def test_scripted_typing_answers_each_prompt_and_the_screen_shows_it(tmp_path):
    script = write_script(tmp_path, ASKS_TWICE)
    with Console(script, typing=["ana", "azul"]) as console:
        assert console.wait(GUARD) == 0
    assert console.screen() == "Nombre: ana\nHola, ana\nColor: azul\nana likes azul\n"
    assert console.stdout == "Nombre: Hola, ana\nColor: ana likes azul\n"
    assert console.lines_left == 0
    kinds = [e.kind for e in console.events]
    assert kinds[0] == "start" and kinds[-1] == "exit"
    times = [e.t for e in console.events]
    assert times == sorted(times)
    assert console.events[0].text == "python script.py"


def test_a_typed_line_is_recorded_after_its_prompt_and_before_the_reaction(tmp_path):
    script = write_script(tmp_path, ASKS_TWICE)
    with Console(script, typing=["bea", "rojo"]) as console:
        console.wait(GUARD)
    events = console.events
    first_typed = next(i for i, e in enumerate(events) if e.kind == "typed")
    before = "".join(e.text for e in events[:first_typed] if e.kind == "stdout")
    after = "".join(e.text for e in events[first_typed:] if e.kind == "stdout")
    assert before == "Nombre: "
    assert after.startswith("Hola, bea")


def test_manual_typing_waits_for_the_prompt(tmp_path):
    script = write_script(tmp_path, ASKS_TWICE)
    seen: list[ConsoleEvent] = []
    threads = set()

    def on_event(event):
        seen.append(event)
        threads.add(threading.current_thread().name)

    with Console(script, on_event=on_event) as console:
        console.type("carla", timeout=GUARD)  # waits for "Nombre: " itself
        assert console.wait_for("Hola, carla", GUARD)
        assert console.wait_for(lambda c: c.is_waiting_for_input, GUARD)
        assert console.prompt == "Color: "
        console.type("verde", timeout=GUARD)
        assert console.wait(GUARD) == 0
        assert not console.is_waiting_for_input and console.prompt is None
    assert "Nombre: carla\nHola, carla\nColor: verde\n" in console.screen()
    assert seen == console.events  # every event, in order
    assert threading.current_thread().name in threads  # the typed ones: from this thread
    assert any(name.startswith("console script.py") for name in threads)  # output: readers


def test_type_refuses_when_nothing_asks_and_when_the_script_ended(tmp_path):
    busy = write_script(tmp_path, "import time\nprint('working...')\ntime.sleep(60)\n")
    with Console(busy) as console:
        assert console.wait_for("working...", GUARD)
        assert not console.is_waiting_for_input
        with pytest.raises(TimeoutError, match="asked for no input"):
            console.type("hello", timeout=0.3)
    done = write_script(tmp_path, "print('bye')\n", "done.py")
    with Console(done) as console:
        console.wait(GUARD)
        with pytest.raises(RuntimeError, match="has ended"):
            console.type("hello")
        with pytest.raises(ValueError, match="one line at a time"):
            console.type("two\nlines")


def test_a_line_that_only_looks_like_a_prompt_is_not_answered(tmp_path):
    """print("Mensaje: " + "") writes 'Mensaje: ' and its newline apart."""
    script = write_script(
        tmp_path,
        """
        import sys, time
        sys.stdout.write("Mensaje: "); sys.stdout.flush()
        time.sleep(0.01)
        print()
        input("Respuesta: ")
        """,
    )
    with Console(script, typing=["sí"], settle=1.0) as console:
        assert console.wait(GUARD) == 0
    assert console.screen() == "Mensaje: \nRespuesta: sí\n"


def test_output_split_inside_a_character_is_decoded_whole(tmp_path):
    script = write_script(
        tmp_path,
        """
        import sys, time
        sys.stdout.buffer.write("año".encode()[:2]); sys.stdout.flush()
        time.sleep(0.2)
        sys.stdout.buffer.write("año".encode()[2:] + b"\\n"); sys.stdout.flush()
        """,
    )
    with Console(script) as console:
        console.wait(GUARD)
    assert console.stdout == "año\n"


def test_stop_kills_the_script_and_what_it_started_and_is_idempotent(tmp_path):
    script = write_script(
        tmp_path,
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(child.pid, flush=True)
        time.sleep(60)
        """,
    )
    console = Console(script)
    assert console.wait_for(lambda c: c.stdout.endswith("\n"), GUARD)
    grandchild = int(console.stdout)
    pid = console._proc.pid
    console.stop()
    console.stop()  # twice is fine
    assert not console.running
    assert console.returncode is not None and console.returncode != 0
    assert console.events[-1].kind == "exit" and console.events[-1].text == "stopped"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    if os.name == "posix":
        assert _gone(grandchild), "the script's own child outlived stop()"


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + GUARD
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


def test_stop_all_stops_every_running_console(tmp_path):
    script = write_script(tmp_path, "import time\ntime.sleep(60)\n")
    consoles = [Console(script), Console(script)]
    console_module.stop_all()
    assert all(not c.running for c in consoles)
    assert not [c for c in console_module._LIVE if c in consoles]


def test_a_failing_callback_is_reported_and_reading_goes_on(tmp_path):
    script = write_script(tmp_path, "print('one')\nprint('two')\n")
    reported = []
    hook, sys.unraisablehook = sys.unraisablehook, reported.append
    try:
        with Console(script, on_event=lambda event: 1 / 0) as console:
            assert console.wait(GUARD) == 0
    finally:
        sys.unraisablehook = hook
    assert console.stdout == "one\ntwo\n"
    assert reported and all(r.exc_type is ZeroDivisionError for r in reported)


def test_render_puts_typing_after_its_prompt():
    events = [
        ConsoleEvent(1.0, "x.py", "stdout", "Escribe: "),
        ConsoleEvent(2.0, "x.py", "typed", "hola"),
        ConsoleEvent(3.0, "x.py", "stderr", "Traceback...\n"),
    ]
    assert render(events) == "Escribe: hola\nTraceback...\n"


PY311_TRACEBACK = """\
Traceback (most recent call last):
  File "/home/ana/curso/servidor.py", line 18, in <module>
    mensaje_recibido = conexion.recv(1024)
                       ^^^^^^^^^^^^^^^^^^^
OSError: [Errno 9] Bad file descriptor
"""

CHAINED_TRACEBACK = """\
Traceback (most recent call last):
  File "a.py", line 2, in <module>
    f()
  File "a.py", line 1, in f
    def f(): raise KeyError("k")
             ^^^^^^^^^^^^^^^^^^^
KeyError: 'k'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "a.py", line 4, in <module>
    raise ValueError("second")
ValueError: second
"""


def test_parse_traceback():
    crash = parse_traceback("Mensaje del cliente: hola\n" + PY311_TRACEBACK)
    assert crash.error == EBADF
    assert (crash.script, crash.line, crash.source) == ("servidor.py", 18, SERVER_FAILS_AT)
    assert crash.exception == "OSError"
    last = parse_traceback(CHAINED_TRACEBACK)
    assert (last.line, last.source, last.error) == (
        4,
        'raise ValueError("second")',
        "ValueError: second",
    )
    assert parse_traceback("no traceback here\n") is None


# (c) The sequence diagram --------------------------------------------------------------


def made_up_trace(message: bytes, reply: bytes):
    """A trace written by hand, with times out of order: the diagram must sort them."""
    client = [
        ConsoleEvent(0.9, "cliente.py", "start", "python cliente.py 127.0.0.1 1"),
        ConsoleEvent(1.0, "cliente.py", "stdout", "Escribe lo que quieres enviar: "),
        ConsoleEvent(1.1, "cliente.py", "typed", message.decode()),
        ConsoleEvent(1.6, "cliente.py", "stdout", f"Respuesta del servidor: {reply.decode()}\n"),
        ConsoleEvent(1.8, "cliente.py", "stderr", PY311_TRACEBACK.replace("servidor", "cliente")),
        ConsoleEvent(1.9, "cliente.py", "exit", "", 1),
    ]
    server = [
        ConsoleEvent(0.1, "servidor.py", "start", "python servidor.py 127.0.0.1 1"),
        ConsoleEvent(0.2, "servidor.py", "stdout", "Servidor esperando conexion en 127.0.0.1 1\n"),
        ConsoleEvent(1.3, "servidor.py", "stdout", f"Mensaje del cliente: {message.decode()}\n"),
        ConsoleEvent(1.4, "servidor.py", "typed", reply.decode()),
        ConsoleEvent(1.55, "servidor.py", "stderr", PY311_TRACEBACK),
        ConsoleEvent(1.56, "servidor.py", "exit", "", 1),
    ]
    wire = [
        WireEvent(0.95, 1, TO_SERVER, "connect"),
        WireEvent(1.2, 1, TO_SERVER, "data", message),
        WireEvent(1.5, 1, TO_CLIENT, "data", reply),
        WireEvent(1.52, 1, TO_CLIENT, "close"),
    ]
    random.Random(1).shuffle(wire)
    return client, server, wire


def test_the_diagram_is_drawn_from_the_events():
    diagram = sequence_diagram(*made_up_trace(b"adios", b"hasta luego"))
    kinds = [(s.kind, s.where) for s in diagram.steps]
    assert kinds == [
        ("print", "server"),
        ("connect", "client"),
        ("type", "client"),
        ("data", "client"),
        ("print", "server"),
        ("type", "server"),
        ("data", "server"),
        ("fin", "server"),
        ("crash", "server"),
        ("print", "client"),
        ("crash", "client"),
    ]
    text = str(diagram)
    assert "cliente.py -> servidor.py  b'adios'  (5 bytes)" in text
    assert "servidor.py -> cliente.py  b'hasta luego'  (11 bytes)" in text
    assert "servidor.py -> cliente.py  FIN" in text
    assert "✗ " + EBADF in text
    assert "at line 18 of servidor.py: " + SERVER_FAILS_AT in text
    svg = diagram._repr_svg_()
    ElementTree.fromstring(svg)  # well-formed
    assert "b&apos;adios&apos;" in svg or "b'adios'" in svg
    assert "cliente.py" in svg and "servidor.py" in svg

    other = sequence_diagram(*made_up_trace(b"otra cosa", b"vale"))
    assert "otra cosa" in other.svg and "adios" not in other.svg


def test_a_crash_is_drawn_after_what_its_script_sent():
    """The proxy may notice the reply a moment after the terminal shows the traceback."""
    client, server, wire = made_up_trace(b"hola", b"que tal")
    server = [
        ConsoleEvent(e.t if e.kind != "stderr" else 1.45, e.console, e.kind, e.text, e.returncode)
        for e in server
    ]
    steps = sequence_diagram(client, server, wire).steps
    order = [(s.kind, s.where) for s in steps]
    assert order.index(("crash", "server")) > order.index(("data", "server"))
    assert order.index(("crash", "server")) > order.index(("fin", "server"))
    # and nothing else moved: the client still prints the reply after the arrow
    assert order.index(("print", "client")) > order.index(("data", "server"))


def test_the_diagram_escapes_what_it_shows():
    client, server, wire = made_up_trace(b"<b>&</b>", b"ok")
    svg = sequence_diagram(client, server, wire).svg
    ElementTree.fromstring(svg)
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in svg


def test_a_diagram_without_a_wire_still_shows_both_scripts():
    client, server, _ = made_up_trace(b"hola", b"que tal")
    diagram = sequence_diagram(client, server, [])
    assert not [s for s in diagram.steps if s.is_arrow]
    assert "wire (not recorded)" in diagram.svg
    assert sequence_diagram().text() == "(nothing was recorded)"


# (c) Lesson 01's run of the two scripts ------------------------------------------------


def test_run_original_exchange_shows_the_bug_and_can_run_again():
    threads_before = threading.active_count()
    for message, reply in [("hola, servidor", "hola, cliente"), ("¿qué tal?", "bien, ¿y tú?")]:
        run = run_original_exchange([message, "otra"], [reply], timeout=GUARD)
        assert not run.timed_out
        assert f"Mensaje del cliente: {message}\n" in run.server.stdout
        assert f"Respuesta del servidor: {reply}\n" in run.client.stdout
        assert (run.server.crash.source, run.server.crash.error) == (SERVER_FAILS_AT, EBADF)
        assert (run.client.crash.source, run.client.crash.error) == (CLIENT_FAILS_AT, EBADF)
        data = [(e.direction, e.data) for e in run.wire if e.kind == "data"]
        assert data == [(TO_SERVER, message.encode()), (TO_CLIENT, reply.encode())]
        assert (TO_CLIENT, "close") in [(e.direction, e.kind) for e in run.wire]

        diagram = run.diagram()
        assert repr(reply.encode()) in str(diagram)
        assert f"{len(reply.encode())} bytes" in str(diagram)
        assert [s.where for s in diagram.steps if s.kind == "crash"] in (
            ["server", "client"],
            ["client", "server"],
        )
        assert "$ python servidor.py 127.0.0.1 " in repr(run.terminals())
        assert "<pre" in run.terminals()._repr_html_()
    assert _threads_settle_to(threads_before)


def _threads_settle_to(count: int) -> bool:
    deadline = time.monotonic() + GUARD
    while threading.active_count() > count and time.monotonic() < deadline:
        time.sleep(0.05)
    return threading.active_count() <= count


def test_without_the_clients_close_the_server_still_dies_at_recv():
    copy = edited_copy(original.CLIENT_SCRIPT, "cliente_socket.close()")
    assert copy.name == "cliente.py" and "close()" not in copy.read_text()
    run = run_original_exchange(["uno", "dos"], ["vale"], client_script=copy, timeout=GUARD)
    assert (run.server.crash.source, run.server.crash.error) == (SERVER_FAILS_AT, EBADF)
    assert run.client.crash is None  # it was left waiting for a third line, and stopped
    assert run.client.events[-1].text == "stopped"


def test_without_the_servers_close_the_client_still_dies_at_sendall():
    copy = edited_copy(original.SERVER_SCRIPT, "conexion.close()")
    run = run_original_exchange(["uno", "dos"], ["vale"], server_script=copy, timeout=GUARD)
    assert (run.client.crash.source, run.client.crash.error) == (CLIENT_FAILS_AT, EBADF)
    assert run.server.crash is None
    # The client's close() reached the server as end of stream: recv() returned b"".
    assert "Escribe tur respuesta: vale\nMensaje del cliente: \n" in run.server.screen()


def test_edited_copy_says_kindly_when_the_line_is_not_there():
    with pytest.raises(ValueError, match=re.escape("servidor.py has no line that reads 'close()'")):
        edited_copy(original.SERVER_SCRIPT, "close()")


def test_a_taken_port_is_one_clear_error():
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="did not start listening .*Address already in use"):
            run_original_exchange(["x"], ["y"], port=port, timeout=GUARD)


def test_listing_numbers_lines_as_tracebacks_do():
    numbered = listing(original.SERVER_SCRIPT).splitlines()
    assert numbered[17] == " 18      " + SERVER_FAILS_AT
