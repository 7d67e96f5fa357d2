"""chatlib.room: the rules of the chat room, as pure logic (no sockets, no threads)."""

from __future__ import annotations

import json

import pytest

from chatlib import messages
from chatlib.room import Member, Room, nick_key, nick_problem


def payload(**fields) -> bytes:
    return json.dumps(fields).encode()


def drain(room: Room, member: Member) -> list[dict]:
    """What an engine that keeps up would deliver to ``member`` now."""
    batch = room.take(member)
    room.sent(member, len(batch.payloads))
    return [json.loads(p) for p in batch.payloads]


def join(room: Room, nick: str, **extra) -> Member:
    member = room.connect()
    room.receive(member, payload(type="join", nick=nick, **extra))
    assert drain(room, member)[0]["type"] == "welcome"
    return member


def codes(received: list[dict]) -> list[str]:
    return [m["code"] for m in received if m["type"] == "error"]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# Joining ---------------------------------------------------------------------------


def test_welcome_lists_the_members_and_the_others_hear_joined():
    room = Room()
    ana = room.connect()
    touched = room.receive(ana, payload(type="join", nick="ana"))
    assert touched == [ana]
    assert drain(room, ana) == [{"type": "welcome", "nick": "ana", "users": ["ana"], "history": []}]

    ben = room.connect()
    touched = room.receive(ben, payload(type="join", nick="ben"))
    assert set(touched) == {ana, ben}
    assert drain(room, ben) == [
        {"type": "welcome", "nick": "ben", "users": ["ana", "ben"], "history": []}
    ]
    assert drain(room, ana) == [{"type": "joined", "nick": "ben"}]
    assert room.users() == ["ana", "ben"]


@pytest.mark.parametrize("nick", ["a", "x" * 32, "Ñandú", "ana maría", "李", "🙂" * 32])
def test_good_nicks(nick):
    assert nick_problem(nick) is None


@pytest.mark.parametrize(
    "nick", ["", "x" * 33, "a\nb", "tab\there", "\x1b[31mred", "del\x7f", "c1\x85", "nul\x00"]
)
def test_a_bad_nick_gets_bad_nick_and_may_try_again(nick):
    room = Room()
    member = room.connect()
    room.receive(member, payload(type="join", nick=nick))
    received = drain(room, member)
    assert codes(received) == ["bad-nick"]
    assert "nick" in received[0]["detail"]
    assert member.closing is None and room.users() == []
    room.receive(member, payload(type="join", nick="good"))
    assert drain(room, member)[0]["type"] == "welcome"


@pytest.mark.parametrize("other", ["ANA", "Ana", "aNa"])
def test_nicks_are_unique_ignoring_case(other):
    room = Room()
    join(room, "ana")
    ben = room.connect()
    room.receive(ben, payload(type="join", nick=other))
    received = drain(room, ben)
    assert codes(received) == ["nick-taken"]
    assert "'ana'" in received[0]["detail"]
    assert ben.closing is None
    room.receive(ben, payload(type="join", nick="ben"))
    assert drain(room, ben)[0]["users"] == ["ana", "ben"]


def test_one_accented_letter_is_one_nick_however_it_is_typed():
    assert nick_key("Jos\u00e9") == nick_key("JOSE\u0301")  # é, and E + combining accent


def test_a_nick_is_free_again_once_its_member_left():
    room = Room()
    ana = join(room, "ana")
    room.receive(ana, payload(type="leave"))
    join(room, "ANA")


def test_joining_twice_is_a_bad_message():
    room = Room()
    ana = join(room, "ana")
    room.receive(ana, payload(type="join", nick="other"))
    received = drain(room, ana)
    assert codes(received) == ["bad-message"]
    assert "already joined as 'ana'" in received[0]["detail"]
    assert room.users() == ["ana"]


# Messages --------------------------------------------------------------------------


def test_every_member_the_sender_included_gets_every_message_in_one_order():
    clock = Clock()
    room = Room(clock=clock)
    members = [join(room, nick) for nick in ("ana", "ben", "cai")]
    for member in members:
        drain(room, member)
    sent = []
    for round_ in range(5):
        for member in members:
            text = f"{member.nick} {round_}"
            room.receive(member, payload(type="say", text=text))
            sent.append((member.nick, text))
            clock.now += 0.5
    seen = [[(m["nick"], m["text"]) for m in drain(room, member)] for member in members]
    assert seen[0] == seen[1] == seen[2] == sent


