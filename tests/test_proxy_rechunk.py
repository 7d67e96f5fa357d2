"""The proxy re-cuts the stream: one-byte pieces, held pieces, merged bursts, on real sockets."""

from __future__ import annotations

import socket
import threading

import pytest

from chatlib.framing import FrameReader, encode_frame, send_frame
from chatlib.proxy import TO_CLIENT, TO_SERVER, Proxy, open_pair


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"the stream closed after {data!r}"
        data += chunk
    return data


def assert_nothing_arrives(sock: socket.socket, wait: float = 0.3) -> None:
    """Held bytes never arrive, so this holds however slow the machine is."""
    old = sock.gettimeout()
    sock.settimeout(wait)
    try:
        with pytest.raises(TimeoutError):
            sock.recv(1024)
    finally:
        sock.settimeout(old)


def test_open_pair_relays_both_ways_and_records():
    with open_pair() as pair:
        pair.sender.sendall(b"hola")
        assert recv_exactly(pair.receiver, 4) == b"hola"
        pair.receiver.sendall(b"adios")
        assert recv_exactly(pair.sender, 5) == b"adios"
        assert pair.proxy.sent(TO_SERVER) == b"hola"
        assert pair.proxy.sent(TO_CLIENT) == b"adios"
        assert pair.sender.getpeername()[0] == "127.0.0.1"
        assert pair.receiver.gettimeout() == 10.0


def test_closing_a_pair_twice_is_safe_and_stops_the_proxy():
    pair = open_pair()
    pair.close()
    pair.close()
    with pytest.raises(OSError):
        socket.create_connection(pair.proxy.address, timeout=2)


def test_held_pieces_pass_one_release_at_a_time():
    with open_pair(pieces=1, hold=True) as pair:
        pair.sender.sendall("ñu".encode())
        assert_nothing_arrives(pair.receiver)
        pair.proxy.release()
        assert pair.receiver.recv(1024) == b"\xc3"  # the rest is held: recv cannot get more
        assert_nothing_arrives(pair.receiver)
        pair.proxy.release(2)
        assert recv_exactly(pair.receiver, 2) == b"\xb1u"


def test_a_release_given_before_the_bytes_arrive_is_kept():
    with open_pair(pieces=2, hold=True) as pair:
        pair.proxy.release()
        pair.sender.sendall(b"abcd")
        assert recv_exactly(pair.receiver, 2) == b"ab"
        assert_nothing_arrives(pair.receiver)


def test_release_all_lets_held_and_later_bytes_flow():
    with open_pair(pieces=1, hold=True) as pair:
        pair.sender.sendall(b"held")
        assert_nothing_arrives(pair.receiver)
        pair.proxy.release_all()
        pair.sender.sendall(b" then free")
        assert recv_exactly(pair.receiver, 14) == b"held then free"


def test_each_direction_is_held_and_released_separately():
    with open_pair(hold=True) as pair:
        pair.receiver.sendall(b"back")
        pair.proxy.release(5, direction=TO_SERVER)  # credit for the other direction only
        assert_nothing_arrives(pair.sender)
        pair.proxy.release(direction=TO_CLIENT)
        assert recv_exactly(pair.sender, 4) == b"back"


def test_release_refuses_an_unknown_direction():
    with open_pair(hold=True) as pair, pytest.raises(ValueError, match="direction"):
        pair.proxy.release(direction="sideways")


def test_the_close_follows_the_held_bytes():
    with open_pair(pieces=1, hold=True) as pair:
        pair.sender.sendall(b"bye")
        pair.sender.shutdown(socket.SHUT_WR)
        assert_nothing_arrives(pair.receiver)
        pair.proxy.release(3)
        assert recv_exactly(pair.receiver, 3) == b"bye"
        assert pair.receiver.recv(1024) == b""  # the FIN came after the last piece


def test_stop_does_not_hang_on_held_pieces():
    pair = open_pair(pieces=1, hold=True)
    pair.sender.sendall(b"never released")
    assert_nothing_arrives(pair.receiver)
    before = {t for t in threading.enumerate() if t.name.startswith("proxy-")}
    pair.close()
    assert not any(t.is_alive() for t in before)


def test_merge_turns_two_sends_into_one_recv():
    with open_pair(merge=0.2) as pair:
        pair.sender.sendall(b"hola")
        pair.sender.sendall(b"adios")
        assert pair.receiver.recv(1024) == b"holaadios"


def test_one_byte_pieces_with_a_pause_deliver_every_byte_in_order():
    payload = "¡hola, ñandú!".encode()
    with open_pair(pieces=1, pause=0.001) as pair:
        pair.sender.sendall(payload)
        assert recv_exactly(pair.receiver, len(payload)) == payload
        assert pair.proxy.sent() == payload


def test_the_default_proxy_still_forwards_unchanged():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with Proxy(listener.getsockname()) as proxy:
            client = socket.create_connection(proxy.address, timeout=10)
            server, _ = listener.accept()
            server.settimeout(10)
            with client, server:
                client.sendall(b"x" * 100_000)
                assert recv_exactly(server, 100_000) == b"x" * 100_000
    assert [e.kind for e in proxy.events][:2] == ["connect", "data"]


@pytest.mark.parametrize("options", [{"pieces": 1}, {"merge": 0.1}, {"pieces": 3, "pause": 0.001}])
def test_frames_survive_any_re_cutting(options):
    payloads = ["¡hola, ñandú!".encode(), b"", b"adios"]
    with open_pair(**options) as pair:
        for payload in payloads:
            send_frame(pair.sender, payload)
        pair.sender.shutdown(socket.SHUT_WR)
        assert list(FrameReader(pair.receiver)) == payloads
        assert pair.proxy.sent() == b"".join(map(encode_frame, payloads))


def test_stop_ends_the_thread_blocked_in_accept():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        proxy = Proxy(listener.getsockname())
        proxy.stop()
        # Without a wake-up, accept() would keep this thread alive past join()'s timeout.
        assert not proxy._accepter.is_alive()
        assert [e.kind for e in proxy.events] == []  # the wake-up is not a connection
