"""TLS for the chat (lesson 07): contexts for both ends, and a classroom's certificates.

Without TLS, everything a member types crosses the network as readable JSON:
anyone on the path (a café's Wi-Fi, a compromised router, ``chatlib.proxy`` in
lesson 07) reads it, and can change it.  TLS wraps the TCP stream so that what
travels is encrypted and authenticated, and the client knows it talks to the
server it meant: the server shows a certificate, signed by an authority the
client trusts, for the name the client dialled.

    ca, cert, key = make_classroom_certs("certs")        # once, for the classroom
    start_server(ssl_context=server_context(cert, key))  # the server keeps the key
    ChatClient(host, port, ssl_context=client_context(ca))  # every client trusts ca.pem

The contexts are the standard library's modern defaults
(``ssl.create_default_context``: certificates verified, names checked, weak
ciphers off) with TLS 1.2 as the oldest version accepted; TLS 1.0 and 1.1 are
broken and retired (RFC 8996).

The classroom authority
-----------------------

A public server buys its certificate from an authority every browser already
trusts.  A classroom does not need one: ``make_classroom_certs`` (or
``chatlib certs make DIR``) creates a small authority of its own with
``trustme`` and has it sign a certificate for ``127.0.0.1`` and ``localhost``
(add names with ``--name`` for a server other machines reach).  It writes three
files and nothing else:

- ``ca.pem``: the authority's certificate.  Public: give it to every client
  (``chatlib chat --tls --cafile ca.pem``).
- ``server.pem``: the server's certificate (``--tls-cert``), valid for a year.
- ``server.key``: the server's private key (``--tls-key``), readable by its
  owner only.  Whoever holds it can pose as the server.

The authority's own private key is never written: once the server's
certificate is signed, nobody can use it to sign another one, so a stolen
``ca.pem`` lets an attacker trust the classroom, not impersonate it.  Existing
files are never overwritten unless asked (``overwrite=True``, ``--force``).

Every mistake a user can make (a missing or unreadable file, a file that is not
a certificate, a key that does not match) is a ``TLSSetupError`` whose message
is one sentence.

TLS for two threads
-------------------

OpenSSL does not let two threads use one TLS connection at once, and a chat
connection is read by one thread while another writes: the threads engine's
reader and writer, the client's receiver and the caller that says a line.  An
``ssl.SSLSocket`` shared that way can corrupt its records.  So the chat works
TLS in memory instead (``TLSChannel``, the sans-I/O way, like
``chatlib.framing``'s decoder and ``chatlib.room``): the TLS state is fed the
network's bytes and hands back plaintext and bytes to send, under a lock held
only while it computes, never while a socket waits.  ``TLSStream`` is the thin
shell that moves those bytes over a socket; the threads engine and the client
both use it.  (The asyncio engine needs none of this: its TLS runs on one
thread, the event loop's.)
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

CA_FILE = "ca.pem"
CERT_FILE = "server.pem"
KEY_FILE = "server.key"
DEFAULT_NAMES = ("127.0.0.1", "localhost")
CERT_DAYS = 365  # a school year; make new ones after that
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


class TLSSetupError(Exception):
    """A certificate, key or authority that cannot be used; ``str()`` says why in one sentence."""


# Contexts ---------------------------------------------------------------------------


def server_context(certfile: str | os.PathLike, keyfile: str | os.PathLike) -> ssl.SSLContext:
    """A server-side context that presents ``certfile`` (PEM) signed with ``keyfile``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MINIMUM_VERSION
    _readable(certfile, "certificate")
    _readable(keyfile, "private key")
    try:
        context.load_cert_chain(certfile, keyfile)
    except ssl.SSLError as error:
        if "KEY_VALUES_MISMATCH" in str(error):
            why = "the key does not belong to the certificate"
        else:
            why = "they are not a PEM certificate and its private key"
        raise TLSSetupError(f"cannot use {certfile} with {keyfile}: {why}") from None
    except OSError as error:
        raise TLSSetupError(f"cannot read {certfile} or {keyfile}: {_why(error)}") from None
    return context