def test_ids_increase_and_time_never_runs_backwards():
    clock = Clock(2000.0)
    room = Room(clock=clock)
    ana = join(room, "ana")
    for now in (2000.0, 1990.0, 2001.0):  # the clock was set back in between
        clock.now = now
        room.receive(ana, payload(type="say", text="x"))
    received = drain(room, ana)
    assert [m["id"] for m in received] == [1, 2, 3]
    assert [m["ts"] for m in received] == [2000.0, 2000.0, 2001.0]


def test_before_join_only_join_is_allowed():
    room = Room()
    member = room.connect()
    for kind in ("say", "who", "leave"):
        room.receive(member, payload(type=kind, text="hi"))
    received = drain(room, member)
    assert codes(received) == ["not-joined"] * 3
    assert "'join'" in received[0]["detail"]
    assert member.closing is None


@pytest.mark.parametrize("joined", [False, True])
def test_a_bad_payload_gets_bad_message_joined_or_not(joined):
    room = Room()
    member = join(room, "ana") if joined else room.connect()
    for bad in (b"\xff", b"not json", b"[]", b'{"type":"shout"}', b'{"type":"say","text":5}'):
        room.receive(member, bad)
    assert codes(drain(room, member)) == ["bad-message"] * 5
    assert member.closing is None


def test_text_longer_than_the_limit_is_too_long():
    room = Room(max_text=10)
    ana = join(room, "ana")
    room.receive(ana, payload(type="say", text="x" * 10))
    room.receive(ana, payload(type="say", text="x" * 11))
    received = drain(room, ana)
    assert received[0]["type"] == "message"
    assert codes(received) == ["too-long"]
    assert "11 characters; the limit is 10" in received[1]["detail"]


def test_the_default_limit_is_4000_characters():
    room = Room()
    ana = join(room, "ana")
    room.receive(ana, payload(type="say", text="ñ" * 4000))
    room.receive(ana, payload(type="say", text="ñ" * 4001))
    received = drain(room, ana)
    assert [m["type"] for m in received] == ["message", "error"]
    assert received[1]["code"] == "too-long"


def test_a_text_that_would_not_fit_in_a_frame_is_too_long():
    room = Room(max_text=10_000, max_payload=1000)
    ana = join(room, "ana")
    room.receive(ana, payload(type="say", text="x" * 2000))
    assert codes(drain(room, ana)) == ["too-long"]


def test_who_answers_with_the_members():
    room = Room()
    ana = join(room, "ana")
    join(room, "ben")
    drain(room, ana)
    room.receive(ana, payload(type="who"))
    assert drain(room, ana) == [{"type": "users", "users": ["ana", "ben"]}]


# Leaving ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["leave", "end of stream", "socket closed"])
def test_a_member_that_goes_is_announced_as_left(how):
    room = Room()
    ana, ben = join(room, "ana"), join(room, "ben")
    drain(room, ana)
    if how == "leave":
        room.receive(ben, payload(type="leave"))
    elif how == "end of stream":
        room.end_of_stream(ben)
    else:
        room.closed(ben)
    assert drain(room, ana) == [{"type": "left", "nick": "ben"}]
    assert room.users() == ["ana"]
    assert room.take(ben).close
    room.receive(ben, payload(type="say", text="too late"))  # ignored
    assert drain(room, ana) == []


def test_what_was_queued_before_a_leave_is_still_delivered():
    room = Room()
    ana, ben = join(room, "ana"), join(room, "ben")
    room.receive(ana, payload(type="say", text="one"))
    room.receive(ben, payload(type="leave"))
    batch = room.take(ben)
    assert [json.loads(p)["text"] for p in batch.payloads] == ["one"]
    assert batch.close


def test_a_member_that_never_joined_leaves_silently():
    room = Room()
    ana = join(room, "ana")
    stranger = room.connect()
    room.closed(stranger)
    assert drain(room, ana) == []
    assert room.stats()["connections"] == 1


def test_closed_twice_and_sent_after_closed_are_harmless():
    room = Room()
    ana = join(room, "ana")
    room.take(ana)
    room.closed(ana)
    room.closed(ana)
    room.sent(ana, 5)
    assert ana.queued == 0
    assert room.stats() == {"connections": 0, "members": 0, "queued": 0, "peak_queued": 1}


