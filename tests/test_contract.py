"""The contract of PROTOCOL.md section 2, checked against both engines over real sockets.

The client (tests/rawclient.py) is written from PROTOCOL.md alone (socket,
struct, json) and imports nothing from chatlib, so these tests also show that
a client written from the document can talk to either engine.
"""

from __future__ import annotations

import gc
import os
import socket
import ssl
import struct
import threading
import time

import pytest
import trustme
from rawclient import WAIT, RawClient

from chatlib.serve import start_server

ENGINES = ["threads", "asyncio"]


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting after {WAIT} s for {what}")
        time.sleep(0.01)


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


@pytest.fixture
def start(engine):
    """start(**options) -> a running server of this test's engine, stopped afterwards."""
    handles = []

    def start_one(**options):
        handle = start_server(engine, "127.0.0.1", 0, **options)
        handles.append(handle)
        return handle

    yield start_one
    for handle in handles:
        handle.stop()


@pytest.fixture
def server(start):
    return start()


@pytest.fixture
def connect(server):
    """connect(**options) -> a RawClient to this test's server, closed afterwards."""
    clients = []

    def connect_one(address=None, **options):
        client = RawClient(address or server.address, **options)
        clients.append(client)
        return client

    yield connect_one
    for client in clients:
        client.close()


# Joining and talking ---------------------------------------------------------------


def test_join_welcome_joined_who(server, connect):
    ana = connect()
    assert ana.join("ana") == {"type": "welcome", "nick": "ana", "users": ["ana"], "history": []}
    ben = connect()
    assert ben.join("ben")["users"] == ["ana", "ben"]
    assert ana.recv() == {"type": "joined", "nick": "ben"}
    assert ben.who() == ["ana", "ben"]


