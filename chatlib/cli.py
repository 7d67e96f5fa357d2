"""The ``chatlib`` command line (PROTOCOL.md section 3).

Each sub-command is a small function; argparse does the rest.  Errors a user
can cause (a taken port, a refused connection) are one line on stderr and a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import socket
import subprocess
import sys

from chatlib import accounts, conversation, history, original, room, serve, terminal, tls

DEFAULT_HOST = "127.0.0.1"


def run_original(args: argparse.Namespace) -> int:
    """Run the seed's script as a program, exactly as a student would."""
    script = original.SERVER_SCRIPT if args.side == "server" else original.CLIENT_SCRIPT
    command = [sys.executable, "-u", str(script), args.host, str(args.port)]
    child = subprocess.Popen(command)
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:
            # Ctrl-C reaches the script too; let it show its own traceback.
            continue


def _count(minimum: int, maximum: int | None = None):
    """An argparse type: a whole number from ``minimum`` to ``maximum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" to {maximum}" if maximum is not None else " or more"
            raise argparse.ArgumentTypeError(f"{value} is out of range ({minimum}{upper})")
        return value

    return parse


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``chatlib serve``.  A later lesson adds its own here (TLS, a store...)
    and turns them into ``start_server`` keywords in ``serve_options``."""
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on (default: %(default)s; 0.0.0.0 is every interface)",
    )
    parser.add_argument(
        "--port",
        type=_count(0, 65535),
        default=terminal.DEFAULT_PORT,
        help="port to listen on; 0 takes a free one (default: %(default)s)",
    )
    parser.add_argument(
        "--engine",
        choices=serve.ENGINES,
        default="threads",
        help="threads (lesson 04) or asyncio (lesson 05) (default: %(default)s)",
    )
    parser.add_argument(
        "--max-frame",
        type=_count(1),
        default=serve.DEFAULT_MAX_FRAME,
        metavar="BYTES",
        help="largest frame accepted (default: %(default)s)",
    )
    parser.add_argument(
        "--max-text",
        type=_count(1),
        default=room.DEFAULT_MAX_TEXT,
        metavar="CHARS",
        help="longest chat line (default: %(default)s)",
    )
    parser.add_argument(
        "--queue-limit",
        type=_count(1),
        default=room.DEFAULT_QUEUE_LIMIT,
        metavar="N",
        help="payloads waiting for one member before it is dropped (default: %(default)s)",
    )
    parser.add_argument(
        "--history",
        type=_count(0),
        default=room.DEFAULT_HISTORY,
        metavar="N",
        help="recent messages a newcomer is shown (default: %(default)s)",
    )
    # Lesson 07: TLS, a message history, accounts.
    parser.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="serve over TLS with this PEM certificate (make one: chatlib certs make DIR)",
    )
    parser.add_argument(
        "--tls-key", metavar="FILE", help="the certificate's PEM private key (with --tls-cert)"
    )
    parser.add_argument(
        "--db",
        metavar="FILE",
        help="keep every message in this SQLite file (created if needed), on disk before "
        "anyone is sent it; newcomers get the history from it",
    )
    parser.add_argument(
        "--accounts",
        action="store_true",
        help="a join needs the nick's password, from the accounts in --db "
        "(add them with: chatlib users add NICK --db FILE)",
    )


# The errors a bad --tls-cert, --tls-key or --db gives: one sentence each.
SETUP_ERRORS = (tls.TLSSetupError, history.StoreError, accounts.AccountsError)


def serve_options(args: argparse.Namespace) -> dict:
    """The ``start_server`` keywords that the options of ``chatlib serve`` ask for."""
    return {
        "max_frame": args.max_frame,
        "max_text": args.max_text,
        "queue_limit": args.queue_limit,
        "history_size": args.history,
        **_security_options(args),
    }


