"""Framing (PROTOCOL.md section 1): the pure decoder, then its I/O shells on real sockets."""

from __future__ import annotations

import array
import asyncio
import socket
import struct
import threading
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatlib.framing import (
    DEFAULT_MAX_FRAME,
    HEADER_SIZE,
    FrameDecoder,
    FrameReader,
    FrameTooLarge,
    ProtocolError,
    Truncated,
    encode_frame,
    read_frame,
    send_frame,
    write_frame,
)

HOLA = "¡hola, ñandú!".encode()


def header(length: int) -> bytes:
    return struct.pack("!I", length)


# encode_frame ------------------------------------------------------------------


def test_encode_puts_a_big_endian_length_in_front():
    assert encode_frame(b"hi") == b"\x00\x00\x00\x02hi"
    assert encode_frame(HOLA) == struct.pack("!I", 16) + HOLA
    assert encode_frame(b"x" * 258)[:4] == b"\x00\x00\x01\x02"


def test_encode_zero_length_frame_is_four_zero_bytes():
    assert encode_frame(b"") == b"\x00\x00\x00\x00"


def test_encode_accepts_any_bytes_like_and_counts_bytes_not_items():
    assert encode_frame(bytearray(b"ab")) == b"\x00\x00\x00\x02ab"
    assert encode_frame(memoryview(b"abc")) == b"\x00\x00\x00\x03abc"
    ints = array.array("i", [1, 2])  # 2 items, 2 * itemsize bytes
    assert encode_frame(memoryview(ints))[:4] == header(2 * ints.itemsize)


def test_encode_refuses_text_with_a_hint():
    with pytest.raises(TypeError, match="encode"):
        encode_frame("hola")
    with pytest.raises(TypeError, match="int"):
        encode_frame(42)


# FrameDecoder ------------------------------------------------------------------


def test_decoder_yields_a_frame_fed_whole():
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(HOLA)) == [HOLA]
    assert decoder.pending == 0
    decoder.end()


def test_decoder_yields_a_zero_length_frame():
    decoder = FrameDecoder()
    assert decoder.feed(b"\x00\x00\x00") == []
    assert decoder.feed(b"\x00") == [b""]
    assert decoder.feed(encode_frame(b"") * 3) == [b"", b"", b""]
    decoder.end()


def test_decoder_fed_byte_by_byte_yields_each_payload_on_its_last_byte():
    frames = [encode_frame(b"one"), encode_frame(b""), encode_frame(HOLA)]
    stream = b"".join(frames)
    last_bytes = {
        len(b"".join(frames[: i + 1])) - 1: payload for i, payload in enumerate([b"one", b"", HOLA])
    }
    decoder = FrameDecoder()
    for index in range(len(stream)):
        out = decoder.feed(stream[index : index + 1])
        if index in last_bytes:
            assert out == [last_bytes[index]], index
        else:
            assert out == [], index
    decoder.end()


def test_decoder_yields_many_frames_from_one_chunk_in_order():
    payloads = [str(n).encode() * n for n in range(50)]
    decoder = FrameDecoder()
    assert decoder.feed(b"".join(map(encode_frame, payloads))) == payloads
    assert decoder.pending == 0


def test_decoder_keeps_a_partial_frame_across_chunks():
    stream = encode_frame(b"first") + encode_frame(b"second")
    decoder = FrameDecoder()
    assert decoder.feed(stream[:7]) == []
    assert decoder.pending == 3  # b"fir": the header is not counted once it is read
    assert decoder.feed(stream[7:11]) == [b"first"]
    assert decoder.pending == 2  # two of the next header's four bytes
    assert decoder.feed(stream[11:]) == [b"second"]


def test_decoder_accepts_bytearray_and_memoryview():
    decoder = FrameDecoder()
    assert decoder.feed(bytearray(encode_frame(b"a"))) == [b"a"]
    assert decoder.feed(memoryview(encode_frame(b"b"))) == [b"b"]
    assert decoder.feed(b"") == []


def test_payloads_are_bytes_and_independent_of_the_input():
    data = bytearray(encode_frame(b"abc"))
    (payload,) = FrameDecoder().feed(data)
    data[4:7] = b"xyz"
    assert payload == b"abc" and type(payload) is bytes


