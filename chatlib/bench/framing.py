"""How fast ``FrameDecoder`` is, and whether its cost grows linearly.

    python -m chatlib.bench framing [--repeat N]

Two tables:

- throughput: many small (32 B) frames, and large (64 KiB) frames, fed the way
  ``recv`` hands them over (64 KiB pieces), plus the cost of encoding them;
- growth: 1, 4 and 16 MiB of frames fed in three ways that stress a decoder's
  buffering: 1 KiB pieces, pieces that cut every header (each header and the
  bytes around it fed one byte at a time), and one single big frame fed in
  1 KiB pieces.  If the cost is linear, the time per MiB stays flat as the
  stream grows; a decoder that re-copies its buffer on every feed shows time
  per MiB growing with the size instead.

Each figure is the best of ``--repeat`` runs, which filters out noise from
other programs on the machine.  The pieces are cut before the clock starts, so
only the decoder is timed.  Figures are recorded in docs/benchmarks/framing.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable

from chatlib.framing import HEADER, HEADER_SIZE, FrameDecoder, encode_frame

MiB = 1 << 20
GROWTH_SIZES_MIB = (1, 4, 16)
GROWTH_FRAME = 1024  # payload bytes per frame in the growth table
# Time per MiB may drift this much from 1 to 16 MiB (caches, allocator) and
# still be linear; a quadratic decoder would be about 16 times slower per MiB.
LINEAR_TOLERANCE = 4.0


def best_time(run: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def decode_all(pieces: list[bytes], max_frame: int) -> int:
    """Feed every piece to a fresh decoder; return how many payloads came out."""
    decoder = FrameDecoder(max_frame)
    count = 0
    for piece in pieces:
        count += len(decoder.feed(piece))
    decoder.end()
    return count


class NaiveDecoder:
    """For contrast only: the decoder one writes first, which re-copies its buffer.

    ``buffer += data`` copies everything held so far on every feed, so a frame
    that arrives in n pieces costs about n * n / 2 copied pieces: quadratic.
    """

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        payloads = []
        while len(self.buffer) >= HEADER_SIZE:
            (length,) = HEADER.unpack_from(self.buffer)
            if len(self.buffer) < HEADER_SIZE + length:
                break
            payloads.append(self.buffer[HEADER_SIZE : HEADER_SIZE + length])
            self.buffer = self.buffer[HEADER_SIZE + length :]
        return payloads


def naive_decode_all(pieces: list[bytes]) -> int:
    decoder = NaiveDecoder()
    return sum(len(decoder.feed(piece)) for piece in pieces)


def chunks(stream: bytes, size: int) -> list[bytes]:
    return [stream[start : start + size] for start in range(0, len(stream), size)]


def pieces_cutting_headers(stream: bytes, frame_size: int, around: int = 2) -> list[bytes]:
    """Cut ``stream`` (frames of ``frame_size`` payload bytes) so every header is split.

    Each header, and ``around`` bytes on either side of it, arrives one byte
    per piece; the rest of each payload arrives as one piece.
    """
    pieces = []
    covered = 0  # the stream is cut into pieces up to here
    step = HEADER_SIZE + frame_size
    for start in range(0, len(stream), step):
        one_byte_until = min(start + HEADER_SIZE + around, len(stream))
        pieces.extend(stream[i : i + 1] for i in range(covered, one_byte_until))
        covered = max(covered, one_byte_until)
        body_end = min(start + step - around, len(stream))
        if body_end > covered:
            pieces.append(stream[covered:body_end])
            covered = body_end
    pieces.extend(stream[i : i + 1] for i in range(covered, len(stream)))
    return pieces


def cpu_model() -> str:
    """The CPU's name where the system tells it (Linux), else the platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info() -> list[str]:
    return [
        f"python    {platform.python_implementation()} {platform.python_version()}",
        f"platform  {platform.platform()}",
        f"machine   {platform.machine()}, {os.cpu_count()} CPUs, {cpu_model()}",
    ]