def test_every_member_gets_every_message_in_one_order(server, connect):
    senders = 4
    lines = 50
    members = [connect() for _ in range(senders)]
    for n, member in enumerate(members):
        member.join(f"m{n}")
    for member in members:  # skip the joined announcements
        while len(member.who()) < senders:
            pass
    received: list[list[dict]] = [[] for _ in members]

    def read_all(n: int) -> None:
        while len(received[n]) < senders * lines:
            received[n].append(members[n].recv_type("message"))

    def send_all(n: int) -> None:
        for line in range(lines):
            members[n].send(type="say", text=f"m{n} {line}")

    readers = [threading.Thread(target=read_all, args=(n,)) for n in range(senders)]
    writers = [threading.Thread(target=send_all, args=(n,)) for n in range(senders)]
    for thread in readers + writers:
        thread.start()
    for thread in readers + writers:
        thread.join(WAIT)
    assert all(len(r) == senders * lines for r in received)

    # One order, the same for every member, the senders included.
    first = [(m["id"], m["nick"], m["text"], m["ts"]) for m in received[0]]
    for other in received[1:]:
        assert [(m["id"], m["nick"], m["text"], m["ts"]) for m in other] == first
    ids = [m["id"] for m in received[0]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    times = [m["ts"] for m in received[0]]
    assert times == sorted(times)
    # Each sender's lines in the order it sent them.
    for n in range(senders):
        mine = [m["text"] for m in received[0] if m["nick"] == f"m{n}"]
        assert mine == [f"m{n} {line}" for line in range(lines)]


def test_nothing_is_lost_for_a_member_that_keeps_reading(server, connect):
    ana, ben = connect(), connect()
    ana.join("ana")
    ben.join("ben")
    ana.recv_type("joined")
    count = 3000
    texts = []

    def read() -> None:
        while len(texts) < count:
            texts.append(ben.recv_type("message")["text"])

    reader = threading.Thread(target=read)
    reader.start()
    ahead = 200  # well under the queue limit, so keeping up never depends on timing
    deadline = time.monotonic() + WAIT
    for n in range(count):  # no waiting for each echo: up to `ahead` lines in flight
        while n - len(texts) >= ahead and time.monotonic() < deadline:
            time.sleep(0.001)
        ana.send(type="say", text=f"line {n} ñ")
    reader.join(WAIT)
    assert texts == [f"line {n} ñ" for n in range(count)]


def test_a_late_member_sees_recent_history(server, connect):
    ana = connect()
    ana.join("ana")
    for n in range(3):
        ana.send(type="say", text=str(n))
        ana.recv_type("message")
    history = connect().join("late")["history"]
    assert [(m["type"], m["nick"], m["text"]) for m in history] == [
        ("message", "ana", "0"),
        ("message", "ana", "1"),
        ("message", "ana", "2"),
    ]


# Refusals that keep the connection open -------------------------------------------------


def test_a_taken_nick_keeps_the_connection_open(server, connect):
    connect().join("Ana")
    ben = connect()
    ben.send(type="join", nick="aNA")
    assert "'Ana'" in ben.expect_error("nick-taken")["detail"]
    assert ben.join("ben")["users"] == ["Ana", "ben"]


@pytest.mark.parametrize("nick", ["", "x" * 33, "two\nlines", "\x1b[31mred"])
def test_a_bad_nick_keeps_the_connection_open(server, connect, nick):
    client = connect()
    client.send(type="join", nick=nick)
    client.expect_error("bad-nick")
    assert client.join("x" * 32)["nick"] == "x" * 32


@pytest.mark.parametrize("joined", [False, True], ids=["not joined", "joined"])
def test_a_bad_payload_gets_bad_message_joined_or_not(server, connect, joined):
    client = connect()
    if joined:
        client.join("ana")
    bad_payloads = [
        b"\xc3\x28",  # not UTF-8
        "¿hola?".encode(),  # not JSON
        b"[1, 2, 3]",
        b'{"no": "type"}',
        b'{"type": "shout", "text": "hi"}',
        b'{"type": "say", "text": 42}',
        b"",  # an empty frame
    ]
    for payload in bad_payloads:
        client.send_payload(payload)
        client.expect_error("bad-message")
    if joined:
        assert client.who() == ["ana"]
    else:
        assert client.join("ana")["users"] == ["ana"]


def test_before_join_only_join_is_allowed(server, connect):
    client = connect()
    for kind in ("say", "who", "leave"):
        client.send(type=kind, text="hi")
        client.expect_error("not-joined")
    assert client.join("ana")["nick"] == "ana"


def test_a_text_over_the_limit_is_too_long(start, connect):
    server = start(max_text=10)
    client = connect(server.address)
    client.join("ana")
    client.send(type="say", text="x" * 11)
    assert "limit is 10" in client.expect_error("too-long")["detail"]
    client.send(type="say", text="ñ" * 10)
    assert client.recv()["text"] == "ñ" * 10


def test_the_default_text_limit_is_4000_characters(server, connect):
    client = connect()
    client.join("ana")
    client.send(type="say", text="x" * 4001)
    client.expect_error("too-long")
    client.send(type="say", text="x" * 4000)
    assert client.recv()["text"] == "x" * 4000


def test_an_unknown_field_is_ignored(server, connect):
    client = connect()
    client.join("ana", colour="red")
    client.send(type="say", text="hi", mood="happy")
    assert client.recv()["text"] == "hi"


# Framing errors close the connection --------------------------------------------------


@pytest.mark.parametrize("send_payload", [False, True], ids=["header only", "whole payload"])
def test_a_frame_over_the_limit_is_refused_and_the_connection_closed(start, connect, send_payload):
    server = start(max_frame=1000)
    ana, big = connect(server.address), connect(server.address)
    ana.join("ana")
    big.join("big")
    ana.recv_type("joined")
    big.send_raw(struct.pack("!I", 1001) + (b"x" * 1001 if send_payload else b""))
    big.expect_error("too-large")
    big.expect_end()
    assert ana.recv() == {"type": "left", "nick": "big"}


def test_a_huge_header_is_refused_at_once(server, connect):
    client = connect()
    client.send_raw(struct.pack("!I", 0xFFFFFFFF))  # 4 GiB announced, nothing sent
    assert "4294967295" in client.expect_error("too-large")["detail"]
    client.expect_end()


@pytest.mark.parametrize(
    "tail", [b"\x00\x00", struct.pack("!I", 10) + b"abc"], ids=["in a header", "in a payload"]
)
def test_a_stream_that_ends_inside_a_frame_is_truncated(server, connect, tail):
    ana, cut = connect(), connect()
    ana.join("ana")
    cut.join("cut")
    ana.recv_type("joined")
    cut.send_raw(tail)
    cut.sock.shutdown(socket.SHUT_WR)  # end of stream, but we can still read
    cut.expect_error("truncated")
    cut.expect_end()
    assert ana.recv() == {"type": "left", "nick": "cut"}


# Leaving, crashing, slow members ------------------------------------------------------------


def test_leave_is_announced_and_closes(server, connect):
    ana, ben = connect(), connect()
    ana.join("ana")
    ben.join("ben")
    ana.recv_type("joined")
    ben.send(type="leave")
    ben.expect_end()
    assert ana.recv() == {"type": "left", "nick": "ben"}
    assert ana.who() == ["ana"]


def test_a_crashed_client_is_cleaned_up_and_announced(server, connect):
    ana, ben = connect(), connect()
    ana.join("ana")
    ben.join("ben")
    ana.recv_type("joined")
    ben.reset()
    assert ana.recv() == {"type": "left", "nick": "ben"}
    wait_until(lambda: server.stats()["connections"] == 1, "the server to forget the reset one")
    assert ana.who() == ["ana"]


def test_a_slow_member_is_dropped_while_the_others_keep_receiving(start, connect):
    limit = 20
    server = start(queue_limit=limit, grace=WAIT)
    address = server.address
    ana, ben = connect(address), connect(address)
    ana.join("ana")
    ben.join("ben")
    slow = connect(address, rcvbuf=4096)
    slow.join("slow")  # and then never reads, until the end
    assert [ana.recv()["nick"], ana.recv()["nick"], ben.recv()["nick"]] == ["ben", "slow", "slow"]

    text = "x" * 4000
    rss_before = resident_memory()
    peak_total = 0
    dropped_after = None
    for n in range(5000):
        ana.send(type="say", text=text)
        # Lockstep: ana and ben get every line while slow is stuck.
        for member in (ana, ben):
            message = member.recv()
            if message["type"] == "left":
                assert message["nick"] == "slow"
                dropped_after = n
                message = member.recv()
            assert message["type"] == "message", message
        stats = server.stats()
        peak_total = max(peak_total, stats["queued"])
        if dropped_after is not None:
            break
    assert dropped_after is not None, "the slow member was never dropped"
    assert server.stats()["peak_queued"] <= limit  # its queue never grew past the limit
    assert peak_total <= limit + 3  # nor did everything queued in the whole room

    # After the drop the room goes on, and nothing more is queued for the slow one.
    for _ in range(2000):
        ana.send(type="say", text=text)
        assert ana.recv()["type"] == "message"
        assert ben.recv()["type"] == "message"
        # At most: what slow's stuck writer holds, its error, one line each for ana and ben.
        assert server.stats()["queued"] <= limit + 3
    assert ana.who() == ["ana", "ben"]
    # Over 10 MB went through the room while slow read nothing; a queue without
    # a bound would hold most of it.  (What the kernel buffers is not counted.)
    if rss_before is not None:
        assert resident_memory() - rss_before < 4_000_000

    # The slow member, reading at last: lines in order with no gap, then the reason.
    ids = []
    while (message := slow.recv())["type"] == "message":
        ids.append(message["id"])
    assert message["code"] == "too-slow", message
    slow.expect_end()
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert len(ids) < dropped_after + 1  # it was sent less than the others got


def test_a_slow_member_that_never_reads_again_is_cut_off(start, connect):
    server = start(queue_limit=5, grace=0.5)
    ana, slow = connect(server.address), connect(server.address, rcvbuf=4096)
    ana.join("ana")
    slow.join("slow")
    ana.recv_type("joined")
    for _ in range(2000):
        ana.send(type="say", text="y" * 4000)
        if ana.recv()["type"] == "left":
            break
    else:
        pytest.fail("the slow member was never dropped")
    # Its writer is stuck in a full socket; the grace period ends that.
    wait_until(lambda: server.stats()["connections"] == 1, "the slow connection to be cut")


def test_a_member_that_leaves_but_never_hangs_up_is_cut_off(start, connect):
    server = start(grace=0.5)
    client = connect(server.address)
    client.join("ana")
    client.send(type="leave")
    client.expect_end()  # the server has said all it will; we keep the socket open
    wait_until(lambda: server.stats()["connections"] == 0, "the lingering connection to be cut")


def test_200_members_at_once(server, connect):
    members = []
    for n in range(200):
        member = connect()
        member.join(f"member{n:03}")
        members.append(member)
    members[0].send(type="say", text="hola a todos")
    for n, member in enumerate(members):
        for newcomer in range(n + 1, 200):
            assert member.recv() == {"type": "joined", "nick": f"member{newcomer:03}"}
        message = member.recv()
        assert (message["nick"], message["text"]) == ("member000", "hola a todos")
    assert len(members[-1].who()) == 200
    assert server.stats()["members"] == 200


# Resources ------------------------------------------------------------------------


def resident_memory() -> int | None:
    """This process's resident memory in bytes (Linux), or None where unknown."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_churn_leaves_no_thread_and_no_file_descriptor_behind(start):
    server = start(max_frame=1000)
    address = server.address
    watcher = RawClient(address)
    watcher.join("watcher")
    gc.collect()
    fds, threads = open_fds(), threading.active_count()

    for n in range(40):
        client = RawClient(address)
        way = n % 5
        if way == 4:  # never joins, just hangs up
            client.close()
            continue
        client.join(f"c{n}")
        assert watcher.recv_type("joined")["nick"] == f"c{n}"
        client.send(type="say", text=f"bye {n}")
        assert client.recv_type("message")["text"] == f"bye {n}"
        if way == 0:  # polite
            client.send(type="leave")
            client.expect_end()
            client.close()
        elif way == 1:  # hangs up
            client.close()
        elif way == 2:  # crashes
            client.reset()
        else:  # breaks the framing
            client.send_raw(struct.pack("!I", 5000))
            client.recv_type("error")
            client.close()
        assert watcher.recv_type("left")["nick"] == f"c{n}"

    wait_until(lambda: server.stats()["connections"] == 1, "every churned connection to close")
    gc.collect()
    wait_until(lambda: threading.active_count() == threads, "the connection threads to end")
    wait_until(lambda: open_fds() == fds, "the sockets to be closed")
    watcher.close()


def test_stop_sends_server_shutdown_and_frees_the_port(engine):
    server = start_server(engine, "127.0.0.1", 0)
    port = server.address[1]
    try:
        joined, stranger = RawClient(server.address), RawClient(server.address)
        joined.join("ana")
        stranger.send(type="who")
        stranger.expect_error("not-joined")
        server.stop()
        for client in (joined, stranger):
            client.expect_error("server-shutdown")
            client.expect_end()
            client.close()
        server.stop()  # a second stop is harmless
        assert not server.running
    finally:
        server.stop()
    with start_server(engine, "127.0.0.1", port) as again:  # the port is free at once
        assert again.address[1] == port


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_a_taken_port_raises_and_leaves_nothing_running(engine):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        fds, threads = open_fds(), threading.active_count()
        with pytest.raises(OSError):
            start_server(engine, "127.0.0.1", taken.getsockname()[1])
        assert threading.active_count() == threads
        assert open_fds() == fds


def test_an_unknown_engine_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown engine 'twisted'"):
        start_server("twisted")


def test_an_authenticator_guards_the_join(start, connect):
    class Passwords:
        def check(self, nick, password):
            return (nick, password) == ("ana", "s3cret")

    server = start(authenticator=Passwords())
    client = connect(server.address)
    client.send(type="join", nick="ana", password="wrong")
    client.expect_error("auth-failed")
    client.send(type="join", nick="ana")
    client.expect_error("auth-failed")
    assert client.join("ana", password="s3cret")["users"] == ["ana"]


def test_a_store_numbers_the_messages(start, connect):
    class Store:
        def __init__(self):
            self.rows = []

        def append(self, nick, text, ts):
            self.rows.append(
                {
                    "type": "message",
                    "id": 1000 + len(self.rows),
                    "nick": nick,
                    "text": text,
                    "ts": ts,
                }
            )
            return self.rows[-1]["id"]

        def recent(self, n):
            return self.rows[-n:]

    store = Store()
    server = start(store=store)
    client = connect(server.address)
    client.join("ana")
    client.send(type="say", text="kept")
    assert client.recv()["id"] == 1000
    assert connect(server.address).join("ben")["history"] == store.rows


def test_tls(start, tmp_path):
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)

    server = start(ssl_context=server_context)
    ana = RawClient(server.address, ssl_context=client_context)
    ben = RawClient(server.address, ssl_context=client_context)
    try:
        ana.join("ana")
        ben.join("ben")
        ana.recv_type("joined")
        ben.send(type="say", text="secreto")
        assert ana.recv()["text"] == "secreto"
        assert ben.recv()["text"] == "secreto"
        ben.send(type="leave")
        assert ana.recv() == {"type": "left", "nick": "ben"}
    finally:
        ana.close()
        ben.close()
