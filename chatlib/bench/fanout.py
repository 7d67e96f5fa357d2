"""Fan-out: how fast a server hands each chat line to every member of the room.

    python -m chatlib.bench fanout            # 10, 100, 500 members, best of 3: a few minutes
    python -m chatlib.bench fanout --quick    # 10 and 100 members, one short run each

A chat server's real work is fan-out: one ``say`` in, one ``message`` out to
every member.  With N members, a line costs N deliveries, so the figure that
matters is **deliveries per second**.  Three servers are measured, each in a
process of its own so the load below does not share its GIL:

- ``threads``   chatlib's thread-per-connection engine (``chatlib.server_threads``)
- ``asyncio``   chatlib's asyncio engine (``chatlib.server_asyncio``)
- ``baseline``  a minimal asyncio relay written below: join, welcome, and each
  say written to every member.  Nothing else: no nick rules, no history, no
  bounded queues, no protection from slow members.  It is the price of the
  protocol alone; the difference with an engine is the price of its rules.

The load runs in this process: N members on asyncio ``Protocol`` objects
(cheaper than streams), of which up to ``SENDERS`` take turns to speak.  Each
line's text is the time it was sent, so a member that receives it knows how
long delivery took.  Parsing every delivery would make this process the
bottleneck, so members only count frames, and an evenly spread sample of
about ``LATENCY_SAMPLE`` (the first and last to join among them) also reads
the time in the text.

Each run, per server and room size:

1. start the server, read its RSS, join N members, wait until everyone has
   received a few warm-up lines (so the flood of ``joined`` notices is over),
   read the RSS again: their difference over N is the **memory per member**
   (RSS growth of the server process, so allocator granularity makes it noisy
   for small rooms; the 500-member figure is the one to trust);
2. **idle latency**: one line at a time, each sent when the previous one has
   reached every member: the time from ``say`` to each member's delivery;
3. **throughput**: for a few seconds, keep ``--window`` lines in flight (a line
   is in flight until every member has it), count deliveries per second, and
   record the latency under that load.  The window bounds what any member's
   queue holds, so no server drops anyone for being slow;
4. CPU time of the server, of this process and of the rest of the machine
   during phase 3, as shares of one core: a server near 100% is the
   bottleneck, as it should be; if this process is near 100% too, the load
   limits the figure as well; other programs' CPU means a disturbed run.  The
   server's CPU time per delivery is the figure other programs disturb least.

Every room size and server is run ``--repeat`` times and the run with the most
deliveries per second is kept, which filters out some of that disturbance.

Figures, machine and command are recorded in docs/benchmarks/fanout.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from chatlib.framing import encode_frame, read_frame

HOST = "127.0.0.1"
ENGINES = ("threads", "asyncio", "baseline")
SENDERS = 10  # members that speak; all N listen
LATENCY_SAMPLE = 20  # members that parse what they receive
JOIN_CONCURRENCY = 50  # connections being opened at once (stays under listen backlogs)
GOAL = 0.8  # the asyncio engine should reach this share of the baseline


class BenchFailure(Exception):
    """A run could not be measured (a server that failed to start, a member dropped)."""


# The baseline relay (runs in the server process) ------------------------------


async def baseline_relay(host: str, port: int, stop: asyncio.Event) -> None:
    """The protocol at its cheapest: join -> welcome, say -> message to everyone."""
    members: dict[asyncio.StreamWriter, str] = {}
    last_id = 0

    async def member(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal last_id
        try:
            while (payload := await read_frame(reader)) is not None:
                request = json.loads(payload)
                if request["type"] == "join" and writer not in members:
                    members[writer] = request["nick"]
                    welcome = {
                        "type": "welcome",
                        "nick": request["nick"],
                        "users": list(members.values()),
                        "history": [],
                    }
                    writer.write(encode_frame(json.dumps(welcome).encode()))
                elif request["type"] == "say" and writer in members:
                    last_id += 1
                    message = {
                        "type": "message",
                        "id": last_id,
                        "nick": members[writer],
                        "text": request["text"],
                        "ts": time.time(),
                    }
                    frame = encode_frame(json.dumps(message, separators=(",", ":")).encode())
                    for other in members:
                        other.write(frame)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            members.pop(writer, None)
            writer.close()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.add(writer)
        try:
            await member(reader, writer)
        finally:
            connections.discard(writer)

    connections: set[asyncio.StreamWriter] = set()
    server = await asyncio.start_server(tracked, host, port)
    address = server.sockets[0].getsockname()
    print(f"listening on {address[0]}:{address[1]}", flush=True)
    await stop.wait()
    server.close()
    for writer in list(connections):
        writer.close()  # each handler then reads the end of its stream and returns
    while connections:
        await asyncio.sleep(0.01)
    await server.wait_closed()


def serve(engine: str) -> None:
    """The server process: start ``engine``, print its address, stop at end of stdin."""
    _raise_file_limit()
    if engine == "baseline":

        async def run() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            def wait_for_end_of_stdin() -> None:  # a thread: works on every OS
                sys.stdin.read()
                loop.call_soon_threadsafe(stop.set)

            threading.Thread(target=wait_for_end_of_stdin, daemon=True).start()
            await baseline_relay(HOST, 0, stop)

        asyncio.run(run())
        return
    from chatlib.serve import start_server

    handle = start_server(engine, HOST, 0)
    host, port = handle.address[:2]
    print(f"listening on {host}:{port}", flush=True)
    sys.stdin.read()
    handle.stop()


# The load (runs in this process) ----------------------------------------------


class Member(asyncio.Protocol):
    """One member of the room, counting (and, if ``sampled``, timing) deliveries."""

    def __init__(self, room: Room, index: int, sampled: bool):
        self.room = room
        self.index = index
        self.sampled = sampled
        self.received = 0  # message frames so far
        self.welcomed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()

    def connection_made(self, transport) -> None:
        self.transport = transport
        nick = f"m{self.index:04d}"
        transport.write(encode_frame(json.dumps({"type": "join", "nick": nick}).encode()))

    def data_received(self, data: bytes) -> None:
        # A tight frame splitter: this process must stay cheaper than the server.
        buffer = self._buffer
        buffer += data
        start, end = 0, len(buffer)
        while end - start >= 4:
            size = int.from_bytes(buffer[start : start + 4], "big")
            if end - start - 4 < size:
                break
            payload = bytes(buffer[start + 4 : start + 4 + size])
            start += 4 + size
            if not self.welcomed.done():
                self._before_welcome(payload)
            elif b'"message"' in payload:  # a JSON string equal to "message": the type
                self.room.delivered(self, payload)
            elif b'"error"' in payload:
                self.room.fail(f"member {self.index} got an error: {payload.decode()}")
        del buffer[:start]

    def _before_welcome(self, payload: bytes) -> None:
        event = json.loads(payload)
        if event["type"] == "welcome":
            self.welcomed.set_result(event)
        elif event["type"] == "error":
            self.welcomed.set_exception(BenchFailure(f"join refused: {event}"))

    def connection_lost(self, exc) -> None:
        if not self.room.stopping:
            self.room.fail(f"member {self.index} lost its connection ({exc or 'closed'})")
        if not self.welcomed.done():
            self.welcomed.set_exception(BenchFailure("closed before the welcome"))


@dataclass
class Room:
    """The load's view of the room: what was sent, what every member has."""

    size: int
    sent: int = 0  # lines said
    completed: int = 0  # lines every member has received
    deliveries: int = 0
    recording: bool = False
    latencies_ns: list[int] = field(default_factory=list)
    arrivals: list[int] = field(default_factory=list)  # arrivals[k]: members that have line k
    stopping: bool = False
    failure: str | None = None
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    def say(self, member: Member) -> None:
        say = b'{"type": "say", "text": "@%d@"}' % time.perf_counter_ns()
        member.transport.write(encode_frame(say))
        self.sent += 1

    def delivered(self, member: Member, payload: bytes) -> None:
        self.deliveries += 1
        # Every member receives the lines in the same order (PROTOCOL.md), so a
        # member's k-th line is everyone's k-th line: no need to parse to count.
        k = member.received
        member.received += 1
        if k == len(self.arrivals):
            self.arrivals.append(1)
        else:
            self.arrivals[k] += 1
        if self.arrivals[k] == self.size:
            self.completed += 1
            self.progress.set()
        if member.sampled and self.recording:
            # The text is "@<send time>@"; nothing else in a message holds an "@".
            start = payload.index(b"@") + 1
            sent_ns = int(payload[start : payload.index(b"@", start)])
            self.latencies_ns.append(time.perf_counter_ns() - sent_ns)

    def fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why
        self.progress.set()

    async def wait_for_progress(self, timeout: float) -> None:
        self.progress.clear()
        try:
            await asyncio.wait_for(self.progress.wait(), timeout)
        except TimeoutError:
            raise BenchFailure(
                f"no line completed in {timeout:g} s ({self.sent - self.completed} in flight)"
            ) from None
        if self.failure:
            raise BenchFailure(self.failure)

    async def drain(self, timeout: float) -> None:
        while self.completed < self.sent:
            await self.wait_for_progress(timeout)