def _security_options(args: argparse.Namespace) -> dict:
    """ssl_context, store and authenticator from the lesson 07 options (``SETUP_ERRORS``)."""
    options: dict = {}
    if bool(args.tls_cert) != bool(args.tls_key):
        raise tls.TLSSetupError("--tls-cert and --tls-key go together: give both, or neither")
    if args.accounts and not args.db:
        raise accounts.AccountsError("--accounts needs --db FILE, the file that holds them")
    if args.tls_cert:
        options["ssl_context"] = tls.server_context(args.tls_cert, args.tls_key)
    if args.db:
        options["store"] = history.MessageStore(args.db)
    if args.accounts:
        try:
            options["authenticator"] = accounts.Accounts(args.db)
        except accounts.AccountsError:
            options["store"].close()
            raise
        if not len(options["authenticator"]):
            print(
                f"chatlib serve: warning: {args.db} has no accounts yet, so nobody can join; "
                f"add one with: chatlib users add NICK --db {args.db}",
                file=sys.stderr,
                flush=True,
            )
    return options


def _listen_problem(error: OSError) -> str:
    if isinstance(error, socket.gaierror):
        return f"no such address ({error.strerror})"
    if error.errno == errno.EADDRINUSE:
        return "the port is already in use (is another server running there?)"
    if error.errno == errno.EADDRNOTAVAIL:
        return "that address does not belong to this machine"
    if error.errno == errno.EACCES:
        return "permission denied (ports below 1024 need administrator rights)"
    return error.strerror or str(error)


def run_serve(args: argparse.Namespace) -> int:
    """Run the broadcast chat server until Ctrl-C or SIGTERM."""
    where = serve.format_address((args.host, args.port))
    if args.host in ("0.0.0.0", "::", ""):
        print(
            f"chatlib serve: warning: listening on every network interface ({args.host or '*'}): "
            "anyone who can reach this machine can join the chat",
            file=sys.stderr,
            flush=True,
        )
    try:
        options = serve_options(args)
    except SETUP_ERRORS as error:
        print(f"chatlib serve: {error}", file=sys.stderr)
        return 1
    try:
        return serve.run_forever(args.engine, args.host, args.port, **options)
    except OSError as error:
        print(f"chatlib serve: cannot listen on {where}: {_listen_problem(error)}", file=sys.stderr)
        return 1
    finally:
        for name in ("store", "authenticator"):
            if name in options:
                options[name].close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatlib",
        description="The course's chat: the original scripts, the server and the client.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    orig = commands.add_parser(
        "original",
        help="run the seed's original servidor.py or cliente.py (lesson 01)",
        description=(
            "Run the seed's original scripts, unchanged but for the address, so the bug "
            "can be shown live: start the server in one terminal, the client in another. "
            "The first exchange works; the second kills both with "
            "'OSError: [Errno 9] Bad file descriptor'."
        ),
    )
    orig.add_argument("side", choices=["server", "client"])
    orig.add_argument("--host", default=DEFAULT_HOST, help="default: %(default)s")
    orig.add_argument(
        "--port", type=int, default=original.DEFAULT_PORT, help="default: %(default)s"
    )
    orig.set_defaults(run=run_original)

    talk = commands.add_parser(
        "conversation",
        help="lesson 02's one-to-one chat: the original scripts with close() fixed",
        description=conversation.DESCRIPTION,
    )
    conversation.add_arguments(talk)
    talk.set_defaults(run=conversation.run)

    chat = commands.add_parser(
        "chat",
        help="the terminal chat client",
        description=(
            "Join the room as NICK and chat: incoming lines appear above the line you "
            "are typing, never through it.  /who lists who is here, /quit (or Ctrl-D) "
            "leaves.  With stdin from a pipe or a file, each line read is sent."
        ),
    )
    terminal.add_arguments(chat)
    chat.set_defaults(run=terminal.run)

    serve_command = commands.add_parser(
        "serve",
        help="run the broadcast chat server",
        description=(
            "Run the broadcast chat room of lesson 06 until Ctrl-C or SIGTERM, which tell "
            "every member 'server-shutdown' before the server stops.  Once it accepts "
            "connections it prints 'listening on HOST:PORT'."
        ),
    )
    add_serve_arguments(serve_command)
    serve_command.set_defaults(run=run_serve)

    tls.add_command(commands)  # chatlib certs make DIR (lesson 07)
    accounts.add_command(commands)  # chatlib users add|remove|list (lesson 07)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)
