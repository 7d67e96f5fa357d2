"""ChatClient against both server engines, over real loopback sockets."""

from __future__ import annotations

import json
import socket
import ssl
import threading

import chatevents
import pytest
import trustme
from tlsprobe import OneAtATime

from chatlib.client import ChatClient, ChatConnectionError, ChatError
from chatlib.framing import FrameDecoder, encode_frame
from chatlib.serve import start_server

WAIT = 10  # seconds; only guards against a hang


@pytest.fixture(params=["threads", "asyncio"])
def engine(request):
    return request.param


@pytest.fixture
def server(engine):
    with start_server(engine, "127.0.0.1", 0) as handle:
        yield handle


def client_for(handle, **options) -> ChatClient:
    host, port = handle.address[:2]
    return ChatClient(host, port, **options)


def next_of(client: ChatClient, kind: str) -> dict:
    return chatevents.next_of(client, kind, WAIT)


@pytest.fixture
def clients():
    made: list[ChatClient] = []
    yield made
    for client in made:
        client.close()


def joined(handle, clients, nick, **options) -> ChatClient:
    client = client_for(handle, **options)
    clients.append(client)
    client.connect(nick)
    return client


def test_connect_returns_the_welcome_which_is_also_the_first_event(server, clients):
    ana = joined(server, clients, "ana")
    bob = client_for(server)
    clients.append(bob)
    welcome = bob.connect("bob")
    assert welcome["type"] == "welcome"
    assert welcome["nick"] == "bob"
    assert welcome["users"] == ["ana", "bob"]
    assert bob.events.get(timeout=WAIT) == welcome
    assert bob.nick == "bob" and bob.joined
    assert next_of(ana, "joined")["nick"] == "bob"


def test_every_member_receives_every_line_in_the_same_order(server, clients):
    ana = joined(server, clients, "ana")
    bob = joined(server, clients, "bob")
    for text in ["uno", "dos", "tres ñ"]:
        ana.say(text)
    bob.say("cuatro")
    seen = {}
    for member in (ana, bob):
        lines = [next_of(member, "message") for _ in range(4)]
        seen[member.nick] = [(m["id"], m["nick"], m["text"]) for m in lines]
    assert seen["ana"] == seen["bob"]
    assert [text for _, nick, text in seen["ana"] if nick == "ana"] == ["uno", "dos", "tres ñ"]
    ids = [message_id for message_id, _, _ in seen["ana"]]
    assert ids == sorted(ids) and len(set(ids)) == 4


def test_on_event_is_called_on_the_receiver_thread(server, clients):
    got: list[tuple[str, str]] = []
    arrived = threading.Event()

    def on_event(event):
        got.append((event["type"], threading.current_thread().name))
        if event["type"] == "message":
            arrived.set()

    ana = joined(server, clients, "ana", on_event=on_event)
    ana.say("hola")
    assert arrived.wait(WAIT)
    kinds = [kind for kind, _ in got]
    assert kinds[0] == "welcome" and "message" in kinds
    message_thread = dict(got)["message"]
    assert message_thread != threading.current_thread().name
    assert message_thread.startswith("chat-receiver")


def test_who_returns_the_nicks_and_the_answer_is_an_event_too(server, clients):
    joined(server, clients, "ana")
    bob = joined(server, clients, "bob")
    assert sorted(bob.who()) == ["ana", "bob"]
    assert sorted(next_of(bob, "users")["users"]) == ["ana", "bob"]
    assert bob.who(wait=False) is None
    assert sorted(next_of(bob, "users")["users"]) == ["ana", "bob"]


