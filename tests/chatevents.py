"""Waiting for what a ``ChatClient`` hears, in the tests that use one."""

from __future__ import annotations

import queue

import pytest

from chatlib.client import ChatClient


def next_of(client: ChatClient, kind: str, wait: float = 30.0) -> dict:
    """The next event of type ``kind``, skipping others; fails instead of hanging."""
    while True:
        try:
            event = client.events.get(timeout=wait)
        except queue.Empty:
            pytest.fail(f"no {kind!r} event within {wait} s")
        if event["type"] == kind:
            return event
        if event["type"] == "disconnected":
            pytest.fail(f"disconnected while waiting for {kind!r}: {event}")
