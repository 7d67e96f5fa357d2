"""Benchmarks: commands that print figures, never timed tests.

    python -m chatlib.bench framing     # decoder throughput and growth
    python -m chatlib.bench fanout      # the room's engines against a minimal relay

Each module has a ``main(argv)``; the figures and the machine they came from
are recorded in ``docs/benchmarks/``.
"""
