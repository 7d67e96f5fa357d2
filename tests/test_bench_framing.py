"""The framing benchmark cuts its streams the way it says it does (no timings here)."""

from chatlib.bench.framing import NaiveDecoder, chunks, pieces_cutting_headers
from chatlib.framing import HEADER_SIZE, FrameDecoder, encode_frame


def test_pieces_cutting_headers_cover_the_stream_and_split_every_header():
    frame_size = 10
    stream = encode_frame(b"p" * frame_size) * 5
    pieces = pieces_cutting_headers(stream, frame_size)
    assert b"".join(pieces) == stream
    offsets, position = set(), 0
    for piece in pieces:
        if len(piece) == 1:
            offsets.add(position)
        position += len(piece)
    for start in range(0, len(stream), HEADER_SIZE + frame_size):
        assert set(range(start, start + HEADER_SIZE)) <= offsets  # header bytes one by one


def test_both_decoders_agree_on_the_benchmark_streams():
    stream = encode_frame(b"a" * 100) * 20
    for pieces in (chunks(stream, 7), pieces_cutting_headers(stream, 100)):
        expected = [b"a" * 100] * 20
        naive = NaiveDecoder()
        assert [p for piece in pieces for p in naive.feed(piece)] == expected
        decoder = FrameDecoder()
        assert [p for piece in pieces for p in decoder.feed(piece)] == expected
