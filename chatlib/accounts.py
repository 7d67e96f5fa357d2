"""Accounts (lesson 07): who may use which nick, with passwords stored only as scrypt hashes.

    accounts = Accounts("chat.db")                 # or: chatlib users add ana --db chat.db
    accounts.add("ana", "correct horse battery")
    start_server(authenticator=accounts)           # or: chatlib serve --db chat.db --accounts

The server calls ``accounts.check(nick, password)`` for every ``join`` with a
password; a ``False`` costs the client ``error auth-failed``.  It calls it
outside the room (``chatlib.room.PasswordCheck``), so a hash makes only the
member joining wait, and from several threads at once: everything here is
thread-safe, and at most ``MAX_HASHING`` hashes run at a time (each needs
16 MiB, see below), however many members join at once.

How a password is kept
----------------------

Never the password itself, nor anything it can be read back from.  For each
account the table holds a random **salt** and ``scrypt(password, salt)``; to
check a password, hash it again with the same salt and compare.  Someone who
copies the database gets no password, and must guess: hash a candidate with
that account's salt, compare, repeat.  scrypt makes every guess expensive:

- ``n = 2**14`` (CPU and memory cost), ``r = 8`` (block size): each hash
  fills and reads back ``128 * n * r`` bytes = **16 MiB** of memory, which is
  what makes guessing on GPUs and custom chips costly; ``p = 1``
  (parallelism).  One hash takes about 0.05 to 0.1 s on a laptop.  These are
  the parameters the scrypt paper gives for interactive logins, and Django's
  defaults.  OWASP's current advice is more (``n = 2**17``, 128 MiB, about a
  second); we stay lower on purpose: every member waits one hash to join, and
  every join, right or wrong, costs the server one hash of CPU and memory, so
  a flood of joins is a flood of hashes.  Each row stores its own ``n, r, p``: raise
  ``DEFAULT_PARAMS`` and new passwords get the new cost, old ones still verify.
- **salt: 16 random bytes** (``secrets.token_bytes``): two accounts with the
  same password get different hashes, and no table of precomputed hashes
  (a "rainbow table") helps; 128 bits never repeat by chance.
- **dklen = 32 bytes**: 256 bits of hash, far beyond any chance of two
  passwords colliding.
- the comparison is ``hmac.compare_digest``, whose time does not depend on
  where the first differing byte is, so timing the answer says nothing about
  the hash.  An unknown nick is hashed too, against a dummy salt, so that a
  refusal takes as long whether or not the nick has an account.
- a password is normalised (Unicode NFKC, as NIST SP 800-63B suggests) before
  hashing, so ``ñ`` typed as one character or as ``n`` + accent is one password.

Repeated failures are slowed down
---------------------------------

A guesser who tries password after password for ``ana`` is slowed down by a
lock-out per nick that doubles: every failure counts, and from the
``free_failures``-th (the 3rd) on, a failure shuts the nick for 1, 2, 4,
8... seconds, at most ``max_delay`` (60).  So three tries go without
waiting, the fourth waits a second.  While a nick is shut, ``check``
answers ``False`` at once, *without hashing*, even for the right password; a
success opens it again, and ``forget_after`` (15 minutes) without failures
forgets them.

Why refuse instead of sleeping?  A ``sleep`` would hold a thread of the
server (in the asyncio engine, one of the few that every join shares) and
would not slow a guesser who opens more connections.  Refusing at once costs
nothing, and spares the server the hash too.  A guesser may also send many
joins at once, so each try is counted as a failure *before* its hash begins
(``FailureThrottle.attempt``) and forgiven if the password is right: however
the checks interleave, at most ``free_failures`` hashes for one nick begin
before it is shut.  The record of failures
is bounded: at most ``max_tracked`` nicks (10,000, a few hundred bytes each),
the least recently failed forgotten first.  The room does not tell the
authenticator who is connecting, so the limit is per nick, not per address:
a guesser who tries many nicks makes the server hash for each (see
``docs/security.md``), and a guesser can lock a member out for up to a minute
at a time (the price of any lock-out).  The clock is injectable, so tests
measure the lock-out without sleeping.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import hmac
import os
import secrets
import sqlite3
import sys
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from chatlib.history import StoreError, connect
from chatlib.room import nick_key, nick_problem


@dataclass(frozen=True)
class ScryptParams:
    """The cost of one hash: see the module's docstring for why these values."""

    n: int = 2**14
    r: int = 8
    p: int = 1
    salt_size: int = 16
    dklen: int = 32

    @property
    def memory(self) -> int:
        """Bytes of memory one hash needs (128 * n * r)."""
        return 128 * self.n * self.r


