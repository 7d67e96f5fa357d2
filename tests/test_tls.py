"""TLS (chatlib.tls): the classroom's certificates, the handshake, and the ways it must fail."""

from __future__ import annotations

import datetime
import socket
import ssl
import subprocess
import sys
import time

import pytest
import trustme
from chatevents import next_of
from cryptography import x509
from test_history import ServeProcess

from chatlib.client import ChatClient, ChatConnectionError
from chatlib.serve import start_server
from chatlib.tls import (
    TLSChannel,
    TLSSetupError,
    TLSStream,
    client_context,
    make_classroom_certs,
    server_context,
)

WAIT = 30.0  # seconds; only guards against a hang
ENGINES = ["threads", "asyncio"]


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_classroom_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_server(engine, certs):
    with start_server(engine, ssl_context=server_context(certs.cert, certs.key)) as server:
        yield server


def chatlib(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chatlib", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


# The classroom's certificates ------------------------------------------------------------


def test_the_three_files_and_what_they_hold(certs):
    assert [p.name for p in (certs.ca, certs.cert, certs.key)] == [
        "ca.pem",
        "server.pem",
        "server.key",
    ]
    assert certs.key.stat().st_mode & 0o777 == 0o600  # the key is its owner's alone
    authority = x509.load_pem_x509_certificate(certs.ca.read_bytes())
    leaf = x509.load_pem_x509_certificate(certs.cert.read_bytes())
    assert leaf.issuer == authority.subject
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    days = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days
    assert 360 <= days <= 366
    assert b"PRIVATE KEY" not in certs.ca.read_bytes() + certs.cert.read_bytes()
    assert not list(certs.ca.parent.glob("*ca*key*"))  # the authority's key is never written


def test_existing_files_are_never_overwritten_silently(tmp_path):
    first = make_classroom_certs(tmp_path)
    before = first.key.read_bytes()
    with pytest.raises(TLSSetupError, match="already exists; nothing was written"):
        make_classroom_certs(tmp_path)
    assert first.key.read_bytes() == before
    again = make_classroom_certs(tmp_path, overwrite=True)
    assert again.key.read_bytes() != before


def test_chatlib_certs_make(tmp_path):
    folder = tmp_path / "aula"
    made = chatlib("certs", "make", str(folder), "--name", "localhost", "--name", "127.0.0.2")
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["ca.pem", "server.key", "server.pem"]
    assert f"--cafile {folder / 'ca.pem'}" in made.stdout
    leaf = x509.load_pem_x509_certificate((folder / "server.pem").read_bytes())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.2"]
    refused = chatlib("certs", "make", str(folder))
    assert refused.returncode == 1
    assert refused.stderr.startswith("chatlib certs: ") and refused.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "files, problem",
    [
        (lambda c, tmp: (tmp / "none.pem", c.key), "does not exist"),
        (lambda c, tmp: (c.cert, tmp), "is a folder"),
        (lambda c, tmp: (c.ca, c.key), "the key does not belong to the certificate"),
        (lambda c, tmp: (c.key, c.key), "not a PEM certificate"),
    ],
    ids=["missing", "a folder", "another certificate", "not a certificate"],
)
def test_a_bad_certificate_or_key_is_one_sentence(certs, tmp_path, files, problem):
    with pytest.raises(TLSSetupError) as failed:
        server_context(*files(certs, tmp_path))
    assert problem in str(failed.value) and "\n" not in str(failed.value)


def test_a_bad_authority_file_is_one_sentence(certs, tmp_path):
    with pytest.raises(TLSSetupError, match="does not exist"):
        client_context(tmp_path / "none.pem")
    with pytest.raises(TLSSetupError, match="no PEM certificate"):
        client_context(certs.key)


# The handshake ---------------------------------------------------------------------------


def test_a_good_handshake_and_a_chat_over_it(tls_server, certs):
    ana = ChatClient(*tls_server.address, ssl_context=client_context(certs.ca))
    ben = ChatClient(
        *tls_server.address, ssl_context=client_context(certs.ca), server_hostname="localhost"
    )
    try:
        ana.connect("ana")
        ben.connect("ben")
        ana.say("secreto")
        assert next_of(ben, "message")["text"] == "secreto"
    finally:
        ana.close()
        ben.close()