@pytest.mark.parametrize("code", ["too-large", "truncated"])
def test_a_broken_stream_is_told_why_after_what_was_queued(code):
    room = Room()
    ana, ben = join(room, "ana"), join(room, "ben")
    drain(room, ana)
    room.receive(ana, payload(type="say", text="hi"))
    room.stream_error(ben, code, "a detail")
    batch = room.take(ben)
    received = [json.loads(p) for p in batch.payloads]
    assert [m["type"] for m in received] == ["joined", "message", "error"][-len(received) :]
    assert received[-1] == {"type": "error", "code": code, "detail": "a detail"}
    assert batch.close
    assert drain(room, ana)[-1] == {"type": "left", "nick": "ben"}


def test_shutdown_tells_every_connection_server_shutdown():
    room = Room()
    ana = join(room, "ana")
    stranger = room.connect()
    room.shutdown()
    for member in (ana, stranger):
        batch = room.take(member)
        assert batch.close
        assert json.loads(batch.payloads[-1])["code"] == "server-shutdown"
    late = room.connect()
    batch = room.take(late)
    assert batch.close and json.loads(batch.payloads[0])["code"] == "server-shutdown"


# Slow members ----------------------------------------------------------------------


def test_a_member_whose_queue_overflows_is_dropped_and_the_room_told():
    room = Room(queue_limit=5)
    ana, slow = join(room, "ana"), join(room, "slow")
    drain(room, ana)
    for n in range(5):
        room.receive(ana, payload(type="say", text=str(n)))
        drain(room, ana)
        assert slow.queued == n + 1
        assert slow.closing is None
    room.receive(ana, payload(type="say", text="one too many"))
    assert slow.closing == "too-slow"
    batch = room.take(slow)
    assert [json.loads(p)["code"] for p in batch.payloads] == ["too-slow"]
    assert batch.close
    received = drain(room, ana)
    assert [m["type"] for m in received] == ["message", "left"]
    assert received[1]["nick"] == "slow"
    assert room.users() == ["ana"]
    assert room.peak_queued == 5


def test_payloads_taken_but_not_sent_count_against_the_limit():
    room = Room(queue_limit=3)
    ana, slow = join(room, "ana"), join(room, "slow")
    drain(room, ana)
    room.receive(ana, payload(type="say", text="1"))
    room.receive(ana, payload(type="say", text="2"))
    assert len(room.take(slow).payloads) == 2  # the engine is stuck sending these
    room.receive(ana, payload(type="say", text="3"))
    assert slow.queued == 3 and slow.closing is None
    room.receive(ana, payload(type="say", text="4"))
    assert slow.closing == "too-slow"


def test_a_member_that_keeps_reading_loses_nothing():
    room = Room(queue_limit=3)
    ana, ben = join(room, "ana"), join(room, "ben")
    drain(room, ana)
    delivered = []
    for n in range(1000):
        room.receive(ana, payload(type="say", text=str(n)))
        drain(room, ana)
        delivered += [m["text"] for m in drain(room, ben)]
    assert delivered == [str(n) for n in range(1000)]
    assert room.peak_queued <= 3


def test_drops_that_cause_drops_do_not_recurse():
    # Everyone's queue is full; one drop's 'left' overflows the next member,
    # whose 'left' overflows the next...  far more than Python's recursion limit.
    room = Room(queue_limit=2000)
    members = [join(room, f"m{n}") for n in range(1200)]
    for member in members:
        drain(room, member)
    room.queue_limit = 1
    room.receive(members[0], payload(type="say", text="fills every queue"))
    touched = room.receive(members[0], payload(type="who"))  # the first overflow
    assert len(touched) == 1200
    assert room.users() == []
    for member in members:
        assert member.closing == "too-slow"
        assert [json.loads(p)["code"] for p in room.take(member).payloads] == ["too-slow"]


# Hooks for lesson 07: a message store and an authenticator ------------------------------


class FakeStore:
    def __init__(self, room_ref: list[Room]):
        self.room_ref = room_ref
        self.rows: list[dict] = []
        self.next_id = 100

    def append(self, nick, text, ts):
        # Called before the message is queued to anyone.
        room = self.room_ref[0]
        for member in room._connections:
            assert all(text.encode() not in p for p in member.outbox)
        self.next_id += 5
        self.rows.append(messages.message(self.next_id, nick, text, ts))
        return self.next_id

    def recent(self, n):
        return self.rows[-n:]