def client_context(cafile: str | os.PathLike | None = None) -> ssl.SSLContext:
    """A client-side context that trusts ``cafile`` (PEM), or the system's authorities."""
    if cafile is not None:
        _readable(cafile, "certificate authority")
    try:
        context = ssl.create_default_context(cafile=cafile)
    except ssl.SSLError:
        raise TLSSetupError(f"{cafile} holds no PEM certificate to trust") from None
    except OSError as error:
        raise TLSSetupError(f"cannot read {cafile}: {_why(error)}") from None
    context.minimum_version = MINIMUM_VERSION
    return context


def _readable(path: str | os.PathLike, what: str) -> None:
    """Fail with one sentence, before OpenSSL does with a cryptic one."""
    try:
        with open(path, "rb") as file:
            file.read(1)
    except FileNotFoundError:
        raise TLSSetupError(f"the {what} file {path} does not exist") from None
    except IsADirectoryError:
        raise TLSSetupError(f"the {what} file {path} is a folder, not a file") from None
    except OSError as error:
        raise TLSSetupError(f"cannot read the {what} file {path}: {_why(error)}") from None


def _why(error: OSError) -> str:
    return (error.strerror or str(error)).lower()


# TLS for two threads: the state in memory, and its socket shell --------------------


class TLSChannel:
    """One TLS connection as plain state, fed bytes: no socket, safe from two threads.

    ``SSLContext.wrap_bio`` makes a TLS object that reads from one memory
    buffer and writes to another (``ssl.MemoryBIO``).  Whoever holds the
    socket moves the bytes:

    - ``feed(data)``: bytes that came from the network (``b""``: it ended);
    - ``read(size)``: plaintext they make, ``None`` until a whole record is in,
      ``b""`` once the peer has finished;
    - ``write(data)``: plaintext to encrypt; ``close()``: our close_notify;
    - ``data_to_send()``: the records made so far, in order, for the network.

    ``do_handshake()`` takes the handshake one step: ``True`` once done,
    ``False`` while it waits for the peer's next message.  A failure raises
    ``ssl.SSLError`` (``SSLCertVerificationError`` for a certificate not
    trusted), and the alert telling the peer why is in ``data_to_send()``.

    Every method holds the channel's lock while it uses the TLS object, and
    none waits for anything, so two threads may call it at any time.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ):
        self.server_side = server_side
        self._incoming = ssl.MemoryBIO()  # bytes from the network, for TLS to read
        self._outgoing = ssl.MemoryBIO()  # records TLS made, for the network
        self._tls = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._lock = threading.Lock()

    def do_handshake(self) -> bool:
        with self._lock:
            try:
                self._tls.do_handshake()
                return True
            except ssl.SSLWantReadError:
                return False  # TLS needs the peer's next message

    def feed(self, data: bytes) -> None:
        with self._lock:
            if data:
                self._incoming.write(data)
            else:
                self._incoming.write_eof()  # TLS reads it as the end, with or without goodbye

    def read(self, size: int) -> bytes | None:
        with self._lock:
            try:
                return self._tls.read(size)  # b"" after the peer's close_notify
            except ssl.SSLWantReadError:
                return b"" if self._incoming.eof else None  # None: feed more bytes
            except ssl.SSLEOFError:
                # The TCP stream ended without close_notify.  Like SSLSocket we
                # take it as the end; the framing still catches a cut frame.
                return b""
            # Any other ssl.SSLError is raised: the connection is broken.  The
            # alert TLS made to say why waits in data_to_send().

    def write(self, data: bytes) -> None:
        with self._lock:
            self._tls.write(data)  # into a memory buffer: takes it all at once

    def close(self) -> None:
        """Make our close_notify: the TLS way to say that nothing more is coming."""
        with self._lock:
            try:
                self._tls.unwrap()
            except ssl.SSLWantReadError:
                pass  # ours is made; we do not wait for the peer's
            except ssl.SSLError:
                pass  # broken already: send only what it left (an alert, maybe)

    def data_to_send(self) -> bytes:
        with self._lock:
            return self._outgoing.read()

    def version(self) -> str | None:
        """The TLS version agreed on (``"TLSv1.3"``), once the handshake is done."""
        with self._lock:
            return self._tls.version()


class TLSStream:
    """TLS over a connected socket through a ``TLSChannel``: one thread may call
    ``recv`` while another calls ``sendall``.

    The reader receives raw bytes, feeds them to the channel and reads out
    plaintext; a sender puts plaintext in and sends the records that come
    out.  No socket call holds the channel's lock, so the reader may wait
    in ``recv`` while a sender waits in ``sendall``.  Senders take turns (a
    lock of their own), so records leave in the order they were made.  A read
    can make records too (TLS 1.3's answer to a key update, an alert when the
    peer's bytes are not good TLS); they leave with the next send, or with
    ``end()``, which is when OpenSSL would send them anyway.

    Every failure is an ``OSError`` (``ssl.SSLError`` is one), as on a plain
    socket, so the code around it treats TLS and TCP alike.
    """

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ):
        self.sock = sock
        self.channel = TLSChannel(context, server_side=server_side, server_hostname=server_hostname)
        self._sending = threading.Lock()

    def handshake(self, timeout: float) -> None:
        """Do the TLS handshake within ``timeout`` seconds, or raise ``OSError``.

        ``ssl.SSLError`` (a peer that does not speak TLS, or a certificate not
        trusted: the alert saying why is sent first), ``TimeoutError`` (a peer
        that says nothing), or the socket's own error.  The socket's timeout is
        as before once it returns.
        """
        give_up_at = time.monotonic() + timeout
        previous = self.sock.gettimeout()
        try:
            while True:
                failure: ssl.SSLError | None = None
                try:
                    done = self.channel.do_handshake()
                except ssl.SSLError as error:
                    done, failure = True, error
                records = self.channel.data_to_send()  # our next message, or the alert
                if records:
                    try:
                        self._within(give_up_at, timeout)
                        with self._sending:
                            self.sock.sendall(records)
                    except OSError:
                        if failure is None:
                            raise
                if failure is not None:
                    raise failure
                if done:
                    return
                self._within(give_up_at, timeout)
                try:
                    data = self.sock.recv(65536)
                except TimeoutError:
                    raise TimeoutError(f"no answer within {timeout:g} s") from None
                self.channel.feed(data)
        finally:
            self.sock.settimeout(previous)

    def _within(self, give_up_at: float, timeout: float) -> None:
        left = give_up_at - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer within {timeout:g} s")
        self.sock.settimeout(left)

    def recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` bytes of plaintext; ``b""`` once the peer has finished."""
        while (plaintext := self.channel.read(bufsize)) is None:
            self.channel.feed(self.sock.recv(65536))
        return plaintext

    def sendall(self, data: bytes) -> None:
        """Encrypt ``data`` and send it, after any records waiting before it."""
        with self._sending:
            self.channel.write(data)
            self.sock.sendall(self.channel.data_to_send())

    def end(self) -> None:
        """Say goodbye the TLS way (close_notify), then end the TCP stream."""
        with self._sending:
            self.channel.close()
            records = self.channel.data_to_send()
            if records:
                self.sock.sendall(records)
        try:
            self.sock.shutdown(socket.SHUT_WR)  # the peer reads end of stream
        except OSError:
            pass  # already closed or never connected: nothing left to shut

    def version(self) -> str | None:
        return self.channel.version()


# The classroom's certificates -----------------------------------------------------


@dataclass(frozen=True)
class CertFiles:
    """Where ``make_classroom_certs`` wrote the authority, the certificate and the key."""

    ca: Path
    cert: Path
    key: Path


def make_classroom_certs(
    folder: str | os.PathLike,
    names: tuple[str, ...] | list[str] = DEFAULT_NAMES,
    *,
    overwrite: bool = False,
    days: int = CERT_DAYS,
) -> CertFiles:
    """Make an authority and a server certificate for ``names``; write them into ``folder``.

    Refuses (``TLSSetupError``, nothing written) if one of the files exists,
    unless ``overwrite``.  ``folder`` is created if needed.
    """
    import trustme  # only this function needs it (and the ``cryptography`` it brings)

    if not names:
        raise TLSSetupError("a certificate needs at least one name (such as 127.0.0.1)")
    folder = Path(folder)
    files = CertFiles(folder / CA_FILE, folder / CERT_FILE, folder / KEY_FILE)
    existing = [path for path in (files.ca, files.cert, files.key) if path.exists()]
    if existing and not overwrite:
        raise TLSSetupError(
            f"{existing[0]} already exists; nothing was written (choose another folder, "
            "or overwrite on purpose with --force)"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TLSSetupError(f"cannot create the folder {folder}: {_why(error)}") from None

    authority = trustme.CA(organization_name="chatlib classroom")
    now = datetime.datetime.now(datetime.UTC)
    try:
        leaf = authority.issue_cert(
            *names,
            organization_name="chatlib classroom",
            not_before=now - datetime.timedelta(minutes=5),  # a client's clock a little behind
            not_after=now + datetime.timedelta(days=days),
        )
    except ValueError as error:  # a name trustme cannot put in a certificate
        raise TLSSetupError(f"cannot make a certificate for {', '.join(names)}: {error}") from None
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    try:
        _write(files.ca, authority.cert_pem.bytes(), mode=0o644)
        _write(files.cert, chain, mode=0o644)
        _write(files.key, leaf.private_key_pem.bytes(), mode=0o600)
    except OSError as error:
        raise TLSSetupError(f"cannot write into {folder}: {_why(error)}") from None
    return files


def _write(path: Path, data: bytes, mode: int) -> None:
    # os.open with the mode, so the key is never readable by others, even for a moment.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.chmod(path, mode)  # when overwriting, os.open kept the old file's mode


# The command line: chatlib certs make DIR ---------------------------------------------


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``chatlib certs`` to the command line's sub-commands."""
    certs = commands.add_parser(
        "certs",
        help="make a classroom's TLS certificates (lesson 07)",
        description="Certificates for running the chat over TLS.",
    )
    actions = certs.add_subparsers(dest="action", required=True, metavar="ACTION")
    make = actions.add_parser(
        "make",
        help="make an authority and a server certificate in DIR",
        description=(
            f"Make a certificate authority for the classroom and a server certificate "
            f"signed by it, and write them to DIR: {CA_FILE} (give it to every client), "
            f"{CERT_FILE} and {KEY_FILE} (keep them on the server).  Existing files are "
            "not overwritten unless you add --force."
        ),
    )
    make.add_argument("folder", metavar="DIR", help="where to write the files (created if needed)")
    make.add_argument(
        "--name",
        action="append",
        metavar="NAME",
        help=(
            "a host name or IP address the certificate is for; repeat for several "
            f"(default: {' and '.join(DEFAULT_NAMES)})"
        ),
    )
    make.add_argument("--force", action="store_true", help="overwrite existing files")
    make.set_defaults(run=run_make)


def run_make(args: argparse.Namespace) -> int:
    names = tuple(args.name) if args.name else DEFAULT_NAMES
    try:
        files = make_classroom_certs(args.folder, names, overwrite=args.force)
    except TLSSetupError as error:
        print(f"chatlib certs: {error}", file=sys.stderr)
        return 1
    print(f"wrote {files.ca}: the authority; give it to every client (--cafile)")
    print(f"wrote {files.cert}: the server's certificate for {', '.join(names)} (--tls-cert)")
    print(f"wrote {files.key}: the server's private key; keep it secret (--tls-key)")
    print(f"  chatlib serve --tls-cert {files.cert} --tls-key {files.key}")
    print(f"  chatlib chat --nick ana --tls --cafile {files.ca}")
    return 0