def test_tls_1_2_and_newer_only(tls_server, certs):
    assert server_context(certs.cert, certs.key).minimum_version == ssl.TLSVersion.TLSv1_2
    assert client_context(certs.ca).minimum_version == ssl.TLSVersion.TLSv1_2
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = client_context(certs.ca)
        context.maximum_version = version
        with socket.create_connection(tls_server.address, timeout=WAIT) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version() == version.name.replace("v1_", "v1.")


def test_a_plain_client_costs_the_server_nothing(engine, certs):
    # A long grace: if a pending handshake could hold stop() up, it would show.
    context = server_context(certs.cert, certs.key)
    server = start_server(engine, ssl_context=context, grace=WAIT)
    try:
        ana = ChatClient(*server.address, ssl_context=client_context(certs.ca))
        ana.connect("ana")
        # A chatlib client without TLS: one sentence, at once.
        with pytest.raises(ChatConnectionError) as failed:
            ChatClient(*server.address, timeout=WAIT).connect("plain")
        assert "\n" not in str(failed.value)
        # A client that says nothing at all, and one that sends a chat frame in clear.
        silent = socket.create_connection(server.address)
        rude = socket.create_connection(server.address)
        rude.sendall(b'\x00\x00\x00\x1f{"type":"join","nick":"rude"}!!')
        # Meanwhile the room carries on, and takes newcomers.
        ben = ChatClient(*server.address, ssl_context=client_context(certs.ca))
        ben.connect("ben")
        ben.say("todo bien")
        assert next_of(ana, "message")["text"] == "todo bien"
        assert ben.who() == ["ana", "ben"]
        assert server.stats()["members"] == 2
        ana.close()
        ben.close()
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < WAIT / 2  # the silent one did not hold it up
        silent.close()
        rude.close()
    finally:
        server.stop()


def test_a_client_that_trusts_another_authority_refuses(tls_server, tmp_path):
    stranger = make_classroom_certs(tmp_path)  # someone else's classroom
    client = ChatClient(*tls_server.address, ssl_context=client_context(stranger.ca))
    with pytest.raises(ChatConnectionError) as failed:
        client.connect("ana")
    assert "certificate is not trusted" in str(failed.value)
    assert tls_server.stats()["connections"] == 0


def test_the_wrong_host_name_is_refused(tls_server, certs):
    client = ChatClient(
        *tls_server.address, ssl_context=client_context(certs.ca), server_hostname="example.org"
    )
    with pytest.raises(ChatConnectionError) as failed:
        client.connect("ana")
    assert "not trusted" in str(failed.value) and "example.org" in str(failed.value)


