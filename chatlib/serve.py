"""Start a chat server in the background: one call for the lessons, the widgets,
the tests and the command line.

    >>> from chatlib.serve import start_server
    >>> with start_server() as server:            # threads engine, a free port
    ...     print(server.engine, server.address[0])
    threads 127.0.0.1

``start_server`` returns once the server accepts connections, and the server
runs in threads of its own (the asyncio engine on an event loop in its own
thread), so a notebook cell can start one and go on.  ``stop()`` sends every
member ``error server-shutdown``, frees the port and joins every thread; it is
safe to call twice.  A notebook cell that starts a server can begin with
``stop_all()``, so that running the cell again stops the server the previous
run started instead of failing with "Address already in use".

``run_forever`` is what ``chatlib serve`` runs: it prints the ``listening on``
line and stops cleanly on Ctrl-C (SIGINT) or SIGTERM.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import signal
import sys
import threading
from typing import Any, TextIO

from chatlib.framing import DEFAULT_MAX_FRAME
from chatlib.room import (
    DEFAULT_HISTORY,
    DEFAULT_MAX_TEXT,
    DEFAULT_QUEUE_LIMIT,
    Authenticator,
    Room,
    Store,
)
from chatlib.server_threads import DEFAULT_GRACE, ThreadedServer

ENGINES = ("threads", "asyncio")
DEFAULT_HOST = "127.0.0.1"
_STOP_TIMEOUT = 60.0  # only a bug makes stop() wait this long

_running: set[ServerHandle] = set()
_running_lock = threading.Lock()


class ServerHandle:
    """A running server: ``.address``, ``.engine``, ``.room``, ``.stop()``."""

    def __init__(self, engine: str, server: Any, loop_thread: _LoopThread | None = None):
        self.engine = engine
        self.address: tuple[str, int] = server.address
        self.room: Room = server.room
        self._server = server
        self._loop_thread = loop_thread
        self._stop_lock = threading.Lock()
        self._stopped = False

    @property
    def running(self) -> bool:
        return not self._stopped

    def stop(self) -> None:
        """Send ``server-shutdown`` to every member, free the port, join the threads."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            try:
                if self._loop_thread is None:
                    self._server.stop()
                else:
                    self._loop_thread.run(self._server.aclose(), timeout=_STOP_TIMEOUT)
                    self._loop_thread.close()
            finally:
                with _running_lock:
                    _running.discard(self)

    def stats(self) -> dict[str, int]:
        """How many connections, members and queued payloads the room has now."""
        if self._loop_thread is not None and not self._stopped:
            return self._loop_thread.call(self._server.stats)
        return self._server.stats()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<chat server ({self.engine}) on {format_address(self.address)}, {state}>"


class _LoopThread:
    """An asyncio event loop running in a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="chat-asyncio", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coroutine: Any, timeout: float | None = None) -> Any:
        """Run ``coroutine`` on the loop and wait for its result here."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def call(self, function: Any) -> Any:
        """Call a plain function on the loop's thread and return what it returns."""
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def call_it() -> None:
            try:
                result.set_result(function())
            except BaseException as error:
                result.set_exception(error)

        self.loop.call_soon_threadsafe(call_it)
        return result.result(_STOP_TIMEOUT)

    def close(self) -> None:
        """Finish what is left on the loop, stop it, join its thread, close it."""
        self.run(_finish_loop(), timeout=_STOP_TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(_STOP_TIMEOUT)
        self.loop.close()


async def _finish_loop() -> None:
    # What asyncio.run() does on the way out: cancel stragglers (a connection
    # accepted just as the server stopped), then stop the helper threads.
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for _ in range(3):  # a closed transport closes its socket on a later turn of the loop
        await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()


def start_server(
    engine: str = "threads",
    host: str = DEFAULT_HOST,
    port: int = 0,
    *,
    ssl_context: Any = None,
    max_frame: int = DEFAULT_MAX_FRAME,
    max_text: int = DEFAULT_MAX_TEXT,
    queue_limit: int = DEFAULT_QUEUE_LIMIT,
    store: Store | None = None,
    authenticator: Authenticator | None = None,
    history_size: int = DEFAULT_HISTORY,
    grace: float = DEFAULT_GRACE,
) -> ServerHandle:
    """Start a broadcast chat server in the background and return its handle.

    ``port=0`` lets the OS pick a free port; ``handle.address`` says which.
    ``queue_limit`` is how many payloads may wait for one member before it is
    dropped as too slow; ``grace`` is how many seconds a closing connection
    gets to take its last payloads.  Raises ``OSError`` if it cannot listen
    (port taken, unknown host) and ``ValueError`` for an unknown engine.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    room = Room(
        max_text=max_text,
        queue_limit=queue_limit,
        max_payload=max_frame,
        history_size=history_size,
        store=store,
        authenticator=authenticator,
    )
    options = {"ssl_context": ssl_context, "max_frame": max_frame, "grace": grace}
    if engine == "threads":
        server = ThreadedServer(room, host, port, **options)
        server.start()
        handle = ServerHandle(engine, server)
    else:
        from chatlib.server_asyncio import AsyncioServer

        loop_thread = _LoopThread()
        try:
            server = loop_thread.run(AsyncioServer.create(room, host, port, **options))
        except BaseException:
            loop_thread.close()
            raise
        handle = ServerHandle(engine, server, loop_thread)
    with _running_lock:
        _running.add(handle)
    return handle


def running_servers() -> list[ServerHandle]:
    """Every server started here and not stopped yet."""
    with _running_lock:
        return list(_running)


def stop_all() -> int:
    """Stop every server started in this process; return how many there were."""
    servers = running_servers()
    for server in servers:
        server.stop()
    return len(servers)


atexit.register(stop_all)  # members hear server-shutdown even if nobody called stop()


def format_address(address: tuple[str, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run_forever(
    engine: str = "threads",
    host: str = DEFAULT_HOST,
    port: int = 0,
    *,
    out: TextIO | None = None,
    **options: Any,
) -> int:
    """Serve until SIGINT or SIGTERM, then stop cleanly and return 0 (for ``chatlib serve``).

    Call it from the main thread.  Raises ``OSError`` if it cannot listen.
    """
    out = out if out is not None else sys.stdout
    stop_requested = threading.Event()
    signals_seen: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        signals_seen.append(signum)
        stop_requested.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server = start_server(engine, host, port, **options)
        try:
            print(
                f"chat server ({engine} engine) listening on {format_address(server.address)}",
                file=out,
                flush=True,
            )
            # Short naps, not one long wait: the OS may hand the signal to any
            # of the server's threads, and Python runs our handler only when the
            # main thread next runs Python code.
            while not stop_requested.wait(0.25):
                pass
        finally:
            server.stop()
        name = signal.Signals(signals_seen[0]).name
        print(f"stopped on {name}: members were told server-shutdown", file=out, flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