def test_a_frame_of_exactly_max_frame_is_accepted():
    decoder = FrameDecoder(max_frame=10)
    assert decoder.feed(encode_frame(b"x" * 10)) == [b"x" * 10]


def test_oversize_header_is_refused_at_once():
    decoder = FrameDecoder(max_frame=10)
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(header(11))
    assert caught.value.code == "too-large"
    assert "11" in str(caught.value) and "10" in str(caught.value)
    assert decoder.pending == 0
    assert decoder.broken


def test_oversize_header_is_refused_before_its_payload_is_buffered():
    decoder = FrameDecoder(max_frame=1024)
    chunk = header(2**31) + b"x" * 60_000  # a big piece of the payload in the same chunk
    with pytest.raises(FrameTooLarge):
        decoder.feed(chunk)
    assert decoder.pending == 0
    assert len(decoder._partial) == 0  # nothing of the payload was copied in


def test_oversize_header_cut_in_pieces_is_refused_on_its_last_byte():
    decoder = FrameDecoder(max_frame=100)
    for byte in header(101)[:3]:
        assert decoder.feed(bytes([byte])) == []
    with pytest.raises(FrameTooLarge):
        decoder.feed(header(101)[3:])
    assert decoder.pending == 0


def test_payloads_before_an_oversize_header_are_not_lost():
    chunk = encode_frame(b"a") + encode_frame(b"b") + header(1000) + b"zzz"
    with pytest.raises(FrameTooLarge) as caught:
        FrameDecoder(max_frame=10).feed(chunk)
    assert caught.value.payloads == [b"a", b"b"]

    got = []
    with pytest.raises(FrameTooLarge):
        for payload in FrameDecoder(max_frame=10).iter_feed(chunk):
            got.append(payload)
    assert got == [b"a", b"b"]


def test_max_frame_zero_allows_only_empty_frames():
    decoder = FrameDecoder(max_frame=0)
    assert decoder.feed(encode_frame(b"")) == [b""]
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_frame(b"x"))


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "10", None])
def test_max_frame_must_be_a_sensible_int(bad):
    with pytest.raises(ValueError, match="max_frame"):
        FrameDecoder(max_frame=bad)


def test_default_max_frame_is_64_kib():
    assert DEFAULT_MAX_FRAME == 65536
    assert FrameDecoder().max_frame == 65536


def test_end_at_a_frame_boundary_is_a_clean_close():
    decoder = FrameDecoder()
    decoder.end()  # nothing fed at all
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"x") * 2)
    decoder.end()


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_end_inside_a_header_is_truncated(cut):
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"whole") + header(5)[:cut])
    with pytest.raises(Truncated) as caught:
        decoder.end()
    assert caught.value.code == "truncated"
    assert f"inside a header ({cut} of {HEADER_SIZE} bytes)" in str(caught.value)


def test_end_inside_a_payload_is_truncated():
    decoder = FrameDecoder()
    decoder.feed(header(10) + b"abc")
    with pytest.raises(Truncated, match="7 bytes short of a 10-byte payload"):
        decoder.end()


def test_end_after_a_zero_length_header_is_clean():
    decoder = FrameDecoder()
    assert decoder.feed(header(0)) == [b""]
    decoder.end()


def test_decoder_stays_broken_after_too_large():
    decoder = FrameDecoder(max_frame=4)
    with pytest.raises(FrameTooLarge):
        decoder.feed(header(5))
    for _ in range(3):  # every later call, not just the next one
        with pytest.raises(FrameTooLarge):
            decoder.feed(encode_frame(b"ok"))
    with pytest.raises(FrameTooLarge):
        decoder.end()
    with pytest.raises(FrameTooLarge):
        decoder.iter_feed(b"")


def test_decoder_stays_broken_after_truncated():
    decoder = FrameDecoder()
    decoder.feed(b"\x00\x00")
    with pytest.raises(Truncated):
        decoder.end()
    with pytest.raises(Truncated):
        decoder.feed(b"\x00\x00")
    with pytest.raises(Truncated):
        decoder.end()


def test_iter_feed_takes_the_data_in_even_if_never_iterated():
    decoder = FrameDecoder()
    decoder.iter_feed(encode_frame(b"lost?")[:6])  # the iterator is dropped
    assert decoder.pending == 2
    assert decoder.feed(b"st?") == [b"lost?"]