@dataclass
class Settings:
    sizes: list[int]
    seconds: float  # length of the throughput phase
    idle_lines: int  # lines sent one at a time in the latency phase
    window: int  # lines in flight during the throughput phase
    timeout: float = 30.0  # any single wait; only guards against hangs


def server_command(engine: str) -> list[str]:
    """The command that runs the server under test in a process of its own."""
    return [sys.executable, "-c", f"from chatlib.bench.fanout import serve; serve({engine!r})"]


async def measure(engine: str, size: int, settings: Settings) -> dict:
    loop = asyncio.get_running_loop()
    server = await asyncio.create_subprocess_exec(
        *server_command(engine), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    room = Room(size)
    members: list[Member] = []
    try:
        try:
            line = await asyncio.wait_for(server.stdout.readline(), settings.timeout)
        except TimeoutError:
            line = b""
        if b"listening on " not in line:
            raise BenchFailure(f"the {engine} server did not start (said {line!r})")
        port = int(line.rsplit(b":", 1)[1])
        await asyncio.sleep(0.2)  # let the server settle before its first RSS reading
        rss_empty, _ = process_stats(server.pid)

        # 1. Join everyone, then warm up: when a line has reached every
        # member, so has everything the server sent before it.
        step = max(1, size // LATENCY_SAMPLE)
        gate = asyncio.Semaphore(JOIN_CONCURRENCY)

        async def join(index: int) -> None:
            async with gate:
                _, member = await loop.create_connection(
                    lambda: Member(room, index, sampled=index % step == 0 or index == size - 1),
                    HOST,
                    port,
                )
                members.append(member)
                await asyncio.wait_for(member.welcomed, settings.timeout)

        await asyncio.gather(*(join(i) for i in range(size)))
        members.sort(key=lambda m: m.index)
        senders = members[:SENDERS]
        for i in range(3):
            room.say(senders[i % len(senders)])
            await room.drain(settings.timeout)
        rss_joined, _ = process_stats(server.pid)

        # 2. Idle latency: one line at a time.
        room.recording = True
        for i in range(settings.idle_lines):
            room.say(senders[i % len(senders)])
            await room.drain(settings.timeout)
        idle = sorted(room.latencies_ns)

        # 3. Throughput: keep the window full for a few seconds.
        room.latencies_ns = []
        _, server_cpu_start = process_stats(server.pid)
        own_cpu_start = time.process_time()
        busy_start = machine_busy()
        start, deliveries_start = time.perf_counter(), room.deliveries
        deadline = start + settings.seconds
        turn = 0
        while time.perf_counter() < deadline:
            while room.sent - room.completed < settings.window:
                room.say(senders[turn % len(senders)])
                turn += 1
            await room.wait_for_progress(settings.timeout)
        elapsed = time.perf_counter() - start
        deliveries = room.deliveries - deliveries_start
        _, server_cpu_end = process_stats(server.pid)
        own_cpu = time.process_time() - own_cpu_start
        busy_end = machine_busy()
        room.recording = False
        loaded = sorted(room.latencies_ns)
        await room.drain(settings.timeout)
        rss_loaded, _ = process_stats(server.pid)
    finally:
        room.stopping = True
        await stop_server(server)
        for member in members:
            member.transport.close()

    def per_member(rss: int | None) -> float | None:
        return None if rss is None or rss_empty is None else (rss - rss_empty) / size / 1024

    server_cpu = other_cpu = None
    if server_cpu_start is not None and server_cpu_end is not None:
        server_cpu = (server_cpu_end - server_cpu_start) / elapsed
        if busy_start is not None and busy_end is not None:
            # What the rest of the machine used meanwhile: other programs disturb
            # the figures, so say how much.
            other = (busy_end - busy_start) / elapsed - server_cpu - own_cpu / elapsed
            other_cpu = max(0.0, other)
    return {
        "engine": engine,
        "members": size,
        "deliveries_per_s": deliveries / elapsed,
        "idle_p50_ms": percentile(idle, 0.50) / 1e6,
        "idle_p99_ms": percentile(idle, 0.99) / 1e6,
        "loaded_p50_ms": percentile(loaded, 0.50) / 1e6,
        "loaded_p99_ms": percentile(loaded, 0.99) / 1e6,
        "kib_per_member": per_member(rss_joined),
        "kib_per_member_loaded": per_member(rss_loaded),
        "server_cpu": server_cpu,
        # CPU time per delivery: less disturbed by other programs than deliveries/s.
        "server_us_per_delivery": None
        if server_cpu is None or not deliveries
        else server_cpu * elapsed / deliveries * 1e6,
        "load_cpu": own_cpu / elapsed,
        "other_cpu": other_cpu,
    }


async def stop_server(server: asyncio.subprocess.Process) -> None:
    if server.returncode is None:
        server.stdin.close()  # end of stdin: the server stops itself
        try:
            await asyncio.wait_for(server.wait(), 15)
        except TimeoutError:
            server.kill()
            await server.wait()


def percentile(ordered: list[int], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def process_stats(pid: int) -> tuple[int | None, float | None]:
    """RSS in bytes and CPU seconds (user + system) of a process, if this OS tells."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        process = psutil.Process(pid)
        times = process.cpu_times()
        return process.memory_info().rss, times.user + times.system
    try:  # Linux without psutil
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / ticks
        rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        return rss, cpu
    except (OSError, IndexError, ValueError):
        return None, None


def machine_busy() -> float | None:
    """CPU seconds every core of the machine has spent busy so far, if this OS tells."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        times = psutil.cpu_times()  # (guest time is already inside user time)
        busy = ("user", "nice", "system", "irq", "softirq", "steal")
        return sum(getattr(times, name, 0.0) for name in busy)
    try:  # Linux without psutil: user nice system idle iowait irq softirq steal ...
        with open("/proc/stat") as stat:
            ticks = [int(n) for n in stat.readline().split()[1:]]
        return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _raise_file_limit() -> None:
    # 500 members are 500 sockets; macOS allows 256 open files by default.
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


# Reporting ----------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}"
    )


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None or value != value else format(value, spec)


def table(results: list[dict]) -> str:
    lines = [
        "| server | members | deliveries/s | idle p50 / p99 ms | loaded p50 / p99 ms "
        "| KiB/member (joined / after load) | server CPU µs/delivery "
        "| server CPU | load CPU | others' CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "failure" in r:
            lines.append(f"| {r['engine']} | {r['members']} | failed: {r['failure']} |||||||")
            continue
        lines.append(
            f"| {r['engine']} | {r['members']} | {r['deliveries_per_s']:,.0f} "
            f"| {_fmt(r['idle_p50_ms'], '.2f')} / {_fmt(r['idle_p99_ms'], '.2f')} "
            f"| {_fmt(r['loaded_p50_ms'], '.2f')} / {_fmt(r['loaded_p99_ms'], '.2f')} "
            f"| {_fmt(r['kib_per_member'], '.1f')} / {_fmt(r['kib_per_member_loaded'], '.1f')} "
            f"| {_fmt(r['server_us_per_delivery'], '.1f')} "
            f"| {_fmt(r['server_cpu'], '.0%')} | {_fmt(r['load_cpu'], '.0%')} "
            f"| {_fmt(r['other_cpu'], '.0%')} |"
        )
    return "\n".join(lines)


def verdict(results: list[dict]) -> list[str]:
    """The goal, per room size: the asyncio engine at 80% of the baseline or more."""
    found = {(r["engine"], r["members"]): r for r in results if "failure" not in r}
    lines = []
    for size in sorted({r["members"] for r in results}):
        engine, baseline = found.get(("asyncio", size)), found.get(("baseline", size))
        if engine and baseline:
            share = engine["deliveries_per_s"] / baseline["deliveries_per_s"]
            mark = "meets" if share >= GOAL else "MISSES"
            cost = ""
            if engine["server_us_per_delivery"] and baseline["server_us_per_delivery"]:
                cost = (
                    f"; server CPU per delivery {engine['server_us_per_delivery']:.1f} µs "
                    f"against {baseline['server_us_per_delivery']:.1f} µs"
                )
            lines.append(
                f"{size} members: asyncio engine at {share:.0%} of the baseline's "
                f"deliveries/s ({mark} the {GOAL:.0%} goal){cost}"
            )
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chatlib.bench fanout",
        description="Deliveries per second, latency and memory per member of the chat servers.",
    )
    parser.add_argument("--quick", action="store_true", help="10 and 100 members, short phases")
    parser.add_argument(
        "--members", help="room sizes, comma-separated (default 10,100,500; quick: 10,100)"
    )
    parser.add_argument(
        "--engines",
        default=",".join(ENGINES),
        help="servers to measure, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--seconds", type=float, help="length of the throughput phase (default 3; quick: 1)"
    )
    parser.add_argument(
        "--window", type=int, default=32, help="lines in flight under load (default: %(default)s)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help="runs per server and size; the one with the most deliveries/s is kept "
        "(default 3; quick: 1)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        print(f"unknown engine(s): {', '.join(sorted(unknown))}; choose from {', '.join(ENGINES)}")
        return 2
    default_sizes = "10,100" if args.quick else "10,100,500"
    try:
        sizes = [int(s) for s in (args.members or default_sizes).split(",")]
    except ValueError:
        print(f"--members takes numbers separated by commas, not {args.members!r}")
        return 2
    repeat = args.repeat or (1 if args.quick else 3)
    if any(s < 1 for s in sizes) or args.window < 1 or repeat < 1:
        print("room sizes, the window and the repeat count must be at least 1")
        return 2
    settings = Settings(
        sizes=sizes,
        seconds=args.seconds or (1.0 if args.quick else 3.0),
        idle_lines=30 if args.quick else 100,
        window=args.window,
    )
    _raise_file_limit()
    print(f"fan-out benchmark on {machine()}")
    print(
        f"window {settings.window} lines, throughput phase {settings.seconds:g} s, "
        f"best of {repeat}\n"
    )
    results = []
    for size in settings.sizes:
        for engine in engines:
            print(f"  {engine} with {size} members:", end="", flush=True)
            best = None
            for _ in range(repeat):
                try:
                    result = asyncio.run(measure(engine, size, settings))
                    print(f" {result['deliveries_per_s']:,.0f}", end="", flush=True)
                except BenchFailure as failure:
                    result = {"engine": engine, "members": size, "failure": str(failure)}
                    print(f" failed ({failure})", end="", flush=True)
                if (
                    best is None
                    or "failure" in best
                    or (
                        "failure" not in result
                        and result["deliveries_per_s"] > best["deliveries_per_s"]
                    )
                ):
                    best = result
            print(" deliveries/s")
            results.append(best)
    print()
    print(table(results))
    for line in verdict(results):
        print(line)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": machine(), "results": results}, out, indent=2)
    return 1 if any("failure" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