DEFAULT_PARAMS = ScryptParams()
MAX_PASSWORD = 1024  # characters; a longer "password" is a mistake, or an attack on the CPU
MAX_HASHING = 4  # password checks hashing at once, per Accounts: at most 64 MiB of scrypt memory

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    nick_key TEXT PRIMARY KEY,   -- the nick as the room compares it (casefolded)
    nick     TEXT NOT NULL,      -- the nick as it was written
    salt     BLOB NOT NULL,
    hash     BLOB NOT NULL,      -- scrypt(password, salt, n, r, p, dklen)
    n        INTEGER NOT NULL,
    r        INTEGER NOT NULL,
    p        INTEGER NOT NULL,
    created  REAL NOT NULL
)
"""


class AccountsError(Exception):
    """A request that cannot be done (unknown or existing user, bad password...); one sentence."""


def scrypt_hash(password: str, salt: bytes, params: ScryptParams = DEFAULT_PARAMS) -> bytes:
    """The hash stored for ``password`` with ``salt``."""
    secret = unicodedata.normalize("NFKC", password).encode("utf-8")
    return hashlib.scrypt(
        secret,
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        dklen=params.dklen,
        maxmem=2 * params.memory + 1024 * 1024,  # OpenSSL's default (32 MiB) is too tight
    )


def password_problem(password: str) -> str | None:
    """Say what is wrong with ``password`` as a new password, or ``None``."""
    if not password:
        return "the password is empty"
    if len(password) > MAX_PASSWORD:
        return f"the password has {len(password)} characters; the limit is {MAX_PASSWORD}"
    return None


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    shut_until: float = 0.0


class FailureThrottle:
    """Per-nick lock-outs that double after each failure, in bounded memory (no sleeping)."""

    def __init__(
        self,
        *,
        free_failures: int = 3,
        first_delay: float = 1.0,
        max_delay: float = 60.0,
        forget_after: float = 15 * 60.0,
        max_tracked: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.free_failures = free_failures
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_tracked = max_tracked
        self.clock = clock
        self._failures: OrderedDict[str, _Failures] = OrderedDict()  # least recent first
        self._lock = threading.Lock()  # two servers may share one Accounts

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may try again (0 if it may now)."""
        with self._lock:
            record = self._current(key)
            return 0.0 if record is None else max(0.0, record.shut_until - self.clock())

    def attempt(self, key: str) -> bool:
        """May ``key`` try a password now?  If so, the try counts as failed until ``succeeded``.

        Checking and counting in one step, under one lock, is what keeps
        several checks of one nick at once from all slipping through before
        the first of them fails.
        """
        with self._lock:
            record = self._current(key)
            if record is not None and record.shut_until > self.clock():
                return False
            self._count_failure(key, record)
            return True

    def failed(self, key: str) -> None:
        with self._lock:
            self._count_failure(key, self._current(key))

    def _count_failure(self, key: str, record: _Failures | None) -> None:
        now = self.clock()
        record = record or _Failures()
        record.count += 1
        record.last = now
        beyond = record.count - self.free_failures
        if beyond >= 0:
            record.shut_until = now + min(self.first_delay * 2**beyond, self.max_delay)
        self._failures[key] = record
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_tracked:
            self._failures.popitem(last=False)  # forget the least recently failed

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def tracked(self) -> int:
        return len(self._failures)

    def _current(self, key: str) -> _Failures | None:
        record = self._failures.get(key)
        if record is not None and self.clock() - record.last > self.forget_after:
            del self._failures[key]
            return None
        return record