def test_a_store_numbers_the_messages_and_gives_the_history():
    holder: list[Room] = []
    store = FakeStore(holder)
    room = Room(store=store, history_size=2, clock=Clock())
    holder.append(room)
    ana = join(room, "ana")
    for text in ("one", "two", "three"):
        room.receive(ana, payload(type="say", text=text))
    assert [m["id"] for m in drain(room, ana)] == [105, 110, 115]
    late = room.connect()
    room.receive(late, payload(type="join", nick="late"))
    (welcome,) = drain(room, late)
    assert [m["text"] for m in welcome["history"]] == ["two", "three"]
    assert [m["id"] for m in welcome["history"]] == [110, 115]


def test_without_a_store_the_history_is_the_last_messages_in_memory():
    room = Room(history_size=3)
    ana = join(room, "ana")
    for n in range(5):
        room.receive(ana, payload(type="say", text=str(n)))
    late = room.connect()
    room.receive(late, payload(type="join", nick="late"))
    (welcome,) = drain(room, late)
    assert [m["text"] for m in welcome["history"]] == ["2", "3", "4"]
    assert [m["type"] for m in welcome["history"]] == ["message"] * 3


def test_history_can_be_turned_off():
    room = Room(history_size=0)
    ana = join(room, "ana")
    room.receive(ana, payload(type="say", text="x"))
    late = room.connect()
    room.receive(late, payload(type="join", nick="late"))
    assert drain(room, late)[0]["history"] == []


def test_a_history_too_big_for_one_frame_loses_its_oldest_lines():
    room = Room(max_payload=10_000, history_size=20)
    ana = join(room, "ana")
    for n in range(20):
        room.receive(ana, payload(type="say", text=f"{n:02} " + "x" * 997))
    late = room.connect()
    room.receive(late, payload(type="join", nick="late"))
    batch = room.take(late)
    assert len(batch.payloads[0]) <= 10_000
    history = json.loads(batch.payloads[0])["history"]
    assert 5 <= len(history) < 20
    assert history[-1]["text"].startswith("19 ")


class FakeAuthenticator:
    def __init__(self, passwords):
        self.passwords = passwords
        self.asked = []

    def check(self, nick, password):
        self.asked.append(nick)
        return self.passwords.get(nick) == password


def receive_and_check(room: Room, member: Member, data: bytes) -> list[Member]:
    """What an engine does: hand the room a payload, then run any password check it asks for."""
    touched = room.receive(member, data)
    if member.password_check is not None:
        touched += room.password_checked(member, member.password_check.run())
    return touched


def test_with_an_authenticator_a_join_needs_the_right_password():
    auth = FakeAuthenticator({"ana": "s3cret"})
    room = Room(authenticator=auth)
    member = room.connect()
    receive_and_check(room, member, payload(type="join", nick="ana"))
    receive_and_check(room, member, payload(type="join", nick="ana", password="wrong"))
    receive_and_check(room, member, payload(type="join", nick="bad\nnick", password="x"))
    received = drain(room, member)
    assert codes(received) == ["auth-failed", "auth-failed", "bad-nick"]
    assert "password" in received[0]["detail"]
    assert member.closing is None and room.users() == []
    assert auth.asked == ["ana"]  # a bad nick is refused before any password check
    receive_and_check(room, member, payload(type="join", nick="ana", password="s3cret"))
    assert drain(room, member)[0]["type"] == "welcome"


def test_the_room_never_runs_the_password_check_itself():
    auth = FakeAuthenticator({"ana": "s3cret"})
    room = Room(authenticator=auth)
    member = room.connect()
    assert room.receive(member, payload(type="join", nick="ana", password="s3cret")) == []
    check = member.password_check
    assert (check.nick, check.password) == ("ana", "s3cret")
    assert auth.asked == []  # the slow part is the engine's, outside the room
    assert "checking a password" in repr(member)
    assert "s3cret" not in repr(check)  # a password never reaches a log
    # Its next payload waits for the answer: each member's payloads keep their order.
    with pytest.raises(RuntimeError, match="password_checked"):
        room.receive(member, payload(type="say", text="too soon"))
    assert room.password_checked(member, check.run()) == [member]
    assert drain(room, member)[0]["type"] == "welcome"
    with pytest.raises(RuntimeError, match="no password check"):
        room.password_checked(member, True)


