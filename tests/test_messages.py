"""chatlib.messages: the JSON messages of PROTOCOL.md section 2, without I/O."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatlib import messages
from chatlib.messages import Join, Leave, MessageError, Say, Who


def bad(payload: bytes, parse=messages.parse_client) -> MessageError:
    with pytest.raises(MessageError) as caught:
        parse(payload)
    return caught.value


def test_the_error_codes_are_the_ten_of_the_protocol():
    assert set(messages.ERROR_CODES) == {
        "too-large",
        "truncated",
        "bad-message",
        "not-joined",
        "nick-taken",
        "bad-nick",
        "too-long",
        "too-slow",
        "auth-failed",
        "server-shutdown",
    }
    assert len(messages.ERROR_CODES) == 10


def test_encode_is_compact_utf8_json():
    payload = messages.encode(messages.say("¿qué tal, Ñandú?"))
    assert payload == '{"type":"say","text":"¿qué tal, Ñandú?"}'.encode()
    assert json.loads(payload) == {"type": "say", "text": "¿qué tal, Ñandú?"}


def test_client_messages_parse_to_their_objects():
    assert messages.parse_client(messages.encode(messages.join("ana"))) == Join("ana")
    assert messages.parse_client(messages.encode(messages.join("ana", "pw"))) == Join("ana", "pw")
    assert messages.parse_client(messages.encode(messages.say(""))) == Say("")
    assert messages.parse_client(messages.encode(messages.who())) == Who()
    assert messages.parse_client(messages.encode(messages.leave())) == Leave()


def test_unknown_fields_are_ignored():
    payload = b'{"type": "say", "text": "hi", "colour": "red", "v": 2}'
    assert messages.parse_client(payload) == Say("hi")


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"\xff\xfe", "not UTF-8"),
        ("ñ".encode("latin-1"), "not UTF-8"),
        (b"", "not JSON"),
        (b"hola", "not JSON"),
        (b'{"type": "say", "text": "hi"', "not JSON"),
        (b"[1, 2]", "JSON object, not list"),
        (b'"join"', "JSON object, not str"),
        (b"{}", "string field 'type'"),
        (b'{"type": 3}', "string field 'type'"),
        (b'{"type": "shout"}', "unknown message type 'shout'"),
        (b'{"type": "welcome"}', "unknown message type 'welcome'"),
        (b'{"type": "join"}', "string field 'nick', got nothing"),
        (b'{"type": "join", "nick": 7}', "string field 'nick', got int"),
        (b'{"type": "join", "nick": "ana", "password": 1}', "string field 'password'"),
        (b'{"type": "say"}', "string field 'text'"),
        (b'{"type": "say", "text": ["hi"]}', "string field 'text', got list"),
        (b'{"type": "say", "text": "\\ud83d"}', "lone surrogate"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"type": "say", "text": "x", "n": ' + b"9" * 5000 + b"}", "not JSON"),
    ],
)
def test_a_bad_payload_is_a_bad_message_with_a_clear_detail(payload, words):
    error = bad(payload)
    assert error.code == messages.BAD_MESSAGE
    assert words in error.detail


def test_a_null_password_counts_as_none():
    assert messages.parse_client(b'{"type":"join","nick":"ana","password":null}') == Join("ana")


@given(st.text())
def test_any_text_travels_unchanged(text):
    assert messages.parse_client(messages.encode(messages.say(text))) == Say(text)


def test_server_messages_parse():
    samples = [
        messages.welcome("ana", ["ana"], []),
        messages.message(1, "ana", "hola", 1700000000.5),
        messages.joined("ben"),
        messages.left("ben"),
        messages.users(["ana", "ben"]),
        messages.error(messages.TOO_SLOW, "you were dropped"),
    ]
    for sample in samples:
        assert messages.parse_server(messages.encode(sample)) == sample


@pytest.mark.parametrize(
    "payload",
    [
        b'{"type": "say", "text": "hi"}',  # a client's message
        b'{"type": "message", "id": "1", "nick": "a", "text": "t", "ts": 1.0}',
        b'{"type": "message", "id": true, "nick": "a", "text": "t", "ts": 1.0}',
        b'{"type": "message", "id": 1, "nick": "a", "text": "t"}',
        b'{"type": "welcome", "nick": "a", "users": "a", "history": []}',
        b'{"type": "error", "code": "too-slow"}',
    ],
)
def test_malformed_server_messages_are_refused(payload):
    assert bad(payload, messages.parse_server).code == messages.BAD_MESSAGE


def test_error_refuses_a_code_the_protocol_does_not_have():
    with pytest.raises(ValueError, match="not an error code"):
        messages.error("oops", "detail")


def test_the_examples_in_the_docstrings_hold():
    import doctest

    from chatlib import room, serve

    for module in (messages, room, serve):
        failures, tried = doctest.testmod(module)
        assert tried > 0 and failures == 0, module.__name__