def throughput_rows(repeat: int) -> list[str]:
    rows = [
        f"{'frames':<16}{'count':>8}{'MB':>8}{'decode MB/s':>13}{'frames/s':>12}{'encode MB/s':>13}"
    ]
    for label, payload_size, count in (
        ("small (32 B)", 32, 200_000),
        ("large (64 KiB)", 65536, 256),
    ):
        payload = bytes(range(256)) * (payload_size // 256) or b"x" * payload_size
        payloads = [payload] * count
        stream = b"".join(map(encode_frame, payloads))
        pieces = chunks(stream, 65536)
        assert decode_all(pieces, 65536) == count
        decode = best_time(lambda pieces=pieces: decode_all(pieces, 65536), repeat)
        encode = best_time(lambda payloads=payloads: [encode_frame(p) for p in payloads], repeat)
        megabytes = len(stream) / 1e6
        rows.append(
            f"{label:<16}{count:>8}{megabytes:>8.1f}{megabytes / decode:>13.0f}"
            f"{count / decode:>12,.0f}{megabytes / encode:>13.0f}"
        )
    return rows


def growth_rows(repeat: int) -> tuple[list[str], bool]:
    rows = [
        f"{'pattern':<28}{'MiB':>5}{'pieces':>9}{'time ms':>9}{'MB/s':>8}{'ms/MiB':>8}"
        f"{'vs 1 MiB':>10}"
    ]
    linear = True
    patterns = (
        ("1 KiB pieces", False),
        ("1-byte pieces around headers", False),
        ("one frame in 1 KiB pieces", True),
    )
    for pattern, one_frame in patterns:
        base = None
        for mib in GROWTH_SIZES_MIB:
            if one_frame:
                stream = encode_frame(b"\x5a" * (mib * MiB - HEADER_SIZE))
                pieces, max_frame, frames = chunks(stream, 1024), mib * MiB, 1
            else:
                frames = mib * MiB // (HEADER_SIZE + GROWTH_FRAME)
                stream = encode_frame(b"\xa5" * GROWTH_FRAME) * frames
                max_frame = GROWTH_FRAME
                if pattern.startswith("1 KiB"):
                    pieces = chunks(stream, 1024)
                else:
                    pieces = pieces_cutting_headers(stream, GROWTH_FRAME)
            assert decode_all(pieces, max_frame) == frames
            seconds = best_time(lambda p=pieces, m=max_frame: decode_all(p, m), repeat)
            per_mib = seconds * 1000 * MiB / len(stream)
            base = base or per_mib
            ratio = per_mib / base
            linear = linear and ratio <= LINEAR_TOLERANCE
            rows.append(
                f"{pattern:<28}{mib:>5}{len(pieces):>9,}{seconds * 1000:>9.1f}"
                f"{len(stream) / 1e6 / seconds:>8.0f}{per_mib:>8.2f}{ratio:>9.2f}x"
            )
            del stream, pieces
    # The same big frame through the naive decoder: 1 and 4 MiB only, since
    # 16 MiB would copy some 128 GiB.  Its time per MiB grows with the size.
    base = None
    for mib in GROWTH_SIZES_MIB[:2]:
        stream = encode_frame(b"\x5a" * (mib * MiB - HEADER_SIZE))
        pieces = chunks(stream, 1024)
        assert naive_decode_all(pieces) == 1
        seconds = best_time(lambda p=pieces: naive_decode_all(p), 1)
        per_mib = seconds * 1000 * MiB / len(stream)
        base = base or per_mib
        rows.append(
            f"{'(naive bytes buffer, same)':<28}{mib:>5}{len(pieces):>9,}{seconds * 1000:>9.1f}"
            f"{len(stream) / 1e6 / seconds:>8.0f}{per_mib:>8.2f}{per_mib / base:>9.2f}x"
        )
    return rows, linear


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chatlib.bench framing",
        description="Throughput of the frame decoder, and how its cost grows with the stream.",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per figure; the best is kept (%(default)s)"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    started = time.perf_counter()
    print("chatlib.bench framing")
    print("\n".join(machine_info()))
    print(f"best of {args.repeat} runs per figure\n")
    print("Throughput (fed in 64 KiB pieces, as recv(65536) would hand them over)")
    print("\n".join(throughput_rows(args.repeat)))
    print(f"\nGrowth (frames of {GROWTH_FRAME} B unless one frame; time per MiB should stay flat)")
    rows, linear = growth_rows(args.repeat)
    print("\n".join(rows))
    verdict = "linear" if linear else "NOT linear"
    print(
        f"\n{verdict}: time per MiB at 16 MiB is within {LINEAR_TOLERANCE:g}x of 1 MiB"
        if linear
        else f"\n{verdict}: time per MiB grew more than {LINEAR_TOLERANCE:g}x from 1 to 16 MiB"
    )
    print(f"total {time.perf_counter() - started:.1f} s")
    sys.stdout.flush()
    return 0 if linear else 1