class Accounts:
    """Nicks and their password hashes in an SQLite file; a ``chatlib.room.Authenticator``."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        params: ScryptParams = DEFAULT_PARAMS,
        throttle: FailureThrottle | None = None,
    ):
        self.path = os.fspath(path)
        self.params = params
        self.throttle = throttle if throttle is not None else FailureThrottle()
        self.hashes_computed = 0  # how often check() paid for a hash (the lock-out skips it)
        self._lock = threading.Lock()
        self._hashing = threading.BoundedSemaphore(MAX_HASHING)  # 16 MiB each
        try:
            self._db = connect(self.path, "accounts database")
        except StoreError as error:
            raise AccountsError(str(error)) from None
        try:
            with self._db:
                self._db.execute(SCHEMA)
        except sqlite3.Error as error:
            self._db.close()
            raise AccountsError(f"cannot use the accounts database {self.path}: {error}") from None
        # Hashed for a nick with no account, so that refusing it takes as long.
        self._dummy_salt = secrets.token_bytes(params.salt_size)

    # Managing accounts -------------------------------------------------------------

    def add(self, nick: str, password: str) -> None:
        """Create the account ``nick``; ``AccountsError`` if it exists or the input is bad."""
        problem = nick_problem(nick) or password_problem(password)
        if problem:
            raise AccountsError(problem)
        salt = secrets.token_bytes(self.params.salt_size)
        digest = scrypt_hash(password, salt, self.params)
        try:
            with self._lock, self._db:
                self._db.execute(
                    "INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        nick_key(nick),
                        nick,
                        salt,
                        digest,
                        self.params.n,
                        self.params.r,
                        self.params.p,
                        time.time(),
                    ),
                )
        except sqlite3.IntegrityError:
            taken = self.find(nick)
            raise AccountsError(f"{taken!r} already has an account in {self.path}") from None

    def remove(self, nick: str) -> None:
        """Delete the account ``nick``; ``AccountsError`` if there is none."""
        with self._lock, self._db:
            deleted = self._db.execute(
                "DELETE FROM accounts WHERE nick_key = ?", (nick_key(nick),)
            ).rowcount
        if not deleted:
            raise AccountsError(f"there is no account {nick!r} in {self.path}")

    def nicks(self) -> list[str]:
        """Every account's nick, as it was written, in alphabetical order."""
        with self._lock:
            rows = self._db.execute("SELECT nick FROM accounts ORDER BY nick_key").fetchall()
        return [nick for (nick,) in rows]

    def __contains__(self, nick: str) -> bool:
        return self.find(nick) is not None

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM accounts").fetchone()[0]

    def find(self, nick: str) -> str | None:
        """The account's nick as it was written ('Ana' for 'ana'), or ``None``."""
        with self._lock:
            row = self._db.execute(
                "SELECT nick FROM accounts WHERE nick_key = ?", (nick_key(nick),)
            ).fetchone()
        return None if row is None else row[0]

    # Checking passwords --------------------------------------------------------------

    def verify(self, nick: str, password: str) -> bool:
        """Is ``password`` the password of ``nick``?  One hash, whatever the answer."""
        with self._lock:
            row = self._db.execute(
                "SELECT salt, hash, n, r, p FROM accounts WHERE nick_key = ?", (nick_key(nick),)
            ).fetchone()
            self.hashes_computed += 1
        with self._hashing:  # waits while MAX_HASHING other checks hash
            if row is None or len(password) > MAX_PASSWORD:
                scrypt_hash(password[:MAX_PASSWORD], self._dummy_salt, self.params)  # same time
                return False
            salt, stored, n, r, p = row
            params = ScryptParams(n=n, r=r, p=p, salt_size=len(salt), dklen=len(stored))
            return hmac.compare_digest(scrypt_hash(password, salt, params), stored)

    def check(self, nick: str, password: str) -> bool:
        """The room's question: may this join go ahead?  Slows repeated failures down."""
        key = nick_key(nick)
        if not self.throttle.attempt(key):
            return False  # shut for now: refused at once, without hashing
        if self.verify(nick, password):
            self.throttle.succeeded(key)  # forgives this try, and the failures before it
            return True
        return False  # attempt() has counted it already

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Accounts:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Accounts {self.path}>"


