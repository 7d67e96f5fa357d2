"""A probe for the TLS tests: OpenSSL does not allow one TLS object to be used
by two threads at once, so the tests wrap every ``chatlib.tls.TLSChannel``'s
TLS object and count the calls that came in while another was inside."""

from __future__ import annotations

import threading
import time


class OneAtATime:
    """Stands in for a TLS object and counts the calls made while another was inside it."""

    def __init__(self, tls):
        self._tls = tls
        self._inside = threading.Lock()
        self.overlaps = 0
        self.threads: set[str] = set()

    def __getattr__(self, name):
        method = getattr(self._tls, name)

        def one_at_a_time(*args):
            if not self._inside.acquire(blocking=False):
                self.overlaps += 1
                return method(*args)
            try:
                self.threads.add(threading.current_thread().name)
                time.sleep(0)  # let another thread try to come in meanwhile
                return method(*args)
            finally:
                self._inside.release()

        return one_at_a_time


def watch_tls_channels(monkeypatch) -> list[OneAtATime]:
    """Wrap the TLS object of every ``TLSChannel`` made from now on; return them all."""
    from chatlib import tls

    watched: list[OneAtATime] = []
    original_init = tls.TLSChannel.__init__

    def watch(self, *args, **options):
        original_init(self, *args, **options)
        self._tls = OneAtATime(self._tls)
        self._tls.server_side = self.server_side
        watched.append(self._tls)

    monkeypatch.setattr(tls.TLSChannel, "__init__", watch)
    return watched
