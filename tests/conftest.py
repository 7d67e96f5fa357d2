"""Shared test set-up.

``watched_tls`` gives the TLS tests every TLS object made during a test,
each watched for two threads inside at once (tests/tlsprobe.py).

An audit hook makes sure no test in this process connects or sends anywhere
but the loopback network: the course only ever talks to 127.0.0.0/8.
"""

from __future__ import annotations

import ipaddress
import socket
import sys

import pytest
from tlsprobe import OneAtATime, watch_tls_channels


def _is_loopback(address) -> bool:
    if not isinstance(address, tuple):
        return True  # AF_UNIX paths and socketpairs stay on this machine
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: refuse, it could resolve anywhere


def _only_loopback(event: str, args: tuple) -> None:
    if event in ("socket.connect", "socket.sendto"):
        sock, address = args[0], args[1]
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise PermissionError(f"tests may only reach 127.0.0.0/8, not {address!r}")


sys.addaudithook(_only_loopback)


@pytest.fixture
def watched_tls(monkeypatch) -> list[OneAtATime]:
    """Every ``TLSChannel`` made during the test, its TLS object watched by ``OneAtATime``."""
    return watch_tls_channels(monkeypatch)