# Reading a password ------------------------------------------------------------------


def read_password(prompt: str = "password: ", *, confirm: bool = False) -> str:
    """A password from the terminal (not echoed), or the first line of stdin if it is a pipe.

    Only one line is taken from a pipe, read byte by byte, so whatever follows
    it on stdin is still there for the rest of the program.  Raises
    ``AccountsError`` for no password, or two answers that differ.
    """
    if sys.stdin is not None and sys.stdin.isatty():
        try:
            password = getpass.getpass(prompt)
            if confirm and getpass.getpass("again, to be sure: ") != password:
                raise AccountsError("the two passwords differ; nothing was changed")
        except (EOFError, KeyboardInterrupt):
            raise AccountsError("no password given") from None
        return password
    line = _read_line(sys.stdin.fileno() if sys.stdin is not None else -1)
    if line is None:
        raise AccountsError("no password on stdin (the first line is the password)")
    return line


def _read_line(fd: int) -> str | None:
    """One line from ``fd`` without reading ahead; ``None`` at once at end of input."""
    data = bytearray()
    while True:
        try:
            byte = os.read(fd, 1)
        except OSError:
            byte = b""
        if not byte:
            if not data:
                return None
            break
        if byte == b"\n":
            break
        data += byte
    return data.decode("utf-8", errors="replace").removesuffix("\r")


# The command line: chatlib users add|remove|list NICK --db FILE --------------------------


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``chatlib users`` to the command line's sub-commands."""
    users = commands.add_parser(
        "users",
        help="add or remove chat accounts (lesson 07)",
        description=(
            "Manage the accounts that 'chatlib serve --db FILE --accounts' asks for.  "
            "Passwords are stored only as salted scrypt hashes."
        ),
    )
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, helptext, description in (
        (
            "add",
            "create an account",
            "Create an account.  The password is asked for twice, without echo; when "
            "stdin is not a terminal, its first line is the password.",
        ),
        ("remove", "delete an account", "Delete an account."),
        ("list", "show every account's nick", "Show every account's nick."),
    ):
        action = actions.add_parser(name, help=helptext, description=description)
        if name != "list":
            action.add_argument("nick", metavar="NICK", help="the account's nick")
        action.add_argument(
            "--db", required=True, metavar="FILE", help="the SQLite file (created if needed)"
        )
        action.set_defaults(run=run_users)


def run_users(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    try:
        if args.action == "add":
            problem = nick_problem(args.nick)
            if problem:
                raise AccountsError(problem)
            with Accounts(args.db) as accounts:
                taken = accounts.find(args.nick)
                if taken is not None:  # say so before asking for a password
                    raise AccountsError(f"{taken!r} already has an account in {args.db}")
                password = read_password(f"password for {args.nick}: ", confirm=True)
                accounts.add(args.nick, password)
            print(f"added {args.nick!r} to {args.db}", file=out)
        elif not os.path.isfile(args.db):
            raise AccountsError(f"{args.db} does not exist (chatlib users add creates it)")
        elif args.action == "remove":
            with Accounts(args.db) as accounts:
                accounts.remove(args.nick)
            print(f"removed {args.nick!r} from {args.db}", file=out)
        else:
            with Accounts(args.db) as accounts:
                for nick in accounts.nicks():
                    print(nick, file=out)
    except AccountsError as error:
        print(f"chatlib users: {error}", file=sys.stderr)
        return 1
    return 0