def test_errors_are_protocol_errors_with_codes():
    assert issubclass(FrameTooLarge, ProtocolError)
    assert issubclass(Truncated, ProtocolError)
    assert (FrameTooLarge.code, Truncated.code) == ("too-large", "truncated")


def test_repr_says_where_the_decoder_is():
    decoder = FrameDecoder(max_frame=100)
    assert "header, 0 of 4" in repr(decoder)
    decoder.feed(header(13) + b"abc")
    assert "payload, 3 of 13" in repr(decoder)
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"x" * 10 + header(101))
    assert "broken: too-large" in repr(decoder)


def test_state_follows_header_then_payload():
    decoder = FrameDecoder()
    assert decoder.state == "reading a header, 0 of 4 bytes"
    decoder.feed(b"\x00\x00")
    assert decoder.state == "reading a header, 2 of 4 bytes"
    decoder.feed(b"\x00\x02h")
    assert decoder.state == "reading a payload, 1 of 2 bytes"
    decoder.feed(b"i")
    assert decoder.state == "reading a header, 0 of 4 bytes"
    decoder.feed(b"\x00")
    with pytest.raises(Truncated):
        decoder.end()
    assert decoder.state == "broken: truncated"


# Properties ------------------------------------------------------------------

payload_lists = st.lists(st.binary(max_size=300), max_size=20)


@st.composite
def stream_and_cuts(draw, payloads=payload_lists):
    payloads = draw(payloads)
    stream = b"".join(map(encode_frame, payloads))
    cuts = draw(st.lists(st.integers(0, len(stream)), max_size=60))
    return payloads, stream, sorted(cuts)


def pieces(stream: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in zip(edges, edges[1:], strict=False)]


@settings(max_examples=300, deadline=None)
@given(stream_and_cuts())
def test_any_split_yields_the_same_payloads_in_order(case):
    payloads, stream, cuts = case
    decoder = FrameDecoder(max_frame=300)
    got = []
    for piece in pieces(stream, cuts):
        got.extend(decoder.feed(piece))
    decoder.end()
    assert got == payloads
    assert decoder.pending == 0


@settings(max_examples=100, deadline=None)
@given(stream_and_cuts())
def test_iter_feed_agrees_with_feed(case):
    payloads, stream, cuts = case
    decoder = FrameDecoder(max_frame=300)
    got = [p for piece in pieces(stream, cuts) for p in decoder.iter_feed(piece)]
    assert got == payloads


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=400),
    st.lists(st.integers(0, 400), max_size=30),
    st.integers(0, 300),
)
def test_random_bytes_raise_only_protocol_errors(data, cuts, max_frame):
    decoder = FrameDecoder(max_frame=max_frame)
    try:
        for piece in pieces(data, sorted(c for c in cuts if c <= len(data))):
            for payload in decoder.feed(piece):
                assert len(payload) <= max_frame
            # Only the frame in progress is held: < 4 header bytes, or < one payload.
            assert decoder.pending < max(max_frame, HEADER_SIZE)
        decoder.end()
    except ProtocolError as error:
        assert error.code in ("too-large", "truncated")
        assert decoder.broken