def test_who_from_several_threads_each_gets_an_answer(server, clients):
    ana = joined(server, clients, "ana")
    joined(server, clients, "bob")
    ana.who(wait=False)  # an answer nobody waits for must not go to the next caller
    answers: list[list[str]] = []
    threads = [threading.Thread(target=lambda: answers.append(ana.who())) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert len(answers) == 5
    assert all(sorted(users) == ["ana", "bob"] for users in answers)


def test_a_refused_line_is_an_error_event_and_the_connection_goes_on(server, clients):
    ana = joined(server, clients, "ana")
    ana.say("x" * 4001)
    assert next_of(ana, "error")["code"] == "too-long"
    ana.say("short")
    assert next_of(ana, "message")["text"] == "short"


def test_joined_and_left_notices_and_the_leavers_last_event(server, clients):
    ana = joined(server, clients, "ana")
    bob = joined(server, clients, "bob")
    assert next_of(ana, "joined")["nick"] == "bob"
    bob.leave()
    bob.leave()  # idempotent
    assert next_of(ana, "left")["nick"] == "bob"
    last = next_of(bob, "disconnected")
    assert last["reason"] == "you left" and last["code"] is None
    assert bob.events.empty()  # nothing after the disconnected event
    assert not bob.joined
    with pytest.raises(ChatConnectionError):
        bob.say("too late")


def test_a_taken_nick_raises_and_the_same_connection_can_try_another(server, clients):
    joined(server, clients, "ana")
    other = client_for(server)
    clients.append(other)
    with pytest.raises(ChatError) as refused:
        other.connect("ANA")  # nicks compare without case
    assert refused.value.code == "nick-taken"
    assert refused.value.detail
    with pytest.raises(ChatError) as bad:
        other.connect("")
    assert bad.value.code == "bad-nick"
    assert other.connect("carol")["nick"] == "carol"


def test_the_server_stopping_ends_with_an_error_then_disconnected(engine):
    handle = start_server(engine, "127.0.0.1", 0)
    try:
        ana = client_for(handle)
        ana.connect("ana")
    finally:
        handle.stop()
    error = next_of(ana, "error")
    assert error["code"] == "server-shutdown"
    last = next_of(ana, "disconnected")
    assert last["code"] == "server-shutdown"
    assert last["reason"] == "the server shut down"
    ana.close()  # after the end: still fine


def test_a_refused_connection_is_one_clear_sentence():
    # A socket bound but not listening: connecting to it is refused, and the
    # port stays ours, so nothing else can start listening there meanwhile.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        client = ChatClient("127.0.0.1", port)
        with pytest.raises(ChatConnectionError) as refused:
            client.connect("ana")
    message = str(refused.value)
    assert message == (
        f"cannot connect to 127.0.0.1:{port}: connection refused (is the server running?)"
    )
    assert "\n" not in message
    client.close()


def test_something_that_is_not_a_chat_server():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def answer_nonsense():
            conn, _ = listener.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        thread = threading.Thread(target=answer_nonsense)
        thread.start()
        with pytest.raises(ChatConnectionError) as wrong:
            ChatClient("127.0.0.1", port).connect("ana")
        thread.join(WAIT)
    assert "did not answer like a chat server" in str(wrong.value)


# TLS -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authority():
    return trustme.CA()


@pytest.fixture
def tls_server(engine, authority):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    with start_server(engine, "127.0.0.1", 0, ssl_context=context) as handle:
        yield handle


def trusting(authority) -> ssl.SSLContext:
    context = ssl.create_default_context()
    authority.configure_trust(context)
    return context


def test_tls_with_a_trusted_certificate(tls_server, authority, clients):
    ana = joined(tls_server, clients, "ana", ssl_context=trusting(authority))
    bob = joined(
        tls_server, clients, "bob", ssl_context=trusting(authority), server_hostname="localhost"
    )
    ana.say("secreto")
    assert next_of(bob, "message")["text"] == "secreto"


def test_tls_with_an_untrusted_certificate_is_one_sentence(tls_server):
    client = client_for(tls_server, ssl_context=ssl.create_default_context())
    with pytest.raises(ChatConnectionError) as failed:
        client.connect("ana")
    assert "certificate is not trusted" in str(failed.value)


def test_tls_to_the_wrong_name(tls_server, authority):
    client = client_for(
        tls_server, ssl_context=trusting(authority), server_hostname="chat.example.org"
    )
    with pytest.raises(ChatConnectionError) as failed:
        client.connect("ana")
    assert "certificate is not trusted" in str(failed.value)
    assert "chat.example.org" in str(failed.value)


def test_tls_client_against_a_plain_server(server, authority):
    client = client_for(server, ssl_context=trusting(authority))
    with pytest.raises(ChatConnectionError) as failed:
        client.connect("ana")
    assert str(failed.value).startswith("TLS handshake with")


def test_plain_client_against_a_tls_server(tls_server):
    with pytest.raises(ChatConnectionError):
        client_for(tls_server, timeout=5).connect("ana")


# TLS from two threads: the receiver reads while the caller writes ---------------------


def tls_room(engine, authority, members: int, lines: int):
    """A TLS server whose queues hold a whole flood, so that nobody is dropped."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    return start_server(engine, ssl_context=context, queue_limit=members * lines + 50)


def flood(server, authority, clients, members: int, lines: int) -> list[list[dict]]:
    """Every member says ``lines`` lines at once, each from a thread of its own, while
    its receiver thread takes everybody's; returns the messages each one received."""
    talkers = [
        joined(server, clients, f"m{n}", ssl_context=trusting(authority)) for n in range(members)
    ]
    for talker in talkers:  # everyone is in: everyone hears every line
        while len(talker.who()) < members:
            pass
    everyone = threading.Barrier(members)
    failures: list[BaseException] = []

    def talk(n: int) -> None:
        try:
            everyone.wait(WAIT)
            for i in range(lines):
                talkers[n].say(f"m{n} line {i}")
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=talk, args=(n,), name=f"talk-m{n}") for n in range(members)]
    for thread in threads:
        thread.start()
    heard = [[next_of(talker, "message") for _ in range(members * lines)] for talker in talkers]
    for thread in threads:
        thread.join(WAIT)
    assert not failures, failures
    return heard