def test_a_nick_taken_while_its_password_was_checked_is_refused():
    room = Room(authenticator=FakeAuthenticator({"ana": "s3cret"}))
    first, second = room.connect(), room.connect()
    for member in (first, second):
        room.receive(member, payload(type="join", nick="ana", password="s3cret"))
    # Both checks run at once, outside the room; the first answer to come back wins.
    room.password_checked(second, second.password_check.run())
    room.password_checked(first, first.password_check.run())
    assert drain(room, second)[0]["type"] == "welcome"
    assert codes(drain(room, first)) == ["nick-taken"]
    assert room.users() == ["ana"] and first.closing is None


@pytest.mark.parametrize("how", ["closed", "shutdown"])
def test_a_member_gone_while_its_password_was_checked_never_joins(how):
    room = Room(authenticator=FakeAuthenticator({"ana": "s3cret", "ben": "b"}))
    ben = room.connect()
    receive_and_check(room, ben, payload(type="join", nick="ben", password="b"))
    drain(room, ben)
    ana = room.connect()
    room.receive(ana, payload(type="join", nick="ana", password="s3cret"))
    check = ana.password_check
    if how == "closed":
        room.closed(ana)  # its socket broke while the hash ran
    else:
        room.shutdown()  # the server began to stop while the hash ran
    assert room.password_checked(ana, check.run()) == []
    assert ana.nick is None and ana.password_check is None
    assert "ana" not in room.users()
    assert all(m["type"] != "joined" for m in drain(room, ben))


def test_without_an_authenticator_a_password_is_ignored():
    room = Room()
    join(room, "ana", password="whatever")
    assert room.users() == ["ana"]


# Observers ---------------------------------------------------------------------------


class Watcher:
    """An observer that keeps what it is told (and what the room looked like then)."""

    def __init__(self, room: Room):
        self.room = room
        self.events: list[dict] = []
        self.users_then: list[list[str]] = []
        room.observers.append(self)

    def __call__(self, event: dict) -> None:
        self.events.append(event)
        self.users_then.append(self.room.users())

    def kinds(self) -> list[str]:
        return [e["type"] for e in self.events]

    def take(self) -> list[dict]:
        events, self.events = self.events, []
        self.users_then = []
        return events


def test_observers_hear_a_join_once_it_is_committed():
    room = Room()
    watcher = Watcher(room)
    ana = room.connect()
    assert watcher.events == []  # a connection is not an event of the room's
    room.receive(ana, payload(type="join", nick="ana"))
    assert watcher.events == [{"type": "joined", "nick": "ana"}]
    assert watcher.users_then == [["ana"]]  # told once she is in, not before


def test_observers_hear_a_message_once_it_is_queued_for_everyone():
    room = Room(clock=Clock(1700000000.0))
    ana, ben = join(room, "ana"), join(room, "ben")
    queued_then: list[tuple[int, int]] = []
    room.observers.append(lambda event: queued_then.append((len(ana.outbox), len(ben.outbox))))
    watcher = Watcher(room)
    drain(room, ana)
    drain(room, ben)
    room.receive(ben, payload(type="say", text="hola"))
    assert watcher.events == [
        {"type": "message", "id": 1, "nick": "ben", "text": "hola", "ts": 1700000000.0}
    ]
    assert queued_then == [(1, 1)]  # already in both queues when the observers heard it
    assert drain(room, ana)[0] == watcher.events[0]  # what the members get, field for field


@pytest.mark.parametrize(
    "how, reason",
    [
        (lambda room, m: room.receive(m, payload(type="leave")), "left"),
        (lambda room, m: room.end_of_stream(m), "hung up"),
        (lambda room, m: room.closed(m), "connection lost"),
        (lambda room, m: room.stream_error(m, "too-large", "4 GB announced"), "too-large"),
        (lambda room, m: room.shutdown(), "server-shutdown"),
    ],
    ids=["leave", "end of stream", "reset", "too-large", "shutdown"],
)
def test_observers_hear_who_left_and_why(how, reason):
    room = Room()
    ana = join(room, "ana")
    watcher = Watcher(room)
    how(room, ana)
    left = [e for e in watcher.events if e["type"] == "left"]
    assert left == [{"type": "left", "nick": "ana", "reason": reason}]
    room.closed(ana)  # the socket goes afterwards: she is not told as leaving twice
    assert [e for e in watcher.events if e["type"] == "left"] == left