@settings(max_examples=50, deadline=None)
@given(
    announced=st.integers(2**20, 2**32 - 1),
    max_frame=st.integers(0, 1024),
    follow=st.integers(0, 20_000),
)
def test_oversize_is_refused_without_allocating_what_it_announces(announced, max_frame, follow):
    chunk = header(announced) + b"\xff" * follow  # allocated before measuring
    decoder = FrameDecoder(max_frame=max_frame)
    tracemalloc.start()
    try:
        with pytest.raises(FrameTooLarge):
            decoder.feed(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024, peak  # far below the megabytes announced
    assert decoder.pending == 0


def test_a_large_frame_fed_in_pieces_holds_about_its_own_size():
    size = 1 << 20
    stream = encode_frame(b"y" * size)
    decoder = FrameDecoder(max_frame=size)
    tracemalloc.start()
    try:
        out = []
        for start in range(0, len(stream), 1024):
            out.extend(decoder.feed(stream[start : start + 1024]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out == [b"y" * size]
    assert peak < 3 * size  # the buffer, its final copy, and slack: no blow-up


# Blocking helpers on real sockets ---------------------------------------------


@pytest.fixture
def pair():
    left, right = socket.socketpair()
    left.settimeout(10)  # guards against hangs only
    right.settimeout(10)
    yield left, right
    left.close()
    right.close()


@pytest.fixture
def tcp_pair():
    """A connected TCP pair on loopback, port chosen by the OS."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=10)
        server, _ = listener.accept()
    server.settimeout(10)
    yield client, server
    client.close()
    server.close()


def test_send_frame_and_frame_reader_over_a_socketpair(pair):
    left, right = pair
    payloads = [b"one", b"", HOLA, b"z" * 100_000]
    sender = threading.Thread(target=lambda: [send_frame(left, p) for p in payloads])
    sender.start()
    reader = FrameReader(right, max_frame=200_000)
    got = [reader.read() for _ in payloads]
    sender.join(10)
    left.shutdown(socket.SHUT_WR)
    assert got == payloads
    assert reader.read() is None


def test_frame_reader_over_loopback_tcp_with_one_byte_sends(tcp_pair):
    client, server = tcp_pair
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payloads = [HOLA, b"", b"adios"]
    stream = b"".join(map(encode_frame, payloads))

    def send_slowly():
        for index in range(len(stream)):
            client.sendall(stream[index : index + 1])
        client.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send_slowly)
    sender.start()
    got = list(FrameReader(server))
    sender.join(10)
    assert got == payloads


def test_frame_reader_reports_a_truncated_stream(tcp_pair):
    client, server = tcp_pair
    client.sendall(encode_frame(b"whole") + encode_frame(b"cut short")[:7])
    client.shutdown(socket.SHUT_WR)
    reader = FrameReader(server)
    assert reader.read() == b"whole"
    with pytest.raises(Truncated, match="6 bytes short"):
        reader.read()


def test_frame_reader_hands_out_good_payloads_before_too_large(pair):
    left, right = pair
    # The sender stops after the bad header: the reader must not wait for more.
    left.sendall(encode_frame(b"a") + encode_frame(b"b") + header(10**9))
    reader = FrameReader(right, max_frame=1000)
    assert reader.read() == b"a"
    assert reader.read() == b"b"
    with pytest.raises(FrameTooLarge):
        reader.read()
    with pytest.raises(FrameTooLarge):
        reader.read()


# asyncio helpers on real loopback streams ---------------------------------------


async def serve_once(handler):
    """Start a loopback server that runs ``handler(reader, writer)`` for one client."""
    done = asyncio.get_running_loop().create_future()

    async def on_client(reader, writer):
        try:
            done.set_result(await handler(reader, writer))
        except Exception as error:  # handed to the test, not lost in a task
            done.set_exception(error)
        finally:
            writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], done


def test_asyncio_frames_round_trip_over_loopback():
    payloads = [b"one", b"", HOLA, b"q" * 50_000]

    async def echo(reader, writer):
        count = 0
        while (payload := await read_frame(reader)) is not None:
            await write_frame(writer, payload)
            count += 1
        return count

    async def main():
        server, port, done = await serve_once(echo)
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for payload in payloads:
                await write_frame(writer, payload)
            echoed = [await read_frame(reader) for _ in payloads]
            writer.write_eof()
            assert await read_frame(reader) is None  # the server closed cleanly
            writer.close()
            await writer.wait_closed()
            return echoed, await asyncio.wait_for(done, 10)

    echoed, count = asyncio.run(asyncio.wait_for(main(), 30))
    assert echoed == payloads
    assert count == len(payloads)


@pytest.mark.parametrize(
    ("sent", "error", "message"),
    [
        (b"\x00\x00", Truncated, r"inside a header \(2 of 4 bytes\)"),
        (header(9) + b"abc", Truncated, "6 bytes short of a 9-byte payload"),
        (header(70_000) + b"abc", FrameTooLarge, "announced 70000 bytes"),
    ],
)
def test_asyncio_read_frame_reports_broken_streams(sent, error, message):
    async def read_one(reader, writer):
        return await read_frame(reader)

    async def main():
        server, port, done = await serve_once(read_one)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(sent)
            await writer.drain()
            if error is Truncated:
                writer.write_eof()  # too-large must be refused without an end of stream
            try:
                await asyncio.wait_for(done, 10)
            finally:
                writer.close()
                await writer.wait_closed()

    with pytest.raises(error, match=message) as caught:
        asyncio.run(asyncio.wait_for(main(), 30))
    assert caught.value.code == error.code