def test_an_expired_certificate_is_refused(engine):
    authority = trustme.CA()
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    expired = authority.issue_cert(
        "127.0.0.1", not_before=past, not_after=past + datetime.timedelta(days=30)
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    expired.configure_cert(context)
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    with start_server(engine, ssl_context=context) as server:
        with pytest.raises(ChatConnectionError) as failed:
            ChatClient(*server.address, ssl_context=trusting).connect("ana")
    assert "certificate has expired" in str(failed.value)


# TLS in memory: TLSChannel and TLSStream -------------------------------------------------


def channels(certs, server_hostname="127.0.0.1") -> tuple[TLSChannel, TLSChannel]:
    client = TLSChannel(
        client_context(certs.ca), server_side=False, server_hostname=server_hostname
    )
    server = TLSChannel(server_context(certs.cert, certs.key), server_side=True)
    return client, server


def pump(*pairs: tuple[TLSChannel, TLSChannel]) -> None:
    """Carry what each channel has to send to its peer, as a network would."""
    for sender, receiver in pairs:
        if data := sender.data_to_send():
            receiver.feed(data)


def shake_hands(client: TLSChannel, server: TLSChannel) -> None:
    for _ in range(10):
        done = [client.do_handshake(), server.do_handshake()]
        pump((client, server), (server, client))
        if all(done):
            return
    pytest.fail("no handshake after 10 rounds")


def test_two_channels_shake_hands_and_talk_through_memory_alone(certs):
    client, server = channels(certs)
    assert client.version() is None  # nothing agreed yet
    shake_hands(client, server)
    assert client.version() == server.version() == "TLSv1.3"
    client.write(b"hola")
    record = client.data_to_send()
    assert b"hola" not in record  # encrypted
    server.feed(record[:5])  # a record's header only
    assert server.read(1024) is None  # no whole record yet: feed more
    server.feed(record[5:])
    assert server.read(1024) == b"hola"
    assert server.read(1024) is None


def test_close_notify_ends_the_peers_stream_and_a_bare_end_does_too(certs):
    client, server = channels(certs)
    shake_hands(client, server)
    server.write(b"adios")
    server.close()
    pump((server, client))
    assert client.read(1024) == b"adios"
    assert client.read(1024) == b""  # the peer's close_notify: the end, cleanly
    other_client, other_server = channels(certs)
    shake_hands(other_client, other_server)
    other_server.feed(b"")  # TCP ended without close_notify: taken as the end too
    assert other_server.read(1024) == b""


def test_bytes_that_are_not_tls_raise_and_leave_an_alert_to_send(certs):
    client, server = channels(certs)
    shake_hands(client, server)
    server.feed(b'\x00\x00\x00\x1f{"type":"join","nick":"rude"}')
    with pytest.raises(ssl.SSLError):
        server.read(1024)
    assert server.data_to_send()  # the alert that tells the peer why


def test_a_certificate_for_another_name_fails_the_handshake_with_an_alert(certs):
    client, server = channels(certs, server_hostname="example.org")
    with pytest.raises(ssl.SSLCertVerificationError) as failed:
        shake_hands(client, server)
    assert "example.org" in failed.value.verify_message
    assert client.data_to_send()  # the alert for the server


def test_a_tls_stream_gives_a_silent_peer_one_deadline_for_the_handshake(certs):
    ours, silent = socket.socketpair()
    with ours, silent:
        ours.settimeout(7.0)
        stream = TLSStream(
            ours, client_context(certs.ca), server_side=False, server_hostname="127.0.0.1"
        )
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="no answer within 0.2 s"):
            stream.handshake(timeout=0.2)
        assert time.monotonic() - started < WAIT  # it gave up; it did not hang
        assert silent.recv(65536).startswith(b"\x16\x03")  # our hello was sent
        assert ours.gettimeout() == 7.0  # the socket's own timeout is back


# On the command line ---------------------------------------------------------------------


def test_serve_and_chat_over_tls_and_the_plain_mistake(certs):
    server = ServeProcess("--tls-cert", str(certs.cert), "--tls-key", str(certs.key))
    try:
        port = str(server.address[1])
        plain = chatlib("chat", "--nick", "ana", "--port", port, stdin="hola\n")
        assert plain.returncode == 1 and plain.stderr.count("\n") == 1
        assert plain.stderr.startswith("chatlib chat: ") and "add --tls" in plain.stderr
        untrusted = chatlib("chat", "--nick", "ana", "--port", port, "--tls", stdin="hola\n")
        assert untrusted.returncode == 1 and "not trusted" in untrusted.stderr
        assert "--cafile" in untrusted.stderr
        good = chatlib(
            "chat",
            "--nick",
            "ana",
            "--port",
            port,
            "--cafile",
            str(certs.ca),
            stdin="hola por TLS\n",
        )
        assert good.returncode == 0, good.stderr
        assert good.stdout.splitlines()[-1].endswith("ana: hola por TLS")
    finally:
        server.kill()


@pytest.mark.parametrize(
    "args, problem",
    [
        (
            ["serve", "--port", "0", "--tls-cert", "none.pem", "--tls-key", "none.key"],
            "chatlib serve: the certificate file none.pem does not exist\n",
        ),
        (
            ["serve", "--port", "0", "--tls-cert", "server.pem"],
            "chatlib serve: --tls-cert and --tls-key go together: give both, or neither\n",
        ),
        (
            ["chat", "--nick", "ana", "--cafile", "none.pem"],
            "chatlib chat: the certificate authority file none.pem does not exist\n",
        ),
    ],
    ids=["missing certificate", "no key", "missing authority"],
)
def test_a_missing_file_on_the_command_line_is_one_line(tmp_path, args, problem):
    result = subprocess.run(
        [sys.executable, "-m", "chatlib", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        cwd=tmp_path,
    )
    assert (result.returncode, result.stderr) == (1, problem)
