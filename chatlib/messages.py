"""Chat messages (PROTOCOL.md section 2): JSON objects inside frames, no I/O.

Every frame of the chat carries one UTF-8 JSON object with a string field
``type``.  This module turns those objects into bytes and back, and checks that
what arrived is well formed::

    >>> encode(say("hola, ¿qué tal?"))
    b'{"type":"say","text":"hola, \\xc2\\xbfqu\\xc3\\xa9 tal?"}'
    >>> parse_client(b'{"type": "say", "text": "hi", "colour": "red"}')
    Say(text='hi')

Unknown fields (``colour`` above) are ignored, so the protocol can grow.
Anything else that is wrong raises ``MessageError`` with the protocol's error
code and a ``detail`` sentence meant for a person.  The rules about *meaning*
(is this nick free? is the text too long?) belong to the room, in
``chatlib.room``; this module only knows the shapes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# The error codes of PROTOCOL.md, as names so a typo is an AttributeError.
TOO_LARGE = "too-large"
TRUNCATED = "truncated"
BAD_MESSAGE = "bad-message"
NOT_JOINED = "not-joined"
NICK_TAKEN = "nick-taken"
BAD_NICK = "bad-nick"
TOO_LONG = "too-long"
TOO_SLOW = "too-slow"
AUTH_FAILED = "auth-failed"
SERVER_SHUTDOWN = "server-shutdown"

ERROR_CODES = (
    TOO_LARGE,
    TRUNCATED,
    BAD_MESSAGE,
    NOT_JOINED,
    NICK_TAKEN,
    BAD_NICK,
    TOO_LONG,
    TOO_SLOW,
    AUTH_FAILED,
    SERVER_SHUTDOWN,
)

CLIENT_TYPES = ("join", "say", "who", "leave")
SERVER_TYPES = ("welcome", "message", "joined", "left", "users", "error")


class MessageError(ValueError):
    """A payload that is not a valid message.  ``code`` is a PROTOCOL.md code."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


# Bytes <-> objects ------------------------------------------------------------


def encode(message: dict[str, Any]) -> bytes:
    """Return the UTF-8 JSON payload for ``message`` (compact, ``ñ`` kept as ``ñ``)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode(payload: bytes) -> dict[str, Any]:
    """Return the JSON object in ``payload``; it must have a string ``type``.

    Raises ``MessageError`` (``bad-message``) for anything else.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as error:
        raise MessageError(
            BAD_MESSAGE, f"the payload is not UTF-8 (byte {error.start} is wrong)"
        ) from None
    try:
        message = json.loads(text)
    except ValueError as error:  # json.JSONDecodeError, or an int with too many digits
        raise MessageError(BAD_MESSAGE, f"the payload is not JSON: {error}") from None
    except RecursionError:  # "[[[[..." nested deeper than the parser goes
        raise MessageError(BAD_MESSAGE, "the payload is JSON nested too deeply") from None
    if not isinstance(message, dict):
        raise MessageError(BAD_MESSAGE, f"a message is a JSON object, not {type(message).__name__}")
    if not isinstance(message.get("type"), str):
        raise MessageError(BAD_MESSAGE, "a message needs a string field 'type'")
    return message


# What a client sends ------------------------------------------------------------


@dataclass(frozen=True)
class Join:
    nick: str
    password: str | None = None


@dataclass(frozen=True)
class Say:
    text: str


@dataclass(frozen=True)
class Who:
    pass


@dataclass(frozen=True)
class Leave:
    pass


ClientMessage = Join | Say | Who | Leave


def parse_client(payload: bytes) -> ClientMessage:
    """Decode a payload a client sent and check its fields (not their meaning)."""
    message = decode(payload)
    kind = message["type"]
    if kind == "join":
        nick = _string_field(message, "nick")
        password = None
        if "password" in message and message["password"] is not None:
            password = _string_field(message, "password")
        return Join(nick, password)
    if kind == "say":
        return Say(_string_field(message, "text"))
    if kind == "who":
        return Who()
    if kind == "leave":
        return Leave()
    raise MessageError(
        BAD_MESSAGE, f"unknown message type {kind!r}; a client sends join, say, who or leave"
    )


def _string_field(message: dict[str, Any], field: str) -> str:
    value = message.get(field)
    if not isinstance(value, str):
        got = "nothing" if value is None else type(value).__name__
        raise MessageError(
            BAD_MESSAGE, f"a {message['type']!r} needs a string field {field!r}, got {got}"
        )
    if not _is_valid_unicode(value):
        raise MessageError(BAD_MESSAGE, f"the field {field!r} holds a lone surrogate (\\ud800…)")
    return value


def _is_valid_unicode(text: str) -> bool:
    # JSON may spell half of a surrogate pair ("\ud83d") that no UTF-8 can carry;
    # letting it in would break encode() for every member it is sent to.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def join(nick: str, password: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "join", "nick": nick}
    if password is not None:
        message["password"] = password
    return message


def say(text: str) -> dict[str, Any]:
    return {"type": "say", "text": text}


def who() -> dict[str, Any]:
    return {"type": "who"}


def leave() -> dict[str, Any]:
    return {"type": "leave"}


# What the server sends ------------------------------------------------------------


def welcome(nick: str, users: list[str], history: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "welcome", "nick": nick, "users": list(users), "history": list(history)}


def message(id: int, nick: str, text: str, ts: float) -> dict[str, Any]:
    return {"type": "message", "id": id, "nick": nick, "text": text, "ts": ts}


def joined(nick: str) -> dict[str, Any]:
    return {"type": "joined", "nick": nick}


def left(nick: str) -> dict[str, Any]:
    return {"type": "left", "nick": nick}


def users(names: list[str]) -> dict[str, Any]:
    return {"type": "users", "users": list(names)}


def error(code: str, detail: str) -> dict[str, Any]:
    if code not in ERROR_CODES:
        raise ValueError(f"{code!r} is not an error code of the protocol")
    return {"type": "error", "code": code, "detail": detail}


# The fields each server message must have, and their types (for clients and tests).
_SERVER_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "welcome": {"nick": str, "users": list, "history": list},
    "message": {"id": int, "nick": str, "text": str, "ts": (int, float)},
    "joined": {"nick": str},
    "left": {"nick": str},
    "users": {"users": list},
    "error": {"code": str, "detail": str},
}


def parse_server(payload: bytes) -> dict[str, Any]:
    """Decode a payload a server sent; check its type and the types of its fields."""
    message = decode(payload)
    kind = message["type"]
    fields = _SERVER_FIELDS.get(kind)
    if fields is None:
        raise MessageError(BAD_MESSAGE, f"unknown server message type {kind!r}")
    for field, expected in fields.items():
        value = message.get(field)
        # bool is an int in Python, but true is not a message id.
        if not isinstance(value, expected) or isinstance(value, bool):
            raise MessageError(BAD_MESSAGE, f"a {kind!r} needs a field {field!r} of the right type")
    return message