def check_flood(heard: list[list[dict]], members: int, lines: int) -> None:
    first = [(m["id"], m["nick"], m["text"]) for m in heard[0]]
    for other in heard[1:]:  # one order, the same for everyone
        assert [(m["id"], m["nick"], m["text"]) for m in other] == first
    for n in range(members):  # and each sender's lines in the order it sent them
        assert [text for _, nick, text in first if nick == f"m{n}"] == [
            f"m{n} line {i}" for i in range(lines)
        ]


def test_tls_clients_that_send_while_they_receive_get_every_line(engine, authority, clients):
    members, lines = 4, 300
    with tls_room(engine, authority, members, lines) as server:
        heard = flood(server, authority, clients, members, lines)
    check_flood(heard, members, lines)


def test_the_probe_sees_two_threads_inside_at_once():
    """``OneAtATime`` can fail: here two threads are made to be inside together."""
    both_inside = threading.Barrier(2)

    class Shared:
        def work(self):
            both_inside.wait(WAIT)

    probe = OneAtATime(Shared())
    threads = [threading.Thread(target=probe.work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert probe.overlaps == 1


def test_a_tls_client_never_uses_its_tls_state_from_two_threads_at_once(
    engine, authority, clients, watched_tls
):
    members, lines = 3, 200
    with tls_room(engine, authority, members, lines) as server:
        heard = flood(server, authority, clients, members, lines)
    check_flood(heard, members, lines)
    ours = [tls for tls in watched_tls if not tls.server_side]
    assert len(ours) == members
    for n, tls in enumerate(ours):
        assert tls.overlaps == 0
        # Its receiver and the thread that said the lines took turns inside it.
        assert {f"chat-receiver-m{n}", f"talk-m{n}"} <= tls.threads
    servers = [tls for tls in watched_tls if tls.server_side]
    assert len(servers) == (members if engine == "threads" else 0)  # asyncio: its own TLS
    assert all(tls.overlaps == 0 for tls in servers)


def test_a_tls_client_says_goodbye_with_close_notify(authority):
    """A TCP end without TLS's close_notify could be an attacker cutting the line."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    heard: list[dict] = []
    problems: list[BaseException] = []

    def one_member_server(listener: socket.socket) -> None:
        raw, _ = listener.accept()
        # suppress_ragged_eofs=False: an end without close_notify raises SSLEOFError.
        with context.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False) as tls:
            try:
                tls.settimeout(WAIT)
                decoder = FrameDecoder()
                heard.extend(json.loads(p) for p in decoder.feed(tls.recv(65536)))
                welcome = {"type": "welcome", "nick": "ana", "users": ["ana"], "history": []}
                tls.sendall(encode_frame(json.dumps(welcome).encode()))
                while chunk := tls.recv(65536):
                    heard.extend(json.loads(p) for p in decoder.feed(chunk))
            except BaseException as error:
                problems.append(error)

    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=one_member_server, args=(listener,))
        server.start()
        client = ChatClient(*listener.getsockname()[:2], ssl_context=trusting(authority))
        client.connect("ana")
        client.close()
        server.join(WAIT)
    assert not problems, problems
    assert [m["type"] for m in heard] == ["join", "leave"]