def test_observers_hear_a_slow_member_dropped_after_the_message_that_dropped_it():
    room = Room(queue_limit=2)
    ana, slow = join(room, "ana"), join(room, "slow")
    drain(room, ana)
    watcher = Watcher(room)
    for text in ("1", "2"):  # slow's queue is full then
        room.receive(ana, payload(type="say", text=text))
        drain(room, ana)
    watcher.take()
    room.receive(ana, payload(type="say", text="3"))
    assert watcher.kinds() == ["message", "error", "left"]
    error, left = watcher.events[1:]
    assert (error["code"], error["to"]) == ("too-slow", "slow")
    assert left == {"type": "left", "nick": "slow", "reason": "too-slow"}
    assert watcher.users_then[-1] == ["ana"] and slow.closing == "too-slow"


def test_observers_hear_each_error_sent_and_to_whom():
    room = Room(max_text=5)
    ana = join(room, "ana")
    watcher = Watcher(room)
    stranger = room.connect()
    room.receive(stranger, payload(type="join", nick="ANA"))
    room.receive(stranger, payload(type="say", text="hi"))
    room.receive(stranger, b"not json")
    room.receive(ana, payload(type="say", text="too long"))
    sent = [json.loads(p) for p in room.take(stranger).payloads + room.take(ana).payloads]
    assert [(e["code"], e["to"]) for e in watcher.events] == [
        ("nick-taken", "connection 2"),
        ("not-joined", "connection 2"),
        ("bad-message", "connection 2"),
        ("too-long", "ana"),
    ]
    for told, error in zip(watcher.events, [e for e in sent if e["type"] == "error"], strict=True):
        assert {k: told[k] for k in ("type", "code", "detail")} == error


def test_an_error_that_is_never_sent_is_not_told():
    room = Room()
    ana = join(room, "ana")
    room.receive(ana, payload(type="leave"))  # on her way out: nothing more is sent to her
    watcher = Watcher(room)
    room.receive(ana, b"not json")
    room.shutdown()  # nor is server-shutdown, to a connection already closing
    assert watcher.events == [{"type": "shutdown"}]


def test_shutdown_is_told_last_after_every_connections_error():
    room = Room()
    ana = join(room, "ana")
    stranger = room.connect()
    watcher = Watcher(room)
    room.shutdown()
    assert watcher.kinds() == ["error", "left", "error", "shutdown"]
    assert [e.get("to") for e in watcher.events if e["type"] == "error"] == [
        ana.nick,
        f"connection {stranger.number}",
    ]
    watcher.take()
    room.connect()  # one more, as the server stops: told server-shutdown too
    assert [(e["code"], e["to"]) for e in watcher.events] == [("server-shutdown", "connection 3")]


def test_an_observer_that_raises_is_logged_and_the_room_goes_on(caplog):
    room = Room()

    def broken(event):
        raise ValueError("a bug in an observer")

    room.observers.append(broken)
    watcher = Watcher(room)  # after the broken one: still told everything
    ana, ben = join(room, "ana"), join(room, "ben")
    room.receive(ana, payload(type="say", text="hola"))
    assert watcher.kinds() == ["joined", "joined", "message"]
    assert [m["type"] for m in drain(room, ben)] == ["message"]
    assert room.users() == ["ana", "ben"]
    failures = [r for r in caplog.records if "room observer" in r.getMessage()]
    assert len(failures) == 3 and all(r.exc_info[0] is ValueError for r in failures)


def test_an_observer_cannot_change_what_another_hears():
    room = Room()
    room.observers.append(lambda event: event.update(nick="mallory"))
    watcher = Watcher(room)
    ana = join(room, "ana")
    room.receive(ana, payload(type="say", text="hola"))
    assert [e["nick"] for e in watcher.events] == ["ana", "ana"]
    assert room._history[-1]["nick"] == "ana"  # nor what the room keeps


def test_a_removed_observer_hears_nothing_more():
    room = Room()
    watcher = Watcher(room)
    join(room, "ana")
    room.observers.remove(watcher)
    join(room, "ben")
    assert watcher.kinds() == ["joined"]
